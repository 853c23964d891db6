-- Access requests, four-eye approvals and notifications (sqlite). Keep in step with the twin file.

-- Time limits, approval levels and emergency access of a policy, as JSON.
ALTER TABLE policies ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';

-- Where approvers and requesters are told about requests.
ALTER TABLE users ADD COLUMN email TEXT;

-- An approved request is its own grant: one row, so a request can never yield two grants.
CREATE TABLE access_requests (
    id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    target TEXT NOT NULL,
    account TEXT NOT NULL,
    access TEXT NOT NULL,
    reason TEXT NOT NULL,
    policy TEXT NOT NULL,
    levels TEXT NOT NULL,
    state TEXT NOT NULL,
    level BIGINT NOT NULL,
    emergency BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    decide_by BIGINT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    closed_at BIGINT,
    revoked_by TEXT,
    revoke_reason TEXT,
    reviewed_by TEXT,
    reviewed_at BIGINT,
    review_comment TEXT
);
CREATE INDEX access_requests_state ON access_requests (state, decide_by);
CREATE INDEX access_requests_grant ON access_requests (requester, target, account, state);

-- One decision per person per request (the primary key says so too).
CREATE TABLE request_decisions (
    request_id TEXT NOT NULL REFERENCES access_requests(id),
    approver TEXT NOT NULL,
    level BIGINT NOT NULL,
    verdict TEXT NOT NULL,
    comment TEXT NOT NULL,
    decided_at BIGINT NOT NULL,
    PRIMARY KEY (request_id, approver)
);

-- Outbox: written in the transaction of the change it reports, delivered (and retried) later.
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt BIGINT NOT NULL,
    delivered_at BIGINT,
    failed_at BIGINT,
    last_error TEXT
);
CREATE INDEX notifications_due ON notifications (delivered_at, failed_at, next_attempt);

-- Sessions opened under a grant end when it does.
ALTER TABLE gateway_sessions ADD COLUMN request_id TEXT;
