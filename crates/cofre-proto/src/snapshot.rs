//! Snapshots of the whole instance (Orbit): create (a job with progress), list, verify, prune.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Starts a snapshot. It runs as a job: poll `GET /api/v1/snapshots/jobs/{id}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotRequest {
    /// `manual` (default) or `pre-maintenance`; `daily` is the schedule's own.
    pub reason: Option<String>,
    /// Include `DATA_DIR/recordings` (default true).
    pub include_recordings: Option<bool>,
}

/// One snapshot, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotInfo {
    pub id: String,
    pub created_at: String,
    /// `daily`, `pre-maintenance` or `manual`.
    pub reason: String,
    /// Bytes of the snapshot file.
    pub size: u64,
    /// SHA-256 of the snapshot file, hex.
    pub sha256: String,
    pub duration_ms: u64,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// `key-file` (restore needs the instance's master.key) or `shamir` (restore needs k shares).
    pub seal: String,
    pub members: usize,
    pub verified_at: Option<String>,
    /// Outcome of the last verification (none yet: null).
    pub verified: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotList {
    /// Newest first.
    pub snapshots: Vec<SnapshotInfo>,
    /// Where the snapshot files are (an offline restore reads them from there).
    pub directory: String,
    /// When the daily snapshot is taken and what retention keeps (from the server's
    /// configuration: read here, changed only there).
    pub schedule: SnapshotSchedule,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotSchedule {
    /// `[snapshots] time`: `HH:MM` in `time_zone`, or `off`.
    pub time: String,
    /// `[instance] time_zone`.
    pub time_zone: String,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    /// The next daily snapshot (UTC); none when the schedule is off.
    pub next_at: Option<String>,
}

/// A snapshot being taken (or finished).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotJob {
    pub id: String,
    /// `database`, `files`, `finishing`, `done` or `failed`.
    pub phase: String,
    pub bytes_done: u64,
    /// Known once the database copy is made and the files listed (0 before).
    pub bytes_total: u64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub snapshot: Option<SnapshotInfo>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotMember {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// Byte range of the member in the snapshot file.
    pub offset: u64,
    pub end: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotVerifyResponse {
    pub id: String,
    /// Every member's checksum matched, every frame decrypted, and the database copy opens.
    pub ok: bool,
    /// The damaged member (`header` and `manifest` name those parts).
    pub damaged_member: Option<String>,
    pub error: Option<String>,
    /// The manifest (empty when it could not be read).
    pub members: Vec<SnapshotMember>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneSnapshotsRequest {
    /// Only say what would be removed.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PruneSnapshotsResponse {
    pub dry_run: bool,
    /// Removed (or, in a dry run, what would be).
    pub removed: Vec<SnapshotInfo>,
    pub kept: Vec<String>,
}
