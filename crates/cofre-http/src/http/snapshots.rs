//! Snapshot endpoints (Orbit): create (a job), its progress, list, verify, prune. Handlers only
//! translate; the rules live in `services::snapshots`.

use super::ApiResult;
use crate::extract::{Auth, JsonBody};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use cofre_proto::*;

/// Starts a snapshot; it runs as a job (poll `/api/v1/snapshots/jobs/{id}`).
#[utoipa::path(post, path = "/api/v1/snapshots", security(("bearer" = [])), request_body = CreateSnapshotRequest,
    responses((status = 202, body = SnapshotJob), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(super) async fn create(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<CreateSnapshotRequest>,
) -> Result<(StatusCode, Json<SnapshotJob>), crate::error::Error> {
    let job = state.app.orbit().start_snapshot(&who, &req).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

#[utoipa::path(get, path = "/api/v1/snapshots", security(("bearer" = [])),
    responses((status = 200, body = SnapshotList), (status = 403, body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<SnapshotList> {
    Ok(Json(state.app.orbit().list_snapshots(&who)?))
}

#[utoipa::path(get, path = "/api/v1/snapshots/jobs/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "job id from POST /api/v1/snapshots")),
    responses((status = 200, body = SnapshotJob), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn job(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult<SnapshotJob> {
    Ok(Json(state.app.orbit().get_snapshot_job(&who, &id)?))
}

/// Reads the whole snapshot back: checksums, decryption, the database copy opens.
#[utoipa::path(post, path = "/api/v1/snapshots/{id}/verify", security(("bearer" = [])),
    params(("id" = String, Path, description = "snapshot id")),
    responses((status = 200, body = SnapshotVerifyResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn verify(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult<SnapshotVerifyResponse> {
    Ok(Json(state.app.orbit().verify_snapshot(&who, &id).await?))
}

#[utoipa::path(post, path = "/api/v1/snapshots/prune", security(("bearer" = [])), request_body = PruneSnapshotsRequest,
    responses((status = 200, body = PruneSnapshotsResponse), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn prune(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<PruneSnapshotsRequest>,
) -> ApiResult<PruneSnapshotsResponse> {
    Ok(Json(state.app.orbit().prune_snapshots(&who, &req).await?))
}
