//! Release files (Orbit's updates): one plain tar archive with three members,
//!
//! - `manifest.json`: `{"format": "cofre-release-v1", "version", "binary_sha256",
//!   "upgrades_from", "notes"}`,
//! - `manifest.json.minisig`: the vendor's minisign signature of `manifest.json`,
//! - `cofre`: the new binary, which the manifest pins by its SHA-256.
//!
//! The vendor makes one with standard tools and nothing of Cofre's:
//! `minisign -Sm manifest.json && tar cf cofre-0.2.0.release manifest.json manifest.json.minisig cofre`.
//! The signature covers the manifest and the manifest covers the binary, so one signature check
//! and one hash check prove the whole file; any other member, a member twice, or a binary of
//! another hash is a tampered file. Keys are `[maintenance] release_public_keys`, minisign public
//! keys as the second line of `minisign.pub` has them.
//!
//! Blocking file work: callers run [`verify`] on a blocking thread.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

pub const FORMAT: &str = "cofre-release-v1";
const MANIFEST: &str = "manifest.json";
const SIGNATURE: &str = "manifest.json.minisig";
const BINARY: &str = "cofre";
/// The manifest and signature are small; a larger one is not a release.
const MAX_SMALL_MEMBER: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: String,
    pub binary_sha256: String,
    /// The oldest version this release upgrades from: its migrations start there.
    pub upgrades_from: String,
    #[serde(default)]
    pub notes: String,
}

/// Why a release is refused. Each names what is wrong and never echoes the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("not a release file: {0}")]
    Unreadable(String),
    #[error("the release is not signed (no {SIGNATURE} member)")]
    Unsigned,
    #[error("the release's signature is not valid under any key of [maintenance] release_public_keys: {0}")]
    BadSignature(String),
    #[error("the release was altered after it was signed: {0}")]
    Tampered(String),
    #[error(
        "release {version} upgrades from {upgrades_from} on, and this instance runs {current}"
    )]
    TooOld {
        version: String,
        upgrades_from: String,
        current: String,
    },
    #[error("release {version} is not newer than the running version {current}")]
    NotNewer { version: String, current: String },
    #[error("no release can be trusted: [maintenance] release_public_keys is empty")]
    NoKeys,
}

/// What a verified release holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub manifest: Manifest,
    pub binary_bytes: u64,
}

/// The configured keys, each checked at start so that a mistyped key is a config error.
pub fn parse_keys(keys: &[String]) -> Result<Vec<minisign_verify::PublicKey>, String> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            minisign_verify::PublicKey::from_base64(k.trim())
                .map_err(|e| format!("release_public_keys[{i}]: not a minisign public key ({e})"))
        })
        .collect()
}

