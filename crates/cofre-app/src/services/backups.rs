//! Backups to the customer's own storage: targets, jobs, runs, the scheduler and the alerts.
//!
//! * A target's secret (SSH private key, S3 secret access key) is sealed under the master key,
//!   bound to the target's name, and opened only for the length of one operation.
//! * An SSH target's host keys are pinned at first contact (or given with `known_hosts`); from
//!   then on ssh checks them strictly. Pinning is audited, and the fingerprints are shown.
//! * A run: a row `running` (audited `backup.run_start`), then in a task: the write test, the
//!   source files, the transfer; then the row `ok` or `failed` in the transaction that audits
//!   `backup.run` (bytes, duration) or `backup.failed`. A failure is an alert: the audit entry, an
//!   error log line, `cofre_backup_failures_total` on /metrics, and the `[alerts]` webhook.
//! * A run still `running` when the server starts was interrupted: it is marked failed (and
//!   alerted) before anything else runs.
//! * Duties by mode (issue 13): a job's duty follows from its kind ([`Duty::of_kind`]), and a
//!   target holds backups of one duty, set at creation or by its first job and never changed.
//!   Every call on a target, job or run needs the role table's action for its duty
//!   ([`Duty::action`]); lists show only what the caller may see. So in saas the vendor's
//!   operator never sees, tests, runs or removes the customer's credential backups, nor the key
//!   to the customer's server they go to, and the customer's admins only see the system side
//!   through the snapshot list.
//! * Only already-encrypted material leaves the instance: recordings (sealed per frame), break-glass
//!   files (age), snapshots (encrypted by their writer), and for `system` a database copy and the
//!   config file sealed under the master key, with the keyring (wrapped by its key-encryption key).

use super::Orbit;
use super::{timestamp, App, Principal};
use crate::backup::rsync::{self, SshTarget};
use crate::backup::s3::{self, S3Settings, S3Target};
use crate::backup::schedule::Schedule;
use crate::backup::{
    list_files, local::DirTarget, Progress, Source, SourceFile, Target, TargetError,
};
use crate::error::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_core::names::check_identifier;
use cofre_core::role::{Duty, Mode};
use cofre_crypto::{envelope, SealedSecret};
use cofre_proto::{
    BackupJobInfo, BackupRunInfo, BackupStatus, BackupTargetInfo, BackupTestResult,
    NewBackupJobRequest, NewBackupTargetRequest,
};
use cofre_store::backups::{
    BackupJobRow, BackupRunRow, BackupTargetRow, NewBackupJob, NewBackupTarget, RunEnd,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// What a job backs up.
pub const KINDS: [&str; 4] = ["recordings", "credentials", "snapshots", "system"];

/// Where the snapshot feature keeps its files.
pub const SNAPSHOTS_SUBDIR: &str = "snapshots";

/// How often the scheduler looks at the jobs when nothing wakes it.
const SCHEDULER_TICK: Duration = Duration::from_secs(15);

/// Shared by the services, the scheduler and the running runs.
#[derive(Default)]
pub struct BackupState {
    notify: tokio::sync::Notify,
    /// A break-glass file was written: the `credentials` jobs run.
    credentials_due: AtomicBool,
    /// Runs in progress on this node: run id → (job id, progress).
    running: Mutex<HashMap<i64, (i64, Progress)>>,
    /// The app, for spawning runs (set when the scheduler starts).
    app: OnceLock<Weak<App>>,
}

fn target_aad(name: &str) -> String {
    format!("cofre:backup-target:{name}")
}

fn target_info(t: &BackupTargetRow) -> BackupTargetInfo {
    BackupTargetInfo {
        name: t.name.clone(),
        kind: t.kind.clone(),
        duty: t.duty.clone(),
        location: t.location.clone(),
        port: t.port.and_then(|p| u16::try_from(p).ok()),
        endpoint: t.endpoint.clone(),
        host_keys: t
            .known_hosts
            .as_deref()
            .map(crate::ssh_keys::known_hosts_fingerprints)
            .unwrap_or_default(),
        created_at: t.created_at.clone(),
        created_by: t.created_by.clone(),
        last_ok_at: t.last_ok_at.clone(),
        last_error_at: t.last_error_at.clone(),
        last_error: t.last_error.clone(),
    }
}

fn run_info(r: &BackupRunRow, progress: Option<cofre_proto::BackupProgress>) -> BackupRunInfo {
    BackupRunInfo {
        id: r.id,
        job: r.job.clone(),
        reason: r.reason.clone(),
        status: r.status.clone(),
        started_at: r.started_at.clone(),
        ended_at: r.ended_at.clone(),
        files_sent: u64::try_from(r.files_sent).unwrap_or(0),
        bytes_sent: u64::try_from(r.bytes_sent).unwrap_or(0),
        duration_ms: r.duration_ms.and_then(|d| u64::try_from(d).ok()),
        error: r.error.clone(),
        progress: if r.status == "running" {
            progress
        } else {
            None
        },
    }
}

fn parse_time(text: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

fn one_of(req: &NewBackupTargetRequest) -> Result<&'static str> {
    let given: Vec<&str> = [
        ("dir", req.dir.is_some()),
        ("ssh", req.ssh.is_some()),
        ("s3", req.s3.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| *k)
    .collect();
    match given.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::invalid(
            "dir",
            "dir: give one of dir (a directory), ssh (user@host:/path) or s3 (s3://bucket/prefix)",
        )),
        _ => Err(Error::invalid(
            given[1],
            format!("{}: give only one of dir, ssh or s3", given[1]),
        )),
    }
}

