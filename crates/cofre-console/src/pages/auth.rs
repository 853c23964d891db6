//! Login (password, then TOTP), the forced change of a one-time password, TOTP enrolment with a
//! QR code, logout: the accounts service's, with the API's lockout and audit.

use crate::auth::{
    cleared_cookie, cross_site_refusal, same_origin, session_cookie, Change, Source, Viewer,
};
use crate::layout::{self, csrf_field, notice, PageError, PageResult};
use crate::Console;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use cofre_app::error::ErrorCode;
use cofre_app::services::accounts::LoginInput;
use cofre_proto::{SecretString, TotpEnrollRequest};
use maud::{html, Markup};
use serde::Deserialize;

fn login_page(
    status: StatusCode,
    message: Option<&str>,
    totp_for: Option<(&str, &str)>,
    sso: &[String],
) -> Response {
    layout::bare(
        status,
        "Log in",
        html! {
            @if let Some(m) = message { p role="alert" class="error" { (m) } }
            form method="post" action="/login" {
                @if let Some((user, ticket)) = totp_for {
                    // The password was right; the second step carries a one-use ticket for it
                    // (held server-side, two minutes), never the password itself.
                    input type="hidden" name="username" value=(user);
                    input type="hidden" name="ticket" value=(ticket);
                    p { "Signed in as " strong { (user) } "; now the code from your authenticator." }
                    label for="totp_code" { "TOTP code" }
                    input id="totp_code" name="totp_code" inputmode="numeric" autocomplete="one-time-code" required autofocus;
                } @else {
                    label for="username" { "User name" }
                    input id="username" name="username" autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input id="password" name="password" type="password" autocomplete="current-password" required;
                }
                button type="submit" { "Log in" }
            }
            @if totp_for.is_none() && !sso.is_empty() {
                section aria-label="Single sign-on" {
                    @for name in sso {
                        p { a class="button" href={ "/login/sso/" (name) } { "Log in with " (name) } }
                    }
                }
            }
        },
    )
}

/// The identity providers a login page offers (none if they cannot be read: the password form
/// still works).
async fn sso_names(c: &Console) -> Vec<String> {
    c.app
        .accounts()
        .sso_provider_names()
        .await
        .map(|v| v.into_iter().map(|p| p.name).collect())
        .unwrap_or_default()
}

pub(crate) async fn login_form(State(c): State<Console>) -> Response {
    login_page(StatusCode::OK, None, None, &sso_names(&c).await)
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    username: String,
    #[serde(default)]
    password: Option<String>,
    /// The second step's ticket ([`crate::auth::PendingLogins`]) in place of the password.
    #[serde(default)]
    ticket: Option<String>,
    #[serde(default)]
    totp_code: Option<String>,
}

pub(crate) async fn login(
    State(c): State<Console>,
    Source(src): Source,
    headers: HeaderMap,
    axum::Form(f): axum::Form<LoginForm>,
) -> Response {
    // No session yet, so no CSRF token: the browser's own word on where the form came from.
    if !same_origin(&headers) {
        return cross_site_refusal();
    }
    if let Err(e) = cofre_core::names::check_text("username", &f.username, 64) {
        return login_page(StatusCode::BAD_REQUEST, Some(&e.to_string()), None, &[]);
    }
    let code = f
        .totp_code
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let password = match (f.password.filter(|p| !p.is_empty()), f.ticket) {
        (Some(p), _) => zeroize::Zeroizing::new(p),
        (None, Some(t)) => match c.pending.take(&f.username, &t) {
            Some(p) => p,
            None => {
                return login_page(
                    StatusCode::UNAUTHORIZED,
                    Some("ticket: this login step expired or was already used; log in again"),
                    None,
                    &[],
                )
            }
        },
        (None, None) => {
            return login_page(
                StatusCode::BAD_REQUEST,
                Some("password: required"),
                None,
                &[],
            )
        }
    };
    let r = c
        .app
        .accounts()
        .login(LoginInput {
            username: &f.username,
            password: &password,
            totp_code: code,
            source: &src,
            aggregated: false,
        })
        .await;
    match r {
        Ok(ok) => {
            let ttl = if ok.password_change_required {
                15 * 60
            } else {
                i64::try_from(c.app.config.token_ttl_minutes * 60).unwrap_or(3600)
            };
            let to = if ok.password_change_required {
                "/password"
            } else {
                "/"
            };
            let mut res = Redirect::to(to).into_response();
            res.headers_mut()
                .insert(header::SET_COOKIE, session_cookie(ok.token.expose(), ttl));
            res
        }
        Err(e) if e.code == ErrorCode::TotpRequired => {
            let ticket = c.pending.hold(&f.username, &password);
            login_page(StatusCode::OK, None, Some((&f.username, &ticket)), &[])
        }
        Err(e) if e.code == ErrorCode::TotpInvalid => {
            // The service checked the password again with the code: a new ticket for a retry.
            let ticket = c.pending.hold(&f.username, &password);
            login_page(
                layout::status_of(e.kind),
                Some(&e.message),
                Some((&f.username, &ticket)),
                &[],
            )
        }
        Err(e) => login_page(
            layout::status_of(e.kind),
            Some(&e.message),
            None,
            &sso_names(&c).await,
        ),
    }
}

#[derive(Deserialize)]
pub(crate) struct Empty {}

pub(crate) async fn logout(State(c): State<Console>, ch: Change<Empty>) -> PageResult {
    c.app.accounts().logout(&ch.viewer.who).await?;
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, cleared_cookie());
    Ok(res)
}

