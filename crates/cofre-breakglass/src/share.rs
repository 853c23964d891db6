//! Break-glass shares: an epoch's secret split k-of-n with Shamir (blahaj), one printable line each.
//!
//! `cofre-bg-<instance>-<epoch>-<key id>-<k>-<index>-<payload>-<checksum>`, e.g.
//! `cofre-bg-3f9a0c1d2e4b5a69-2-1a2b3c4d-2-1-<52 base32 characters>-9c0f3e`:
//!
//! * instance: the Cofre instance (its keyring id, 16 hex characters);
//! * epoch: the key ceremony that made the share (1, 2, ...); a file names its epoch too, so a share
//!   of an older ceremony is refused by name instead of producing a wrong key;
//! * key id: 8 hex characters naming the epoch's public key (see [`crate::key_id`]), so shares of two
//!   ceremonies that share an epoch number (a restored database) are told apart as well;
//! * k: how many shares open; index: this share's number (1..=n);
//! * payload: the share's 32 bytes in lower-case base32; checksum: see `cofre_crypto::share_text`.

use crate::key::{key_id, EpochSecret};
use crate::{Error, Result, MAX_SHARES, MIN_THRESHOLD};
use cofre_crypto::share_text;
use std::fmt;
use zeroize::Zeroizing;

pub const SHARE_PREFIX: &str = "cofre-bg-";
const SECRET_LEN: usize = 32;
/// Far longer than any real share; bounds the work done on pasted garbage.
const MAX_SHARE_TEXT: usize = 512;
const MAX_EPOCH: u32 = 999_999;

/// One custodian's share. `Display` prints the share line; `Debug` shows only where it belongs.
#[derive(Clone)]
pub struct Share {
    text: Zeroizing<String>,
    instance: String,
    epoch: u32,
    key_id: String,
    threshold: u8,
    index: u8,
    payload: Zeroizing<Vec<u8>>,
}