fn forbid(field: &str, set: bool, kind: &str) -> Result<()> {
    if set {
        Err(Error::invalid(
            field,
            format!("{field}: does not apply to a {kind} target"),
        ))
    } else {
        Ok(())
    }
}

/// The duty a stored target holds (`None`: not yet bound). An unknown value (a newer version's)
/// is treated as a duty nobody holds here.
fn target_duty(t: &BackupTargetRow) -> std::result::Result<Option<Duty>, ()> {
    match t.duty.as_deref() {
        None => Ok(None),
        Some(d) => Duty::parse(d).map(Some).ok_or(()),
    }
}

/// The duty of a stored job, by its kind.
fn job_duty(job: &BackupJobRow) -> Result<Duty> {
    Duty::of_kind(&job.kind).ok_or_else(|| {
        Error::internal(
            "reading a backup job",
            format!("job {} has an unknown kind {}", job.name, job.kind),
        )
    })
}

/// Who keeps backups of this duty in this mode, for refusals.
fn keeper(mode: Mode, duty: Duty) -> &'static str {
    match (mode, duty) {
        (_, Duty::Credentials) => "the customer's admins",
        (Mode::Saas, Duty::System) => "the vendor's operator",
        (Mode::PrivateSaas, Duty::System) => "the customer's admins and the vendor's operator",
        (Mode::OnPrem, Duty::System) => "the admins",
    }
}

fn may_duty(who: &Principal, duty: Duty) -> bool {
    who.require(duty.action()).is_ok()
}

/// Refuses (403) a caller whose role does not keep `duty`, naming the object and whose it is.
fn require_duty(who: &Principal, duty: Duty, object: &str) -> Result<()> {
    who.require(duty.action()).map_err(|e| {
        if e.kind == ErrorKind::Forbidden && e.code == ErrorCode::Forbidden {
            Error::forbidden(format!(
                "the {} role may not do this: {object}: {} are kept by {} in {} mode",
                who.role(),
                duty.label(),
                keeper(who.mode(), duty),
                who.mode().as_str()
            ))
        } else {
            e
        }
    })
}

/// Any backup at all: the role keeps at least one duty (else the role table's refusal).
pub(crate) fn require_some_duty(who: &Principal) -> Result<()> {
    if Duty::ALL.iter().any(|d| may_duty(who, *d)) {
        Ok(())
    } else {
        who.require(Duty::System.action())
    }
}

/// A target is the caller's when it may keep its duty; an unbound one (its first job decides)
/// only when it may keep both, since either could follow.
fn may_target(who: &Principal, t: &BackupTargetRow) -> bool {
    match target_duty(t) {
        Ok(Some(d)) => may_duty(who, d),
        Ok(None) => Duty::ALL.iter().all(|d| may_duty(who, *d)),
        Err(()) => false,
    }
}

fn require_target(who: &Principal, t: &BackupTargetRow) -> Result<()> {
    let object = format!("backup target {}", t.name);
    match target_duty(t) {
        Ok(Some(d)) => require_duty(who, d, &object),
        Ok(None) => Duty::ALL
            .iter()
            .try_for_each(|d| require_duty(who, *d, &object)),
        Err(()) => Err(Error::forbidden(format!(
            "{object} holds backups of duty {:?}, which this version does not know",
            t.duty.as_deref().unwrap_or_default()
        ))),
    }
}

