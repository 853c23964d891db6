//! The HTTP API under `/api/v1`, plus `/healthz` and `/metrics`. Handlers only translate: every
//! rule lives in [`crate::services`]. The OpenAPI document is generated from these handlers.

use crate::error::ErrorCode;
use crate::error::{Error, ErrorKind};
use crate::extract::{Auth, JsonBody, QueryParams, Source};
use crate::AppState;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cofre_proto::*;
use utoipa::OpenApi;

mod backup;
mod breakglass;
mod diagnostics;
mod governance;
mod invites;
mod live;
mod maintenance;
mod network;
mod offboarding;
mod support;
use governance::applied;
mod orbit;
mod requests;
mod rotation;
mod siem;
mod snapshots;
mod sso;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let Error(e) = self;
        let status = match e.kind {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::Locked => StatusCode::LOCKED,
            ErrorKind::TooMany => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Sealed | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        metrics::counter!("cofre_http_errors_total", "code" => e.code.as_str()).increment(1);
        let body = ErrorBody {
            code: e.code.as_str().to_owned(),
            message: e.message,
            field: e.field,
        };
        (status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, Error>;

/// The answer of an action that returns nothing but its success.
fn ok() -> ApiResult<OkResponse> {
    Ok(Json(OkResponse { ok: true }))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Cofre API", description = "Privileged access management: vault, policies, audit trail."),
    paths(
        healthz, seal_status, unseal, login, logout, whoami, change_password, totp_enroll, totp_confirm,
        list_users, create_user, get_user, unlock_user, reset_password, list_groups, create_group,
        add_group_member, list_targets, create_target, get_target, list_credentials, create_credential,
        update_credential, credential_history, reveal, list_policies, create_policy, get_policy, update_policy, delete_policy,
        list_audit, export_audit_csv, verify_audit, verify_recordings,
        breakglass::status, breakglass::ceremony, breakglass::share, breakglass::export,
        add_ssh_key, list_ssh_keys, list_sessions, kill_session, session_recording, verify_recording,
        live::watch, live::lock, live::unlock, live::terminate_all, live::lockdown_status,
        live::lockdown, live::lift,
        requests::create, requests::emergency, requests::list, requests::show, requests::approve,
        requests::deny, requests::cancel, requests::review, requests::grants, requests::revoke,
        requests::set_email,
        backup::status, backup::list_targets, backup::add_target, backup::test_target,
        backup::add_job, backup::run_job, backup::get_run,
        snapshots::create, snapshots::list, snapshots::job, snapshots::verify, snapshots::prune,
        offboarding::disable_user, offboarding::enable_user, offboarding::delete_user,
        offboarding::remove_ssh_key, offboarding::remove_group_member, offboarding::disable_target,
        offboarding::enable_target, offboarding::delete_target, offboarding::disable_credential,
        offboarding::enable_credential, offboarding::delete_credential,
        offboarding::remove_backup_target, offboarding::remove_backup_job,
        governance::list, governance::show, governance::approve, governance::deny, governance::instance, governance::nodes,
        orbit::set_type, orbit::disable, orbit::enable, orbit::promote,
        orbit::upload_release, orbit::list_releases,
        maintenance::propose, maintenance::list, maintenance::show, maintenance::approve,
        maintenance::deny, maintenance::cancel, maintenance::events,
        set_role,
        rotation::get_policy, rotation::set_policy, rotation::rotate, rotation::set_rotation,
        rotation::verify, rotation::status,
        siem::list, siem::add, siem::status, siem::remove,
        network::show, network::set,
        support::request, support::list, support::show, support::approve, support::deny,
        support::revoke, support::activity,
        invites::create, invites::list, invites::show, invites::revoke,
        invites::approve_session, invites::deny_session,
        diagnostics::config, diagnostics::logs,
        sso::list, sso::add, sso::remove, sso::test, sso::names, sso::begin, sso::finish, sso::totp,
    ),
    components(schemas(ErrorBody, ErrorCode)),
    modifiers(&BearerAuth, &CommonResponses),
)]
pub struct ApiDoc;

/// What any operation may answer besides its own outcomes, added wherever a handler's annotation
/// does not already say it: the extractors, the auth check, the role check, the sealed gate and
/// internal errors are shared by every handler, so they are documented in one place.
struct CommonResponses;
impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        for (path, item) in openapi.paths.paths.iter_mut() {
            let behind_seal = path.starts_with(API_PREFIX)
                && !path.ends_with("/sys/seal-status")
                && !path.ends_with("/sys/unseal");
            let has_params = path.contains('{');
            let writes = [
                (false, &mut item.get),
                (true, &mut item.put),
                (true, &mut item.post),
                (true, &mut item.delete),
                (true, &mut item.patch),
            ];
            for (writes, op) in writes
                .into_iter()
                .filter_map(|(writes, op)| op.as_mut().map(|op| (writes, op)))
            {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_body = op.request_body.is_some();
                let has_input =
                    has_body || has_params || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let responses = &mut op.responses.responses;
                let mut add = |status: &str, why: &str| {
                    responses.entry(status.to_owned()).or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(why)
                                .content(
                                    "application/json",
                                    ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                                        .build(),
                                )
                                .build(),
                        )
                    });
                };
                if has_input {
                    add(
                        "400",
                        "A path, query or body field is malformed (`field` names it)",
                    );
                }
                if secured {
                    add(
                        "401",
                        "No bearer token, or one that is unknown, expired or ended",
                    );
                    add("403", "The caller's role may not do this");
                }
                if has_params {
                    add("404", "What the path names does not exist");
                }
                if has_body {
                    add("413", "The body is larger than the limit");
                    add("415", "The body is not sent as application/json");
                }
                // Every write meets the store's unique names and the state machines' "already
                // decided": a name taken, a request no longer pending, a stale version.
                if writes && behind_seal {
                    add(
                        "409",
                        "It conflicts with what is there now: a name already taken, a decision already made, a stale version",
                    );
                }
                if behind_seal {
                    add(
                        "503",
                        "The server is sealed (`sealed`), or the application is disabled and this is not Orbit (`application_disabled`, with the reason)",
                    );
                }
                add(
                    "500",
                    "Something failed inside the server (its log has details)",
                );
            }
        }
    }
}

