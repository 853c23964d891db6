-- Credential rotation (issue 15). Keep in step with ../postgres/0010_rotation.sql.
-- One row per credential that was rotated or has rotation settings. The new secret is a row of
-- credential_versions (never current until verified); `pending_version` names it until the
-- rotation ends, so a crash at any step is resolved at the next start from here.
CREATE TABLE credential_rotation (
    credential_id BIGINT PRIMARY KEY REFERENCES credentials(id),
    -- Settings (`credential set-rotation`): method chpasswd | passwd | key; `as_account` is the
    -- privileged account on the same target that changes it (chpasswd, reconcile).
    method TEXT,
    as_account TEXT,
    every_seconds BIGINT,
    after_reveal BIGINT NOT NULL DEFAULT 0,
    after_session BIGINT NOT NULL DEFAULT 0,
    after_grant BIGINT NOT NULL DEFAULT 0,
    verify_every_seconds BIGINT,
    -- When the settings were last set: grants that ended before do not trigger.
    settings_at BIGINT,
    -- A rotation asked for (trigger) and not yet run: waits for live sessions to end.
    due_at BIGINT,
    due_trigger TEXT,
    -- The rotation in flight: the lease (so two never run at once, across nodes) and the
    -- version it stored, with how it was being applied.
    lease_owner TEXT,
    lease_until BIGINT,
    pending_version BIGINT,
    pending_method TEXT,
    pending_as TEXT,
    pending_trigger TEXT,
    -- How the last attempt went.
    last_at BIGINT,
    last_trigger TEXT,
    last_method TEXT,
    last_outcome TEXT,
    last_reason TEXT,
    last_success_at BIGINT,
    last_verify_at BIGINT,
    last_verify_outcome TEXT,
    failures BIGINT NOT NULL DEFAULT 0,
    retry_at BIGINT
);
