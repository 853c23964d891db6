//! Break the glass: key ceremonies, share delivery, and the credential backup file that opens
//! offline with k custodians' shares (the file format is `cofre_breakglass`).
//!
//! * A ceremony makes a new key epoch. The server keeps its public recipient and, until each
//!   custodian fetches it, that custodian's share sealed under the master key (bound to the epoch
//!   and the user). Delivery deletes the sealed share in the same transaction that audits it, so a
//!   share leaves the server exactly once; the last delivery closes the ceremony.
//! * Files are written under the newest *closed* epoch: a file is only useful once its shares are
//!   in the custodians' hands, so a ceremony still collecting shares does not yet replace the
//!   previous epoch's key. A ceremony started while another is still open abandons the open one.
//! * The writer task writes a file after every credential change (debounced: at most one file per
//!   `min_interval_seconds`, and the last change always ends up in a file) and on a schedule, to
//!   `DATA_DIR/breakglass/` and to the configured directory. A failed write alerts: an audit entry,
//!   an error log line and the `cofre_breakglass_write_failures_total` metric.

use super::Orbit;
use super::{App, Principal};
use crate::error::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use cofre_breakglass::{CredentialEntry, Header, Secret, TargetEntry, VersionEntry};
use cofre_core::audit::NewAuditEntry;
use cofre_core::names::check_identifier;
use cofre_core::role::Action;
use cofre_crypto::{envelope, MasterKey, SealedSecret};
use cofre_proto::{
    BreakGlassStatus, CeremonyRequest, CeremonyResponse, CustodianInfo, EpochInfo, ShareResponse,
    WrittenFile,
};
use cofre_store::breakglass::{BackupRow, CustodianRow, EpochRow, NewCustodian};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The subdirectory of the data dir where files are always written.
pub const DATA_SUBDIR: &str = "breakglass";

/// What the writer task and the services share.
#[derive(Default)]
pub struct WriterState {
    notify: tokio::sync::Notify,
    dirty: AtomicBool,
    status: Mutex<WriterStatus>,
}

#[derive(Default, Clone)]
struct WriterStatus {
    last_file: Option<WrittenFile>,
    last_error: Option<String>,
}

fn share_aad(epoch: i64, user_id: i64) -> String {
    format!("cofre:breakglass-share:{epoch}:{user_id}")
}

fn epoch_info(e: &EpochRow, custodians: &[CustodianRow]) -> EpochInfo {
    EpochInfo {
        epoch: u32::try_from(e.epoch).unwrap_or(0),
        recipient: e.recipient.clone(),
        threshold: u8::try_from(e.threshold).unwrap_or(0),
        shares: u8::try_from(e.shares).unwrap_or(0),
        created_at: e.created_at.clone(),
        created_by: e.created_by.clone(),
        closed_at: e.closed_at.clone(),
        abandoned_at: e.abandoned_at.clone(),
        custodians: custodians
            .iter()
            .map(|c| CustodianInfo {
                username: c.username.clone(),
                share_index: u8::try_from(c.share_index).unwrap_or(0),
                delivered_at: c.delivered_at.clone(),
            })
            .collect(),
    }
}

fn epoch_object(epoch: i64) -> String {
    format!("breakglass:epoch:{epoch}")
}

/// What one round of the writer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// No closed key epoch yet: nothing to write, nothing wrong.
    NoEpoch,
    /// At least one directory failed (alerted).
    Failed,
}

/// A file built in memory: its header and bytes (ciphertext only).
pub struct BuiltFile {
    pub header: Header,
    pub bytes: Vec<u8>,
}

impl App {
    /// The instance id that shares and files carry: the keyring id.
    pub fn instance_id(&self) -> &str {
        &self.keyring.keyring_id
    }

    /// A credential (or target) changed: the writer will write a new file soon.
    pub(crate) fn breakglass_changed(&self) {
        self.breakglass.dirty.store(true, Ordering::SeqCst);
        self.breakglass.notify.notify_one();
    }
}

