//! Envelope encryption of vaulted secrets under the instance master key.
//!
//! Each secret gets its own fresh 256-bit data key; the secret is encrypted with the data key and
//! the data key is wrapped by the master key, both with XChaCha20-Poly1305 and a random 24-byte
//! nonce stored in front of the ciphertext. A per-secret key means a future master-key rotation only
//! rewraps 72-byte data keys instead of re-encrypting every secret, and the 192-bit nonce makes
//! random nonces safe without any counter state.
//!
//! The caller's `aad` names the record (e.g. `b"credential:42:v3"`) and is authenticated by both
//! layers, so a ciphertext copied into another row, or an old version replayed into a newer one,
//! fails to open instead of silently revealing the wrong secret.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{random_array, CryptoError};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The instance master key: 32 bytes, wiped from memory when dropped. Its `Debug` output never shows
/// the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; KEY_LEN]);

impl MasterKey {
    /// A fresh random master key from the OS CSPRNG.
    pub fn generate() -> Self {
        MasterKey(random_array())
    }

    pub fn from_bytes(b: [u8; 32]) -> Self {
        MasterKey(b)
    }

    /// HMAC-SHA256(master key, purpose): an independent key for one purpose (snapshot encryption,
    /// recording encryption, ...), so no two features ever use the master key itself and a key
    /// leaked from one feature says nothing about the others.
    pub fn derive_subkey(&self, purpose: &str) -> [u8; 32] {
        // HMAC accepts keys of any length, so this constructor cannot fail; the fallback is never
        // taken but avoids a panic path.
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.0) else {
            return [0u8; 32];
        };
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// A secret sealed under the master key, as stored in the database: both fields are
/// `nonce || ciphertext+tag` and are safe to store and log (they reveal only lengths).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedSecret {
    /// The per-secret data key, encrypted under the master key.
    pub wrapped_key: Vec<u8>,
    /// The secret, encrypted under the data key.
    pub ciphertext: Vec<u8>,
}

/// Encrypts `plaintext` for the record named by `aad`.
pub fn seal(mk: &MasterKey, plaintext: &[u8], aad: &[u8]) -> Result<SealedSecret, CryptoError> {
    let data_key = Zeroizing::new(random_array::<KEY_LEN>());
    let ciphertext = aead_encrypt(&data_key, plaintext, aad)?;
    let wrapped_key = aead_encrypt(mk.as_bytes(), data_key.as_slice(), aad)?;
    Ok(SealedSecret {
        wrapped_key,
        ciphertext,
    })
}

/// Decrypts a secret sealed by [`seal`] with the same master key and `aad`. Any mismatch (wrong key,
/// wrong `aad`, truncated or altered bytes) gives [`CryptoError::Decrypt`].
pub fn open(
    mk: &MasterKey,
    sealed: &SealedSecret,
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let data_key = aead_decrypt(mk.as_bytes(), &sealed.wrapped_key, aad)?;
    let data_key: Zeroizing<[u8; KEY_LEN]> = Zeroizing::new(
        data_key
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Decrypt)?,
    );
    aead_decrypt(&data_key, &sealed.ciphertext, aad)
}

