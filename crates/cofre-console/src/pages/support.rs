//! Vendor support grants: a support user's own requests and grants (ask, revoke), customer
//! admins' every one, pending first (approve, deny with a comment, revoke), auditors' read-only
//! view, and a grant's activity. The rules and role checks are `services::support`'s, as the
//! API's.

use super::{next_link, urlencode, Paging};
use crate::auth::{Change, Viewer};
use crate::layout::{self, csrf_field, PageError, PageResult};
use crate::Console;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use cofre_core::role::Role;
use cofre_proto::{SupportGrantInfo, SupportRequest};
use maud::{html, Markup};
use serde::Deserialize;

fn window(g: &SupportGrantInfo) -> Markup {
    html! {
        @match (&g.starts_at, &g.ends_at) {
            (Some(a), Some(b)) => { (a) " – " (b) }
            _ => { "not started; undecided by " (g.decide_by) " it expires" }
        }
    }
}

fn table(caption: &str, items: &[SupportGrantInfo]) -> Markup {
    html! {
        @if items.is_empty() { p { "Nothing here." } } @else {
            table {
                caption { (caption) }
                thead { tr {
                    th scope="col" { "Grant" } th scope="col" { "Requester" } th scope="col" { "Scopes" }
                    th scope="col" { "Reason" } th scope="col" { "Ticket" } th scope="col" { "Window" } th scope="col" { "State" }
                } }
                tbody {
                    @for g in items {
                        tr {
                            td { a href={ "/support/" (urlencode(&g.id)) } { (g.id) } }
                            td { (g.requester) }
                            td { (g.scopes.join(", ")) }
                            td { (g.reason) }
                            td { (g.ticket) }
                            td { (window(g)) }
                            td { (g.state) }
                        }
                    }
                }
            }
        }
    }
}

fn request_form(v: &Viewer) -> Markup {
    html! {
        h2 { "Ask for a grant" }
        form method="post" action="/support" {
            (csrf_field(v))
            fieldset {
                legend { "Scopes" }
                @for (s, what) in [
                    ("diagnostics", "instance facts, health, metrics, redacted config, log tail"),
                    ("orbit", "snapshots, backups, maintenance"),
                    ("audit", "read the audit trail"),
                    ("host", "a recorded session to the Cofre machine"),
                ] {
                    input type="checkbox" id={ "scope-" (s) } name="scope" value=(s);
                    label for={ "scope-" (s) } { (s) " (" (what) ")" }
                    " "
                }
            }
            label for="reason" { "Reason" }
            input id="reason" name="reason" required maxlength="500";
            label for="ticket" { "Ticket" }
            input id="ticket" name="ticket" required maxlength="100";
            label for="duration" { "Duration (e.g. 2h; default 8h)" }
            input id="duration" name="duration";
            button type="submit" { "Ask for the grant" }
        }
    }
}

pub(crate) async fn list(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<Paging>,
) -> PageResult {
    let svc = c.app.approvals();
    let all = svc
        .list_support(&v.who, false, None, q.cursor.as_deref())
        .await?;
    let support = v.who.role() == Role::Support;
    let pending = if q.cursor.is_none() && v.who.role() == Role::Admin {
        svc.list_support(&v.who, true, None, None).await?.items
    } else {
        Vec::new()
    };
    Ok(layout::page(
        &v,
        "/support",
        "Support grants",
        html! {
            @if support {
                (request_form(&v))
                (table("Your support requests and grants", &all.items))
            } @else {
                @if v.who.role() == Role::Admin {
                    h2 { "Waiting on a decision" }
                    (table("Pending support requests", &pending))
                }
                h2 { "Every request and grant" }
                (table("Support requests and grants, newest first", &all.items))
            }
            (next_link("/support", all.next_cursor.as_deref()))
        },
    ))
}

/// The form as a browser sends it: `scope` once per ticked box.
pub(crate) async fn create(
    State(c): State<Console>,
    ch: Change<Vec<(String, String)>>,
) -> PageResult {
    let get = |k: &str| {
        ch.form
            .iter()
            .filter(|(f, _)| f == k)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let req = SupportRequest {
        scope: get("scope").join(","),
        reason: get("reason").first().copied().unwrap_or("").to_owned(),
        ticket: get("ticket").first().copied().unwrap_or("").to_owned(),
        duration: get("duration")
            .first()
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty()),
    };
    let g = c
        .app
        .approvals()
        .request_support(&ch.viewer.who, &req)
        .await?;
    Ok(Redirect::to(&format!("/support/{}", urlencode(&g.id))).into_response())
}