impl Orbit<'_> {
    /// Starts a key ceremony.
    pub async fn start_breakglass_ceremony(
        &self,
        who: &Principal,
        req: &CeremonyRequest,
    ) -> Result<CeremonyResponse> {
        who.require(Action::ManageBreakGlass)?;
        if req.custodians.is_empty() {
            return Err(Error::invalid(
                "custodians",
                "custodians: name at least 2 users, e.g. alice,bob,carol",
            ));
        }
        for (i, name) in req.custodians.iter().enumerate() {
            check_identifier("custodians", name)?;
            if req.custodians[..i].contains(name) {
                return Err(Error::invalid(
                    "custodians",
                    format!("custodians: {name} is named twice; each custodian holds one share"),
                ));
            }
        }
        cofre_breakglass::share::validate_split(req.threshold, req.custodians.len()).map_err(
            |e| match e {
                cofre_breakglass::Error::InvalidParameter { field, reason } => {
                    let field = if field == "shares" {
                        "custodians"
                    } else {
                        field
                    };
                    Error::invalid(field, format!("{field}: {reason}"))
                }
                other => Error::internal("checking the ceremony", other),
            },
        )?;
        if self.is_sealed() {
            return Err(Error::sealed());
        }
        let now = self.now_text();
        let mut tx = self.store.write().await?;
        let mut users = Vec::with_capacity(req.custodians.len());
        for name in &req.custodians {
            let user = tx.user_by_name(name).await?.ok_or_else(|| {
                Error::invalid("custodians", format!("custodians: there is no user {name}"))
            })?;
            let role = cofre_core::role::Role::parse(&user.role);
            if role.is_none_or(|r| r.is_vendor()) {
                return Err(Error::invalid(
                    "custodians",
                    format!(
                        "custodians: {name} has the {} role; vendor roles may not hold break-glass shares",
                        user.role
                    ),
                ));
            }
            users.push(user);
        }
        let epoch = tx.breakglass_next_epoch().await?;
        let epoch_u32 = u32::try_from(epoch)
            .map_err(|_| Error::internal("starting the ceremony", "epoch out of range"))?;
        let ceremony = cofre_breakglass::ceremony(
            self.instance_id(),
            epoch_u32,
            req.threshold,
            req.custodians.len(),
        )
        .map_err(|e| Error::internal("starting the ceremony", e))?;
        let abandoned = tx.breakglass_abandon_open(&now).await?;
        for old in &abandoned {
            tx.append_audit(
                now.clone(),
                NewAuditEntry::new(
                    &who.username,
                    "breakglass.ceremony_abandoned",
                    epoch_object(*old),
                )
                .detail("replaced_by", epoch),
            )
            .await
            .map_err(|e| Error::internal("writing the audit entry", e))?;
        }
        let row = EpochRow {
            epoch,
            recipient: ceremony.recipient.clone(),
            threshold: i64::from(req.threshold),
            shares: req.custodians.len() as i64,
            created_at: now.clone(),
            created_by: who.username.clone(),
            closed_at: None,
            abandoned_at: None,
        };
        tx.breakglass_insert_epoch(&row).await?;
        let mut custodians = Vec::with_capacity(users.len());
        for (user, share) in users.iter().zip(&ceremony.shares) {
            let sealed = self
                .with_master(|mk| {
                    envelope::seal(
                        mk,
                        share.as_str().as_bytes(),
                        share_aad(epoch, user.id).as_bytes(),
                    )
                })?
                .map_err(|e| Error::internal("sealing a share", e))?;
            tx.breakglass_insert_custodian(
                epoch,
                NewCustodian {
                    share_index: i64::from(share.index()),
                    user_id: user.id,
                    username: &user.username,
                    wrapped_key: &sealed.wrapped_key,
                    ciphertext: &sealed.ciphertext,
                },
            )
            .await?;
            custodians.push(CustodianRow {
                epoch,
                share_index: i64::from(share.index()),
                user_id: user.id,
                username: user.username.clone(),
                delivered_at: None,
            });
        }
        drop(ceremony);
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                "breakglass.ceremony_start",
                epoch_object(epoch),
            )
            .detail("threshold", req.threshold)
            .detail("custodians", req.custodians.clone())
            .detail("recipient", row.recipient.as_str()),
        )
        .await?;
        Ok(CeremonyResponse {
            instance: self.instance_id().to_owned(),
            epoch: epoch_info(&row, &custodians),
            abandoned: abandoned
                .iter()
                .filter_map(|e| u32::try_from(*e).ok())
                .collect(),
        })
    }

    /// Hands the caller their share of the newest epoch they are a custodian of, exactly once.
    pub async fn take_breakglass_share(&self, who: &Principal) -> Result<ShareResponse> {
        who.require(Action::OwnAccount)?;
        if self.is_sealed() {
            return Err(Error::sealed());
        }
        let now = self.now_text();
        let mut tx = self.store.write().await?;
        let custody = tx.breakglass_custody(who.user_id).await?;
        let Some(custody) = custody else {
            drop(tx);
            return Err(self
                .share_refused(
                    who,
                    ErrorCode::NoShare,
                    ErrorKind::NotFound,
                    "you are not a custodian of any break-glass key epoch".into(),
                )
                .await);
        };
        let epoch = custody.epoch.epoch;
        if let Some(at) = &custody.custodian.delivered_at {
            drop(tx);
            return Err(self
                .share_refused(
                    who,
                    ErrorCode::ShareAlreadyDelivered,
                    ErrorKind::Conflict,
                    format!(
                        "your share of break-glass epoch {epoch} was already delivered ({at}); the server keeps no copy. \
                         If it is lost, an admin must run a new ceremony (`cofre breakglass ceremony`)"
                    ),
                )
                .await);
        }
        let Some((wrapped_key, ciphertext)) = custody.pending else {
            drop(tx);
            let why = match &custody.epoch.abandoned_at {
                Some(at) => format!(
                    "break-glass epoch {epoch} was replaced by a later ceremony ({at}) before you fetched your share; it no longer exists"
                ),
                None => format!("there is no share of break-glass epoch {epoch} waiting for you"),
            };
            return Err(self
                .share_refused(who, ErrorCode::NoShare, ErrorKind::NotFound, why)
                .await);
        };
        let plain = self
            .with_master(|mk| {
                envelope::open(
                    mk,
                    &SealedSecret {
                        wrapped_key,
                        ciphertext,
                    },
                    share_aad(epoch, who.user_id).as_bytes(),
                )
            })?
            .map_err(|e| Error::internal("opening the share", e))?;
        let text = std::str::from_utf8(&plain)
            .map_err(|_| Error::internal("opening the share", "not UTF-8"))?;
        let share = cofre_breakglass::Share::parse(text)
            .map_err(|e| Error::internal("opening the share", e))?;
        let remaining = tx.breakglass_deliver(epoch, who.user_id, &now).await?;
        let closed = remaining == 0;
        let object = epoch_object(epoch);
        if closed {
            tx.breakglass_close(epoch, &now).await?;
            tx.append_audit(
                now.clone(),
                NewAuditEntry::new(&who.username, "breakglass.share_delivered", &*object)
                    .detail("share_index", share.index()),
            )
            .await
            .map_err(|e| Error::internal("writing the audit entry", e))?;
            self.commit(
                tx,
                NewAuditEntry::new(&who.username, "breakglass.ceremony_close", object)
                    .detail("shares", custody.epoch.shares)
                    .detail("threshold", custody.epoch.threshold),
            )
            .await?;
            // A new epoch is active: write a file under it.
            self.breakglass_changed();
        } else {
            self.commit(
                tx,
                NewAuditEntry::new(&who.username, "breakglass.share_delivered", object)
                    .detail("share_index", share.index())
                    .detail("remaining", remaining),
            )
            .await?;
        }
        Ok(ShareResponse {
            instance: share.instance().to_owned(),
            epoch: share.epoch(),
            share_index: share.index(),
            threshold: share.threshold(),
            shares: u8::try_from(custody.epoch.shares).unwrap_or(0),
            share: cofre_proto::SecretString::new(share.as_str().to_owned()),
            ceremony_closed: closed,
        })
    }
}

