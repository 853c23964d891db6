//! The external listener's pages (issue 18): a router of its own, not the console's, that serves
//! only what an invitee needs — the one-time link's enrolment (password, and TOTP or a mailed
//! code as `[external] second_factor` says), the login (and its code step),
//! the list of what the invitation covers, and the web terminal. Nothing else is routed here:
//! the API, the console's pages and Orbit are not reachable through this listener (every other
//! path is 404).
//!
//! Before anything else, every request passes [`gate`]: the client's address (X-Forwarded-For
//! only from the external listener's trusted proxies) is judged by the external listener's
//! network policy, then by a per-address rate limit (`[external] requests_per_minute`).
//! The link's token is in the path of two routes; nothing here logs a path, and the pages send
//! no referrer.

use crate::auth::{same_origin, Source};
use crate::layout::{self, PageError, PageResult};
use crate::pages::urlencode;
use crate::terminal::{self, Open};
use axum::extract::ws::{Message, WebSocket};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use cofre_app::config::SecondFactor;
use cofre_app::services::invites::{CodeTicket, Invitee, InviteeLogin, Redeemed, APPROVAL_WAIT};
use cofre_app::services::App;
use cofre_core::network::Listener;
use maud::html;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The session kind of an invitee's web terminal: what marks a session `external` in the
/// session list and the audit trail.
pub const EXTERNAL: &str = "external";

/// The invitee's cookie (`__Host-`: Secure, this host only, Path=/).
const COOKIE: &str = "__Host-cofre-invitee";

/// Addresses remembered by the rate limit; past this, windows that ended are forgotten.
const MAX_SOURCES: usize = 20_000;

#[derive(Clone)]
struct External {
    app: Arc<App>,
    limits: Arc<RateLimit>,
}

/// Requests per address and minute (fixed windows), in memory on this node.
#[derive(Default)]
struct RateLimit {
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimit {
    fn admit(&self, source: IpAddr, per_minute: u32) -> bool {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let window = Duration::from_secs(60);
        if seen.len() >= MAX_SOURCES {
            seen.retain(|_, (at, _)| now.duration_since(*at) < window);
        }
        // IPv6 counts by its /64, as lockout does: one host has many addresses.
        let key = match cofre_core::network::canonical(source) {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            v4 => v4,
        };
        let entry = seen.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= per_minute
    }
}

/// The external listener's router: only the invitees' pages.
pub fn router(app: Arc<App>) -> Router {
    let state = External {
        app,
        limits: Arc::default(),
    };
    Router::<External>::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login))
        .route("/login/code", post(login_code))
        .route("/logout", post(logout))
        .route("/invite/{token}", get(enrol_form).post(enrol))
        .route("/terminal/{target}/{account}", get(terminal_page))
        .route("/terminal/{target}/{account}/ws", get(terminal_socket))
        .route("/assets/{file}", get(crate::assets::serve))
        .fallback(not_here)
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state)
}

async fn not_here() -> Response {
    layout::bare(
        StatusCode::NOT_FOUND,
        "Not found",
        html! { p role="alert" { "This address serves only invitations. " a href="/" { "Log in" } } },
    )
}

/// Network policy, then the rate limit, before any route; the judged address becomes the
/// request's `ConnectInfo`, which audit entries read.
async fn gate(
    State(x): State<External>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return PageError::new(StatusCode::FORBIDDEN, "no client address").into_response();
    };
    let values: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let client = match x
        .app
        .admit_forwarded(Listener::External, peer.ip(), &values)
        .await
    {
        Ok(c) => c,
        Err(e) => return PageError::from(e).into_response(),
    };
    if !x
        .limits
        .admit(client, x.app.config.external.requests_per_minute)
    {
        let mut r = PageError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: "too many requests from your address: wait a minute".into(),
        }
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(client, peer.port())));
    next.run(req).await
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    crate::auth::cookie_named(headers, COOKIE)
}

