//! The hand-over from one version to the next inside a maintenance window, as files in
//! `DATA_DIR/releases/`, so that every process of it (the old server, the supervisor, the new
//! server, and whichever of them starts after a crash) reads the same facts.
//!
//! ```text
//!  old server: snapshot, install, write switch.json (prepared), exit EXIT_SWITCH
//!  supervisor: prepared ─▶ starting, start the new binary on the same addresses
//!              new server healthy (/healthz: its version, unsealed, self-check ok)
//!                 ─▶ committed: current.json names the new binary; "commit" on its stdin;
//!                    the new server records the last steps, ends the window done, removes switch.json
//!              new server exits, fails its self-check, or the deadline passes
//!                 ─▶ rolling_back: the old binary starts again; before opening the database it
//!                    restores it from the pre-maintenance snapshot if the schema changed
//!                    (the audit tail and the window's rows carried over), records the rollback,
//!                    ends the window rolled_back, removes switch.json
//!  a supervisor that starts and finds prepared or starting (it was killed): rolling_back;
//!  committed: the update is finished by the new binary.
//! ```
//!
//! Every write is a whole file written aside, synced and renamed (`write_private_file`): a crash
//! leaves the old state or the new one, never half of one.

use crate::config::ServerConfig;
use crate::StartError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The exit status of a server that hands over to the next version (EX_TEMPFAIL).
pub const EXIT_SWITCH: i32 = 75;
/// Set by the supervisor in its child's environment: the supervisor's pid.
pub const SUPERVISOR_ENV: &str = "COFRE_SUPERVISOR_PID";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The old server wrote this and is exiting; nothing is replaced yet.
    Prepared,
    /// The new binary was started; it may have migrated the database.
    Starting,
    /// The new version is healthy and is the current one.
    Committed,
    /// The old version is back (or about to be); the database is restored where needed.
    RollingBack,
}

/// What the hand-over needs to know, written by the old server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    pub window: String,
    pub release: String,
    pub from_binary: PathBuf,
    pub from_version: String,
    pub to_binary: PathBuf,
    pub to_version: String,
    /// The verified pre-maintenance snapshot a rollback restores the database from.
    pub snapshot: String,
    pub snapshot_path: PathBuf,
    /// The audit chain's length before the snapshot was taken: a rollback carries every entry
    /// after it over into the restored database.
    pub audit_after: i64,
    /// Unix seconds: the new version is healthy by then or the old one comes back.
    pub deadline: i64,
    /// The addresses the old server listened on (the new one takes the same, even where the
    /// configuration says port 0).
    pub listen: String,
    pub ssh_listen: String,
    pub external_listen: Option<String>,
    /// The database's schema as the old version left it (`cofre_store::schema_fingerprint`).
    pub schema: Vec<String>,
    /// A random test secret sealed under the master key (hex), and the SHA-256 of its
    /// plaintext: the new version must open it.
    pub canary_wrapped_key: String,
    pub canary_ciphertext: String,
    pub canary_sha256: String,
    pub phase: Phase,
    /// Why the hand-over failed (set when it goes to `rolling_back`).
    #[serde(default)]
    pub failure: Option<String>,
    /// What the rollback did to the database (set once it is done).
    #[serde(default)]
    pub restored: Option<String>,
    /// Unix seconds, at each phase change: `(phase, at)`.
    #[serde(default)]
    pub history: Vec<(Phase, i64)>,
}

/// The binary the supervisor starts, once an update has been committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub binary: PathBuf,
    pub version: String,
    pub release: String,
    pub window: String,
}

/// The additional authenticated data the canary is sealed with.
pub const CANARY_AAD: &[u8] = b"cofre maintenance canary v1";

fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("releases")
}

pub fn switch_path(data_dir: &Path) -> PathBuf {
    dir(data_dir).join("switch.json")
}

pub fn current_path(data_dir: &Path) -> PathBuf {
    dir(data_dir).join("current.json")
}

/// Where a rollback keeps what it carries over while it restores.
pub fn rollback_dir(data_dir: &Path) -> PathBuf {
    dir(data_dir).join("rollback")
}

fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        )),
    }
}

fn write<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    cofre_crypto::files::write_private_file(path, &bytes)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

pub fn load(data_dir: &Path) -> std::io::Result<Option<Switch>> {
    read(&switch_path(data_dir))
}

/// Writes `s` in `phase`, noting when it got there.
pub fn save(data_dir: &Path, s: &mut Switch, phase: Phase, now: i64) -> std::io::Result<()> {
    s.phase = phase;
    s.history.push((phase, now));
    write(&switch_path(data_dir), s)
}

/// The hand-over is over (done or rolled back): its file and what the rollback kept go.
pub fn remove(data_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(rollback_dir(data_dir)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match std::fs::remove_file(switch_path(data_dir)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn current(data_dir: &Path) -> std::io::Result<Option<Current>> {
    read(&current_path(data_dir))
}

pub fn set_current(data_dir: &Path, c: &Current) -> std::io::Result<()> {
    write(&current_path(data_dir), c)
}

/// The version this process reports: the one stamped into its binary ([`stamp_version`]), else
/// the crate's. Debug builds (the test suite's) take `COFRE_TEST_VERSION` first, so a test can
/// make a "newer" release of the binary it built with a one-line wrapper script; release builds
/// never read it.
pub fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        if cfg!(debug_assertions) {
            if let Ok(v) = std::env::var("COFRE_TEST_VERSION") {
                if !v.trim().is_empty() {
                    return v.trim().to_owned();
                }
            }
        }
        stamped_version().unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned())
    })
}

const STAMP_MARKER_LEN: usize = 16;
const STAMP_LEN: usize = 64;

/// A slot in the binary that a copy of it can be stamped with a version in, after linking, so
/// one build makes a "newer" release of the same code (`cofre-bench maintenance` does, on a
/// release build). The marker's first bytes are not text, so no string of the program matches
/// it by chance. What a binary says of itself is no trust decision: which binary a window
/// installs is decided by the vendor-signed manifest and the binary's hash.
#[used]
static VERSION_STAMP: [u8; STAMP_LEN] = {
    let marker = *b"\xC0\xF7\x1Ecofre-version";
    let mut slot = [0u8; STAMP_LEN];
    let mut i = 0;
    while i < STAMP_MARKER_LEN {
        slot[i] = marker[i];
        i += 1;
    }
    slot
};

fn stamped_version() -> Option<String> {
    // Read through an opaque reference: the optimiser would otherwise fold the slot's bytes into
    // the code as the constant they were at compile time, and a stamp would change nothing.
    slot_value(&std::hint::black_box(&VERSION_STAMP)[STAMP_MARKER_LEN..])
}

fn slot_value(value: &[u8]) -> Option<String> {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    let text = std::str::from_utf8(&value[..end]).ok()?;
    (!text.is_empty()).then(|| text.to_owned())
}

/// Errors of [`stamp_version`], each naming what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum StampError {
    #[error("version {0:?} is not a semantic version (like 1.2.3)")]
    NotAVersion(String),
    #[error("version {0:?} is longer than the binary's slot ({1} bytes)")]
    TooLong(String, usize),
    #[error("the file has no version slot (is it a cofre binary?)")]
    NoSlot,
}

/// `binary` (the bytes of a `cofre` binary) with `version` stamped into its version slot; a copy
/// run reports that version. Every copy of the slot is stamped, so a debug build's copies in
/// its debug info agree with the one the code reads.
pub fn stamp_version(binary: &[u8], version: &str) -> Result<Vec<u8>, StampError> {
    semver::Version::parse(version).map_err(|_| StampError::NotAVersion(version.to_owned()))?;
    let room = STAMP_LEN - STAMP_MARKER_LEN;
    if version.len() > room {
        return Err(StampError::TooLong(version.to_owned(), room));
    }
    let marker = &std::hint::black_box(&VERSION_STAMP)[..STAMP_MARKER_LEN];
    let mut out = binary.to_vec();
    let mut found = 0;
    let mut at = 0;
    while let Some(pos) = out[at..]
        .windows(STAMP_MARKER_LEN)
        .position(|w| w == marker)
        .map(|p| p + at)
    {
        let start = pos + STAMP_MARKER_LEN;
        if start + room > out.len() {
            break;
        }
        let value = &mut out[start..start + room];
        value.fill(0);
        value[..version.len()].copy_from_slice(version.as_bytes());
        found += 1;
        at = start + room;
    }
    if found == 0 {
        return Err(StampError::NoSlot);
    }
    Ok(out)
}

