-- What the error logs of drives (Data Box: destination accounts) that ended with errors
-- said (issue 34): one row per job × log, written in the transaction of its
-- `drive.errors` event, so each log is read and reported once, across restarts. `report`
-- is the bounded summary (errorlog::Report as JSON), never the log itself.
CREATE TABLE error_logs (
    job_id    INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    log       TEXT    NOT NULL,
    drive_id  TEXT    NOT NULL,
    read_at   TEXT    NOT NULL,
    readable  INTEGER NOT NULL,
    report    TEXT    NOT NULL,
    PRIMARY KEY (job_id, log)
);
