//! A key epoch's secret: 32 random bytes that are an age X25519 identity.
//!
//! The bytes are what Shamir splits (so a share's payload is 32 bytes, 52 base32 characters). The
//! same bytes written in Bech32 with the `AGE-SECRET-KEY-` prefix are the identity that the
//! standard `age` tool accepts, which is what `cofre breakglass combine` prints.

use crate::{Error, Result};
use bech32::{ToBase32, Variant};
use sha2::{Digest, Sha256};
use std::str::FromStr;
use zeroize::{Zeroize, Zeroizing};

const SECRET_LEN: usize = 32;
const SECRET_KEY_HRP: &str = "age-secret-key-";

/// The secret of a key epoch. Wiped when dropped; `Debug` never shows it.
#[derive(Clone)]
pub struct EpochSecret(Zeroizing<[u8; SECRET_LEN]>);

impl EpochSecret {
    /// A fresh secret from the operating system's CSPRNG.
    pub fn generate() -> EpochSecret {
        use rand::RngCore;
        let mut bytes = Zeroizing::new([0u8; SECRET_LEN]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut_slice());
        EpochSecret(bytes)
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<EpochSecret> {
        let mut out = Zeroizing::new([0u8; SECRET_LEN]);
        if bytes.len() != SECRET_LEN {
            return None;
        }
        out.copy_from_slice(bytes);
        Some(EpochSecret(out))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// The identity as the `age` tool reads it: `AGE-SECRET-KEY-1...`.
    pub fn identity_string(&self) -> Result<Zeroizing<String>> {
        let mut encoded = bech32::encode(SECRET_KEY_HRP, self.0.to_base32(), Variant::Bech32)
            .map_err(|e| Error::Encrypt(format!("cannot encode the identity: {e}")))?;
        let upper = Zeroizing::new(encoded.to_uppercase());
        encoded.zeroize();
        Ok(upper)
    }

    /// The age identity (for decrypting).
    pub fn identity(&self) -> Result<age::x25519::Identity> {
        age::x25519::Identity::from_str(&self.identity_string()?)
            .map_err(|e| Error::Encrypt(format!("cannot build the identity: {e}")))
    }

    /// The epoch's public recipient, `age1...`: what files are encrypted to.
    pub fn recipient(&self) -> Result<String> {
        Ok(self.identity()?.to_public().to_string())
    }
}

impl std::fmt::Debug for EpochSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EpochSecret(..)")
    }
}

/// A short name of an epoch's key, carried by its shares: the first 4 bytes (8 hex characters) of
/// SHA-256 over `cofre-bg-key:` and the recipient. Lets `combine` tell a wrong set of shares from
/// a right one without the file at hand.
pub fn key_id(recipient: &str) -> String {
    let digest = Sha256::digest(format!("cofre-bg-key:{recipient}").as_bytes());
    hex::encode(&digest[..4])
}

/// A secret value in the backup (a password or a private key): serialised as a plain string,
/// wiped when dropped, `Debug` prints `***`.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_through_age() {
        let secret = EpochSecret::generate();
        let text = secret.identity_string().unwrap();
        assert!(text.starts_with("AGE-SECRET-KEY-1"), "{}", text.len());
        let parsed = age::x25519::Identity::from_str(&text).unwrap();
        use age::secrecy::ExposeSecret;
        assert_eq!(parsed.to_string().expose_secret(), text.as_str());
        let recipient = secret.recipient().unwrap();
        assert!(recipient.starts_with("age1"));
        assert_eq!(parsed.to_public().to_string(), recipient);
    }

    #[test]
    fn key_id_is_short_and_stable() {
        let id = key_id("age1abc");
        assert_eq!(id.len(), 8);
        assert_eq!(id, key_id("age1abc"));
        assert_ne!(id, key_id("age1abd"));
    }

    #[test]
    fn debug_hides_secrets() {
        assert_eq!(format!("{:?}", EpochSecret::generate()), "EpochSecret(..)");
        assert_eq!(
            format!("{:?}", Secret::new("hunter2".into())),
            "Secret(***)"
        );
    }
}
