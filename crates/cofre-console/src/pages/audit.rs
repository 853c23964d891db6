//! The audit trail (read, filter, verify): the audit service's, as `cofre audit` uses it.

use crate::auth::{Change, Viewer};
use crate::layout::{self, csrf_field, PageResult};
use crate::Console;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use cofre_proto::AuditQuery;
use maud::html;
use serde::Deserialize;

#[derive(Deserialize, Default)]
pub(crate) struct Filter {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    object: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD`: entries at or after it.
    #[serde(default)]
    since: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD`: entries before it.
    #[serde(default)]
    until: Option<String>,
}

/// How many entries one page shows.
const SHOWN: u32 = 100;

pub(crate) async fn trail(
    State(c): State<Console>,
    v: Viewer,
    Query(f): Query<Filter>,
) -> PageResult {
    // The service searches (the API's `GET /api/v1/audit?actor=...`): the page filters nothing.
    let page = c
        .app
        .audit()
        .search_audit(
            &v.who,
            &AuditQuery {
                limit: Some(SHOWN),
                cursor: f.cursor.clone(),
                actor: f.actor.clone(),
                action: f.action.clone(),
                object: f.object.clone(),
                since: f.since.clone(),
                until: f.until.clone(),
            },
        )
        .await?;
    let shown = page.items;
    let mut conditions = String::new();
    for (k, val) in [
        ("actor", &f.actor),
        ("action", &f.action),
        ("object", &f.object),
        ("since", &f.since),
        ("until", &f.until),
    ] {
        if let Some(val) = val.as_deref().filter(|v| !v.is_empty()) {
            conditions.push_str(&format!("&{k}={}", super::urlencode(val)));
        }
    }
    let next = page
        .next_cursor
        .map(|c| format!("?cursor={}{conditions}", super::urlencode(&c)));
    let download = format!("/audit/export.csv?{}", conditions.trim_start_matches('&'));
    let value = |o: &Option<String>| o.clone().unwrap_or_default();
    Ok(layout::page(
        &v,
        "/audit",
        "Audit trail",
        html! {
            form method="get" action="/audit" class="filter" role="search" {
                p { "Exact values; end one with * for a prefix (auth.*). Times: RFC 3339 or a date (UTC)." }
                label for="f-actor" { "Actor" } input id="f-actor" name="actor" value=(value(&f.actor));
                label for="f-action" { "Action" } input id="f-action" name="action" value=(value(&f.action)) placeholder="e.g. credential.reveal";
                label for="f-object" { "Object" } input id="f-object" name="object" value=(value(&f.object));
                label for="f-since" { "From (time)" } input id="f-since" name="since" value=(value(&f.since)) placeholder="2026-01-31";
                label for="f-until" { "Before (time)" } input id="f-until" name="until" value=(value(&f.until)) placeholder="2026-02-01";
                button type="submit" { "Search" }
            }
            p { a href=(download) download="cofre-audit.csv" { "Download CSV" } " (every entry of this search, not only this page; audited)" }
            form method="post" action="/audit/verify" {
                (csrf_field(&v))
                button type="submit" { "Verify the chain" }
            }
            table {
                caption { "Entries, oldest first" }
                thead { tr { th scope="col" { "#" } th scope="col" { "Time" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Object" } th scope="col" { "Outcome" } th scope="col" { "Details" } } }
                tbody {
                    @for e in &shown {
                        tr {
                            td { (e.seq) } td { (e.ts) } td { (e.actor) } td { (e.action) } td { (e.object) }
                            td { (e.outcome) }
                            td { code { (e.details.to_string()) } }
                        }
                    }
                }
            }
            @if let Some(q) = next { p { a href={ "/audit" (q) } rel="next" { "Next entries" } } }
        },
    ))
}

/// The search as CSV, streamed from the service (the API's `GET /api/v1/audit/export.csv`).
pub(crate) async fn export_csv(
    State(c): State<Console>,
    v: Viewer,
    Query(f): Query<Filter>,
) -> Result<axum::response::Response, crate::layout::PageError> {
    let rows = c
        .app
        .audit()
        .export_audit_csv(
            &v.who,
            &AuditQuery {
                limit: None,
                cursor: None,
                actor: f.actor,
                action: f.action,
                object: f.object,
                since: f.since,
                until: f.until,
            },
        )
        .await?;
    let body = axum::body::Body::from_stream(futures::stream::unfold(rows, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Ok(layout::download(
        (
            [
                ("content-type", "text/csv; charset=utf-8"),
                (
                    "content-disposition",
                    "attachment; filename=\"cofre-audit.csv\"",
                ),
            ],
            body,
        )
            .into_response(),
    ))
}

#[derive(Deserialize)]
pub(crate) struct Empty {}

pub(crate) async fn verify(State(c): State<Console>, ch: Change<Empty>) -> PageResult {
    let r = c.app.audit().verify_audit(&ch.viewer.who).await?;
    Ok(layout::page(
        &ch.viewer,
        "/audit",
        "Audit trail verification",
        html! {
            p role="status" {
                @if r.intact { "Intact: " (r.entries_checked) " entries checked, every hash chains to the last." }
                @else { "BROKEN: the chain does not hold." }
            }
            @if let Some(b) = &r.first_broken { p role="alert" { "First entry that cannot be trusted: #" (b.seq) " — " (b.reason) } }
            @if let Some(a) = &r.anchor { p { "Anchored at #" (a.seq) " (" (a.source) ", " (a.written_at) ")." } }
            p { a href="/audit" { "Back to the trail" } }
        },
    ))
}
