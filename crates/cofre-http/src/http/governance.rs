//! Dual control: change requests and instance facts. Handlers only translate; the rules live in
//! `services::governance` (and what "widens" means in `cofre_core::governance`).

use super::ApiResult;
use crate::extract::{Auth, JsonBody, QueryParams};
use crate::services::governance::Applied;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cofre_core::approval::Verdict;
use cofre_proto::{
    ChangeDecision, ChangeInfo, ChangeListQuery, DecideChangeRequest, ErrorBody, HeldResponse,
    InstanceInfo, NodeInfo, Page,
};

/// 200 with the result when the change applied; 202 with the change request when it waits for a
/// second admin.
pub(super) fn applied<T: serde::Serialize>(a: Applied<T>) -> Response {
    match a {
        Applied::Done(t) => Json(t).into_response(),
        Applied::Held(change) => (
            StatusCode::ACCEPTED,
            Json(HeldResponse { held: true, change }),
        )
            .into_response(),
    }
}

/// Change requests, newest first; `pending=true`: only those waiting for a decision.
#[utoipa::path(get, path = "/api/v1/changes", security(("bearer" = [])), params(ChangeListQuery),
    responses((status = 200, body = Page<ChangeInfo>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<ChangeListQuery>,
) -> ApiResult<Page<ChangeInfo>> {
    Ok(Json(
        state
            .app
            .approvals()
            .list_changes(
                &who,
                q.pending.unwrap_or(false),
                q.limit,
                q.cursor.as_deref(),
            )
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/changes/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = ChangeInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn show(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult<ChangeInfo> {
    Ok(Json(state.app.approvals().get_change(&who, &id).await?))
}

/// A second admin approves: the change is applied now. A reset's or a new user's one-time
/// password is in this answer, once.
#[utoipa::path(post, path = "/api/v1/changes/{id}/approve", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = DecideChangeRequest,
    responses((status = 200, body = ChangeDecision), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn approve(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<DecideChangeRequest>,
) -> ApiResult<ChangeDecision> {
    Ok(Json(
        state
            .app
            .approvals()
            .decide_change(&who, &id, Verdict::Approve, req.comment.as_deref())
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/changes/{id}/deny", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = DecideChangeRequest,
    responses((status = 200, body = ChangeDecision), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn deny(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<DecideChangeRequest>,
) -> ApiResult<ChangeDecision> {
    Ok(Json(
        state
            .app
            .approvals()
            .decide_change(&who, &id, Verdict::Deny, req.comment.as_deref())
            .await?,
    ))
}

/// Instance facts and warnings (e.g. a single admin: dual control cannot apply).
#[utoipa::path(get, path = "/api/v1/instance", security(("bearer" = [])),
    responses((status = 200, body = InstanceInfo), (status = 403, body = ErrorBody)))]
pub(super) async fn instance(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<InstanceInfo> {
    Ok(Json(state.app.orbit().get_instance(&who).await?))
}

/// The nodes on this database: alive or dead (no heartbeat for three intervals), addresses,
/// version, live sessions. Whoever reads the instance's facts.
#[utoipa::path(get, path = "/api/v1/nodes", security(("bearer" = [])),
    responses((status = 200, body = Vec<NodeInfo>), (status = 403, body = ErrorBody)))]
pub(super) async fn nodes(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<Vec<NodeInfo>> {
    Ok(Json(state.app.orbit().list_nodes(&who).await?))
}
