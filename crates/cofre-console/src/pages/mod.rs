//! The pages, one module per domain as the services are grouped. A handler calls the service
//! the API's handler calls and renders what it returns; a refusal is the service's.

pub(crate) mod admin;
pub(crate) mod audit;
pub(crate) mod auth;
pub(crate) mod emergency;
pub(crate) mod orbit;
pub(crate) mod requests;
pub(crate) mod sessions;
pub(crate) mod sso;
pub(crate) mod support;
pub(crate) mod vault;

use crate::auth::Viewer;
use crate::layout::{self, PageResult};
use crate::Console;
use axum::extract::State;
use maud::html;
use serde::Deserialize;

/// `?cursor=` of a paginated list.
#[derive(Deserialize, Default)]
pub(crate) struct Paging {
    #[serde(default)]
    pub(crate) cursor: Option<String>,
}

/// The "next page" link of a list.
pub(crate) fn next_link(path: &str, next: Option<&str>) -> maud::Markup {
    html! {
        @if let Some(c) = next {
            p { a href={ (path) "?cursor=" (urlencode(c)) } rel="next" { "Next page" } }
        }
    }
}

pub(crate) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) async fn home(State(c): State<Console>, v: Viewer) -> PageResult {
    let me = c.app.accounts().whoami(&v.who).await?;
    Ok(layout::page(
        &v,
        "/",
        "Home",
        html! {
            dl {
                dt { "User" } dd { (me.username) }
                dt { "Role" } dd { (me.role) }
                dt { "Groups" } dd { @if me.groups.is_empty() { "none" } @else { (me.groups.join(", ")) } }
                dt { "Second factor" } dd {
                    @if me.totp_enabled { "TOTP enabled" } @else { "no TOTP yet: " a href="/totp" { "enrol one" } }
                }
            }
            p { a href="/password" { "Change your password" } " · " a href="/totp" { "TOTP" } }
        },
    ))
}