pub(crate) async fn show(
    State(c): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
) -> PageResult {
    let g = c.app.approvals().get_support(&v.who, &id).await?;
    let enc = urlencode(&g.id);
    let admin = v.who.role() == Role::Admin;
    let revocable = matches!(g.state.as_str(), "pending" | "approved")
        && (admin || v.who.role() == Role::Support);
    Ok(layout::page(
        &v,
        "/support",
        &format!("Support grant {}", g.id),
        html! {
            dl {
                dt { "Requester" } dd { (g.requester) }
                dt { "Scopes" } dd { (g.scopes.join(", ")) }
                dt { "Reason" } dd { (g.reason) }
                dt { "Ticket" } dd { (g.ticket) }
                dt { "State" } dd id="support-state" { (g.state) }
                dt { "Approvals needed" } dd { (g.required_approvals) }
                dt { "Asked at" } dd { (g.created_at) }
                dt { "Window" } dd { (window(&g)) }
                @if let Some(by) = &g.closed_by {
                    dt { "Closed by" } dd { (by) @if let Some(cm) = &g.close_comment { ": " (cm) } }
                }
            }
            @if !g.decisions.is_empty() {
                h2 { "Decisions" }
                ul { @for d in &g.decisions { li { (d.approver) ": " strong { (d.verdict) } " — " (d.comment) " at " (d.at) } } }
            }
            @if admin && g.state == "pending" {
                h2 { "Decide" }
                form method="post" action={ "/support/" (enc) "/decide" } {
                    (csrf_field(&v))
                    label for="comment" { "Comment (required to deny)" }
                    input id="comment" name="comment" maxlength="500";
                    button type="submit" name="verdict" value="approve" { "Approve" }
                    " "
                    button type="submit" name="verdict" value="deny" { "Deny" }
                }
            }
            @if revocable {
                form method="post" action={ "/support/" (enc) "/revoke" } {
                    (csrf_field(&v))
                    button type="submit" { "Revoke now" }
                }
            }
            p { a href={ "/support/" (enc) "/activity" } { "What was done under this grant" } }
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct DecideForm {
    verdict: String,
    #[serde(default)]
    comment: Option<String>,
}

pub(crate) async fn decide(
    State(c): State<Console>,
    Path(id): Path<String>,
    ch: Change<DecideForm>,
) -> PageResult {
    let approve = match ch.form.verdict.as_str() {
        "approve" => true,
        "deny" => false,
        _ => {
            return Err(PageError::new(
                StatusCode::BAD_REQUEST,
                "verdict: approve or deny",
            ))
        }
    };
    c.app
        .approvals()
        .decide_support(&ch.viewer.who, &id, approve, ch.form.comment.as_deref())
        .await?;
    Ok(Redirect::to(&format!("/support/{}", urlencode(&id))).into_response())
}

#[derive(Deserialize)]
pub(crate) struct Empty {}

pub(crate) async fn revoke(
    State(c): State<Console>,
    Path(id): Path<String>,
    ch: Change<Empty>,
) -> PageResult {
    c.app
        .approvals()
        .revoke_support(&ch.viewer.who, &id)
        .await?;
    Ok(Redirect::to(&format!("/support/{}", urlencode(&id))).into_response())
}

pub(crate) async fn activity(
    State(c): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
    Query(q): Query<Paging>,
) -> PageResult {
    let page = c
        .app
        .approvals()
        .support_activity(&v.who, &id, None, q.cursor.as_deref())
        .await?;
    let path = format!("/support/{}/activity", urlencode(&id));
    Ok(layout::page(
        &v,
        "/support",
        &format!("Activity under support grant {id}"),
        html! {
            @if page.items.is_empty() { p { "Nothing was done under this grant." } } @else {
                table {
                    caption { "Audit entries under the grant, oldest first" }
                    thead { tr {
                        th scope="col" { "Seq" } th scope="col" { "When" } th scope="col" { "Who" }
                        th scope="col" { "Action" } th scope="col" { "Object" } th scope="col" { "Outcome" }
                    } }
                    tbody {
                        @for e in &page.items {
                            tr {
                                td { (e.seq) } td { (e.ts) } td { (e.actor) }
                                td { (e.action) } td { (e.object) } td { (e.outcome) }
                            }
                        }
                    }
                }
            }
            (next_link(&path, page.next_cursor.as_deref()))
        },
    ))
}
