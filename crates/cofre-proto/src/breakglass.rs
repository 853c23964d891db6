//! Break the glass: the key ceremony, share delivery, status and export.

use crate::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Starts a key ceremony: a new epoch whose key is split among `custodians`, any `threshold` of
/// whom can open its files.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CeremonyRequest {
    /// Distinct existing users, one share each (2 to 16).
    pub custodians: Vec<String>,
    /// How many shares open a file (2 to the number of custodians).
    pub threshold: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CustodianInfo {
    pub username: String,
    /// The number of this custodian's share.
    pub share_index: u8,
    /// When the custodian fetched the share; the server kept no copy after that.
    pub delivered_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EpochInfo {
    pub epoch: u32,
    /// The epoch's age recipient (`age1...`): files of this epoch are encrypted to it.
    pub recipient: String,
    pub threshold: u8,
    pub shares: u8,
    pub created_at: String,
    pub created_by: String,
    /// When the last custodian fetched their share; files are written under the newest closed epoch.
    pub closed_at: Option<String>,
    /// When a later ceremony replaced it before it closed.
    pub abandoned_at: Option<String>,
    pub custodians: Vec<CustodianInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CeremonyResponse {
    /// The instance the shares belong to (its keyring id).
    pub instance: String,
    pub epoch: EpochInfo,
    /// Epochs that had not closed and were abandoned by this ceremony.
    pub abandoned: Vec<u32>,
}

/// A custodian's share, handed out exactly once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShareResponse {
    pub instance: String,
    pub epoch: u32,
    pub share_index: u8,
    pub threshold: u8,
    pub shares: u8,
    /// One printable line, `cofre-bg-...`: keep it offline (paper, a safe). It is not stored anywhere.
    pub share: SecretString,
    /// Whether this delivery was the last one, closing the ceremony.
    pub ceremony_closed: bool,
}

/// The last break-glass file written by the server, or the last failure.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WrittenFile {
    pub path: String,
    pub epoch: u32,
    pub written_at: String,
    pub credentials: u64,
    pub versions: u64,
    /// `change`, `schedule` or `start`.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BreakGlassStatus {
    pub instance: String,
    /// The epoch new files are written under (the newest closed one), if any.
    pub active_epoch: Option<u32>,
    /// Newest first.
    pub epochs: Vec<EpochInfo>,
    /// Where files are written: DATA_DIR/breakglass and the configured directory, if any.
    pub directories: Vec<String>,
    pub last_file: Option<WrittenFile>,
    /// The last failure to write a file (cleared by the next success).
    pub last_error: Option<String>,
}
