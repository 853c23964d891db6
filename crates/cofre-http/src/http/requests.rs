//! Access requests, approvals and grants. Handlers only translate; the rules live in
//! `services::requests` (and the state machine in `cofre_core::approval`).

use super::ApiResult;
use crate::extract::{Auth, JsonBody, QueryParams};
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;
use cofre_core::approval::Verdict;
use cofre_proto::requests::*;
use cofre_proto::{ErrorBody, Page, SetEmailRequest, UserInfo};

#[utoipa::path(post, path = "/api/v1/requests", security(("bearer" = [])), request_body = CreateAccessRequest,
    responses((status = 200, body = RequestInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<CreateAccessRequest>,
) -> ApiResult<RequestInfo> {
    Ok(Json(
        state.app.approvals().create_request(&who, &req).await?,
    ))
}

/// Emergency access: no approval where policy allows it; every approver is notified.
#[utoipa::path(post, path = "/api/v1/requests/emergency", security(("bearer" = [])), request_body = CreateAccessRequest,
    responses((status = 200, body = RequestInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn emergency(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<CreateAccessRequest>,
) -> ApiResult<RequestInfo> {
    Ok(Json(
        state
            .app
            .approvals()
            .create_emergency_request(&who, &req)
            .await?,
    ))
}

/// One's own requests; `pending=true`: those waiting for the caller's decision; `all=true`:
/// everyone's (admin, auditor).
#[utoipa::path(get, path = "/api/v1/requests", security(("bearer" = [])), params(RequestListQuery),
    responses((status = 200, body = Page<RequestInfo>), (status = 403, body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<RequestListQuery>,
) -> ApiResult<Page<RequestInfo>> {
    Ok(Json(
        state.app.approvals().list_requests(&who, &q, false).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/requests/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = RequestInfo), (status = 404, body = ErrorBody)))]
pub(super) async fn show(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult<RequestInfo> {
    Ok(Json(state.app.approvals().get_request(&who, &id).await?))
}

#[utoipa::path(post, path = "/api/v1/requests/{id}/approve", security(("bearer" = [])), params(("id" = String, Path)), request_body = DecideRequest,
    responses((status = 200, body = RequestInfo), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn approve(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<DecideRequest>,
) -> ApiResult<RequestInfo> {
    Ok(Json(
        state
            .app
            .approvals()
            .decide_request(&who, &id, Verdict::Approve, req.comment.as_deref())
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/requests/{id}/deny", security(("bearer" = [])), params(("id" = String, Path)), request_body = DecideRequest,
    responses((status = 200, body = RequestInfo), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn deny(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<DecideRequest>,
) -> ApiResult<RequestInfo> {
    Ok(Json(
        state
            .app
            .approvals()
            .decide_request(&who, &id, Verdict::Deny, req.comment.as_deref())
            .await?,
    ))
}

/// The requester withdraws a pending request.
#[utoipa::path(post, path = "/api/v1/requests/{id}/cancel", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = RequestInfo), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn cancel(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult<RequestInfo> {
    Ok(Json(state.app.approvals().cancel_request(&who, &id).await?))
}

/// After-the-fact review of an emergency access.
#[utoipa::path(post, path = "/api/v1/requests/{id}/review", security(("bearer" = [])), params(("id" = String, Path)), request_body = DecideRequest,
    responses((status = 200, body = RequestInfo), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn review(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<DecideRequest>,
) -> ApiResult<RequestInfo> {
    Ok(Json(
        state
            .app
            .approvals()
            .review_request(&who, &id, req.comment.as_deref())
            .await?,
    ))
}

/// Approved requests whose window has not ended: one's own, or everyone's with `all=true`.
#[utoipa::path(get, path = "/api/v1/grants", security(("bearer" = [])), params(RequestListQuery),
    responses((status = 200, body = Page<RequestInfo>), (status = 403, body = ErrorBody)))]
pub(super) async fn grants(
    State(state): State<AppState>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<RequestListQuery>,
) -> ApiResult<Page<RequestInfo>> {
    Ok(Json(
        state.app.approvals().list_requests(&who, &q, true).await?,
    ))
}

/// Ends a grant now and closes its live gateway sessions.
#[utoipa::path(post, path = "/api/v1/grants/{id}/revoke", security(("bearer" = [])), params(("id" = String, Path)), request_body = RevokeRequest,
    responses((status = 200, body = RequestInfo), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn revoke(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RevokeRequest>,
) -> ApiResult<RequestInfo> {
    Ok(Json(
        state
            .app
            .approvals()
            .revoke_grant(&who, &id, req.reason.as_deref())
            .await?,
    ))
}

/// Sets (or, with null, removes) a user's email address for notifications.
#[utoipa::path(put, path = "/api/v1/users/{username}/email", security(("bearer" = [])), params(("username" = String, Path)), request_body = SetEmailRequest,
    responses((status = 200, body = UserInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn set_email(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(username): Path<String>,
    JsonBody(req): JsonBody<SetEmailRequest>,
) -> ApiResult<UserInfo> {
    Ok(Json(
        state
            .app
            .accounts()
            .set_email(&who, &username, req.email.as_deref())
            .await?,
    ))
}
