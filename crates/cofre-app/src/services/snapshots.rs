//! Snapshots (Orbit): taking one while the instance serves, the daily schedule, retention,
//! verification. The file format and the offline restore are in [`crate::snapshot`].
//!
//! A snapshot is taken by one task at a time per node. Its database part is the store's
//! consistent copy (`cofre_store::export`), which is the moment the snapshot reflects; files are
//! read afterwards, each up to the length it had when listed. Every create, verify and prune is
//! audited; a failure is an alert: an audit entry with outcome `failed`, an error in the log and
//! `cofre_snapshot_failures_total`.

use super::Orbit;
use super::{App, Principal};
use crate::error::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use crate::snapshot::format::{self, FormatError, Header, Writer};
use crate::snapshot::{self as snap, SnapshotMeta};
use cofre_core::audit::NewAuditEntry;
use cofre_core::role::Action;
use cofre_crypto::datakey::DataKey;
use cofre_crypto::SealKind;
use cofre_proto::{
    CreateSnapshotRequest, PruneSnapshotsRequest, PruneSnapshotsResponse, SnapshotInfo,
    SnapshotJob, SnapshotList, SnapshotMember, SnapshotSchedule, SnapshotVerifyResponse,
};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

/// Why a snapshot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotReason {
    Daily,
    PreMaintenance,
    Manual,
    /// Written for a `system` backup: no recordings, not kept among the instance's snapshots.
    SystemBackup,
}

impl SnapshotReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotReason::Daily => "daily",
            SnapshotReason::PreMaintenance => "pre-maintenance",
            SnapshotReason::Manual => "manual",
            SnapshotReason::SystemBackup => "system-backup",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SnapshotOptions {
    pub reason: SnapshotReason,
    pub include_recordings: bool,
}

/// Jobs kept for `GET /snapshots/jobs/{id}` after they end.
const KEPT_JOBS: usize = 32;

#[derive(Default)]
pub struct SnapshotState {
    /// One snapshot at a time: two would compete for the disk and gain nothing.
    running: tokio::sync::Mutex<()>,
    jobs: Mutex<VecDeque<Arc<Job>>>,
}

/// Progress of one create, shared between the task writing it and the API reading it.
pub struct Job {
    id: String,
    started_at: String,
    phase: Mutex<&'static str>,
    done: AtomicU64,
    total: AtomicU64,
    outcome: Mutex<Option<(String, std::result::Result<SnapshotMeta, String>)>>,
}

impl Job {
    fn new(started_at: String) -> Job {
        Job {
            id: uuid::Uuid::new_v4().to_string(),
            started_at,
            phase: Mutex::new("waiting"),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            outcome: Mutex::new(None),
        }
    }

    fn set_phase(&self, phase: &'static str) {
        if let Ok(mut p) = self.phase.lock() {
            *p = phase;
        }
    }

    fn view(&self) -> SnapshotJob {
        let outcome = self.outcome.lock().ok().and_then(|o| o.clone());
        let phase = match &outcome {
            Some((_, Ok(_))) => "done",
            Some((_, Err(_))) => "failed",
            None => self.phase.lock().map(|p| *p).unwrap_or("unknown"),
        };
        SnapshotJob {
            id: self.id.clone(),
            phase: phase.to_owned(),
            bytes_done: self.done.load(Ordering::Relaxed),
            bytes_total: self.total.load(Ordering::Relaxed),
            started_at: self.started_at.clone(),
            finished_at: outcome.as_ref().map(|(t, _)| t.clone()),
            snapshot: outcome
                .as_ref()
                .and_then(|(_, r)| r.as_ref().ok().map(info)),
            error: outcome.and_then(|(_, r)| r.err()),
        }
    }
}

fn info(m: &SnapshotMeta) -> SnapshotInfo {
    SnapshotInfo {
        id: m.id.clone(),
        created_at: m.created_at.clone(),
        reason: m.reason.clone(),
        size: m.size,
        sha256: m.sha256.clone(),
        duration_ms: m.duration_ms,
        database: m.database.clone(),
        seal: m.seal.clone(),
        members: m.members,
        verified_at: m.verified_at.clone(),
        verified: m.verified,
    }
}

