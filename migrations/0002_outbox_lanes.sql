-- One row per (webhook, job) with deliveries still pending: when its oldest pending
-- delivery may be tried. The notifier finds due work here through an index instead of
-- rescanning every pending delivery for the head of each job, so a backlog of 100,000
-- alerts drains at the endpoint's pace and costs nothing between retry waves. A lane
-- row goes when its last pending delivery is delivered or given up.
CREATE TABLE outbox_lanes (
    webhook         TEXT    NOT NULL,
    job_id          INTEGER NOT NULL REFERENCES jobs (id),
    next_attempt_at TEXT    NOT NULL,
    PRIMARY KEY (webhook, job_id)
) WITHOUT ROWID;

CREATE INDEX outbox_lanes_due ON outbox_lanes (webhook, next_attempt_at);

-- The lanes of deliveries already queued by an earlier version.
INSERT INTO outbox_lanes (webhook, job_id, next_attempt_at)
SELECT d.webhook, d.job_id, d.next_attempt_at
FROM deliveries d
WHERE d.delivered_at IS NULL AND d.failed_at IS NULL
  AND d.event_id = (SELECT MIN(p.event_id) FROM deliveries p
                    WHERE p.webhook = d.webhook AND p.job_id = d.job_id
                      AND p.delivered_at IS NULL AND p.failed_at IS NULL);