impl Orbit<'_> {
    /// Refuses a caller who may not touch this target (its duty is not the caller's).
    pub(crate) fn require_backup_target(&self, who: &Principal, t: &BackupTargetRow) -> Result<()> {
        require_some_duty(who)?;
        require_target(who, t)
    }

    /// Refuses a caller who may not touch this job (its duty is not the caller's).
    pub(crate) fn require_backup_job(&self, who: &Principal, job: &BackupJobRow) -> Result<()> {
        require_some_duty(who)?;
        require_duty(who, job_duty(job)?, &format!("backup job {}", job.name))
    }

    /// A break-glass file was written: the `credentials` jobs should copy it soon.
    pub(crate) fn backups_breakglass_written(&self) {
        self.backups.credentials_due.store(true, Ordering::SeqCst);
        self.backups.notify.notify_one();
    }

    pub async fn add_backup_target(
        &self,
        who: &Principal,
        req: &NewBackupTargetRequest,
    ) -> Result<BackupTargetInfo> {
        require_some_duty(who)?;
        check_identifier("name", &req.name)?;
        let duty = match req.duty.as_deref() {
            Some(text) => {
                let duty = Duty::parse(text).ok_or_else(|| {
                    Error::invalid(
                        "duty",
                        "duty: must be credentials (break-glass files) or system (system, snapshots, recordings)",
                    )
                })?;
                require_duty(who, duty, &format!("a target for {}", duty.label()))?;
                Some(duty)
            }
            // One duty: the target is for it. Both: its first job decides.
            None => match Duty::ALL
                .into_iter()
                .filter(|d| may_duty(who, *d))
                .collect::<Vec<_>>()
                .as_slice()
            {
                [one] => Some(*one),
                _ => None,
            },
        };
        let kind = one_of(req)?;
        let mut port = None;
        let mut known_hosts = None;
        let mut secret_plain: Option<Zeroizing<String>> = None;
        let location;
        match kind {
            "dir" => {
                let dir = req.dir.as_deref().unwrap_or_default();
                check_backup_dir(dir, &self.config.data_dir)?;
                for (f, set) in [
                    ("port", req.port.is_some()),
                    ("ssh_private_key", req.ssh_private_key.is_some()),
                    ("known_hosts", req.known_hosts.is_some()),
                    ("endpoint", req.endpoint.is_some()),
                    ("region", req.region.is_some()),
                    ("access_key_id", req.access_key_id.is_some()),
                    ("secret_access_key", req.secret_access_key.is_some()),
                ] {
                    forbid(f, set, "dir")?;
                }
                location = dir.to_owned();
            }
            "ssh" => {
                let text = req.ssh.as_deref().unwrap_or_default();
                rsync::parse_location(text)
                    .map_err(|e| Error::invalid("ssh", format!("ssh: {e}")))?;
                let key = req.ssh_private_key.as_ref().ok_or_else(|| {
                    Error::invalid(
                        "ssh_private_key",
                        "ssh_private_key: an SSH target needs the private key it logs in with (--key-file)",
                    )
                })?;
                rsync::check_private_key(key.expose()).map_err(|e| {
                    Error::invalid("ssh_private_key", format!("ssh_private_key: {e}"))
                })?;
                if let Some(kh) = &req.known_hosts {
                    crate::ssh_keys::known_hosts("known_hosts", kh)?;
                    known_hosts = Some(kh.clone());
                }
                if req.port == Some(0) {
                    return Err(Error::invalid("port", "port: must be between 1 and 65535"));
                }
                for (f, set) in [
                    ("endpoint", req.endpoint.is_some()),
                    ("region", req.region.is_some()),
                    ("access_key_id", req.access_key_id.is_some()),
                    ("secret_access_key", req.secret_access_key.is_some()),
                ] {
                    forbid(f, set, "ssh")?;
                }
                port = Some(i64::from(req.port.unwrap_or(22)));
                secret_plain = Some(Zeroizing::new(key.expose().to_owned()));
                location = text.to_owned();
            }
            _ => {
                let text = req.s3.as_deref().unwrap_or_default();
                s3::parse_location(text).map_err(|e| Error::invalid("s3", format!("s3: {e}")))?;
                if let Some(ep) = &req.endpoint {
                    if !(ep.starts_with("http://") || ep.starts_with("https://"))
                        || ep.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        return Err(Error::invalid(
                            "endpoint",
                            "endpoint: must be an http:// or https:// URL",
                        ));
                    }
                }
                let key_id = req.access_key_id.as_deref().unwrap_or_default();
                if key_id.is_empty()
                    || key_id.len() > 128
                    || key_id.chars().any(|c| !c.is_ascii_graphic())
                {
                    return Err(Error::invalid(
                        "access_key_id",
                        "access_key_id: an S3 target needs an access key id (--access-key-id or AWS_ACCESS_KEY_ID)",
                    ));
                }
                let secret = req.secret_access_key.as_ref().filter(|s| !s.expose().is_empty()).ok_or_else(|| {
                    Error::invalid(
                        "secret_access_key",
                        "secret_access_key: an S3 target needs a secret access key (--secret-access-key-stdin or AWS_SECRET_ACCESS_KEY)",
                    )
                })?;
                for (f, set) in [
                    ("port", req.port.is_some()),
                    ("ssh_private_key", req.ssh_private_key.is_some()),
                    ("known_hosts", req.known_hosts.is_some()),
                ] {
                    forbid(f, set, "s3")?;
                }
                secret_plain = Some(Zeroizing::new(secret.expose().to_owned()));
                location = text.to_owned();
            }
        }
        let sealed = match &secret_plain {
            Some(s) => Some(
                self.with_master(|mk| {
                    envelope::seal(mk, s.as_bytes(), target_aad(&req.name).as_bytes())
                })?
                .map_err(|e| Error::internal("sealing the target's secret", e))?,
            ),
            None => None,
        };
        drop(secret_plain);
        let now = self.now_text();
        let mut tx = self.store.write().await?;
        tx.backup_insert_target(NewBackupTarget {
            name: &req.name,
            kind,
            duty: duty.map(Duty::as_str),
            location: &location,
            port,
            endpoint: req.endpoint.as_deref(),
            region: req.region.as_deref(),
            access_key_id: req.access_key_id.as_deref(),
            known_hosts: known_hosts.as_deref(),
            secret: sealed
                .as_ref()
                .map(|s| (s.wrapped_key.as_slice(), s.ciphertext.as_slice())),
            created_at: &now,
            created_by: &who.username,
        })
        .await?;
        let mut entry = NewAuditEntry::new(
            &who.username,
            "backup.target_add",
            format!("backup-target:{}", req.name),
        )
        .detail("kind", kind)
        .detail("duty", duty.map(Duty::as_str))
        .detail("location", location.as_str());
        if let Some(kh) = &known_hosts {
            entry = entry.detail("host_keys", crate::ssh_keys::known_hosts_fingerprints(kh));
        }
        self.commit(tx, entry).await?;
        let row = self
            .store
            .backup_target(&req.name)
            .await?
            .ok_or_else(|| Error::not_found(format!("backup target {}", req.name)))?;
        Ok(target_info(&row))
    }

    /// The targets the caller may see (those of its duties).
    pub async fn list_backup_targets(&self, who: &Principal) -> Result<Vec<BackupTargetInfo>> {
        require_some_duty(who)?;
        Ok(self
            .store
            .backup_targets()
            .await?
            .iter()
            .filter(|t| may_target(who, t))
            .map(target_info)
            .collect())
    }

    /// The write test, on demand (pins an SSH host's keys if this is the first contact).
    pub async fn test_backup_target(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<BackupTestResult> {
        require_some_duty(who)?;
        let row = self
            .store
            .backup_target(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("backup target {name}")))?;
        require_target(who, &row)?;
        let started = Instant::now();
        let mut pinned = Vec::new();
        let outcome = match self.open_target(&row, &who.username, &mut pinned).await {
            Ok(target) => target.probe().await,
            Err(e) => Err(e),
        };
        let error = outcome.err().map(|e| e.0);
        let mut entry = NewAuditEntry::new(
            &who.username,
            "backup.target_test",
            format!("backup-target:{name}"),
        );
        if let Some(e) = &error {
            entry = entry.outcome("failed").detail("error", e.as_str());
        }
        let mut tx = self.store.write().await?;
        tx.backup_target_state(row.id, &self.now_text(), error.as_deref())
            .await?;
        self.commit(tx, entry).await?;
        Ok(BackupTestResult {
            target: name.to_owned(),
            ok: error.is_none(),
            error,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            pinned_host_keys: pinned,
        })
    }
}

