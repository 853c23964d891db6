//! Vendor support grants: a support user's request, the customer admins' decisions, and the
//! activity under a grant.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SupportRequest {
    /// `diagnostics`, `orbit` or `audit`, comma-separated for more than one.
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