fn password_body(v: &Viewer, message: Option<&str>) -> Markup {
    html! {
        @if v.who.scope() == cofre_app::services::TokenScope::PasswordChange {
            p role="status" { "You logged in with a one-time password: choose your own before anything else." }
        }
        @if let Some(m) = message { p role="alert" class="error" { (m) } }
        form method="post" action="/password" {
            (csrf_field(v))
            label for="current_password" { "Current password" }
            input id="current_password" name="current_password" type="password" autocomplete="current-password" required;
            label for="new_password" { "New password" }
            input id="new_password" name="new_password" type="password" autocomplete="new-password" required;
            button type="submit" { "Set the new password" }
        }
    }
}

pub(crate) async fn password_form(v: Viewer) -> Response {
    layout::page(
        &v,
        "/password",
        "Change your password",
        password_body(&v, None),
    )
}

#[derive(Deserialize)]
pub(crate) struct PasswordForm {
    current_password: String,
    new_password: String,
}

pub(crate) async fn change_password(
    State(c): State<Console>,
    Source(src): Source,
    ch: Change<PasswordForm>,
) -> Response {
    let v = &ch.viewer;
    let r = c
        .app
        .accounts()
        .change_password(
            &v.who,
            &ch.form.current_password,
            &ch.form.new_password,
            &src,
        )
        .await;
    match r {
        Ok(done) => {
            let mut res =
                Redirect::to(if done.token.is_some() { "/" } else { "/login" }).into_response();
            let cookie = match &done.token {
                Some(t) => session_cookie(
                    t.expose(),
                    i64::try_from(c.app.config.token_ttl_minutes * 60).unwrap_or(3600),
                ),
                // Every token of the user ended: log in again with the new password.
                None => cleared_cookie(),
            };
            res.headers_mut().insert(header::SET_COOKIE, cookie);
            res
        }
        Err(e) => {
            let status = layout::status_of(e.kind);
            let mut res = layout::page(
                v,
                "/password",
                "Change your password",
                password_body(v, Some(&PageError::from(e).message)),
            );
            *res.status_mut() = status;
            res
        }
    }
}

fn totp_body(v: &Viewer, enabled: bool, message: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = message { p role="alert" class="error" { (m) } }
        p { "Status: " strong { @if enabled { "enabled" } @else { "not enrolled" } } }
        form method="post" action="/totp/enroll" {
            (csrf_field(v))
            @if enabled {
                p { "Replacing the TOTP in use needs your password and a current code." }
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                label for="totp_code" { "Current TOTP code" }
                input id="totp_code" name="totp_code" inputmode="numeric" autocomplete="one-time-code" required;
            }
            button type="submit" { @if enabled { "Replace my TOTP" } @else { "Enrol a TOTP" } }
        }
    }
}

pub(crate) async fn totp_page(State(c): State<Console>, v: Viewer) -> PageResult {
    if v.who.scope() == cofre_app::services::TokenScope::TotpEnrolment {
        // This token may only enrol (whoami is beyond it), and it exists because there is none.
        return Ok(layout::page(
            &v,
            "/totp",
            "Two-factor (TOTP)",
            totp_body(&v, false, None),
        ));
    }
    let me = c.app.accounts().whoami(&v.who).await?;
    Ok(layout::page(
        &v,
        "/totp",
        "Two-factor (TOTP)",
        totp_body(&v, me.totp_enabled, None),
    ))
}

#[derive(Deserialize)]
pub(crate) struct EnrollForm {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    totp_code: Option<String>,
}

/// An SVG QR code of the otpauth URI, as a data URI (an image: nothing in it runs or styles
/// the page).
fn qr_data_uri(text: &str) -> Option<String> {
    use base64::Engine;
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    Some(format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    ))
}

pub(crate) async fn totp_enroll(
    State(c): State<Console>,
    Source(src): Source,
    ch: Change<EnrollForm>,
) -> PageResult {
    let v = &ch.viewer;
    let req = TotpEnrollRequest {
        password: ch
            .form
            .password
            .filter(|p| !p.is_empty())
            .map(SecretString::new),
        totp_code: ch.form.totp_code.filter(|p| !p.is_empty()),
    };
    let r = c.app.accounts().enroll_totp(&v.who, &req, &src).await?;
    let qr = qr_data_uri(r.otpauth_uri.expose());
    Ok(layout::page(
        v,
        "/totp",
        "Enrol your authenticator",
        html! {
            p { "Scan the code with your authenticator app, or type the secret; then confirm with a code it shows." }
            @if let Some(src) = qr {
                img src=(src) alt="QR code of the TOTP secret for your authenticator app" width="200" height="200";
            }
            p { "Secret: " code class="secret" { (r.secret_base32.expose()) } }
            form method="post" action="/totp/confirm" {
                (csrf_field(v))
                label for="code" { "Code from the app" }
                input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" required autofocus;
                button type="submit" { "Confirm" }
            }
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct ConfirmForm {
    code: String,
}

pub(crate) async fn totp_confirm(State(c): State<Console>, ch: Change<ConfirmForm>) -> PageResult {
    c.app
        .accounts()
        .confirm_totp(&ch.viewer.who, &ch.form.code)
        .await?;
    Ok(layout::page(
        &ch.viewer,
        "/totp",
        "Two-factor (TOTP)",
        html! { (notice("TOTP is enabled: every login now asks for a code.")) p { a href="/" { "Home" } } },
    ))
}
