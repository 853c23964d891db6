//! The instance keyring (`DATA_DIR/keyring.json`, mode 0600) and how it is unsealed.
//!
//! The master key is random and is stored only wrapped (XChaCha20-Poly1305) under a key-encryption
//! key (KEK). Where the KEK lives is the seal:
//!
//! * [`SealKind::KeyFile`]: the KEK is in `DATA_DIR/master.key` (0600, hex) and the instance unseals
//!   by itself at start. Convenient for the embedded default, but a copy of the whole data directory
//!   opens.
//! * [`SealKind::Shamir`]: the KEK is split into `shares` unseal shares of which any `threshold`
//!   rebuild it, handed to different custodians. Nothing on disk opens the keyring, so a stolen disk
//!   or snapshot is useless.
//!
//! The wrapped master key is authenticated, so a successful unwrap proves the KEK right: a wrong key
//! file or a wrong set of shares produces a clear error instead of a garbage master key. The
//! authenticated data also binds the wrapped key to the keyring id and seal, so editing those fields
//! in keyring.json makes the keyring refuse to open rather than behave differently.
//!
//! Unseal shares are single printable lines meant to be copied on paper:
//! `cofre-unseal-<keyring id>-<threshold>-<share number>-<payload, base32>-<checksum>`. The
//! checksum catches a mistyped character before the share is used, and the keyring id catches a
//! share that belongs to another instance or an earlier key ceremony.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::envelope::{aead_decrypt, aead_encrypt, MasterKey};
use crate::files::{ensure_private_dir, write_private_file};
use crate::{random_array, CryptoError};

/// The keyring.json format this code writes and understands.
const FORMAT: u32 = 1;
const KEYRING_FILE: &str = "keyring.json";
const KEY_FILE: &str = "master.key";
const KEY_LEN: usize = 32;
/// nonce (24) + master key (32) + tag (16).
const WRAPPED_LEN: usize = 24 + KEY_LEN + 16;
/// Enough custodians for any real ceremony, while keeping share numbers short.
const MAX_SHARES: u8 = 16;
const SHARE_PREFIX: &str = "cofre-unseal-";
/// Six hex characters: 24 bits, so a mistyped share slips through about once in 16 million.
const CHECKSUM_BYTES: usize = 3;
/// Far longer than any real share; bounds the work done on pasted garbage.
const MAX_SHARE_TEXT: usize = 256;

/// The sealed instance keyring as stored in `DATA_DIR/keyring.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Keyring {
    /// keyring.json format version (1).
    pub format: u32,
    /// Random id, 16 lower-case hex characters. Shares carry it, so a share from another
    /// instance or an earlier key ceremony is recognised.
    pub keyring_id: String,
    pub seal: SealKind,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// The master key encrypted under the KEK: base64 of `nonce || ciphertext || tag`.
    pub wrapped_master_key: String,
}

/// How the key-encryption key is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SealKind {
    /// The KEK is in `DATA_DIR/master.key`; unseals automatically.
    KeyFile,
    /// The KEK is split into `shares` Shamir shares, any `threshold` of which rebuild it.
    Shamir { threshold: u8, shares: u8 },
}

