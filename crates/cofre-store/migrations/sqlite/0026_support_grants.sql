-- Vendor support grants (issue 14): a support user's request, the customer admins' decisions,
-- and the grant's window once approved. Moments are unix seconds.
CREATE TABLE support_grants (
    id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    -- `diagnostics,audit`: distinct scopes, comma-separated.
    scopes TEXT NOT NULL,
    reason TEXT NOT NULL,
    ticket TEXT NOT NULL,
    state TEXT NOT NULL,
    required_approvals BIGINT NOT NULL,
    duration_seconds BIGINT NOT NULL,
    decide_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Set by the last approval.
    starts_at BIGINT,
    ends_at BIGINT,
    closed_at BIGINT,
    closed_by TEXT,
    close_comment TEXT
);
CREATE INDEX support_grants_state ON support_grants (state, requester);

-- One decision per admin and grant: the primary key makes a second vote impossible.
CREATE TABLE support_decisions (
    grant_id TEXT NOT NULL REFERENCES support_grants (id),
    approver TEXT NOT NULL,
    verdict TEXT NOT NULL,
    comment TEXT NOT NULL,
    decided_at BIGINT NOT NULL,
    PRIMARY KEY (grant_id, approver)
);
