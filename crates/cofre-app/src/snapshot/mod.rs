//! Snapshots of a whole instance: the file format ([`format`]), what goes in, where they live,
//! which ones retention keeps, and the offline restore. The server side (jobs, schedule, audit)
//! is `services::snapshots`.
//!
//! A snapshot is `SNAPSHOT_DIR/ID.cofresnap` plus `ID.json` (its listing metadata: reason, size,
//! SHA-256, last verification). The metadata is next to the file, not in the database: a
//! restored instance must not list snapshots taken after the moment it came from, and the
//! database copy inside a snapshot must not describe snapshots that are not in it.
//!
//! Crash safety: a snapshot is written as `.ID.cofresnap.partial` (with its scratch dir
//! `.ID.work`), fsynced, its `ID.json` written, then renamed to `ID.cofresnap` and the directory
//! fsynced. Only `*.cofresnap` files with their `.json` are listed or used; dot files are left
//! from a crash and removed by the next create.

pub mod format;
mod ordered;
pub mod restore;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const EXTENSION: &str = "cofresnap";

/// `[snapshots]` in the server config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Local time of the daily snapshot, `HH:MM` (default `03:00`); `off` turns it off.
    pub time: String,
    /// Newest snapshot of each of this many days is kept (default 7).
    pub keep_daily: u32,
    /// Newest snapshot of each of this many ISO weeks is kept (default 4).
    pub keep_weekly: u32,
    /// Where snapshots go (default `DATA_DIR/snapshots`); an absolute path, ideally other storage.
    pub directory: Option<PathBuf>,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            time: "03:00".into(),
            keep_daily: 7,
            keep_weekly: 4,
            directory: None,
        }
    }
}

impl SnapshotConfig {
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        if self.time != "off" && parse_hhmm(&self.time).is_none() {
            return Err(crate::config::ConfigError::Invalid {
                field: "snapshots.time",
                reason: format!(
                    "{:?} is not a time: use HH:MM (24 h, in [instance] time_zone) or \"off\"",
                    self.time
                ),
            });
        }
        if self.keep_daily == 0 && self.keep_weekly == 0 {
            return Err(crate::config::ConfigError::Invalid {
                field: "snapshots.keep_daily",
                reason: "keep_daily and keep_weekly cannot both be 0".into(),
            });
        }
        if let Some(d) = &self.directory {
            if !d.is_absolute() {
                return Err(crate::config::ConfigError::Invalid {
                    field: "snapshots.directory",
                    reason: "must be an absolute path".into(),
                });
            }
        }
        Ok(())
    }

    pub fn dir(&self, data_dir: &Path) -> PathBuf {
        self.directory
            .clone()
            .unwrap_or_else(|| data_dir.join("snapshots"))
    }
}

/// Minutes after midnight of `HH:MM` (the one grammar, `cofre_core::when`).
pub fn parse_hhmm(s: &str) -> Option<u16> {
    cofre_core::when::parse_time_of_day("snapshots.time", s, false).ok()
}

/// `ID.json`: what `snapshot list` shows without opening the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub id: String,
    pub created_at: String,
    pub reason: String,
    pub size: u64,
    pub sha256: String,
    pub duration_ms: u64,
    pub database: String,
    /// `key-file` or `shamir`: what a restore will ask for.
    pub seal: String,
    pub members: usize,
    /// Last verification: when, and whether it passed.
    pub verified_at: Option<String>,
    pub verified: Option<bool>,
    /// The audit chain's head when the snapshot was taken: an anchor outside the database
    /// (`services::anchor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<crate::services::anchor::Anchor>,
}

pub fn snapshot_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.{EXTENSION}"))
}

pub fn meta_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// A snapshot id: UTC time to the second and 4 random hex digits, so ids sort by time.
pub fn new_id(now: time::OffsetDateTime) -> String {
    let r: [u8; 2] = rand_bytes();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        hex::encode(r)
    )
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let u = uuid::Uuid::new_v4();
    for (i, x) in b.iter_mut().enumerate() {
        *x = u.as_bytes()[i % 16];
    }
    b
}