/// Whether this process runs under the supervisor (`cofre server` without `--no-supervisor`).
pub fn supervised() -> bool {
    std::env::var_os(SUPERVISOR_ENV).is_some()
}

fn start_error(what: &str, e: impl std::fmt::Display) -> StartError {
    StartError::DataDir {
        path: "releases/switch.json".into(),
        message: format!("rolling the update back: {what}: {e}"),
    }
}

fn sqlite_file(url: &str) -> PathBuf {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    PathBuf::from(rest.split('?').next().unwrap_or(rest))
}

fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Before the old version opens its database after a failed hand-over: if the new one changed
/// the schema (ran a migration, even half of one), the database is restored from the
/// pre-maintenance snapshot and the audit entries and window steps written since are carried
/// over, so the chain goes on unbroken. Safe to run again after a crash at any point: what it
/// carries is kept in `releases/rollback/carry.json` before anything is replaced.
pub async fn restore_database_if_migrated(config: &ServerConfig) -> Result<(), StartError> {
    let data_dir = &config.data_dir;
    let Some(mut s) = load(data_dir).map_err(|e| start_error("reading it", e))? else {
        return Ok(());
    };
    if s.phase != Phase::RollingBack || s.restored.is_some() || version() != s.from_version {
        return Ok(());
    }
    let url = config.database_url();
    let now_schema = cofre_store::rollback::schema_fingerprint(&url)
        .await
        .map_err(|e| start_error("reading the database's schema", e))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if now_schema == s.schema {
        s.restored = Some(
            "the database is as this version left it (no migration ran): kept as it is".into(),
        );
        let phase = s.phase;
        return save(data_dir, &mut s, phase, now).map_err(|e| start_error("writing it", e));
    }
    let changed = now_schema
        .iter()
        .filter(|f| !s.schema.contains(f))
        .chain(s.schema.iter().filter(|f| !now_schema.contains(f)))
        .count();
    tracing::warn!(
        window = %s.window,
        differences = changed,
        "the new version changed the database's schema: restoring it from the pre-maintenance snapshot"
    );
    let keyring = cofre_crypto::Keyring::load(data_dir)?
        .ok_or_else(|| start_error("the keyring", "missing"))?;
    if keyring.seal != cofre_crypto::SealKind::KeyFile {
        return Err(start_error(
            "the keyring",
            "a Shamir-sealed instance cannot open its snapshot unattended",
        ));
    }
    let master = keyring.unseal_with_key_file(data_dir)?;
    let scratch = rollback_dir(data_dir);
    std::fs::create_dir_all(&scratch).map_err(|e| start_error("its directory", e))?;
    let carry_path = scratch.join("carry.json");
    let carry: cofre_store::rollback::Carry = match read(&carry_path)
        .map_err(|e| start_error("reading what it carries over", e))?
    {
        Some(c) => c,
        None => {
            let c = cofre_store::rollback::read_carry(&url, s.audit_after, &s.window)
                .await
                .map_err(|e| start_error("reading what it carries over", e))?;
            write(&carry_path, &c).map_err(|e| start_error("keeping what it carries over", e))?;
            c
        }
    };
    let postgres = url.starts_with("postgres");
    let extracted = scratch.join(if postgres {
        "postgres.jsonl"
    } else {
        "restored.db"
    });
    {
        let snapshot = s.snapshot_path.clone();
        let to = extracted.clone();
        tokio::task::spawn_blocking(move || {
            crate::snapshot::restore::extract_database(&snapshot, &master, &to)
        })
        .await
        .map_err(|e| start_error("opening the snapshot", e))?
        .map_err(|e| start_error("opening the snapshot", e))?;
    }
    if postgres {
        cofre_store::rollback::empty_postgres(&url)
            .await
            .map_err(|e| start_error("emptying the database", e))?;
        cofre_store::export::restore_postgres_dump(&url, &extracted)
            .await
            .map_err(|e| start_error("restoring the database", e))?;
        cofre_store::rollback::apply_carry(&url, &carry)
            .await
            .map_err(|e| start_error("carrying entries over", e))?;
    } else {
        let restored_url = format!("sqlite://{}", extracted.display());
        cofre_store::rollback::apply_carry(&restored_url, &carry)
            .await
            .map_err(|e| start_error("carrying entries over", e))?;
        let live = sqlite_file(&url);
        cofre_store::rollback::checkpoint_sqlite(&url)
            .await
            .map_err(|e| start_error("checkpointing the database", e))?;
        let with = |suffix: &str| {
            let mut p = live.clone().into_os_string();
            p.push(suffix);
            PathBuf::from(p)
        };
        // The log is empty after the checkpoint; it must be gone before the file it belonged
        // to is replaced, or it would be replayed into the restored one.
        for side in ["-wal", "-shm", "-journal"] {
            remove_if_there(&with(side)).map_err(|e| start_error("removing the old log", e))?;
        }
        std::fs::rename(&extracted, &live).map_err(|e| start_error("placing the database", e))?;
        if let Some(parent) = live.parent() {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| start_error("syncing the data dir", e))?;
        }
    }
    let after = cofre_store::rollback::schema_fingerprint(&url)
        .await
        .map_err(|e| start_error("reading the restored schema", e))?;
    if after != s.schema {
        return Err(start_error(
            "the restored database",
            "its schema is not the one this version left (the snapshot is of another version?)",
        ));
    }
    s.restored = Some(format!(
        "the new version changed the schema ({changed} differences): the database was restored from the pre-maintenance snapshot {}, with the {} audit entries and {} window steps written since carried over",
        s.snapshot,
        carry.count("audit_log"),
        carry.count("maintenance_events")
    ));
    let phase = s.phase;
    save(data_dir, &mut s, phase, now).map_err(|e| start_error("writing it", e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn binary_with_slot() -> Vec<u8> {
        let mut b = b"\x7fELF some code".to_vec();
        b.extend_from_slice(&VERSION_STAMP);
        b.extend_from_slice(b"more code after the slot");
        b
    }

    fn value_after_marker(b: &[u8]) -> Option<String> {
        let marker = &VERSION_STAMP[..STAMP_MARKER_LEN];
        let pos = b.windows(STAMP_MARKER_LEN).position(|w| w == marker)?;
        let start = pos + STAMP_MARKER_LEN;
        slot_value(&b[start..start + STAMP_LEN - STAMP_MARKER_LEN])
    }

    #[test]
    fn a_stamped_copy_reports_the_stamp_and_keeps_the_rest() {
        let plain = binary_with_slot();
        assert_eq!(
            value_after_marker(&plain),
            None,
            "an unstamped slot is empty"
        );
        let stamped = stamp_version(&plain, "0.3.1").unwrap();
        assert_eq!(stamped.len(), plain.len());
        assert_eq!(value_after_marker(&stamped).as_deref(), Some("0.3.1"));
        assert!(stamped.ends_with(b"more code after the slot"));
        let again = stamp_version(&stamped, "0.3.2").unwrap();
        assert_eq!(value_after_marker(&again).as_deref(), Some("0.3.2"));
        // This build's own slot is unstamped: it reports the crate's version.
        assert_eq!(stamped_version(), None);
    }

    #[test]
    fn a_stamp_is_refused_with_why() {
        let plain = binary_with_slot();
        assert!(matches!(
            stamp_version(&plain, "next"),
            Err(StampError::NotAVersion(_))
        ));
        let long = format!("1.0.0-{}", "a".repeat(60));
        assert!(matches!(
            stamp_version(&plain, &long),
            Err(StampError::TooLong(..))
        ));
        assert!(matches!(
            stamp_version(b"#!/bin/sh\necho hi\n", "1.0.0"),
            Err(StampError::NoSlot)
        ));
    }
}