struct BearerAuth;
impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/sys/seal-status", get(seal_status))
        .route("/sys/unseal", post(unseal))
        .route("/auth/login", post(login))
        .route("/auth/sso", get(sso::names))
        .route("/auth/sso/{name}/begin", post(sso::begin))
        .route("/auth/sso/finish", post(sso::finish))
        .route("/auth/sso/totp", post(sso::totp))
        .route("/sso", get(sso::list).post(sso::add))
        .route("/sso/{name}", axum::routing::delete(sso::remove))
        .route("/sso/{name}/test", post(sso::test))
        .route("/auth/logout", post(logout))
        .route("/auth/whoami", get(whoami))
        .route("/auth/password", post(change_password))
        .route("/auth/totp/enroll", post(totp_enroll))
        .route("/auth/totp/confirm", post(totp_confirm))
        .route("/users", get(list_users).post(create_user))
        .route(
            "/users/{username}",
            get(get_user).delete(offboarding::delete_user),
        )
        .route("/users/{username}/disable", post(offboarding::disable_user))
        .route("/users/{username}/enable", post(offboarding::enable_user))
        .route(
            "/users/{username}/keys/remove",
            post(offboarding::remove_ssh_key),
        )
        .route(
            "/groups/{name}/members/{username}",
            axum::routing::delete(offboarding::remove_group_member),
        )
        .route("/targets/{name}/disable", post(offboarding::disable_target))
        .route("/targets/{name}/enable", post(offboarding::enable_target))
        .route(
            "/targets/{name}/credentials/{account}/disable",
            post(offboarding::disable_credential),
        )
        .route(
            "/targets/{name}/credentials/{account}/enable",
            post(offboarding::enable_credential),
        )
        .route(
            "/backup/targets/{name}",
            axum::routing::delete(offboarding::remove_backup_target),
        )
        .route(
            "/backup/jobs/{name}",
            axum::routing::delete(offboarding::remove_backup_job),
        )
        .route("/users/{username}/unlock", post(unlock_user))
        .route("/users/{username}/reset-password", post(reset_password))
        .route("/users/{username}/role", put(set_role))
        .route("/changes", get(governance::list))
        .route("/changes/{id}", get(governance::show))
        .route("/changes/{id}/approve", post(governance::approve))
        .route("/changes/{id}/deny", post(governance::deny))
        .route("/instance", get(governance::instance))
        .route("/nodes", get(governance::nodes))
        .route("/instance/type", put(orbit::set_type))
        .route("/instance/disable", post(orbit::disable))
        .route("/instance/enable", post(orbit::enable))
        .route("/instance/promote", post(orbit::promote))
        .route(
            "/releases",
            get(orbit::list_releases).post(orbit::upload_release),
        )
        .route(
            "/maintenance",
            get(maintenance::list).post(maintenance::propose),
        )
        .route("/maintenance/{id}", get(maintenance::show))
        .route("/maintenance/{id}/approve", post(maintenance::approve))
        .route("/maintenance/{id}/deny", post(maintenance::deny))
        .route("/maintenance/{id}/cancel", post(maintenance::cancel))
        .route("/maintenance/{id}/events", get(maintenance::events))
        .route("/support", get(support::list).post(support::request))
        .route("/support/{id}", get(support::show))
        .route("/support/{id}/approve", post(support::approve))
        .route("/support/{id}/deny", post(support::deny))
        .route("/support/{id}/revoke", post(support::revoke))
        .route("/support/{id}/activity", get(support::activity))
        .route("/invitations", get(invites::list).post(invites::create))
        .route("/invitations/{id}", get(invites::show))
        .route("/invitations/{id}/revoke", post(invites::revoke))
        .route(
            "/invitations/{id}/sessions/{ask}/approve",
            post(invites::approve_session),
        )
        .route(
            "/invitations/{id}/sessions/{ask}/deny",
            post(invites::deny_session),
        )
        .route("/diagnostics/config", get(diagnostics::config))
        .route("/diagnostics/logs", get(diagnostics::logs))
        .route("/groups", get(list_groups).post(create_group))
        .route("/groups/{name}/members", post(add_group_member))
        .route("/targets", get(list_targets).post(create_target))
        .route(
            "/targets/{name}",
            get(get_target).delete(offboarding::delete_target),
        )
        .route(
            "/targets/{name}/credentials",
            get(list_credentials).post(create_credential),
        )
        .route(
            "/targets/{name}/credentials/{account}",
            put(update_credential).delete(offboarding::delete_credential),
        )
        .route(
            "/targets/{name}/credentials/{account}/history",
            get(credential_history),
        )
        .route("/targets/{name}/credentials/{account}/reveal", post(reveal))
        .route(
            "/targets/{name}/credentials/{account}/rotate",
            post(rotation::rotate),
        )
        .route(
            "/targets/{name}/credentials/{account}/rotation",
            put(rotation::set_rotation),
        )
        .route(
            "/targets/{name}/credentials/{account}/verify",
            post(rotation::verify),
        )
        .route("/rotations", get(rotation::status))
        .route(
            "/password-policy",
            get(rotation::get_policy).put(rotation::set_policy),
        )
        .route("/policies", get(list_policies).post(create_policy))
        .route(
            "/policies/{name}",
            get(get_policy).put(update_policy).delete(delete_policy),
        )
        .route("/audit", get(list_audit))
        .route("/audit/export.csv", get(export_audit_csv))
        .route("/audit/verify", get(verify_audit))
        .route("/audit/verify/recordings", get(verify_recordings))
        .route("/breakglass", get(breakglass::status))
        .route("/breakglass/ceremony", post(breakglass::ceremony))
        .route("/breakglass/share", post(breakglass::share))
        .route("/breakglass/export", post(breakglass::export))
        .route(
            "/users/{username}/keys",
            get(list_ssh_keys).post(add_ssh_key),
        )
        .route("/sessions", get(list_sessions))
        .route("/sessions/{id}/kill", post(kill_session))
        .route("/sessions/{id}/watch", get(live::watch))
        .route("/sessions/{id}/lock", post(live::lock))
        .route("/sessions/{id}/unlock", post(live::unlock))
        .route("/emergency/terminate-all", post(live::terminate_all))
        .route(
            "/emergency/lockdown",
            get(live::lockdown_status).post(live::lockdown),
        )
        .route("/emergency/lockdown/lift", post(live::lift))
        .route("/sessions/{id}/recording", get(session_recording))
        .route("/sessions/{id}/recording/verify", get(verify_recording))
        .route("/requests", get(requests::list).post(requests::create))
        .route("/requests/emergency", post(requests::emergency))
        .route("/requests/{id}", get(requests::show))
        .route("/requests/{id}/approve", post(requests::approve))
        .route("/requests/{id}/deny", post(requests::deny))
        .route("/requests/{id}/cancel", post(requests::cancel))
        .route("/requests/{id}/review", post(requests::review))
        .route("/grants", get(requests::grants))
        .route("/grants/{id}/revoke", post(requests::revoke))
        .route("/users/{username}/email", put(requests::set_email))
        .route("/backup/status", get(backup::status))
        .route(
            "/backup/targets",
            get(backup::list_targets).post(backup::add_target),
        )
        .route("/backup/targets/{name}/test", post(backup::test_target))
        .route("/backup/jobs", post(backup::add_job))
        .route("/backup/jobs/{name}/run", post(backup::run_job))
        .route("/backup/runs/{id}", get(backup::get_run))
        .route("/snapshots", get(snapshots::list).post(snapshots::create))
        .route("/snapshots/jobs/{id}", get(snapshots::job))
        .route("/snapshots/prune", post(snapshots::prune))
        .route("/snapshots/{id}/verify", post(snapshots::verify))
        .route("/siem", get(siem::list).post(siem::add))
        .route("/siem/status", get(siem::status))
        .route("/siem/{name}", axum::routing::delete(siem::remove))
        .route("/network", get(network::show).put(network::set))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            instance_gate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            sealed_gate,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .nest(API_PREFIX, api)
        // The web console's pages and assets, at the same address (cofre-console).
        .merge(cofre_console::router(state.app.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            network::gate,
        ))
        .layer(axum::middleware::from_fn(no_store))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// While sealed, only the seal endpoints and the API description answer.
