//! Live session control (watch, block input) and the emergency panel. Handlers only translate;
//! the rules live in `services::live`.

use super::{ok, ApiResult};
use crate::error::Error;
use crate::extract::{Auth, JsonBody};
use crate::AppState;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use cofre_app::services::live::WatchEvent;
use cofre_proto::{
    EmergencyRequest, ErrorBody, LiftLockdownRequest, LockSessionRequest, LockdownStatus,
    OkResponse, TerminateAllResponse,
};
use std::convert::Infallible;

/// Watches a live session as Server-Sent Events: `start` (JSON `WatchStart`: the terminal's
/// size), then `output` (base64 of the bytes the user saw, as they come), `missed` (how many
/// chunks a slow watcher missed) and a last `end`. Audited `session.watch` (start and end).
#[utoipa::path(get, path = "/api/v1/sessions/{id}/watch", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, content_type = "text/event-stream", body = String), (status = 409, body = ErrorBody)))]
pub(super) async fn watch(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let watch = state.app.sessions().watch_session(&who, &id).await?;
    let start = serde_json::to_string(&watch.start).unwrap_or_default();
    let first = futures::stream::once(async move {
        Ok::<_, Infallible>(Event::default().event("start").data(start))
    });
    let rest = futures::stream::unfold(Some(watch), |w| async move {
        let mut w = w?;
        let event = match w.next().await {
            WatchEvent::Output(data) => Event::default()
                .event("output")
                .data(base64::engine::general_purpose::STANDARD.encode(&data)),
            WatchEvent::Missed(n) => Event::default().event("missed").data(n.to_string()),
            WatchEvent::Ended => {
                // The last event; dropping the watch afterwards audits its end.
                return Some((Ok(Event::default().event("end").data("ended")), None));
            }
        };
        Some((Ok::<_, Infallible>(event), Some(w)))
    });
    use futures::StreamExt as _;
    Ok(Sse::new(first.chain(rest))
        // A comment every few seconds: a watcher that went away without closing is noticed
        // (and a moderated session held) within that time.
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(2)))
        .into_response())
}

/// Blocks a live session's input: the user is told why and what they type is dropped.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/lock", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = LockSessionRequest,
    responses((status = 200, body = OkResponse), (status = 409, body = ErrorBody)))]
pub(super) async fn lock(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<LockSessionRequest>,
) -> ApiResult<OkResponse> {
    state
        .app
        .sessions()
        .lock_session(&who, &id, &req.reason)
        .await?;
    ok()
}

/// Gives a blocked session its input back (409 `session_not_locked` if it is not blocked).
#[utoipa::path(post, path = "/api/v1/sessions/{id}/unlock", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = LockSessionRequest,
    responses((status = 200, body = OkResponse), (status = 409, body = ErrorBody)))]
pub(super) async fn unlock(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<LockSessionRequest>,
) -> ApiResult<OkResponse> {
    state
        .app
        .sessions()
        .unlock_session(&who, &id, &req.reason)
        .await?;
    ok()
}

/// Ends every live session (admin, with the admin's TOTP code and a reason).
#[utoipa::path(post, path = "/api/v1/emergency/terminate-all", security(("bearer" = [])),
    request_body = EmergencyRequest,
    responses((status = 200, body = TerminateAllResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn terminate_all(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<EmergencyRequest>,
) -> ApiResult<TerminateAllResponse> {
    let terminated = state
        .app
        .sessions()
        .terminate_all_sessions(&who, &req.totp_code, &req.reason)
        .await?;
    Ok(Json(TerminateAllResponse { terminated }))
}

/// Whether the instance is locked down.
#[utoipa::path(get, path = "/api/v1/emergency/lockdown", security(("bearer" = [])),
    responses((status = 200, body = LockdownStatus)))]
pub(super) async fn lockdown_status(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<LockdownStatus> {
    Ok(Json(state.app.sessions().get_lockdown(&who).await?))
}

/// Locks the instance down: the API, the console and the gateway refuse everyone but admins
/// (403 `instance_locked_down`) until a second admin lifts it.
#[utoipa::path(post, path = "/api/v1/emergency/lockdown", security(("bearer" = [])),
    request_body = EmergencyRequest,
    responses((status = 200, body = LockdownStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn lockdown(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<EmergencyRequest>,
) -> ApiResult<LockdownStatus> {
    Ok(Json(
        state
            .app
            .sessions()
            .lock_down_instance(&who, &req.totp_code, &req.reason)
            .await?,
    ))
}

/// Lifts the lockdown; the admin who locked it down cannot (403 `lockdown_needs_second_admin`).
#[utoipa::path(post, path = "/api/v1/emergency/lockdown/lift", security(("bearer" = [])),
    request_body = LiftLockdownRequest,
    responses((status = 200, body = LockdownStatus), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn lift(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<LiftLockdownRequest>,
) -> ApiResult<LockdownStatus> {
    Ok(Json(
        state
            .app
            .sessions()
            .lift_lockdown(&who, &req.reason)
            .await?,
    ))
}
