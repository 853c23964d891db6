//! Access requests, approvals and grants.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccessRequest {
    pub target: String,
    pub account: String,
    /// `session` and/or `reveal`; by default every access that policy puts under approval.
    #[serde(default)]
    pub access: Option<Vec<String>>,
    /// Why (a ticket number); shown to the approvers, kept in the audit trail.
    pub reason: String,
    /// `now` (default) or an RFC 3339 time.
    #[serde(default)]
    pub start: Option<String>,
    /// How long the grant lasts, e.g. `2h`, `90m` (default 1h, at most the policy's maximum).
    #[serde(default)]
    pub duration: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LevelInfo {
    pub group: String,
    pub required: u32,
    pub approvals: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DecisionInfo {
    pub approver: String,
    /// 1-based.
    pub level: u32,
    /// `approve` or `deny`.
    pub verdict: String,
    pub comment: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReviewInfo {
    pub by: String,
    pub at: String,
    pub comment: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RequestInfo {
    pub id: String,
    pub requester: String,
    pub target: String,
    pub account: String,
    pub access: Vec<String>,
    pub reason: String,
    /// The policy that asked for approval.
    pub policy: String,
    /// pending, approved, denied, expired, cancelled or revoked.
    pub state: String,
    /// While pending: the level (1-based) waiting for decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_on_level: Option<u32>,
    pub levels: Vec<LevelInfo>,
    pub decisions: Vec<DecisionInfo>,
    pub emergency: bool,
    /// Emergency access not yet reviewed.
    pub review_pending: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewInfo>,
    pub created_at: String,
    /// Undecided by then, the request expires.
    pub decide_by: String,
    pub starts_at: String,
    pub ends_at: String,
    /// Whether the grant lets the requester in right now.
    pub grant_active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
    /// For access `invite`: the invitation asked for (its approval keeps it and mails the link;
    /// `target` and `account` are then its comma-separated lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation: Option<crate::InviteRequest>,
    /// Where the request can be seen (`GET` it with a token, or `cofre request show ID`).
    pub link: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RequestListQuery {
    /// Only requests waiting for a decision by the caller.
    #[serde(default)]
    pub pending: Option<bool>,
    /// Everyone's requests (admin and auditor); otherwise one's own and those one may decide.
    #[serde(default)]
    pub all: Option<bool>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}
