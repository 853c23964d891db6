//! The offline restore: a snapshot file into an empty data dir, with no server running.
//!
//! Everything is first written under `NEW_DIR/.cofre-restore` and checked (every frame's tag,
//! every member's size and SHA-256, the database copy opens); only then are the members moved
//! into place. A restore that fails removes what it wrote (scratch dir, what it had moved into
//! place, the directory if it made it); one that is killed leaves the scratch dir and, once
//! placing has begun, the names it listed in `.cofre-restore/placing`, which no server reads and
//! the next restore removes before anything else.

use super::format::{self, FormatError, Header, Reader};
use cofre_crypto::datakey::DataKey;
use cofre_crypto::{MasterKey, SealKind, SealedSecret, UnsealOutcome};
use std::path::{Path, PathBuf};

const SCRATCH: &str = ".cofre-restore";

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{0}")]
    Refused(String),
    #[error("database: {0}")]
    Database(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RestoreError {
    let context = context.into();
    move |source| RestoreError::Io { context, source }
}

/// What opens a snapshot's key when the server is not there to do it.
pub enum Unlock {
    /// The instance's `master.key` (the KEK of a key-file keyring).
    KeyFile(PathBuf),
    /// Unseal shares of a Shamir keyring, one per entry; k of them are needed.
    Shares(Vec<zeroize::Zeroizing<String>>),
}

/// The snapshot key from its header, with the master key the server holds.
pub fn open_key(header: &Header, master: &MasterKey) -> Result<DataKey, FormatError> {
    let sealed = sealed_key(header)?;
    DataKey::open(master, &sealed, &Header::key_aad(&header.id)).map_err(|_| {
        FormatError::Key(
            "this instance's master key does not open the snapshot (it was taken by another instance, or its header was altered)".into(),
        )
    })
}

fn sealed_key(header: &Header) -> Result<SealedSecret, FormatError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode = |s: &str| {
        b64.decode(s)
            .map_err(|_| FormatError::Header("the sealed snapshot key is not base64".into()))
    };
    Ok(SealedSecret {
        wrapped_key: decode(&header.key_wrapped)?,
        ciphertext: decode(&header.key_ciphertext)?,
    })
}

/// The master key from the snapshot's own keyring and what the operator brought.
fn unlock_master(
    header: &Header,
    unlock: &Unlock,
    scratch: &Path,
) -> Result<MasterKey, RestoreError> {
    let keyring = &header.keyring;
    match (&keyring.seal, unlock) {
        (SealKind::KeyFile, Unlock::KeyFile(path)) => {
            let bytes = zeroize::Zeroizing::new(
                std::fs::read(path).map_err(io(format!("--key-file {}", path.display())))?,
            );
            cofre_crypto::files::write_private_file(
                &cofre_crypto::Keyring::key_file_path(scratch),
                &bytes,
            )
            .map_err(|e| RestoreError::Refused(e.to_string()))?;
            keyring.unseal_with_key_file(scratch).map_err(|_| {
                RestoreError::Refused(format!(
                    "--key-file {}: this key file does not open the snapshot's keyring {} (use the master.key of the instance the snapshot was taken from)",
                    path.display(),
                    keyring.keyring_id
                ))
            })
        }
        (SealKind::KeyFile, Unlock::Shares(_)) => Err(RestoreError::Refused(
            "this snapshot is of a key-file instance: give its master.key with --key-file".into(),
        )),
        (SealKind::Shamir { threshold, .. }, Unlock::KeyFile(_)) => {
            Err(RestoreError::Refused(format!(
                "this snapshot is of a Shamir-sealed instance: give {threshold} of its unseal shares (--shares-file, or one per line on stdin), not a key file"
            )))
        }
        (SealKind::Shamir { threshold, .. }, Unlock::Shares(shares)) => {
            let mut progress = keyring.unseal_progress();
            for (i, share) in shares.iter().enumerate() {
                match progress.submit(keyring, share.trim()) {
                    Ok(UnsealOutcome::Unsealed(master)) => return Ok(master),
                    Ok(UnsealOutcome::NeedMore { .. }) => {}
                    Err(e) => {
                        return Err(RestoreError::Refused(format!("unseal share {}: {e}", i + 1)))
                    }
                }
            }
            Err(RestoreError::Refused(format!(
                "{} unseal share(s) given, {threshold} needed",
                progress.have()
            )))
        }
    }
}

