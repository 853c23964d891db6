-- Offboarding (sqlite). Keep in step with ../postgres/0006_offboarding.sql.

-- A disabled user keeps its row (the audit trail names it) but no token, key or password works.
ALTER TABLE users ADD COLUMN disabled_at TEXT;
ALTER TABLE users ADD COLUMN disabled_reason TEXT;

-- Disabled: kept, but no reveal and no session. Deleted: kept for its history (versions, sessions,
-- audit) under a renamed name ("NAME~deleted~ID"; '~' is in no valid name), so the name can be
-- reused by a new row that shares nothing with the old one.
ALTER TABLE targets ADD COLUMN disabled_at TEXT;
ALTER TABLE targets ADD COLUMN deleted_at TEXT;
ALTER TABLE credentials ADD COLUMN disabled_at TEXT;
ALTER TABLE credentials ADD COLUMN deleted_at TEXT;
ALTER TABLE backup_targets ADD COLUMN deleted_at TEXT;
ALTER TABLE backup_jobs ADD COLUMN deleted_at TEXT;
