//! Orbit's instance commands: the type, disabling and enabling the application. Handlers only
//! translate; the rules live in `services::instance`.

use super::ApiResult;
use crate::extract::QueryParams;
use crate::extract::{Auth, JsonBody};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use cofre_proto::{
    DisableApplicationRequest, ErrorBody, InstanceInfo, Page, PageQuery, PromoteReport,
    PromoteRequest, ReleaseInfo, SetInstanceTypeRequest,
};

/// Sets the instance's type. A demo or contingency instance becomes production only by
/// promotion (409 `promote_required`).
#[utoipa::path(put, path = "/api/v1/instance/type", security(("bearer" = [])),
    request_body = SetInstanceTypeRequest,
    responses((status = 200, body = InstanceInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn set_type(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<SetInstanceTypeRequest>,
) -> ApiResult<InstanceInfo> {
    Ok(Json(
        state
            .app
            .orbit()
            .set_instance_type(&who, &req.instance_type)
            .await?,
    ))
}

/// Disables the application: every endpoint but Orbit's answers 503 `application_disabled`
/// with the reason, and the gateway refuses new sessions with it.
#[utoipa::path(post, path = "/api/v1/instance/disable", security(("bearer" = [])),
    request_body = DisableApplicationRequest,
    responses((status = 200, body = InstanceInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn disable(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<DisableApplicationRequest>,
) -> ApiResult<InstanceInfo> {
    Ok(Json(
        state
            .app
            .orbit()
            .disable_application(&who, &req.reason)
            .await?,
    ))
}

/// Enables the application again (409 `not_disabled` if it is not disabled).
#[utoipa::path(post, path = "/api/v1/instance/enable", security(("bearer" = [])),
    responses((status = 200, body = InstanceInfo), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn enable(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<InstanceInfo> {
    Ok(Json(state.app.orbit().enable_application(&who).await?))
}

/// The drift report of a promotion to production; with `confirm: true` also the promotion
/// (audited with the report). Without it nothing changes.
#[utoipa::path(post, path = "/api/v1/instance/promote", security(("bearer" = [])),
    request_body = PromoteRequest,
    responses((status = 200, body = PromoteReport), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn promote(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<PromoteRequest>,
) -> ApiResult<PromoteReport> {
    Ok(Json(
        state
            .app
            .orbit()
            .promote_instance(&who, &req.to, req.confirm)
            .await?,
    ))
}

/// Uploads a release file (the body: the tar file as it is). It is verified before it is kept:
/// signed by a key of `[maintenance] release_public_keys`, the binary the signed manifest names,
/// newer than the running version and upgrading from it; otherwise 400 with why.
#[utoipa::path(post, path = "/api/v1/releases", security(("bearer" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The release file"),
    responses((status = 200, body = ReleaseInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(super) async fn upload_release(
    State(state): State<AppState>,
    Auth(who): Auth,
    body: axum::body::Body,
) -> ApiResult<ReleaseInfo> {
    let stream = body.into_data_stream();
    Ok(Json(state.app.orbit().upload_release(&who, stream).await?))
}

/// The verified releases.
#[utoipa::path(get, path = "/api/v1/releases", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<ReleaseInfo>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_releases(
    State(state): State<AppState>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Page<ReleaseInfo>> {
    Ok(Json(
        state
            .app
            .orbit()
            .list_releases(&who, q.limit, q.cursor.as_deref())
            .await?,
    ))
}
