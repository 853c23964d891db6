-- A rotation asked for by hand while a session is live waits for the session's end; it must
-- then run the way it was asked for (`credential rotate --method M --as A`), not the stored
-- settings. Keep in step with the PostgreSQL file of the same number.
ALTER TABLE credential_rotation ADD COLUMN due_method TEXT;
ALTER TABLE credential_rotation ADD COLUMN due_as TEXT;
