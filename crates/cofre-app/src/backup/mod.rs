//! Backup targets: where copies of the instance's data go (a directory, a host over rsync+SSH, an
//! S3-compatible bucket), and the schedule grammar. The use cases (jobs, runs, alerts) are in
//! `services::backups`; this module only moves files.
//!
//! Every target keeps the same two promises:
//! * `probe` writes, reads back and deletes a small file, so a run fails early and clearly.
//! * `sync` sends only what the target lacks (a missing file, or one whose size differs: recordings
//!   only grow), and never leaves a partly written file under a final name: a directory target
//!   writes to a temporary name and renames, rsync runs with `--delay-updates`, and an S3 object
//!   appears only when its upload completes. A run that fails or is killed leaves the last good
//!   copy as it was.

pub mod local;
pub mod rsync;
pub mod s3;
pub mod schedule;

use cofre_proto::BackupProgress;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// One file to send: its path relative to the kind's folder on the target, and where it is here.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub rel: String,
    pub path: PathBuf,
    pub size: u64,
}

/// What to send: files under `base` (each `rel` is relative to it), to `KIND/` on the target.
#[derive(Debug, Clone)]
pub struct Source {
    pub kind: String,
    /// Whose temporary names a run uses on the target: its job's (`j<ID>`). A job never runs
    /// twice at once, so what a run finds under its own job's temporary names was left by a
    /// killed run of that job and may go; another job's (running beside it on the same target,
    /// perhaps on the same files) is never touched.
    pub owner: String,
    pub base: PathBuf,
    pub files: Vec<SourceFile>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub files_sent: u64,
    /// Bytes that went over the wire (rsync: its `Total bytes sent`; others: file bytes written).
    pub bytes_sent: u64,
}

/// Why a target failed; the message names the target's own words (ssh's, rsync's, the OS's).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(pub String);

impl TargetError {
    pub fn new(message: impl Into<String>) -> Self {
        TargetError(message.into())
    }
}

/// A run's progress, shared with the API while the run goes on.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<BackupProgress>>);

impl Progress {
    pub fn snapshot(&self) -> BackupProgress {
        self.0.lock().map(|p| p.clone()).unwrap_or_default()
    }
    pub fn update(&self, f: impl FnOnce(&mut BackupProgress)) {
        if let Ok(mut p) = self.0.lock() {
            f(&mut p);
        }
    }
    pub fn phase(&self, phase: &str) {
        self.update(|p| p.phase = phase.to_owned());
    }
}

/// A target ready to use: secrets opened, for the length of one operation.
pub enum Target {
    Dir(local::DirTarget),
    Ssh(rsync::SshTarget),
    S3(s3::S3Target),
}

impl Target {
    /// The write test: a probe file written, read back and deleted.
    pub async fn probe(&self) -> Result<(), TargetError> {
        match self {
            Target::Dir(t) => t.probe().await,
            Target::Ssh(t) => t.probe().await,
            Target::S3(t) => t.probe().await,
        }
    }

    pub async fn sync(
        &self,
        source: &Source,
        progress: &Progress,
    ) -> Result<SyncStats, TargetError> {
        progress.update(|p| {
            p.phase = "sending".into();
            p.files_total = source.files.len() as u64;
            p.bytes_total = source.files.iter().map(|f| f.size).sum();
        });
        match self {
            Target::Dir(t) => t.sync(source, progress).await,
            Target::Ssh(t) => t.sync(source, progress).await,
            Target::S3(t) => t.sync(source, progress).await,
        }
    }
}

/// A random name for a probe file, so that two probes never meet.
pub(crate) fn probe_name() -> String {
    format!(".cofre-probe-{}", uuid::Uuid::new_v4().simple())
}

/// Lists the regular files under `dir` (recursively), skipping names that start with `.` or end in
/// `.tmp` (files still being written by their writers).
pub fn list_files(dir: &std::path::Path) -> std::io::Result<Vec<SourceFile>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.ends_with(".tmp") {
                continue;
            }
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push((entry.path(), rel));
            } else if kind.is_file() {
                out.push(SourceFile {
                    rel,
                    path: entry.path(),
                    size: entry.metadata()?.len(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}