fn alert(op: &'static str, message: &str) {
    tracing::error!(operation = op, error = %message, "snapshot failure");
    metrics::counter!("cofre_snapshot_failures_total", "operation" => op).increment(1);
}

fn io_error(context: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::internal(context, e)
}

impl Orbit<'_> {
    pub fn snapshot_dir(&self) -> PathBuf {
        self.config.snapshots.dir(&self.config.data_dir)
    }

    /// Takes a snapshot now as `system` (the schedule, and later the pre-maintenance step of an
    /// upgrade), applies retention, and returns it. Fails with `conflict` if one is running.
    pub async fn create_snapshot(&self, opts: SnapshotOptions) -> Result<SnapshotMeta> {
        let job = Arc::new(Job::new(self.now_text()));
        self.create_snapshot_as("system", opts, &job).await
    }

    /// `POST /snapshots`: starts the job and returns at once.
    pub async fn start_snapshot(
        &self,
        who: &Principal,
        req: &CreateSnapshotRequest,
    ) -> Result<SnapshotJob> {
        who.require(Action::ManageSnapshots)?;
        let reason = match req.reason.as_deref() {
            None | Some("manual") => SnapshotReason::Manual,
            Some("pre-maintenance") => SnapshotReason::PreMaintenance,
            Some(other) => {
                return Err(Error::invalid(
                    "reason",
                    format!("reason: {other:?} is not one of manual, pre-maintenance (daily snapshots are the schedule's)"),
                ))
            }
        };
        let opts = SnapshotOptions {
            reason,
            include_recordings: req.include_recordings.unwrap_or(true),
        };
        if self.snapshots.running.try_lock().is_err() {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::SnapshotRunning,
                "a snapshot is being taken already; wait for it (`cofre snapshot list`)",
            ));
        }
        self.with_master(|_| ())?;
        let job = Arc::new(Job::new(self.now_text()));
        if let Ok(mut jobs) = self.snapshots.jobs.lock() {
            jobs.push_back(job.clone());
            while jobs.len() > KEPT_JOBS {
                jobs.pop_front();
            }
        }
        let app = self.shared()?;
        let actor = who.username.clone();
        let running = job.clone();
        tokio::spawn(async move {
            let _ = app.create_snapshot_as(&actor, opts, &running).await;
        });
        Ok(job.view())
    }

    pub fn get_snapshot_job(&self, who: &Principal, id: &str) -> Result<SnapshotJob> {
        who.require(Action::ViewSnapshots)?;
        let jobs = self
            .snapshots
            .jobs
            .lock()
            .map_err(|_| Error::internal("reading snapshot jobs", "lock poisoned"))?;
        jobs.iter()
            .find(|j| j.id == id)
            .map(|j| j.view())
            .ok_or_else(|| Error::not_found(format!("snapshot job {id}")))
    }
}