async fn invitee(x: &External, headers: &HeaderMap) -> Result<Option<Invitee>, PageError> {
    let Some(cookie) = cookie_of(headers) else {
        return Ok(None);
    };
    Ok(x.app.sessions().invitee(&cookie).await?)
}

fn logged_in(login: &InviteeLogin) -> Response {
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        login.cookie.as_str(),
        login.max_age_seconds
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn cleared() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-cofre-invitee=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
    )
}

fn login_page(status: StatusCode, factor: SecondFactor, problem: Option<&str>) -> Response {
    let email = factor == SecondFactor::Email;
    layout::bare(
        status,
        "Invited access",
        html! {
            @if let Some(p) = problem { p role="alert" { (p) } }
            @if email {
                p { "You were invited to a recorded session. Log in with the e-mail address the invitation went to and your password; a code is then sent to that address." }
            } @else {
                p { "You were invited to a recorded session. Log in with the e-mail address the invitation went to, your password and your authenticator's code." }
            }
            form method="post" action="/login" {
                label for="email" { "E-mail address" }
                input id="email" name="email" type="email" autocomplete="username" required;
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                @if !email {
                    label for="code" { "Authenticator code" }
                    input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" required;
                }
                button type="submit" { "Log in" }
            }
        },
    )
}

/// The code step of a login with mailed codes: the ticket goes back in the form (never in a
/// URL), the code is typed from the mail.
fn code_page(status: StatusCode, ticket: &CodeTicket, problem: Option<&str>) -> Response {
    layout::bare(
        status,
        "Invited access: code",
        html! {
            @if let Some(p) = problem { p role="alert" { (p) } }
            p { "If the address and the password are right, a code is on its way to that address. It works once, for a few minutes." }
            form method="post" action="/login/code" {
                input type="hidden" name="ticket" value=(ticket.ticket.as_str());
                label for="code" { "Code from the e-mail" }
                input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" required;
                button type="submit" { "Log in" }
            }
            p { a href="/login" { "Start again" } }
        },
    )
}

async fn login_form(State(x): State<External>) -> Response {
    login_page(StatusCode::OK, x.app.config.external.second_factor, None)
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    code: String,
}

async fn login(
    State(x): State<External>,
    Source(src): Source,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let password = zeroize::Zeroizing::new(f.password);
    if !same_origin(&headers) {
        return crate::auth::cross_site_refusal();
    }
    let factor = x.app.config.external.second_factor;
    if factor == SecondFactor::Email {
        return match x
            .app
            .sessions()
            .invitee_login_by_email(&f.email, &password, &src)
            .await
        {
            Ok(ticket) => code_page(StatusCode::OK, &ticket, None),
            Err(e) => login_page(layout::status_of(e.kind), factor, Some(&e.message)),
        };
    }
    match x
        .app
        .sessions()
        .invitee_login(&f.email, &password, &f.code, &src)
        .await
    {
        Ok(login) => logged_in(&login),
        Err(e) => login_page(layout::status_of(e.kind), factor, Some(&e.message)),
    }
}

#[derive(Deserialize)]
struct CodeForm {
    ticket: String,
    code: String,
}

async fn login_code(
    State(x): State<External>,
    Source(src): Source,
    headers: HeaderMap,
    Form(f): Form<CodeForm>,
) -> Response {
    let ticket = CodeTicket {
        ticket: zeroize::Zeroizing::new(f.ticket),
    };
    let code = zeroize::Zeroizing::new(f.code);
    if !same_origin(&headers) {
        return crate::auth::cross_site_refusal();
    }
    match x
        .app
        .sessions()
        .invitee_code(&ticket.ticket, &code, &src)
        .await
    {
        Ok(login) => logged_in(&login),
        // The same page again: a code has a few tries (then it is void and the message says to
        // start again).
        Err(e) => code_page(layout::status_of(e.kind), &ticket, Some(&e.message)),
    }
}

async fn logout(headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return crate::auth::cross_site_refusal();
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(header::SET_COOKIE, cleared());
    r
}

