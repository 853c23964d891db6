//! The browser session: the API's bearer token in a `__Host-` cookie, the principal the API's
//! `authenticate` makes of it, and the CSRF token every change carries.

use crate::layout::{self, PageError};
use crate::Console;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use cofre_app::services::Principal;
use cofre_app::services::TokenScope;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// `__Host-`: the browser keeps it only if Secure, for this host alone and Path=/.
pub(crate) const COOKIE: &str = "__Host-cofre";

/// The cookie that carries a new session token.
pub(crate) fn session_cookie(token: &str, max_age_seconds: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age_seconds}"
    ))
    .unwrap_or_else(|_| cleared_cookie())
}

pub(crate) fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_static("__Host-cofre=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn token_from(headers: &HeaderMap) -> Option<String> {
    cookie_named(headers, COOKIE)
}

/// The value of the cookie `name` the browser sent, if not empty.
pub(crate) fn cookie_named(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// The CSRF token of a session: HMAC-SHA256 keyed by the session token, so it is the same on
/// every node (active-active), ends with the session, and cannot be made without the cookie
/// that a cross-site page never reads.
pub(crate) fn csrf_token(session_token: &str) -> String {
    match <Hmac<Sha256>>::new_from_slice(session_token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(b"cofre-console-csrf-v1");
            hex::encode(mac.finalize().into_bytes())
        }
        // HMAC takes a key of any length; this arm is unreachable in practice.
        Err(_) => String::new(),
    }
}

/// The logged-in viewer of a page.
pub(crate) struct Viewer {
    pub(crate) who: Principal,
    pub(crate) csrf: String,
}

impl Viewer {
    fn check_csrf(&self, given: &str) -> Result<(), PageError> {
        if !self.csrf.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(given.as_bytes())) {
            Ok(())
        } else {
            Err(PageError::csrf())
        }
    }
}

/// Pages a one-time-password session may open: setting the new password, and leaving.
fn open_to_password_change(path: &str) -> bool {
    matches!(path, "/password" | "/logout")
}

impl FromRequestParts<Console> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Console) -> Result<Self, Response> {
        let Some(token) = token_from(&parts.headers) else {
            return Err(to_login(parts));
        };
        let who = match state.app.accounts().authenticate(&token).await {
            Ok(p) => p,
            Err(e) if e.kind == cofre_app::error::ErrorKind::Unauthorized => {
                let mut r = to_login(parts);
                r.headers_mut().insert(header::SET_COOKIE, cleared_cookie());
                return Err(r);
            }
            Err(e) => return Err(PageError::from(e).into_response()),
        };
        if who.scope() == TokenScope::PasswordChange && !open_to_password_change(parts.uri.path()) {
            return Err(Redirect::to("/password").into_response());
        }
        // An SSO login that must enrol a TOTP first reaches only the enrolment.
        if who.scope() == TokenScope::TotpEnrolment
            && !matches!(
                parts.uri.path(),
                "/totp" | "/totp/enroll" | "/totp/confirm" | "/logout"
            )
        {
            return Err(Redirect::to("/totp").into_response());
        }
        // A support user's page views under a grant are audited like its API calls, before the
        // page is made (fail closed), so `support activity` shows them too.
        let object = format!("console:{}", parts.uri.path());
        if let Err(e) = state
            .app
            .accounts()
            .record_support_call(&who, parts.method.as_str(), &object)
            .await
        {
            return Err(PageError::from(e).into_response());
        }
        let csrf = csrf_token(&token);
        Ok(Viewer { who, csrf })
    }
}

/// Where an unauthenticated browser goes: the login page (a page asked for with GET), or a 401
/// (a change, or a script's request).
fn to_login(parts: &Parts) -> Response {
    if parts.method == axum::http::Method::GET {
        Redirect::to("/login").into_response()
    } else {
        PageError::new(StatusCode::UNAUTHORIZED, "log in first").into_response()
    }
}

/// A change: the viewer, and a form whose `csrf` field must be the viewer's token.
pub(crate) struct Change<T> {
    pub(crate) viewer: Viewer,
    pub(crate) form: T,
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

impl<T: DeserializeOwned + Send> FromRequest<Console> for Change<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Console) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        if !same_origin(&parts.headers) {
            return Err(PageError::csrf().into_response());
        }
        let req = Request::from_parts(parts, body);
        let axum::extract::RawForm(bytes) = axum::extract::RawForm::from_request(req, state)
            .await
            .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, e.body_text()).into_response())?;
        // The token first: a forged request learns nothing from how its form would parse.
        let token = serde_urlencoded::from_bytes::<CsrfField>(&bytes)
            .map(|f| f.csrf)
            .unwrap_or_default();
        viewer
            .check_csrf(&token)
            .map_err(IntoResponse::into_response)?;
        let form = serde_urlencoded::from_bytes::<T>(&bytes).map_err(|e| {
            PageError::new(StatusCode::BAD_REQUEST, format!("the form: {e}")).into_response()
        })?;
        Ok(Change { viewer, form })
    }
}