impl Keyring {
    /// `DATA_DIR/keyring.json`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(KEYRING_FILE)
    }

    /// `DATA_DIR/master.key`, the KEK of a [`SealKind::KeyFile`] keyring.
    pub fn key_file_path(data_dir: &Path) -> PathBuf {
        data_dir.join(KEY_FILE)
    }

    /// Reads and checks keyring.json; `None` when the data directory has no keyring yet.
    pub fn load(data_dir: &Path) -> Result<Option<Keyring>, CryptoError> {
        let path = Self::path(data_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(CryptoError::io(
                    format!("could not read {}", path.display()),
                    e,
                ))
            }
        };
        let keyring: Keyring = serde_json::from_slice(&bytes)
            .map_err(|e| CryptoError::KeyringInvalid(format!("{}: {e}", path.display())))?;
        keyring.validate()?;
        Ok(Some(keyring))
    }

    /// Creates a key-file keyring: writes `master.key` then `keyring.json` and returns the new master
    /// key. Refuses if keyring.json exists, and also if a master.key is lying around without one
    /// (it may be the only copy of the KEK of a keyring.json that is being restored).
    pub fn init_key_file(data_dir: &Path) -> Result<(Keyring, MasterKey), CryptoError> {
        refuse_existing(&Self::path(data_dir))?;
        let key_path = Self::key_file_path(data_dir);
        refuse_existing(&key_path)?;
        ensure_private_dir(data_dir)?;

        let kek = Zeroizing::new(random_array::<KEY_LEN>());
        let master = MasterKey::generate();
        let keyring = Self::wrap_new(SealKind::KeyFile, &kek, &master)?;

        // The key file goes first: a crash in between leaves a key file without a keyring (refused
        // above, so it is noticed), never a keyring whose KEK was lost.
        let mut key_text = Zeroizing::new(hex::encode(kek.as_slice()));
        key_text.push('\n');
        write_private_file(&key_path, key_text.as_bytes())?;
        if let Err(e) = keyring.save(data_dir) {
            // The key file is useless without this keyring; removing it lets a retry proceed.
            let _ = std::fs::remove_file(&key_path);
            return Err(e);
        }
        Ok((keyring, master))
    }

    /// Creates a Shamir keyring: a random master key wrapped under a random KEK that is split into
    /// `shares` unseal shares, any `threshold` of which open it. Writes only keyring.json; the shares
    /// are returned to be handed out once and are stored nowhere. The master key is not returned:
    /// the instance is sealed from the start and opens like at every later start, with the shares.
    ///
    /// `2 <= threshold <= shares <= 16`.
    pub fn init_shamir(
        data_dir: &Path,
        shares: u8,
        threshold: u8,
    ) -> Result<(Keyring, Vec<UnsealShare>), CryptoError> {
        validate_shamir(threshold, shares)?;
        refuse_existing(&Self::path(data_dir))?;
        ensure_private_dir(data_dir)?;

        let kek = Zeroizing::new(random_array::<KEY_LEN>());
        let master = MasterKey::generate();
        let keyring = Self::wrap_new(SealKind::Shamir { threshold, shares }, &kek, &master)?;

        let unseal_shares: Vec<UnsealShare> = blahaj::Sharks(threshold)
            .dealer(kek.as_slice())
            .take(usize::from(shares))
            .map(|share| {
                // blahaj's byte form is the share number (x) followed by the y values.
                let bytes = Zeroizing::new(Vec::from(&share));
                let (index, payload) = bytes.split_first().unwrap_or((&0, &[][..]));
                UnsealShare::build(&keyring.keyring_id, threshold, *index, payload)
            })
            .collect();
        if unseal_shares.len() != usize::from(shares)
            || unseal_shares
                .iter()
                .any(|s| s.index == 0 || s.payload.len() != KEY_LEN)
        {
            return Err(CryptoError::InvalidParameter(
                "shares: the Shamir dealer produced unexpected shares".into(),
            ));
        }
        keyring.save(data_dir)?;
        Ok((keyring, unseal_shares))
    }

    /// Opens a key-file keyring with `DATA_DIR/master.key`.
    pub fn unseal_with_key_file(&self, data_dir: &Path) -> Result<MasterKey, CryptoError> {
        if self.seal != SealKind::KeyFile {
            return Err(CryptoError::WrongSealKind(
                "this keyring is sealed with Shamir unseal shares, not a key file",
            ));
        }
        let path = Self::key_file_path(data_dir);
        let text = match std::fs::read(&path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CryptoError::KeyFileMissing(path))
            }
            Err(e) => {
                return Err(CryptoError::io(
                    format!("could not read {}", path.display()),
                    e,
                ))
            }
        };
        let mut kek = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(text.trim_ascii(), kek.as_mut_slice())
            .map_err(|_| CryptoError::KeyFileInvalid(path.clone()))?;
        self.unwrap_master(&kek)
            .map_err(|_| CryptoError::KeyFileWrong)
    }

    /// A fresh unseal session for a Shamir keyring. For a key-file keyring it needs nothing and
    /// every submission is refused.
    pub fn unseal_progress(&self) -> UnsealProgress {
        let (threshold, total) = match self.seal {
            SealKind::KeyFile => (0, 0),
            SealKind::Shamir { threshold, shares } => (threshold, shares),
        };
        UnsealProgress {
            keyring_id: self.keyring_id.clone(),
            threshold,
            total,
            given: Vec::new(),
        }
    }

    fn wrap_new(
        seal: SealKind,
        kek: &[u8; KEY_LEN],
        master: &MasterKey,
    ) -> Result<Self, CryptoError> {
        let keyring_id = hex::encode(random_array::<8>());
        let aad = wrap_aad(FORMAT, &keyring_id, &seal);
        let wrapped = aead_encrypt(kek, master.as_bytes(), &aad)?;
        Ok(Keyring {
            format: FORMAT,
            keyring_id,
            seal,
            created_at: now_rfc3339(),
            wrapped_master_key: STANDARD.encode(wrapped),
        })
    }

    fn unwrap_master(&self, kek: &[u8; KEY_LEN]) -> Result<MasterKey, CryptoError> {
        let wrapped = STANDARD
            .decode(&self.wrapped_master_key)
            .map_err(|_| CryptoError::Decrypt)?;
        let aad = wrap_aad(self.format, &self.keyring_id, &self.seal);
        let plain = aead_decrypt(kek, &wrapped, &aad)?;
        let bytes: [u8; KEY_LEN] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(MasterKey::from_bytes(bytes))
    }

    fn save(&self, data_dir: &Path) -> Result<(), CryptoError> {
        let mut json = serde_json::to_vec_pretty(self)
            .map_err(|e| CryptoError::KeyringInvalid(format!("could not serialise: {e}")))?;
        json.push(b'\n');
        write_private_file(&Self::path(data_dir), &json)
    }

    /// Checks a loaded keyring, so problems surface at load with a precise message rather than
    /// later as an unexplained failure to unseal.
    fn validate(&self) -> Result<(), CryptoError> {
        if self.format != FORMAT {
            return Err(CryptoError::KeyringInvalid(format!(
                "unsupported format {} (this version of Cofre reads format {FORMAT})",
                self.format
            )));
        }
        if !is_keyring_id(&self.keyring_id) {
            return Err(CryptoError::KeyringInvalid(
                "keyring_id must be 16 lower-case hexadecimal characters".into(),
            ));
        }
        if let SealKind::Shamir { threshold, shares } = self.seal {
            validate_shamir(threshold, shares)
                .map_err(|e| CryptoError::KeyringInvalid(e.to_string()))?;
        }
        match STANDARD.decode(&self.wrapped_master_key) {
            Ok(w) if w.len() == WRAPPED_LEN => Ok(()),
            _ => Err(CryptoError::KeyringInvalid(
                "wrapped_master_key is not a wrapped 32-byte key in base64".into(),
            )),
        }
    }
}

fn refuse_existing(path: &Path) -> Result<(), CryptoError> {
    // symlink_metadata: a dangling symlink still counts as "something is there".
    match std::fs::symlink_metadata(path) {
        Ok(_) => Err(CryptoError::KeyringExists(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CryptoError::io(
            format!("could not check {}", path.display()),
            e,
        )),
    }
}

fn validate_shamir(threshold: u8, shares: u8) -> Result<(), CryptoError> {
    if shares > MAX_SHARES {
        return Err(CryptoError::InvalidParameter(format!(
            "shares: at most {MAX_SHARES} shares are supported, got {shares}"
        )));
    }
    if threshold < 2 {
        return Err(CryptoError::InvalidParameter(format!(
            "threshold: at least 2 shares must be required (one share alone would be a key file), got {threshold}"
        )));
    }
    if threshold > shares {
        return Err(CryptoError::InvalidParameter(format!(
            "threshold: {threshold} shares required but only {shares} would exist"
        )));
    }
    Ok(())
}

/// The authenticated data of the wrapped master key. Binding id and seal means an edited
/// keyring.json fails to open instead of, say, asking for fewer shares.
fn wrap_aad(format: u32, keyring_id: &str, seal: &SealKind) -> Vec<u8> {
    let seal = match seal {
        SealKind::KeyFile => "key_file".to_string(),
        SealKind::Shamir { threshold, shares } => format!("shamir:{threshold}:{shares}"),
    };
    format!("cofre-keyring:v{format}:{keyring_id}:{seal}").into_bytes()
}

fn is_keyring_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Current UTC time as RFC 3339 (`2024-05-01T12:34:56Z`); kept here to avoid a date crate for one
/// timestamp.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_rfc3339(secs)
}

