-- The PagerDuty incidents iewatch has opened and not yet closed (issue 30): one row per
-- webhook × job × condition. A resolve is sent only for a row here, so no resolve names
-- a key never triggered, and an incident outlives restarts and failover.
CREATE TABLE pagerduty_incidents (
    webhook   TEXT    NOT NULL,
    job_id    INTEGER NOT NULL REFERENCES jobs (id),
    condition TEXT    NOT NULL,
    opened_at TEXT    NOT NULL,
    PRIMARY KEY (webhook, job_id, condition)
);
