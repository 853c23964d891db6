//! Taking access back: disabling users, removing keys (the rest are bodiless calls).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableUserRequest {
    /// Why (recorded in the audit trail and shown with the user), e.g. "left the company".
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveSshKeyRequest {
    /// As `cofre user key list` prints it (`SHA256:...`).
    pub fingerprint: String,
}
