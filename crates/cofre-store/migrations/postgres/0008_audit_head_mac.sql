-- The head of the audit chain carries a MAC under a key derived from the master key, so that
-- cutting off the newest entries and moving the head back is detected (issue 10).
ALTER TABLE audit_head ADD COLUMN mac TEXT NOT NULL DEFAULT '';