impl App {
    /// Opens a target for one operation. An SSH target seen for the first time has its host keys
    /// pinned (audited) first; they are reported in `pinned`.
    async fn open_target(
        &self,
        row: &BackupTargetRow,
        actor: &str,
        pinned: &mut Vec<String>,
    ) -> std::result::Result<Target, TargetError> {
        let secret = match &row.secret {
            Some((wrapped_key, ciphertext)) => {
                let sealed = SealedSecret {
                    wrapped_key: wrapped_key.clone(),
                    ciphertext: ciphertext.clone(),
                };
                let plain = self
                    .with_master(|mk| envelope::open(mk, &sealed, target_aad(&row.name).as_bytes()))
                    .map_err(|e| TargetError::new(e.message))?
                    .map_err(|_| TargetError::new("the target's sealed secret does not open"))?;
                let text = String::from_utf8(plain.to_vec())
                    .map_err(|_| TargetError::new("the target's secret is not UTF-8"))?;
                Some(Zeroizing::new(text))
            }
            None => None,
        };
        match row.kind.as_str() {
            "dir" => Ok(Target::Dir(DirTarget {
                root: row.location.clone().into(),
            })),
            "ssh" => {
                let (user, host, path) =
                    rsync::parse_location(&row.location).map_err(TargetError::new)?;
                let port = row.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(22);
                let known_hosts = match &row.known_hosts {
                    Some(k) => k.clone(),
                    None => {
                        let scanned = rsync::keyscan(&host, port).await?;
                        self.pin_host_keys(row, actor, &scanned)
                            .await
                            .map_err(|e| TargetError::new(format!("pinning the host keys: {e}")))?;
                        pinned.extend(crate::ssh_keys::known_hosts_fingerprints(&scanned));
                        scanned
                    }
                };
                Ok(Target::Ssh(SshTarget {
                    user,
                    host,
                    port,
                    path,
                    private_key: secret
                        .ok_or_else(|| TargetError::new("the SSH target has no key"))?,
                    known_hosts,
                    scratch: self.staging_root(),
                }))
            }
            "s3" => {
                let (bucket, prefix) =
                    s3::parse_location(&row.location).map_err(TargetError::new)?;
                Ok(Target::S3(S3Target::new(S3Settings {
                    bucket: &bucket,
                    prefix: &prefix,
                    endpoint: row.endpoint.as_deref(),
                    region: row.region.as_deref(),
                    access_key_id: row.access_key_id.as_deref().unwrap_or_default(),
                    secret_access_key: secret
                        .ok_or_else(|| TargetError::new("the S3 target has no secret"))?,
                })?))
            }
            other => Err(TargetError::new(format!("unknown target kind {other}"))),
        }
    }

    async fn pin_host_keys(
        &self,
        row: &BackupTargetRow,
        actor: &str,
        known_hosts: &str,
    ) -> Result<()> {
        let mut tx = self.store.write().await?;
        if !tx.backup_pin_host_keys(row.id, known_hosts).await? {
            return Ok(());
        }
        self.commit(
            tx,
            NewAuditEntry::new(
                actor,
                "backup.host_key_pinned",
                format!("backup-target:{}", row.name),
            )
            .detail(
                "host_keys",
                crate::ssh_keys::known_hosts_fingerprints(known_hosts),
            ),
        )
        .await
    }
}

