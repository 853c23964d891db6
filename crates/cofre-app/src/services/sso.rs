//! Single sign-on with OpenID Connect: identity providers (admins add them, dual-controlled when
//! they give more than a plain user), and the login through one: the authorization code flow
//! with PKCE, `state` and `nonce`; discovery and keys fetched and cached, fetched again when the
//! token names a key the cache lacks (the provider rotated); the ID token judged by
//! `cofre_core::sso`; the user provisioned on first login and linked by (issuer, subject); role
//! and groups set from the mapping at every login. Every login and refusal is audited.

use super::accounts::user_info;
use super::governance::{Applied, Change, Output};
use super::{rfc3339, Accounts, App, Principal, TokenScope};
use crate::error::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_core::names::{check_identifier, check_text};
use cofre_core::role::{Action, Role};
use cofre_core::sso::{self as rules, Mapping, Refusal};
use cofre_crypto::oidc::{self, IdTokenError, JwkSet};
use cofre_crypto::{envelope, token, SealedSecret};
use cofre_proto::{
    LoginResponse, SecretString, SsoProviderInfo, SsoProviderName, SsoProviderRequest,
    SsoTestReport,
};
use cofre_store::sso::{SsoLoginRow, SsoProviderRow};
use cofre_store::users::NewUser;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a login may take at the provider before its `state` is forgotten.
const LOGIN_SECONDS: i64 = 600;
/// Logins in flight at most: `begin` needs no authentication, so it must not fill the database.
const MAX_LOGINS_IN_FLIGHT: i64 = 10_000;
/// How long discovery and keys are trusted before they are fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// Every request to a provider has this deadline.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// A discovery document, key set or token response larger than this is refused.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// How long the token of an SSO login waiting for its TOTP code lives.
const TOTP_STEP_SECONDS: i64 = 300;
/// How long the token of an SSO login that must first enrol a TOTP lives.
const ENROLMENT_SECONDS: i64 = 900;
/// The password hash of a user made by SSO: not a PHC string, so no password ever matches it.
pub(crate) const NO_PASSWORD: &str = "!sso";
const DEFAULT_SCOPES: &str = "openid profile email";

/// A provider's discovery document, the parts a login uses.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

struct Metadata {
    discovery: Discovery,
    jwks: JwkSet,
    fetched: Instant,
}

/// This node's cache of providers' discovery and keys, by issuer, and its HTTP client.
#[derive(Default)]
pub(crate) struct SsoState {
    cache: std::sync::Mutex<HashMap<String, Arc<Metadata>>>,
    http: std::sync::OnceLock<reqwest::Client>,
}

/// A provider as stored in a change request while it waits for a second admin: the secret is
/// already sealed (hex), so the request holds nothing readable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SsoProviderDraft {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub secret_wrapped_key: String,
    pub secret_ciphertext: String,
    pub groups_claim: String,
    pub username_claim: String,
    pub scopes: String,
    pub mappings: Vec<String>,
    pub default_role: Option<String>,
    pub allowed_domains: Vec<String>,
}

fn refused(r: &Refusal) -> Error {
    Error::new(
        ErrorKind::Unauthorized,
        ErrorCode::SsoRefused,
        r.to_string(),
    )
}

fn provider_error(what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        ErrorCode::SsoRefused,
        format!("provider: {what}"),
    )
}

fn loopback_ip(url: &reqwest::Url) -> bool {
    url.host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<std::net::IpAddr>().ok())
        .is_some_and(|a| a.is_loopback())
}

