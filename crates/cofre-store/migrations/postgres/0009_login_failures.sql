-- Failed logins per user name and source address (issue 10): wrong passwords from one address
-- make that address wait (back-off), never the user's other addresses or SSH keys. Keyed by name,
-- not user id, because unknown names are counted like known ones (answers must not differ).
CREATE TABLE login_failures (
    username TEXT NOT NULL,
    source TEXT NOT NULL,
    failures BIGINT NOT NULL,
    last_failure_at BIGINT NOT NULL,
    blocked_until BIGINT,
    PRIMARY KEY (username, source)
);
CREATE INDEX login_failures_last ON login_failures (last_failure_at);

-- A notification that carries a secret (a reset's one-time password by email) keeps its body
-- sealed under the master key (associated data names seal_id); only the delivery task opens it,
-- and delivering (or giving up) erases it.
ALTER TABLE notifications ADD COLUMN seal_id TEXT;
ALTER TABLE notifications ADD COLUMN sealed_key BYTEA;
ALTER TABLE notifications ADD COLUMN sealed_body BYTEA;