impl Orbit<'_> {
    pub async fn add_backup_job(
        &self,
        who: &Principal,
        req: &NewBackupJobRequest,
    ) -> Result<BackupJobInfo> {
        require_some_duty(who)?;
        let duty = Duty::of_kind(&req.kind)
            .filter(|_| KINDS.contains(&req.kind.as_str()))
            .ok_or_else(|| {
                Error::invalid("kind", format!("kind: must be one of {}", KINDS.join(", ")))
            })?;
        require_duty(who, duty, &format!("a {} job", req.kind))?;
        check_identifier("target", &req.target)?;
        Schedule::parse(&req.schedule)
            .map_err(|e| Error::invalid("schedule", format!("schedule: {e}")))?;
        let name = req
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", req.kind, req.target));
        check_identifier("name", &name)?;
        let target = self
            .store
            .backup_target(&req.target)
            .await?
            .ok_or_else(|| {
                Error::invalid(
                    "target",
                    format!(
                        "target: there is no backup target {} (`cofre backup target list`)",
                        req.target
                    ),
                )
            })?;
        let other_duty = |held: &str| {
            Error::invalid(
                "target",
                format!(
                    "target: backup target {} holds {held}; a {} job is one of the {}: give it a target of its own (`cofre backup target add NAME --duty {}`)",
                    req.target,
                    req.kind,
                    duty.label(),
                    duty.as_str()
                ),
            )
        };
        match target_duty(&target) {
            Ok(Some(held)) if held != duty => {
                // Someone who may not see the target is refused as for any call on it.
                require_target(who, &target)?;
                return Err(other_duty(held.label()));
            }
            // Its own duty, which the caller keeps (checked above).
            Ok(Some(_)) => {}
            // Unbound (only who keeps both sees it), or a duty this version does not know.
            Ok(None) | Err(()) => require_target(who, &target)?,
        }
        let now = self.now_text();
        let mut tx = self.store.write().await?;
        if !tx.backup_bind_target_duty(target.id, duty.as_str()).await? {
            return Err(other_duty("backups of the other duty"));
        }
        tx.backup_insert_job(NewBackupJob {
            name: &name,
            kind: &req.kind,
            target_id: target.id,
            schedule: req.schedule.trim(),
            created_at: &now,
            created_by: &who.username,
        })
        .await?;
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                "backup.job_add",
                format!("backup-job:{name}"),
            )
            .detail("kind", req.kind.as_str())
            .detail("duty", duty.as_str())
            .detail("target", req.target.as_str())
            .detail("schedule", req.schedule.trim()),
        )
        .await?;
        let job = self
            .store
            .backup_job(&name)
            .await?
            .ok_or_else(|| Error::not_found(format!("backup job {name}")))?;
        self.job_info(&job).await
    }
}

impl App {
    async fn job_info(&self, job: &BackupJobRow) -> Result<BackupJobInfo> {
        let last_success = self.store.backup_last_run(job.id, Some("ok")).await?;
        let last_failure = self.store.backup_last_run(job.id, Some("failed")).await?;
        let running = self.store.backup_last_run(job.id, Some("running")).await?;
        let last_any = self.store.backup_last_run(job.id, None).await?;
        let since = last_any
            .as_ref()
            .map(|r| r.started_at.clone())
            .unwrap_or_else(|| job.created_at.clone());
        let next_run = Schedule::parse(&job.schedule)
            .ok()
            .and_then(|s| s.next_after(parse_time(&since)?, &self.config.instance.time_zone))
            .map(timestamp);
        Ok(BackupJobInfo {
            name: job.name.clone(),
            kind: job.kind.clone(),
            duty: job_duty(job)?.as_str().to_owned(),
            target: job.target.clone(),
            schedule: job.schedule.clone(),
            created_at: job.created_at.clone(),
            last_success: last_success.as_ref().map(|r| run_info(r, None)),
            last_failure: last_failure.as_ref().map(|r| run_info(r, None)),
            running: running
                .as_ref()
                .map(|r| run_info(r, self.progress_of(r.id))),
            next_run,
        })
    }

    fn progress_of(&self, run_id: i64) -> Option<cofre_proto::BackupProgress> {
        self.backups
            .running
            .lock()
            .ok()?
            .get(&run_id)
            .map(|(_, p)| p.snapshot())
    }
}

impl Orbit<'_> {
    pub async fn get_backup_status(&self, who: &Principal) -> Result<BackupStatus> {
        require_some_duty(who)?;
        let targets = self
            .store
            .backup_targets()
            .await?
            .iter()
            .filter(|t| may_target(who, t))
            .map(target_info)
            .collect();
        let mut jobs = Vec::new();
        for job in self.store.backup_jobs().await? {
            if may_duty(who, job_duty(&job)?) {
                jobs.push(self.job_info(&job).await?);
            }
        }
        Ok(BackupStatus { targets, jobs })
    }

    pub async fn get_backup_run(&self, who: &Principal, id: i64) -> Result<BackupRunInfo> {
        require_some_duty(who)?;
        let run = self
            .store
            .backup_run(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("backup run {id}")))?;
        let job = self
            .store
            .backup_job(&run.job)
            .await?
            .ok_or_else(|| Error::not_found(format!("backup run {id}")))?;
        require_duty(
            who,
            job_duty(&job)?,
            &format!("backup run {id} (job {})", run.job),
        )?;
        Ok(run_info(&run, self.progress_of(id)))
    }

    /// Starts a run of a job now; it goes on in the background (follow it with
    /// [`Orbit::get_backup_run`]).
    pub async fn run_backup_now(&self, who: &Principal, job: &str) -> Result<BackupRunInfo> {
        require_some_duty(who)?;
        let job = self
            .store
            .backup_job(job)
            .await?
            .ok_or_else(|| Error::not_found(format!("backup job {job}")))?;
        require_duty(who, job_duty(&job)?, &format!("backup job {}", job.name))?;
        let id = self.start_run(&job, &who.username, "manual").await?;
        self.get_backup_run(who, id).await
    }
}

