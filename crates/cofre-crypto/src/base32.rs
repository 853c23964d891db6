//! RFC 4648 base32 without padding, in both cases: upper case for TOTP secrets (what authenticator
//! apps expect) and lower case for unseal shares (easier to read back from paper). Kept in-crate
//! because it is tiny and the decoder must be strict (canonical only) for share checksums to mean
//! anything.

const UPPER: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const LOWER: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

pub(crate) fn encode_upper(data: &[u8]) -> String {
    encode(data, UPPER)
}

pub(crate) fn encode_lower(data: &[u8]) -> String {
    encode(data, LOWER)
}

fn encode(data: &[u8], alphabet: &[u8; 32]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let mut buffer: u16 = 0;
    let mut bits: u32 = 0;
    for &byte in data {
        buffer = (buffer << 8) | u16::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(alphabet[usize::from((buffer >> bits) & 0x1f)]));
        }
        // Only the low `bits` bits are still pending; dropping the rest keeps the shift in range.
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            alphabet[usize::from((buffer << (5 - bits)) & 0x1f)],
        ));
    }
    out
}

/// Decodes lower-case unpadded base32. Returns `None` for any character outside the alphabet, for
/// an impossible length, or when the unused trailing bits are not zero: accepting several spellings
/// of the same bytes would let a mistyped share still decode.
pub(crate) fn decode_lower(text: &str) -> Option<Vec<u8>> {
    // Lengths 1, 3 and 6 (mod 8) cannot come from whole bytes.
    if matches!(text.len() % 8, 1 | 3 | 6) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u16 = 0;
    let mut bits: u32 = 0;
    for c in text.bytes() {
        let value = match c {
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | u16::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    if buffer != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(encode_upper(plain.as_bytes()), encoded);
            let lower = encoded.to_ascii_lowercase();
            assert_eq!(encode_lower(plain.as_bytes()), lower);
            assert_eq!(decode_lower(&lower).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn round_trip_all_lengths() {
        let data: Vec<u8> = (0u8..=255).collect();
        for len in 0..64 {
            let encoded = encode_lower(&data[..len]);
            assert_eq!(decode_lower(&encoded).unwrap(), &data[..len]);
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(
            decode_lower("MZXW6").is_none(),
            "upper case is not accepted here"
        );
        assert!(decode_lower("mzxw1").is_none(), "1 is not in the alphabet");
        assert!(decode_lower("m").is_none(), "impossible length");
        // "my" is "f"; "mz" has a non-zero unused trailing bit.
        assert!(decode_lower("mz").is_none());
    }
}
