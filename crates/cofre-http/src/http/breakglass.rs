//! Break-glass endpoints: the key ceremony (admin), a custodian's share (once), status and export
//! (admin). Handlers only translate; the rules live in `services::breakglass`.

use super::ApiResult;
use crate::error::Error;
use crate::extract::{Auth, JsonBody};
use crate::AppState;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cofre_proto::*;

#[utoipa::path(get, path = "/api/v1/breakglass", security(("bearer" = [])),
    responses((status = 200, body = BreakGlassStatus), (status = 403, body = ErrorBody)))]
pub(super) async fn status(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<BreakGlassStatus> {
    Ok(Json(state.app.orbit().get_breakglass_status(&who).await?))
}

#[utoipa::path(post, path = "/api/v1/breakglass/ceremony", security(("bearer" = [])), request_body = CeremonyRequest,
    responses((status = 200, body = CeremonyResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn ceremony(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<CeremonyRequest>,
) -> ApiResult<CeremonyResponse> {
    Ok(Json(
        state
            .app
            .orbit()
            .start_breakglass_ceremony(&who, &req)
            .await?,
    ))
}

/// The caller's share of the newest ceremony they are a custodian of: delivered once, then deleted.
#[utoipa::path(post, path = "/api/v1/breakglass/share", security(("bearer" = [])),
    responses((status = 200, body = ShareResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn share(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<ShareResponse> {
    Ok(Json(state.app.orbit().take_breakglass_share(&who).await?))
}

/// The break-glass file (an age file) of the whole vault under the active epoch.
#[utoipa::path(post, path = "/api/v1/breakglass/export", security(("bearer" = [])),
    responses((status = 200, description = "the break-glass file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn export(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> Result<Response, Error> {
    let built = state.app.orbit().export_breakglass(&who).await?;
    let mut resp = built.bytes.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    let name = built.header.file_name();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert("content-disposition", v);
    }
    if let Ok(v) = HeaderValue::from_str(&name) {
        headers.insert("x-cofre-breakglass-file", v);
    }
    Ok(resp)
}
