//! Orbit's instance commands: the instance's type, disabling and enabling the application.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetInstanceTypeRequest {
    /// `production`, `contingency`, `testing` or `demo`. A demo or contingency instance becomes
    /// production only by promotion.
    #[serde(rename = "type")]
    pub instance_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableApplicationRequest {
    /// Why: every refused API call and gateway session shows it.
    pub reason: String,
}

/// Whether the application answers, and if not, since when, by whom and why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplicationState {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// The type to promote to; only `production`.
    pub to: String,
    /// Without it nothing changes: the answer is the drift report alone.
    #[serde(default)]
    pub confirm: bool,
}

/// One thing a production instance should not have.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DriftFinding {
    /// `sample_users`, `sample_targets`, `sample_policies`, `initial_admin_password`,
    /// `relaxed_setting` or `allow_everywhere`.
    pub kind: String,
    pub detail: String,
}

/// The drift report, and whether the promotion happened (only with `confirm`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PromoteReport {
    pub promoted: bool,
    pub from: String,
    pub to: String,
    pub drift: Vec<DriftFinding>,
}

/// A release file the server verified and keeps (`DATA_DIR/releases/ID.release`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReleaseInfo {
    /// `VERSION-SHA` (the first 12 hex digits of the binary's SHA-256).
    pub id: String,
    pub version: String,
    pub binary_sha256: String,
    /// The oldest version this release upgrades from.
    pub upgrades_from: String,
    pub notes: String,
    /// Size of the release file.
    pub bytes: i64,
    pub uploaded_at: String,
    pub uploaded_by: String,
}

/// `GET /api/v1/nodes`: a server process that ran on this database.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeInfo {
    /// `--node-name` (default: the host name).
    pub name: String,
    /// The data dir's node id (what leases name).
    pub node_id: String,
    /// Its heartbeat is at most three `[cluster] heartbeat_seconds` old.
    pub alive: bool,
    /// The node that answered this request.
    pub this_node: bool,
    pub api_address: String,
    pub ssh_address: String,
    pub version: String,
    pub started_at: String,
    pub last_heartbeat: String,
    /// Live gateway and web-terminal sessions at its last heartbeat.
    pub live_sessions: u64,
}
