//! What every printable share line of Cofre has in common: unseal shares (`cofre-unseal-...`) and
//! break-glass shares (`cofre-bg-...`) are both one line of lower-case letters, digits and dashes,
//! meant to be copied on paper and typed back. They share these rules:
//!
//! * a share as typed is normalised first: whitespace anywhere is dropped and upper case accepted;
//! * numbers are written canonically (no sign, no leading zero), so each share has one spelling;
//! * the payload is lower-case base32 without padding, decoded strictly;
//! * the last part is a checksum, 6 hex characters of SHA-256 over everything before `-<checksum>`,
//!   which catches a mistyped character (about one miss in 16 million) before the share is used.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Length of the checksum in hex characters (3 bytes of SHA-256).
pub const CHECKSUM_LEN: usize = 6;

/// Drops whitespace and lower-cases, so a share read back from paper need not be retyped exactly.
pub fn normalise(text: &str) -> Zeroizing<String> {
    Zeroizing::new(
        text.chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_lowercase())
            .collect(),
    )
}

/// Whether the text uses only the characters a share may contain (after [`normalise`]).
pub fn has_share_alphabet(text: &str) -> bool {
    text.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

/// The checksum of a share's body (everything before `-<checksum>`).
pub fn checksum(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    hex::encode(&digest[..CHECKSUM_LEN / 2])
}

/// Splits `body-checksum` and checks the checksum (in constant time). `Err(false)` when the last
/// part is not shaped like a checksum, `Err(true)` when it is but does not match.
pub fn split_checked(normalised: &str) -> Result<&str, bool> {
    let Some((body, sum)) = normalised.rsplit_once('-') else {
        return Err(false);
    };
    if sum.len() != CHECKSUM_LEN || !sum.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(false);
    }
    if crate::token::constant_time_eq(checksum(body).as_bytes(), sum.as_bytes()) {
        Ok(body)
    } else {
        Err(true)
    }
}

/// Appends `-<checksum>` to a body.
pub fn with_checksum(body: &str) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::with_capacity(body.len() + 1 + CHECKSUM_LEN));
    text.push_str(body);
    text.push('-');
    text.push_str(&checksum(body));
    text
}

/// Decimal 0..=255 written canonically (digits only, no sign, no leading zero).
pub fn parse_small_number(s: &str) -> Option<u8> {
    let canonical = !s.is_empty()
        && s.len() <= 3
        && s.bytes().all(|c| c.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if canonical {
        s.parse().ok()
    } else {
        None
    }
}

/// Lower-case unpadded base32 of a payload.
pub fn encode_payload(bytes: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(crate::base32::encode_lower(bytes))
}

/// Strict inverse of [`encode_payload`]: `None` for anything that is not the canonical encoding.
pub fn decode_payload(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    crate::base32::decode_lower(text).map(Zeroizing::new)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn checksum_round_trip_and_typo() {
        let text = with_checksum("cofre-test-abc");
        assert_eq!(split_checked(&text), Ok("cofre-test-abc"));
        let typo = text.replacen("abc", "abd", 1);
        assert_eq!(split_checked(&typo), Err(true));
        assert_eq!(split_checked("cofre-test-abc-xyz"), Err(false));
        assert_eq!(split_checked("nodash"), Err(false));
    }

    #[test]
    fn normalise_and_numbers() {
        assert_eq!(normalise(" Ab c\n-D ").as_str(), "abc-d");
        assert!(has_share_alphabet("abc-123"));
        assert!(!has_share_alphabet("abc_123"));
        assert_eq!(parse_small_number("16"), Some(16));
        assert_eq!(parse_small_number("016"), None);
        assert_eq!(parse_small_number("+1"), None);
        assert_eq!(parse_small_number("256"), None);
    }

    #[test]
    fn payload_round_trip() {
        let p = encode_payload(&[1, 2, 3, 4, 5]);
        assert_eq!(decode_payload(&p).unwrap().as_slice(), &[1, 2, 3, 4, 5]);
        assert!(decode_payload("A").is_none());
    }
}
