-- `history JOB` from the index alone (issue 32): a job's events are spread over the
-- whole table (jobs interleave), so reading them through a plain (job_id, id) index cost
-- one heap page per event. Every column but `details` is carried in the index (a B-tree
-- entry holds at most 2,704 bytes: `details` would not fit, the others do since the
-- store keeps at most 700 bytes of `from_value` and `to_value`); `history` without
-- `--json` and the status page's timeline and charts read no `details`, so they read one
-- index range (an index-only scan, once autovacuum has seen the rows).
--
-- Values written before that bound are clipped first, to the same 700 bytes at most:
-- their first 697 characters when those fit, else their first 174 (at most four bytes
-- each), and `…`.
UPDATE events
SET from_value = CASE WHEN octet_length(left(from_value, 697)) <= 697 THEN left(from_value, 697)
                      ELSE left(from_value, 174) END || '…'
WHERE octet_length(from_value) > 700;
UPDATE events
SET to_value = CASE WHEN octet_length(left(to_value, 697)) <= 697 THEN left(to_value, 697)
                    ELSE left(to_value, 174) END || '…'
WHERE octet_length(to_value) > 700;

DROP INDEX events_by_job;
CREATE INDEX events_by_job ON events (job_id, id)
    INCLUDE (type, drive_id, from_value, to_value, observed_at, severity);
