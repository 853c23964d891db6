-- Dual control (sqlite). Keep in step with the twin file.

-- A change that widens someone's access, waiting for a second admin. The payload is the proposed
-- change (never a secret: one-time passwords are made when the change is applied).
CREATE TABLE change_requests (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    diff TEXT NOT NULL,
    proposer TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    decide_by BIGINT NOT NULL,
    decided_by TEXT,
    decided_at BIGINT,
    comment TEXT NOT NULL DEFAULT ''
);
CREATE INDEX change_requests_state ON change_requests (state, created_at);

-- Who created or changed a user's account, role, groups, keys or password, and when: the
-- cooling-off rule reads it (an approver made by the requester does not count for a while).
CREATE TABLE account_changes (
    user_id BIGINT NOT NULL,
    changed_by TEXT NOT NULL,
    what TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX account_changes_user ON account_changes (user_id, at);
