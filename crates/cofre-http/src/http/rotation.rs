//! Credential rotation and the password policy. Handlers only translate; the rules live in
//! `services::rotation`.

use super::ApiResult;
use crate::extract::{Auth, JsonBody, QueryParams};
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;
use cofre_proto::*;

#[utoipa::path(get, path = "/api/v1/password-policy", security(("bearer" = [])),
    responses((status = 200, body = PasswordPolicyInfo)))]
pub(super) async fn get_policy(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<PasswordPolicyInfo> {
    Ok(Json(state.app.vault().get_password_policy(&who).await?))
}

/// The policy for passwords Cofre generates (rotation). One leaving under 64 bits of entropy is
/// refused (400, naming the field).
#[utoipa::path(put, path = "/api/v1/password-policy", security(("bearer" = [])), request_body = SetPasswordPolicyRequest,
    responses((status = 200, body = PasswordPolicyInfo), (status = 400, body = ErrorBody)))]
pub(super) async fn set_policy(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<SetPasswordPolicyRequest>,
) -> ApiResult<PasswordPolicyInfo> {
    Ok(Json(
        state.app.vault().set_password_policy(&who, &req).await?,
    ))
}

/// Rotates now: the new secret is verified by a fresh login before it becomes current. A failed
/// attempt answers 200 with `outcome` saying so (the old version stays current); a live session
/// on the credential makes it `waiting`. 409 `rotation_in_progress` while another runs.
#[utoipa::path(post, path = "/api/v1/targets/{name}/credentials/{account}/rotate", security(("bearer" = [])),
    params(("name" = String, Path), ("account" = String, Path)), request_body = RotateRequest,
    responses((status = 200, body = RotationResult), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn rotate(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((name, account)): Path<(String, String)>,
    JsonBody(req): JsonBody<RotateRequest>,
) -> ApiResult<RotationResult> {
    Ok(Json(
        state
            .app
            .vault()
            .rotate_credential(&who, &name, &account, &req)
            .await?,
    ))
}

#[utoipa::path(put, path = "/api/v1/targets/{name}/credentials/{account}/rotation", security(("bearer" = [])),
    params(("name" = String, Path), ("account" = String, Path)), request_body = SetRotationRequest,
    responses((status = 200, body = RotationInfo), (status = 400, body = ErrorBody)))]
pub(super) async fn set_rotation(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((name, account)): Path<(String, String)>,
    JsonBody(req): JsonBody<SetRotationRequest>,
) -> ApiResult<RotationInfo> {
    Ok(Json(
        state
            .app
            .vault()
            .set_rotation(&who, &name, &account, &req)
            .await?,
    ))
}

/// Logs in with the vaulted secret: `ok`, or `drift` (alerted; reconciled where `as` is set).
#[utoipa::path(post, path = "/api/v1/targets/{name}/credentials/{account}/verify", security(("bearer" = [])),
    params(("name" = String, Path), ("account" = String, Path)),
    responses((status = 200, body = VerifyResult), (status = 409, body = ErrorBody)))]
pub(super) async fn verify(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((name, account)): Path<(String, String)>,
) -> ApiResult<VerifyResult> {
    Ok(Json(
        state
            .app
            .vault()
            .verify_credential(&who, &name, &account)
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/rotations", security(("bearer" = [])), params(RotationListQuery),
    responses((status = 200, body = Page<RotationInfo>)))]
pub(super) async fn status(
    State(state): State<AppState>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<RotationListQuery>,
) -> ApiResult<Page<RotationInfo>> {
    Ok(Json(
        state
            .app
            .vault()
            .get_rotation_status(
                &who,
                q.failed.unwrap_or(false),
                q.limit,
                q.cursor.as_deref(),
            )
            .await?,
    ))
}