/// Whether a request comes from a page of this origin, by what the browser says: `Sec-Fetch-
/// Site` where sent (every current browser), else `Origin` against `Host`. A request with
/// neither (a non-browser client) passes: it has no ambient cookie to abuse.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            origin
                .strip_prefix("https://")
                .is_some_and(|o| !host.is_empty() && o == host)
        }
    }
}

/// The client's address for audit entries, as the API's `Source` gives it.
pub(crate) struct Source(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Source(
            parts
                .extensions
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string()),
        ))
    }
}

/// Renders the refusal of a login form whose origin is not ours.
pub(crate) fn cross_site_refusal() -> Response {
    layout::bare(
        StatusCode::FORBIDDEN,
        "Refused",
        maud::html! { p role="alert" { "This form was sent from another site; open the console's own login page." } },
    )
}

/// How long the TOTP step of a login may follow its password step.
const PENDING_LOGIN_TTL: std::time::Duration = std::time::Duration::from_secs(120);

/// Logins between their password step and their TOTP step, so the second page carries a
/// random one-use ticket instead of the password. The password stays here (wiped on drop) for
/// the service to check again with the code, so the lockout and audit of the second step are
/// the API's own. In memory: a node that did not see the first step refuses the ticket and the
/// user types the password again (fails closed).
#[derive(Default)]
pub(crate) struct PendingLogins {
    by_user: std::sync::Mutex<std::collections::HashMap<String, Pending>>,
}

struct Pending {
    ticket: [u8; 32],
    password: zeroize::Zeroizing<String>,
    deadline: std::time::Instant,
}

impl PendingLogins {
    /// Holds a login whose password was right and whose code is due; returns its ticket (hex).
    /// A newer first step of the same user replaces an older one.
    pub(crate) fn hold(&self, username: &str, password: &str) -> String {
        self.hold_at(username, password, std::time::Instant::now())
    }

    fn hold_at(&self, username: &str, password: &str, now: std::time::Instant) -> String {
        use rand::RngCore;
        let mut ticket = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut ticket);
        let mut map = self
            .by_user
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Only right passwords make entries, so the map is bounded by the users; expired ones go.
        map.retain(|_, p| p.deadline > now);
        map.insert(
            username.to_owned(),
            Pending {
                ticket,
                password: zeroize::Zeroizing::new(password.to_owned()),
                deadline: now + PENDING_LOGIN_TTL,
            },
        );
        hex::encode(ticket)
    }

    /// Takes the held password of `username` if `ticket` is its ticket and in time. The entry
    /// is removed whatever the outcome once the user has one: a ticket is tried once.
    pub(crate) fn take(&self, username: &str, ticket: &str) -> Option<zeroize::Zeroizing<String>> {
        self.take_at(username, ticket, std::time::Instant::now())
    }

    fn take_at(
        &self,
        username: &str,
        ticket: &str,
        now: std::time::Instant,
    ) -> Option<zeroize::Zeroizing<String>> {
        let given = hex::decode(ticket.trim()).unwrap_or_default();
        let p = self
            .by_user
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(username)?;
        let same = bool::from(p.ticket.as_slice().ct_eq(given.as_slice()));
        (same && p.deadline > now).then_some(p.password)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_pending_login_ticket_is_one_use_bound_to_its_user_and_short_lived() {
        let p = PendingLogins::default();
        let now = Instant::now();
        let t = p.hold_at("carol", "pw-1", now);
        assert_eq!(t.len(), 64);
        assert!(
            p.take_at("dave", &t, now).is_none(),
            "another user's ticket"
        );
        assert_eq!(
            p.take_at("carol", &t, now).as_deref().map(String::as_str),
            Some("pw-1")
        );
        assert!(p.take_at("carol", &t, now).is_none(), "used once");

        let t = p.hold_at("carol", "pw-2", now);
        assert!(p.take_at("carol", "00", now).is_none(), "a wrong ticket");
        assert!(p.take_at("carol", &t, now).is_none(), "a wrong try ends it");

        let t = p.hold_at("carol", "pw-3", now);
        let later = now + PENDING_LOGIN_TTL + Duration::from_secs(1);
        assert!(p.take_at("carol", &t, later).is_none(), "expired");

        let old = p.hold_at("carol", "pw-4", now);
        let new = p.hold_at("carol", "pw-5", now);
        assert_ne!(old, new);
        assert!(p.take_at("carol", &old, now).is_none(), "replaced");
    }
}