async fn sealed_gate(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    let open = path.ends_with("/sys/seal-status")
        || path.ends_with("/sys/unseal")
        || path.ends_with("/openapi.json");
    if state.app.is_sealed() && !open {
        return Error::sealed().into_response();
    }
    next.run(req).await
}

/// What answers while the application is disabled: Orbit (snapshots, backups, maintenance,
/// instance), and what one needs to reach it (logging in, the seal, the API description).
const OPEN_WHILE_DISABLED: &[&str] = &[
    "/openapi.json",
    "/sys/",
    "/auth/",
    "/instance",
    "/snapshots",
    "/backup/",
    "/maintenance",
    "/releases",
    "/network",
];

/// While the application is disabled, everything but Orbit answers 503 `application_disabled`
/// with the reason. Every answer of a contingency or demo instance carries its banner
/// (`x-cofre-banner`), which the CLI prints.
async fn instance_gate(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    let path = path.strip_prefix(API_PREFIX).unwrap_or(path);
    let orbit = OPEN_WHILE_DISABLED.iter().any(|p| path.starts_with(p));
    let instance = match state.app.instance_state().await {
        Ok(s) => s,
        Err(e) => return Error::from(e).into_response(),
    };
    let reads = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let mut res = match &instance.disabled {
        Some(d) if !orbit => {
            Error::from(crate::services::instance::disabled_error(d)).into_response()
        }
        _ => match state.app.maintenance_write_refusal() {
            // A change made now could be lost if the window rolls the database back.
            Some(e) if !orbit && !reads => Error::from(e).into_response(),
            _ => next.run(req).await,
        },
    };
    if let Some(banner) = instance.instance_type.banner() {
        res.headers_mut()
            .insert("x-cofre-banner", HeaderValue::from_static(banner));
    }
    res
}

