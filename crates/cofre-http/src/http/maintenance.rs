//! Maintenance windows: propose, list, show, approve, deny, cancel, and the live step stream
//! (Server-Sent Events). Handlers only translate; the rules live in `services::maintenance`.

use super::ApiResult;
use crate::extract::{Auth, JsonBody, QueryParams};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use cofre_app::services::Principal;
use cofre_proto::{
    DecideMaintenanceRequest, ErrorBody, MaintenanceEvent, MaintenanceInfo, Page, PageQuery,
    ProposeMaintenanceRequest,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Proposes a window for an uploaded release (verified again now). Where the mode asks no one
/// (saas; on-prem with `[maintenance] approvals = 0`) it is scheduled at once; saas windows must
/// start at least `[maintenance] notice_hours` ahead (400 `maintenance_notice`) and are announced
/// to every customer admin.
#[utoipa::path(post, path = "/api/v1/maintenance", security(("bearer" = [])),
    request_body = ProposeMaintenanceRequest,
    responses((status = 200, body = MaintenanceInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn propose(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<ProposeMaintenanceRequest>,
) -> ApiResult<MaintenanceInfo> {
    Ok(Json(
        state.app.orbit().propose_maintenance(&who, &req).await?,
    ))
}

/// Every window: state, times, release, approvals, who proposed it.
#[utoipa::path(get, path = "/api/v1/maintenance", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<MaintenanceInfo>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Page<MaintenanceInfo>> {
    Ok(Json(
        state
            .app
            .orbit()
            .list_maintenance(&who, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// One window with every step so far.
#[utoipa::path(get, path = "/api/v1/maintenance/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = MaintenanceInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn show(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult<MaintenanceInfo> {
    Ok(Json(state.app.orbit().get_maintenance(&who, &id).await?))
}

/// A customer admin's approval (never the proposer's, never a vendor role's; once each).
#[utoipa::path(post, path = "/api/v1/maintenance/{id}/approve", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = DecideMaintenanceRequest,
    responses((status = 200, body = MaintenanceInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn approve(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<DecideMaintenanceRequest>,
) -> ApiResult<MaintenanceInfo> {
    Ok(Json(
        state
            .app
            .orbit()
            .decide_maintenance(&who, &id, true, req.comment.as_deref())
            .await?,
    ))
}

/// A customer admin's refusal, with why: one ends the window.
#[utoipa::path(post, path = "/api/v1/maintenance/{id}/deny", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = DecideMaintenanceRequest,
    responses((status = 200, body = MaintenanceInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn deny(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<DecideMaintenanceRequest>,
) -> ApiResult<MaintenanceInfo> {
    Ok(Json(
        state
            .app
            .orbit()
            .decide_maintenance(&who, &id, false, req.comment.as_deref())
            .await?,
    ))
}

/// Cancels a window before its start (whoever may propose one).
#[utoipa::path(post, path = "/api/v1/maintenance/{id}/cancel", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = MaintenanceInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn cancel(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult<MaintenanceInfo> {
    Ok(Json(state.app.orbit().cancel_maintenance(&who, &id).await?))
}

/// How often a stream looks again without being woken: another node's steps are found so.
const POLL: Duration = Duration::from_secs(2);

struct Watch {
    app: Arc<cofre_app::services::App>,
    who: Principal,
    id: String,
    last: i64,
    pending: VecDeque<MaintenanceEvent>,
    closed: bool,
    woken: tokio::sync::broadcast::Receiver<String>,
}

/// The window's steps as Server-Sent Events (`event: step`, `id`: the step's `seq`, `data`:
/// the step as JSON): every past step first (after `Last-Event-ID` when a client reconnects),
/// then each new one as it happens; the stream ends after the step that closes the window.
#[utoipa::path(get, path = "/api/v1/maintenance/{id}/events", security(("bearer" = [])),
    params(("id" = String, Path), ("Last-Event-ID" = Option<i64>, Header, description = "The last step received; only later ones are sent")),
    responses((status = 200, description = "text/event-stream of MaintenanceEvent", content_type = "text/event-stream", body = String), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn events(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<
    Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>>>,
    crate::error::Error,
> {
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                cofre_app::error::Error::invalid(
                    "Last-Event-ID",
                    "Last-Event-ID: must be the number of a step (the `id` of an event)",
                )
            })?,
    };
    // Subscribed before the first read, so a step written in between is not missed.
    let woken = state.app.orbit().maintenance_steps();
    let (first, closed) = state
        .app
        .orbit()
        .maintenance_events(&who, &id, after)
        .await?;
    let watch = Watch {
        app: state.app.clone(),
        who,
        id,
        last: after,
        pending: first.into(),
        closed,
        woken,
    };
    let stream = futures::stream::unfold(watch, |mut w| async move {
        loop {
            if let Some(e) = w.pending.pop_front() {
                w.last = e.seq;
                let data = serde_json::to_string(&e).unwrap_or_default();
                let event = Event::default()
                    .event("step")
                    .id(e.seq.to_string())
                    .data(data);
                return Some((Ok(event), w));
            }
            // The closing step is written with the state, so once closed was read, every step
            // up to the end is already in `pending`.
            if w.closed {
                return None;
            }
            tokio::select! {
                _ = w.woken.recv() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            match w
                .app
                .orbit()
                .maintenance_events(&w.who, &w.id, w.last)
                .await
            {
                Ok((more, closed)) => {
                    w.pending.extend(more);
                    w.closed = closed;
                }
                Err(e) => {
                    tracing::warn!(error = %e, window = %w.id, "maintenance stream ended");
                    return None;
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
