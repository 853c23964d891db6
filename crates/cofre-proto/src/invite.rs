//! Invitations for third parties: an e-mail address invited to a recorded web terminal on named
//! targets and accounts for a window.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// Where the one-time link goes, e.g. `ana@vendor.example`.
    pub email: String,
    /// Target names, comma-separated.
    pub targets: String,
    /// Account names, comma-separated: the invitee may open `targets × accounts`.
    pub accounts: String,
    /// RFC 3339 (seconds may be left out: `2026-12-03T13:00Z`), or `now` (the default).
    #[serde(default)]
    pub from: Option<String>,
    /// RFC 3339, after `from`; at most 31 days after it.
    pub until: String,
    pub reason: String,
    /// Every session waits until an admin or the inviter approves it.
    #[serde(default)]
    pub approve_each_session: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvitationInfo {
    pub id: String,
    pub email: String,
    pub inviter: String,
    pub targets: Vec<String>,
    pub accounts: Vec<String>,
    pub reason: String,
    pub starts_at: String,
    pub ends_at: String,
    pub approve_each_session: bool,
    /// `upcoming`, `sent` (link not used yet), `open` (the invitee enrolled), `expired` or
    /// `revoked`.
    pub status: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeemed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    /// Sessions waiting for an approval (`--approve-each-session`; shown by `invite show`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_sessions: Vec<InvitationSessionInfo>,
}

/// A session of an `--approve-each-session` invitation, asked for by the invitee.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvitationSessionInfo {
    pub id: String,
    pub target: String,
    pub account: String,
    /// The invitee's address.
    pub source: String,
    /// `pending`, `approved`, `denied`, `used` or `expired`.
    pub state: String,
    pub asked_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideInvitationSessionRequest {
    /// Why; required (at least 3 characters) to deny.
    #[serde(default)]
    pub comment: Option<String>,
}

/// The answer (HTTP 202) to a user's invitation that its policy puts under approval: an access
/// request of access `invite`; nothing is kept or sent until it is approved.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvitationRequested {
    /// Always true: the invitation waits for its approvers.
    pub requested: bool,
    pub request: crate::requests::RequestInfo,
}

/// What `POST /api/v1/invitations` answers with 202: held for a second admin (an admin's,
/// dual control) or waiting in the approval engine (a user's, by policy).
// Only documents the 202 answer (the server writes either struct itself): its size is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum InvitationPending {
    Held(crate::HeldResponse),
    Requested(InvitationRequested),
}
