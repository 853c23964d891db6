//! Single sign-on with OpenID Connect, pure: the group mappings, what an ID token's claims must
//! say, and who the token makes of its holder (name, role, groups). No I/O: the signature is
//! checked by `cofre-crypto`, the provider is spoken to by `cofre-app`.

use crate::names::check_identifier;
use crate::role::Role;
use crate::FieldError;
use serde_json::{Map, Value};

/// How far a provider's clock may be from ours, in seconds, for `exp` and `iat`.
pub const MAX_SKEW_SECONDS: i64 = 120;
/// An ID token issued longer ago than this is refused even if `exp` is later: the code was
/// exchanged moments ago, so an old token is a replayed one.
pub const MAX_TOKEN_AGE_SECONDS: i64 = 600;

/// What an IdP group gives: membership of a Cofre group, or a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    Group(String),
    Role(Role),
}

/// One `--map-group`: `IDP_GROUP=GROUP` or `IDP_GROUP=role:ROLE` (an optional `idp:` before the
/// IdP group is accepted and dropped, so `idp:pam-ops=ops` reads as written in the docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub idp_group: String,
    pub grant: Grant,
}

impl Mapping {
    pub fn parse(field: &str, text: &str) -> Result<Mapping, FieldError> {
        let (idp, to) = text.split_once('=').ok_or_else(|| {
            FieldError::new(
                field,
                format!("{text:?}: expected IDP_GROUP=GROUP or IDP_GROUP=role:ROLE"),
            )
        })?;
        let idp = idp.strip_prefix("idp:").unwrap_or(idp).trim();
        if idp.is_empty() || idp.len() > 256 || idp.chars().any(char::is_control) {
            return Err(FieldError::new(
                field,
                format!("{text:?}: the IdP group must be 1 to 256 printable characters"),
            ));
        }
        let grant =
            match to.strip_prefix("role:") {
                Some(r) => Grant::Role(Role::parse(r).ok_or_else(|| {
                    FieldError::new(field, format!("{text:?}: unknown role {r:?}"))
                })?),
                None => {
                    check_identifier(field, to)?;
                    Grant::Group(to.to_owned())
                }
            };
        Ok(Mapping {
            idp_group: idp.to_owned(),
            grant,
        })
    }

    /// The form `parse` reads.
    pub fn text(&self) -> String {
        match &self.grant {
            Grant::Group(g) => format!("{}={g}", self.idp_group),
            Grant::Role(r) => format!("{}=role:{}", self.idp_group, r.as_str()),
        }
    }
}

/// Whether a provider's settings would give anyone more than a plain `user` with no group a
/// policy names: a role other than `user` by mapping or by default, or a mapped group that
/// `group_is_named` says a policy or approval level names. Such a provider is dual-controlled.
pub fn provider_widens(
    mappings: &[Mapping],
    default_role: Option<Role>,
    group_is_named: impl Fn(&str) -> bool,
) -> bool {
    default_role.is_some_and(|r| r != Role::User)
        || mappings.iter().any(|m| match &m.grant {
            Grant::Role(r) => *r != Role::User,
            Grant::Group(g) => group_is_named(g),
        })
}

/// Why an SSO login was refused. The text names the check, never a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("issuer: the ID token was issued by {0:?}, not this provider's issuer")]
    Issuer(String),
    #[error("audience: the ID token is not for this client (aud {0:?})")]
    Audience(String),
    #[error("expired: the ID token expired at {0} (unix seconds)")]
    Expired(i64),
    #[error("iat: the ID token is dated {0} (unix seconds), too far from now")]
    IssuedAt(i64),
    #[error("nonce: the ID token does not answer this login (replayed or mixed up)")]
    Nonce,
    #[error("{0}: the ID token has no such claim, or not as a string")]
    MissingClaim(String),
    #[error("username: the {claim} claim {value:?} is not a Cofre user name ({reason})")]
    Username {
        claim: String,
        value: String,
        reason: String,
    },
    #[error("email: {0:?} is not in a domain this provider allows, or not verified")]
    Domain(String),
    #[error(
        "unmapped: none of your IdP groups is mapped, and this provider gives no default role"
    )]
    Unmapped,
}

