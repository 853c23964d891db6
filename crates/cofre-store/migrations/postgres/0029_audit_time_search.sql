-- Audit searches by time that stay fast however long the trail (issue 16, `cofre-bench console`).
-- `ts` is the clock at each append, so it may step back; `ts_high` is the highest `ts` up to and
-- including this entry, which never decreases along `seq`. Every entry with `ts >= X` therefore has
-- `seq` at or after the first entry with `ts_high >= X`, which one index lookup finds: a search by
-- `since` starts there instead of at the start of the trail. Not part of the hash chain: it only
-- narrows where a search looks; `ts` is still what each entry is matched on.
-- Times compare in byte order (COLLATE "C"), as SQLite compares them and as the server computes
-- the running maximum, whatever the database's default collation.
ALTER TABLE audit_log ALTER COLUMN ts SET DATA TYPE TEXT COLLATE "C";
ALTER TABLE audit_log ADD COLUMN ts_high TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE audit_head ADD COLUMN ts_high TEXT COLLATE "C" NOT NULL DEFAULT '';

-- The trail is append-only; this one backfill of the derived column is the exception.
ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change;
UPDATE audit_log SET ts_high = running.high
FROM (SELECT seq, MAX(ts) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) AS high FROM audit_log) AS running
WHERE audit_log.seq = running.seq;
ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change;

UPDATE audit_head SET ts_high = COALESCE((SELECT MAX(ts) FROM audit_log), '') WHERE id = 1;
CREATE INDEX audit_log_ts_high ON audit_log (ts_high, seq);
-- The entries written after the clock was set back (stamped below the highest time before them):
-- the only ones past the end of a search's time window that can still fall inside it.
CREATE INDEX audit_log_stepped_back ON audit_log (seq) WHERE ts < ts_high;
