//! Live session control (watch, block input) and the emergency panel (terminate every live
//! session, lock the instance down).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockSessionRequest {
    /// Why: shown to the session's user and recorded in the audit trail.
    pub reason: String,
}

/// The first event of a watch (`event: start`): the terminal as the user has it now. Then
/// `event: output` events whose data is the bytes the user saw (base64), `event: missed` (data:
/// how many chunks a slow watcher missed) and a last `event: end` when the session ends.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WatchStart {
    pub session: String,
    pub cols: u32,
    pub rows: u32,
    /// Whether this watch counts as the session's moderator.
    pub moderator: bool,
    pub moderated: bool,
    pub input_blocked: bool,
}

/// What every emergency action asks: the admin's own current TOTP code and why.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmergencyRequest {
    /// The acting admin's current TOTP code (6 digits).
    pub totp_code: String,
    /// Why: recorded, and shown to whoever is refused or ended.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TerminateAllResponse {
    /// The live sessions told to end (on this node).
    pub terminated: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiftLockdownRequest {
    /// Why it may be lifted now.
    pub reason: String,
}

/// Whether the instance is locked down: then the API, the console and the gateway refuse
/// everyone but admins.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LockdownStatus {
    pub locked_down: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
