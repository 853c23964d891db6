-- Orbit (issue 13): the instance's type and whether the application is enabled. One row: every
-- node reads it (active-active), so disabling on one node refuses service on all of them.
CREATE TABLE instance_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    instance_type TEXT NOT NULL,
    disabled_at TEXT,
    disabled_by TEXT,
    disabled_reason TEXT
);
INSERT INTO instance_state (id, instance_type) VALUES (1, 'production');

-- What `cofre init --demo` created, so that promotion can say which sample rows are still there.
-- Ids, not names: a sample row renamed or deleted and recreated is no longer the sample.
CREATE TABLE demo_items (
    kind TEXT NOT NULL,
    item_id BIGINT NOT NULL,
    PRIMARY KEY (kind, item_id)
);

-- Release files that passed verification at upload (the file itself is in DATA_DIR/releases).
CREATE TABLE releases (
    id TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    binary_sha256 TEXT NOT NULL,
    upgrades_from TEXT NOT NULL,
    notes TEXT NOT NULL,
    file_name TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    uploaded_at TEXT NOT NULL,
    uploaded_by TEXT NOT NULL
);