/// An issuer (or a provider's endpoint): https, or http on a loopback address; no query,
/// fragment or user info.
fn check_provider_url(field: &str, text: &str) -> Result<reqwest::Url> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| Error::invalid(field, format!("{field}: not a URL ({e})")))?;
    let loopback = loopback_ip(&url) || url.host_str() == Some("localhost");
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    if !scheme_ok {
        return Err(Error::invalid(
            field,
            format!("{field}: must be https:// (http:// only on a loopback address)"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(Error::invalid(
            field,
            format!("{field}: must have no query, fragment or user name"),
        ));
    }
    Ok(url)
}

/// Where the CLI may ask the code to be sent: its own loopback listener (RFC 8252 7.3).
pub fn check_loopback_redirect(text: &str) -> Result<()> {
    let field = "redirect_uri";
    let url = reqwest::Url::parse(text)
        .map_err(|e| Error::invalid(field, format!("{field}: not a URL ({e})")))?;
    if url.scheme() != "http"
        || !loopback_ip(&url)
        || url.port().is_none()
        || url.fragment().is_some()
    {
        return Err(Error::invalid(
            field,
            format!(
                "{field}: must be http://127.0.0.1:PORT/... or http://[::1]:PORT/... (the CLI's own loopback listener)"
            ),
        ));
    }
    Ok(())
}

fn check_claim_name(field: &str, value: &str) -> Result<()> {
    check_text(field, value, 64)?;
    if value.is_empty() || value.contains(char::is_whitespace) {
        return Err(Error::invalid(
            field,
            format!("{field}: a claim name, without spaces"),
        ));
    }
    Ok(())
}

fn parse_mappings(texts: &[String]) -> Result<Vec<Mapping>> {
    texts
        .iter()
        .map(|t| Mapping::parse("mappings", t).map_err(Error::from))
        .collect()
}

fn stored_list(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

fn provider_info(row: &SsoProviderRow) -> SsoProviderInfo {
    SsoProviderInfo {
        name: row.name.clone(),
        issuer: row.issuer.clone(),
        client_id: row.client_id.clone(),
        groups_claim: row.groups_claim.clone(),
        username_claim: row.username_claim.clone(),
        scopes: row.scopes.clone(),
        mappings: stored_list(&row.mappings),
        default_role: row.default_role.clone(),
        allowed_domains: stored_list(&row.allowed_domains),
        created_by: row.created_by.clone(),
        created_at: row.created_at.clone(),
    }
}

fn secret_aad(name: &str) -> String {
    format!("cofre:sso:{name}")
}

fn verifier_aad(state_hash: &str) -> String {
    format!("cofre:sso-login:{state_hash}")
}

impl SsoProviderDraft {
    /// What the draft would store, for the audit trail and the change request's diff.
    pub(crate) fn diff(&self) -> String {
        format!(
            "+ sso provider {} ({}, client {}): mappings [{}], default role {}",
            self.name,
            self.issuer,
            self.client_id,
            self.mappings.join(", "),
            self.default_role
                .as_deref()
                .unwrap_or("(none: unmapped users are refused)")
        )
    }

    /// Whether it gives more than a plain user (`cofre_core::sso::provider_widens`).
    pub(crate) fn widens(&self, group_is_named: impl Fn(&str) -> bool) -> Result<bool> {
        let mappings = parse_mappings(&self.mappings)?;
        let default_role = self.default_role.as_deref().and_then(Role::parse);
        Ok(rules::provider_widens(
            &mappings,
            default_role,
            group_is_named,
        ))
    }

    pub(crate) fn row(&self, created_by: &str, created_at: &str) -> Result<SsoProviderRow> {
        let hex = |field: &str, v: &str| {
            hex::decode(v).map_err(|_| Error::internal("reading an sso provider", field))
        };
        Ok(SsoProviderRow {
            name: self.name.clone(),
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            secret_sealed: (
                hex("secret_wrapped_key", &self.secret_wrapped_key)?,
                hex("secret_ciphertext", &self.secret_ciphertext)?,
            ),
            groups_claim: self.groups_claim.clone(),
            username_claim: self.username_claim.clone(),
            scopes: self.scopes.clone(),
            mappings: serde_json::to_string(&self.mappings)
                .map_err(|e| Error::internal("storing an sso provider", e))?,
            default_role: self.default_role.clone(),
            allowed_domains: serde_json::to_string(&self.allowed_domains)
                .map_err(|e| Error::internal("storing an sso provider", e))?,
            created_by: created_by.to_owned(),
            created_at: created_at.to_owned(),
        })
    }
}

impl App {
    fn sso_http(&self) -> Result<reqwest::Client> {
        if let Some(c) = self.sso.http.get() {
            return Ok(c.clone());
        }
        let client = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .connect_timeout(PROVIDER_TIMEOUT)
            // A provider's endpoints are named by its discovery document; a redirect is not
            // followed anywhere it did not name.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::internal("making the SSO HTTP client", e))?;
        Ok(self.sso.http.get_or_init(|| client).clone())
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(&self, what: &str, url: &str) -> Result<T> {
        check_provider_url(what, url)?;
        let res = self
            .sso_http()?
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| provider_error(format!("{what}: {url} did not answer ({e})")))?;
        let status = res.status();
        if !status.is_success() {
            return Err(provider_error(format!("{what}: {url} answered {status}")));
        }
        let body = read_limited(res, what).await?;
        serde_json::from_slice(&body).map_err(|e| {
            provider_error(format!(
                "{what}: {url} is not what OpenID Connect says ({e})"
            ))
        })
    }

    /// The provider's discovery and keys: cached, fetched again after an hour or when `refresh`.
    async fn sso_metadata(&self, issuer: &str, refresh: bool) -> Result<Arc<Metadata>> {
        if !refresh {
            let cache = self
                .sso
                .cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(m) = cache.get(issuer) {
                if m.fetched.elapsed() < METADATA_TTL {
                    return Ok(m.clone());
                }
            }
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.fetch_json("discovery", &url).await?;
        if discovery.issuer != issuer {
            return Err(provider_error(format!(
                "issuer: the discovery document names {:?}, not {issuer:?}",
                discovery.issuer
            )));
        }
        for (what, u) in [
            ("authorization_endpoint", &discovery.authorization_endpoint),
            ("token_endpoint", &discovery.token_endpoint),
        ] {
            check_provider_url(what, u)?;
        }
        let jwks: JwkSet = self.fetch_json("jwks_uri", &discovery.jwks_uri).await?;
        let m = Arc::new(Metadata {
            discovery,
            jwks,
            fetched: Instant::now(),
        });
        self.sso
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(issuer.to_owned(), m.clone());
        Ok(m)
    }

    async fn sso_provider_row(&self, name: &str) -> Result<SsoProviderRow> {
        check_identifier("provider", name)?;
        self.store
            .sso_provider(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("sso provider {name}")))
    }

    /// Audits a refused SSO login and gives the error the user sees. With `state_hash`, the
    /// login's state is spent in the same transaction: a refused login cannot be tried again.
    async fn sso_refusal(
        &self,
        refused: Refused<'_>,
        state_hash: Option<&str>,
        source: &str,
    ) -> Error {
        let Refused {
            actor,
            provider,
            check,
            error,
        } = refused;
        let entry = NewAuditEntry::new(actor, "auth.sso_refused", format!("sso:{provider}"))
            .outcome("denied")
            .detail("check", check)
            .detail("why", error.message.as_str())
            .detail("source", source);
        let written = async {
            match state_hash {
                Some(h) => {
                    let mut tx = self.store.write().await?;
                    tx.take_sso_login(h).await?;
                    self.commit(tx, entry).await
                }
                None => self.record(entry).await,
            }
        }
        .await;
        match written {
            Ok(()) => error,
            // Fail closed: the refusal stands either way, but say the audit failed.
            Err(e) => e,
        }
    }
}

/// A refused login, for [`App::sso_refusal`].
struct Refused<'a> {
    actor: &'a str,
    provider: &'a str,
    check: &'a str,
    error: Error,
}

async fn read_limited(mut res: reqwest::Response, what: &str) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| provider_error(format!("{what}: reading the answer ({e})")))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(provider_error(format!("{what}: the answer is over 1 MiB")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A login that has passed the provider, before the user is known.
struct Verified {
    /// The IdP said it did a second factor that `[sso] trusted_amr` trusts.
    idp_mfa: bool,
    provider: SsoProviderRow,
    subject: String,
    username: String,
    resolved: rules::Resolved,
    idp_groups: Vec<String>,
}

/// Where a login is started from: the console (the browser's binding cookie, the console's own
/// callback) or a native client (its loopback redirect).
pub struct SsoBegin<'a> {
    pub provider: &'a str,
    pub redirect_uri: &'a str,
    /// The console's random per-browser value, kept as its SHA-256: the callback must come back
    /// to the browser that started it (no login CSRF).
    pub browser: Option<&'a str>,
}

/// The provider's answer at the callback.
pub struct SsoFinish<'a> {
    pub state: &'a str,
    pub code: &'a str,
    pub browser: Option<&'a str>,
    pub source: &'a str,
}

impl Accounts<'_> {
    /// `POST /api/v1/sso`: adds a provider; one that widens access waits for a second admin.
    pub async fn add_sso_provider(
        &self,
        who: &Principal,
        req: &SsoProviderRequest,
    ) -> Result<Applied<SsoProviderInfo>> {
        who.require(Action::ManageUsers)?;
        check_identifier("name", &req.name)?;
        check_provider_url("issuer", &req.issuer)?;
        check_text("client_id", &req.client_id, 255)?;
        if req.client_id.is_empty() {
            return Err(Error::invalid("client_id", "client_id: required"));
        }
        let secret = req.client_secret.expose();
        if secret.is_empty() || secret.len() > 1024 {
            return Err(Error::invalid(
                "client_secret",
                "client_secret: 1 to 1024 bytes",
            ));
        }
        let groups_claim = req.groups_claim.clone().unwrap_or_else(|| "groups".into());
        check_claim_name("groups_claim", &groups_claim)?;
        let username_claim = req
            .username_claim
            .clone()
            .unwrap_or_else(|| "preferred_username".into());
        check_claim_name("username_claim", &username_claim)?;
        let scopes = req.scopes.clone().unwrap_or_else(|| DEFAULT_SCOPES.into());
        check_text("scopes", &scopes, 500)?;
        if !scopes.split_whitespace().any(|s| s == "openid") {
            return Err(Error::invalid("scopes", "scopes: must include openid"));
        }
        let mappings = parse_mappings(&req.mappings)?;
        if let Some(r) = &req.default_role {
            Role::parse(r).ok_or_else(|| {
                Error::invalid("default_role", format!("default_role: unknown role {r:?}"))
            })?;
        }
        for d in &req.allowed_domains {
            cofre_core::names::check_host("allowed_domains", d)?;
        }
        let sealed = self
            .with_master(|mk| {
                envelope::seal(mk, secret.as_bytes(), secret_aad(&req.name).as_bytes())
            })?
            .map_err(|e| Error::internal("sealing the client secret", e))?;
        let draft = SsoProviderDraft {
            name: req.name.clone(),
            issuer: req.issuer.clone(),
            client_id: req.client_id.clone(),
            secret_wrapped_key: hex::encode(&sealed.wrapped_key),
            secret_ciphertext: hex::encode(&sealed.ciphertext),
            groups_claim,
            username_claim,
            scopes: scopes.split_whitespace().collect::<Vec<_>>().join(" "),
            mappings: mappings.iter().map(Mapping::text).collect(),
            default_role: req.default_role.clone(),
            allowed_domains: req
                .allowed_domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
        };
        match self
            .approvals()
            .propose_change(who, Change::SsoAdd { provider: draft })
            .await?
        {
            Applied::Held(c) => Ok(Applied::Held(c)),
            Applied::Done(Output::Nothing) => Ok(Applied::Done(provider_info(
                &self.sso_provider_row(&req.name).await?,
            ))),
            Applied::Done(_) => Err(Error::internal(
                "adding an sso provider",
                "unexpected output",
            )),
        }
    }

    pub async fn list_sso_providers(&self, who: &Principal) -> Result<Vec<SsoProviderInfo>> {
        who.require(Action::ManageUsers)?;
        Ok(self
            .store
            .sso_providers()
            .await?
            .iter()
            .map(provider_info)
            .collect())
    }

    /// What a login page offers: the providers' names, to anyone.
    pub async fn sso_provider_names(&self) -> Result<Vec<SsoProviderName>> {
        Ok(self
            .store
            .sso_providers()
            .await?
            .into_iter()
            .map(|p| SsoProviderName { name: p.name })
            .collect())
    }

    /// Removes a provider: nobody logs in through it any more (its users stay, with what they
    /// have until an admin takes it away). Narrows access, so it needs nobody else.
    pub async fn remove_sso_provider(&self, who: &Principal, name: &str) -> Result<()> {
        who.require(Action::ManageUsers)?;
        check_identifier("name", name)?;
        let mut tx = self.store.write().await?;
        if !tx.delete_sso_provider(name).await? {
            return Err(Error::not_found(format!("sso provider {name}")));
        }
        self.commit(
            tx,
            NewAuditEntry::new(&who.username, "sso.remove", format!("sso:{name}")),
        )
        .await
    }

    /// Fetches the provider's discovery and keys now and says what is wrong.
    pub async fn test_sso_provider(&self, who: &Principal, name: &str) -> Result<SsoTestReport> {
        who.require(Action::ManageUsers)?;
        let row = self.sso_provider_row(name).await?;
        let mut report = SsoTestReport {
            name: row.name.clone(),
            ok: false,
            authorization_endpoint: None,
            token_endpoint: None,
            jwks_uri: None,
            key_ids: Vec::new(),
            problems: Vec::new(),
        };
        match self.sso_metadata(&row.issuer, true).await {
            Ok(m) => {
                report.authorization_endpoint = Some(m.discovery.authorization_endpoint.clone());
                report.token_endpoint = Some(m.discovery.token_endpoint.clone());
                report.jwks_uri = Some(m.discovery.jwks_uri.clone());
                report.key_ids = m
                    .jwks
                    .keys
                    .iter()
                    .map(|k| k.common.key_id.clone().unwrap_or_else(|| "(no kid)".into()))
                    .collect();
                if m.jwks.keys.is_empty() {
                    report
                        .problems
                        .push("jwks_uri: the provider publishes no key".into());
                }
            }
            Err(e) => report.problems.push(e.message),
        }
        if let Err(e) = self.open_client_secret(&row) {
            report
                .problems
                .push(format!("client_secret: {}", e.message));
        }
        report.ok = report.problems.is_empty();
        self.record(
            NewAuditEntry::new(&who.username, "sso.test", format!("sso:{name}"))
                .detail("ok", report.ok),
        )
        .await?;
        Ok(report)
    }

    fn open_client_secret(&self, row: &SsoProviderRow) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        let sealed = SealedSecret {
            wrapped_key: row.secret_sealed.0.clone(),
            ciphertext: row.secret_sealed.1.clone(),
        };
        self.with_master(|mk| envelope::open(mk, &sealed, secret_aad(&row.name).as_bytes()))?
            .map_err(|e| Error::internal("opening the client secret", e))
    }

    /// Starts a login: remembers its state, nonce and PKCE verifier, and gives the provider's
    /// authorization URL and the state.
    pub async fn begin_sso(&self, b: SsoBegin<'_>) -> Result<(String, String)> {
        let row = self.sso_provider_row(b.provider).await?;
        let m = self.sso_metadata(&row.issuer, false).await?;
        let state = oidc::random_text();
        let nonce = oidc::random_text();
        let verifier = oidc::random_text();
        let state_hash = token::hash_token(&state);
        let sealed = self
            .with_master(|mk| {
                envelope::seal(
                    mk,
                    verifier.as_bytes(),
                    verifier_aad(&state_hash).as_bytes(),
                )
            })?
            .map_err(|e| Error::internal("sealing the PKCE verifier", e))?;
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        if tx.sso_logins_in_flight(now).await? >= MAX_LOGINS_IN_FLIGHT {
            return Err(Error::new(
                ErrorKind::TooMany,
                ErrorCode::LoginDelayed,
                "too many SSO logins in flight: try again in a few minutes",
            ));
        }
        tx.insert_sso_login(
            &SsoLoginRow {
                state_hash,
                provider: row.name.clone(),
                nonce: nonce.to_string(),
                verifier_sealed: (sealed.wrapped_key, sealed.ciphertext),
                redirect_uri: b.redirect_uri.to_owned(),
                browser_hash: b.browser.map(token::hash_token),
                expires_at: now + LOGIN_SECONDS,
            },
            now,
        )
        .await?;
        self.commit(
            tx,
            NewAuditEntry::new("sso", "auth.sso_begin", format!("sso:{}", row.name)).detail(
                "client",
                if b.browser.is_some() {
                    "console"
                } else {
                    "native"
                },
            ),
        )
        .await?;
        let url = reqwest::Url::parse_with_params(
            &m.discovery.authorization_endpoint,
            &[
                ("response_type", "code"),
                ("client_id", row.client_id.as_str()),
                ("redirect_uri", b.redirect_uri),
                ("scope", row.scopes.as_str()),
                ("state", state.as_str()),
                ("nonce", nonce.as_str()),
                ("code_challenge", oidc::pkce_challenge(&verifier).as_str()),
                ("code_challenge_method", "S256"),
            ],
        )
        .map_err(|e| provider_error(format!("authorization_endpoint: {e}")))?;
        Ok((url.to_string(), state.to_string()))
    }

    /// The provider sent the browser back: exchanges the code, checks the ID token, provisions
    /// or updates the user, and logs in. Each refusal is audited and names its check.
    pub async fn finish_sso(&self, f: SsoFinish<'_>) -> Result<LoginResponse> {
        let state_hash = token::hash_token(f.state);
        let now = self.now().unix_timestamp();
        // Read, not taken: the provider is asked without holding the write lock. The state is
        // spent in the transaction that records the outcome, whichever it is, so of two
        // callbacks with one state only one gets anywhere.
        let pending = self.store.sso_login(&state_hash).await?;
        let Some(pending) = pending.filter(|p| p.expires_at > now) else {
            let error = Error::new(
                ErrorKind::Unauthorized,
                ErrorCode::SsoRefused,
                "state: this login is unknown, expired or already used; start again",
            )
            .with_field("state");
            let r = Refused {
                actor: "sso",
                provider: "-",
                check: "state",
                error,
            };
            return Err(self.sso_refusal(r, None, f.source).await);
        };
        let bound = match (&pending.browser_hash, f.browser) {
            (None, _) => true,
            (Some(h), Some(b)) => {
                token::constant_time_eq(h.as_bytes(), token::hash_token(b).as_bytes())
            }
            (Some(_), None) => false,
        };
        if !bound {
            let error = Error::new(
                ErrorKind::Unauthorized,
                ErrorCode::SsoRefused,
                "state: this login was started in another browser; start again here",
            );
            let r = Refused {
                actor: "sso",
                provider: &pending.provider,
                check: "state",
                error,
            };
            return Err(self.sso_refusal(r, Some(&state_hash), f.source).await);
        }
        let verified = match self.verify_at_provider(&pending, f.code, now).await {
            Ok(v) => v,
            Err((check, error)) => {
                let r = Refused {
                    actor: "sso",
                    provider: &pending.provider,
                    check,
                    error,
                };
                return Err(self.sso_refusal(r, Some(&state_hash), f.source).await);
            }
        };
        self.log_in_verified(verified, &state_hash, f.source, now)
            .await
    }

    async fn verify_at_provider(
        &self,
        pending: &SsoLoginRow,
        code: &str,
        now: i64,
    ) -> std::result::Result<Verified, (&'static str, Error)> {
        let provider = self
            .store
            .sso_provider(&pending.provider)
            .await
            .map_err(|e| ("provider", e.into()))?
            .ok_or_else(|| {
                (
                    "provider",
                    Error::not_found(format!("sso provider {}", pending.provider)),
                )
            })?;
        let m = self
            .sso_metadata(&provider.issuer, false)
            .await
            .map_err(|e| ("provider", e))?;
        let verifier = self
            .with_master(|mk| {
                envelope::open(
                    mk,
                    &SealedSecret {
                        wrapped_key: pending.verifier_sealed.0.clone(),
                        ciphertext: pending.verifier_sealed.1.clone(),
                    },
                    verifier_aad(&pending.state_hash).as_bytes(),
                )
            })
            .map_err(|e| ("provider", e))?
            .map_err(|e| ("provider", Error::internal("opening the PKCE verifier", e)))?;
        let verifier = String::from_utf8_lossy(&verifier).into_owned();
        let secret = self
            .open_client_secret(&provider)
            .map_err(|e| ("provider", e))?;
        let secret = zeroize::Zeroizing::new(String::from_utf8_lossy(&secret).into_owned());
        let res = self
            .sso_http()
            .map_err(|e| ("provider", e))?
            .post(&m.discovery.token_endpoint)
            .basic_auth(&provider.client_id, Some(secret.as_str()))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", pending.redirect_uri.as_str()),
                ("code_verifier", verifier.as_str()),
                ("client_id", provider.client_id.as_str()),
            ])
            .send()
            .await
            .map_err(|e| {
                (
                    "token",
                    provider_error(format!("token: the token endpoint did not answer ({e})")),
                )
            })?;
        let status = res.status();
        let body = read_limited(res, "token").await.map_err(|e| ("token", e))?;
        #[derive(Deserialize)]
        struct TokenAnswer {
            id_token: Option<String>,
            error: Option<String>,
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            (
                "token",
                provider_error(format!(
                    "token: the token endpoint answered {status} without JSON"
                )),
            )
        })?;
        let id_token = match (status.is_success(), answer.id_token) {
            (true, Some(t)) => zeroize::Zeroizing::new(t),
            _ => {
                // The provider's error code (e.g. invalid_grant) names why; never the code.
                let why: String = answer
                    .error
                    .unwrap_or_else(|| status.to_string())
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(64)
                    .collect();
                return Err((
                    "token",
                    Error::new(
                        ErrorKind::Unauthorized,
                        ErrorCode::SsoRefused,
                        format!("token: the provider refused the code ({why}); start again"),
                    ),
                ));
            }
        };
        let claims = match oidc::verify(&id_token, &m.jwks) {
            Ok(c) => c,
            // A key the cache lacks (or a signature it does not verify) may be the provider's
            // rotation: fetch the keys again, once.
            Err(IdTokenError::UnknownKey(_) | IdTokenError::Signature) => {
                let fresh = self
                    .sso_metadata(&provider.issuer, true)
                    .await
                    .map_err(|e| ("provider", e))?;
                oidc::verify(&id_token, &fresh.jwks).map_err(|e| {
                    (
                        "signature",
                        Error::new(
                            ErrorKind::Unauthorized,
                            ErrorCode::SsoRefused,
                            e.to_string(),
                        ),
                    )
                })?
            }
            Err(e) => {
                return Err((
                    "signature",
                    Error::new(
                        ErrorKind::Unauthorized,
                        ErrorCode::SsoRefused,
                        e.to_string(),
                    ),
                ))
            }
        };
        let judged = (|| {
            let subject = rules::check_claims(
                &claims,
                &rules::Expected {
                    issuer: &provider.issuer,
                    client_id: &provider.client_id,
                    nonce: &pending.nonce,
                    now,
                },
            )?
            .to_owned();
            rules::check_domain(&claims, &stored_list(&provider.allowed_domains))?;
            let username = rules::username(&claims, &provider.username_claim)?;
            let idp_groups = rules::idp_groups(&claims, &provider.groups_claim);
            let mappings = parse_mappings(&stored_list(&provider.mappings)).unwrap_or_default();
            let default_role = provider.default_role.as_deref().and_then(Role::parse);
            let resolved = rules::resolve(&mappings, default_role, &idp_groups)?;
            Ok::<_, Refusal>((subject, username, idp_groups, resolved))
        })();
        let idp_mfa = rules::idp_did_mfa(&claims, &self.config.sso.trusted_amr);
        match judged {
            Ok((subject, username, idp_groups, resolved)) => Ok(Verified {
                idp_mfa,
                provider,
                subject,
                username,
                resolved,
                idp_groups,
            }),
            Err(r) => Err((r.check(), refused(&r))),
        }
    }

    /// Provisions or updates the user the provider vouched for, and issues its token.
    async fn log_in_verified(
        &self,
        v: Verified,
        state_hash: &str,
        source: &str,
        now: i64,
    ) -> Result<LoginResponse> {
        let object = format!("sso:{}", v.provider.name);
        let provider_name = v.provider.name.clone();
        let refuse = |actor: &str, check: &'static str, error: Error| {
            let actor = actor.to_owned();
            let provider = provider_name.clone();
            async move {
                let r = Refused {
                    actor: &actor,
                    provider: &provider,
                    check,
                    error,
                };
                self.sso_refusal(r, Some(state_hash), source).await
            }
        };
        let mut tx = self.store.write().await?;
        if tx.take_sso_login(state_hash).await?.is_none() {
            drop(tx);
            let e = Error::new(
                ErrorKind::Unauthorized,
                ErrorCode::SsoRefused,
                "state: this login was already used; start again",
            );
            return Err(refuse("sso", "state", e).await);
        }
        let linked = tx.sso_user_id(&v.provider.issuer, &v.subject).await?;
        let (user, provisioned) = match linked {
            Some(id) => {
                let user = tx
                    .user_by_id(id)
                    .await?
                    .ok_or_else(|| Error::internal("an SSO login", "linked user missing"))?;
                (user, false)
            }
            None => {
                if tx.user_by_name(&v.username).await?.is_some() {
                    drop(tx);
                    let e = Error::new(
                        ErrorKind::Conflict,
                        ErrorCode::SsoRefused,
                        format!(
                            "username: a Cofre user {} exists and is not this IdP identity; it is never linked by name (rename one of them)",
                            v.username
                        ),
                    );
                    return Err(refuse(&v.username, "username", e).await);
                }
                let id = tx
                    .insert_user(NewUser {
                        username: &v.username,
                        role: v.resolved.role.as_str(),
                        password_hash: NO_PASSWORD,
                        must_change_password: false,
                        created_at: &self.now_text(),
                    })
                    .await?;
                tx.link_sso_identity(&v.provider.issuer, &v.subject, id, &v.provider.name, now)
                    .await?;
                let user = tx
                    .user_by_id(id)
                    .await?
                    .ok_or_else(|| Error::internal("an SSO login", "new user missing"))?;
                (user, true)
            }
        };
        if user.disabled_at.is_some() {
            drop(tx);
            let e = super::accounts::account_disabled();
            return Err(refuse(&user.username, "disabled", e).await);
        }
        if let Some(e) = self.lockdown_refusal(v.resolved.role).await? {
            drop(tx);
            return Err(refuse(&user.username, "lockdown", e).await);
        }
        // The role and the groups are the mapping's, replaced at every login.
        let role_before = user.role.clone();
        if role_before != v.resolved.role.as_str() {
            tx.set_role(user.id, v.resolved.role.as_str()).await?;
        }
        let before = tx.groups_of(user.id).await?;
        let mut added = Vec::new();
        let mut missing = Vec::new();
        for g in &v.resolved.groups {
            if before.contains(g) {
                continue;
            }
            match tx.group_id(g).await? {
                Some(gid) => {
                    tx.add_member(gid, user.id).await?;
                    added.push(g.clone());
                }
                None => missing.push(g.clone()),
            }
        }
        let mut removed = Vec::new();
        for g in &before {
            if v.resolved.groups.contains(g) {
                continue;
            }
            if let Some(gid) = tx.group_id(g).await? {
                tx.remove_member(gid, user.id).await?;
                removed.push(g.clone());
            }
        }
        if !provisioned {
            tx.touch_sso_identity(&v.provider.issuer, &v.subject, now)
                .await?;
        }
        tx.record_login_success(user.id, None).await?;
        let session_ttl = self.sso_session_seconds();
        // `[sso] require_totp`: the token made now may only give the code (or enrol a TOTP).
        let (scope, ttl, next_step, second_factor) = match (
            self.config.sso.require_totp && !v.idp_mfa,
            user.totp_enabled,
        ) {
            (false, _) if v.idp_mfa => (TokenScope::Session, session_ttl, None, "idp"),
            (false, _) => (TokenScope::Session, session_ttl, None, "none"),
            (true, true) => (
                TokenScope::SsoTotp,
                TOTP_STEP_SECONDS,
                Some("totp"),
                "totp_pending",
            ),
            (true, false) => (
                TokenScope::TotpEnrolment,
                ENROLMENT_SECONDS,
                Some("totp_enrolment"),
                "totp_enrolment",
            ),
        };
        let (token_text, token_hash) = token::generate_token();
        let expires = now + ttl;
        tx.insert_token(
            &token_hash,
            user.id,
            scope.as_str(),
            &self.now_text(),
            expires,
        )
        .await?;
        let mut entry = NewAuditEntry::new(&user.username, "auth.sso_login", &*object)
            .detail("subject", v.subject.as_str())
            .detail("provisioned", provisioned)
            .detail("role", v.resolved.role.as_str())
            .detail("groups", v.resolved.groups.join(","))
            .detail("idp_groups", v.idp_groups.join(","))
            .detail("second_factor", second_factor)
            .detail("source", source);
        if role_before != v.resolved.role.as_str() && !provisioned {
            entry = entry.detail("role_before", role_before.as_str());
        }
        if !added.is_empty() {
            entry = entry.detail("groups_added", added.join(","));
        }
        if !removed.is_empty() {
            entry = entry.detail("groups_removed", removed.join(","));
        }
        if !missing.is_empty() {
            entry = entry.detail("mapped_groups_missing", missing.join(","));
        }
        self.commit(tx, entry).await?;
        let narrowed =
            !removed.is_empty() || (role_before != v.resolved.role.as_str() && !provisioned);
        if narrowed {
            self.redecide_live_sessions(
                &user.username,
                &format!(
                    "{} logged in through {} with fewer groups or another role",
                    user.username, v.provider.name
                ),
            )
            .await;
        }
        let groups = self.store.user_groups(user.id).await?;
        let user = self
            .store
            .user_by_name(&user.username)
            .await?
            .ok_or_else(|| Error::internal("an SSO login", "user missing"))?;
        Ok(LoginResponse {
            token: SecretString::new(token_text.to_string()),
            expires_at: rfc3339(expires),
            password_change_required: false,
            next_step: next_step.map(str::to_owned),
            user: user_info(&user, groups, now),
        })
    }

    /// The second step of an SSO login under `[sso] require_totp`: the TOTP code, checked as at
    /// a password login (lockout, replay, audit), for the `SsoTotp` token the first step gave.
    /// That token ends; a session token takes its place.
    pub async fn verify_sso_totp(
        &self,
        who: &Principal,
        code: &str,
        source: &str,
    ) -> Result<LoginResponse> {
        if who.scope != TokenScope::SsoTotp {
            // A one-time-password login is told what it must do first, as everywhere.
            who.require(Action::OwnAccount)?;
            return Err(Error::forbidden(
                "only the token of an SSO login waiting for its TOTP code may give one",
            ));
        }
        let input = super::accounts::LoginInput {
            username: &who.username,
            password: "",
            totp_code: Some(code),
            source,
            aggregated: false,
        };
        let rows = self.store.login_failures(&who.username).await?;
        self.refuse_if_held(&input, &rows, "auth.login_refused", true)
            .await?;
        let user = self
            .store
            .user_by_name(&who.username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {}", who.username)))?;
        let now = self.now().unix_timestamp();
        let step = self.totp_step_of(&user, code, now)?;
        let mut tx = self.store.write().await?;
        let rows = tx.login_failures(&who.username).await?;
        // Under the write lock: another login with the same code may have committed meanwhile.
        let last_now = tx.totp_last_step(user.id).await?;
        let step = step
            .and_then(|s| i64::try_from(s).ok())
            .filter(|s| last_now.is_none_or(|l| l < *s));
        let Some(step) = step else {
            self.count_failure(
                tx,
                &user,
                source,
                &rows,
                NewAuditEntry::new(
                    &who.username,
                    "auth.login_failed",
                    format!("user:{}", who.username),
                )
                .outcome("denied")
                .detail("why", "wrong or reused TOTP code (SSO login)"),
            )
            .await?;
            return Err(super::accounts::totp_invalid());
        };
        tx.clear_login_failures(
            &who.username,
            Some(&cofre_core::lockout::source_key(source)),
        )
        .await?;
        tx.record_login_success(user.id, Some(step)).await?;
        tx.delete_token(&who.token_hash).await?;
        let (token_text, token_hash) = token::generate_token();
        let expires = now + self.sso_session_seconds();
        tx.insert_token(
            &token_hash,
            user.id,
            TokenScope::Session.as_str(),
            &self.now_text(),
            expires,
        )
        .await?;
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                "auth.sso_totp",
                format!("user:{}", who.username),
            )
            .detail("source", source),
        )
        .await?;
        let groups = self.store.user_groups(user.id).await?;
        Ok(LoginResponse {
            token: SecretString::new(token_text.to_string()),
            expires_at: rfc3339(expires),
            password_change_required: false,
            next_step: None,
            user: user_info(&user, groups, now),
        })
    }
}

impl App {
    /// An SSO user's gateway logins (an SSH key of theirs) and channels work only while their
    /// last SSO login is at most `[sso] max_session_hours` old: what the provider says is asked
    /// again that often, so leaving the company at the provider ends SSH access too.
    pub(crate) async fn require_fresh_sso(&self, user: &cofre_store::users::UserRow) -> Result<()> {
        let Some((provider, last)) = self.store.sso_last_login(user.id).await? else {
            return Ok(());
        };
        if self.now().unix_timestamp() - last <= self.sso_session_seconds() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Unauthorized,
            ErrorCode::SsoRefused,
            format!(
                "{} signs in through {provider}: log in through it again (`cofre login --sso {provider}`) before using the gateway",
                user.username
            ),
        ))
    }

    /// How long a token of an SSO login lives: `[sso] max_session_hours`, never longer than
    /// `token_ttl_minutes`.
    pub fn sso_session_seconds(&self) -> i64 {
        i64::try_from(self.config.token_ttl_minutes * 60)
            .unwrap_or(3600)
            .min(i64::from(self.config.sso.max_session_hours) * 3600)
    }
}