impl App {
    /// Records the run as started (audited) and hands it to a task.
    async fn start_run(&self, job: &BackupJobRow, actor: &str, reason: &str) -> Result<i64> {
        let app = self
            .backups
            .app
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| {
                Error::internal("starting a backup run", "the backup runner is not started")
            })?;
        let now = self.now_text();
        let mut tx = self.store.write().await?;
        let id = tx
            .backup_start_run(job.id, reason, &now)
            .await
            .map_err(|e| match e {
                cofre_store::StoreError::Conflict { .. } => Error::new(
                    ErrorKind::Conflict,
                    ErrorCode::BackupRunning,
                    format!(
                        "job {} is already running; `cofre backup status` shows its progress",
                        job.name
                    ),
                ),
                other => other.into(),
            })?;
        self.commit(
            tx,
            NewAuditEntry::new(
                actor,
                "backup.run_start",
                format!("backup-job:{}", job.name),
            )
            .detail("run", id)
            .detail("reason", reason)
            .detail("kind", job.kind.as_str())
            .detail("target", job.target.as_str()),
        )
        .await?;
        let progress = Progress::default();
        progress.phase("starting");
        if let Ok(mut r) = self.backups.running.lock() {
            r.insert(id, (job.id, progress.clone()));
        }
        let job = job.clone();
        tokio::spawn(async move {
            app.execute_run(id, &job, &progress).await;
            if let Ok(mut r) = app.backups.running.lock() {
                r.remove(&id);
            }
        });
        Ok(id)
    }

    async fn execute_run(&self, run_id: i64, job: &BackupJobRow, progress: &Progress) {
        let started = Instant::now();
        let result = self.transfer(job, progress).await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let now = self.now_text();
        let object = format!("backup-job:{}", job.name);
        let (end, entry) = match &result {
            Ok(stats) => (
                RunEnd {
                    status: "ok",
                    ended_at: &now,
                    files_sent: i64::try_from(stats.files_sent).unwrap_or(i64::MAX),
                    bytes_sent: i64::try_from(stats.bytes_sent).unwrap_or(i64::MAX),
                    duration_ms,
                    error: None,
                },
                NewAuditEntry::new("system", "backup.run", object)
                    .detail("run", run_id)
                    .detail("kind", job.kind.as_str())
                    .detail("target", job.target.as_str())
                    .detail("files", stats.files_sent)
                    .detail("bytes", stats.bytes_sent)
                    .detail("duration_ms", duration_ms),
            ),
            Err(e) => (
                RunEnd {
                    status: "failed",
                    ended_at: &now,
                    files_sent: 0,
                    bytes_sent: 0,
                    duration_ms,
                    error: Some(e.0.as_str()),
                },
                NewAuditEntry::new("system", "backup.failed", object)
                    .outcome("failed")
                    .detail("run", run_id)
                    .detail("kind", job.kind.as_str())
                    .detail("target", job.target.as_str())
                    .detail("error", e.0.as_str())
                    .detail("duration_ms", duration_ms),
            ),
        };
        let saved: Result<()> = async {
            let mut tx = self.store.write().await?;
            tx.backup_target_state(job.target_id, &now, end.error)
                .await?;
            tx.backup_finish_run(run_id, end).await?;
            self.commit(tx, entry).await
        }
        .await;
        if let Err(e) = saved {
            tracing::error!(run = run_id, error = %e, "ALERT: could not record the end of a backup run");
        }
        let job_label = job.name.clone();
        match result {
            Ok(stats) => {
                metrics::counter!("cofre_backup_runs_total", "job" => job_label.clone(), "status" => "ok").increment(1);
                metrics::counter!("cofre_backup_bytes_sent_total", "job" => job_label.clone())
                    .increment(stats.bytes_sent);
                metrics::gauge!("cofre_backup_last_success_timestamp_seconds", "job" => job_label)
                    .set(self.now().unix_timestamp() as f64);
                tracing::info!(job = %job.name, run = run_id, files = stats.files_sent, bytes = stats.bytes_sent, duration_ms, "backup run done");
            }
            Err(e) => {
                metrics::counter!("cofre_backup_runs_total", "job" => job_label, "status" => "failed").increment(1);
                self.backup_alert(&job.name, &job.target, run_id, &e.0);
            }
        }
    }

    /// A failed run: an error log line, the failure metric, and the webhook (the audit entry is
    /// written with the run's end).
    fn backup_alert(&self, job: &str, target: &str, run_id: i64, error: &str) {
        tracing::error!(job, target, run = run_id, error, "ALERT: backup run failed");
        metrics::counter!("cofre_backup_failures_total", "job" => job.to_owned()).increment(1);
        metrics::gauge!("cofre_backup_last_failure_timestamp_seconds", "job" => job.to_owned())
            .set(self.now().unix_timestamp() as f64);
        if let Some(url) = self.config.alerts.webhook_url.clone() {
            let body = serde_json::json!({
                "event": "backup.failed",
                "instance": self.instance_id(),
                "job": job,
                "target": target,
                "run": run_id,
                "error": error,
                "at": self.now_text(),
            });
            tokio::spawn(send_webhook(url, body));
        }
    }

    /// Probe, gather, send.
    async fn transfer(
        &self,
        job: &BackupJobRow,
        progress: &Progress,
    ) -> std::result::Result<crate::backup::SyncStats, TargetError> {
        let row = self
            .store
            .backup_target(&job.target)
            .await
            .map_err(|e| TargetError::new(format!("reading the target: {e}")))?
            .ok_or_else(|| TargetError::new(format!("backup target {} is gone", job.target)))?;
        progress.phase("probing");
        let target = self.open_target(&row, "system", &mut Vec::new()).await?;
        target.probe().await?;
        progress.phase("preparing");
        // Staging for what must be made before it is sent (the `system` copy): inside the data dir,
        // which is private (0700), and removed when the run ends.
        let staging_root = self.staging_root();
        cofre_crypto::files::ensure_private_dir(&staging_root).map_err(|e| {
            TargetError::new(format!("cannot create {}: {e}", staging_root.display()))
        })?;
        let staging = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(&staging_root)
            .map_err(|e| TargetError::new(format!("cannot create a staging directory: {e}")))?;
        let source = self
            .backup_source(&job.kind, &format!("j{}", job.id), staging.path())
            .await?;
        let stats = target.sync(&source, progress).await?;
        drop(staging);
        Ok(stats)
    }

    /// Where runs keep what exists only while they run (SSH key files, the `system` copy before
    /// it is sealed). Emptied at every start: a killed run's leftovers go then.
    fn staging_root(&self) -> std::path::PathBuf {
        self.config.data_dir.join(".backup-staging")
    }

    /// The files a kind backs up.
    async fn backup_source(
        &self,
        kind: &str,
        owner: &str,
        staging: &Path,
    ) -> std::result::Result<Source, TargetError> {
        let data = &self.config.data_dir;
        // A walk of thousands of recordings is file-system work: on a blocking thread.
        let listed = |dir: std::path::PathBuf| {
            let kind = kind.to_owned();
            let owner = owner.to_owned();
            async move {
                tokio::task::spawn_blocking(move || {
                    let files = list_files(&dir).map_err(|e| {
                        TargetError::new(format!("cannot list {}: {e}", dir.display()))
                    })?;
                    Ok(Source {
                        kind,
                        owner,
                        base: dir,
                        files,
                    })
                })
                .await
                .map_err(|e| TargetError::new(format!("listing the files: {e}")))?
            }
        };
        match kind {
            // Sealed frame by frame already; a recording still being written is sent as far as
            // it got, and again when it has grown.
            "recordings" => listed(data.join("recordings")).await,
            // age files, encrypted to the break-glass key.
            "credentials" => listed(data.join(super::breakglass::DATA_SUBDIR)).await,
            "snapshots" => listed(data.join(SNAPSHOTS_SUBDIR)).await,
            "system" => {
                let files = self.system_source(staging).await?;
                Ok(Source {
                    kind: kind.to_owned(),
                    owner: owner.to_owned(),
                    base: staging.to_owned(),
                    files,
                })
            }
            other => Err(TargetError::new(format!("unknown backup kind {other}"))),
        }
    }

    /// The `system` kind: a snapshot of everything but the recordings (database copy, config,
    /// keyring, TLS and host keys, break-glass files), in the snapshot format: encrypted under a
    /// key the master key seals, and restored with `cofre snapshot restore FILE`. The only place
    /// that knows how `system` is made.
    async fn system_source(
        &self,
        staging: &Path,
    ) -> std::result::Result<Vec<SourceFile>, TargetError> {
        let meta = self
            .orbit()
            .write_system_snapshot(staging)
            .await
            .map_err(|e| TargetError::new(format!("taking the system snapshot: {}", e.message)))?;
        let mut files = Vec::new();
        for path in [
            crate::snapshot::snapshot_path(staging, &meta.id),
            crate::snapshot::meta_path(staging, &meta.id),
        ] {
            let size = std::fs::metadata(&path)
                .map_err(|e| TargetError::new(format!("{}: {e}", path.display())))?
                .len();
            let rel = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push(SourceFile { rel, path, size });
        }
        Ok(files)
    }
}

