//! The audit trail (read, filter, verify): the audit service's, as `cofre audit` uses it.

use crate::auth::{Change, Viewer};
use crate::layout::{self, csrf_field, PageResult};
use crate::Console;
use axum::extract::{Query, State};
use cofre_proto::AuditEntryInfo;
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
    /// `YYYY-MM-DD` or any prefix of an RFC 3339 time: entries at or after it.
    #[serde(default)]
    since: Option<String>,
}

/// How many entries one page shows, and how many pages of the trail one view reads at most
/// while it looks for matches.
const SHOWN: usize = 100;
const PAGES_READ: usize = 20;

fn matches(e: &AuditEntryInfo, f: &Filter) -> bool {
    let has = |want: &Option<String>, got: &str| {
        want.as_deref()
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .is_none_or(|w| got.contains(w))
    };
    has(&f.actor, &e.actor)
        && has(&f.action, &e.action)
        && has(&f.object, &e.object)
        && f.since
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .is_none_or(|s| e.ts.as_str() >= s)
}

pub(crate) async fn trail(
    State(c): State<Console>,
    v: Viewer,
    Query(f): Query<Filter>,
) -> PageResult {
    let mut shown = Vec::new();
    let mut cursor = f.cursor.clone();
    for _ in 0..PAGES_READ {
        let page = c
            .app
            .audit()
            .list_audit(&v.who, Some(200), cursor.as_deref())
            .await?;
        cursor = page.next_cursor;
        shown.extend(page.items.into_iter().filter(|e| matches(e, &f)));
        if shown.len() >= SHOWN || cursor.is_none() {
            break;
        }
    }
    let next = cursor.map(|c| {
        let mut q = format!("?cursor={}", super::urlencode(&c));
        for (k, val) in [
            ("actor", &f.actor),
            ("action", &f.action),
            ("object", &f.object),
            ("since", &f.since),
        ] {
            if let Some(val) = val {
                q.push_str(&format!("&{k}={}", super::urlencode(val)));
            }
        }
        q
    });
    let value = |o: &Option<String>| o.clone().unwrap_or_default();
    Ok(layout::page(
        &v,
        "/audit",
        "Audit trail",
        html! {
            form method="get" action="/audit" class="filter" role="search" {
                label for="f-actor" { "Actor" } input id="f-actor" name="actor" value=(value(&f.actor));
                label for="f-action" { "Action" } input id="f-action" name="action" value=(value(&f.action)) placeholder="e.g. credential.reveal";
                label for="f-object" { "Object" } input id="f-object" name="object" value=(value(&f.object));
                label for="f-since" { "From (time)" } input id="f-since" name="since" value=(value(&f.since)) placeholder="2026-01-31";
                button type="submit" { "Filter" }
            }
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