pub struct RestoreOptions {
    pub snapshot: PathBuf,
    pub data_dir: PathBuf,
    pub unlock: Unlock,
    /// Where a PostgreSQL snapshot's database goes (an empty database); must be absent for a
    /// SQLite snapshot, whose database goes to `DATA_DIR/cofre.db`.
    pub database_url: Option<String>,
}

#[derive(Debug)]
pub struct RestoreReport {
    pub id: String,
    pub created_at: String,
    pub members: usize,
    pub bytes: u64,
    pub database: String,
    /// A Shamir instance comes back sealed: its server opens only with the shares.
    pub sealed: bool,
}

/// A non-empty directory is refused; a scratch dir left by an interrupted restore, and what that
/// restore listed in it as moved into place, are not content.
fn check_empty(dir: &Path) -> Result<(), RestoreError> {
    let ours = if dir.join(SCRATCH).is_dir() {
        placing_list(dir)?
    } else {
        Vec::new()
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(format!("--data-dir {}", dir.display()))(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(format!("--data-dir {}", dir.display())))?;
        let name = entry.file_name();
        if name != SCRATCH && !ours.iter().any(|o| std::ffi::OsStr::new(o) == name) {
            return Err(RestoreError::Refused(format!(
                "--data-dir {}: the directory is not empty ({} is in it); a restore goes into an empty or new directory and never overwrites an instance",
                dir.display(),
                entry.file_name().to_string_lossy()
            )));
        }
    }
    Ok(())
}

/// A member name becomes a path under `root` only if it stays there.
fn member_path(root: &Path, name: &str) -> Result<PathBuf, FormatError> {
    let bad = || FormatError::Member {
        name: name.to_owned(),
        reason: "its name is not a relative path inside the data dir".into(),
    };
    let rel = Path::new(name);
    if name.is_empty()
        || rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(bad());
    }
    Ok(root.join(rel))
}

/// Restores a snapshot into an empty (or absent) data dir. A failure leaves the directory as it
/// was found: the scratch dir, everything already moved into place and, if the restore made it,
/// the directory itself are removed before the error is returned.
pub async fn restore(
    opts: RestoreOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RestoreReport, RestoreError> {
    let made_from = first_missing(&opts.data_dir);
    check_empty(&opts.data_dir)?;
    remove_leftovers(&opts.data_dir)?;
    let mut placed = Vec::new();
    match restore_into(&opts, &mut placed, progress).await {
        Ok(report) => Ok(report),
        Err(e) => match undo(&opts.data_dir, &placed, made_from.as_deref()) {
            Ok(()) => Err(e),
            Err(cleanup) => Err(RestoreError::Refused(format!(
                "{e}; and cleaning up failed: {cleanup} (remove {} before trying again: it may hold decrypted data)",
                opts.data_dir.display()
            ))),
        },
    }
}

/// The file in the scratch dir that lists, before the first one is moved, the names the restore
/// moves into the data dir: what a restore killed while placing leaves there is known as its own.
const PLACING: &str = "placing";

fn placing_list(data_dir: &Path) -> Result<Vec<String>, RestoreError> {
    let path = data_dir.join(SCRATCH).join(PLACING);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .filter(|l| !l.is_empty() && *l != SCRATCH && !l.contains('/') && *l != "..")
            .map(str::to_owned)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(format!("reading {}", path.display()))(e)),
    }
}

