-- The node registry (issue 17): every server process on this database says it is alive every
-- `[cluster] heartbeat_seconds`; one missing for three heartbeats is reported dead. `node_id`
-- is the data dir's `node-id` (what rotation leases name), `name` the operator's
-- (`--node-name`, default the host name). Heartbeats are operational state, not actions: the
-- one table written outside an audited transaction.
CREATE TABLE cluster_nodes (
    node_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    api_address TEXT NOT NULL,
    ssh_address TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    last_heartbeat BIGINT NOT NULL,
    live_sessions BIGINT NOT NULL DEFAULT 0
);
