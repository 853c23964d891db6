-- Sessions of an `--approve-each-session` invitation (issue 18): each waits here until an admin
-- (or the inviter) approves or denies it; an approved one is used by the one session it opens.
CREATE TABLE invitation_sessions (
    id TEXT PRIMARY KEY,
    invitation_id TEXT NOT NULL REFERENCES invitations (id),
    target TEXT NOT NULL,
    account TEXT NOT NULL,
    source TEXT NOT NULL,
    -- pending, approved, denied, used, expired
    state TEXT NOT NULL,
    asked_at BIGINT NOT NULL,
    decided_by TEXT,
    decided_at BIGINT,
    comment TEXT
);
CREATE INDEX invitation_sessions_invitation ON invitation_sessions (invitation_id, state);
