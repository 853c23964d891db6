//! SIEM destinations: where the audit trail is forwarded as syslog, and how far each has got.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Adds a SIEM destination; it receives the whole audit trail from its first entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSiemRequest {
    pub name: String,
    /// `tcp://HOST:PORT` (RFC 6587 octet counting), `tls://HOST:PORT` (RFC 5425) or
    /// `udp://HOST:PORT` (RFC 5426).
    pub syslog: String,
    /// `rfc5424` (structured data, the entry as JSON) or `cef`.
    pub format: String,
    /// PEM of the CA that signed a `tls://` destination's certificate (the system's web roots
    /// when absent). Only for `tls://`.
    #[serde(default)]
    pub ca_cert: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SiemInfo {
    pub name: String,
    pub syslog: String,
    pub format: String,
    /// True when a CA certificate was given for TLS.
    pub ca_cert: bool,
    pub created_at: String,
    pub created_by: String,
}

/// Where one destination is in the audit trail.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SiemDestinationStatus {
    pub name: String,
    pub syslog: String,
    pub format: String,
    /// The last audit sequence delivered (0: none yet).
    pub last_delivered_seq: i64,
    /// Entries written but not yet delivered.
    pub lag: i64,
    pub last_ok_at: Option<String>,
    pub last_error_at: Option<String>,
    pub last_error: Option<String>,
    /// When the current outage began (absent while it delivers).
    pub failing_since: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SiemStatus {
    /// The newest audit sequence.
    pub audit_head_seq: i64,
    pub destinations: Vec<SiemDestinationStatus>,
}
