-- Network policy (issue 14): per listener, the networks it accepts (the customer's, and the
-- vendor's own in saas), and the proxies whose forwarding headers are believed. Each list is
-- comma-separated CIDRs; empty lists let everyone in (the default). Every node reads these rows,
-- so a change on one node is followed by all.
CREATE TABLE network_policy (
    listener TEXT PRIMARY KEY,
    allow TEXT NOT NULL DEFAULT '',
    vendor_allow TEXT NOT NULL DEFAULT '',
    trusted_proxies TEXT NOT NULL DEFAULT '',
    updated_at TEXT,
    updated_by TEXT
);
INSERT INTO network_policy (listener) VALUES ('api');
INSERT INTO network_policy (listener) VALUES ('gateway');
