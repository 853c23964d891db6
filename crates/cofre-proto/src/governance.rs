//! Dual control: change requests (a widening change held for a second admin) and instance facts.

use crate::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChangeInfo {
    pub id: String,
    /// `policy.create`, `policy.delete`, `group.add_member`, `user.create`, `user.set_role`,
    /// `user.reset_password`, `user.ssh_key_add`.
    pub kind: String,
    /// What the change does, for people.
    pub diff: String,
    /// The proposed change as the API would take it.
    pub payload: serde_json::Value,
    pub proposer: String,
    /// `pending`, `approved`, `denied`, `expired`.
    pub state: String,
    pub created_at: String,
    pub decide_by: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub comment: String,
}

/// The answer (HTTP 202) of an endpoint whose change waits for a second admin.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeldResponse {
    /// Always true: the change has not taken effect.
    pub held: bool,
    pub change: ChangeInfo,
}

/// The answer to approving a change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChangeDecision {
    pub change: ChangeInfo,
    /// A password reset or a new user: the one-time password, shown once, to the approving
    /// admin only (never to the proposer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_password: Option<SecretString>,
    /// A password reset with mail configured: the one-time password went to this address, to
    /// the user alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_to: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideChangeRequest {
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangeListQuery {
    /// Only changes still waiting for a decision.
    #[serde(default)]
    pub pending: Option<bool>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoleRequest {
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstanceInfo {
    pub version: String,
    pub mode: String,
    /// `production`, `contingency`, `testing` or `demo`.
    #[serde(rename = "type")]
    pub instance_type: String,
    /// What every CLI answer and SSH login shows (contingency and demo instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner: Option<String>,
    pub application: crate::ApplicationState,
    /// `required`, `when-possible` or `off` (`[governance] dual_control`).
    pub dual_control: String,
    pub cooling_off_days: u32,
    pub admins: Vec<String>,
    pub pending_changes: i64,
    /// What needs attention, e.g. a single admin (dual control cannot apply).
    pub warnings: Vec<String>,
    /// The next maintenance window not yet closed (proposed, scheduled or running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_window: Option<NextWindow>,
}

/// The next maintenance window, as `instance show` names it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NextWindow {
    pub id: String,
    pub state: String,
    pub version: String,
    pub starts_at: String,
    pub ends_at: String,
}
