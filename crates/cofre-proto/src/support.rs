//! Vendor support grants: a support user's request, the customer admins' decisions, and the
//! activity under a grant.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SupportRequest {
    /// `diagnostics`, `orbit`, `audit` or `host`, comma-separated for more than one.
    pub scope: String,
    pub reason: String,
    /// The vendor's ticket reference, e.g. `TICKET-881`.
    pub ticket: String,
    /// How long the grant runs once approved, e.g. `2h`, `90m` (default 8h, at most
    /// `[support] max_hours`).
    #[serde(default)]
    pub duration: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideSupportRequest {
    /// Why; required (at least 3 characters) to deny.
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SupportDecisionInfo {
    pub approver: String,
    /// `approve` or `deny`.
    pub verdict: String,
    pub comment: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SupportGrantInfo {
    pub id: String,
    pub requester: String,
    pub scopes: Vec<String>,
    pub reason: String,
    pub ticket: String,
    /// `pending`, `approved`, `denied`, `expired`, `revoked` or `ended`.
    pub state: String,
    pub required_approvals: u32,
    pub duration_seconds: i64,
    /// Undecided by then, the request expires.
    pub decide_by: String,
    pub created_at: String,
    /// The grant's window, once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    pub decisions: Vec<SupportDecisionInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_comment: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SupportListQuery {
    /// Only the requests waiting for a decision.
    #[serde(default)]
    pub pending: Option<bool>,
    /// Items per page, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /api/v1/diagnostics/config`: what the server runs with, every secret taken out.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiagnosticsConfig {
    pub version: String,
    pub mode: String,
    pub instance_type: String,
    pub data_dir: String,
    pub listen: String,
    pub ssh_listen: String,
    /// `sqlite` or `postgres`, and the address without its password.
    pub database: String,
    pub time_zone: String,
    /// The configuration file read at start, if any.
    pub config_file: Option<String>,
    /// That file's settings as they were read, secrets (passwords, tokens, the secret parts of
    /// URLs) replaced by `[redacted]`; null without a file (every setting at its default).
    #[schema(value_type = Option<Object>)]
    pub settings: Option<serde_json::Value>,
}

/// `GET /api/v1/diagnostics/logs`: the last lines of the server's log, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiagnosticsLogs {
    pub lines: Vec<String>,
    /// Lines logged since the server started (the tail holds at most `kept`).
    pub total: u64,
    pub kept: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiagnosticsLogsQuery {
    /// How many of the last lines, 1 to 2000 (default 200).
    pub lines: Option<u32>,
}
