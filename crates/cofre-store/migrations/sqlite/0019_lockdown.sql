-- Live session control (issue 16): the emergency lockdown, on the one instance_state row so every
-- node follows it. While locked_down_at is set, the API, console and gateway refuse every one
-- but admins; the admin who locked it cannot lift it alone.
ALTER TABLE instance_state ADD COLUMN locked_down_at TEXT;
ALTER TABLE instance_state ADD COLUMN locked_down_by TEXT;
ALTER TABLE instance_state ADD COLUMN locked_down_reason TEXT;
