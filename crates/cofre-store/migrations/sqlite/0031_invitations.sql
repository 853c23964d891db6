-- Invitations for third parties (issue 18): an e-mail address invited to named targets and
-- accounts for a window, through the external listener's web terminal. Moments are unix seconds.
CREATE TABLE invitations (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    inviter TEXT NOT NULL,
    -- Comma-separated names, as cofre_core::invite checked them.
    targets TEXT NOT NULL,
    accounts TEXT NOT NULL,
    reason TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    approve_each_session BIGINT NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- SHA-256 of the one-time link's token; the token itself is only in the e-mail.
    link_hash TEXT NOT NULL UNIQUE,
    -- Set when the link is used: the invitee's password (argon2id) and TOTP seed (sealed).
    redeemed_at BIGINT,
    password_hash TEXT,
    totp_wrapped_key BLOB,
    totp_ciphertext BLOB,
    totp_last_step BIGINT,
    -- Failed logins since the last success, and the moment the next may be tried (lockout).
    failed_logins BIGINT NOT NULL DEFAULT 0,
    retry_after BIGINT NOT NULL DEFAULT 0,
    revoked_at BIGINT,
    revoked_by TEXT
);
CREATE INDEX invitations_email ON invitations (email, state);