impl App {
    async fn create_snapshot_as(
        &self,
        actor: &str,
        opts: SnapshotOptions,
        job: &Arc<Job>,
    ) -> Result<SnapshotMeta> {
        let result = match self.snapshots.running.try_lock() {
            Ok(_guard) => self.write_snapshot(actor, opts, job).await,
            Err(_) => Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::SnapshotRunning,
                "a snapshot is being taken already",
            )),
        };
        let finished = self.now_text();
        match &result {
            Ok(meta) => {
                if let Ok(mut o) = job.outcome.lock() {
                    *o = Some((finished, Ok(meta.clone())));
                }
                if let Err(e) = self.apply_retention(actor).await {
                    alert("prune", &e.message);
                }
            }
            Err(e) => {
                alert("create", &e.message);
                let mut entry = NewAuditEntry::new(actor, "snapshot.create", "snapshot");
                entry.outcome = "failed".into();
                entry.details = serde_json::json!({
                    "reason": opts.reason.as_str(),
                    "error": e.message,
                });
                if let Err(audit) = self.record(entry).await {
                    alert("create", &audit.message);
                }
                if let Ok(mut o) = job.outcome.lock() {
                    *o = Some((finished, Err(e.message.clone())));
                }
            }
        }
        result
    }

    async fn write_snapshot(
        &self,
        actor: &str,
        opts: SnapshotOptions,
        job: &Arc<Job>,
    ) -> Result<SnapshotMeta> {
        let dir = self.orbit().snapshot_dir();
        let meta = self.write_snapshot_into(&dir, opts, job).await?;
        let id = meta.id.clone();
        let mut entry = NewAuditEntry::new(actor, "snapshot.create", format!("snapshot:{id}"));
        entry.details = serde_json::json!({
            "reason": meta.reason,
            "size": meta.size,
            "sha256": meta.sha256,
            "duration_ms": meta.duration_ms,
            "members": meta.members,
            "database": meta.database,
        });
        if let Err(e) = self.record(entry).await {
            // No audit entry, no snapshot.
            let _ = std::fs::remove_file(snap::snapshot_path(&dir, &id));
            let _ = std::fs::remove_file(snap::meta_path(&dir, &id));
            return Err(e);
        }
        metrics::counter!("cofre_snapshots_total", "reason" => opts.reason.as_str()).increment(1);
        tracing::info!(id = %meta.id, size = meta.size, "snapshot written");
        Ok(meta)
    }

    /// Writes a snapshot file (and its `ID.json`) into `dir`, atomically; not audited here.
    async fn write_snapshot_into(
        &self,
        dir: &Path,
        opts: SnapshotOptions,
        job: &Arc<Job>,
    ) -> Result<SnapshotMeta> {
        let started = Instant::now();
        let created_at = self.now();
        let id = snap::new_id(created_at);
        let key = DataKey::generate();
        let sealed = self
            .with_master(|mk| key.seal(mk, &Header::key_aad(&id)))?
            .map_err(|e| Error::internal("sealing the snapshot key", e))?;
        cofre_crypto::files::ensure_private_dir(dir)
            .map_err(|e| Error::internal("creating the snapshot directory", e))?;
        remove_leftovers(dir);
        let partial = dir.join(format!(".{id}.{}.partial", snap::EXTENSION));
        let work = dir.join(format!(".{id}.work"));
        let result = self
            .write_snapshot_files(
                &id, created_at, opts, key, sealed, dir, &partial, &work, job, started,
            )
            .await;
        let _ = std::fs::remove_dir_all(&work);
        match result {
            Ok(meta) => Ok(meta),
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                let _ = std::fs::remove_file(snap::meta_path(dir, &id));
                Err(e)
            }
        }
    }
}

impl Orbit<'_> {
    /// What a `system` backup ships: a snapshot of everything but the recordings, written into
    /// `dir` (a backup's staging dir: never listed or pruned here). `cofre snapshot restore FILE`
    /// restores it like any snapshot. The backup run audits it.
    pub(crate) async fn write_system_snapshot(&self, dir: &Path) -> Result<SnapshotMeta> {
        let _one_at_a_time = self.snapshots.running.lock().await;
        let job = Arc::new(Job::new(self.now_text()));
        let opts = SnapshotOptions {
            reason: SnapshotReason::SystemBackup,
            include_recordings: false,
        };
        self.write_snapshot_into(dir, opts, &job).await
    }
}