/// Responses may carry secrets: no cache may keep them. And HTTPS only, from the first visit on.
async fn no_store(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    // Only the console's hashed assets say otherwise (their name changes with their content).
    headers
        .entry("cache-control")
        .or_insert(HeaderValue::from_static("no-store"));
    // The server only speaks HTTPS: a browser that has seen it once never tries plain HTTP.
    headers.insert(
        "strict-transport-security",
        HeaderValue::from_static("max-age=31536000"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    metrics::counter!("cofre_http_requests_total", "status" => res.status().as_u16().to_string())
        .increment(1);
    res
}

async fn not_found() -> Error {
    Error::new(
        ErrorKind::NotFound,
        ErrorCode::NotFound,
        "no such endpoint; see /api/v1/openapi.json",
    )
}

async fn method_not_allowed() -> Response {
    let mut r = Error::new(
        ErrorKind::BadRequest,
        ErrorCode::MethodNotAllowed,
        "method not allowed on this endpoint",
    )
    .into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let db_ok = state.app.store.ping().await.is_ok();
    let sealed = state.app.is_sealed();
    let status = if !db_ok {
        "database_unavailable"
    } else if sealed {
        "sealed"
    } else {
        "ok"
    };
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Health {
            status: status.to_owned(),
            sealed,
            version: cofre_app::switch::version().to_owned(),
            handover: state.app.handover_check(),
        }),
    )
}

#[utoipa::path(get, path = "/api/v1/sys/seal-status", responses((status = 200, body = SealStatus)))]
async fn seal_status(State(state): State<AppState>) -> Json<SealStatus> {
    Json(state.app.seal_status())
}

#[utoipa::path(post, path = "/api/v1/sys/unseal", request_body = UnsealRequest,
    responses((status = 200, body = SealStatus), (status = 400, body = ErrorBody)))]
async fn unseal(
    State(state): State<AppState>,
    Source(src): Source,
    JsonBody(req): JsonBody<UnsealRequest>,
) -> ApiResult<SealStatus> {
    Ok(Json(state.app.unseal(req.share.expose(), &src).await?))
}

