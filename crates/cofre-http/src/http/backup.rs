//! Backup endpoints (Orbit): targets, jobs, runs and status. Handlers only translate; the rules
//! live in `services::backups`.

use super::ApiResult;
use crate::error::Error;
use crate::extract::{Auth, JsonBody};
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;
use cofre_proto::*;

#[utoipa::path(get, path = "/api/v1/backup/status", security(("bearer" = [])),
    responses((status = 200, body = BackupStatus), (status = 403, body = ErrorBody)))]
pub(super) async fn status(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<BackupStatus> {
    Ok(Json(state.app.orbit().get_backup_status(&who).await?))
}

#[utoipa::path(get, path = "/api/v1/backup/targets", security(("bearer" = [])),
    responses((status = 200, body = Vec<BackupTargetInfo>), (status = 403, body = ErrorBody)))]
pub(super) async fn list_targets(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<Vec<BackupTargetInfo>> {
    Ok(Json(state.app.orbit().list_backup_targets(&who).await?))
}

#[utoipa::path(post, path = "/api/v1/backup/targets", security(("bearer" = [])), request_body = NewBackupTargetRequest,
    responses((status = 200, body = BackupTargetInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn add_target(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<NewBackupTargetRequest>,
) -> ApiResult<BackupTargetInfo> {
    Ok(Json(state.app.orbit().add_backup_target(&who, &req).await?))
}

/// The write test: a probe file written, read back and deleted. A failure is reported in the body.
#[utoipa::path(post, path = "/api/v1/backup/targets/{name}/test", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = BackupTestResult), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn test_target(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> ApiResult<BackupTestResult> {
    Ok(Json(
        state.app.orbit().test_backup_target(&who, &name).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/backup/jobs", security(("bearer" = [])), request_body = NewBackupJobRequest,
    responses((status = 200, body = BackupJobInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn add_job(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<NewBackupJobRequest>,
) -> ApiResult<BackupJobInfo> {
    Ok(Json(state.app.orbit().add_backup_job(&who, &req).await?))
}

/// Starts a run now; it goes on in the background: follow it at `/api/v1/backup/runs/{id}`.
#[utoipa::path(post, path = "/api/v1/backup/jobs/{name}/run", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = BackupRunInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn run_job(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> ApiResult<BackupRunInfo> {
    Ok(Json(state.app.orbit().run_backup_now(&who, &name).await?))
}

/// A run: its status, and while it runs, its progress.
#[utoipa::path(get, path = "/api/v1/backup/runs/{id}", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = BackupRunInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_run(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult<BackupRunInfo> {
    let id: i64 = id
        .parse()
        .map_err(|_| Error::invalid("id", "id: a run id is a number"))?;
    Ok(Json(state.app.orbit().get_backup_run(&who, id).await?))
}