impl App {
    #[allow(clippy::too_many_arguments)]
    async fn write_snapshot_files(
        &self,
        id: &str,
        created_at: time::OffsetDateTime,
        opts: SnapshotOptions,
        key: DataKey,
        sealed: cofre_crypto::SealedSecret,
        dir: &Path,
        partial: &Path,
        work: &Path,
        job: &Arc<Job>,
        started: Instant,
    ) -> Result<SnapshotMeta> {
        cofre_crypto::files::ensure_private_dir(work)
            .map_err(|e| Error::internal("creating the snapshot scratch dir", e))?;
        job.set_phase("database");
        let database = match self.store.kind() {
            cofre_store::DbKind::Sqlite => "sqlite",
            cofre_store::DbKind::Postgres => "postgres",
        };
        let db_copy = work.join("database");
        let copy = self
            .store
            .copy_consistent(&db_copy)
            .await
            .map_err(|e| Error::internal("copying the database", e))?;

        job.set_phase("files");
        // The snapshot directory is never inside a snapshot, wherever this one is written.
        let mut members =
            snap::data_dir_members(&self.config.data_dir, &self.orbit().snapshot_dir())
                .map_err(io_error("listing the data dir"))?;
        members.retain(|m| {
            m.name != CONFIG_MEMBER
                && (opts.include_recordings || !m.name.starts_with("recordings/"))
        });
        if let Some(file) = &self.config.config_file {
            if let Ok(meta) = std::fs::metadata(file) {
                members.push(snap::DirMember {
                    name: CONFIG_MEMBER.into(),
                    path: file.clone(),
                    size: meta.len(),
                    mode: 0o600,
                });
            }
        }
        job.total.store(
            copy.bytes + members.iter().map(|m| m.size).sum::<u64>(),
            Ordering::Relaxed,
        );
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let header = Header {
            format: format::FORMAT,
            id: id.to_owned(),
            created_at: super::timestamp(created_at),
            reason: opts.reason.as_str().to_owned(),
            cofre_version: crate::switch::version().to_owned(),
            database: database.to_owned(),
            keyring: self.keyring.clone(),
            key_wrapped: b64.encode(&sealed.wrapped_key),
            key_ciphertext: b64.encode(&sealed.ciphertext),
        };
        let seal = match self.keyring.seal {
            SealKind::KeyFile => "key-file",
            SealKind::Shamir { .. } => "shamir",
        };
        let partial_path = partial.to_path_buf();
        let job_for_writer = job.clone();
        let written = tokio::task::spawn_blocking(move || {
            write_file(
                &partial_path,
                &header,
                key,
                database,
                &db_copy,
                &members,
                &job_for_writer,
            )
        })
        .await
        .map_err(|e| Error::internal("writing the snapshot", e))?
        .map_err(|e| Error::internal("writing the snapshot", e))?;

        job.set_phase("finishing");
        let meta = SnapshotMeta {
            id: id.to_owned(),
            created_at: super::timestamp(created_at),
            reason: opts.reason.as_str().to_owned(),
            size: written.0,
            sha256: written.1,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            database: database.to_owned(),
            seal: seal.to_owned(),
            members: written.2,
            verified_at: None,
            verified: None,
            audit_head: self.signed_audit_head().await.ok().flatten(),
        };
        // Metadata first, then the rename: a crash in between leaves metadata without a file,
        // which is not listed and is removed by the next create.
        snap::write_meta(dir, &meta).map_err(io_error("writing the snapshot metadata"))?;
        std::fs::rename(partial, snap::snapshot_path(dir, id))
            .map_err(io_error("renaming the snapshot into place"))?;
        snap::sync_dir(dir).map_err(io_error("syncing the snapshot directory"))?;
        Ok(meta)
    }
}

impl Orbit<'_> {
    pub fn list_snapshots(&self, who: &Principal) -> Result<SnapshotList> {
        who.require(Action::ViewSnapshots)?;
        let dir = self.snapshot_dir();
        let all = snap::list(&dir).map_err(io_error("listing snapshots"))?;
        let cfg = &self.config.snapshots;
        let zone = &self.config.instance.time_zone;
        let next_at = snap::parse_hhmm(&cfg.time).and_then(|at| {
            let next = zone.next_at(self.now().unix_timestamp(), at);
            time::OffsetDateTime::from_unix_timestamp(next)
                .ok()
                .map(super::timestamp)
        });
        Ok(SnapshotList {
            snapshots: all.iter().map(info).collect(),
            directory: dir.display().to_string(),
            schedule: SnapshotSchedule {
                time: cfg.time.clone(),
                time_zone: zone.name().to_owned(),
                keep_daily: cfg.keep_daily,
                keep_weekly: cfg.keep_weekly,
                next_at,
            },
        })
    }
}

impl App {
    fn find_snapshot(&self, id: &str) -> Result<(PathBuf, SnapshotMeta)> {
        if !snap::valid_id(id) {
            return Err(Error::invalid(
                "id",
                "id: not a snapshot id (see `cofre snapshot list`)",
            ));
        }
        let dir = self.orbit().snapshot_dir();
        let all = snap::list(&dir).map_err(io_error("listing snapshots"))?;
        let meta = all
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| Error::not_found(format!("snapshot {id}")))?;
        Ok((snap::snapshot_path(&dir, id), meta))
    }
}

