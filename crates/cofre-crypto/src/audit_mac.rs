//! The MAC that authenticates the head of the audit chain (its newest `seq` and `hash`), and the
//! anchors of it kept outside the database. The chain itself shows an edited, deleted or reordered
//! entry; only a secret shows that the newest entries were cut off and the head moved back, since
//! anyone with the database can recompute a shorter chain's head.

use crate::MasterKey;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

const PURPOSE: &str = "cofre:audit-head-mac:v1";

/// The key for audit head MACs, derived from the master key (never the master key itself).
#[derive(Clone)]
pub struct AuditMacKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for AuditMacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditMacKey(..)")
    }
}

impl AuditMacKey {
    pub fn derive(master: &MasterKey) -> AuditMacKey {
        AuditMacKey(Zeroizing::new(master.derive_subkey(PURPOSE)))
    }

    /// Hex HMAC-SHA256 of `seq` and `hash`, for the head row and for anchors.
    pub fn mac(&self, seq: i64, hash: &str) -> String {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_slice()) else {
            return String::new();
        };
        mac.update(format!("{seq}:{hash}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `mac` is this key's MAC of `seq` and `hash` (in constant time).
    pub fn verify(&self, seq: i64, hash: &str, mac: &str) -> bool {
        let expected = self.mac(seq, hash);
        expected.len() == mac.len() && bool::from(expected.as_bytes().ct_eq(mac.as_bytes()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_binds_seq_hash_and_key() {
        let k = AuditMacKey::derive(&MasterKey::from_bytes([7; 32]));
        let m = k.mac(42, "abcd");
        assert_eq!(m.len(), 64);
        assert!(k.verify(42, "abcd", &m));
        assert!(!k.verify(41, "abcd", &m));
        assert!(!k.verify(42, "abce", &m));
        assert!(!k.verify(42, "abcd", ""));
        let other = AuditMacKey::derive(&MasterKey::from_bytes([8; 32]));
        assert!(!other.verify(42, "abcd", &m));
    }
}
