//! Targets as their viewer's policies cover them, a target's credentials, reveal (by POST, hidden
//! again after 30 s), and the admin's target and credential forms.

use super::{next_link, urlencode, Paging};
use crate::auth::{Change, Viewer};
use crate::layout::{self, csrf_field, PageResult};
use crate::Console;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use cofre_core::policy::Outcome;
use cofre_core::role::Action;
use cofre_proto::{CreateTargetRequest, RevealRequest, SecretString};
use maud::{html, Markup};
use serde::Deserialize;

/// How policy covers a target for the viewer, in words (never by colour alone).
fn coverage(o: Option<Outcome>) -> Markup {
    match o {
        None => html! { span class="tag deny" { "not covered" } },
        Some(Outcome::Allow) => html! { span class="tag allow" { "allow" } },
        Some(Outcome::Justify) => {
            html! { span class="tag justify" { "justify: a reason is asked" } }
        }
        Some(Outcome::Approve) => {
            html! { span class="tag approve" { "approve: request access first" } }
        }
    }
}

pub(crate) async fn targets(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<Paging>,
) -> PageResult {
    let page = c
        .app
        .vault()
        .list_targets(&v.who, None, q.cursor.as_deref())
        .await?;
    let hows = c
        .app
        .sessions()
        .decide_sessions(&v.who, &page.items)
        .await?;
    let rows: Vec<_> = page.items.iter().zip(hows).collect();
    let admin = v.who.require(Action::ManageTargets).is_ok();
    Ok(layout::page(
        &v,
        "/targets",
        "Targets",
        html! {
            table {
                caption { "Targets you can see, and how your policies cover a session on each" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Host" } th scope="col" { "Tags" } th scope="col" { "Your access" } } }
                tbody {
                    @for (t, how) in &rows {
                        tr {
                            td { a href={ "/targets/" (urlencode(&t.name)) } { (t.name) } @if t.disabled { " (disabled)" } }
                            td { (t.host) ":" (t.port) }
                            td { (t.tags.join(", ")) }
                            td { (coverage(*how)) }
                        }
                    }
                }
            }
            (next_link("/targets", page.next_cursor.as_deref()))
            @if admin {
                h2 { "Add a target" }
                form method="post" action="/targets" {
                    (csrf_field(&v))
                    label for="t-name" { "Name" } input id="t-name" name="name" required;
                    label for="t-host" { "Host" } input id="t-host" name="host" required;
                    label for="t-port" { "Port" } input id="t-port" name="port" inputmode="numeric" placeholder="22";
                    label for="t-tags" { "Tags (comma-separated)" } input id="t-tags" name="tags";
                    button type="submit" { "Add the target" }
                }
            }
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct TargetForm {
    name: String,
    host: String,
    #[serde(default)]
    port: String,
    #[serde(default)]
    tags: String,
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(crate) async fn create_target(State(c): State<Console>, ch: Change<TargetForm>) -> PageResult {
    let f = ch.form;
    let port = match f.port.trim() {
        "" => None,
        p => Some(p.parse::<u16>().map_err(|_| {
            layout::PageError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "port: a number from 1 to 65535",
            )
        })?),
    };
    let req = CreateTargetRequest {
        name: f.name,
        host: f.host,
        port,
        protocol: None,
        tags: split_list(&f.tags),
    };
    let t = c.app.vault().create_target(&ch.viewer.who, &req).await?;
    Ok(Redirect::to(&format!("/targets/{}", urlencode(&t.name))).into_response())
}

pub(crate) async fn target(
    State(c): State<Console>,
    v: Viewer,
    Path(name): Path<String>,
) -> PageResult {
    let t = c.app.vault().get_target(&v.who, &name).await?;
    let creds = c
        .app
        .vault()
        .list_credentials(&v.who, &name, None, None)
        .await?;
    let how = c.app.sessions().decide_session(&v.who, &name).await?;
    let user = v.who.require(Action::UseCredentials).is_ok();
    let admin = v.who.require(Action::ManageTargets).is_ok();
    // Version history (metadata only) where the role may read it.
    let mut history = Vec::new();
    if v.who.require(Action::ViewCredentialHistory).is_ok() {
        for cr in &creds.items {
            let versions = c
                .app
                .vault()
                .list_credential_versions(&v.who, &name, &cr.account, None, None)
                .await?;
            history.push((cr.account.clone(), versions.items));
        }
    }
    let enc = urlencode(&t.name);
    Ok(layout::page(
        &v,
        "/targets",
        &format!("Target {}", t.name),
        html! {
            dl {
                dt { "Host" } dd { (t.host) ":" (t.port) }
                dt { "Protocol" } dd { (t.protocol) }
                dt { "Tags" } dd { (t.tags.join(", ")) }
                dt { "Your access" } dd { (coverage(how)) }
            }
            h2 { "Credentials" }
            @if creds.items.is_empty() { p { "No credential on this target yet." } }
            @for cr in &creds.items {
                section aria-labelledby={ "cred-" (cr.account) } class="credential" {
                    h3 id={ "cred-" (cr.account) } { (cr.account) " (" (cr.kind) ", version " (cr.version) ")" @if cr.disabled { " — disabled" } }
                    @if user {
                        form method="post" action={ "/targets/" (enc) "/credentials/" (urlencode(&cr.account)) "/reveal" } {
                            (csrf_field(&v))
                            label for={ "reason-" (cr.account) } { "Reason (where policy asks for one)" }
                            input id={ "reason-" (cr.account) } name="reason";
                            button type="submit" { "Reveal the secret" }
                        }
                        p { a href={ "/terminal/" (enc) "/" (urlencode(&cr.account)) } { "Open a terminal as " (cr.account) } }
                        details {
                            summary { "Request access to " (cr.account) }
                            form method="post" action="/requests" {
                                (csrf_field(&v))
                                input type="hidden" name="target" value=(t.name);
                                input type="hidden" name="account" value=(cr.account);
                                label for={ "rq-reason-" (cr.account) } { "Reason" }
                                input id={ "rq-reason-" (cr.account) } name="reason" required;
                                label for={ "rq-duration-" (cr.account) } { "Duration (e.g. 1h)" }
                                input id={ "rq-duration-" (cr.account) } name="duration";
                                button type="submit" { "Send the request" }
                            }
                        }
                    }
                }
            }
            @for (account, versions) in &history {
                table {
                    caption { "Versions of " (account) }
                    thead { tr { th scope="col" { "Version" } th scope="col" { "Kind" } th scope="col" { "Made" } th scope="col" { "By" } th scope="col" { "Current" } } }
                    tbody {
                        @for ver in versions {
                            tr { td { (ver.version) } td { (ver.kind) } td { (ver.created_at) } td { (ver.created_by) } td { @if ver.current { "current" } @else { "older" } } }
                        }
                    }
                }
            }
            @if admin {
                h2 { "Add or change a credential" }
                p { "A new secret for an existing account becomes its next version; the old one is kept." }
                form method="post" action={ "/targets/" (enc) "/credentials" } {
                    (csrf_field(&v))
                    label for="c-account" { "Account" } input id="c-account" name="account" required;
                    label for="c-password" { "Password" } input id="c-password" name="password" type="password" autocomplete="off" required;
                    button type="submit" { "Save the credential" }
                }
            }
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct CredentialForm {
    account: String,
    password: String,
}

pub(crate) async fn put_credential(
    State(c): State<Console>,
    Path(name): Path<String>,
    ch: Change<CredentialForm>,
) -> PageResult {
    let who = &ch.viewer.who;
    let secret = SecretString::new(ch.form.password);
    let exists = c
        .app
        .vault()
        .list_credentials(who, &name, None, None)
        .await?
        .items
        .iter()
        .any(|cr| cr.account == ch.form.account);
    c.app
        .vault()
        .put_credential(who, &name, &ch.form.account, Some(&secret), None, exists)
        .await?;
    Ok(Redirect::to(&format!("/targets/{}", urlencode(&name))).into_response())
}

#[derive(Deserialize)]
pub(crate) struct RevealForm {
    #[serde(default)]
    reason: Option<String>,
}

/// The secret, in the answer to a POST (so in no URL, history entry or cache: pages are
/// `no-store`), removed from the page by console.js after 30 s.
pub(crate) async fn reveal(
    State(c): State<Console>,
    Path((name, account)): Path<(String, String)>,
    ch: Change<RevealForm>,
) -> PageResult {
    let req = RevealRequest {
        reason: ch.form.reason.filter(|r| !r.trim().is_empty()),
        version: None,
    };
    let r = c
        .app
        .vault()
        .reveal(&ch.viewer.who, &name, &account, &req)
        .await?;
    Ok(layout::page(
        &ch.viewer,
        "/targets",
        &format!("Secret of {}@{}", r.account, r.target),
        html! {
            p { "Version " (r.version) " (" (r.kind) "). It is hidden again in 30 seconds." }
            pre class="secret" data-hide-after="30" aria-live="polite" { (r.secret.expose()) }
            p { a href={ "/targets/" (urlencode(&r.target)) } { "Back to " (r.target) } }
        },
    ))
}