/// Ids are what [`new_id`] makes: nothing that could leave the snapshot directory.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Every complete snapshot in `dir`, newest first. A file without its metadata (or the reverse)
/// is a crash leftover and not listed.
pub fn list(dir: &Path) -> std::io::Result<Vec<SnapshotMeta>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(id) = name.strip_suffix(&format!(".{EXTENSION}")) else {
            continue;
        };
        if name.starts_with('.') || !valid_id(id) {
            continue;
        }
        let Ok(text) = std::fs::read(meta_path(dir, id)) else {
            continue;
        };
        if let Ok(meta) = serde_json::from_slice::<SnapshotMeta>(&text) {
            if meta.id == id {
                out.push(meta);
            }
        }
    }
    // Newest first by creation time (ids have whole seconds only), then id.
    out.sort_by(|a, b| {
        let t = |m: &SnapshotMeta| {
            time::OffsetDateTime::parse(
                &m.created_at,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()
        };
        t(b).cmp(&t(a)).then(b.id.cmp(&a.id))
    });
    Ok(out)
}

/// Writes `ID.json` atomically (temporary name, fsync, rename, fsync the directory).
pub fn write_meta(dir: &Path, meta: &SnapshotMeta) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{}.json.tmp", meta.id));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, meta_path(dir, &meta.id))?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Which snapshots retention removes: everything but the newest of each of the last
/// `keep_daily` days and of each of the last `keep_weekly` ISO weeks (days and weeks that have a
/// snapshot), and never the newest verified one. `snapshots` newest first; dates are the
/// snapshots' UTC creation dates.
pub fn to_prune(snapshots: &[SnapshotMeta], keep_daily: u32, keep_weekly: u32) -> Vec<String> {
    let mut keep = std::collections::BTreeSet::new();
    let mut days = Vec::new();
    let mut weeks = Vec::new();
    for s in snapshots {
        let Some(date) = creation_date(s) else {
            // Cannot tell its age: keeping it is the safe choice.
            keep.insert(s.id.clone());
            continue;
        };
        if !days.contains(&date) && days.len() < keep_daily as usize {
            days.push(date);
            keep.insert(s.id.clone());
        }
        let week = (date.to_iso_week_date().0, date.iso_week());
        if !weeks.contains(&week) && weeks.len() < keep_weekly as usize {
            weeks.push(week);
            keep.insert(s.id.clone());
        }
    }
    if let Some(v) = snapshots.iter().find(|s| s.verified == Some(true)) {
        keep.insert(v.id.clone());
    }
    snapshots
        .iter()
        .filter(|s| !keep.contains(&s.id))
        .map(|s| s.id.clone())
        .collect()
}

fn creation_date(s: &SnapshotMeta) -> Option<time::Date> {
    time::OffsetDateTime::parse(
        &s.created_at,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()
    .map(|t| t.date())
}

/// Files of the data dir that go into a snapshot besides the database copy: keyring, TLS
/// certificate, gateway host key, recordings, break-glass files, anything else kept there.
/// Left out: the database files (copied consistently instead), `master.key` (the snapshot must
/// be useless without it), the one-time admin password, backups' staging directory, and the
/// snapshot directory itself.
pub fn data_dir_members(data_dir: &Path, snapshot_dir: &Path) -> std::io::Result<Vec<DirMember>> {
    const SKIP: &[&str] = &[
        "master.key",
        "cofre.db",
        "cofre.db-wal",
        "cofre.db-shm",
        "cofre.db-journal",
        "initial-admin-password",
        // Backups' scratch space: key files and unsealed database copies while a run needs them.
        ".backup-staging",
        // The audit anchor is rewritten every few seconds, so the copy read here can be newer
        // than the database copy taken before it: restored beside that database it would name
        // entries the restored instance writes differently, and verify would call it tampering.
        // A restored instance anchors its own head at its first start.
        "audit-anchor.json",
    ];
    let mut out = Vec::new();
    let mut stack = vec![data_dir.to_path_buf()];
    let skip_dir = std::fs::canonicalize(snapshot_dir).unwrap_or(snapshot_dir.to_path_buf());
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != data_dir => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let Ok(rel) = path.strip_prefix(data_dir) else {
                continue;
            };
            let Some(rel_text) = rel.to_str() else {
                continue;
            };
            if dir == data_dir && SKIP.contains(&rel_text) {
                continue;
            }
            // symlink_metadata: a link is not followed out of the data dir.
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue; // removed meanwhile
            };
            if meta.is_dir() {
                if std::fs::canonicalize(&path).ok().as_deref() != Some(skip_dir.as_path()) {
                    stack.push(path);
                }
            } else if meta.is_file() {
                use std::os::unix::fs::PermissionsExt;
                out.push(DirMember {
                    name: rel_text.replace(std::path::MAIN_SEPARATOR, "/"),
                    path,
                    size: meta.len(),
                    mode: meta.permissions().mode() & 0o777,
                });
            }
        }
    }
    // Small files first (keyring, TLS, host key), recordings last: the order a reader wants.
    out.sort_by(|a, b| {
        let rec = |m: &DirMember| m.name.starts_with("recordings/");
        rec(a).cmp(&rec(b)).then(a.name.cmp(&b.name))
    });
    Ok(out)
}

