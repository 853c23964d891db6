//! Vendor support grants: request, list, show, approve, deny, revoke, and the activity under a
//! grant. Handlers only translate; the rules live in `services::support`.

use super::ApiResult;
use crate::extract::{Auth, JsonBody, QueryParams};
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;
use cofre_proto::{
    AuditEntryInfo, DecideSupportRequest, ErrorBody, Page, PageQuery, SupportGrantInfo,
    SupportListQuery, SupportRequest,
};

/// A support user asks for a grant (reason, ticket, scopes, duration); customer admins are told.
#[utoipa::path(post, path = "/api/v1/support", security(("bearer" = [])),
    request_body = SupportRequest,
    responses((status = 200, body = SupportGrantInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn request(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<SupportRequest>,
) -> ApiResult<SupportGrantInfo> {
    Ok(Json(
        state.app.approvals().request_support(&who, &req).await?,
    ))
}

/// A support user's own grants; a customer admin's or auditor's every grant.
#[utoipa::path(get, path = "/api/v1/support", security(("bearer" = [])), params(SupportListQuery),
    responses((status = 200, body = Page<SupportGrantInfo>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<SupportListQuery>,
) -> ApiResult<Page<SupportGrantInfo>> {
    Ok(Json(
        state
            .app
            .approvals()
            .list_support(
                &who,
                q.pending.unwrap_or(false),
                q.limit,
                q.cursor.as_deref(),
            )
            .await?,
    ))
}

/// One grant with its decisions.
#[utoipa::path(get, path = "/api/v1/support/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = SupportGrantInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn show(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult<SupportGrantInfo> {
    Ok(Json(state.app.approvals().get_support(&who, &id).await?))
}

/// A customer admin's approval (never a vendor's, never the requester's; once each).
#[utoipa::path(post, path = "/api/v1/support/{id}/approve", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = DecideSupportRequest,
    responses((status = 200, body = SupportGrantInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn approve(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<DecideSupportRequest>,
) -> ApiResult<SupportGrantInfo> {
    Ok(Json(
        state
            .app
            .approvals()
            .decide_support(&who, &id, true, req.comment.as_deref())
            .await?,
    ))
}

/// A customer admin's refusal, with why: one ends the request.
#[utoipa::path(post, path = "/api/v1/support/{id}/deny", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = DecideSupportRequest,
    responses((status = 200, body = SupportGrantInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn deny(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<DecideSupportRequest>,
) -> ApiResult<SupportGrantInfo> {
    Ok(Json(
        state
            .app
            .approvals()
            .decide_support(&who, &id, false, req.comment.as_deref())
            .await?,
    ))
}

/// Ends a request or a grant now: a customer admin, or its holder. The holder's next call is
/// refused.
#[utoipa::path(post, path = "/api/v1/support/{id}/revoke", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = SupportGrantInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn revoke(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult<SupportGrantInfo> {
    Ok(Json(state.app.approvals().revoke_support(&who, &id).await?))
}

/// Every audit entry made under the grant (`details.support_grant`), oldest first.
#[utoipa::path(get, path = "/api/v1/support/{id}/activity", security(("bearer" = [])), params(("id" = String, Path), PageQuery),
    responses((status = 200, body = Page<AuditEntryInfo>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn activity(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Page<AuditEntryInfo>> {
    Ok(Json(
        state
            .app
            .approvals()
            .support_activity(&who, &id, q.limit, q.cursor.as_deref())
            .await?,
    ))
}