/// XChaCha20-Poly1305 with a random nonce, returning `nonce || ciphertext || tag`. Shared with the
/// keyring, which wraps the master key the same way.
pub(crate) fn aead_encrypt(
    key: &[u8; KEY_LEN],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce: [u8; NONCE_LEN] = random_array();
    let body = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Encrypt)?;
    let mut out = Vec::with_capacity(NONCE_LEN + body.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Inverse of [`aead_encrypt`].
pub(crate) fn aead_decrypt(
    key: &[u8; KEY_LEN],
    sealed: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Decrypt);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Decrypt)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mk = MasterKey::generate();
        let sealed = seal(&mk, b"hunter2", b"credential:42:v3").unwrap();
        assert_eq!(sealed.wrapped_key.len(), NONCE_LEN + KEY_LEN + TAG_LEN);
        assert_eq!(sealed.ciphertext.len(), NONCE_LEN + 7 + TAG_LEN);
        let opened = open(&mk, &sealed, b"credential:42:v3").unwrap();
        assert_eq!(opened.as_slice(), b"hunter2");
    }

    #[test]
    fn round_trip_empty_and_large() {
        let mk = MasterKey::generate();
        for len in [0usize, 1, 1000, 100_000] {
            let plain = vec![0xa5u8; len];
            let sealed = seal(&mk, &plain, b"").unwrap();
            assert_eq!(
                open(&mk, &sealed, b"").unwrap().as_slice(),
                plain.as_slice()
            );
        }
    }

    #[test]
    fn same_plaintext_seals_differently() {
        let mk = MasterKey::generate();
        let a = seal(&mk, b"same", b"r").unwrap();
        let b = seal(&mk, b"same", b"r").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_key_fails() {
        let sealed = seal(&MasterKey::generate(), b"secret", b"r").unwrap();
        let err = open(&MasterKey::generate(), &sealed, b"r").unwrap_err();
        assert!(matches!(err, CryptoError::Decrypt));
    }

    #[test]
    fn wrong_aad_fails() {
        let mk = MasterKey::generate();
        let sealed = seal(&mk, b"secret", b"credential:42:v3").unwrap();
        for aad in [&b"credential:43:v3"[..], b"credential:42:v2", b""] {
            assert!(matches!(open(&mk, &sealed, aad), Err(CryptoError::Decrypt)));
        }
    }

    #[test]
    fn swapped_rows_fail() {
        let mk = MasterKey::generate();
        let a = seal(&mk, b"alpha", b"credential:1").unwrap();
        let b = seal(&mk, b"beta", b"credential:2").unwrap();
        // A's data key with B's ciphertext: the record binding and the keys both disagree.
        let mixed = SealedSecret {
            wrapped_key: a.wrapped_key.clone(),
            ciphertext: b.ciphertext.clone(),
        };
        assert!(open(&mk, &mixed, b"credential:1").is_err());
        assert!(open(&mk, &mixed, b"credential:2").is_err());
        assert!(open(&mk, &b, b"credential:1").is_err());
    }

    #[test]
    fn tampering_fails() {
        let mk = MasterKey::generate();
        let sealed = seal(&mk, b"secret value", b"r").unwrap();
        for i in 0..sealed.ciphertext.len() {
            let mut t = sealed.clone();
            t.ciphertext[i] ^= 0x01;
            assert!(matches!(open(&mk, &t, b"r"), Err(CryptoError::Decrypt)));
        }
        for i in 0..sealed.wrapped_key.len() {
            let mut t = sealed.clone();
            t.wrapped_key[i] ^= 0x80;
            assert!(matches!(open(&mk, &t, b"r"), Err(CryptoError::Decrypt)));
        }
    }

    #[test]
    fn truncated_fails_without_panic() {
        let mk = MasterKey::generate();
        let sealed = seal(&mk, b"secret", b"r").unwrap();
        for len in 0..sealed.ciphertext.len() {
            let mut t = sealed.clone();
            t.ciphertext.truncate(len);
            assert!(matches!(open(&mk, &t, b"r"), Err(CryptoError::Decrypt)));
        }
        for len in 0..sealed.wrapped_key.len() {
            let mut t = sealed.clone();
            t.wrapped_key.truncate(len);
            assert!(matches!(open(&mk, &t, b"r"), Err(CryptoError::Decrypt)));
        }
    }

    #[test]
    fn debug_does_not_print_key() {
        let mk = MasterKey::from_bytes([0xab; 32]);
        let shown = format!("{mk:?}");
        assert_eq!(shown, "MasterKey(..)");
        assert!(!shown.to_lowercase().contains("ab"));
    }

    #[test]
    fn from_bytes_and_clone_keep_key() {
        let mk = MasterKey::from_bytes([7; 32]);
        let copy = mk.clone();
        let sealed = seal(&mk, b"x", b"r").unwrap();
        assert_eq!(open(&copy, &sealed, b"r").unwrap().as_slice(), b"x");
    }

    #[test]
    fn derive_subkey_is_hmac_and_separates_purposes() {
        let mk = MasterKey::from_bytes([0x0b; 32]);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[0x0b; 32]).unwrap();
        mac.update(b"snapshots");
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(mk.derive_subkey("snapshots"), expected);

        assert_ne!(
            mk.derive_subkey("snapshots"),
            mk.derive_subkey("recordings")
        );
        assert_ne!(mk.derive_subkey("snapshots"), *mk.as_bytes());
        let other = MasterKey::from_bytes([0x0c; 32]);
        assert_ne!(
            mk.derive_subkey("snapshots"),
            other.derive_subkey("snapshots")
        );
    }

    #[test]
    fn derive_subkey_known_answer() {
        // HMAC-SHA256 with key = 32 zero bytes over "cofre", computed with Python's hmac module.
        let mk = MasterKey::from_bytes([0; 32]);
        assert_eq!(
            hex::encode(mk.derive_subkey("cofre")),
            "214dae8439934eb5fadf3b48ece4cb96afcf5adf6a824feb2dd94ed1b364a125"
        );
    }
}