impl Refusal {
    /// A short word for the audit trail and for tests: which check failed.
    pub fn check(&self) -> &'static str {
        match self {
            Refusal::Issuer(_) => "issuer",
            Refusal::Audience(_) => "audience",
            Refusal::Expired(_) => "expired",
            Refusal::IssuedAt(_) => "iat",
            Refusal::Nonce => "nonce",
            Refusal::MissingClaim(_) => "claim",
            Refusal::Username { .. } => "username",
            Refusal::Domain(_) => "domain",
            Refusal::Unmapped => "unmapped",
        }
    }
}

/// What the ID token must answer to.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Unix seconds.
    pub now: i64,
}

fn string_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Result<&'a str, Refusal> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Refusal::MissingClaim(name.to_owned()))
}

fn int_claim(claims: &Map<String, Value>, name: &str) -> Result<i64, Refusal> {
    claims
        .get(name)
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
        .ok_or_else(|| Refusal::MissingClaim(name.to_owned()))
}

/// Checks an ID token's claims (OpenID Connect Core 3.1.3.7): `iss` exactly, `aud` holding our
/// client (and `azp` ours when there are other audiences), `exp` after now and `iat` not in the
/// future (each within [`MAX_SKEW_SECONDS`]) nor older than [`MAX_TOKEN_AGE_SECONDS`], `nonce`
/// this login's. Returns the subject.
pub fn check_claims<'a>(
    claims: &'a Map<String, Value>,
    want: &Expected<'_>,
) -> Result<&'a str, Refusal> {
    let iss = string_claim(claims, "iss")?;
    if iss != want.issuer {
        return Err(Refusal::Issuer(iss.to_owned()));
    }
    let aud: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => return Err(Refusal::MissingClaim("aud".into())),
    };
    if !aud.contains(&want.client_id) {
        return Err(Refusal::Audience(aud.join(",")));
    }
    if aud.len() > 1 {
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if azp == want.client_id => {}
            _ => return Err(Refusal::Audience(aud.join(","))),
        }
    }
    let exp = int_claim(claims, "exp")?;
    if exp + MAX_SKEW_SECONDS <= want.now {
        return Err(Refusal::Expired(exp));
    }
    let iat = int_claim(claims, "iat")?;
    if iat > want.now + MAX_SKEW_SECONDS
        || iat + MAX_TOKEN_AGE_SECONDS + MAX_SKEW_SECONDS < want.now
    {
        return Err(Refusal::IssuedAt(iat));
    }
    match claims.get("nonce").and_then(Value::as_str) {
        // The nonce travelled in the authorization URL: not a secret, no constant time needed.
        Some(n) if n == want.nonce => {}
        _ => return Err(Refusal::Nonce),
    }
    let sub = string_claim(claims, "sub")?;
    if sub.is_empty() || sub.len() > 255 {
        return Err(Refusal::MissingClaim("sub".into()));
    }
    Ok(sub)
}

/// The Cofre user name the token names, from `claim` (e.g. `preferred_username`).
pub fn username(claims: &Map<String, Value>, claim: &str) -> Result<String, Refusal> {
    let value = string_claim(claims, claim)?;
    check_identifier("username", value).map_err(|e| Refusal::Username {
        claim: claim.to_owned(),
        value: value.chars().take(80).collect(),
        reason: e.reason,
    })?;
    Ok(value.to_owned())
}

/// With `allowed` domains configured, the token's `email` must be verified and in one of them.
pub fn check_domain(claims: &Map<String, Value>, allowed: &[String]) -> Result<(), Refusal> {
    if allowed.is_empty() {
        return Ok(());
    }
    let email = claims.get("email").and_then(Value::as_str).unwrap_or("");
    let verified = claims
        .get("email_verified")
        .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"));
    let domain = email.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
    match domain {
        Some(d) if verified && allowed.iter().any(|a| a.eq_ignore_ascii_case(&d)) => Ok(()),
        _ => Err(Refusal::Domain(email.chars().take(120).collect())),
    }
}

