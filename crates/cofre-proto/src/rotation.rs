//! Credential rotation and the password policy for the secrets Cofre makes.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PasswordPolicyInfo {
    pub length: u32,
    /// Each appears at least once: `upper`, `lower`, `digit`, `symbol`.
    pub classes: Vec<String>,
    /// Characters never used.
    pub exclude: String,
    /// What a generated password is worth, at least.
    pub entropy_bits: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPasswordPolicyRequest {
    /// 12 to 128.
    pub length: u32,
    /// Comma-separated: `upper,lower,digit,symbol`.
    pub classes: String,
    #[serde(default)]
    pub exclude: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// `chpasswd`, `passwd` or `key`; default: the credential's rotation setting, else `key` for
    /// a private key and `passwd` for a password.
    #[serde(default)]
    pub method: Option<String>,
    /// The account that changes it (`ACCOUNT` or `TARGET/ACCOUNT`, on the same target), e.g. root
    /// for `chpasswd`.
    #[serde(default, rename = "as")]
    pub as_account: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RotationResult {
    pub target: String,
    pub account: String,
    /// `rotated` (the new version is current), `failed` (the old one still is), `waiting` (a
    /// session on the credential is live: it runs when that ends), `recovered` (a rotation cut
    /// short was resolved), `unresolved` (neither secret logs in; kept pending and alerted).
    pub outcome: String,
    /// The current version after the attempt.
    pub version: i64,
    /// The version the attempt stored, if it got that far.
    #[serde(default)]
    pub attempted_version: Option<i64>,
    pub method: String,
    pub trigger: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRotationRequest {
    /// A duration such as `30d`, or none for no schedule.
    #[serde(default)]
    pub every: Option<String>,
    #[serde(default)]
    pub after_reveal: bool,
    #[serde(default)]
    pub after_session: bool,
    #[serde(default)]
    pub after_grant: bool,
    /// `chpasswd`, `passwd`, `key` or `command`.
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default, rename = "as")]
    pub as_account: Option<String>,
    /// A duration: how often the vaulted secret is checked against the target (drift).
    #[serde(default)]
    pub verify_every: Option<String>,
    /// A command template (TOML: `command`, `stdin`, `[[prompt]]` `expect`/`answer`,
    /// `success_output`) for the `command` method; it is stored as the credential's next template
    /// version. Without it, `command` keeps running the latest stored version.
    #[serde(default)]
    pub template: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RotationInfo {
    pub target: String,
    pub account: String,
    pub kind: String,
    pub version: i64,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default, rename = "as")]
    pub as_account: Option<String>,
    #[serde(default)]
    pub every: Option<String>,
    pub after_reveal: bool,
    pub after_session: bool,
    pub after_grant: bool,
    #[serde(default)]
    pub verify_every: Option<String>,
    #[serde(default)]
    pub last_at: Option<String>,
    #[serde(default)]
    pub last_trigger: Option<String>,
    #[serde(default)]
    pub last_outcome: Option<String>,
    #[serde(default)]
    pub last_reason: Option<String>,
    /// When it is next due (schedule, a trigger waiting, or a retry).
    #[serde(default)]
    pub next_at: Option<String>,
    /// Why it waits, if it is due: e.g. a live session.
    #[serde(default)]
    pub waiting_for: Option<String>,
    #[serde(default)]
    pub pending_version: Option<i64>,
    pub failures: i64,
    #[serde(default)]
    pub last_verify_at: Option<String>,
    #[serde(default)]
    pub last_verify_outcome: Option<String>,
    /// The command template version a `command` rotation runs with.
    #[serde(default)]
    pub template_version: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RotationListQuery {
    /// Only credentials whose last attempt did not succeed.
    #[serde(default)]
    pub failed: Option<bool>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyResult {
    pub target: String,
    pub account: String,
    pub version: i64,
    /// `ok` (the vaulted secret logs in) or `drift` (it does not).
    pub outcome: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// Where a reconcile account is set, the rotation that reset a drifted credential.
    #[serde(default)]
    pub reconciled: Option<RotationResult>,
}
