-- Deadlines, stalls, reminders and ETA (issue 18). `clocks` is the JSON memory of the
-- time-driven rules (times as Unix seconds); `acked_at` is the last `iewatch ack`,
-- `muted_until` the end of an `iewatch mute`. The daemon never writes the last two: the
-- commands do, and the daemon reads them when it is about to remind or alert.
ALTER TABLE jobs ADD COLUMN clocks TEXT;
ALTER TABLE jobs ADD COLUMN acked_at TEXT;
ALTER TABLE jobs ADD COLUMN muted_until TEXT;