#[utoipa::path(post, path = "/api/v1/auth/login", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody), (status = 423, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    Source(src): Source,
    JsonBody(req): JsonBody<LoginRequest>,
) -> ApiResult<LoginResponse> {
    cofre_core::names::check_text("username", &req.username, 64)?;
    Ok(Json(
        state
            .app
            .accounts()
            .login(crate::services::accounts::LoginInput {
                username: &req.username,
                password: req.password.expose(),
                totp_code: req.totp_code.as_deref(),
                source: &src,
                aggregated: false,
            })
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/auth/logout", security(("bearer" = [])), responses((status = 200, body = OkResponse)))]
async fn logout(State(state): State<AppState>, Auth(who): Auth) -> ApiResult<OkResponse> {
    state.app.accounts().logout(&who).await?;
    ok()
}

#[utoipa::path(get, path = "/api/v1/auth/whoami", security(("bearer" = [])), responses((status = 200, body = UserInfo)))]
async fn whoami(State(state): State<AppState>, Auth(who): Auth) -> ApiResult<UserInfo> {
    Ok(Json(state.app.accounts().whoami(&who).await?))
}

#[utoipa::path(post, path = "/api/v1/auth/password", security(("bearer" = [])), request_body = ChangePasswordRequest,
    responses((status = 200, body = ChangePasswordResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 423, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn change_password(
    State(state): State<AppState>,
    Auth(who): Auth,
    Source(src): Source,
    JsonBody(req): JsonBody<ChangePasswordRequest>,
) -> ApiResult<ChangePasswordResponse> {
    Ok(Json(
        state
            .app
            .accounts()
            .change_password(
                &who,
                req.current_password.expose(),
                req.new_password.expose(),
                &src,
            )
            .await?,
    ))
}

/// Replacing a TOTP in use checks the password and a current code as a login does (the same
/// per-address back-off: 429, and the account lock: 423).
#[utoipa::path(post, path = "/api/v1/auth/totp/enroll", security(("bearer" = [])), request_body = TotpEnrollRequest,
    responses((status = 200, body = TotpEnrollResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 423, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn totp_enroll(
    State(state): State<AppState>,
    Auth(who): Auth,
    Source(src): Source,
    JsonBody(req): JsonBody<TotpEnrollRequest>,
) -> ApiResult<TotpEnrollResponse> {
    Ok(Json(
        state.app.accounts().enroll_totp(&who, &req, &src).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/auth/totp/confirm", security(("bearer" = [])), request_body = TotpConfirmRequest,
    responses((status = 200, body = OkResponse)))]
async fn totp_confirm(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<TotpConfirmRequest>,
) -> ApiResult<OkResponse> {
    state.app.accounts().confirm_totp(&who, &req.code).await?;
    ok()
}

#[utoipa::path(get, path = "/api/v1/users", security(("bearer" = [])), params(PageQuery), responses((status = 200, body = Page<UserInfo>)))]
async fn list_users(
    State(state): State<AppState>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Page<UserInfo>> {
    Ok(Json(
        state
            .app
            .accounts()
            .list_users(&who, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// 202 when the new user would widen access (a deciding role, a named group) and a second admin
/// must approve: the one-time password then goes to that admin.
#[utoipa::path(post, path = "/api/v1/users", security(("bearer" = [])), request_body = CreateUserRequest,
    responses((status = 200, body = CreateUserResponse), (status = 202, body = HeldResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<CreateUserRequest>,
) -> Result<Response, Error> {
    Ok(applied(
        state
            .app
            .accounts()
            .create_user(
                &who,
                &req.username,
                &req.role,
                &req.groups,
                req.email.as_deref(),
            )
            .await?,
    ))
}

/// Gaining admin or approver is held for a second admin (202).
#[utoipa::path(put, path = "/api/v1/users/{username}/role", security(("bearer" = [])), params(("username" = String, Path)), request_body = SetRoleRequest,
    responses((status = 200, body = UserInfo), (status = 202, body = HeldResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_role(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(username): Path<String>,
    JsonBody(req): JsonBody<SetRoleRequest>,
) -> Result<Response, Error> {
    Ok(applied(
        state
            .app
            .accounts()
            .set_role(&who, &username, &req.role)
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/users/{username}", security(("bearer" = [])), params(("username" = String, Path)), responses((status = 200, body = UserInfo)))]
async fn get_user(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(username): Path<String>,
) -> ApiResult<UserInfo> {
    Ok(Json(state.app.accounts().get_user(&who, &username).await?))
}

#[utoipa::path(post, path = "/api/v1/users/{username}/unlock", security(("bearer" = [])), params(("username" = String, Path)), responses((status = 200, body = OkResponse)))]
async fn unlock_user(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(username): Path<String>,
) -> ApiResult<OkResponse> {
    state.app.accounts().unlock_user(&who, &username).await?;
    ok()
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct ResetPasswordResponse {
    /// Shown once, when it was not sent to the user by email.
    #[serde(skip_serializing_if = "Option::is_none")]
    one_time_password: Option<SecretString>,
    /// With mail configured and an address on the account: where the password went instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    sent_to: Option<String>,
}

/// Another user's reset is held for a second admin (202). The one-time password goes to the
/// user's email when mail is configured and the user has an address; else to the approving
/// admin (or, alone, the admin who asked), once.
#[utoipa::path(post, path = "/api/v1/users/{username}/reset-password", security(("bearer" = [])), params(("username" = String, Path)),
    responses((status = 200, body = ResetPasswordResponse), (status = 202, body = HeldResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn reset_password(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(username): Path<String>,
) -> Result<Response, Error> {
    let a = state.app.accounts().reset_password(&who, &username).await?;
    Ok(applied(match a {
        crate::services::governance::Applied::Done(r) => {
            crate::services::governance::Applied::Done(match r {
                crate::services::accounts::Reset::Shown(p) => ResetPasswordResponse {
                    one_time_password: Some(p),
                    sent_to: None,
                },
                crate::services::accounts::Reset::Sent(to) => ResetPasswordResponse {
                    one_time_password: None,
                    sent_to: Some(to),
                },
            })
        }
        crate::services::governance::Applied::Held(c) => {
            crate::services::governance::Applied::Held(c)
        }
    }))
}

#[utoipa::path(get, path = "/api/v1/groups", security(("bearer" = [])), params(PageQuery), responses((status = 200, body = Page<GroupInfo>)))]
async fn list_groups(
    State(state): State<AppState>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Page<GroupInfo>> {
    Ok(Json(
        state
            .app
            .accounts()
            .list_groups(&who, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/groups", security(("bearer" = [])), request_body = CreateGroupRequest, responses((status = 200, body = GroupInfo)))]
async fn create_group(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<CreateGroupRequest>,
) -> ApiResult<GroupInfo> {
    Ok(Json(
        state.app.accounts().create_group(&who, &req.name).await?,
    ))
}

/// To a group that a policy or an approval level names: held for a second admin (202).
#[utoipa::path(post, path = "/api/v1/groups/{name}/members", security(("bearer" = [])), params(("name" = String, Path)), request_body = GroupMemberRequest,
    responses((status = 200, body = OkResponse), (status = 202, body = HeldResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn add_group_member(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<GroupMemberRequest>,
) -> Result<Response, Error> {
    let a = state
        .app
        .accounts()
        .add_group_member(&who, &name, &req.username)
        .await?
        .map(|_| Ok(OkResponse { ok: true }))?;
    Ok(applied(a))
}

#[utoipa::path(get, path = "/api/v1/targets", security(("bearer" = [])), params(PageQuery), responses((status = 200, body = Page<TargetInfo>)))]
async fn list_targets(
    State(state): State<AppState>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Page<TargetInfo>> {
    Ok(Json(
        state
            .app
            .vault()
            .list_targets(&who, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/targets", security(("bearer" = [])), request_body = CreateTargetRequest, responses((status = 200, body = TargetInfo)))]
async fn create_target(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<CreateTargetRequest>,
) -> ApiResult<TargetInfo> {
    Ok(Json(state.app.vault().create_target(&who, &req).await?))
}

#[utoipa::path(get, path = "/api/v1/targets/{name}", security(("bearer" = [])), params(("name" = String, Path)), responses((status = 200, body = TargetInfo)))]
async fn get_target(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> ApiResult<TargetInfo> {
    Ok(Json(state.app.vault().get_target(&who, &name).await?))
}

#[utoipa::path(get, path = "/api/v1/targets/{name}/credentials", security(("bearer" = [])), params(("name" = String, Path), PageQuery), responses((status = 200, body = Page<CredentialInfo>)))]
async fn list_credentials(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Page<CredentialInfo>> {
    Ok(Json(
        state
            .app
            .vault()
            .list_credentials(&who, &name, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/targets/{name}/credentials", security(("bearer" = [])), params(("name" = String, Path)), request_body = CreateCredentialRequest, responses((status = 200, body = CredentialInfo)))]
async fn create_credential(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<CreateCredentialRequest>,
) -> ApiResult<CredentialInfo> {
    Ok(Json(
        state
            .app
            .vault()
            .put_credential(
                &who,
                &name,
                &req.account,
                req.password.as_ref(),
                req.private_key.as_ref(),
                false,
            )
            .await?,
    ))
}

#[utoipa::path(put, path = "/api/v1/targets/{name}/credentials/{account}", security(("bearer" = [])), params(("name" = String, Path), ("account" = String, Path)), request_body = UpdateCredentialRequest, responses((status = 200, body = CredentialInfo)))]
async fn update_credential(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((name, account)): Path<(String, String)>,
    JsonBody(req): JsonBody<UpdateCredentialRequest>,
) -> ApiResult<CredentialInfo> {
    Ok(Json(
        state
            .app
            .vault()
            .put_credential(
                &who,
                &name,
                &account,
                req.password.as_ref(),
                req.private_key.as_ref(),
                true,
            )
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/targets/{name}/credentials/{account}/history", security(("bearer" = [])), params(("name" = String, Path), ("account" = String, Path), PageQuery), responses((status = 200, body = Page<CredentialVersionInfo>)))]
async fn credential_history(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((name, account)): Path<(String, String)>,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Page<CredentialVersionInfo>> {
    Ok(Json(
        state
            .app
            .vault()
            .list_credential_versions(&who, &name, &account, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/targets/{name}/credentials/{account}/reveal", security(("bearer" = [])), params(("name" = String, Path), ("account" = String, Path)), request_body = RevealRequest,
    responses((status = 200, body = RevealResponse), (status = 403, body = ErrorBody)))]
async fn reveal(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((name, account)): Path<(String, String)>,
    JsonBody(req): JsonBody<RevealRequest>,
) -> ApiResult<RevealResponse> {
    Ok(Json(
        state
            .app
            .vault()
            .reveal(&who, &name, &account, &req)
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/policies", security(("bearer" = [])), params(PageQuery), responses((status = 200, body = Page<PolicyInfo>)))]
async fn list_policies(
    State(state): State<AppState>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Page<PolicyInfo>> {
    Ok(Json(
        state
            .app
            .vault()
            .list_policies(&who, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// A policy that grants what its group's policies do not yet grant is held for a second admin (202).
#[utoipa::path(post, path = "/api/v1/policies", security(("bearer" = [])), request_body = CreatePolicyRequest,
    responses((status = 200, body = PolicyInfo), (status = 202, body = HeldResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_policy(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<CreatePolicyRequest>,
) -> Result<Response, Error> {
    Ok(applied(state.app.vault().create_policy(&who, &req).await?))
}

/// One policy, with the `version` an edit names.
#[utoipa::path(get, path = "/api/v1/policies/{name}", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = PolicyInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_policy(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> ApiResult<PolicyInfo> {
    Ok(Json(state.app.vault().get_policy(&who, &name).await?))
}

/// Replaces every option of a policy (the body of `POST /api/v1/policies`), made from
/// `?version=` (the policy's `version` as read; 409 `stale_version` if it changed since). An
/// edit that widens access, old against new, is held for a second admin (202); one that only
/// narrows applies at once.
#[utoipa::path(put, path = "/api/v1/policies/{name}", security(("bearer" = [])), params(("name" = String, Path), PolicyVersionQuery), request_body = CreatePolicyRequest,
    responses((status = 200, body = PolicyInfo), (status = 202, body = HeldResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_policy(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<PolicyVersionQuery>,
    JsonBody(req): JsonBody<CreatePolicyRequest>,
) -> Result<Response, Error> {
    Ok(applied(
        state
            .app
            .vault()
            .update_policy(&who, &name, q.version.as_deref(), &req)
            .await?,
    ))
}

/// Removing a policy that restricted another of its group is held for a second admin (202).
#[utoipa::path(delete, path = "/api/v1/policies/{name}", security(("bearer" = [])), params(("name" = String, Path)),
    responses((status = 200, body = OkResponse), (status = 202, body = HeldResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_policy(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    let a = state
        .app
        .vault()
        .delete_policy(&who, &name)
        .await?
        .map(|_| Ok(OkResponse { ok: true }))?;
    Ok(applied(a))
}

/// The trail, oldest first, searched by actor, action, object and time (all optional).
#[utoipa::path(get, path = "/api/v1/audit", security(("bearer" = [])), params(AuditQuery), responses((status = 200, body = Page<AuditEntryInfo>)))]
async fn list_audit(
    State(state): State<AppState>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<AuditQuery>,
) -> ApiResult<Page<AuditEntryInfo>> {
    Ok(Json(state.app.audit().search_audit(&who, &q).await?))
}

/// The entries that meet the same conditions as `GET /api/v1/audit` (`limit` and `cursor` are
/// not used), streamed as CSV (RFC 4180): a header row, then one row per entry, oldest first.
/// A cell that starts with `=`, `+`, `-`, `@`, a tab or CR gets a leading `'` so a spreadsheet
/// does not read it as a formula. The export is audited (`audit.export`) before any row is sent.
#[utoipa::path(get, path = "/api/v1/audit/export.csv", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, content_type = "text/csv", body = String), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn export_audit_csv(
    State(state): State<AppState>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<AuditQuery>,
) -> Result<Response, Error> {
    let rows = state.app.audit().export_audit_csv(&who, &q).await?;
    let body = axum::body::Body::from_stream(futures::stream::unfold(rows, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Ok((
        [
            ("content-type", "text/csv; charset=utf-8"),
            (
                "content-disposition",
                "attachment; filename=\"cofre-audit.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/audit/verify", security(("bearer" = [])), responses((status = 200, body = AuditVerifyResponse)))]
async fn verify_audit(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<AuditVerifyResponse> {
    Ok(Json(state.app.audit().verify_audit(&who).await?))
}

/// Every session's recording checked against the audit trail (`audit verify --recordings`).
#[utoipa::path(get, path = "/api/v1/audit/verify/recordings", security(("bearer" = [])), responses((status = 200, body = RecordingsVerification), (status = 403, body = ErrorBody)))]
async fn verify_recordings(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<RecordingsVerification> {
    Ok(Json(state.app.audit().verify_recordings(&who).await?))
}

/// A key for someone else's account is held for a second admin (202); one's own applies at once.
#[utoipa::path(post, path = "/api/v1/users/{username}/keys", security(("bearer" = [])), params(("username" = String, Path)), request_body = AddSshKeyRequest,
    responses((status = 200, body = SshKeyInfo), (status = 202, body = HeldResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn add_ssh_key(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(username): Path<String>,
    JsonBody(req): JsonBody<AddSshKeyRequest>,
) -> Result<Response, Error> {
    Ok(applied(
        state
            .app
            .accounts()
            .add_ssh_key(&who, &username, &req.public_key)
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/users/{username}/keys", security(("bearer" = [])), params(("username" = String, Path)), responses((status = 200, body = Page<SshKeyInfo>)))]
async fn list_ssh_keys(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(username): Path<String>,
) -> ApiResult<Page<SshKeyInfo>> {
    // A user has a handful of keys: one page always holds them all.
    Ok(Json(Page {
        items: state.app.accounts().list_ssh_keys(&who, &username).await?,
        next_cursor: None,
    }))
}

#[utoipa::path(get, path = "/api/v1/sessions", security(("bearer" = [])), params(SessionQuery), responses((status = 200, body = Page<SessionInfo>)))]
async fn list_sessions(
    State(state): State<AppState>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<SessionQuery>,
) -> ApiResult<Page<SessionInfo>> {
    Ok(Json(
        state
            .app
            .sessions()
            .list_sessions(&who, q.live.unwrap_or(false), q.limit, q.cursor.as_deref())
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/sessions/{id}/kill", security(("bearer" = [])), params(("id" = String, Path)), request_body = KillSessionRequest, responses((status = 200, body = OkResponse), (status = 409, body = ErrorBody)))]
async fn kill_session(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<KillSessionRequest>,
) -> ApiResult<OkResponse> {
    state
        .app
        .sessions()
        .kill_session(&who, &id, req.reason.as_deref())
        .await?;
    ok()
}

/// The recording, streamed: asciicast v2 (`asciinema play` reads it) by default, or with
/// `format=raw` exactly the bytes of one stream (`stream=output`, the default, or `input`).
#[utoipa::path(get, path = "/api/v1/sessions/{id}/recording", security(("bearer" = [])), params(("id" = String, Path), RecordingQuery), responses((status = 200, content_type = "application/x-asciicast", body = String), (status = 200, content_type = "application/octet-stream", body = Vec<u8>)))]
async fn session_recording(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<RecordingQuery>,
) -> Result<Response, Error> {
    let format = q.format.unwrap_or_default();
    let frames = state
        .app
        .sessions()
        .export_recording(&who, &id, format, q.stream)
        .await?;
    let body =
        axum::body::Body::from_stream(futures::stream::unfold(frames, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
    let content_type = match format {
        RecordingFormat::Asciicast => "application/x-asciicast",
        RecordingFormat::Raw => "application/octet-stream",
    };
    Ok(([("content-type", content_type)], body).into_response())
}

/// Whether the recording is whole, in order, untruncated, and as the `session.end` audit entry
/// says it ended; where not, the frame at which it is not.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/recording/verify", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 200, body = RecordingVerification)))]
async fn verify_recording(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult<RecordingVerification> {
    Ok(Json(
        state.app.sessions().verify_recording(&who, &id).await?,
    ))
}
