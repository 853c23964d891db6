-- Backups to the customer's own storage (postgres). Keep in step with ../sqlite/0005_backups.sql.

-- Where backups go: a directory (dir), a host reached with rsync over SSH (ssh), or an
-- S3-compatible bucket (s3). The SSH private key or the S3 secret is sealed under the master key
-- (bound to the target's name); the SSH host keys are pinned here on first contact.
CREATE TABLE backup_targets (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    location TEXT NOT NULL,
    port BIGINT,
    endpoint TEXT,
    region TEXT,
    access_key_id TEXT,
    known_hosts TEXT,
    secret_wrapped_key BYTEA,
    secret_ciphertext BYTEA,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    -- The outcome of the last run or write test that used the target.
    last_ok_at TEXT,
    last_error_at TEXT,
    last_error TEXT
);

-- What is backed up where, and when.
CREATE TABLE backup_jobs (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    target_id BIGINT NOT NULL REFERENCES backup_targets(id),
    schedule TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);

-- One run of a job. A run still 'running' when the server starts was interrupted: it is marked
-- 'failed' then.
CREATE TABLE backup_runs (
    id BIGSERIAL PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES backup_jobs(id),
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    files_sent BIGINT NOT NULL DEFAULT 0,
    bytes_sent BIGINT NOT NULL DEFAULT 0,
    duration_ms BIGINT,
    error TEXT
);
CREATE INDEX backup_runs_job ON backup_runs (job_id, id);