impl Orbit<'_> {
    /// Marks runs a previous process left `running` as failed, with an alert each.
    pub async fn fail_interrupted_backup_runs(&self) -> Result<()> {
        let why = "interrupted: the server stopped during the run";
        let mut tx = self.store.write().await?;
        let ids = tx.backup_fail_interrupted(&self.now_text(), why).await?;
        if ids.is_empty() {
            return Ok(());
        }
        self.commit(
            tx,
            NewAuditEntry::new("system", "backup.failed", "backup-runs")
                .outcome("failed")
                .detail("runs", ids.clone())
                .detail("error", why),
        )
        .await?;
        for id in ids {
            let (job, target) = match self.store.backup_run(id).await {
                Ok(Some(r)) => {
                    let target = match self.store.backup_jobs().await {
                        Ok(jobs) => jobs
                            .into_iter()
                            .find(|j| j.id == r.job_id)
                            .map(|j| j.target)
                            .unwrap_or_default(),
                        Err(_) => String::new(),
                    };
                    (r.job, target)
                }
                _ => (String::new(), String::new()),
            };
            self.backup_alert(&job, &target, id, why);
        }
        Ok(())
    }
}

impl App {
    /// One look at the jobs: starts those that are due (and the `credentials` jobs after a new
    /// break-glass file).
    async fn run_due_jobs(&self) -> Result<()> {
        let credentials_due = self.backups.credentials_due.swap(false, Ordering::SeqCst);
        let now = self.now();
        let busy: Vec<i64> = self
            .backups
            .running
            .lock()
            .map(|r| r.values().map(|(job, _)| *job).collect())
            .unwrap_or_default();
        for job in self.store.backup_jobs().await? {
            let wanted_by_breakglass = credentials_due && job.kind == "credentials";
            if busy.contains(&job.id) {
                if wanted_by_breakglass {
                    // It copies the new file when it is done.
                    self.backups.credentials_due.store(true, Ordering::SeqCst);
                }
                continue;
            }
            let reason = if wanted_by_breakglass {
                "breakglass"
            } else {
                let last = self.store.backup_last_run(job.id, None).await?;
                let since = last
                    .map(|r| r.started_at)
                    .unwrap_or_else(|| job.created_at.clone());
                let due = Schedule::parse(&job.schedule)
                    .ok()
                    .and_then(|s| {
                        s.next_after(parse_time(&since)?, &self.config.instance.time_zone)
                    })
                    .is_some_and(|next| next <= now);
                if !due {
                    continue;
                }
                "schedule"
            };
            if let Err(e) = self.start_run(&job, "system", reason).await {
                tracing::warn!(job = %job.name, error = %e, "could not start a scheduled backup run");
            }
        }
        Ok(())
    }
}