/// Checks the release at `path`: signed by one of `keys`, the binary the manifest names, a
/// version newer than `current` that upgrades from it.
pub fn verify(
    path: &Path,
    keys: &[minisign_verify::PublicKey],
    current: &str,
) -> Result<Verified, ReleaseError> {
    if keys.is_empty() {
        return Err(ReleaseError::NoKeys);
    }
    let file = std::fs::File::open(path).map_err(|e| ReleaseError::Unreadable(e.to_string()))?;
    let mut archive = tar::Archive::new(file);
    let mut manifest_bytes: Option<Vec<u8>> = None;
    let mut signature_text: Option<String> = None;
    let mut binary: Option<(String, u64)> = None;
    let entries = archive
        .entries()
        .map_err(|e| ReleaseError::Unreadable(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ReleaseError::Unreadable(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| ReleaseError::Unreadable(e.to_string()))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        if !entry.header().entry_type().is_file() {
            return Err(ReleaseError::Tampered(format!(
                "member {name:?} is not a plain file"
            )));
        }
        let twice = || ReleaseError::Tampered(format!("member {name} appears twice"));
        match name.as_str() {
            MANIFEST => {
                if manifest_bytes.is_some() {
                    return Err(twice());
                }
                manifest_bytes = Some(read_small(&mut entry, &name)?);
            }
            SIGNATURE => {
                if signature_text.is_some() {
                    return Err(twice());
                }
                let bytes = read_small(&mut entry, &name)?;
                signature_text = Some(String::from_utf8(bytes).map_err(|_| {
                    ReleaseError::BadSignature("the signature is not text".into())
                })?);
            }
            BINARY => {
                if binary.is_some() {
                    return Err(twice());
                }
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0u64;
                loop {
                    let n = entry
                        .read(&mut buf)
                        .map_err(|e| ReleaseError::Unreadable(e.to_string()))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    total += n as u64;
                }
                binary = Some((hex::encode(hasher.finalize()), total));
            }
            other => {
                return Err(ReleaseError::Tampered(format!(
                    "unexpected member {other:?} (a release holds {MANIFEST}, {SIGNATURE} and {BINARY})"
                )))
            }
        }
    }
    let manifest_bytes =
        manifest_bytes.ok_or_else(|| ReleaseError::Unreadable(format!("no {MANIFEST} member")))?;
    let signature_text = signature_text.ok_or(ReleaseError::Unsigned)?;
    let signature = minisign_verify::Signature::decode(&signature_text)
        .map_err(|e| ReleaseError::BadSignature(format!("unreadable signature ({e})")))?;
    let mut last = None;
    let signed = keys
        .iter()
        .any(|k| match k.verify(&manifest_bytes, &signature, false) {
            Ok(()) => true,
            Err(e) => {
                last = Some(e);
                false
            }
        });
    if !signed {
        let why = match last {
            Some(minisign_verify::Error::UnexpectedKeyId) => {
                "signed by a key that is not configured".to_owned()
            }
            Some(e) => e.to_string(),
            None => "no key".to_owned(),
        };
        return Err(ReleaseError::BadSignature(why));
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| ReleaseError::Unreadable(format!("{MANIFEST}: {e}")))?;
    if manifest.format != FORMAT {
        return Err(ReleaseError::Unreadable(format!(
            "{MANIFEST}: format {:?}, expected {FORMAT:?}",
            manifest.format
        )));
    }
    let (sha, binary_bytes) =
        binary.ok_or_else(|| ReleaseError::Tampered(format!("no {BINARY} member")))?;
    if !sha.eq_ignore_ascii_case(manifest.binary_sha256.trim()) {
        return Err(ReleaseError::Tampered(format!(
            "the binary's SHA-256 is {sha}, the signed manifest says {}",
            manifest.binary_sha256
        )));
    }
    check_versions(&manifest, current)?;
    Ok(Verified {
        manifest,
        binary_bytes,
    })
}

/// Installs a verified release into `dir` (`DATA_DIR/releases/installed/ID`): its manifest and
/// binary (mode 0755), written under a temporary name and renamed, so `dir` is whole or absent.
/// The binary written is hashed again and must be the one the signed manifest names: a file
/// changed between the verification and the install is refused as tampered. The running binary
/// is not touched (both are kept). Blocking.
pub fn install(
    path: &Path,
    manifest: &Manifest,
    dir: &Path,
) -> Result<std::path::PathBuf, ReleaseError> {
    let io = |e: std::io::Error| ReleaseError::Unreadable(format!("installing: {e}"));
    let parent = dir
        .parent()
        .ok_or_else(|| ReleaseError::Unreadable("installing: no parent directory".into()))?;
    std::fs::create_dir_all(parent).map_err(io)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.installing"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io)?;
    }
    std::fs::create_dir_all(&tmp).map_err(io)?;
    let file = std::fs::File::open(path).map_err(io)?;
    let mut archive = tar::Archive::new(file);
    let mut sha = None;
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let member = entry
            .path()
            .map_err(io)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        if member != BINARY {
            continue;
        }
        let target = tmp.join(BINARY);
        let mut out = std::fs::File::create(&target).map_err(io)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            std::io::Write::write_all(&mut out, &buf[..n]).map_err(io)?;
        }
        out.sync_all().map_err(io)?;
        sha = Some(hex::encode(hasher.finalize()));
    }
    match sha {
        Some(s) if s.eq_ignore_ascii_case(manifest.binary_sha256.trim()) => {}
        other => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(ReleaseError::Tampered(format!(
                "the installed binary's SHA-256 is {}, the signed manifest says {}",
                other.unwrap_or_else(|| "missing".into()),
                manifest.binary_sha256
            )));
        }
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.join(BINARY), std::fs::Permissions::from_mode(0o755))
            .map_err(io)?;
    }
    let text = serde_json::to_vec_pretty(manifest)
        .map_err(|e| ReleaseError::Unreadable(format!("installing: {e}")))?;
    std::fs::write(tmp.join(MANIFEST), text).map_err(io)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io)?;
    }
    std::fs::rename(&tmp, dir).map_err(io)?;
    Ok(dir.join(BINARY))
}