fn format_rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One custodian's unseal share. `Display` prints the share text (to hand it out once); `Debug`
/// shows only the keyring id and share number.
#[derive(Clone)]
pub struct UnsealShare {
    text: Zeroizing<String>,
    keyring_id: String,
    threshold: u8,
    index: u8,
    payload: Zeroizing<Vec<u8>>,
}

impl UnsealShare {
    /// Parses a share as typed by a custodian. Surrounding and embedded whitespace is ignored and
    /// upper case is accepted, so a share read back from paper need not be retyped exactly.
    pub fn parse(text: &str) -> Result<UnsealShare, CryptoError> {
        let fmt_err = |why: &str| CryptoError::ShareFormat(why.to_string());
        if text.len() > MAX_SHARE_TEXT {
            return Err(fmt_err("it is far too long"));
        }
        let cleaned: Zeroizing<String> = Zeroizing::new(
            text.chars()
                .filter(|c| !c.is_whitespace())
                .map(|c| c.to_ascii_lowercase())
                .collect(),
        );
        if cleaned.is_empty() {
            return Err(fmt_err("it is empty"));
        }
        if !cleaned
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        {
            return Err(fmt_err("it may contain only letters, digits and dashes"));
        }
        let Some(rest) = cleaned.strip_prefix(SHARE_PREFIX) else {
            return Err(fmt_err("it must start with \"cofre-unseal-\""));
        };
        let parts: Vec<&str> = rest.split('-').collect();
        let [id, threshold, index, payload, checksum] = parts.as_slice() else {
            return Err(fmt_err(
                "it must have the form cofre-unseal-<keyring id>-<threshold>-<share number>-<data>-<checksum>",
            ));
        };
        if checksum.len() != CHECKSUM_BYTES * 2 || !checksum.bytes().all(|c| c.is_ascii_hexdigit())
        {
            return Err(fmt_err(
                "the checksum (the last part) must be 6 hexadecimal characters",
            ));
        }
        // Everything before "-<checksum>".
        let body = &cleaned[..cleaned.len() - checksum.len() - 1];
        if !crate::token::constant_time_eq(share_checksum(body).as_bytes(), checksum.as_bytes()) {
            return Err(CryptoError::ShareChecksum);
        }
        // From here on the text is exactly as printed (or deliberately forged), so format errors
        // below mean a share made by something other than this code.
        if !is_keyring_id(id) {
            return Err(fmt_err("the keyring id must be 16 hexadecimal characters"));
        }
        let threshold = parse_small_number(threshold)
            .filter(|k| (2..=MAX_SHARES).contains(k))
            .ok_or_else(|| fmt_err("the threshold must be a number from 2 to 16"))?;
        let index = parse_small_number(index)
            .filter(|i| (1..=MAX_SHARES).contains(i))
            .ok_or_else(|| fmt_err("the share number must be a number from 1 to 16"))?;
        let payload = crate::base32::decode_lower(payload)
            .map(Zeroizing::new)
            .filter(|p| p.len() == KEY_LEN)
            .ok_or_else(|| fmt_err("the data part is not 52 base32 characters"))?;
        Ok(UnsealShare {
            keyring_id: (*id).to_string(),
            threshold,
            index,
            payload,
            text: cleaned,
        })
    }

    /// The share text, e.g. to print it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Share number (1-based), distinct for each share of a keyring.
    pub fn index(&self) -> u8 {
        self.index
    }

    pub fn keyring_id(&self) -> &str {
        &self.keyring_id
    }

    /// How many shares are needed to unseal.
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    fn build(keyring_id: &str, threshold: u8, index: u8, payload: &[u8]) -> UnsealShare {
        let body = Zeroizing::new(format!(
            "{SHARE_PREFIX}{keyring_id}-{threshold}-{index}-{}",
            Zeroizing::new(crate::base32::encode_lower(payload)).as_str()
        ));
        let mut text = Zeroizing::new(String::with_capacity(body.len() + 1 + CHECKSUM_BYTES * 2));
        text.push_str(&body);
        text.push('-');
        text.push_str(&share_checksum(&body));
        UnsealShare {
            text,
            keyring_id: keyring_id.to_string(),
            threshold,
            index,
            payload: Zeroizing::new(payload.to_vec()),
        }
    }
}

impl fmt::Display for UnsealShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for UnsealShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnsealShare")
            .field("keyring_id", &self.keyring_id)
            .field("threshold", &self.threshold)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// Decimal 0..=255 written canonically (digits only, no sign, no leading zero), so each share has
/// exactly one valid spelling.
fn parse_small_number(s: &str) -> Option<u8> {
    crate::share_text::parse_small_number(s)
}

/// The checksum every printable share line ends with (see [`crate::share_text`]).
fn share_checksum(body: &str) -> String {
    crate::share_text::checksum(body)
}

/// Shares collected one at a time, in any order, typically from different custodians at different
/// terminals, until enough are in to unseal.
pub struct UnsealProgress {
    keyring_id: String,
    threshold: u8,
    total: u8,
    given: Vec<(u8, Zeroizing<Vec<u8>>)>,
}

/// Result of submitting a share.
#[derive(Debug)]
pub enum UnsealOutcome {
    /// Accepted; `need - have` more distinct shares are required.
    NeedMore { have: u8, need: u8 },
    /// Enough shares: the keyring is open.
    Unsealed(MasterKey),
}