impl App {
    /// A refused share request: audited (after the caller's transaction is gone, since the audit
    /// writer needs the write lock), then the error to return.
    async fn share_refused(
        &self,
        who: &Principal,
        code: ErrorCode,
        kind: ErrorKind,
        why: String,
    ) -> Error {
        let entry = NewAuditEntry::new(&who.username, "breakglass.share_refused", "breakglass")
            .outcome("denied")
            .detail("why", why.as_str());
        match self.record(entry).await {
            Ok(()) => Error::new(kind, code, why),
            Err(e) => e,
        }
    }
}

impl Orbit<'_> {
    pub async fn get_breakglass_status(&self, who: &Principal) -> Result<BreakGlassStatus> {
        who.require(Action::ManageBreakGlass)?;
        let epochs = self.store.breakglass_epochs().await?;
        let active = epochs
            .iter()
            .find(|(e, _)| e.closed_at.is_some())
            .and_then(|(e, _)| u32::try_from(e.epoch).ok());
        let status = self
            .breakglass
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        Ok(BreakGlassStatus {
            instance: self.instance_id().to_owned(),
            active_epoch: active,
            epochs: epochs.iter().map(|(e, c)| epoch_info(e, c)).collect(),
            directories: self
                .breakglass_dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect(),
            last_file: status.last_file,
            last_error: status.last_error,
        })
    }

    /// A file on demand for an admin (the same file the writer writes), audited before it is
    /// returned. It holds only ciphertext: opening it takes the custodians' shares.
    pub async fn export_breakglass(&self, who: &Principal) -> Result<BuiltFile> {
        who.require(Action::ManageBreakGlass)?;
        let built = self.build_breakglass().await?.ok_or_else(|| {
            Error::new(
                ErrorKind::Conflict,
                ErrorCode::NoBreakglassEpoch,
                "no break-glass key epoch is complete yet: run `cofre breakglass ceremony`, and have every custodian fetch their share with `cofre breakglass share`",
            )
        })?;
        self.record(
            NewAuditEntry::new(
                &who.username,
                "breakglass.export",
                epoch_object(i64::from(built.header.epoch)),
            )
            .detail("credentials", built.header.credentials)
            .detail("versions", built.header.versions)
            .detail("file", built.header.file_name()),
        )
        .await?;
        Ok(built)
    }

    /// Builds a file of the whole vault under the active epoch; `None` when no epoch is closed.
    pub async fn build_breakglass(&self) -> Result<Option<BuiltFile>> {
        let Some(epoch) = self.store.breakglass_active_epoch().await? else {
            return Ok(None);
        };
        let master = self.with_master(MasterKey::clone)?;
        let rows = self.store.backup_rows().await?;
        // One more anchor of the audit chain, kept wherever the custodians keep the file.
        let audit_head =
            self.signed_audit_head()
                .await?
                .map(|a| cofre_breakglass::file::AuditHead {
                    seq: a.seq,
                    hash: a.hash,
                    mac: a.mac,
                });
        let header = Header {
            instance: self.instance_id().to_owned(),
            epoch: u32::try_from(epoch.epoch)
                .map_err(|_| Error::internal("writing the break-glass file", "epoch"))?,
            threshold: u8::try_from(epoch.threshold)
                .map_err(|_| Error::internal("writing the break-glass file", "threshold"))?,
            written_at: cofre_breakglass::rfc3339(self.now()),
            targets: 0,
            credentials: 0,
            versions: 0,
            recipient: epoch.recipient.clone(),
            audit_head,
        };
        let built = tokio::task::spawn_blocking(move || build_file(header, &rows, &master))
            .await
            .map_err(|e| Error::internal("writing the break-glass file", e))??;
        Ok(Some(built))
    }

    /// DATA_DIR/breakglass, then the configured directory.
    pub fn breakglass_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.config.data_dir.join(DATA_SUBDIR)];
        if let Some(d) = &self.config.breakglass.directory {
            dirs.push(d.clone());
        }
        dirs
    }

    /// Writes a file to every directory (each failure alerted).
    pub async fn write_breakglass_files(&self, reason: &str) -> WriteOutcome {
        let built = match self.build_breakglass().await {
            Ok(Some(b)) => b,
            Ok(None) => {
                tracing::debug!("no closed break-glass epoch yet; no file written");
                return WriteOutcome::NoEpoch;
            }
            Err(e) => {
                self.breakglass_alert(None, None, &e.to_string()).await;
                return WriteOutcome::Failed;
            }
        };
        let mut ok = true;
        let keep = self.config.breakglass.keep_files;
        for dir in self.breakglass_dirs() {
            let path = dir.join(built.header.file_name());
            let result = write_into(&dir, &path, &built.bytes, &built.header, keep);
            match result {
                Ok(()) => {
                    metrics::counter!("cofre_breakglass_files_written_total").increment(1);
                    metrics::gauge!("cofre_breakglass_last_write_timestamp_seconds")
                        .set(self.now().unix_timestamp() as f64);
                    let file = WrittenFile {
                        path: path.display().to_string(),
                        epoch: built.header.epoch,
                        written_at: built.header.written_at.clone(),
                        credentials: built.header.credentials,
                        versions: built.header.versions,
                        reason: reason.to_owned(),
                    };
                    if let Ok(mut s) = self.breakglass.status.lock() {
                        s.last_file = Some(file);
                    }
                    let audited = self
                        .record(
                            NewAuditEntry::new(
                                "system",
                                "breakglass.file_written",
                                epoch_object(i64::from(built.header.epoch)),
                            )
                            .detail("path", path.display().to_string())
                            .detail("credentials", built.header.credentials)
                            .detail("versions", built.header.versions)
                            .detail("reason", reason),
                        )
                        .await;
                    if let Err(e) = audited {
                        tracing::error!(error = %e, "could not audit a break-glass file");
                    }
                }
                Err(e) => {
                    ok = false;
                    self.breakglass_alert(Some(&dir), Some(built.header.epoch), &e)
                        .await;
                }
            }
        }
        if ok {
            if let Ok(mut s) = self.breakglass.status.lock() {
                s.last_error = None;
            }
            // Backup jobs of kind `credentials` copy the new file off the instance.
            self.backups_breakglass_written();
            WriteOutcome::Written
        } else {
            WriteOutcome::Failed
        }
    }
}