/// The IdP groups in `claim`: an array of strings (or one string); absent is none.
pub fn idp_groups(claims: &Map<String, Value>, claim: &str) -> Vec<String> {
    match claims.get(claim) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Who the IdP's groups make a user: a role and the Cofre groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub role: Role,
    /// Sorted, without duplicates.
    pub groups: Vec<String>,
}

/// The order in which one role wins over another when several mappings match.
const ROLE_PRECEDENCE: [Role; 6] = [
    Role::Admin,
    Role::Approver,
    Role::Operator,
    Role::Auditor,
    Role::Support,
    Role::User,
];

/// Resolves the IdP's groups through the mappings. No mapping matched: the default role with no
/// group, or [`Refusal::Unmapped`] without one. Some matched: their groups, and the highest
/// mapped role (admin, approver, operator, auditor, support, user) or else the default role or
/// `user`.
pub fn resolve(
    mappings: &[Mapping],
    default_role: Option<Role>,
    groups: &[String],
) -> Result<Resolved, Refusal> {
    let matched: Vec<&Mapping> = mappings
        .iter()
        .filter(|m| groups.contains(&m.idp_group))
        .collect();
    if matched.is_empty() {
        return default_role
            .map(|role| Resolved {
                role,
                groups: Vec::new(),
            })
            .ok_or(Refusal::Unmapped);
    }
    let mut cofre_groups: Vec<String> = matched
        .iter()
        .filter_map(|m| match &m.grant {
            Grant::Group(g) => Some(g.clone()),
            Grant::Role(_) => None,
        })
        .collect();
    cofre_groups.sort();
    cofre_groups.dedup();
    let mapped_roles: Vec<Role> = matched
        .iter()
        .filter_map(|m| match &m.grant {
            Grant::Role(r) => Some(*r),
            Grant::Group(_) => None,
        })
        .collect();
    let role = ROLE_PRECEDENCE
        .into_iter()
        .find(|r| mapped_roles.contains(r))
        .or(default_role)
        .unwrap_or(Role::User);
    Ok(Resolved {
        role,
        groups: cofre_groups,
    })
}