impl Share {
    /// Parses a share as typed: whitespace anywhere is ignored and upper case accepted.
    pub fn parse(text: &str) -> Result<Share> {
        let fmt_err = |why: &str| Error::ShareFormat(why.to_owned());
        if text.len() > MAX_SHARE_TEXT {
            return Err(fmt_err("it is far too long"));
        }
        let cleaned = share_text::normalise(text);
        if cleaned.is_empty() {
            return Err(fmt_err("it is empty"));
        }
        if !share_text::has_share_alphabet(&cleaned) {
            return Err(fmt_err("it may contain only letters, digits and dashes"));
        }
        if cleaned.starts_with("cofre-unseal-") {
            return Err(fmt_err(
                "this is an unseal share of the server's keyring, not a break-glass share (those start with \"cofre-bg-\")",
            ));
        }
        if !cleaned.starts_with(SHARE_PREFIX) {
            return Err(fmt_err("it must start with \"cofre-bg-\""));
        }
        let body = match share_text::split_checked(&cleaned) {
            Ok(body) => body,
            Err(true) => return Err(Error::ShareChecksum),
            Err(false) => {
                return Err(fmt_err(
                    "the checksum (the last part) must be 6 hexadecimal characters",
                ))
            }
        };
        // The body can be shorter than the prefix: "cofre-bg-" + the checksum of "cofre-bg".
        let Some(rest) = body.strip_prefix(SHARE_PREFIX) else {
            return Err(fmt_err("it must start with \"cofre-bg-\""));
        };
        let parts: Vec<&str> = rest.split('-').collect();
        let [instance, epoch, kid, threshold, index, payload] = parts.as_slice() else {
            return Err(fmt_err(
                "it must have the form cofre-bg-<instance>-<epoch>-<key id>-<threshold>-<share number>-<data>-<checksum>",
            ));
        };
        // The checksum matched, so what follows is as printed (or deliberately forged).
        if !is_instance_id(instance) {
            return Err(fmt_err("the instance must be 16 hexadecimal characters"));
        }
        let epoch = parse_epoch(epoch).ok_or_else(|| fmt_err("the epoch must be a number"))?;
        if kid.len() != 8 || !kid.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(fmt_err("the key id must be 8 hexadecimal characters"));
        }
        let threshold = share_text::parse_small_number(threshold)
            .filter(|k| (MIN_THRESHOLD..=MAX_SHARES).contains(k))
            .ok_or_else(|| fmt_err("the threshold must be a number from 2 to 16"))?;
        let index = share_text::parse_small_number(index)
            .filter(|i| (1..=MAX_SHARES).contains(i))
            .ok_or_else(|| fmt_err("the share number must be a number from 1 to 16"))?;
        let payload = share_text::decode_payload(payload)
            .filter(|p| p.len() == SECRET_LEN)
            .ok_or_else(|| fmt_err("the data part is not 52 base32 characters"))?;
        Ok(Share {
            instance: (*instance).to_owned(),
            epoch,
            key_id: (*kid).to_owned(),
            threshold,
            index,
            payload,
            text: cleaned,
        })
    }

    fn build(
        instance: &str,
        epoch: u32,
        key_id: &str,
        threshold: u8,
        index: u8,
        payload: &[u8],
    ) -> Share {
        let body = Zeroizing::new(format!(
            "{SHARE_PREFIX}{instance}-{epoch}-{key_id}-{threshold}-{index}-{}",
            share_text::encode_payload(payload).as_str()
        ));
        Share {
            text: share_text::with_checksum(&body),
            instance: instance.to_owned(),
            epoch,
            key_id: key_id.to_owned(),
            threshold,
            index,
            payload: Zeroizing::new(payload.to_vec()),
        }
    }

    /// The share line, to print or store.
    pub fn as_str(&self) -> &str {
        &self.text
    }
    pub fn instance(&self) -> &str {
        &self.instance
    }
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
    /// How many shares open the epoch.
    pub fn threshold(&self) -> u8 {
        self.threshold
    }
    /// This share's number, 1-based.
    pub fn index(&self) -> u8 {
        self.index
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("instance", &self.instance)
            .field("epoch", &self.epoch)
            .field("key_id", &self.key_id)
            .field("threshold", &self.threshold)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

fn is_instance_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn parse_epoch(s: &str) -> Option<u32> {
    let canonical = !s.is_empty()
        && s.len() <= 6
        && s.bytes().all(|c| c.is_ascii_digit())
        && !s.starts_with('0');
    canonical
        .then(|| s.parse().ok())
        .flatten()
        .filter(|e| (1..=MAX_EPOCH).contains(e))
}

/// Checks `2 <= threshold <= shares <= 16`; errors name the field (`threshold` or `shares`).
pub fn validate_split(threshold: u8, shares: usize) -> Result<()> {
    if shares > usize::from(MAX_SHARES) {
        return Err(Error::InvalidParameter {
            field: "shares",
            reason: format!("at most {MAX_SHARES} shares are supported, got {shares}"),
        });
    }
    if threshold < MIN_THRESHOLD {
        return Err(Error::InvalidParameter {
            field: "threshold",
            reason: format!(
                "at least {MIN_THRESHOLD} shares must be required (one share alone would be a plain key), got {threshold}"
            ),
        });
    }
    if usize::from(threshold) > shares {
        return Err(Error::InvalidParameter {
            field: "threshold",
            reason: format!("{threshold} shares required but only {shares} would exist"),
        });
    }
    Ok(())
}

/// What a key ceremony produces: the new epoch's public recipient and one share per custodian.
/// The epoch's secret is not in it: it is dropped (and wiped) once split.
pub struct Ceremony {
    pub recipient: String,
    pub key_id: String,
    pub shares: Vec<Share>,
}

/// A new key epoch for `instance`: a fresh X25519 identity, split into `count` shares of which any
/// `threshold` open it.
pub fn ceremony(instance: &str, epoch: u32, threshold: u8, count: usize) -> Result<Ceremony> {
    validate_split(threshold, count)?;
    if !is_instance_id(instance) {
        return Err(Error::InvalidParameter {
            field: "instance",
            reason: "must be 16 lower-case hexadecimal characters".into(),
        });
    }
    if !(1..=MAX_EPOCH).contains(&epoch) {
        return Err(Error::InvalidParameter {
            field: "epoch",
            reason: format!("must be between 1 and {MAX_EPOCH}"),
        });
    }
    let secret = EpochSecret::generate();
    let recipient = secret.recipient()?;
    let kid = key_id(&recipient);
    let shares: Vec<Share> = blahaj::Sharks(threshold)
        .dealer(secret.as_bytes())
        .take(count)
        .map(|s| {
            // blahaj's byte form is the share number (x) followed by the y values.
            let bytes = Zeroizing::new(Vec::from(&s));
            let (index, payload) = bytes.split_first().unwrap_or((&0, &[][..]));
            Share::build(instance, epoch, &kid, threshold, *index, payload)
        })
        .collect();
    if shares.len() != count
        || shares
            .iter()
            .enumerate()
            .any(|(i, s)| usize::from(s.index) != i + 1 || s.payload.len() != SECRET_LEN)
    {
        return Err(Error::Encrypt(
            "the Shamir dealer produced unexpected shares".into(),
        ));
    }
    Ok(Ceremony {
        recipient,
        key_id: kid,
        shares,
    })
}

/// What the shares must agree on: fixed by the file's header, or else by the first share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub instance: String,
    pub epoch: u32,
    pub key_id: String,
    pub threshold: u8,
}