impl App {
    /// A failed write: error log, metric, audit entry, and the status's `last_error`.
    async fn breakglass_alert(&self, dir: Option<&Path>, epoch: Option<u32>, error: &str) {
        let dir_text = dir.map(|d| d.display().to_string()).unwrap_or_default();
        tracing::error!(directory = %dir_text, error, "ALERT: the break-glass file could not be written");
        metrics::counter!("cofre_breakglass_write_failures_total").increment(1);
        if let Ok(mut s) = self.breakglass.status.lock() {
            s.last_error = Some(if dir_text.is_empty() {
                format!("{}: {error}", self.now_text())
            } else {
                format!("{}: {dir_text}: {error}", self.now_text())
            });
        }
        let object = epoch.map_or_else(|| "breakglass".to_owned(), |e| epoch_object(i64::from(e)));
        let mut entry = NewAuditEntry::new("system", "breakglass.write_failed", object)
            .outcome("failed")
            .detail("error", error);
        if !dir_text.is_empty() {
            entry = entry.detail("directory", dir_text);
        }
        if let Err(e) = self.record(entry).await {
            tracing::error!(error = %e, "could not audit a failed break-glass write");
        }
    }
}

/// Decrypts each target's secrets and streams them into the age file, one target at a time.
fn build_file(mut header: Header, rows: &[BackupRow], master: &MasterKey) -> Result<BuiltFile> {
    let mut targets_count = 0u64;
    let mut credentials = 0u64;
    let mut last: Option<(i64, Option<i64>)> = None;
    for r in rows {
        if last.map(|(t, _)| t) != Some(r.target_id) {
            targets_count += 1;
        }
        let cred = r.credential.as_ref().map(|c| c.credential_id);
        if cred.is_some() && last != Some((r.target_id, cred)) {
            credentials += 1;
        }
        last = Some((r.target_id, cred));
    }
    header.targets = targets_count;
    header.credentials = credentials;
    header.versions = rows.iter().filter(|r| r.credential.is_some()).count() as u64;

    let fail = |e: cofre_breakglass::Error| Error::internal("writing the break-glass file", e);
    let mut writer =
        cofre_breakglass::Writer::new(Vec::with_capacity(rows.len() * 160 + 4096), header.clone())
            .map_err(fail)?;
    let mut i = 0;
    while i < rows.len() {
        let first = &rows[i];
        let mut target = TargetEntry {
            name: first.target.clone(),
            host: first.host.clone(),
            port: u16::try_from(first.port).unwrap_or(0),
            protocol: first.protocol.clone(),
            tags: first.tags.clone(),
            credentials: Vec::new(),
        };
        while i < rows.len() && rows[i].target_id == first.target_id {
            if let Some(v) = &rows[i].credential {
                let secret = open_version(master, v)?;
                let entry = VersionEntry {
                    version: v.version,
                    kind: v.kind.clone(),
                    secret,
                    created_at: v.created_at.clone(),
                    created_by: v.created_by.clone(),
                };
                match target.credentials.last_mut() {
                    Some(c) if c.account == v.account => c.versions.push(entry),
                    _ => target.credentials.push(CredentialEntry {
                        account: v.account.clone(),
                        kind: v.credential_kind.clone(),
                        current_version: v.current_version,
                        versions: vec![entry],
                    }),
                }
            }
            i += 1;
        }
        writer.target(&target).map_err(fail)?;
        // `target` (and its secrets) is dropped, and wiped, here.
    }
    let bytes = writer.finish().map_err(fail)?;
    Ok(BuiltFile { header, bytes })
}

