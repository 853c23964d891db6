-- SSH gateway (SQLite). Keep in step with ../postgres/0002_gateway.sql.
CREATE TABLE user_ssh_keys (
    id INTEGER PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    fingerprint TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (user_id, fingerprint)
);

-- Pinned on first use; a different key later refuses the connection.
CREATE TABLE target_host_keys (
    target_id BIGINT PRIMARY KEY REFERENCES targets(id),
    fingerprint TEXT NOT NULL,
    pinned_at TEXT NOT NULL
);

CREATE TABLE gateway_sessions (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    target TEXT NOT NULL,
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    end_reason TEXT,
    recording_path TEXT NOT NULL,
    recording_wrapped_key BLOB NOT NULL,
    recording_key_ciphertext BLOB NOT NULL,
    bytes BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX gateway_sessions_started ON gateway_sessions (started_at);
