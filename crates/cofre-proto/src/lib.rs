//! Wire types of Cofre's HTTP API (`/api/v1`), shared by the server and the CLI.
//!
//! Requests reject unknown fields, so a typo in a client is an error rather than a silently ignored
//! setting. Secret values travel in [`SecretString`], which zeroizes on drop and never prints itself.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub mod breakglass;
pub mod requests;
pub use breakglass::*;
pub mod backup;
pub use backup::*;
pub mod governance;
pub use governance::*;
pub mod snapshot;
pub use snapshot::*;
pub mod offboarding;
pub use offboarding::*;
pub mod rotation;
pub use rotation::*;
pub mod siem;
pub use siem::*;
pub mod instance;
pub use instance::*;
pub mod invite;
pub use invite::*;
pub mod sso;
pub use sso::*;
pub mod live;
pub use live::*;
pub mod network;
pub use network::*;
pub mod maintenance;
pub use maintenance::*;
pub mod support;
pub use support::*;

pub const API_PREFIX: &str = "/api/v1";
/// Largest accepted request body. Secrets and keys fit easily; anything bigger is refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const DEFAULT_PAGE_LIMIT: u32 = 100;
pub const MAX_PAGE_LIMIT: u32 = 1000;

/// A secret on the wire: serialized as a plain string, never shown by `Debug`, wiped on drop.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, format = Password)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: String) -> Self {
        Self(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(***)")
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

// codes:begin
/// Every `code` an error body can carry (snake_case on the wire). Clients match on these; a new
/// one is added here, an existing one is never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    AccountDisabled,
    AccountLocked,
    AlreadyDecided,
    AlreadyDisabled,
    AlreadyLockedDown,
    AlreadyReviewed,
    ApplicationDisabled,
    ApprovalRequired,
    BackupRunning,
    BackupTargetInUse,
    BadBody,
    BodyTooLarge,
    Conflict,
    CoolingOff,
    CredentialDisabled,
    EmergencyNotAllowed,
    Forbidden,
    HostKeyMismatch,
    InstanceLockedDown,
    Internal,
    InvalidCredentials,
    InvalidField,
    InvalidQuery,
    KeyRemoved,
    LastAdmin,
    LockdownNeedsSecondAdmin,
    LoginDelayed,
    MaintenanceNotice,
    MaintenanceWindow,
    MalformedJson,
    MethodNotAllowed,
    NetworkRefused,
    NetworkSelfLockout,
    NoApprovalNeeded,
    NoBreakglassEpoch,
    NoShare,
    NotAGrant,
    NotAllowed,
    NotAnApproverHere,
    NotDisabled,
    NotEmergency,
    NotFound,
    NotLive,
    NotLockedDown,
    NotPending,
    NotRequester,
    OutsidePolicyHours,
    OwnChange,
    OwnRequest,
    PasswordChangeRequired,
    PolicyDenied,
    PolicyWithoutLevels,
    PromoteRequired,
    ProposerNotAdmin,
    RecordingUnavailable,
    RecordingUnreadable,
    ReleaseBadSignature,
    ReleaseKeysMissing,
    ReleaseTampered,
    ReleaseTooOld,
    ReleaseUnreadable,
    ReleaseUnsigned,
    RequestClosed,
    RotationInProgress,
    Sealed,
    SessionLocked,
    SessionNotLocked,
    ShareAlreadyDelivered,
    ShareDuplicate,
    ShareInvalid,
    ShareWrongKeyring,
    SharesDoNotOpen,
    SnapshotRunning,
    SsoRefused,
    StaleVersion,
    TargetDisabled,
    TotpInvalid,
    TotpNotEnrolled,
    TotpNotEnrolling,
    TotpRequired,
    Unauthenticated,
    UnsealFailed,
    UnsupportedMediaType,
    UserHasHistory,
    UserReferenced,
}