fn open_version(master: &MasterKey, v: &cofre_store::breakglass::BackupVersion) -> Result<Secret> {
    let sealed = SealedSecret {
        wrapped_key: v.wrapped_key.clone(),
        ciphertext: v.ciphertext.clone(),
    };
    let aad = super::vault::secret_aad(v.credential_id, v.version);
    let plain = envelope::open(master, &sealed, aad.as_bytes())
        .map_err(|e| Error::internal("opening a secret for the break-glass file", e))?;
    let text = String::from_utf8(plain.to_vec())
        .map_err(|_| Error::internal("opening a secret for the break-glass file", "not UTF-8"))?;
    Ok(Secret::new(text))
}

/// Writes one file atomically (0600) into `dir` (created 0700 if missing), then prunes old files.
fn write_into(
    dir: &Path,
    path: &Path,
    bytes: &[u8],
    header: &Header,
    keep: usize,
) -> std::result::Result<(), String> {
    cofre_crypto::files::ensure_private_dir(dir).map_err(|e| e.to_string())?;
    cofre_crypto::files::write_private_file(path, bytes).map_err(|e| e.to_string())?;
    if keep > 0 {
        if let Err(e) = prune(dir, &header.instance, keep) {
            tracing::warn!(directory = %dir.display(), error = %e, "could not prune old break-glass files");
        }
    }
    Ok(())
}

