//! User passwords: Argon2id hashes in PHC string format, and generated one-time passwords.
//!
//! Argon2id with the crate's default parameters (the OWASP-recommended 19 MiB, 2 passes) keeps a
//! stolen user table expensive to brute-force. The PHC string records algorithm, parameters and
//! salt, so hashes stay verifiable if the defaults change later.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::Rng;
use zeroize::Zeroizing;

use crate::CryptoError;

/// Hashes `password` with Argon2id and a random salt, returning a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$...`).
pub fn hash_password(password: &str) -> Result<String, CryptoError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| CryptoError::PasswordHash(e.to_string()))
}

/// Checks `password` against a PHC string. A malformed or unsupported hash is simply a failed
/// login (false), never an error the caller could mishandle into a success.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // Only Argon2 hashes are accepted; the parameters come from the PHC string itself.
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Characters for generated passwords: no 0/O, 1/l/I, so a password read aloud or copied from a
/// screen cannot be misread.
const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const GROUPS: usize = 5;
const GROUP_LEN: usize = 4;

/// A random one-time password: 20 characters from an unambiguous alphabet in groups of four,
/// e.g. `xK7p-M2qa-...` (24 characters with the dashes, about 116 bits of entropy).
///
/// It always holds a lower-case letter, an upper-case letter and a digit (and the dashes count as
/// symbols), so it passes the usual complexity rules of targets such as Active Directory.
pub fn generate_password() -> Zeroizing<String> {
    let mut rng = rand::rngs::OsRng;
    loop {
        let mut out = Zeroizing::new(String::with_capacity(GROUPS * (GROUP_LEN + 1)));
        for group in 0..GROUPS {
            if group > 0 {
                out.push('-');
            }
            for _ in 0..GROUP_LEN {
                let c = ALPHABET[rng.gen_range(0..ALPHABET.len())];
                out.push(char::from(c));
            }
        }
        // Redrawing whole passwords (rather than patching in a missing class) keeps every
        // accepted password equally likely. About 1 in 20 draws is redrawn.
        let has = |f: fn(&char) -> bool| out.chars().any(|c| f(&c));
        if has(char::is_ascii_lowercase)
            && has(char::is_ascii_uppercase)
            && has(char::is_ascii_digit)
        {
            return out;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let phc = hash_password("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains("correct horse"));
        assert!(verify_password("correct horse battery staple", &phc));
        assert!(!verify_password("correct horse battery stapler", &phc));
        assert!(!verify_password("", &phc));
    }

    #[test]
    fn salts_differ() {
        let a = hash_password("same").unwrap();
        let b = hash_password("same").unwrap();
        assert_ne!(a, b);
        assert!(verify_password("same", &a));
        assert!(verify_password("same", &b));
    }

    #[test]
    fn empty_and_unicode_passwords() {
        for pw in ["", "pässwörd-🔑"] {
            let phc = hash_password(pw).unwrap();
            assert!(verify_password(pw, &phc));
        }
    }

    #[test]
    fn malformed_hashes_are_false() {
        for phc in [
            "",
            "plaintext",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$bm90IGEgc2FsdA$",
            "$2b$12$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
            "$md5$whatever",
        ] {
            assert!(!verify_password("anything", phc), "{phc}");
        }
    }

    #[test]
    fn generated_password_shape() {
        for _ in 0..200 {
            let pw = generate_password();
            assert_eq!(pw.len(), 24);
            let groups: Vec<&str> = pw.split('-').collect();
            assert_eq!(groups.len(), 5);
            for g in groups {
                assert_eq!(g.len(), 4);
                assert!(g.bytes().all(|c| ALPHABET.contains(&c)));
            }
            for bad in ['0', 'O', '1', 'l', 'I'] {
                assert!(!pw.contains(bad));
            }
            assert!(pw.chars().any(|c| c.is_ascii_lowercase()));
            assert!(pw.chars().any(|c| c.is_ascii_uppercase()));
            assert!(pw.chars().any(|c| c.is_ascii_digit()));
        }
    }

    #[test]
    fn generated_passwords_differ() {
        let a = generate_password();
        let b = generate_password();
        assert_ne!(*a, *b);
    }
}