pub struct DirMember {
    pub name: String,
    pub path: PathBuf,
    /// Length when listed: a recording still being written is copied up to here (its last frame
    /// may be torn, which readers skip).
    pub size: u64,
    pub mode: u32,
}

/// Where a recording is now. The database stores the absolute path it was written to; after a
/// restore into another data dir the file is under this data dir's `recordings/` instead.
pub fn recording_path(data_dir: &Path, stored: &str) -> PathBuf {
    let marker = "/recordings/";
    if let Some(i) = stored.rfind(marker) {
        let candidate = data_dir
            .join("recordings")
            .join(&stored[i + marker.len()..]);
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from(stored)
}

/// Member name of the database copy.
pub fn database_member(database: &str) -> &'static str {
    if database == "postgres" {
        "database/postgres.jsonl"
    } else {
        "database/cofre.db"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn meta(id: &str, created: &str, verified: Option<bool>) -> SnapshotMeta {
        SnapshotMeta {
            id: id.into(),
            created_at: created.into(),
            reason: "daily".into(),
            size: 1,
            sha256: String::new(),
            duration_ms: 0,
            database: "sqlite".into(),
            seal: "key-file".into(),
            members: 1,
            verified_at: None,
            verified,
            audit_head: None,
        }
    }

    #[test]
    fn retention_keeps_days_weeks_and_newest_verified() {
        // 40 daily snapshots, newest first; only the oldest one is verified.
        let start = time::macros::datetime!(2026-03-31 03:00 UTC);
        let mut all: Vec<SnapshotMeta> = (0..40)
            .map(|i| {
                let t = start - time::Duration::days(i);
                meta(
                    &format!("s{:02}", 99 - i),
                    &crate::services::timestamp(t),
                    None,
                )
            })
            .collect();
        all.last_mut().unwrap().verified = Some(true);
        let gone = to_prune(&all, 7, 4);
        let kept: Vec<&str> = all
            .iter()
            .map(|s| s.id.as_str())
            .filter(|id| !gone.iter().any(|g| g == id))
            .collect();
        // 7 days (31st back to the 25th); 4 ISO weeks, whose newest are the 31st, 29th (both
        // already kept), 22nd and 15th; and the verified one (20 February).
        let mut want = vec![
            "s99", "s98", "s97", "s96", "s95", "s94", "s93", "s90", "s83", "s60",
        ];
        want.sort();
        let mut kept = kept;
        kept.sort();
        assert_eq!(kept, want);
        // Two on the same day: only the newer one is the day's.
        let same = vec![
            meta("b", "2026-03-31T10:00:00Z", None),
            meta("a", "2026-03-31T03:00:00Z", None),
        ];
        assert_eq!(to_prune(&same, 7, 4), vec!["a".to_owned()]);
        // ... unless it is the newest verified.
        let same = vec![
            meta("b", "2026-03-31T10:00:00Z", None),
            meta("a", "2026-03-31T03:00:00Z", Some(true)),
        ];
        assert!(to_prune(&same, 7, 4).is_empty());
    }

    #[test]
    fn hhmm() {
        assert_eq!(parse_hhmm("03:00"), Some(180));
        assert_eq!(parse_hhmm("23:59"), Some(1439));
        assert_eq!(parse_hhmm("24:00"), None);
        assert_eq!(parse_hhmm("3:00"), None);
    }

    #[test]
    fn recording_path_follows_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("recordings/2026-01-01");
        std::fs::create_dir_all(&rec).unwrap();
        std::fs::write(rec.join("x.rec"), b"").unwrap();
        assert_eq!(
            recording_path(dir.path(), "/old/data/recordings/2026-01-01/x.rec"),
            rec.join("x.rec")
        );
        assert_eq!(
            recording_path(dir.path(), "/old/data/recordings/2026-01-01/y.rec"),
            PathBuf::from("/old/data/recordings/2026-01-01/y.rec")
        );
    }

    #[test]
    fn the_audit_anchor_is_not_a_member() {
        // A snapshot's anchor file could be newer than its database copy (see SKIP).
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("audit-anchor.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("keyring.json"), b"{}").unwrap();
        let names: Vec<String> = data_dir_members(dir.path(), &dir.path().join("snapshots"))
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, vec!["keyring.json".to_owned()]);
    }
}