impl Orbit<'_> {
    /// Reads the whole snapshot: every frame decrypts, every member's size and SHA-256 match
    /// the manifest, and the database copy opens. Audited; a damaged snapshot is an alert.
    pub async fn verify_snapshot(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<SnapshotVerifyResponse> {
        who.require(Action::ManageSnapshots)?;
        let (path, mut meta) = self.find_snapshot(id)?;
        let master_key = {
            let mut file = std::fs::File::open(&path).map_err(io_error("opening the snapshot"))?;
            match format::read_header(&mut file) {
                Ok((header, _)) => self
                    .with_master(|mk| crate::snapshot::restore::open_key(&header, mk))?
                    .map(|k| (k, header.database)),
                Err(e) => Err(e),
            }
        };
        let scratch = self.snapshot_dir().join(format!(".{id}.verify"));
        let outcome = match master_key {
            Ok((key, database)) => {
                let scratch_dir = scratch.clone();
                let checked = tokio::task::spawn_blocking(move || {
                    check_file(&path, key, &database, &scratch_dir).map(|m| (m, database))
                })
                .await
                .map_err(|e| Error::internal("verifying the snapshot", e))?;
                match checked {
                    Ok((members, database)) => {
                        let db = scratch.join("db");
                        let opened = if database == "postgres" {
                            cofre_store::export::check_postgres_dump(&db).map(|_| ())
                        } else {
                            cofre_store::export::check_sqlite_copy(&db)
                                .await
                                .map(|_| ())
                        };
                        match opened {
                            Ok(()) => Ok(members),
                            Err(e) => Err((
                                Some(snap::database_member(&database).to_owned()),
                                format!("the database copy does not open: {e}"),
                                members,
                            )),
                        }
                    }
                    Err((e, members)) => {
                        Err((e.member().map(str::to_owned), e.to_string(), members))
                    }
                }
            }
            Err(e) => Err((e.member().map(str::to_owned), e.to_string(), Vec::new())),
        };
        let _ = std::fs::remove_dir_all(&scratch);
        let ok = outcome.is_ok();
        let (damaged_member, error, members) = match outcome {
            Ok(m) => (None, None, m),
            Err((member, error, m)) => (member, Some(error), m),
        };
        let mut entry =
            NewAuditEntry::new(&who.username, "snapshot.verify", format!("snapshot:{id}"));
        if !ok {
            entry.outcome = "failed".into();
            alert("verify", error.as_deref().unwrap_or("damaged"));
        }
        entry.details = serde_json::json!({ "damaged_member": damaged_member, "error": error });
        self.record(entry).await?;
        meta.verified_at = Some(self.now_text());
        meta.verified = Some(ok);
        snap::write_meta(&self.snapshot_dir(), &meta)
            .map_err(io_error("writing the snapshot metadata"))?;
        Ok(SnapshotVerifyResponse {
            id: id.to_owned(),
            ok,
            damaged_member,
            error,
            members: members
                .into_iter()
                .map(|m| SnapshotMember {
                    name: m.name,
                    size: m.size,
                    sha256: m.sha256,
                    offset: m.offset,
                    end: m.end,
                })
                .collect(),
        })
    }

    pub async fn prune_snapshots(
        &self,
        who: &Principal,
        req: &PruneSnapshotsRequest,
    ) -> Result<PruneSnapshotsResponse> {
        who.require(Action::ManageSnapshots)?;
        if req.dry_run {
            let all = snap::list(&self.snapshot_dir()).map_err(io_error("listing snapshots"))?;
            let gone = snap::to_prune(
                &all,
                self.config.snapshots.keep_daily,
                self.config.snapshots.keep_weekly,
            );
            return Ok(PruneSnapshotsResponse {
                dry_run: true,
                removed: all
                    .iter()
                    .filter(|m| gone.contains(&m.id))
                    .map(info)
                    .collect(),
                kept: all
                    .iter()
                    .filter(|m| !gone.contains(&m.id))
                    .map(|m| m.id.clone())
                    .collect(),
            });
        }
        let _running = self.snapshots.running.try_lock().map_err(|_| {
            Error::new(
                ErrorKind::Conflict,
                ErrorCode::SnapshotRunning,
                "a snapshot is being taken; prune after it (it prunes when it ends anyway)",
            )
        })?;
        self.apply_retention(&who.username).await
    }
}