fn remove_path(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What an interrupted restore left (its scratch dir, and what it had moved into place): removed
/// before anything else, since it may hold a key and decrypted members.
fn remove_leftovers(data_dir: &Path) -> Result<(), RestoreError> {
    let scratch = data_dir.join(SCRATCH);
    if !scratch.exists() {
        return Ok(());
    }
    for name in placing_list(data_dir)? {
        let path = data_dir.join(&name);
        remove_path(&path).map_err(io(format!(
            "removing {} (left by an interrupted restore)",
            path.display()
        )))?;
    }
    std::fs::remove_dir_all(&scratch).map_err(io(format!(
        "removing {} (left by an interrupted restore)",
        scratch.display()
    )))?;
    sync_parent_dir(data_dir)
}

fn sync_parent_dir(data_dir: &Path) -> Result<(), RestoreError> {
    super::sync_dir(data_dir).map_err(io(format!("syncing {}", data_dir.display())))
}

/// The outermost directory of `dir` (itself included) that does not exist yet: what the restore
/// creates, and removes again if it fails.
fn first_missing(dir: &Path) -> Option<PathBuf> {
    let mut missing = None;
    for ancestor in dir.ancestors() {
        if ancestor.as_os_str().is_empty() || ancestor.exists() {
            break;
        }
        missing = Some(ancestor.to_path_buf());
    }
    missing
}

fn undo(data_dir: &Path, placed: &[String], made_from: Option<&Path>) -> Result<(), RestoreError> {
    for name in placed {
        let path = data_dir.join(name);
        remove_path(&path).map_err(io(format!("removing {}", path.display())))?;
    }
    let scratch = data_dir.join(SCRATCH);
    remove_path(&scratch).map_err(io(format!("removing {}", scratch.display())))?;
    if let Some(top) = made_from {
        for dir in data_dir.ancestors() {
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("removing {}", dir.display()))(e)),
            }
            if dir == top {
                break;
            }
        }
    } else if data_dir.exists() {
        sync_parent_dir(data_dir)?;
    }
    Ok(())
}

/// The top-level names under `data_dir` that placing these members creates.
fn top_level_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        if let Some(first) = Path::new(name).components().next() {
            let first = first.as_os_str().to_string_lossy().into_owned();
            if !out.contains(&first) {
                out.push(first);
            }
        }
    }
    out
}

