//! Offboarding endpoints: disable, enable and delete users; remove SSH keys and group members;
//! disable, enable and delete targets and credentials; remove backup targets and jobs. Handlers
//! only translate; the rules live in `services::offboarding`.

use super::{ok, ApiResult};
use crate::extract::{Auth, JsonBody};
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;
use cofre_proto::*;

/// Ends the user's tokens and live gateway sessions at once; no key or password of theirs works
/// until enabled again. The last enabled admin cannot be disabled (409 `last_admin`).
#[utoipa::path(post, path = "/api/v1/users/{username}/disable", security(("bearer" = [])), params(("username" = String, Path)), request_body = DisableUserRequest,
    responses((status = 200, body = UserInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn disable_user(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(username): Path<String>,
    JsonBody(req): JsonBody<DisableUserRequest>,
) -> ApiResult<UserInfo> {
    Ok(Json(
        state
            .app
            .accounts()
            .disable_user(&who, &username, &req.reason)
            .await?,
    ))
}

/// Enabling gives back everything the user had: held for a second admin (202), like every
/// change that widens access.
#[utoipa::path(post, path = "/api/v1/users/{username}/enable", security(("bearer" = [])), params(("username" = String, Path)),
    responses((status = 200, body = UserInfo), (status = 202, body = HeldResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn enable_user(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(username): Path<String>,
) -> Result<axum::response::Response, crate::error::Error> {
    Ok(super::governance::applied(
        state.app.accounts().enable_user(&who, &username).await?,
    ))
}

/// Only a user that never acted: one with audit history is refused (409 `user_has_history`) and
/// should be disabled instead.
#[utoipa::path(delete, path = "/api/v1/users/{username}", security(("bearer" = [])), params(("username" = String, Path)),
    responses((status = 200, body = OkResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn delete_user(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(username): Path<String>,
) -> ApiResult<OkResponse> {
    state.app.accounts().delete_user(&who, &username).await?;
    ok()
}

/// One's own key, or anyone's as admin. Live sessions opened with the key end.
#[utoipa::path(post, path = "/api/v1/users/{username}/keys/remove", security(("bearer" = [])), params(("username" = String, Path)), request_body = RemoveSshKeyRequest,
    responses((status = 200, body = OkResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn remove_ssh_key(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(username): Path<String>,
    JsonBody(req): JsonBody<RemoveSshKeyRequest>,
) -> ApiResult<OkResponse> {
    state
        .app
        .accounts()
        .remove_ssh_key(&who, &username, &req.fingerprint)
        .await?;
    ok()
}

#[utoipa::path(delete, path = "/api/v1/groups/{name}/members/{username}", security(("bearer" = [])), params(("name" = String, Path), ("username" = String, Path)),
    responses((status = 200, body = OkResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn remove_group_member(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((name, username)): Path<(String, String)>,
) -> ApiResult<OkResponse> {
    state
        .app
        .accounts()
        .remove_group_member(&who, &name, &username)
        .await?;
    ok()
}

#[utoipa::path(post, path = "/api/v1/targets/{name}/disable", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = OkResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn disable_target(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> ApiResult<OkResponse> {
    state
        .app
        .vault()
        .set_target_disabled(&who, &name, true)
        .await?;
    ok()
}

#[utoipa::path(post, path = "/api/v1/targets/{name}/enable", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = OkResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn enable_target(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> ApiResult<OkResponse> {
    state
        .app
        .vault()
        .set_target_disabled(&who, &name, false)
        .await?;
    ok()
}

/// The target and its credentials; their versions, sessions and audit entries are kept.
#[utoipa::path(delete, path = "/api/v1/targets/{name}", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = OkResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_target(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> ApiResult<OkResponse> {
    state.app.vault().delete_target(&who, &name).await?;
    ok()
}

#[utoipa::path(post, path = "/api/v1/targets/{name}/credentials/{account}/disable", security(("bearer" = [])), params(("name" = String, Path), ("account" = String, Path)),
    responses((status = 200, body = OkResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn disable_credential(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((name, account)): Path<(String, String)>,
) -> ApiResult<OkResponse> {
    state
        .app
        .vault()
        .set_credential_disabled(&who, &name, &account, true)
        .await?;
    ok()
}

#[utoipa::path(post, path = "/api/v1/targets/{name}/credentials/{account}/enable", security(("bearer" = [])), params(("name" = String, Path), ("account" = String, Path)),
    responses((status = 200, body = OkResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn enable_credential(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((name, account)): Path<(String, String)>,
) -> ApiResult<OkResponse> {
    state
        .app
        .vault()
        .set_credential_disabled(&who, &name, &account, false)
        .await?;
    ok()
}

/// Its versions and audit entries are kept; a new credential of the same account starts afresh.
#[utoipa::path(delete, path = "/api/v1/targets/{name}/credentials/{account}", security(("bearer" = [])), params(("name" = String, Path), ("account" = String, Path)),
    responses((status = 200, body = OkResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_credential(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((name, account)): Path<(String, String)>,
) -> ApiResult<OkResponse> {
    state
        .app
        .vault()
        .delete_credential(&who, &name, &account)
        .await?;
    ok()
}

/// Refused (409 `backup_target_in_use`, naming the jobs) while a job uses the target.
#[utoipa::path(delete, path = "/api/v1/backup/targets/{name}", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = OkResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn remove_backup_target(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> ApiResult<OkResponse> {
    state.app.orbit().remove_backup_target(&who, &name).await?;
    ok()
}

/// Refused (409 `backup_running`) while a run of the job is in progress.
#[utoipa::path(delete, path = "/api/v1/backup/jobs/{name}", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = OkResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn remove_backup_job(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> ApiResult<OkResponse> {
    state.app.orbit().remove_backup_job(&who, &name).await?;
    ok()
}
