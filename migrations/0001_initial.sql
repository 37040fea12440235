-- iewatch schema: the tables of DESIGN.md. Column meanings are documented in README.md.
-- Timestamps are UTC text in SQLite's own form, 'YYYY-MM-DD HH:MM:SS.SSS'.

CREATE TABLE jobs (
    id                   INTEGER PRIMARY KEY,
    account              TEXT    NOT NULL,
    name                 TEXT    NOT NULL,
    job_type             TEXT,
    state                TEXT,
    percent_complete     INTEGER,
    cancel_requested     INTEGER NOT NULL DEFAULT 0,
    etag                 TEXT,
    last_modified        TEXT,
    first_seen_at        TEXT,
    last_polled_at       TEXT,
    last_changed_at      TEXT,
    last_error           TEXT,
    last_error_at        TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    failing_alerted      INTEGER NOT NULL DEFAULT 0,
    not_found_alerted    INTEGER NOT NULL DEFAULT 0,
    terminal_since       TEXT,
    snapshot             TEXT,
    UNIQUE (account, name)
);

CREATE TABLE drives (
    job_id           INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    drive_id         TEXT    NOT NULL,
    position         INTEGER NOT NULL,
    present          INTEGER NOT NULL DEFAULT 1,
    state            TEXT,
    copy_status      TEXT,
    percent_complete INTEGER,
    updated_at       TEXT    NOT NULL,
    PRIMARY KEY (job_id, drive_id)
);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    drive_id    TEXT,
    type        TEXT    NOT NULL,
    from_value  TEXT,
    to_value    TEXT,
    observed_at TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    details     TEXT
);

-- history JOB: one job's events in order. A covering index: a job's events are spread
-- over the whole table (jobs interleave), so reading them through a plain (job_id, id)
-- index costs one page read per event; with every column in the index they are one
-- sequential range. It doubles the space of `events` (small in practice: tens of events
-- per job) and keeps `history` of a 1,000-event job under 5 ms (tests/benches).
CREATE INDEX events_by_job ON events (job_id, id, observed_at, type, drive_id, from_value,
                                      to_value, severity, details);
-- "What happened today" across jobs.
CREATE INDEX events_by_time ON events (observed_at);

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    event_id        INTEGER NOT NULL REFERENCES events (id),
    job_id          INTEGER NOT NULL REFERENCES jobs (id),
    webhook         TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    first_attempt_at TEXT,
    next_attempt_at TEXT    NOT NULL,
    delivered_at    TEXT,
    failed_at       TEXT,
    last_status     INTEGER,
    last_error      TEXT,
    UNIQUE (event_id, webhook)
);

-- The notifier's work queue: pending rows per endpoint and job, oldest event first.
CREATE INDEX deliveries_pending ON deliveries (webhook, job_id, event_id)
    WHERE delivered_at IS NULL AND failed_at IS NULL;

-- history JOB looks jobs up by name alone.
CREATE INDEX jobs_by_name ON jobs (name);

-- One row that /healthz rewrites, so that "the database takes writes" is a real write.
CREATE TABLE health (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at TEXT NOT NULL
);
