//! SIEM destinations: where the audit trail is forwarded, and how far each has got. Handlers only
//! translate; the rules live in `services::siem`.

use super::{ok, ApiResult};
use crate::extract::{Auth, JsonBody};
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;
use cofre_proto::*;

#[utoipa::path(get, path = "/api/v1/siem", security(("bearer" = [])),
    responses((status = 200, body = Vec<SiemInfo>), (status = 403, body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<Vec<SiemInfo>> {
    Ok(Json(state.app.audit().list_siem_destinations(&who).await?))
}

/// Adds a destination: it receives the whole audit trail, from the first entry, in order.
#[utoipa::path(post, path = "/api/v1/siem", security(("bearer" = [])), request_body = NewSiemRequest,
    responses((status = 200, body = SiemInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn add(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<NewSiemRequest>,
) -> ApiResult<SiemInfo> {
    Ok(Json(
        state.app.audit().add_siem_destination(&who, &req).await?,
    ))
}

/// Per destination: the last audit sequence delivered, the lag behind the head, the last error.
#[utoipa::path(get, path = "/api/v1/siem/status", security(("bearer" = [])),
    responses((status = 200, body = SiemStatus), (status = 403, body = ErrorBody)))]
pub(super) async fn status(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<SiemStatus> {
    Ok(Json(state.app.audit().get_siem_status(&who).await?))
}

#[utoipa::path(delete, path = "/api/v1/siem/{name}", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = OkResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn remove(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> ApiResult<OkResponse> {
    state
        .app
        .audit()
        .remove_siem_destination(&who, &name)
        .await?;
    ok()
}
