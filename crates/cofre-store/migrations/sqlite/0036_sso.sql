-- Single sign-on with OpenID Connect (issue 19).
--
-- One row per identity provider. The client secret is sealed under the master key (envelope:
-- wrapped data key + ciphertext, associated data `cofre:sso:NAME`). `scopes` is what the authorization request asks for (space-separated); `mappings` is JSON: a list of
-- `IDP_GROUP=GROUP` / `IDP_GROUP=role:ROLE` texts; `allowed_domains` a JSON list of domains.
CREATE TABLE sso_providers (
    name TEXT PRIMARY KEY,
    issuer TEXT NOT NULL,
    client_id TEXT NOT NULL,
    secret_wrapped_key BLOB NOT NULL,
    secret_ciphertext BLOB NOT NULL,
    groups_claim TEXT NOT NULL,
    username_claim TEXT NOT NULL,
    scopes TEXT NOT NULL,
    mappings TEXT NOT NULL,
    default_role TEXT,
    allowed_domains TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Who an IdP subject is here: linked by (issuer, subject), never by an e-mail address or a name.
CREATE TABLE sso_identities (
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id),
    provider TEXT NOT NULL,
    linked_at BIGINT NOT NULL,
    last_login_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE UNIQUE INDEX sso_identities_user ON sso_identities (user_id);

-- Logins sent to a provider and not yet back: the SHA-256 of their `state`, the nonce, the PKCE
-- verifier sealed under the master key (associated data `cofre:sso-login:STATE_HASH`), where the
-- provider must send the code back, and (console logins) the SHA-256 of the browser's binding
-- cookie. A row is deleted when its callback comes (one use) or when it expires.
CREATE TABLE sso_logins (
    state_hash TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    nonce TEXT NOT NULL,
    verifier_wrapped_key BLOB NOT NULL,
    verifier_ciphertext BLOB NOT NULL,
    redirect_uri TEXT NOT NULL,
    browser_hash TEXT,
    expires_at BIGINT NOT NULL
);
