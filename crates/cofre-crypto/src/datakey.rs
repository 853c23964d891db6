//! A data key for long streams (session recordings): generated per stream, kept sealed under the
//! master key in the database, used to encrypt each frame of the stream on its own so that a
//! crash loses only the frame being written.

use crate::envelope::{aead_decrypt, aead_encrypt, open, seal, MasterKey, SealedSecret};
use crate::CryptoError;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
        Self(k)
    }

    /// The key sealed under the master key, bound to `aad` (e.g. the stream's id).
    pub fn seal(&self, mk: &MasterKey, aad: &[u8]) -> Result<SealedSecret, CryptoError> {
        seal(mk, &self.0, aad)
    }

    pub fn open(mk: &MasterKey, sealed: &SealedSecret, aad: &[u8]) -> Result<Self, CryptoError> {
        let bytes = open(mk, sealed, aad)?;
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(Self(key))
    }

    /// Encrypts one frame; `aad` should name the stream and the frame's position.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        aead_encrypt(&self.0, plaintext, aad)
    }

    pub fn decrypt(&self, frame: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        aead_decrypt(&self.0, frame, aad)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_are_bound_to_position() {
        let mk = MasterKey::generate();
        let k = DataKey::generate();
        let sealed = k.seal(&mk, b"rec:1").unwrap();
        let k2 = DataKey::open(&mk, &sealed, b"rec:1").unwrap();
        assert!(DataKey::open(&mk, &sealed, b"rec:2").is_err());
        let f = k.encrypt(b"hello", b"rec:1:0").unwrap();
        assert_eq!(k2.decrypt(&f, b"rec:1:0").unwrap().as_slice(), b"hello");
        assert!(k2.decrypt(&f, b"rec:1:1").is_err());
    }
}