/// Shares collected one at a time (in any order), each checked as it comes so that a custodian
/// hears at once that their share is mistyped or of another epoch.
#[derive(Default)]
pub struct ShareSet {
    expect: Option<Expect>,
    shares: Vec<Share>,
}

impl ShareSet {
    /// Shares for anything; the first share accepted decides the instance, epoch and key.
    pub fn new() -> ShareSet {
        ShareSet::default()
    }

    /// Shares for the file with this header.
    pub fn for_file(header: &crate::Header) -> ShareSet {
        ShareSet {
            expect: Some(Expect {
                instance: header.instance.clone(),
                epoch: header.epoch,
                key_id: key_id(&header.recipient),
                threshold: header.threshold,
            }),
            shares: Vec::new(),
        }
    }

    /// Parses and adds a share; a refused share leaves the set as it was.
    pub fn add_text(&mut self, text: &str) -> Result<&Share> {
        let share = Share::parse(text)?;
        self.add(share)
    }

    pub fn add(&mut self, share: Share) -> Result<&Share> {
        if let Some(e) = &self.expect {
            if share.instance != e.instance {
                return Err(Error::ShareWrongInstance {
                    share: share.instance.clone(),
                    expected: e.instance.clone(),
                });
            }
            if share.epoch != e.epoch {
                return Err(Error::ShareWrongEpoch {
                    share: share.epoch,
                    expected: e.epoch,
                });
            }
            if share.key_id != e.key_id {
                return Err(Error::ShareMismatch(format!(
                    "this share is of epoch {} but of another key (key id {}, expected {}); was the ceremony repeated on a restored server?",
                    share.epoch, share.key_id, e.key_id
                )));
            }
            if share.threshold != e.threshold {
                return Err(Error::ShareMismatch(format!(
                    "this share says {} shares open epoch {}, the others say {}",
                    share.threshold, share.epoch, e.threshold
                )));
            }
        }
        if self.shares.iter().any(|s| s.index == share.index) {
            return Err(Error::ShareDuplicate(share.index));
        }
        if self.expect.is_none() {
            self.expect = Some(Expect {
                instance: share.instance.clone(),
                epoch: share.epoch,
                key_id: share.key_id.clone(),
                threshold: share.threshold,
            });
        }
        self.shares.push(share);
        self.shares
            .last()
            .ok_or_else(|| Error::ShareFormat("no share".into()))
    }

    /// Shares needed in all (the threshold), once known.
    pub fn need(&self) -> Option<u8> {
        self.expect.as_ref().map(|e| e.threshold)
    }

    pub fn have(&self) -> usize {
        self.shares.len()
    }

    pub fn is_complete(&self) -> bool {
        self.need().is_some_and(|k| self.have() >= usize::from(k))
    }

    pub fn expect(&self) -> Option<&Expect> {
        self.expect.as_ref()
    }

    /// Share numbers given so far, sorted.
    pub fn indexes(&self) -> Vec<u8> {
        let mut v: Vec<u8> = self.shares.iter().map(|s| s.index).collect();
        v.sort_unstable();
        v
    }

