//! Cofre's key material: the sealed instance keyring (key file or Shamir unseal shares), envelope
//! encryption of vaulted secrets under the master key, password and API token hashing, and TOTP.
//!
//! Everything that holds key material zeroizes it on drop, and nothing here formats a secret into an
//! error message or a `Debug` string, so logging an error or a value is always safe.

pub mod audit_mac;
pub mod datakey;
pub mod envelope;
pub mod files;
pub mod generate;
pub mod keyring;
pub mod oidc;
pub mod password;
pub mod share_text;
pub mod token;
pub mod totp;

mod base32;

pub use envelope::{MasterKey, SealedSecret};
pub use keyring::{Keyring, SealKind, UnsealOutcome, UnsealProgress, UnsealShare};

use std::path::PathBuf;

/// Everything that can go wrong in this crate. Messages are meant for an operator and never carry
/// secret material (no keys, shares, passwords or tokens), only paths, counts and reasons.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Authenticated decryption failed. Deliberately one variant for every cause, so the error
    /// does not tell an attacker which part of the input was wrong.
    #[error("decryption failed: wrong key, wrong record binding, or the data was altered")]
    Decrypt,

    /// Encryption failed; in practice only for absurdly large inputs.
    #[error("encryption failed")]
    Encrypt,

    /// A file-system operation failed; `context` names the operation and path.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A caller-supplied parameter is out of range; the message names the parameter.
    #[error("invalid parameter {0}")]
    InvalidParameter(String),

    /// Initialisation refused so an existing keyring (and the data it protects) is never lost.
    #[error("{} already exists: this data directory already has a keyring, refusing to overwrite it", .0.display())]
    KeyringExists(PathBuf),

    /// keyring.json could not be understood.
    #[error("the keyring file is invalid: {0}")]
    KeyringInvalid(String),

    /// The keyring is sealed one way and was asked to unseal the other way.
    #[error("wrong unseal method: {0}")]
    WrongSealKind(&'static str),

    /// The key file of a key-file keyring is absent.
    #[error("the key file {} is missing, so the keyring cannot be unsealed", .0.display())]
    KeyFileMissing(PathBuf),

    /// The key file exists but does not hold 32 bytes in hex.
    #[error("the key file {} is malformed: it must hold 64 hexadecimal characters", .0.display())]
    KeyFileInvalid(PathBuf),

    /// The key file is well formed but is not the one this keyring was sealed with.
    #[error(
        "the key file does not open this keyring (it belongs to another keyring or was altered)"
    )]
    KeyFileWrong,

    /// An unseal share is not in the expected shape; the text says why.
    #[error("this is not a valid unseal share: {0}")]
    ShareFormat(String),

    /// An unseal share has the right shape but its checksum does not match.
    #[error("the unseal share's checksum does not match: a character was probably mistyped, please check it again")]
    ShareChecksum,

    /// The share names a different keyring (another instance, or an earlier key ceremony).
    #[error(
        "this unseal share belongs to another keyring (another instance or an older key ceremony)"
    )]
    ShareWrongKeyring,

    /// The same share number was given twice; it is counted once.
    #[error("this unseal share was already given; each share counts only once")]
    ShareDuplicate,

    /// Enough distinct shares were given but they do not combine into the key-encryption key.
    #[error("the shares given do not open this keyring; unsealing starts over")]
    SharesDoNotOpen,

    /// Hashing a password failed.
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
}

impl CryptoError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CryptoError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Fills a fixed-size array from the operating system's CSPRNG. The OS generator is used directly
/// (not a user-space generator) because these bytes become long-lived keys.
pub fn random_array<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut out = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut out);
    out
}
