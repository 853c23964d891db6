//! Single sign-on: identity providers (admins) and the native client's login through one (the
//! CLI's loopback redirect; the console's browser flow is the console's). Handlers only
//! translate; the rules live in `services::sso`.

use super::governance::applied;
use super::{ok, ApiResult};
use crate::error::Error;
use crate::extract::{Auth, JsonBody, Source};
use crate::services::sso::{check_loopback_redirect, SsoBegin, SsoFinish};
use crate::AppState;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use cofre_proto::*;

#[utoipa::path(get, path = "/api/v1/sso", security(("bearer" = [])),
    responses((status = 200, body = Vec<SsoProviderInfo>), (status = 403, body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<Vec<SsoProviderInfo>> {
    Ok(Json(state.app.accounts().list_sso_providers(&who).await?))
}

/// Adds an identity provider. One that gives a role above `user` (by a mapping or by default)
/// or a group a policy names waits for a second admin (202).
#[utoipa::path(post, path = "/api/v1/sso", security(("bearer" = [])), request_body = SsoProviderRequest,
    responses((status = 200, body = SsoProviderInfo), (status = 202, body = HeldResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn add(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<SsoProviderRequest>,
) -> Result<Response, Error> {
    Ok(applied(
        state.app.accounts().add_sso_provider(&who, &req).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/sso/{name}", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = OkResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn remove(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> ApiResult<OkResponse> {
    state
        .app
        .accounts()
        .remove_sso_provider(&who, &name)
        .await?;
    ok()
}

/// Fetches the provider's discovery document and keys now and says what is wrong.
#[utoipa::path(post, path = "/api/v1/sso/{name}/test", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = SsoTestReport), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn test(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> ApiResult<SsoTestReport> {
    Ok(Json(
        state.app.accounts().test_sso_provider(&who, &name).await?,
    ))
}

/// The providers a login page offers (no authentication: names only).
#[utoipa::path(get, path = "/api/v1/auth/sso",
    responses((status = 200, body = Vec<SsoProviderName>)))]
pub(super) async fn names(State(state): State<AppState>) -> ApiResult<Vec<SsoProviderName>> {
    Ok(Json(state.app.accounts().sso_provider_names().await?))
}

/// Starts a login through the provider for a native client, which receives the code on its own
/// loopback address (RFC 8252): open `authorization_url` in a browser.
#[utoipa::path(post, path = "/api/v1/auth/sso/{name}/begin", params(("name" = String, Path)), request_body = SsoBeginRequest,
    responses((status = 200, body = SsoBeginResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn begin(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<SsoBeginRequest>,
) -> ApiResult<SsoBeginResponse> {
    check_loopback_redirect(&req.redirect_uri)?;
    let (authorization_url, state_text) = state
        .app
        .accounts()
        .begin_sso(SsoBegin {
            provider: &name,
            redirect_uri: &req.redirect_uri,
            browser: None,
        })
        .await?;
    Ok(Json(SsoBeginResponse {
        authorization_url,
        state: state_text,
    }))
}

/// The code and state the provider sent to the native client: checked, and a token issued.
#[utoipa::path(post, path = "/api/v1/auth/sso/finish", request_body = SsoFinishRequest,
    responses((status = 200, body = LoginResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn finish(
    State(state): State<AppState>,
    Source(src): Source,
    JsonBody(req): JsonBody<SsoFinishRequest>,
) -> ApiResult<LoginResponse> {
    cofre_core::names::check_text("state", &req.state, 128)?;
    cofre_core::names::check_text("code", req.code.expose(), 2048)?;
    Ok(Json(
        state
            .app
            .accounts()
            .finish_sso(SsoFinish {
                state: &req.state,
                code: req.code.expose(),
                browser: None,
                source: &src,
            })
            .await?,
    ))
}

/// The second step of an SSO login whose `next_step` was `totp` (`[sso] require_totp`): with
/// that login's token, the TOTP code; answers a session token in its place.
#[utoipa::path(post, path = "/api/v1/auth/sso/totp", security(("bearer" = [])), request_body = SsoTotpRequest,
    responses((status = 200, body = LoginResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 423, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(super) async fn totp(
    State(state): State<AppState>,
    Auth(who): Auth,
    Source(src): Source,
    JsonBody(req): JsonBody<SsoTotpRequest>,
) -> ApiResult<LoginResponse> {
    cofre_core::names::check_text("totp_code", &req.totp_code, 16)?;
    Ok(Json(
        state
            .app
            .accounts()
            .verify_sso_totp(&who, &req.totp_code, &src)
            .await?,
    ))
}