/// What the invitation covers, each pair a terminal.
async fn home(State(x): State<External>, headers: HeaderMap) -> PageResult {
    let Some(me) = invitee(&x, &headers).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let i = &me.invitation;
    Ok(layout::bare(
        StatusCode::OK,
        "Invited access",
        html! {
            p { "Invited by " strong { (i.inviter) } " for " (i.reason) ", from " (i.starts_at) " to " (i.ends_at) ". Every session is recorded." }
            h2 { "Open a terminal" }
            ul class="invited" {
                @for t in &i.targets {
                    @for a in &i.accounts {
                        li { a href=(format!("/terminal/{}/{}", urlencode(t), urlencode(a))) { (a) "@" (t) } }
                    }
                }
            }
            form method="post" action="/logout" { button type="submit" { "Log out" } }
        },
    ))
}

fn enrol_page(
    status: StatusCode,
    token: &str,
    e: &cofre_app::services::invites::Enrolment,
    problem: Option<&str>,
) -> Response {
    layout::bare(
        status,
        "Accept the invitation",
        html! {
            @if let Some(p) = problem { p role="alert" { (p) } }
            p { "For " strong { (e.email) } ": " (e.accounts.join(", ")) " on " (e.targets.join(", ")) ", from " (e.starts_at) " to " (e.ends_at) "." }
            @if let Some(totp) = &e.totp {
                p { "This link works once. Choose a password and add this key to your authenticator app, then type its current code." }
                p { "Key: " code id="totp-secret" { (totp.secret.as_str()) } }
                p { "Or import: " code id="totp-uri" { (totp.uri.as_str()) } }
            } @else {
                p { "This link works once. Choose a password; a code is then sent to your address to confirm it, and at each login after." }
            }
            form method="post" action=(format!("/invite/{token}")) {
                @if let Some(totp) = &e.totp {
                    input type="hidden" name="seed" value=(totp.sealed_seed);
                }
                label for="password" { "New password" }
                input id="password" name="password" type="password" autocomplete="new-password" required;
                @if e.totp.is_some() {
                    label for="code" { "Authenticator code" }
                    input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" required;
                }
                button type="submit" { "Accept" }
            }
        },
    )
}

fn link_error(e: cofre_app::error::Error) -> Response {
    layout::bare(
        layout::status_of(e.kind),
        "Invitation",
        html! { p role="alert" data-code=(e.code.as_str()) { (e.message) } p { a href="/login" { "Log in" } } },
    )
}

async fn enrol_form(
    State(x): State<External>,
    Source(src): Source,
    Path(token): Path<String>,
) -> Response {
    match x.app.sessions().open_invitation(&token, &src).await {
        Ok(e) => enrol_page(StatusCode::OK, &token, &e, None),
        Err(e) => link_error(e),
    }
}

#[derive(Deserialize)]
struct EnrolForm {
    #[serde(default)]
    seed: String,
    password: String,
    #[serde(default)]
    code: String,
}

async fn enrol(
    State(x): State<External>,
    Source(src): Source,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(f): Form<EnrolForm>,
) -> Response {
    let password = zeroize::Zeroizing::new(f.password);
    if !same_origin(&headers) {
        return crate::auth::cross_site_refusal();
    }
    match x
        .app
        .sessions()
        .redeem_invitation(&token, &password, &f.seed, &f.code, &src)
        .await
    {
        Ok(Redeemed::LoggedIn(login)) => logged_in(&login),
        Ok(Redeemed::CodeSent(ticket)) => code_page(StatusCode::OK, &ticket, None),
        // A bad password or code: the same link again, with a new seed and why.
        Err(e) if e.kind == cofre_app::error::ErrorKind::BadRequest => {
            let problem = e.message.clone();
            match x.app.sessions().open_invitation(&token, &src).await {
                Ok(en) => enrol_page(StatusCode::BAD_REQUEST, &token, &en, Some(&problem)),
                Err(e) => link_error(e),
            }
        }
        Err(e) => link_error(e),
    }
}