    /// Rebuilds the epoch's secret, and checks that it is the epoch's key (its key id).
    pub fn combine(&self) -> Result<EpochSecret> {
        let Some(e) = &self.expect else {
            return Err(Error::NotEnoughShares {
                have: 0,
                need: MIN_THRESHOLD,
                epoch: 0,
            });
        };
        if self.shares.len() < usize::from(e.threshold) {
            return Err(Error::NotEnoughShares {
                have: self.shares.len(),
                need: e.threshold,
                epoch: e.epoch,
            });
        }
        let wrong = || Error::SharesDoNotCombine { epoch: e.epoch };
        let mut parts = Vec::with_capacity(self.shares.len());
        for s in &self.shares {
            let mut bytes = Zeroizing::new(Vec::with_capacity(1 + s.payload.len()));
            bytes.push(s.index);
            bytes.extend_from_slice(&s.payload);
            parts.push(blahaj::Share::try_from(bytes.as_slice()).map_err(|_| wrong())?);
        }
        let bytes = Zeroizing::new(
            blahaj::Sharks(e.threshold)
                .recover(parts.iter())
                .map_err(|_| wrong())?,
        );
        let secret = EpochSecret::from_slice(&bytes).ok_or_else(wrong)?;
        if key_id(&secret.recipient()?) != e.key_id {
            return Err(wrong());
        }
        Ok(secret)
    }
}

