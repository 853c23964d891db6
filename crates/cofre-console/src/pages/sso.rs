//! "Log in with PROVIDER": the browser's side of single sign-on. The start sets a random binding
//! cookie (SameSite=Lax, so it comes back on the provider's top-level redirect) and sends the
//! browser to the provider; the callback must come back to that browser, and the accounts
//! service checks everything else (state, PKCE, the ID token) and issues the session.

use crate::auth::{cookie_named, cross_site_refusal, same_origin, session_cookie, Source};
use crate::layout;
use crate::Console;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use cofre_app::services::sso::{SsoBegin, SsoFinish};
use maud::html;
use serde::Deserialize;

const BINDING: &str = "__Host-cofre-sso";
/// The token of an SSO login that still owes its TOTP code, between the callback and the form.
const PENDING: &str = "__Host-cofre-sso-totp";

fn totp_form(status: StatusCode, message: Option<&str>) -> Response {
    layout::bare(
        status,
        "Log in",
        html! {
            @if let Some(m) = message { p role="alert" class="error" { (m) } }
            form method="post" action="/login/sso/totp" {
                p { "Your identity provider vouched for you; now the code from your authenticator." }
                label for="totp_code" { "TOTP code" }
                input id="totp_code" name="totp_code" inputmode="numeric" autocomplete="one-time-code" required autofocus;
                button type="submit" { "Log in" }
            }
        },
    )
}

/// Where the provider sends the browser back: the configured public address, else the host the
/// browser used (the provider only sends codes to a redirect URI registered with it).
fn callback_uri(c: &Console, uri: &axum::http::Uri, headers: &HeaderMap) -> Option<String> {
    let base = match &c.app.config.notify.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            // HTTP/2 names the host in `:authority` (the URI), HTTP/1.1 in `Host`.
            let host = match uri.authority() {
                Some(a) => a.as_str(),
                None => headers.get(header::HOST)?.to_str().ok()?,
            };
            if host.is_empty() || host.contains(['/', '\\', '@', ' ']) {
                return None;
            }
            format!("https://{host}")
        }
    };
    Some(format!("{base}/login/sso/callback"))
}

fn failed(status: StatusCode, message: &str) -> Response {
    layout::bare(
        status,
        "Log in",
        html! {
            p role="alert" class="error" { (message) }
            p { a href="/login" { "Back to the login page" } }
        },
    )
}

pub(crate) async fn start(
    State(c): State<Console>,
    Path(name): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let Some(redirect_uri) = callback_uri(&c, &uri, &headers) else {
        return failed(
            StatusCode::BAD_REQUEST,
            "host: the request names no usable host",
        );
    };
    let binding = {
        use base64::Engine;
        let bytes: [u8; 32] = rand::random();
        zeroize::Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    };
    let r = c
        .app
        .accounts()
        .begin_sso(SsoBegin {
            provider: &name,
            redirect_uri: &redirect_uri,
            browser: Some(&binding),
        })
        .await;
    match r {
        Ok((url, _state)) => {
            let mut res = Redirect::to(&url).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{BINDING}={}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600",
                binding.as_str()
            )) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            res
        }
        Err(e) => failed(layout::status_of(e.kind), &e.message),
    }
}