async fn restore_into(
    opts: &RestoreOptions,
    placed: &mut Vec<String>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RestoreReport, RestoreError> {
    let mut file = std::fs::File::open(&opts.snapshot)
        .map_err(io(format!("snapshot {}", opts.snapshot.display())))?;
    let (header, _) = format::read_header(&mut file)?;
    match (header.database.as_str(), &opts.database_url) {
        ("postgres", None) => {
            return Err(RestoreError::Refused(
                "--database-url: this snapshot is of a PostgreSQL instance; give the URL of an empty PostgreSQL database to restore into".into(),
            ))
        }
        ("postgres", Some(url)) if !url.starts_with("postgres") => {
            return Err(RestoreError::Refused(
                "--database-url: a PostgreSQL snapshot restores into PostgreSQL (postgres://...)".into(),
            ))
        }
        ("sqlite", Some(_)) => {
            return Err(RestoreError::Refused(
                "--database-url: this snapshot is of a SQLite instance; its database goes into the data dir, leave --database-url out".into(),
            ))
        }
        ("sqlite" | "postgres", _) => {}
        (other, _) => {
            return Err(RestoreError::Refused(format!(
                "the snapshot's database kind {other:?} is unknown to this cofre"
            )))
        }
    }

    let scratch = opts.data_dir.join(SCRATCH);
    cofre_crypto::files::ensure_private_dir(&opts.data_dir)
        .map_err(|e| RestoreError::Refused(format!("--data-dir: {e}")))?;
    cofre_crypto::files::ensure_private_dir(&scratch)
        .map_err(|e| RestoreError::Refused(format!("--data-dir: {e}")))?;
    let key_dir = scratch.join("key");
    cofre_crypto::files::ensure_private_dir(&key_dir)
        .map_err(|e| RestoreError::Refused(format!("--data-dir: {e}")))?;
    let master = unlock_master(&header, &opts.unlock, &key_dir)?;
    let key = open_key(&header, &master)?;
    drop(master);

    let mut reader = Reader::open(file, key)?;
    let total: u64 = reader.manifest.members.iter().map(|m| m.size).sum();
    let files = scratch.join("files");
    let mut done = 0u64;
    let mut written: Vec<PathBuf> = Vec::new();
    // Files are written on their own thread while the next frames are decrypted and hashed.
    let (tx, rx) = std::sync::mpsc::sync_channel::<ToDisk>(8);
    let (recycle_tx, recycle_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    let disk = std::thread::spawn(move || write_members(rx, recycle_tx));
    let recycled = std::sync::Arc::new(std::sync::Mutex::new(recycle_rx));
    let read = reader.for_each_member(
        |m| {
            let path = member_path(&files, &m.name)?;
            written.push(path.clone());
            tx.send(ToDisk::Open(path, m.mode & 0o700))
                .map_err(|_| FormatError::Member {
                    name: m.name.clone(),
                    reason: "cannot write it: the writer stopped".into(),
                })?;
            Ok(Some(Box::new(ChannelWriter {
                to_disk: tx.clone(),
                recycled: recycled.clone(),
            })))
        },
        &mut |n| {
            done += n;
            progress(done, total);
        },
    );
    drop(tx);
    let wrote = disk
        .join()
        .map_err(|_| RestoreError::Refused("the restore's writer thread panicked".into()))?;
    // A write error explains a read-side "writer stopped", so it goes first.
    wrote?;
    read?;

    // Every member on disk before any is moved into place. One pass at the end rather than one
    // fsync per member: the kernel writes back while later members are still being decrypted.
    for path in &written {
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(io(format!("syncing {}", path.display())))?;
    }
    // Everything verified; now the database, then the files move into place.
    let db_member = super::database_member(&header.database);
    let db_file = files.join(db_member);
    let sealed = matches!(header.keyring.seal, SealKind::Shamir { .. });
    if opts.database_url.is_none() {
        cofre_store::export::check_sqlite_copy(&db_file)
            .await
            .map_err(|e| RestoreError::Database(format!("{db_member}: {e}")))?;
    }
    // Which names the data dir is about to get, on disk before the first of them, so that a
    // restore killed from here on leaves nothing the next one does not know to remove.
    let mut to_place = top_level_names(
        reader
            .manifest
            .members
            .iter()
            .filter(|m| !m.name.starts_with("database/"))
            .map(|m| m.name.as_str()),
    );
    if opts.database_url.is_none() {
        to_place.push("cofre.db".into());
    }
    if !sealed {
        to_place.push(
            cofre_crypto::Keyring::key_file_path(Path::new(""))
                .display()
                .to_string(),
        );
    }
    cofre_crypto::files::write_private_file(
        &scratch.join(PLACING),
        format!("{}\n", to_place.join("\n")).as_bytes(),
    )
    .map_err(|e| RestoreError::Refused(e.to_string()))?;
    super::sync_dir(&scratch).map_err(io(format!("syncing {}", scratch.display())))?;
    *placed = to_place;
    if let Some(url) = opts.database_url.as_deref() {
        cofre_store::export::restore_postgres_dump(url, &db_file)
            .await
            .map_err(|e| RestoreError::Database(e.to_string()))?;
    } else {
        std::fs::rename(&db_file, opts.data_dir.join("cofre.db"))
            .map_err(io("moving the database into place"))?;
    }
    for m in &reader.manifest.members {
        if m.name.starts_with("database/") {
            continue;
        }
        let from = member_path(&files, &m.name)?;
        let to = member_path(&opts.data_dir, &m.name)?;
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        std::fs::rename(&from, &to).map_err(io(format!("moving {} into place", m.name)))?;
    }
    if !sealed {
        std::fs::rename(
            cofre_crypto::Keyring::key_file_path(&key_dir),
            cofre_crypto::Keyring::key_file_path(&opts.data_dir),
        )
        .map_err(io("placing master.key"))?;
    }
    // The restore is complete once the scratch dir (and its list of names) is gone.
    std::fs::remove_dir_all(&scratch).map_err(io(format!("removing {}", scratch.display())))?;
    super::sync_dir(&opts.data_dir).map_err(io("syncing the data dir"))?;
    placed.clear();
    Ok(RestoreReport {
        id: header.id.clone(),
        created_at: header.created_at.clone(),
        members: reader.manifest.members.len(),
        bytes: total,
        database: header.database.clone(),
        sealed,
    })
}

/// What the reading side hands the writing thread.
enum ToDisk {
    /// Create this file (it must not exist) with these permission bits; data follows.
    Open(PathBuf, u32),
    Data(Vec<u8>),
}

struct ChannelWriter {
    to_disk: std::sync::mpsc::SyncSender<ToDisk>,
    /// Buffers the writing thread is done with: reused, so each frame does not cost a fresh
    /// megabyte of page faults.
    recycled: std::sync::Arc<std::sync::Mutex<std::sync::mpsc::Receiver<Vec<u8>>>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut data = match self.recycled.lock() {
            Ok(rx) => rx.try_recv().unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        data.clear();
        data.extend_from_slice(buf);
        self.to_disk
            .send(ToDisk::Data(data))
            .map_err(|_| std::io::Error::other("the writer stopped"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_members(
    rx: std::sync::mpsc::Receiver<ToDisk>,
    recycle: std::sync::mpsc::SyncSender<Vec<u8>>,
) -> Result<(), RestoreError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut current: Option<(PathBuf, std::fs::File)> = None;
    for job in rx {
        match job {
            ToDisk::Open(path, mode) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(io(format!("creating {}", parent.display())))?;
                }
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&path)
                    .map_err(io(format!("creating {}", path.display())))?;
                current = Some((path, file));
            }
            ToDisk::Data(data) => {
                let Some((path, file)) = current.as_mut() else {
                    return Err(RestoreError::Refused("data before its member".into()));
                };
                file.write_all(&data)
                    .map_err(io(format!("writing {}", path.display())))?;
                // Full (the reader has enough) or gone: the buffer is simply freed.
                let _ = recycle.try_send(data);
            }
        }
    }
    Ok(())
}

/// Writes only the database member of a snapshot to `to` (a new file), after checking the whole
/// snapshot as a restore does; returns the database kind (`sqlite` or `postgres`). For rolling
/// an update back in place, where the rest of the data dir stays as it is.
pub fn extract_database(
    snapshot: &Path,
    master: &MasterKey,
    to: &Path,
) -> Result<String, RestoreError> {
    let mut file =
        std::fs::File::open(snapshot).map_err(io(format!("snapshot {}", snapshot.display())))?;
    let (header, _) = format::read_header(&mut file)?;
    let key = open_key(&header, master)?;
    let mut reader = Reader::open(file, key)?;
    let wanted = super::database_member(&header.database);
    let _ = std::fs::remove_file(to);
    let mut out = Some(
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to)
            .map_err(io(format!("creating {}", to.display())))?,
    );
    let mut found = false;
    reader.for_each_member(
        |m| {
            if m.name == wanted {
                found = true;
                Ok(out
                    .take()
                    .map(|f| Box::new(std::io::BufWriter::new(f)) as Box<dyn std::io::Write>))
            } else {
                Ok(None)
            }
        },
        &mut |_| {},
    )?;
    if !found {
        return Err(RestoreError::Refused(format!(
            "the snapshot has no {wanted}"
        )));
    }
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("syncing {}", to.display())))?;
    Ok(header.database.clone())
}
