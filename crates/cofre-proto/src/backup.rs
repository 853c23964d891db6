//! Backups to the customer's own storage: targets, jobs, runs and their status.

use crate::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Adds a backup target. Exactly one of `dir`, `ssh` or `s3` says what kind it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBackupTargetRequest {
    pub name: String,
    /// Whose backups the target holds: `credentials` (break-glass files) or `system` (system,
    /// snapshots, recordings). A caller who may keep only one kind gets that one; otherwise,
    /// when absent, the target's first job decides. Jobs of the other duty are refused on it.
    #[serde(default)]
    pub duty: Option<String>,
    /// An absolute directory on the server (a mounted NAS, a removable disk).
    #[serde(default)]
    pub dir: Option<String>,
    /// `user@host:/absolute/path`, reached with rsync over SSH.
    #[serde(default)]
    pub ssh: Option<String>,
    /// SSH port (default 22).
    #[serde(default)]
    pub port: Option<u16>,
    /// The SSH private key (OpenSSH format); sealed in the vault.
    #[serde(default)]
    pub ssh_private_key: Option<SecretString>,
    /// The host's keys in known_hosts format; without them the keys are pinned at first contact.
    #[serde(default)]
    pub known_hosts: Option<String>,
    /// `s3://bucket/prefix` of an S3-compatible bucket.
    #[serde(default)]
    pub s3: Option<String>,
    /// The S3 endpoint URL (e.g. https://s3.example.com); AWS when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The S3 region (default us-east-1).
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Sealed in the vault.
    #[serde(default)]
    pub secret_access_key: Option<SecretString>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupTargetInfo {
    pub name: String,
    /// `dir`, `ssh` or `s3`.
    pub kind: String,
    /// `credentials` or `system`; none until its first job (when not given at creation).
    pub duty: Option<String>,
    pub location: String,
    pub port: Option<u16>,
    pub endpoint: Option<String>,
    /// SHA-256 fingerprints of the pinned SSH host keys (empty until first contact).
    pub host_keys: Vec<String>,
    pub created_at: String,
    pub created_by: String,
    /// When a run or write test last succeeded on it.
    pub last_ok_at: Option<String>,
    /// When and why one last failed.
    pub last_error_at: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupTestResult {
    pub target: String,
    /// True when a probe file was written, read back and deleted.
    pub ok: bool,
    pub error: Option<String>,
    pub duration_ms: u64,
    /// Host keys pinned by this contact (SSH targets seen for the first time).
    pub pinned_host_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBackupJobRequest {
    /// Default: `KIND-TARGET`.
    #[serde(default)]
    pub name: Option<String>,
    /// `recordings`, `credentials`, `snapshots` or `system`.
    pub kind: String,
    pub target: String,
    /// `every 30m`, `every 1h`, `every 2d`, `daily 03:00` (UTC), or `manual`.
    pub schedule: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupRunInfo {
    pub id: i64,
    pub job: String,
    /// `manual`, `schedule`, `breakglass` (a new break-glass file).
    pub reason: String,
    /// `running`, `ok` or `failed`.
    pub status: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub files_sent: u64,
    pub bytes_sent: u64,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    /// While running: how far it got.
    pub progress: Option<BackupProgress>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct BackupProgress {
    /// `probing`, `preparing`, `sending`.
    pub phase: String,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupJobInfo {
    pub name: String,
    pub kind: String,
    /// `credentials` (kind credentials) or `system` (system, snapshots, recordings).
    pub duty: String,
    pub target: String,
    pub schedule: String,
    pub created_at: String,
    pub last_success: Option<BackupRunInfo>,
    pub last_failure: Option<BackupRunInfo>,
    /// The run in progress, if any.
    pub running: Option<BackupRunInfo>,
    /// When the schedule runs it next (UTC), `None` for manual jobs.
    pub next_run: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupStatus {
    pub targets: Vec<BackupTargetInfo>,
    pub jobs: Vec<BackupJobInfo>,
}