async fn terminal_page(
    State(x): State<External>,
    headers: HeaderMap,
    Path((target, account)): Path<(String, String)>,
) -> PageResult {
    let Some(me) = invitee(&x, &headers).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let ws = format!(
        "/terminal/{}/{}/ws",
        urlencode(&target),
        urlencode(&account)
    );
    Ok(layout::bare_with(
        StatusCode::OK,
        &format!("Terminal: {account}@{target}"),
        &["xterm.js", "addon-fit.js", "terminal.js"],
        &["xterm.css"],
        html! {
            p { "A shell on " strong { (target) } " as " strong { (account) } ", invited by " (me.invitation.inviter) ". The session is recorded and can be ended at any time." }
            form id="connect" data-ws=(ws) {
                button type="submit" { "Connect" }
            }
            p id="term-status" role="status" aria-live="polite" { "Not connected." }
            div id="terminal" class="terminal" aria-label="Terminal" {}
            p { a href="/" { "Back" } }
        },
    ))
}

#[allow(clippy::too_many_arguments)]
async fn terminal_socket(
    State(x): State<External>,
    Source(src): Source,
    headers: HeaderMap,
    Path((target, account)): Path<(String, String)>,
    Query(open): Query<Open>,
    ws: axum::extract::WebSocketUpgrade,
) -> Response {
    if !same_origin(&headers) {
        return PageError::csrf().into_response();
    }
    let me = match invitee(&x, &headers).await {
        Ok(Some(me)) => me,
        Ok(None) => {
            return PageError::new(StatusCode::UNAUTHORIZED, "log in first").into_response()
        }
        Err(e) => return e.into_response(),
    };
    let app = x.app.clone();
    ws.on_upgrade(move |mut socket| async move {
        let who = match approved(&app, me.principal, &target, &account, &src, &mut socket).await {
            Some(who) => who,
            None => return,
        };
        terminal::run(app, who, EXTERNAL, src, target, account, open, socket).await;
    })
}

fn frame(v: serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

/// For an `--approve-each-session` invitation, asks and waits (the page is told) until an admin
/// or the inviter decides: approved, the principal that may open this one session; denied (or
/// undecided in time), the terminal ends with why. Without approvals, the principal as it is.
async fn approved(
    app: &Arc<App>,
    who: cofre_app::services::Principal,
    target: &str,
    account: &str,
    src: &str,
    socket: &mut WebSocket,
) -> Option<cofre_app::services::Principal> {
    let asked = app
        .sessions()
        .ask_session_approval(&who, target, account, src)
        .await;
    let refused = match asked {
        Ok(None) => return Some(who),
        Ok(Some(ask)) => {
            let _ = socket
                .send(frame(serde_json::json!({
                    "type": "notice",
                    "text": format!("waiting for an admin or the inviter to approve this session (request {ask})"),
                    "approval": ask,
                })))
                .await;
            let sessions = app.sessions();
            let waited = tokio::select! {
                w = sessions.wait_session_approval(&who, &ask, APPROVAL_WAIT) => w,
                // The invitee left: nothing to wait for.
                _ = closed(socket) => return None,
            };
            match waited {
                Ok(p) => return Some(p),
                Err(e) => e.message,
            }
        }
        Err(e) => e.message,
    };
    let _ = socket
        .send(frame(
            serde_json::json!({"type": "ended", "reason": refused, "exit_status": null}),
        ))
        .await;
    let _ = socket.send(Message::Close(None)).await;
    None
}

/// Resolves when the browser closes the socket (anything else it sends meanwhile is dropped:
/// no session exists yet to take it).
async fn closed(socket: &mut WebSocket) {
    while let Some(Ok(m)) = socket.recv().await {
        if matches!(m, Message::Close(_)) {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_counts_per_address_and_ipv6_by_its_64() {
        let r = RateLimit::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(r.admit(a, 3));
        }
        assert!(!r.admit(a, 3));
        assert!(r.admit(b, 3));
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        assert!(r.admit(v6a, 1));
        assert!(!r.admit(v6b, 1));
    }
}
