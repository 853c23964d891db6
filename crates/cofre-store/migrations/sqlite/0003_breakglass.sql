-- Break the glass (SQLite). Keep in step with ../postgres/0003_breakglass.sql.

-- A key epoch: an age X25519 identity made at a key ceremony. Only its public recipient is kept;
-- the secret exists only as the custodians' Shamir shares.
CREATE TABLE breakglass_epochs (
    epoch BIGINT PRIMARY KEY,
    recipient TEXT NOT NULL,
    threshold BIGINT NOT NULL,
    shares BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    -- Set when the last custodian fetched their share: from then on files are written under it.
    closed_at TEXT,
    -- Set when a later ceremony replaced it before it closed; its undelivered shares are deleted.
    abandoned_at TEXT
);

CREATE TABLE breakglass_custodians (
    epoch BIGINT NOT NULL REFERENCES breakglass_epochs(epoch),
    share_index BIGINT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id),
    username TEXT NOT NULL,
    delivered_at TEXT,
    PRIMARY KEY (epoch, share_index),
    UNIQUE (epoch, user_id)
);

-- A custodian's share, sealed under the master key (bound to epoch and user), until it is
-- delivered: the row is deleted in the same transaction that hands it out.
CREATE TABLE breakglass_pending_shares (
    epoch BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    wrapped_key BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (epoch, user_id),
    FOREIGN KEY (epoch, user_id) REFERENCES breakglass_custodians(epoch, user_id)
);