impl UnsealProgress {
    /// Adds one share. A rejected share (bad format or checksum, another keyring, a share number
    /// already given) is not counted and leaves the shares given so far in place. Once `need`
    /// distinct shares are in they are combined; if they do not open the keyring, every share given
    /// is discarded and [`CryptoError::SharesDoNotOpen`] tells the custodians to start over. After
    /// success the progress is emptied as well, so no share material outlives its use.
    ///
    /// A progress started for a different keyring than `keyring` starts over for `keyring`.
    pub fn submit(
        &mut self,
        keyring: &Keyring,
        share_text: &str,
    ) -> Result<UnsealOutcome, CryptoError> {
        let SealKind::Shamir { threshold, shares } = keyring.seal else {
            return Err(CryptoError::WrongSealKind(
                "this keyring is sealed with a key file, not unseal shares",
            ));
        };
        if self.keyring_id != keyring.keyring_id
            || self.threshold != threshold
            || self.total != shares
        {
            *self = keyring.unseal_progress();
        }

        let share = UnsealShare::parse(share_text)?;
        if share.keyring_id != keyring.keyring_id {
            return Err(CryptoError::ShareWrongKeyring);
        }
        if share.threshold != threshold {
            return Err(CryptoError::ShareFormat(format!(
                "the share says {} shares are needed but this keyring needs {threshold}",
                share.threshold
            )));
        }
        if share.index > shares {
            return Err(CryptoError::ShareFormat(format!(
                "share number {} does not exist: this keyring was split into {shares} shares",
                share.index
            )));
        }
        if self.given.iter().any(|(index, _)| *index == share.index) {
            return Err(CryptoError::ShareDuplicate);
        }
        self.given.push((share.index, share.payload.clone()));
        if self.have() < threshold {
            return Ok(UnsealOutcome::NeedMore {
                have: self.have(),
                need: threshold,
            });
        }

        let given = std::mem::take(&mut self.given);
        let master = combine(threshold, &given).and_then(|kek| keyring.unwrap_master(&kek));
        master
            .map(UnsealOutcome::Unsealed)
            .map_err(|_| CryptoError::SharesDoNotOpen)
    }

    /// Distinct shares accepted so far.
    pub fn have(&self) -> u8 {
        self.given.len() as u8
    }

    /// Shares needed to unseal (0 for a key-file keyring).
    pub fn need(&self) -> u8 {
        self.threshold
    }

    /// Forgets every share given so far.
    pub fn reset(&mut self) {
        self.given.clear();
    }
}

impl fmt::Debug for UnsealProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let indexes: Vec<u8> = self.given.iter().map(|(i, _)| *i).collect();
        f.debug_struct("UnsealProgress")
            .field("keyring_id", &self.keyring_id)
            .field("need", &self.threshold)
            .field("given", &indexes)
            .finish()
    }
}

