-- SIEM destinations (issue 14): every audit entry goes, in order, to each destination. `position`
-- is the last audit sequence the destination has received, so delivery resumes from there after
-- the SIEM was down or the server restarted (at least once: a batch is resent whole until it is
-- known to have arrived). Keep in step with ../postgres/0011_siem.sql.
CREATE TABLE siem_destinations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    format TEXT NOT NULL,
    -- PEM of the CA that signs a tls:// destination's certificate (public, not a secret).
    ca_cert TEXT,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    position BIGINT NOT NULL DEFAULT 0,
    last_ok_at TEXT,
    last_error_at TEXT,
    last_error TEXT,
    -- Unix seconds of the first failure of the current outage (NULL while it delivers), and
    -- whether that outage has been alerted, so a restart neither forgets nor repeats the alert.
    failing_since BIGINT,
    alerted INTEGER NOT NULL DEFAULT 0
);
