//! TOTP second factor (RFC 6238): HMAC-SHA-1, 6 digits, 30-second steps, the parameters every
//! authenticator app assumes when it scans an `otpauth://` QR code.
//!
//! Verification accepts the current step and one step either side (clock drift and typing time) and
//! returns the step that matched, which the caller stores: a later code from the same or an earlier
//! step is refused, so a code seen over a shoulder or in a log cannot be replayed.

use totp_rs::{Rfc6238, TOTP};
use zeroize::Zeroizing;

use crate::token::constant_time_eq;

const STEP_SECONDS: u64 = 30;
const DIGITS: usize = 6;
/// RFC 4226 asks for at least 128 bits; a shorter stored secret means corruption, so it fails closed.
const MIN_SECRET_LEN: usize = 16;

/// A new random TOTP secret: 20 bytes (160 bits, the RFC 4226 recommendation).
pub fn generate_secret() -> Zeroizing<Vec<u8>> {
    Zeroizing::new(crate::random_array::<20>().to_vec())
}

/// The secret in upper-case unpadded base32, for typing into an authenticator app by hand.
pub fn secret_base32(secret: &[u8]) -> String {
    crate::base32::encode_upper(secret)
}

/// The `otpauth://totp/...` URI that authenticator apps import (usually shown as a QR code).
/// `issuer` and `account` are percent-encoded, so any characters are safe.
pub fn otpauth_uri(secret: &[u8], account: &str, issuer: &str) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        account = percent_encode(account),
        secret = secret_base32(secret),
    )
}

/// The 6-digit code for the step containing `unix_time`.
pub fn code_at(secret: &[u8], unix_time: u64) -> String {
    totp_for(secret)
        .map(|totp| totp.generate(unix_time))
        .unwrap_or_default()
}

/// Checks `code` against the current step and one step either side; returns the matched step.
/// Replay protection: a step <= `last_used_step` is refused. Spaces in the code (as apps display it,
/// "123 456") are ignored.
pub fn verify(
    secret: &[u8],
    code: &str,
    unix_time: u64,
    last_used_step: Option<u64>,
) -> Option<u64> {
    if secret.len() < MIN_SECRET_LEN {
        return None;
    }
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS || !code.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let totp = totp_for(secret)?;
    let current = unix_time / STEP_SECONDS;
    let candidates = [
        current.checked_sub(1),
        Some(current),
        current.checked_add(1),
    ];
    let mut matched = None;
    // Every candidate is computed and compared even after a match, so timing does not reveal
    // which neighbouring step the code belonged to.
    for step in candidates.into_iter().flatten() {
        let Some(step_time) = step.checked_mul(STEP_SECONDS) else {
            continue;
        };
        let fresh = last_used_step.is_none_or(|last| step > last);
        let equal = constant_time_eq(totp.generate(step_time).as_bytes(), code.as_bytes());
        if equal && fresh && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// Builds the totp-rs generator. It goes through `Rfc6238::with_defaults` (SHA-1, 6 digits, 30 s,
/// skew 1), whose signature is the same whether or not another crate in the build turns on
/// totp-rs's `otpauth` feature (which changes `TOTP::new`). The secret is then set directly, so
/// generation works for any length; length policy is enforced by [`verify`]. `None` cannot happen
/// in practice (the placeholder secret is valid) but keeps this free of panics.
fn totp_for(secret: &[u8]) -> Option<TOTP> {
    let placeholder = vec![0u8; MIN_SECRET_LEN];
    let mut totp = TOTP::try_from(Rfc6238::with_defaults(placeholder).ok()?).ok()?;
    totp.secret = secret.to_vec();
    totp.digits = DIGITS;
    totp.step = STEP_SECONDS;
    Some(totp)
}

/// Percent-encodes everything except RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 appendix B gives 8-digit codes; a 6-digit code is the last six digits.
        let vectors = [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        for (time, eight) in vectors {
            assert_eq!(code_at(RFC_SECRET, time), &eight[2..], "time {time}");
        }
        assert_eq!(code_at(RFC_SECRET, 59), "287082");
    }

    #[test]
    fn verify_accepts_current_and_neighbour_steps() {
        let secret = generate_secret();
        let now = 1_700_000_015u64;
        let step = now / 30;
        assert_eq!(
            verify(&secret, &code_at(&secret, now), now, None),
            Some(step)
        );
        assert_eq!(
            verify(&secret, &code_at(&secret, now - 30), now, None),
            Some(step - 1)
        );
        assert_eq!(
            verify(&secret, &code_at(&secret, now + 30), now, None),
            Some(step + 1)
        );
    }

    #[test]
    fn verify_refuses_codes_outside_the_window() {
        let secret = generate_secret();
        let now = 1_700_000_015u64;
        for offset in [60i64, -60, 90, -3600] {
            let t = now.checked_add_signed(offset).unwrap();
            let code = code_at(&secret, t);
            // A code from far away can collide with a window code by chance (1 in 10^6 per
            // step); only assert when it does not.
            let collides = (0..3).any(|i| code_at(&secret, now - 30 + i * 30) == code);
            if !collides {
                assert_eq!(verify(&secret, &code, now, None), None, "offset {offset}");
            }
        }
    }

    #[test]
    fn verify_refuses_replay() {
        let secret = generate_secret();
        let now = 1_700_000_015u64;
        let code = code_at(&secret, now);
        let step = verify(&secret, &code, now, None).unwrap();
        assert_eq!(verify(&secret, &code, now, Some(step)), None);
        assert_eq!(verify(&secret, &code, now + 10, Some(step)), None);
        // An older step after a newer one was used is refused too.
        let previous = code_at(&secret, now - 30);
        assert_eq!(verify(&secret, &previous, now, Some(step)), None);
        // The next step is still fine.
        let next = code_at(&secret, now + 30);
        assert_eq!(verify(&secret, &next, now + 30, Some(step)), Some(step + 1));
    }

    #[test]
    fn verify_rejects_malformed_codes_and_wrong_secrets() {
        let secret = generate_secret();
        let now = 59u64;
        let code = code_at(&secret, now);
        for bad in ["", "12345", "1234567", "abcdef", "12345a", "１２３４５６"] {
            assert_eq!(verify(&secret, bad, now, None), None, "{bad}");
        }
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(verify(&secret, &spaced, now, None), Some(1));
        let other = generate_secret();
        if code_at(&other, now) != code {
            assert_eq!(verify(&other, &code, now, None), None);
        }
        assert_eq!(verify(b"short", &code_at(b"short", now), now, None), None);
    }

    #[test]
    fn verify_at_time_zero_and_far_future() {
        let secret = generate_secret();
        assert_eq!(verify(&secret, &code_at(&secret, 0), 0, None), Some(0));
        let far = u64::MAX - 5;
        let code = code_at(&secret, far);
        assert_eq!(verify(&secret, &code, far, None), Some(far / 30));
    }

    #[test]
    fn secret_encoding_and_uri() {
        let secret = generate_secret();
        assert_eq!(secret.len(), 20);
        assert_eq!(
            secret_base32(RFC_SECRET),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        let uri = otpauth_uri(RFC_SECRET, "alice@example.com", "Cofre ACME");
        assert_eq!(
            uri,
            "otpauth://totp/Cofre%20ACME:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Cofre%20ACME&algorithm=SHA1&digits=6&period=30"
        );
        let uri = otpauth_uri(RFC_SECRET, "a:b&c=d", "x?y");
        assert!(uri.starts_with("otpauth://totp/x%3Fy:a%3Ab%26c%3Dd?"));
    }
}
