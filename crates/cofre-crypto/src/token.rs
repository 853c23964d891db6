//! API bearer tokens.
//!
//! A token is 32 random bytes shown once as `cofre_` + base64url (no padding); the prefix makes a
//! leaked token easy to recognise for secret scanners. Only its SHA-256 is stored: the token already
//! has 256 bits of entropy, so a fast hash is enough (no salt or Argon2 needed) and a lookup by hash
//! stays a plain index query.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

const PREFIX: &str = "cofre_";

/// A new token and the SHA-256 hex of it to store. The token itself is shown to the user once and
/// never stored.
pub fn generate_token() -> (Zeroizing<String>, String) {
    let bytes = Zeroizing::new(crate::random_array::<32>());
    let mut token = Zeroizing::new(String::with_capacity(PREFIX.len() + 43));
    token.push_str(PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes.as_slice(), &mut token);
    let hash = hash_token(&token);
    (token, hash)
}

/// SHA-256 of the token text, lower-case hex: the form stored and looked up.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A one-time numeric code of `digits` digits (at most 9), uniform over them (OS CSPRNG, by
/// rejection: no digit is likelier than another), for codes a person types from an e-mail.
pub fn generate_code(digits: u32) -> Zeroizing<String> {
    let digits = digits.clamp(1, 9);
    let modulus = 10u32.pow(digits);
    // The largest multiple of `modulus` that fits: draws at or above it are drawn again.
    let limit = u32::MAX - u32::MAX % modulus;
    loop {
        let n = u32::from_le_bytes(crate::random_array::<4>());
        if n < limit {
            return Zeroizing::new(format!("{:0width$}", n % modulus, width = digits as usize));
        }
    }
}

/// Compares two byte strings in time that does not depend on where they differ (only on their
/// lengths), for comparing token hashes and other secrets.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_digits_of_the_length_asked_and_differ() {
        let codes: Vec<_> = (0..50).map(|_| generate_code(8)).collect();
        for c in &codes {
            assert_eq!(c.len(), 8);
            assert!(c.bytes().all(|b| b.is_ascii_digit()), "{}", c.as_str());
        }
        let mut distinct: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 45);
        assert_eq!(generate_code(6).len(), 6);
    }

    #[test]
    fn token_shape_and_hash() {
        let (token, hash) = generate_token();
        assert!(token.starts_with("cofre_"));
        assert_eq!(token.len(), 6 + 43);
        let body = &token[PREFIX.len()..];
        assert!(body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        assert_eq!(hash, hash_token(&token));
        assert_eq!(hash.len(), 64);
    }

    #[test]
    fn tokens_differ() {
        let (a, ha) = generate_token();
        let (b, hb) = generate_token();
        assert_ne!(*a, *b);
        assert_ne!(ha, hb);
    }

    #[test]
    fn hash_known_answer() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn constant_time_eq_cases() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