pub(crate) async fn send_webhook(url: String, body: serde_json::Value) {
    static CLIENT: OnceLock<Option<reqwest::Client>> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .ok()
    });
    let Some(client) = client else {
        tracing::error!("ALERT webhook: cannot build an HTTP client");
        return;
    };
    match client.post(&url).json(&body).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::error!(status = %r.status(), "ALERT webhook: refused"),
        Err(e) => tracing::error!(error = %e, "ALERT webhook: not delivered"),
    }
}

/// Marks interrupted runs failed, then starts the scheduler. It holds the app weakly and ends when
/// the app is gone.
pub async fn start(app: &Arc<App>) {
    let _ = app.backups.app.set(Arc::downgrade(app));
    let staging = app.staging_root();
    if staging.exists() {
        if let Err(e) = std::fs::remove_dir_all(&staging) {
            tracing::error!(path = %staging.display(), error = %e, "cannot remove a killed backup run's staging directory");
        }
    }
    if let Err(e) = app.orbit().fail_interrupted_backup_runs().await {
        tracing::error!(error = %e, "could not mark interrupted backup runs as failed");
    }
    let weak = Arc::downgrade(app);
    let state = app.backups.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(SCHEDULER_TICK) => {}
                () = state.notify.notified() => {}
            }
            let Some(app) = weak.upgrade() else { return };
            if app.is_sealed() {
                continue;
            }
            if let Err(e) = app.run_due_jobs().await {
                tracing::warn!(error = %e, "backup scheduler");
            }
        }
    });
}

/// Directories a backup may never go to: the system's own, and the instance's data dir (a copy
/// inside it would be copied again by the next snapshot, and one that contains it would overwrite
/// it).
const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin", "/sys",
    "/usr",
];
/// Top-level directories that may hold a backup directory, but are not one themselves.
const SYSTEM_ROOTS: &[&str] = &[
    "/", "/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp", "/var",
];

pub(crate) fn check_backup_dir(dir: &str, data_dir: &std::path::Path) -> Result<()> {
    let bad = |why: &str| Error::invalid("dir", format!("dir: {why}"));
    if !dir.starts_with('/') || dir.chars().any(char::is_control) {
        return Err(bad("must be an absolute path"));
    }
    let path = std::path::Path::new(dir);
    if path.components().any(|c| {
        matches!(
            c,
            std::path::Component::ParentDir | std::path::Component::CurDir
        )
    }) {
        return Err(bad("must not contain '.' or '..' steps"));
    }
    let trimmed = dir.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    if SYSTEM_ROOTS.contains(&trimmed) {
        return Err(bad(&format!(
            "{trimmed} is a system directory; give a directory of its own, e.g. {}/cofre-backup",
            trimmed.trim_end_matches('/')
        )));
    }
    if SYSTEM_TREES
        .iter()
        .any(|t| trimmed == *t || trimmed.starts_with(&format!("{t}/")))
    {
        return Err(bad("is inside a system directory"));
    }
    // The data dir as it is now (it may be relative, or behind a symlink).
    let data = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    if target.starts_with(&data) || data.starts_with(&target) {
        return Err(bad(&format!(
            "must be outside the data dir {} (and not contain it)",
            data.display()
        )));
    }
    Ok(())
}
