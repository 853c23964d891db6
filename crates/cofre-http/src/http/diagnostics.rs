//! Diagnostics: the redacted configuration and the server's log tail. Handlers only translate;
//! the rules live in `services::diagnostics`.

use super::ApiResult;
use crate::extract::{Auth, QueryParams};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use cofre_proto::{DiagnosticsConfig, DiagnosticsLogs, DiagnosticsLogsQuery, ErrorBody};

/// What the server runs with: version, mode, addresses, the database without its password, and
/// the configuration file's settings with every secret replaced by `[redacted]`.
#[utoipa::path(get, path = "/api/v1/diagnostics/config", security(("bearer" = [])),
    responses((status = 200, body = DiagnosticsConfig), (status = 403, body = ErrorBody)))]
pub(super) async fn config(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<DiagnosticsConfig> {
    Ok(Json(state.app.orbit().diagnostics_config(&who).await?))
}

/// The last lines of the server's log, oldest first.
#[utoipa::path(get, path = "/api/v1/diagnostics/logs", security(("bearer" = [])), params(DiagnosticsLogsQuery),
    responses((status = 200, body = DiagnosticsLogs), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn logs(
    State(state): State<AppState>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<DiagnosticsLogsQuery>,
) -> ApiResult<DiagnosticsLogs> {
    Ok(Json(
        state.app.orbit().diagnostics_logs(&who, q.lines).await?,
    ))
}
