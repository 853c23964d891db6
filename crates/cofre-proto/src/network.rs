//! Network policy: the networks each listener accepts, and the trusted proxies.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Sets one listener's allow-list (an admin: the customer's networks; the vendor's operator in
/// saas and private-saas: the vendor's own). A change that lets in more is held for a second admin.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetNetworkRequest {
    /// `api`, `gateway` or `external`.
    pub listener: String,
    /// CIDRs (IPv4 or IPv6) or single addresses; empty lets everyone in.
    pub allow: Vec<String>,
    /// Proxies whose `X-Forwarded-For` (API) and PROXY protocol v2 header (both) are believed;
    /// absent keeps the current list.
    #[serde(default)]
    pub trusted_proxies: Option<Vec<String>>,
    /// Apply even though the change refuses the caller's own current address.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ListenerNetworkInfo {
    pub listener: String,
    /// The customer's networks (empty, with `vendor_allow` empty: everyone).
    pub allow: Vec<String>,
    /// The vendor's own networks (saas).
    pub vendor_allow: Vec<String>,
    pub trusted_proxies: Vec<String>,
    pub updated_at: Option<String>,
    pub updated_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NetworkPolicyInfo {
    pub listeners: Vec<ListenerNetworkInfo>,
    /// The caller's address as the API sees it (after trusted proxies).
    pub your_address: String,
}