/// Rebuilds the KEK from distinct shares with blahaj.
fn combine(
    threshold: u8,
    given: &[(u8, Zeroizing<Vec<u8>>)],
) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let mut shares = Vec::with_capacity(given.len());
    for (index, payload) in given {
        let mut bytes = Zeroizing::new(Vec::with_capacity(1 + payload.len()));
        bytes.push(*index);
        bytes.extend_from_slice(payload);
        let share =
            blahaj::Share::try_from(bytes.as_slice()).map_err(|_| CryptoError::SharesDoNotOpen)?;
        shares.push(share);
    }
    let secret = Zeroizing::new(
        blahaj::Sharks(threshold)
            .recover(shares.iter())
            .map_err(|_| CryptoError::SharesDoNotOpen)?,
    );
    let mut kek = Zeroizing::new([0u8; KEY_LEN]);
    if secret.len() != KEY_LEN {
        return Err(CryptoError::SharesDoNotOpen);
    }
    kek.copy_from_slice(&secret);
    Ok(kek)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::envelope::{open, seal};
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn submit_all(
        keyring: &Keyring,
        progress: &mut UnsealProgress,
        shares: &[&UnsealShare],
    ) -> MasterKey {
        let need = keyring.unseal_progress().need();
        for (i, share) in shares.iter().enumerate() {
            match progress.submit(keyring, share.as_str()).unwrap() {
                UnsealOutcome::NeedMore { have, need: n } => {
                    assert_eq!(usize::from(have), i + 1);
                    assert_eq!(n, need);
                    assert!(i + 1 < shares.len(), "needed more than threshold shares");
                }
                UnsealOutcome::Unsealed(mk) => {
                    assert_eq!(i + 1, shares.len());
                    return mk;
                }
            }
        }
        panic!("not unsealed after all shares");
    }

    // ---- key file ----

    #[test]
    fn key_file_init_load_unseal() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Keyring::load(dir.path()).unwrap().is_none());
        let (keyring, mk) = Keyring::init_key_file(dir.path()).unwrap();
        assert_eq!(keyring.seal, SealKind::KeyFile);
        assert_eq!(keyring.format, 1);
        assert!(is_keyring_id(&keyring.keyring_id));

        let json_path = Keyring::path(dir.path());
        let key_path = Keyring::key_file_path(dir.path());
        assert_eq!(json_path, dir.path().join("keyring.json"));
        assert_eq!(mode(&json_path), 0o600);
        assert_eq!(mode(&key_path), 0o600);
        let key_text = std::fs::read_to_string(&key_path).unwrap();
        assert_eq!(key_text.trim().len(), 64);
        let json = std::fs::read_to_string(&json_path).unwrap();
        assert!(json.contains("\"kind\": \"key_file\""));
        assert!(!json.contains(&hex::encode(mk.as_bytes())));
        assert!(!json.contains(key_text.trim()));

        let loaded = Keyring::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.keyring_id, keyring.keyring_id);
        let opened = loaded.unseal_with_key_file(dir.path()).unwrap();
        assert_eq!(opened.as_bytes(), mk.as_bytes());
    }

    #[test]
    fn init_creates_missing_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        Keyring::init_key_file(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
    }

    #[test]
    fn init_refuses_existing_keyring() {
        let dir = tempfile::tempdir().unwrap();
        Keyring::init_key_file(dir.path()).unwrap();
        let before = std::fs::read(Keyring::path(dir.path())).unwrap();
        assert!(matches!(
            Keyring::init_key_file(dir.path()),
            Err(CryptoError::KeyringExists(_))
        ));
        assert!(matches!(
            Keyring::init_shamir(dir.path(), 3, 2),
            Err(CryptoError::KeyringExists(_))
        ));
        assert_eq!(std::fs::read(Keyring::path(dir.path())).unwrap(), before);

        let dir = tempfile::tempdir().unwrap();
        Keyring::init_shamir(dir.path(), 3, 2).unwrap();
        assert!(matches!(
            Keyring::init_key_file(dir.path()),
            Err(CryptoError::KeyringExists(_))
        ));
    }

    #[test]
    fn init_key_file_refuses_stray_key_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(Keyring::key_file_path(dir.path()), "00").unwrap();
        let err = Keyring::init_key_file(dir.path()).unwrap_err();
        assert!(matches!(err, CryptoError::KeyringExists(_)));
        assert!(err.to_string().contains("master.key"));
    }

    #[test]
    fn key_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (keyring, _) = Keyring::init_key_file(dir.path()).unwrap();
        let key_path = Keyring::key_file_path(dir.path());
        let good = std::fs::read(&key_path).unwrap();

        std::fs::write(&key_path, "not hex").unwrap();
        assert!(matches!(
            keyring.unseal_with_key_file(dir.path()),
            Err(CryptoError::KeyFileInvalid(_))
        ));
        std::fs::write(&key_path, &good[..32]).unwrap();
        assert!(matches!(
            keyring.unseal_with_key_file(dir.path()),
            Err(CryptoError::KeyFileInvalid(_))
        ));

        // Another keyring's key file.
        let other = tempfile::tempdir().unwrap();
        Keyring::init_key_file(other.path()).unwrap();
        std::fs::copy(Keyring::key_file_path(other.path()), &key_path).unwrap();
        let err = keyring.unseal_with_key_file(dir.path()).unwrap_err();
        assert!(matches!(err, CryptoError::KeyFileWrong));
        assert!(err.to_string().contains("does not open"));

        std::fs::remove_file(&key_path).unwrap();
        let err = keyring.unseal_with_key_file(dir.path()).unwrap_err();
        assert!(matches!(err, CryptoError::KeyFileMissing(_)));
        assert!(err.to_string().contains("master.key"));

        // Without a trailing newline is fine too.
        std::fs::write(&key_path, good.trim_ascii()).unwrap();
        keyring.unseal_with_key_file(dir.path()).unwrap();
    }

    #[test]
    fn key_file_refused_for_shamir_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let (keyring, _) = Keyring::init_shamir(dir.path(), 3, 2).unwrap();
        assert!(!Keyring::key_file_path(dir.path()).exists());
        assert!(matches!(
            keyring.unseal_with_key_file(dir.path()),
            Err(CryptoError::WrongSealKind(_))
        ));
    }

    #[test]
    fn edited_keyring_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let (keyring, _) = Keyring::init_key_file(dir.path()).unwrap();
        let mut edited = keyring.clone();
        edited.keyring_id = "0123456789abcdef".into();
        assert!(matches!(
            edited.unseal_with_key_file(dir.path()),
            Err(CryptoError::KeyFileWrong)
        ));
        let mut edited = keyring.clone();
        let mut wrapped = STANDARD.decode(&edited.wrapped_master_key).unwrap();
        wrapped[30] ^= 1;
        edited.wrapped_master_key = STANDARD.encode(wrapped);
        assert!(matches!(
            edited.unseal_with_key_file(dir.path()),
            Err(CryptoError::KeyFileWrong)
        ));
    }

    #[test]
    fn load_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = Keyring::path(dir.path());
        std::fs::write(&path, "{ not json").unwrap();
        assert!(matches!(
            Keyring::load(dir.path()),
            Err(CryptoError::KeyringInvalid(_))
        ));

        std::fs::remove_file(&path).unwrap();
        let (keyring, _) = Keyring::init_key_file(dir.path()).unwrap();
        type Edit = fn(&mut Keyring);
        let cases: [(Edit, &str); 4] = [
            (|k| k.format = 2, "format"),
            (|k| k.keyring_id = "xyz".into(), "keyring_id"),
            (
                |k| {
                    k.seal = SealKind::Shamir {
                        threshold: 1,
                        shares: 3,
                    }
                },
                "threshold",
            ),
            (
                |k| k.wrapped_master_key = "AAAA".into(),
                "wrapped_master_key",
            ),
        ];
        for (edit, word) in cases {
            let mut k = keyring.clone();
            edit(&mut k);
            std::fs::write(&path, serde_json::to_vec(&k).unwrap()).unwrap();
            let err = Keyring::load(dir.path()).unwrap_err();
            assert!(matches!(err, CryptoError::KeyringInvalid(_)));
            assert!(err.to_string().contains(word), "{err}");
        }
    }

    #[test]
    fn seal_kind_json_shape() {
        assert_eq!(
            serde_json::to_string(&SealKind::KeyFile).unwrap(),
            r#"{"kind":"key_file"}"#
        );
        let shamir = SealKind::Shamir {
            threshold: 3,
            shares: 5,
        };
        let json = serde_json::to_string(&shamir).unwrap();
        assert_eq!(json, r#"{"kind":"shamir","threshold":3,"shares":5}"#);
        assert_eq!(serde_json::from_str::<SealKind>(&json).unwrap(), shamir);
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(now_rfc3339().len(), 20);
    }

    // ---- Shamir ----

    #[test]
    fn shamir_parameters_validated() {
        let dir = tempfile::tempdir().unwrap();
        for (shares, threshold, word) in [
            (3u8, 1u8, "threshold"),
            (3, 0, "threshold"),
            (3, 4, "threshold"),
            (0, 0, "threshold"),
            (17, 3, "shares"),
            (255, 2, "shares"),
        ] {
            let err = Keyring::init_shamir(dir.path(), shares, threshold).unwrap_err();
            assert!(matches!(err, CryptoError::InvalidParameter(_)));
            assert!(err.to_string().contains(word), "{err}");
        }
        assert!(Keyring::load(dir.path()).unwrap().is_none());
    }

    #[test]
    fn shamir_every_subset_unseals_to_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let (keyring, shares) = Keyring::init_shamir(dir.path(), 5, 3).unwrap();
        assert_eq!(
            keyring.seal,
            SealKind::Shamir {
                threshold: 3,
                shares: 5
            }
        );
        assert_eq!(shares.len(), 5);
        let mut indexes: Vec<u8> = shares.iter().map(|s| s.index()).collect();
        indexes.sort_unstable();
        assert_eq!(indexes, vec![1, 2, 3, 4, 5]);
        for s in &shares {
            assert_eq!(s.keyring_id(), keyring.keyring_id);
            assert_eq!(s.threshold(), 3);
            assert_eq!(UnsealShare::parse(s.as_str()).unwrap().as_str(), s.as_str());
            assert_eq!(s.to_string(), s.as_str());
            assert!(s
                .as_str()
                .starts_with(&format!("cofre-unseal-{}-3-", keyring.keyring_id)));
        }
        let json = std::fs::read_to_string(Keyring::path(dir.path())).unwrap();
        assert!(json.contains("\"kind\": \"shamir\""));

        let loaded = Keyring::load(dir.path()).unwrap().unwrap();
        let first_key = {
            let mut p = loaded.unseal_progress();
            submit_all(&loaded, &mut p, &[&shares[0], &shares[1], &shares[2]])
        };
        let sealed = seal(&first_key, b"vaulted", b"credential:1").unwrap();
        for a in 0..5 {
            for b in 0..5 {
                for c in 0..5 {
                    if a == b || b == c || a == c {
                        continue;
                    }
                    let mut p = loaded.unseal_progress();
                    assert_eq!(p.need(), 3);
                    let mk = submit_all(&loaded, &mut p, &[&shares[a], &shares[b], &shares[c]]);
                    assert_eq!(mk.as_bytes(), first_key.as_bytes());
                    assert_eq!(p.have(), 0, "progress is emptied after unsealing");
                }
            }
        }
        let mut p = loaded.unseal_progress();
        let mk = submit_all(&loaded, &mut p, &[&shares[4], &shares[0], &shares[3]]);
        assert_eq!(
            open(&mk, &sealed, b"credential:1").unwrap().as_slice(),
            b"vaulted"
        );
    }

    #[test]
    fn shamir_extreme_parameters() {
        for (n, k) in [(2u8, 2u8), (16, 16), (16, 2)] {
            let dir = tempfile::tempdir().unwrap();
            let (keyring, shares) = Keyring::init_shamir(dir.path(), n, k).unwrap();
            assert_eq!(shares.len(), usize::from(n));
            let chosen: Vec<&UnsealShare> = shares.iter().rev().take(usize::from(k)).collect();
            let mut p = keyring.unseal_progress();
            submit_all(&keyring, &mut p, &chosen);
        }
    }

    #[test]
    fn duplicate_share_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (keyring, shares) = Keyring::init_shamir(dir.path(), 3, 2).unwrap();
        let mut p = keyring.unseal_progress();
        assert!(matches!(
            p.submit(&keyring, shares[1].as_str()).unwrap(),
            UnsealOutcome::NeedMore { have: 1, need: 2 }
        ));
        // Same share, also retyped in upper case with spaces: still the same share number.
        let retyped = format!("  {}  ", shares[1].as_str().to_uppercase());
        for text in [shares[1].as_str(), retyped.as_str()] {
            assert!(matches!(
                p.submit(&keyring, text),
                Err(CryptoError::ShareDuplicate)
            ));
            assert_eq!(p.have(), 1);
        }
        assert!(matches!(
            p.submit(&keyring, shares[2].as_str()).unwrap(),
            UnsealOutcome::Unsealed(_)
        ));
    }

    #[test]
    fn share_of_another_keyring_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (keyring, shares) = Keyring::init_shamir(dir.path(), 3, 2).unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let (_, other_shares) = Keyring::init_shamir(other_dir.path(), 3, 2).unwrap();

        let mut p = keyring.unseal_progress();
        p.submit(&keyring, shares[0].as_str()).unwrap();
        let err = p.submit(&keyring, other_shares[1].as_str()).unwrap_err();
        assert!(matches!(err, CryptoError::ShareWrongKeyring));
        assert!(err.to_string().contains("another keyring"));
        assert_eq!(p.have(), 1, "a refused share does not disturb the others");
        assert!(matches!(
            p.submit(&keyring, shares[2].as_str()).unwrap(),
            UnsealOutcome::Unsealed(_)
        ));
    }

    #[test]
    fn bad_share_text_leaves_progress_intact() {
        let dir = tempfile::tempdir().unwrap();
        let (keyring, shares) = Keyring::init_shamir(dir.path(), 3, 3).unwrap();
        let mut p = keyring.unseal_progress();
        p.submit(&keyring, shares[0].as_str()).unwrap();
        assert!(matches!(
            p.submit(&keyring, "garbage"),
            Err(CryptoError::ShareFormat(_))
        ));
        let mut typo = shares[1].as_str().to_string().into_bytes();
        let pos = typo.len() - 12;
        typo[pos] = if typo[pos] == b'a' { b'b' } else { b'a' };
        assert!(matches!(
            p.submit(&keyring, std::str::from_utf8(&typo).unwrap()),
            Err(CryptoError::ShareChecksum)
        ));
        assert_eq!(p.have(), 1);
        assert!(matches!(
            p.submit(&keyring, shares[1].as_str()).unwrap(),
            UnsealOutcome::NeedMore { have: 2, need: 3 }
        ));
    }

    #[test]
    fn wrong_shares_reset_progress() {
        let dir = tempfile::tempdir().unwrap();
        let (keyring, shares) = Keyring::init_shamir(dir.path(), 3, 2).unwrap();
        // A well-formed share of this keyring with the wrong data: what a forged or corrupted
        // (but re-checksummed) share looks like.
        let forged = UnsealShare::build(&keyring.keyring_id, 2, 3, &[0x42; 32]);
        let mut p = keyring.unseal_progress();
        p.submit(&keyring, shares[0].as_str()).unwrap();
        let err = p.submit(&keyring, forged.as_str()).unwrap_err();
        assert!(matches!(err, CryptoError::SharesDoNotOpen));
        assert_eq!(
            err.to_string(),
            "the shares given do not open this keyring; unsealing starts over"
        );
        assert_eq!(p.have(), 0);
        // Starting over with good shares works.
        p.submit(&keyring, shares[0].as_str()).unwrap();
        assert!(matches!(
            p.submit(&keyring, shares[2].as_str()).unwrap(),
            UnsealOutcome::Unsealed(_)
        ));
    }

    #[test]
    fn share_inconsistent_with_keyring_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (keyring, _) = Keyring::init_shamir(dir.path(), 3, 2).unwrap();
        let mut p = keyring.unseal_progress();
        let wrong_k = UnsealShare::build(&keyring.keyring_id, 3, 1, &[1; 32]);
        assert!(matches!(
            p.submit(&keyring, wrong_k.as_str()),
            Err(CryptoError::ShareFormat(_))
        ));
        let too_high = UnsealShare::build(&keyring.keyring_id, 2, 4, &[1; 32]);
        let err = p.submit(&keyring, too_high.as_str()).unwrap_err();
        assert!(err.to_string().contains("share number 4 does not exist"));
        assert_eq!(p.have(), 0);
    }

    #[test]
    fn key_file_keyring_refuses_shares() {
        let dir = tempfile::tempdir().unwrap();
        let (keyring, _) = Keyring::init_key_file(dir.path()).unwrap();
        let mut p = keyring.unseal_progress();
        assert_eq!(p.need(), 0);
        let share = UnsealShare::build(&keyring.keyring_id, 2, 1, &[1; 32]);
        assert!(matches!(
            p.submit(&keyring, share.as_str()),
            Err(CryptoError::WrongSealKind(_))
        ));
    }

    #[test]
    fn progress_for_another_keyring_starts_over() {
        let d1 = tempfile::tempdir().unwrap();
        let (k1, s1) = Keyring::init_shamir(d1.path(), 3, 2).unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let (k2, s2) = Keyring::init_shamir(d2.path(), 3, 2).unwrap();
        let mut p = k1.unseal_progress();
        p.submit(&k1, s1[0].as_str()).unwrap();
        assert!(matches!(
            p.submit(&k2, s2[0].as_str()).unwrap(),
            UnsealOutcome::NeedMore { have: 1, need: 2 }
        ));
        assert!(matches!(
            p.submit(&k2, s2[1].as_str()).unwrap(),
            UnsealOutcome::Unsealed(_)
        ));
    }

    #[test]
    fn reset_forgets_shares() {
        let dir = tempfile::tempdir().unwrap();
        let (keyring, shares) = Keyring::init_shamir(dir.path(), 3, 2).unwrap();
        let mut p = keyring.unseal_progress();
        p.submit(&keyring, shares[0].as_str()).unwrap();
        p.reset();
        assert_eq!(p.have(), 0);
        // The same share is accepted again after a reset.
        assert!(matches!(
            p.submit(&keyring, shares[0].as_str()).unwrap(),
            UnsealOutcome::NeedMore { have: 1, need: 2 }
        ));
        let shown = format!("{p:?}");
        assert!(!shown.contains(&shares[0].as_str()[30..]));
    }

    // ---- share text ----

    fn sample_share() -> UnsealShare {
        let payload: Vec<u8> = (0u8..32)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        UnsealShare::build("0123456789abcdef", 3, 2, &payload)
    }

    #[test]
    fn share_text_shape_and_round_trip() {
        let share = sample_share();
        let text = share.as_str();
        assert!(text.starts_with("cofre-unseal-0123456789abcdef-3-2-"));
        let parts: Vec<&str> = text.split('-').collect();
        assert_eq!(parts.len(), 7);
        assert_eq!(parts[5].len(), 52);
        assert_eq!(parts[6].len(), 6);
        assert!(text.bytes().all(|c| c.is_ascii_graphic()));

        let parsed = UnsealShare::parse(text).unwrap();
        assert_eq!(parsed.as_str(), text);
        assert_eq!(parsed.index(), 2);
        assert_eq!(parsed.threshold(), 3);
        assert_eq!(parsed.keyring_id(), "0123456789abcdef");
        assert_eq!(parsed.payload, share.payload);

        let sloppy = format!("\n  {}\t\r\n", text.to_uppercase().replacen('-', " - ", 3));
        assert_eq!(UnsealShare::parse(&sloppy).unwrap().as_str(), text);
    }

    #[test]
    fn share_debug_redacts() {
        let share = sample_share();
        let shown = format!("{share:?}");
        let payload_part = share.as_str().split('-').nth(5).unwrap();
        assert!(!shown.contains(payload_part));
        assert!(shown.contains("index: 2"));
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let text = sample_share().as_str().to_string();
        let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789-";
        for pos in 0..text.len() {
            for &c in alphabet {
                let mut bytes = text.clone().into_bytes();
                if bytes[pos] == c {
                    continue;
                }
                bytes[pos] = c;
                let typo = String::from_utf8(bytes).unwrap();
                let err = UnsealShare::parse(&typo).unwrap_err();
                assert!(
                    matches!(
                        err,
                        CryptoError::ShareChecksum | CryptoError::ShareFormat(_)
                    ),
                    "{pos} {c}"
                );
                // Typos in the part the checksum covers are reported as a checksum mismatch
                // as long as the overall shape is intact.
                let checksum_start = text.len() - 6;
                if pos >= SHARE_PREFIX.len()
                    && pos < checksum_start - 1
                    && c != b'-'
                    && text.as_bytes()[pos] != b'-'
                {
                    assert!(
                        matches!(err, CryptoError::ShareChecksum),
                        "{pos} {c}: {err}"
                    );
                }
            }
        }
    }

    #[test]
    fn dropped_or_doubled_characters_are_caught() {
        let text = sample_share().as_str().to_string();
        for pos in 0..text.len() {
            let mut dropped = text.clone();
            dropped.remove(pos);
            assert!(UnsealShare::parse(&dropped).is_err(), "drop {pos}");
            let mut doubled = text.clone();
            doubled.insert(pos, text.as_bytes()[pos] as char);
            assert!(UnsealShare::parse(&doubled).is_err(), "double {pos}");
        }
        for pos in 0..text.len() - 1 {
            let mut swapped = text.clone().into_bytes();
            swapped.swap(pos, pos + 1);
            if swapped != text.as_bytes() {
                let swapped = String::from_utf8(swapped).unwrap();
                assert!(UnsealShare::parse(&swapped).is_err(), "swap {pos}");
            }
        }
    }

    #[test]
    fn share_format_errors_explain() {
        let cases = [
            ("", "empty"),
            ("   ", "empty"),
            ("hello", "cofre-unseal-"),
            ("cofre-unseal-", "form"),
            ("cofre-unseal-a-b-c", "form"),
            ("cofre-unseal-0123456789abcdef-3-2-abc-12345", "checksum"),
            ("cofre-unseal-0123456789abcdef-3-2-abc-zzzzzz", "checksum"),
            ("cofre-unseal-ünïcode", "letters, digits and dashes"),
            ("cofre_unseal_x", "letters, digits and dashes"),
        ];
        for (text, word) in cases {
            let err = UnsealShare::parse(text).unwrap_err();
            assert!(matches!(err, CryptoError::ShareFormat(_)), "{text}: {err}");
            assert!(err.to_string().contains(word), "{text}: {err}");
        }
        let long = "a".repeat(10_000);
        assert!(UnsealShare::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("too long"));
    }

    /// Shares with a correct checksum but impossible fields (only a forger could make these).
    #[test]
    fn checksummed_but_invalid_fields_refused() {
        let with_checksum = |body: &str| format!("{body}-{}", share_checksum(body));
        let payload = crate::base32::encode_lower(&[7; 32]);
        let cases = [
            (
                format!("cofre-unseal-0123456789abcde-3-2-{payload}"),
                "keyring id",
            ),
            (
                format!("cofre-unseal-0123456789abcdef-1-2-{payload}"),
                "threshold",
            ),
            (
                format!("cofre-unseal-0123456789abcdef-17-2-{payload}"),
                "threshold",
            ),
            (
                format!("cofre-unseal-0123456789abcdef-03-2-{payload}"),
                "threshold",
            ),
            (
                format!("cofre-unseal-0123456789abcdef-3-0-{payload}"),
                "share number",
            ),
            (
                format!("cofre-unseal-0123456789abcdef-3-17-{payload}"),
                "share number",
            ),
            (
                format!("cofre-unseal-0123456789abcdef-3-999-{payload}"),
                "share number",
            ),
            (
                format!("cofre-unseal-0123456789abcdef-3-2-{}", &payload[..51]),
                "data",
            ),
            (
                format!("cofre-unseal-0123456789abcdef-3-2-{payload}a"),
                "data",
            ),
            ("cofre-unseal-0123456789abcdef-3-2-aa".to_string(), "data"),
        ];
        for (body, word) in cases {
            let err = UnsealShare::parse(&with_checksum(&body)).unwrap_err();
            assert!(matches!(err, CryptoError::ShareFormat(_)), "{body}: {err}");
            assert!(err.to_string().contains(word), "{body}: {err}");
        }
        assert!(UnsealShare::parse(&with_checksum(&format!(
            "cofre-unseal-0123456789abcdef-3-2-{payload}"
        )))
        .is_ok());
    }

    #[test]
    fn error_messages_hold_no_share_material() {
        let share = sample_share();
        let payload_part = share.as_str().split('-').nth(5).unwrap().to_string();
        let mut typo = share.as_str().to_string();
        typo.replace_range(40..41, "z");
        for text in [typo.clone(), format!("{typo}-extra"), format!("x{typo}")] {
            let err = UnsealShare::parse(&text).unwrap_err();
            let msg = err.to_string();
            assert!(!msg.contains(&payload_part[..10]), "{msg}");
        }
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(s in "\\PC*") {
                let _ = UnsealShare::parse(&s);
            }

            #[test]
            fn parse_never_panics_on_share_like_text(
                s in "cofre-unseal-[0-9a-fA-F]{0,20}-[0-9]{0,4}-[0-9]{0,4}-[a-z2-7 ]{0,60}-[0-9a-fA-F]{0,8}"
            ) {
                let _ = UnsealShare::parse(&s);
            }

            #[test]
            fn parse_never_panics_on_mutated_share(
                pos in 0usize..120,
                replacement in any::<char>(),
                truncate in 0usize..120,
            ) {
                let text = sample_share().as_str().to_string();
                let mut chars: Vec<char> = text.chars().collect();
                if pos < chars.len() {
                    chars[pos] = replacement;
                }
                chars.truncate(truncate.max(1));
                let mutated: String = chars.into_iter().collect();
                if let Ok(parsed) = UnsealShare::parse(&mutated) {
                    // Only a no-op mutation (or a case change) can still parse.
                    prop_assert_eq!(parsed.as_str(), text.as_str());
                }
            }

            #[test]
            fn build_parse_round_trip(
                id in "[0-9a-f]{16}",
                k in 2u8..=16,
                index in 1u8..=16,
                payload in proptest::collection::vec(any::<u8>(), 32),
            ) {
                let share = UnsealShare::build(&id, k, index, &payload);
                let parsed = UnsealShare::parse(share.as_str()).unwrap();
                prop_assert_eq!(parsed.keyring_id(), id.as_str());
                prop_assert_eq!(parsed.threshold(), k);
                prop_assert_eq!(parsed.index(), index);
                prop_assert_eq!(parsed.payload.as_slice(), payload.as_slice());
            }
        }
    }
}
