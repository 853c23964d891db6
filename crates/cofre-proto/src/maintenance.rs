//! Maintenance windows: propose, decide, cancel, and the steps a window went through.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposeMaintenanceRequest {
    /// The id of an uploaded release (`cofre release list`); it is verified again now.
    pub release: String,
    /// When the window opens (RFC 3339).
    pub start: String,
    /// How long it lasts, e.g. `2h`, `90m` (at most 24h).
    pub duration: String,
    #[serde(default)]
    pub notes: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideMaintenanceRequest {
    /// Why; required (at least 3 characters) to deny.
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MaintenanceDecision {
    pub approver: String,
    /// `approve` or `deny`.
    pub verdict: String,
    pub comment: String,
    pub at: String,
}

/// One step of a window (also the `data` of each Server-Sent Event; its `id` is `seq`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MaintenanceEvent {
    /// 1, 2, ... within the window.
    pub seq: i64,
    pub at: String,
    /// `proposed`, `approved`, `scheduled`, `denied`, `cancelled`, `expired`, `sessions_warned`,
    /// `sessions_refused`, `sessions_ended`, `snapshot`, `release_verified`, `installed`,
    /// `switch_over`, `finished`.
    pub step: String,
    /// `ok`, `failed` or `info`.
    pub outcome: String,
    pub detail: String,
    /// The window's state after this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MaintenanceInfo {
    pub id: String,
    /// `proposed`, `scheduled`, `running`, `done`, `failed`, `rolled_back`, `denied`,
    /// `cancelled` or `expired`.
    pub state: String,
    pub release: String,
    pub version: String,
    pub notes: String,
    pub proposer: String,
    pub starts_at: String,
    pub ends_at: String,
    pub created_at: String,
    pub required_approvals: u32,
    pub decisions: Vec<MaintenanceDecision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_comment: Option<String>,
    /// Every step so far (only in `show`; empty in lists).
    #[serde(default)]
    pub events: Vec<MaintenanceEvent>,
}