/// A release applies to `current` when it is newer and upgrades from `current` or older.
pub fn check_versions(manifest: &Manifest, current: &str) -> Result<(), ReleaseError> {
    let parse = |field: &str, v: &str| {
        semver::Version::parse(v.trim())
            .map_err(|e| ReleaseError::Unreadable(format!("{MANIFEST}: {field} {v:?}: {e}")))
    };
    let version = parse("version", &manifest.version)?;
    let from = parse("upgrades_from", &manifest.upgrades_from)?;
    let running = semver::Version::parse(current)
        .map_err(|e| ReleaseError::Unreadable(format!("running version {current:?}: {e}")))?;
    if running < from {
        return Err(ReleaseError::TooOld {
            version: manifest.version.clone(),
            upgrades_from: manifest.upgrades_from.clone(),
            current: current.to_owned(),
        });
    }
    if version <= running {
        return Err(ReleaseError::NotNewer {
            version: manifest.version.clone(),
            current: current.to_owned(),
        });
    }
    Ok(())
}

fn read_small(entry: &mut impl Read, name: &str) -> Result<Vec<u8>, ReleaseError> {
    let mut bytes = Vec::new();
    entry
        .take(MAX_SMALL_MEMBER + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ReleaseError::Unreadable(e.to_string()))?;
    if bytes.len() as u64 > MAX_SMALL_MEMBER {
        return Err(ReleaseError::Unreadable(format!(
            "member {name} is larger than {MAX_SMALL_MEMBER} bytes"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn manifest(version: &str, from: &str) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: version.into(),
            binary_sha256: String::new(),
            upgrades_from: from.into(),
            notes: String::new(),
        }
    }

    #[test]
    fn a_release_is_newer_and_upgrades_from_the_running_version() {
        assert_eq!(check_versions(&manifest("0.2.0", "0.1.0"), "0.1.0"), Ok(()));
        assert_eq!(check_versions(&manifest("0.2.0", "0.0.9"), "0.1.5"), Ok(()));
        assert!(matches!(
            check_versions(&manifest("0.3.0", "0.2.0"), "0.1.0"),
            Err(ReleaseError::TooOld { .. })
        ));
        assert!(matches!(
            check_versions(&manifest("0.1.0", "0.1.0"), "0.1.0"),
            Err(ReleaseError::NotNewer { .. })
        ));
        assert!(matches!(
            check_versions(&manifest("latest", "0.1.0"), "0.1.0"),
            Err(ReleaseError::Unreadable(_))
        ));
    }

    #[test]
    fn keys_that_are_not_minisign_keys_are_named() {
        let e = parse_keys(&["RWQnot-a-key".into()]).unwrap_err();
        assert!(e.starts_with("release_public_keys[0]"), "{e}");
    }
}