/// Whether the IdP's own `amr` (or `acr`) claim says it did a second factor, by the values the
/// operator trusts (`[sso] trusted_amr`). Nothing trusted: never.
pub fn idp_did_mfa(claims: &Map<String, Value>, trusted: &[String]) -> bool {
    if trusted.is_empty() {
        return false;
    }
    let mut said: Vec<&str> = match claims.get("amr") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if let Some(acr) = claims.get("acr").and_then(Value::as_str) {
        said.push(acr);
    }
    said.iter().any(|s| trusted.iter().any(|t| t == s))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn good(now: i64) -> Map<String, Value> {
        map(
            json!({"iss": "https://idp", "aud": "cofre", "exp": now + 300, "iat": now,
                   "nonce": "n1", "sub": "s-1", "preferred_username": "alice"}),
        )
    }

    fn want(now: i64) -> Expected<'static> {
        Expected {
            issuer: "https://idp",
            client_id: "cofre",
            nonce: "n1",
            now,
        }
    }

    #[test]
    fn a_good_token_gives_its_subject_and_each_bad_claim_names_its_check() {
        let now = 1_800_000_000;
        assert_eq!(check_claims(&good(now), &want(now)), Ok("s-1"));
        let bad = |k: &str, v: Value| {
            let mut c = good(now);
            c.insert(k.into(), v);
            check_claims(&c, &want(now)).unwrap_err().check()
        };
        assert_eq!(bad("iss", json!("https://evil")), "issuer");
        assert_eq!(bad("aud", json!("other")), "audience");
        assert_eq!(bad("aud", json!(["other", "cofre"])), "audience");
        assert_eq!(bad("exp", json!(now - MAX_SKEW_SECONDS)), "expired");
        assert_eq!(bad("iat", json!(now + MAX_SKEW_SECONDS + 1)), "iat");
        assert_eq!(bad("iat", json!(now - 3600)), "iat");
        assert_eq!(bad("nonce", json!("n2")), "nonce");
        let mut c = good(now);
        c.remove("nonce");
        assert_eq!(check_claims(&c, &want(now)).unwrap_err(), Refusal::Nonce);
        let mut c = good(now);
        c.insert("aud".into(), json!(["other", "cofre"]));
        c.insert("azp".into(), json!("cofre"));
        assert_eq!(check_claims(&c, &want(now)), Ok("s-1"));
        // Within the skew an expiry just past still passes.
        let mut c = good(now);
        c.insert("exp".into(), json!(now - 10));
        assert!(check_claims(&c, &want(now)).is_ok());
    }

    #[test]
    fn mappings_parse_and_resolve_to_the_highest_role_and_their_groups() {
        let ms: Vec<Mapping> = ["idp:pam-ops=ops", "pam-admins=role:admin", "dba=dbas"]
            .iter()
            .map(|t| Mapping::parse("map_group", t).unwrap())
            .collect();
        assert_eq!(ms[0].idp_group, "pam-ops");
        assert_eq!(ms[0].text(), "pam-ops=ops");
        assert!(Mapping::parse("map_group", "x=role:root").is_err());
        assert!(Mapping::parse("map_group", "x=Bad Group").is_err());
        assert!(Mapping::parse("map_group", "nothing").is_err());
        let r = resolve(&ms, None, &["pam-ops".into(), "dba".into()]).unwrap();
        assert_eq!(r.role, Role::User);
        assert_eq!(r.groups, vec!["dbas".to_owned(), "ops".to_owned()]);
        let r = resolve(&ms, None, &["pam-ops".into(), "pam-admins".into()]).unwrap();
        assert_eq!(r.role, Role::Admin);
        assert_eq!(resolve(&ms, None, &["x".into()]), Err(Refusal::Unmapped));
        let r = resolve(&ms, Some(Role::User), &["x".into()]).unwrap();
        assert_eq!((r.role, r.groups.len()), (Role::User, 0));
    }

    #[test]
    fn a_provider_widens_by_a_role_above_user_or_a_named_group() {
        let named = |g: &str| g == "dbas";
        let m = |t: &str| vec![Mapping::parse("m", t).unwrap()];
        assert!(!provider_widens(&m("a=ops"), Some(Role::User), named));
        assert!(provider_widens(&m("a=dbas"), None, named));
        assert!(provider_widens(&m("a=role:approver"), None, named));
        assert!(provider_widens(&[], Some(Role::Auditor), named));
        assert!(!provider_widens(&m("a=role:user"), None, named));
    }

    #[test]
    fn usernames_domains_and_amr() {
        let c = map(
            json!({"preferred_username": "Alice@corp", "email": "a@Corp.Example",
                           "email_verified": true, "amr": ["pwd", "otp"]}),
        );
        assert_eq!(
            username(&c, "preferred_username").unwrap_err().check(),
            "username"
        );
        assert_eq!(username(&c, "nope").unwrap_err().check(), "claim");
        assert!(check_domain(&c, &["corp.example".into()]).is_ok());
        assert!(check_domain(&c, &["other.example".into()]).is_err());
        assert!(check_domain(&c, &[]).is_ok());
        let unverified = map(json!({"email": "a@corp.example"}));
        assert!(check_domain(&unverified, &["corp.example".into()]).is_err());
        assert!(idp_did_mfa(&c, &["otp".into()]));
        assert!(!idp_did_mfa(&c, &["hwk".into()]));
        assert!(!idp_did_mfa(&c, &[]));
    }
}
