//! Single sign-on with OpenID Connect: identity providers (admin) and the login through one.

use crate::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/sso`: an identity provider. One that gives a role above `user` (by a mapping or
/// by default), or a group a policy names, waits for a second admin.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SsoProviderRequest {
    /// What users pick it by (`cofre login --sso NAME`, "Log in with NAME").
    pub name: String,
    /// The provider's issuer URL, exactly as its discovery document and ID tokens say it
    /// (https; http only on a loopback address).
    pub issuer: String,
    pub client_id: String,
    /// Sealed in the vault when stored; never shown again.
    pub client_secret: SecretString,
    /// The claim holding the user's IdP groups (default `groups`).
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// The claim the Cofre user name is taken from (default `preferred_username`), which must be
    /// a valid Cofre name.
    #[serde(default)]
    pub username_claim: Option<String>,
    /// The scopes asked for, space-separated (default `openid profile email`; add the one
    /// that makes the provider send the groups claim, e.g. `groups`).
    #[serde(default)]
    pub scopes: Option<String>,
    /// `IDP_GROUP=GROUP` or `IDP_GROUP=role:ROLE`.
    #[serde(default)]
    pub mappings: Vec<String>,
    /// The role of a user none of whose groups is mapped; without it such a user is refused.
    #[serde(default)]
    pub default_role: Option<String>,
    /// When given, the ID token's `email` must be verified and in one of these domains.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SsoProviderInfo {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub groups_claim: String,
    pub username_claim: String,
    pub scopes: String,
    pub mappings: Vec<String>,
    pub default_role: Option<String>,
    pub allowed_domains: Vec<String>,
    pub created_by: String,
    pub created_at: String,
}

/// `POST /api/v1/sso/{name}/test`: the provider's discovery and keys, fetched now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SsoTestReport {
    pub name: String,
    /// Whether a login could work: discovery and keys fetched, nothing in `problems`.
    pub ok: bool,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    /// The key ids the provider publishes.
    pub key_ids: Vec<String>,
    /// What is wrong, each naming the check.
    pub problems: Vec<String>,
}

/// `GET /api/v1/auth/sso`: what a login page offers (no authentication).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SsoProviderName {
    pub name: String,
}

/// `POST /api/v1/auth/sso/{name}/begin`: a login through the provider, for a native client
/// (the CLI) that receives the code on its own loopback address (RFC 8252).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SsoBeginRequest {
    /// `http://127.0.0.1:PORT/...` or `http://[::1]:PORT/...`: nothing else is accepted.
    pub redirect_uri: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SsoBeginResponse {
    /// Open this in a browser.
    pub authorization_url: String,
    /// The `state` the provider sends back with the code.
    pub state: String,
}

/// `POST /api/v1/auth/sso/finish`: the code and state the provider sent back.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SsoFinishRequest {
    pub state: String,
    pub code: SecretString,
}

/// `POST /api/v1/auth/sso/totp`, with the token of a login whose `next_step` is `totp`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SsoTotpRequest {
    pub totp_code: String,
}