#[derive(Deserialize)]
pub(crate) struct Callback {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

pub(crate) async fn callback(
    State(c): State<Console>,
    Source(src): Source,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    if let Some(err) = q.error {
        // The provider's own error code (access_denied, login_required...), shown as a word.
        let word: String = err
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return failed(
            StatusCode::UNAUTHORIZED,
            &format!("provider: the identity provider refused the login ({word})"),
        );
    }
    let (Some(state), Some(code)) = (q.state, q.code) else {
        return failed(
            StatusCode::BAD_REQUEST,
            "state, code: the provider sent neither",
        );
    };
    if state.len() > 128 || code.len() > 2048 {
        return failed(StatusCode::BAD_REQUEST, "state, code: too long");
    }
    let browser = cookie_named(&headers, BINDING);
    let r = c
        .app
        .accounts()
        .finish_sso(SsoFinish {
            state: &state,
            code: &code,
            browser: browser.as_deref(),
            source: &src,
        })
        .await;
    let clear_binding = HeaderValue::from_static(
        "__Host-cofre-sso=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
    );
    match r {
        Ok(ok) if ok.next_step.as_deref() == Some("totp") => {
            let mut res = totp_form(StatusCode::OK, None);
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{PENDING}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=300",
                ok.token.expose()
            )) {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
            res.headers_mut().append(header::SET_COOKIE, clear_binding);
            res
        }
        Ok(ok) if ok.next_step.as_deref() == Some("totp_enrolment") => {
            // The token may only enrol a TOTP: the console keeps its holder on /totp.
            let mut res = layout::bare(
                StatusCode::OK,
                "Enrol TOTP",
                html! {
                    p role="status" { "This instance asks for Cofre's own TOTP after single sign-on: enrol it, then log in again." }
                    p { a id="continue" href="/totp" { "Enrol TOTP" } }
                },
            );
            let h = res.headers_mut();
            h.insert(header::REFRESH, HeaderValue::from_static("0; url=/totp"));
            h.append(header::SET_COOKIE, session_cookie(ok.token.expose(), 900));
            h.append(header::SET_COOKIE, clear_binding);
            res
        }
        Ok(ok) => {
            let ttl = c.app.sso_session_seconds();
            // The session cookie is SameSite=Strict: the provider's redirect is a cross-site
            // navigation, so the console is reached by a navigation from this (same-site) page.
            let mut res = layout::bare(
                StatusCode::OK,
                "Logged in",
                html! {
                    p role="status" { "Logged in as " strong { (ok.user.username) } "." }
                    p { a id="continue" href="/" { "Continue to the console" } }
                },
            );
            let h = res.headers_mut();
            h.insert(header::REFRESH, HeaderValue::from_static("0; url=/"));
            h.append(header::SET_COOKIE, session_cookie(ok.token.expose(), ttl));
            h.append(header::SET_COOKIE, clear_binding);
            res
        }
        Err(e) => failed(layout::status_of(e.kind), &e.message),
    }
}

#[derive(Deserialize)]
pub(crate) struct TotpForm {
    totp_code: String,
}

/// The TOTP step after the provider (`[sso] require_totp`): the pending login's cookie and the
/// code; the service checks it as at a password login.
pub(crate) async fn totp(
    State(c): State<Console>,
    Source(src): Source,
    headers: HeaderMap,
    axum::Form(f): axum::Form<TotpForm>,
) -> Response {
    // No session yet, so no CSRF token: the browser's own word on where the form came from.
    if !same_origin(&headers) {
        return cross_site_refusal();
    }
    let Some(pending) = cookie_named(&headers, PENDING) else {
        return failed(
            StatusCode::UNAUTHORIZED,
            "this login step expired; log in again",
        );
    };
    let who = match c.app.accounts().authenticate(&pending).await {
        Ok(w) => w,
        Err(_) => {
            return failed(
                StatusCode::UNAUTHORIZED,
                "this login step expired; log in again",
            )
        }
    };
    match c
        .app
        .accounts()
        .verify_sso_totp(&who, &f.totp_code, &src)
        .await
    {
        Ok(ok) => {
            let mut res = Redirect::to("/").into_response();
            let h = res.headers_mut();
            h.append(
                header::SET_COOKIE,
                session_cookie(ok.token.expose(), c.app.sso_session_seconds()),
            );
            h.append(
                header::SET_COOKIE,
                HeaderValue::from_static(
                    "__Host-cofre-sso-totp=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
                ),
            );
            res
        }
        Err(e) => totp_form(layout::status_of(e.kind), Some(&e.message)),
    }
}
