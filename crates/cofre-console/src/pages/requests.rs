//! Access requests: a user's own (create, follow), an approver's inbox (approve or deny with a
//! comment), an admin's grants (revoke). The approvals service's, as the API's.

use super::{next_link, urlencode, Paging};
use crate::auth::{Change, Viewer};
use crate::layout::{self, csrf_field, PageResult};
use crate::Console;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use cofre_core::approval::Verdict;
use cofre_proto::requests::{CreateAccessRequest, RequestInfo, RequestListQuery};
use maud::{html, Markup};
use serde::Deserialize;

fn table(caption: &str, items: &[RequestInfo]) -> Markup {
    html! {
        @if items.is_empty() { p { "Nothing here." } } @else {
            table {
                caption { (caption) }
                thead { tr {
                    th scope="col" { "Request" } th scope="col" { "Who" } th scope="col" { "What" }
                    th scope="col" { "Why" } th scope="col" { "Window" } th scope="col" { "Levels so far" } th scope="col" { "State" }
                } }
                tbody {
                    @for r in items {
                        tr {
                            td { a href={ "/requests/" (urlencode(&r.id)) } { (r.id) } }
                            td { (r.requester) }
                            td { (r.account) "@" (r.target) " (" (r.access.join(", ")) ")" }
                            td { (r.reason) }
                            td { (r.starts_at) " – " (r.ends_at) }
                            td { (levels(r)) }
                            td { (r.state) @if r.emergency { " (emergency)" } @if r.grant_active { " — grant active" } }
                        }
                    }
                }
            }
        }
    }
}

fn levels(r: &RequestInfo) -> Markup {
    html! {
        @for (i, l) in r.levels.iter().enumerate() {
            @if i > 0 { "; " }
            "level " (i + 1) ": " (l.approvals) " of " (l.required) " from " (l.group)
        }
    }
}

fn list_query(pending: bool, all: bool, cursor: Option<String>) -> RequestListQuery {
    RequestListQuery {
        pending: Some(pending),
        all: Some(all),
        limit: None,
        cursor,
    }
}

pub(crate) async fn mine(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<Paging>,
) -> PageResult {
    let page = c
        .app
        .approvals()
        .list_requests(&v.who, &list_query(false, false, q.cursor), false)
        .await?;
    Ok(layout::page(
        &v,
        "/requests",
        "My requests",
        html! {
            (table("Your access requests, newest first", &page.items))
            (next_link("/requests", page.next_cursor.as_deref()))
            p { "To ask for access, open a target and use “Request access”." }
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct NewRequest {
    target: String,
    account: String,
    reason: String,
    #[serde(default)]
    duration: Option<String>,
}

pub(crate) async fn create(State(c): State<Console>, ch: Change<NewRequest>) -> PageResult {
    let f = ch.form;
    let req = CreateAccessRequest {
        target: f.target,
        account: f.account,
        access: None,
        reason: f.reason,
        start: None,
        duration: f.duration.filter(|d| !d.trim().is_empty()),
    };
    let r = c
        .app
        .approvals()
        .create_request(&ch.viewer.who, &req)
        .await?;
    Ok(Redirect::to(&format!("/requests/{}", urlencode(&r.id))).into_response())
}

pub(crate) async fn show(
    State(c): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
) -> PageResult {
    let r = c.app.approvals().get_request(&v.who, &id).await?;
    let decider = v
        .who
        .require(cofre_core::role::Action::DecideRequests)
        .is_ok()
        && r.state == "pending"
        && r.requester != v.who.username();
    let enc = urlencode(&r.id);
    Ok(layout::page(
        &v,
        if decider { "/inbox" } else { "/requests" },
        &format!("Request {}", r.id),
        html! {
            dl {
                dt { "Requester" } dd { (r.requester) }
                dt { "Access" } dd { (r.account) "@" (r.target) " (" (r.access.join(", ")) ")" }
                dt { "Reason" } dd { (r.reason) }
                dt { "Policy" } dd { (r.policy) }
                dt { "State" } dd { (r.state) @if r.grant_active { " — grant active" } }
                dt { "Window" } dd { (r.starts_at) " – " (r.ends_at) }
                dt { "Decide by" } dd { (r.decide_by) }
                dt { "Levels" } dd { (levels(&r)) }
            }
            @if !r.decisions.is_empty() {
                h2 { "Decisions" }
                ul { @for d in &r.decisions { li { (d.approver) " (level " (d.level) "): " strong { (d.verdict) } " — " (d.comment) " at " (d.at) } } }
            }
            @if decider {
                h2 { "Decide" }
                form method="post" action={ "/requests/" (enc) "/decide" } {
                    (csrf_field(&v))
                    label for="comment" { "Comment (required to deny)" }
                    input id="comment" name="comment";
                    button type="submit" name="verdict" value="approve" { "Approve" }
                    " "
                    button type="submit" name="verdict" value="deny" { "Deny" }
                }
            }
        },
    ))
}

pub(crate) async fn inbox(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<Paging>,
) -> PageResult {
    v.who.require(cofre_core::role::Action::DecideRequests)?;
    let page = c
        .app
        .approvals()
        .list_requests(&v.who, &list_query(true, false, q.cursor), false)
        .await?;
    Ok(layout::page(
        &v,
        "/inbox",
        "Inbox",
        html! {
            (table("Requests waiting on your decision", &page.items))
            (next_link("/inbox", page.next_cursor.as_deref()))
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
    let verdict = match ch.form.verdict.as_str() {
        "approve" => Verdict::Approve,
        "deny" => Verdict::Deny,
        _ => {
            return Err(layout::PageError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "verdict: approve or deny",
            ))
        }
    };
    c.app
        .approvals()
        .decide_request(&ch.viewer.who, &id, verdict, ch.form.comment.as_deref())
        .await?;
    Ok(Redirect::to(&format!("/requests/{}", urlencode(&id))).into_response())
}

pub(crate) async fn grants(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<Paging>,
) -> PageResult {
    let page = c
        .app
        .approvals()
        .list_requests(&v.who, &list_query(false, true, q.cursor), true)
        .await?;
    Ok(layout::page(
        &v,
        "/grants",
        "Grants",
        html! {
            (table("Everyone's grants", &page.items))
            @for r in page.items.iter().filter(|r| r.grant_active) {
                form method="post" action={ "/grants/" (urlencode(&r.id)) "/revoke" } {
                    (csrf_field(&v))
                    label for={ "rv-" (r.id) } { "Reason to revoke " (r.id) }
                    input id={ "rv-" (r.id) } name="reason";
                    button type="submit" { "Revoke " (r.id) }
                }
            }
            (next_link("/grants", page.next_cursor.as_deref()))
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct RevokeForm {
    #[serde(default)]
    reason: Option<String>,
}

pub(crate) async fn revoke(
    State(c): State<Console>,
    Path(id): Path<String>,
    ch: Change<RevokeForm>,
) -> PageResult {
    c.app
        .approvals()
        .revoke_grant(&ch.viewer.who, &id, ch.form.reason.as_deref())
        .await?;
    Ok(Redirect::to("/grants").into_response())
}