/// Keeps the newest `keep` files of this instance in `dir`, and always the newest file of every
/// epoch, so that no epoch's last file is ever removed by a later ceremony's files.
fn prune(dir: &Path, instance: &str, keep: usize) -> std::io::Result<()> {
    let suffix_of_instance = format!("-{instance}-e");
    let mut files: Vec<(String, String)> = Vec::new(); // (name, epoch)
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(stem) = name
            .strip_prefix("cofre-breakglass-")
            .and_then(|s| s.strip_suffix(".cofre"))
        else {
            continue;
        };
        let Some((_, epoch)) = stem.split_once(&suffix_of_instance) else {
            continue;
        };
        files.push((name.clone(), epoch.to_owned()));
    }
    // Names start with the time, so they sort oldest first.
    files.sort();
    let mut newest_of_epoch: std::collections::HashMap<&str, &str> = Default::default();
    for (name, epoch) in &files {
        newest_of_epoch.insert(epoch, name);
    }
    let excess = files.len().saturating_sub(keep);
    for (name, epoch) in files.iter().take(excess) {
        if newest_of_epoch.get(epoch.as_str()) != Some(&name.as_str()) {
            std::fs::remove_file(dir.join(name))?;
        }
    }
    Ok(())
}

/// When the writer should next write: the pure part of the writer task, so it can be tested.
#[derive(Debug)]
pub(crate) struct Timing {
    min_interval: Duration,
    schedule: Option<Duration>,
    last_write: Option<Instant>,
    next_scheduled: Option<Instant>,
}

