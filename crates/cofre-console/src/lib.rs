//! Cofre's web console: server-rendered pages for every role and the recorded web terminal, at
//! the same HTTPS address as the API (cofre-http merges [`router`] beside `/api/v1`).
//!
//! Every page calls the same cofre-app services as the API's handlers, with the principal the
//! same login made: the console has no rule of its own, so what a role may see or do here is
//! exactly what it may through the API (the authorization is the service's, and a refused
//! service call is a refused page). What is the console's own is the browser's side of
//! security:
//! - the session is the API's bearer token in a cookie (`__Host-cofre`: HttpOnly, Secure,
//!   SameSite=Strict, Path=/), so logout, expiry, lockout and audit are the API's;
//! - every change is a POST carrying a CSRF token, an HMAC keyed by the session token
//!   ([`auth::csrf_token`]), checked in constant time; the login form, which has no session yet,
//!   checks `Sec-Fetch-Site`/`Origin` instead;
//! - a Content-Security-Policy with no `unsafe-inline` or `unsafe-eval`: scripts are files from
//!   `'self'`, styles too plus one nonce per page for what xterm.js injects;
//! - pages are `no-store`; a revealed secret comes back from a POST, never in a URL, and a
//!   script hides it again after 30 s.
//!
//! Pages: [`pages`]; the web terminal (xterm.js over a WebSocket, driving the session layer's
//! `Session::run_terminal`, so policy, injection, recording and kill are the gateway's):
//! [`terminal`]; embedded, hashed assets: [`assets`].
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)]

mod assets;
mod auth;
pub mod external;
mod layout;
mod pages;
mod terminal;

use axum::routing::{get, post};
use axum::Router;
use cofre_app::services::App;
use std::sync::Arc;

/// What every console handler sees.
#[derive(Clone)]
pub(crate) struct Console {
    pub(crate) app: Arc<App>,
    /// Logins waiting for their TOTP code ([`auth::PendingLogins`]).
    pub(crate) pending: Arc<auth::PendingLogins>,
}

/// The session kind of a web-terminal session (`session list` shows it beside `shell`, `exec`
/// and `sftp`).
pub const WEB_SHELL: &str = "web-shell";

/// The console's routes, to merge into the HTTPS server's router (any state: the console
/// carries its own).
pub fn router<S: Clone + Send + Sync + 'static>(app: Arc<App>) -> Router<S> {
    Router::<Console>::new()
        .route("/", get(pages::home))
        .route(
            "/login",
            get(pages::auth::login_form).post(pages::auth::login),
        )
        .route("/login/sso/callback", get(pages::sso::callback))
        .route("/login/sso/totp", post(pages::sso::totp))
        .route("/login/sso/{name}", get(pages::sso::start))
        .route("/logout", post(pages::auth::logout))
        .route(
            "/password",
            get(pages::auth::password_form).post(pages::auth::change_password),
        )
        .route("/totp", get(pages::auth::totp_page))
        .route("/totp/enroll", post(pages::auth::totp_enroll))
        .route("/totp/confirm", post(pages::auth::totp_confirm))
        .route(
            "/targets",
            get(pages::vault::targets).post(pages::vault::create_target),
        )
        .route("/targets/{name}", get(pages::vault::target))
        .route(
            "/targets/{name}/credentials",
            post(pages::vault::put_credential),
        )
        .route(
            "/targets/{name}/credentials/{account}/reveal",
            post(pages::vault::reveal),
        )
        .route(
            "/requests",
            get(pages::requests::mine).post(pages::requests::create),
        )
        .route("/requests/{id}", get(pages::requests::show))
        .route("/inbox", get(pages::requests::inbox))
        .route("/requests/{id}/decide", post(pages::requests::decide))
        .route("/grants", get(pages::requests::grants))
        .route("/grants/{id}/revoke", post(pages::requests::revoke))
        .route(
            "/users",
            get(pages::admin::users).post(pages::admin::create_user),
        )
        .route("/users/{name}/unlock", post(pages::admin::unlock_user))
        .route("/users/{name}/role", post(pages::admin::set_role))
        .route("/users/{name}/reset", post(pages::admin::reset_password))
        .route("/users/{name}/disable", post(pages::admin::disable_user))
        .route("/users/{name}/enable", post(pages::admin::enable_user))
        .route(
            "/groups",
            get(pages::admin::groups).post(pages::admin::create_group),
        )
        .route("/groups/members", post(pages::admin::add_member))
        .route("/groups/members/remove", post(pages::admin::remove_member))
        .route(
            "/policies",
            get(pages::admin::policies).post(pages::admin::create_policy),
        )
        .route(
            "/policies/{name}/edit",
            get(pages::admin::edit_policy_page).post(pages::admin::edit_policy),
        )
        .route("/policies/{name}/remove", post(pages::admin::remove_policy))
        .route("/audit", get(pages::audit::trail))
        .route("/audit/export.csv", get(pages::audit::export_csv))
        .route("/audit/verify", post(pages::audit::verify))
        .route("/sessions", get(pages::sessions::live))
        .route("/sessions/{id}/terminate", post(pages::sessions::terminate))
        .route("/sessions/{id}/watch", get(pages::sessions::watch))
        .route(
            "/sessions/{id}/watch/events",
            get(pages::sessions::watch_events),
        )
        .route("/sessions/{id}/lock", post(pages::sessions::lock))
        .route("/sessions/{id}/unlock", post(pages::sessions::unlock))
        .route("/emergency", get(pages::emergency::page))
        .route(
            "/emergency/terminate-all",
            post(pages::emergency::terminate_all),
        )
        .route("/emergency/lockdown", post(pages::emergency::lockdown))
        .route("/emergency/lift", post(pages::emergency::lift))
        .route("/recordings", get(pages::sessions::recordings))
        .route("/recordings/{id}", get(pages::sessions::player))
        .route("/recordings/{id}/cast", get(pages::sessions::cast))
        .route("/orbit", get(pages::orbit::orbit))
        .route("/orbit/snapshots", post(pages::orbit::create_snapshot))
        .route(
            "/orbit/snapshots/jobs/{id}",
            get(pages::orbit::snapshot_job),
        )
        .route(
            "/orbit/snapshots/{id}/verify",
            post(pages::orbit::verify_snapshot),
        )
        .route("/orbit/backups/{job}/run", post(pages::orbit::run_backup))
        .route("/orbit/backups/runs/{id}", get(pages::orbit::backup_run))
        .route(
            "/support",
            get(pages::support::list).post(pages::support::create),
        )
        .route("/support/{id}", get(pages::support::show))
        .route("/support/{id}/decide", post(pages::support::decide))
        .route("/support/{id}/revoke", post(pages::support::revoke))
        .route("/support/{id}/activity", get(pages::support::activity))
        .route("/terminal/{target}/{account}", get(terminal::page))
        .route("/terminal/{target}/{account}/ws", get(terminal::socket))
        .route("/assets/{file}", get(assets::serve))
        .with_state(Console {
            app,
            pending: Arc::default(),
        })
}