impl App {
    /// Removes what retention does not keep; audited as `snapshot.prune` (nothing removed:
    /// nothing recorded). The audit entry is committed before any file goes.
    async fn apply_retention(&self, actor: &str) -> Result<PruneSnapshotsResponse> {
        let dir = self.orbit().snapshot_dir();
        let all = snap::list(&dir).map_err(io_error("listing snapshots"))?;
        let gone = snap::to_prune(
            &all,
            self.config.snapshots.keep_daily,
            self.config.snapshots.keep_weekly,
        );
        let removed: Vec<SnapshotInfo> = all
            .iter()
            .filter(|m| gone.contains(&m.id))
            .map(info)
            .collect();
        if !removed.is_empty() {
            let mut entry = NewAuditEntry::new(actor, "snapshot.prune", "snapshots");
            entry.details = serde_json::json!({ "removed": gone });
            self.record(entry).await?;
            for id in &gone {
                // The data file first: without it the metadata is not listed.
                let _ = std::fs::remove_file(snap::snapshot_path(&dir, id));
                let _ = std::fs::remove_file(snap::meta_path(&dir, id));
            }
            let _ = snap::sync_dir(&dir);
        }
        Ok(PruneSnapshotsResponse {
            dry_run: false,
            removed,
            kept: all
                .iter()
                .filter(|m| !gone.contains(&m.id))
                .map(|m| m.id.clone())
                .collect(),
        })
    }
}

/// Member name of the server's config file.
const CONFIG_MEMBER: &str = "config/cofre.toml";

/// Writes the snapshot file (blocking): database copy first, then the data dir's files; fsynced.
/// Returns size, SHA-256 and member count.
fn write_file(
    partial: &Path,
    header: &Header,
    key: DataKey,
    database: &str,
    db_copy: &Path,
    members: &[snap::DirMember],
    job: &Job,
) -> std::result::Result<(u64, String, usize), FormatError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(partial)
        .map_err(FormatError::io(format!("creating {}", partial.display())))?;
    let out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut writer = Writer::new(out, header, key)?;
    let mut progress = |n: u64| {
        job.done.fetch_add(n, Ordering::Relaxed);
    };
    let db = std::fs::File::open(db_copy).map_err(FormatError::io("opening the database copy"))?;
    writer.add_member(
        snap::database_member(database),
        0o600,
        db,
        u64::MAX,
        &mut progress,
    )?;
    for m in members {
        let source = match std::fs::File::open(&m.path) {
            Ok(f) => f,
            // Removed since it was listed (a pruned break-glass file): not part of the moment.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(FormatError::Io {
                    context: format!("reading {}", m.path.display()),
                    source: e,
                })
            }
        };
        writer.add_member(&m.name, m.mode, source, m.size, &mut progress)?;
    }
    let written = writer.finish()?;
    let file = written
        .inner
        .into_inner()
        .map_err(|e| FormatError::io("writing the snapshot")(e.into_error()))?;
    file.sync_all()
        .map_err(FormatError::io("syncing the snapshot"))?;
    Ok((written.size, written.sha256, written.manifest.members.len()))
}

/// Reads the whole file (blocking); the database member goes to `scratch/db` to be opened.
fn check_file(
    path: &Path,
    key: DataKey,
    database: &str,
    scratch: &Path,
) -> std::result::Result<Vec<format::MemberEntry>, (FormatError, Vec<format::MemberEntry>)> {
    let file = std::fs::File::open(path)
        .map_err(|e| (FormatError::io("opening the snapshot")(e), Vec::new()))?;
    let mut reader = format::Reader::open(file, key).map_err(|e| (e, Vec::new()))?;
    let members = reader.manifest.members.clone();
    let db_name = snap::database_member(database);
    let _ = std::fs::remove_dir_all(scratch);
    cofre_crypto::files::ensure_private_dir(scratch).map_err(|e| {
        (
            FormatError::Io {
                context: "creating the verify scratch dir".into(),
                source: std::io::Error::other(e.to_string()),
            },
            members.clone(),
        )
    })?;
    let db_path = scratch.join("db");
    reader
        .for_each_member(
            |m| {
                if m.name == db_name {
                    let f = std::fs::File::create(&db_path)
                        .map_err(FormatError::io("writing the database copy"))?;
                    Ok(Some(Box::new(std::io::BufWriter::new(f))))
                } else {
                    Ok(None)
                }
            },
            &mut |_| {},
        )
        .map_err(|e| (e, members.clone()))?;
    Ok(members)
}