impl Timing {
    pub(crate) fn new(
        min_interval: Duration,
        schedule: Option<Duration>,
        next_scheduled: Option<Instant>,
    ) -> Timing {
        Timing {
            min_interval,
            schedule,
            last_write: None,
            next_scheduled,
        }
    }

    /// The next write: a pending change as soon as the last write is `min_interval` old, else the
    /// schedule; `None` when there is nothing to wait for.
    pub(crate) fn next_wake(&self, dirty: bool, now: Instant) -> Option<Instant> {
        let change = dirty.then(|| match self.last_write {
            Some(t) => (t + self.min_interval).max(now),
            None => now,
        });
        match (change, self.next_scheduled) {
            (Some(c), Some(s)) => Some(c.min(s.max(self.earliest(now)))),
            (Some(c), None) => Some(c),
            (None, Some(s)) => Some(s.max(self.earliest(now))),
            (None, None) => None,
        }
    }

    /// Not before `min_interval` after the last write, whatever the reason.
    fn earliest(&self, now: Instant) -> Instant {
        self.last_write.map_or(now, |t| t + self.min_interval)
    }

    pub(crate) fn wrote(&mut self, at: Instant) {
        self.last_write = Some(at);
        self.next_scheduled = self.schedule.map(|s| at + s);
    }

    /// A round that wrote nothing (no epoch yet): the schedule moves on, the interval does not
    /// start, so the first file after a ceremony closes is not delayed.
    pub(crate) fn skipped(&mut self, at: Instant) {
        self.next_scheduled = self.schedule.map(|s| at + s);
    }
}

/// Starts the writer task. It holds the app weakly and ends when the app is gone.
pub fn spawn_writer(app: &Arc<App>) {
    let state = app.breakglass.clone();
    let weak = Arc::downgrade(app);
    let cfg = app.config.breakglass.clone();
    let schedule =
        (cfg.schedule_minutes > 0).then(|| Duration::from_secs(cfg.schedule_minutes * 60));
    // The schedule continues from the newest file on disk, so restarts do not postpone it forever.
    let next = schedule.map(|s| {
        let age = newest_file_age(&app.config.data_dir.join(DATA_SUBDIR));
        Instant::now() + age.map_or(Duration::ZERO, |a| s.saturating_sub(a))
    });
    let timing = Timing::new(
        Duration::from_secs(cfg.min_interval_seconds.max(1)),
        schedule,
        next,
    );
    tokio::spawn(writer_loop(weak, state, timing));
}