/// Combines shares given all at once (any order).
pub fn combine(shares: &[Share]) -> Result<EpochSecret> {
    let mut set = ShareSet::new();
    for s in shares {
        set.add(s.clone())?;
    }
    set.combine()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const INSTANCE: &str = "0123456789abcdef";

    fn texts(c: &Ceremony) -> Vec<String> {
        c.shares.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn any_k_shares_in_any_order_combine() {
        let c = ceremony(INSTANCE, 3, 2, 3).unwrap();
        let t = texts(&c);
        for pair in [[0, 1], [1, 0], [0, 2], [2, 1]] {
            let shares: Vec<Share> = pair.iter().map(|&i| Share::parse(&t[i]).unwrap()).collect();
            let secret = combine(&shares).unwrap();
            assert_eq!(secret.recipient().unwrap(), c.recipient);
        }
        let all: Vec<Share> = t.iter().map(|s| Share::parse(s).unwrap()).collect();
        assert_eq!(combine(&all).unwrap().recipient().unwrap(), c.recipient);
    }

    #[test]
    fn share_line_shape() {
        let c = ceremony(INSTANCE, 12, 3, 5).unwrap();
        for (i, s) in c.shares.iter().enumerate() {
            let text = s.to_string();
            assert!(text.starts_with(&format!("cofre-bg-{INSTANCE}-12-{}-3-{}-", c.key_id, i + 1)));
            assert!(
                text.len() < 110,
                "{} characters is long for paper",
                text.len()
            );
            let parsed = Share::parse(&text.to_uppercase()).unwrap();
            assert_eq!(parsed.index(), (i + 1) as u8);
            assert_eq!(parsed.epoch(), 12);
            assert_eq!(parsed.threshold(), 3);
            // Spaces and line breaks from paper are fine.
            let spaced = text
                .as_bytes()
                .chunks(20)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join(" \n ");
            assert_eq!(Share::parse(&spaced).unwrap().as_str(), text);
        }
        assert!(!format!("{:?}", c.shares[0]).contains(&c.shares[0].to_string()[40..]));
    }

    #[test]
    fn fewer_than_threshold_is_refused() {
        let c = ceremony(INSTANCE, 1, 3, 4).unwrap();
        let two: Vec<Share> = c.shares[..2].to_vec();
        let err = combine(&two).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotEnoughShares {
                    have: 2,
                    need: 3,
                    epoch: 1
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "3 shares of key epoch 1 are needed, only 2 given"
        );
    }

    #[test]
    fn every_single_character_change_is_caught() {
        // Deterministic, so the test cannot meet the one-in-16-million checksum collision by chance.
        let text = Share::build(INSTANCE, 2, "1a2b3c4d", 2, 1, &[0x5a; 32]).to_string();
        assert!(Share::parse(&text).is_ok());
        let alphabet = "abcdefghijklmnopqrstuvwxyz234567";
        for i in SHARE_PREFIX.len()..text.len() {
            let orig = text.as_bytes()[i] as char;
            if orig == '-' {
                continue;
            }
            for repl in alphabet
                .chars()
                .chain("0189".chars())
                .filter(|&r| r != orig)
                .take(5)
            {
                let mut typo = text.clone().into_bytes();
                typo[i] = repl as u8;
                let typo = String::from_utf8(typo).unwrap();
                let err = Share::parse(&typo).err();
                assert!(
                    err.is_some(),
                    "changing position {i} to {repl} was not noticed"
                );
            }
        }
    }

    #[test]
    fn shares_of_other_epochs_and_duplicates_are_refused() {
        let a = ceremony(INSTANCE, 1, 2, 3).unwrap();
        let b = ceremony(INSTANCE, 2, 2, 3).unwrap();
        let mut set = ShareSet::new();
        set.add(a.shares[0].clone()).unwrap();
        let err = set.add(b.shares[1].clone()).err().unwrap();
        assert!(
            matches!(
                err,
                Error::ShareWrongEpoch {
                    share: 2,
                    expected: 1
                }
            ),
            "{err}"
        );
        let err = set.add(a.shares[0].clone()).err().unwrap();
        assert!(matches!(err, Error::ShareDuplicate(1)), "{err}");
        assert_eq!(set.have(), 1);
        set.add(a.shares[2].clone()).unwrap();
        assert!(set.is_complete());
        assert_eq!(set.indexes(), vec![1, 3]);
        assert_eq!(set.combine().unwrap().recipient().unwrap(), a.recipient);

        // Same epoch number, another ceremony (a restored server): told apart by the key id.
        let c = ceremony(INSTANCE, 1, 2, 3).unwrap();
        let mut set = ShareSet::new();
        set.add(a.shares[0].clone()).unwrap();
        assert!(matches!(
            set.add(c.shares[1].clone()).err().unwrap(),
            Error::ShareMismatch(_)
        ));
        // Another instance.
        let d = ceremony("fedcba9876543210", 1, 2, 3).unwrap();
        let header = crate::Header {
            instance: INSTANCE.into(),
            epoch: 1,
            threshold: 2,
            written_at: "2024-01-01T00:00:00Z".into(),
            targets: 0,
            credentials: 0,
            versions: 0,
            recipient: a.recipient.clone(),
            audit_head: None,
        };
        let mut set = ShareSet::for_file(&header);
        assert!(matches!(
            set.add(d.shares[0].clone()).err().unwrap(),
            Error::ShareWrongInstance { .. }
        ));
    }

    #[test]
    fn forged_payload_does_not_combine() {
        let a = ceremony(INSTANCE, 1, 2, 3).unwrap();
        // A share with a valid checksum but another payload (as if made by hand).
        let s = &a.shares[1];
        let forged = Share::build(INSTANCE, 1, &a.key_id, 2, 2, &[9u8; 32]);
        assert_eq!(forged.index(), s.index());
        let err = combine(&[a.shares[0].clone(), forged]).unwrap_err();
        assert!(
            matches!(err, Error::SharesDoNotCombine { epoch: 1 }),
            "{err}"
        );
    }

    #[test]
    fn split_limits_name_the_field() {
        let e = ceremony(INSTANCE, 1, 1, 3).err().unwrap();
        assert!(e.to_string().starts_with("threshold:"), "{e}");
        let e = ceremony(INSTANCE, 1, 4, 3).err().unwrap();
        assert!(e.to_string().starts_with("threshold:"), "{e}");
        let e = ceremony(INSTANCE, 1, 2, 17).err().unwrap();
        assert!(e.to_string().starts_with("shares:"), "{e}");
        assert!(ceremony(INSTANCE, 1, 16, 16).is_ok());
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        for text in [
            "",
            "cofre-bg-",
            "cofre-unseal-0123456789abcdef-2-1-aaaa-000000",
            "hello",
            "cofre-bg-x-y-z",
            &"a".repeat(10_000),
            // Found by the share_lines fuzz target: the prefix's own checksum made the body
            // shorter than the prefix ("cofre-bg"), and slicing past it panicked.
            "cofre-bg-98a517",
            "COFRE-BG -98A517",
        ] {
            assert!(Share::parse(text).is_err(), "{text}");
        }
    }
}