/// Removes what a crashed create left: partial files, scratch dirs, metadata without a file.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        // A verification may be running beside this create: only an old scratch dir is a leftover.
        let stale_verify = name.ends_with(".verify")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(24 * 3600));
        if name.starts_with('.')
            && (name.ends_with(".partial")
                || name.ends_with(".work")
                || stale_verify
                || name.ends_with(".json.tmp"))
        {
            tracing::info!(file = %path.display(), "removing a leftover of an interrupted snapshot");
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        } else if let Some(id) = name.strip_suffix(".json") {
            if snap::valid_id(id) && !snap::snapshot_path(dir, id).exists() {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// The daily snapshot at `[snapshots] time` (in `[instance] time_zone`), then retention.
pub fn spawn_scheduler(app: &Arc<App>) {
    let Some(at) = snap::parse_hhmm(&app.config.snapshots.time) else {
        return; // "off"
    };
    let weak = Arc::downgrade(app);
    tokio::spawn(scheduler_loop(weak, at));
}

async fn scheduler_loop(app: Weak<App>, at: u16) {
    loop {
        let wait = {
            let Some(app) = app.upgrade() else { return };
            until_next(app.now(), &app.config.instance.time_zone, at)
        };
        tokio::time::sleep(wait).await;
        let Some(app) = app.upgrade() else { return };
        if app.is_sealed() {
            alert(
                "create",
                "the daily snapshot was skipped: the server is sealed",
            );
            continue;
        }
        let opts = SnapshotOptions {
            reason: SnapshotReason::Daily,
            include_recordings: true,
        };
        match app.orbit().create_snapshot(opts).await {
            Ok(meta) => {
                // A daily snapshot is read back at once, so retention has a verified one to keep.
                let system = system_principal(&app);
                if let Err(e) = app.orbit().verify_snapshot(&system, &meta.id).await {
                    alert("verify", &e.message);
                }
            }
            Err(e) => tracing::warn!(error = %e.message, "daily snapshot failed"),
        }
        // Never twice in the same minute.
        tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    }
}

fn system_principal(app: &App) -> Principal {
    // The scheduler acts as the instance itself; in saas mode only operators reach Orbit.
    Principal::system(app.config.mode)
}

/// Time from `now` to the next time the instance's clock shows `at` (minutes after midnight).
fn until_next(
    now: time::OffsetDateTime,
    zone: &cofre_core::when::Zone,
    at: u16,
) -> std::time::Duration {
    let now = now.unix_timestamp();
    let secs = zone.next_at(now, at).saturating_sub(now).max(1);
    std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(24 * 3600))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn next_run_is_today_or_tomorrow_in_local_time() {
        use cofre_core::when::Zone;
        let now = time::macros::datetime!(2026-03-31 01:30 UTC);
        let plus2 = Zone::parse("time_zone", "+02:00").unwrap();
        // 03:30 local now; 03:00 local is tomorrow, 23.5 h away.
        assert_eq!(until_next(now, &plus2, 180).as_secs(), 23 * 3600 + 1800);
        assert_eq!(until_next(now, &Zone::utc(), 180).as_secs(), 3600 + 1800);
        // The night summer time begins in Lisbon, 03:00 comes 23 h after the previous one.
        let lisbon = Zone::parse("time_zone", "Europe/Lisbon").unwrap();
        let before = time::macros::datetime!(2026-03-28 03:00 UTC);
        assert_eq!(until_next(before, &lisbon, 180).as_secs(), 23 * 3600);
    }
}