fn newest_file_age(dir: &Path) -> Option<Duration> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cofre"))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
        .and_then(|t| t.elapsed().ok())
}

async fn writer_loop(app: Weak<App>, state: Arc<WriterState>, mut timing: Timing) {
    loop {
        let now = Instant::now();
        let dirty = state.dirty.load(Ordering::SeqCst);
        match timing.next_wake(dirty, now) {
            Some(at) if at <= now => {}
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = state.notify.notified() => {}
                }
                continue;
            }
            None => {
                state.notify.notified().await;
                continue;
            }
        }
        let Some(app) = app.upgrade() else { return };
        if app.is_sealed() {
            // Nothing can be read while sealed; look again shortly after an unseal.
            drop(app);
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        let reason = if dirty { "change" } else { "schedule" };
        // Cleared before reading the vault: a change committed from here on marks it again and
        // gets its own file, so the last change always ends up in a file.
        state.dirty.store(false, Ordering::SeqCst);
        match app.orbit().write_breakglass_files(reason).await {
            WriteOutcome::Written => timing.wrote(Instant::now()),
            WriteOutcome::NoEpoch => timing.skipped(Instant::now()),
            WriteOutcome::Failed => {
                // Retry after the minimum interval.
                timing.wrote(Instant::now());
                state.dirty.store(true, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn first_change_writes_at_once_then_at_most_once_a_minute() {
        let t0 = Instant::now();
        let mut t = Timing::new(MIN, Some(DAY), Some(t0 + DAY));
        assert_eq!(t.next_wake(false, t0), Some(t0 + DAY));
        assert_eq!(t.next_wake(true, t0), Some(t0));
        t.wrote(t0);
        // A change 5 s later waits for the minute to pass; a change 2 minutes later goes at once.
        assert_eq!(
            t.next_wake(true, t0 + Duration::from_secs(5)),
            Some(t0 + MIN)
        );
        let later = t0 + 2 * MIN;
        assert_eq!(t.next_wake(true, later), Some(later));
        // Without changes: the next scheduled write, a day after the last one.
        assert_eq!(t.next_wake(false, later), Some(t0 + DAY));
    }

    #[test]
    fn schedule_respects_the_minimum_interval_and_can_be_off() {
        let t0 = Instant::now();
        let mut t = Timing::new(MIN, Some(Duration::from_secs(10)), Some(t0));
        t.wrote(t0);
        assert_eq!(t.next_wake(false, t0), Some(t0 + MIN));
        let off = Timing::new(MIN, None, None);
        assert_eq!(off.next_wake(false, t0), None);
        assert_eq!(off.next_wake(true, t0), Some(t0));
    }

    #[test]
    fn a_round_without_an_epoch_does_not_delay_the_first_file() {
        let t0 = Instant::now();
        let mut t = Timing::new(MIN, Some(DAY), Some(t0));
        t.skipped(t0);
        let soon = t0 + Duration::from_secs(5);
        assert_eq!(t.next_wake(true, soon), Some(soon));
        assert_eq!(t.next_wake(false, soon), Some(t0 + DAY));
    }

    #[test]
    fn prune_keeps_the_newest_and_each_epochs_last_file() {
        let dir = tempfile::tempdir().unwrap();
        let inst = "0123456789abcdef";
        let name =
            |t: u32, e: u32| format!("cofre-breakglass-2024050{t}T000000Z-{inst}-e{e}.cofre");
        for (t, e) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3)] {
            std::fs::write(dir.path().join(name(t, e)), b"x").unwrap();
        }
        std::fs::write(dir.path().join("unrelated.txt"), b"x").unwrap();
        prune(dir.path(), inst, 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                name(2, 1),
                name(4, 2),
                name(5, 3),
                name(6, 3),
                "unrelated.txt".into()
            ]
        );
    }
}