impl ErrorCode {
    /// Every code, for the tests that hold the wire names to [`ErrorCode::as_str`].
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::AccountDisabled,
        ErrorCode::AccountLocked,
        ErrorCode::AlreadyDecided,
        ErrorCode::AlreadyDisabled,
        ErrorCode::AlreadyLockedDown,
        ErrorCode::AlreadyReviewed,
        ErrorCode::ApplicationDisabled,
        ErrorCode::ApprovalRequired,
        ErrorCode::BackupRunning,
        ErrorCode::BackupTargetInUse,
        ErrorCode::BadBody,
        ErrorCode::BodyTooLarge,
        ErrorCode::Conflict,
        ErrorCode::CoolingOff,
        ErrorCode::CredentialDisabled,
        ErrorCode::EmergencyNotAllowed,
        ErrorCode::Forbidden,
        ErrorCode::HostKeyMismatch,
        ErrorCode::InstanceLockedDown,
        ErrorCode::Internal,
        ErrorCode::InvalidCredentials,
        ErrorCode::InvalidField,
        ErrorCode::InvalidQuery,
        ErrorCode::KeyRemoved,
        ErrorCode::LastAdmin,
        ErrorCode::LockdownNeedsSecondAdmin,
        ErrorCode::LoginDelayed,
        ErrorCode::MaintenanceNotice,
        ErrorCode::MaintenanceWindow,
        ErrorCode::MalformedJson,
        ErrorCode::MethodNotAllowed,
        ErrorCode::NetworkRefused,
        ErrorCode::NetworkSelfLockout,
        ErrorCode::NoApprovalNeeded,
        ErrorCode::NoBreakglassEpoch,
        ErrorCode::NoShare,
        ErrorCode::NotAGrant,
        ErrorCode::NotAllowed,
        ErrorCode::NotAnApproverHere,
        ErrorCode::NotDisabled,
        ErrorCode::NotEmergency,
        ErrorCode::NotFound,
        ErrorCode::NotLive,
        ErrorCode::NotLockedDown,
        ErrorCode::NotPending,
        ErrorCode::NotRequester,
        ErrorCode::OutsidePolicyHours,
        ErrorCode::OwnChange,
        ErrorCode::OwnRequest,
        ErrorCode::PasswordChangeRequired,
        ErrorCode::PolicyDenied,
        ErrorCode::PolicyWithoutLevels,
        ErrorCode::PromoteRequired,
        ErrorCode::ProposerNotAdmin,
        ErrorCode::RecordingUnavailable,
        ErrorCode::RecordingUnreadable,
        ErrorCode::ReleaseBadSignature,
        ErrorCode::ReleaseKeysMissing,
        ErrorCode::ReleaseTampered,
        ErrorCode::ReleaseTooOld,
        ErrorCode::ReleaseUnreadable,
        ErrorCode::ReleaseUnsigned,
        ErrorCode::RequestClosed,
        ErrorCode::RotationInProgress,
        ErrorCode::Sealed,
        ErrorCode::SessionLocked,
        ErrorCode::SessionNotLocked,
        ErrorCode::ShareAlreadyDelivered,
        ErrorCode::ShareDuplicate,
        ErrorCode::ShareInvalid,
        ErrorCode::ShareWrongKeyring,
        ErrorCode::SharesDoNotOpen,
        ErrorCode::SnapshotRunning,
        ErrorCode::SsoRefused,
        ErrorCode::StaleVersion,
        ErrorCode::TargetDisabled,
        ErrorCode::TotpInvalid,
        ErrorCode::TotpNotEnrolled,
        ErrorCode::TotpNotEnrolling,
        ErrorCode::TotpRequired,
        ErrorCode::Unauthenticated,
        ErrorCode::UnsealFailed,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::UserHasHistory,
        ErrorCode::UserReferenced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AccountDisabled => "account_disabled",
            ErrorCode::AccountLocked => "account_locked",
            ErrorCode::AlreadyDecided => "already_decided",
            ErrorCode::AlreadyDisabled => "already_disabled",
            ErrorCode::AlreadyLockedDown => "already_locked_down",
            ErrorCode::AlreadyReviewed => "already_reviewed",
            ErrorCode::ApplicationDisabled => "application_disabled",
            ErrorCode::ApprovalRequired => "approval_required",
            ErrorCode::BackupRunning => "backup_running",
            ErrorCode::BackupTargetInUse => "backup_target_in_use",
            ErrorCode::BadBody => "bad_body",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::Conflict => "conflict",
            ErrorCode::CoolingOff => "cooling_off",
            ErrorCode::CredentialDisabled => "credential_disabled",
            ErrorCode::EmergencyNotAllowed => "emergency_not_allowed",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::HostKeyMismatch => "host_key_mismatch",
            ErrorCode::InstanceLockedDown => "instance_locked_down",
            ErrorCode::Internal => "internal",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::KeyRemoved => "key_removed",
            ErrorCode::LastAdmin => "last_admin",
            ErrorCode::LockdownNeedsSecondAdmin => "lockdown_needs_second_admin",
            ErrorCode::LoginDelayed => "login_delayed",
            ErrorCode::MaintenanceNotice => "maintenance_notice",
            ErrorCode::MaintenanceWindow => "maintenance_window",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NetworkRefused => "network_refused",
            ErrorCode::NetworkSelfLockout => "network_self_lockout",
            ErrorCode::NoApprovalNeeded => "no_approval_needed",
            ErrorCode::NoBreakglassEpoch => "no_breakglass_epoch",
            ErrorCode::NoShare => "no_share",
            ErrorCode::NotAGrant => "not_a_grant",
            ErrorCode::NotAllowed => "not_allowed",
            ErrorCode::NotAnApproverHere => "not_an_approver_here",
            ErrorCode::NotDisabled => "not_disabled",
            ErrorCode::NotEmergency => "not_emergency",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NotLive => "not_live",
            ErrorCode::NotLockedDown => "not_locked_down",
            ErrorCode::NotPending => "not_pending",
            ErrorCode::NotRequester => "not_requester",
            ErrorCode::OutsidePolicyHours => "outside_policy_hours",
            ErrorCode::OwnChange => "own_change",
            ErrorCode::OwnRequest => "own_request",
            ErrorCode::PasswordChangeRequired => "password_change_required",
            ErrorCode::PolicyDenied => "policy_denied",
            ErrorCode::PolicyWithoutLevels => "policy_without_levels",
            ErrorCode::PromoteRequired => "promote_required",
            ErrorCode::ProposerNotAdmin => "proposer_not_admin",
            ErrorCode::RecordingUnavailable => "recording_unavailable",
            ErrorCode::RecordingUnreadable => "recording_unreadable",
            ErrorCode::ReleaseBadSignature => "release_bad_signature",
            ErrorCode::ReleaseKeysMissing => "release_keys_missing",
            ErrorCode::ReleaseTampered => "release_tampered",
            ErrorCode::ReleaseTooOld => "release_too_old",
            ErrorCode::ReleaseUnreadable => "release_unreadable",
            ErrorCode::ReleaseUnsigned => "release_unsigned",
            ErrorCode::RequestClosed => "request_closed",
            ErrorCode::RotationInProgress => "rotation_in_progress",
            ErrorCode::Sealed => "sealed",
            ErrorCode::SessionLocked => "session_locked",
            ErrorCode::SessionNotLocked => "session_not_locked",
            ErrorCode::ShareAlreadyDelivered => "share_already_delivered",
            ErrorCode::ShareDuplicate => "share_duplicate",
            ErrorCode::ShareInvalid => "share_invalid",
            ErrorCode::ShareWrongKeyring => "share_wrong_keyring",
            ErrorCode::SharesDoNotOpen => "shares_do_not_open",
            ErrorCode::SnapshotRunning => "snapshot_running",
            ErrorCode::SsoRefused => "sso_refused",
            ErrorCode::StaleVersion => "stale_version",
            ErrorCode::TargetDisabled => "target_disabled",
            ErrorCode::TotpInvalid => "totp_invalid",
            ErrorCode::TotpNotEnrolled => "totp_not_enrolled",
            ErrorCode::TotpNotEnrolling => "totp_not_enrolling",
            ErrorCode::TotpRequired => "totp_required",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::UnsealFailed => "unseal_failed",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::UserHasHistory => "user_has_history",
            ErrorCode::UserReferenced => "user_referenced",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
// codes:end

/// Every error response: a stable machine `code`, a human `message`, and the offending `field` if any.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// One of [`ErrorCode`]'s values; kept a string here so that a client older than the server
    /// still reads an error whose code it does not know.
    #[schema(value_type = ErrorCode)]
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// One page of a list. Pass `next_cursor` back as `cursor` to get the next page; `None` means the end.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A search of the audit trail (`GET /api/v1/audit`): every condition given must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Items per page, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (of the same search).
    pub cursor: Option<String>,
    /// Who acted, exactly; a trailing `*` matches a prefix.
    pub actor: Option<String>,
    /// The action, exactly (`credential.reveal`); a trailing `*` matches a prefix (`auth.*`).
    pub action: Option<String>,
    /// What it acted on, exactly; a trailing `*` matches a prefix.
    pub object: Option<String>,
    /// Entries at or after this time: RFC 3339, or `YYYY-MM-DD` (midnight UTC).
    pub since: Option<String>,
    /// Entries before this time: RFC 3339, or `YYYY-MM-DD` (midnight UTC).
    pub until: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub sealed: bool,
    pub version: String,
    /// Only while this process is a maintenance window's new version on trial: its self-check,
    /// `checking`, `ok: ...` or `failed: ...` (the supervisor commits it only after `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SealStatus {
    pub sealed: bool,
    /// `key_file` (unseals itself at start) or `shamir` (needs `threshold` of `shares`).
    pub seal_kind: String,
    pub keyring_id: String,
    pub threshold: Option<u8>,
    pub shares: Option<u8>,
    /// Distinct valid shares given so far in this unseal attempt.
    pub progress: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsealRequest {
    pub share: SecretString,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: SecretString,
    /// Six digits from the authenticator app, when TOTP is enrolled.
    #[serde(default)]
    pub totp_code: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    pub token: SecretString,
    pub expires_at: String,
    /// The password was a one-time password: this token may only change it (`POST /auth/password`).
    pub password_change_required: bool,
    /// An SSO login that is not done yet (`[sso] require_totp`): `totp`, this token may only give
    /// the TOTP code (`POST /api/v1/auth/sso/totp`); `totp_enrolment`, it may only enrol TOTP
    /// (`/auth/totp/enroll`, `/auth/totp/confirm`), then log in again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
    pub user: UserInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: SecretString,
    pub new_password: SecretString,
}

/// After a password change every older token of the user is void. A caller that logged in with a
/// one-time password gets a fresh session token here, so it need not log in (and pass TOTP) again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChangePasswordResponse {
    pub ok: bool,
    pub token: Option<SecretString>,
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TotpEnrollResponse {
    /// Base32 secret for manual entry in an authenticator app.
    pub secret_base32: SecretString,
    pub otpauth_uri: SecretString,
}

/// Starting TOTP enrolment. Replacing a TOTP already in use needs the password and a current code:
/// a stolen token alone must not move the second factor to another device.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpEnrollRequest {
    #[serde(default)]
    pub password: Option<SecretString>,
    /// A current code of the TOTP being replaced.
    #[serde(default)]
    pub totp_code: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirmRequest {
    pub code: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserInfo {
    pub username: String,
    /// admin, approver, user, auditor, operator or support.
    pub role: String,
    pub groups: Vec<String>,
    pub totp_enabled: bool,
    pub locked: bool,
    pub must_change_password: bool,
    pub created_at: String,
    /// Where notifications about access requests go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Disabled (offboarded): no token, key or password of the user works.
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub username: String,
    pub role: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// For notifications about access requests.
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEmailRequest {
    /// The new address; null removes it.
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateUserResponse {
    pub user: UserInfo,
    /// Shown once; the user must change it at first login.
    pub one_time_password: SecretString,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupInfo {
    pub name: String,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupRequest {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupMemberRequest {
    pub username: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TargetInfo {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub protocol: String,
    pub tags: Vec<String>,
    pub created_at: String,
    /// Disabled: no reveal and no session on it until enabled again.
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTargetRequest {
    pub name: String,
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    /// Only `ssh` for now.
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CredentialInfo {
    pub target: String,
    pub account: String,
    /// `password` or `private_key`.
    pub kind: String,
    pub version: i64,
    pub updated_at: String,
    pub updated_by: String,
    /// Disabled (itself or its target): no reveal and no session.
    #[serde(default)]
    pub disabled: bool,
}

/// Exactly one of `password` and `private_key`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCredentialRequest {
    pub account: String,
    #[serde(default)]
    pub password: Option<SecretString>,
    #[serde(default)]
    pub private_key: Option<SecretString>,
}

/// A new version of a credential: exactly one of `password` and `private_key`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCredentialRequest {
    #[serde(default)]
    pub password: Option<SecretString>,
    #[serde(default)]
    pub private_key: Option<SecretString>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CredentialVersionInfo {
    pub version: i64,
    pub kind: String,
    pub created_at: String,
    pub created_by: String,
    pub current: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealRequest {
    /// Required when the deciding policy's outcome is `justify`; always recorded in the audit trail.
    #[serde(default)]
    pub reason: Option<String>,
    /// An older version, for recovery; the current one when absent.
    #[serde(default)]
    pub version: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevealResponse {
    pub target: String,
    pub account: String,
    pub kind: String,
    pub version: i64,
    pub secret: SecretString,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyInfo {
    pub name: String,
    pub group: String,
    pub targets: Vec<String>,
    pub allow: Vec<String>,
    pub outcome: String,
    pub created_at: String,
    /// What the policy says now, as a short hash of its stored form: an edit
    /// (`PUT /api/v1/policies/{name}?version=...`) names the version it was made from, and one
    /// made from an older version is refused (409 `stale_version`).
    #[serde(default)]
    pub version: String,
    #[serde(flatten)]
    pub limits: PolicyLimits,
}

/// `PUT /api/v1/policies/{name}`: the version the edit was made from (required).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PolicyVersionQuery {
    /// The policy's `version` as read (`policy list`, `GET /api/v1/policies/{name}`).
    #[serde(default)]
    pub version: Option<String>,
}

/// A policy's limits and approval terms; every part is optional. Stored as this JSON too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyLimits {
    /// Approval levels for `approve`, in order: `leads:1,security:1` (group:approvers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<String>,
    /// Longest grant, e.g. `4h`, `90m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
    /// Hours of the day in the instance's time zone, e.g. `08:00-20:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<String>,
    /// Days of the week, e.g. `mon-fri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<String>,
    /// First day it applies, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Last day it applies, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Allows emergency access (no approval; every approver notified; reviewed afterwards).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub emergency: bool,
    /// Sessions wait for a moderator (an admin, or an approver of the user's groups) to watch,
    /// and are held while none does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub moderated: bool,
    /// The source networks (CIDRs) the policy applies from; outside them it does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicyRequest {
    pub name: String,
    pub group: String,
    /// `*`, `tag:TAG` or target names.
    pub targets: Vec<String>,
    /// `session` and/or `reveal`.
    pub allow: Vec<String>,
    /// `allow`, `justify` or `approve`.
    pub outcome: String,
    /// Approval levels for `approve`, in order: `leads:1,security:1` (group:approvers).
    #[serde(default)]
    pub levels: Option<String>,
    /// Longest grant, e.g. `4h`, `90m`.
    #[serde(default)]
    pub max_duration: Option<String>,
    /// Hours of the day in the instance's time zone, e.g. `08:00-20:00`.
    #[serde(default)]
    pub hours: Option<String>,
    /// Days of the week, e.g. `mon-fri`.
    #[serde(default)]
    pub days: Option<String>,
    /// First day it applies, `YYYY-MM-DD`.
    #[serde(default)]
    pub from: Option<String>,
    /// Last day it applies, `YYYY-MM-DD`.
    #[serde(default)]
    pub until: Option<String>,
    /// Allows emergency access (no approval; every approver notified; reviewed afterwards).
    #[serde(default)]
    pub emergency: bool,
    /// Sessions wait for a moderator (an admin, or an approver of the user's groups) to watch,
    /// and are held while none does.
    #[serde(default)]
    pub moderated: bool,
    /// Source networks (CIDRs or addresses, IPv4 or IPv6) the policy applies from; outside them
    /// it does not match. Empty: from anywhere.
    #[serde(default)]
    pub networks: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryInfo {
    pub seq: i64,
    pub ts: String,
    pub actor: String,
    pub action: String,
    pub object: String,
    pub outcome: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditBreak {
    pub seq: i64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditVerifyResponse {
    pub intact: bool,
    pub entries_checked: u64,
    pub first_broken: Option<AuditBreak>,
    /// The newest record of the chain's head kept outside the database, which the chain was
    /// checked against (none yet on a new instance).
    #[serde(default)]
    pub anchor: Option<AuditAnchorInfo>,
}

/// `audit verify --recordings`: every session's recording checked against its `session.end`
/// audit entry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecordingsVerification {
    /// Recordings read.
    pub checked: u64,
    /// Whole and as the trail says they ended (`intact`, `intact_unchained`, `ended_by_restart`).
    pub intact: u64,
    /// Still being recorded: what is written so far is intact.
    pub live: u64,
    /// Every recording that is not whole or cannot be read, in the order checked.
    pub problems: Vec<RecordingProblem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecordingProblem {
    pub session: String,
    /// `tampered` or `unreadable`.
    pub status: String,
    pub message: String,
}

/// Where the chain's head was last seen outside the database.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditAnchorInfo {
    pub seq: i64,
    pub written_at: String,
    /// The anchor file or the snapshot that recorded it.
    pub source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OkResponse {
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSshKeyRequest {
    /// One line of an OpenSSH public key file, e.g. `ssh-ed25519 AAAA... alice@laptop`.
    pub public_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SshKeyInfo {
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    pub public_key: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    pub id: String,
    pub username: String,
    pub target: String,
    pub account: String,
    /// `shell`, `exec` or `sftp` (the gateway), `web-shell` (the console's terminal) or
    /// `external` (an invitee's terminal on the external listener; its user is `invitee:ID`).
    pub kind: String,
    /// The client's address.
    pub source: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    /// Output bytes recorded.
    pub bytes: i64,
    pub live: bool,
    /// Live and its input blocked by an admin (`session lock`).
    #[serde(default)]
    pub input_blocked: bool,
    /// Live under a `--moderated` policy.
    #[serde(default)]
    pub moderated: bool,
    /// Live, moderated, and held now: no moderator watches.
    #[serde(default)]
    pub held: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SessionQuery {
    /// Only sessions that are still running. An approver (who may not list sessions) is
    /// answered, with `live=true`, exactly the live moderated sessions it may moderate.
    #[serde(default)]
    pub live: Option<bool>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// How a recording is exported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordingFormat {
    /// asciicast v2 (what `asciinema play` reads): text, with bytes that are not UTF-8 repaired.
    #[default]
    Asciicast,
    /// Exactly the bytes of one stream.
    Raw,
}

/// Which bytes a raw export gives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordingStream {
    /// What the user's terminal received.
    #[default]
    Output,
    /// What the user typed or sent.
    Input,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecordingQuery {
    /// `asciicast` (the default) or `raw`.
    #[param(inline)]
    pub format: Option<RecordingFormat>,
    /// With `format=raw`: `output` (the default) or `input`.
    #[param(inline)]
    pub stream: Option<RecordingStream>,
}

/// What `recording verify` found.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecordingVerification {
    pub session: String,
    /// `intact`: whole, in order, untruncated, as `session.end` says it ended.
    /// `ended_by_restart`: the gateway stopped mid-session (a crash or kill); every frame up to
    /// then is intact, a torn last frame is what the stop cut off. `live`: still being recorded;
    /// what is written so far is intact. `intact_unchained`: a recording of the previous format,
    /// whose frames are checked one by one (that format cannot show a cut at a frame boundary).
    /// `tampered`: see `problem`.
    pub status: String,
    /// `chained` or `previous`.
    pub format: String,
    /// Frames that authenticated, in order.
    pub frames: u64,
    /// The chain hash after the last of them.
    pub hash: Option<String>,
    /// What the `session.end` audit entry says, when it says it.
    pub expected_frames: Option<u64>,
    pub expected_hash: Option<String>,
    /// The frame (counted from 0) where the problem is.
    pub problem_frame: Option<u64>,
    /// In words, for people.
    pub message: String,
    pub end_reason: Option<String>,
    pub output_bytes: u64,
    pub input_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillSessionRequest {
    /// Shown to the user whose session ends, and recorded.
    #[serde(default)]
    pub reason: Option<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod error_code_tests {
    use super::ErrorCode;

    /// The wire name (serde) and `as_str` agree for every code, and each is snake_case, unique.
    #[test]
    fn codes_are_snake_case_and_serialise_as_their_names() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            let wire = serde_json::to_string(code).unwrap();
            assert_eq!(wire, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&wire).unwrap();
            assert_eq!(back, *code);
            assert!(code
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'));
            assert!(seen.insert(code.as_str()), "{code} twice");
        }
    }
}
