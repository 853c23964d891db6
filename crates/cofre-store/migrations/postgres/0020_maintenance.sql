-- Maintenance windows (issue 13): one row per window, the approvals it got, and every step as
-- it happened (the watch stream replays these, so a late joiner sees the whole window).
-- Moments are unix seconds.
CREATE TABLE maintenance_windows (
    id TEXT PRIMARY KEY,
    release_id TEXT NOT NULL REFERENCES releases (id),
    version TEXT NOT NULL,
    notes TEXT NOT NULL,
    state TEXT NOT NULL,
    proposer TEXT NOT NULL,
    required_approvals BIGINT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Sessions warned (warn_minutes ahead), so each window warns once.
    warned_at BIGINT,
    closed_at BIGINT,
    closed_by TEXT,
    close_comment TEXT
);
CREATE INDEX maintenance_windows_state ON maintenance_windows (state, starts_at);

-- One decision per admin and window: the primary key makes a second vote impossible.
CREATE TABLE maintenance_decisions (
    window_id TEXT NOT NULL REFERENCES maintenance_windows (id),
    approver TEXT NOT NULL,
    verdict TEXT NOT NULL,
    comment TEXT NOT NULL,
    decided_at BIGINT NOT NULL,
    PRIMARY KEY (window_id, approver)
);

-- The steps: seq counts from 1 within a window and is the SSE event id (Last-Event-ID).
CREATE TABLE maintenance_events (
    window_id TEXT NOT NULL REFERENCES maintenance_windows (id),
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    step TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (window_id, seq)
);
