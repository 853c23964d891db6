//! Break the glass: when Cofre is down, its customer still reaches its servers with a file that
//! holds every credential and that no single person can open.
//!
//! * [`key`]: a key *epoch* is an age X25519 identity. Its 32-byte secret exists only during the
//!   key ceremony, when it is split, and again offline, when k custodians combine their shares.
//! * [`share`]: the secret split k-of-n with Shamir (blahaj); each share is one printable line
//!   `cofre-bg-<instance>-<epoch>-<key id>-<k>-<index>-<payload>-<checksum>`.
//! * [`file`]: the backup file. A standard age file (it opens with `age -d -i identity.txt FILE`)
//!   whose header carries one extra stanza, `-> cofre-breakglass v1 instance=.. epoch=.. ...`, that
//!   names the instance, epoch, time and counts in clear text before any share is given; inside,
//!   JSON with every target and credential and every version of each secret.
//! * [`session`]: the offline opener's commands (`search`, `show`, `list`) and its local log.
//!
//! **Invariant:** this crate links no server, database or network code. The offline opener is
//! this crate plus a terminal; it must work on a laptop with the network unplugged and no data dir.

pub mod file;
pub mod key;
pub mod session;
pub mod share;

pub use file::{Contents, CredentialEntry, Header, TargetEntry, VersionEntry, Writer};
pub use key::{key_id, EpochSecret, Secret};
pub use share::{ceremony, combine, Ceremony, Share};

use std::path::PathBuf;

/// Shamir limits: at least 2 shares to open (one share alone would be a plain key), at most 16.
pub const MIN_THRESHOLD: u8 = 2;
pub const MAX_SHARES: u8 = 16;

/// Everything that can go wrong here. Messages are for the custodian at the keyboard: they say what
/// to do next, and never carry a share, a key or a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter is out of range; `field` names it.
    #[error("{field}: {reason}")]
    InvalidParameter { field: &'static str, reason: String },

    /// The text is not shaped like a break-glass share.
    #[error("this is not a break-glass share: {0}")]
    ShareFormat(String),

    /// Shaped right, but the checksum does not match.
    #[error("the share's checksum does not match: a character was probably mistyped, please check it again")]
    ShareChecksum,

    /// The share is of another Cofre instance.
    #[error("this share belongs to instance {share}, but the file is of instance {expected}")]
    ShareWrongInstance { share: String, expected: String },

    /// The share is of another key epoch (an older or newer ceremony).
    #[error("this share is of key epoch {share}, but the file was written under epoch {expected}: bring the shares of epoch {expected}")]
    ShareWrongEpoch { share: u32, expected: u32 },

    /// Shares that cannot belong to one ceremony (different key ids or thresholds).
    #[error("these shares are not of one key ceremony: {0}")]
    ShareMismatch(String),

    /// The same share number twice.
    #[error("share number {0} was given twice; each share counts once")]
    ShareDuplicate(u8),

    /// Fewer shares than the threshold.
    #[error("{need} shares of key epoch {epoch} are needed, only {have} given")]
    NotEnoughShares { have: usize, need: u8, epoch: u32 },

    /// Enough well-formed shares, but they do not rebuild the epoch's key.
    #[error("the shares do not combine into the key of epoch {epoch}: one of them is damaged or of another ceremony")]
    SharesDoNotCombine { epoch: u32 },

    /// The file is not a Cofre break-glass file, or its clear header is damaged.
    #[error("{0}")]
    NotABackup(String),

    /// The file decrypted but its contents are not what its header promised.
    #[error("the file's contents are damaged: {0}")]
    Corrupt(String),

    /// age refused to decrypt (wrong key, or the file was altered or truncated).
    #[error("cannot decrypt the file: {0}")]
    Decrypt(String),

    /// age refused to encrypt.
    #[error("cannot encrypt the file: {0}")]
    Encrypt(String),

    /// A file-system operation failed; `context` names the operation and path.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io_path(what: &str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::io(format!("{what} {}", path.display()), source)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The local log next to a backup file: `FILE.log`.
pub fn default_log_path(file: &std::path::Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".log");
    PathBuf::from(name)
}

/// RFC 3339 UTC, second precision (`2024-05-01T12:34:56Z`).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The current time, for the opener's log (the server passes its own clock's time instead).
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}
