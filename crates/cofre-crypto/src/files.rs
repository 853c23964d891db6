//! Writing private files in the data directory (keyring, key file, and anything else secret).
//!
//! Files are written atomically so a crash or a full disk never leaves a half-written keyring
//! behind: the old file stays intact until the new one is complete and on disk. The temporary file
//! is created with mode 0600 from the start, so the contents are never readable by others, not even
//! for the moment between creation and a later chmod.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::CryptoError;

/// Atomically replaces `path` with `contents`, readable and writable by the owner only: a temporary
/// file in the same directory (mode 0600), written, fsynced, renamed over `path`, then the directory
/// fsynced so the rename itself survives a power loss.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), CryptoError> {
    let file_name = path.file_name().ok_or_else(|| {
        CryptoError::InvalidParameter(format!("path: {} names no file", path.display()))
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Same directory, so the rename stays on one file system and is atomic; a random suffix so two
    // writers never share a temporary file.
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", hex::encode(crate::random_array::<6>())));
    let tmp_path = dir.join(tmp_name);

    let result = write_then_rename(&tmp_path, path, contents);
    if result.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = std::fs::remove_file(&tmp_path);
    }
    result?;

    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CryptoError::io(format!("could not sync directory {}", dir.display()), e))
}

fn write_then_rename(tmp_path: &Path, path: &Path, contents: &[u8]) -> Result<(), CryptoError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp_path)
        .map_err(|e| CryptoError::io(format!("could not create {}", tmp_path.display()), e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| CryptoError::io(format!("could not write {}", tmp_path.display()), e))?;
    drop(file);
    std::fs::rename(tmp_path, path).map_err(|e| {
        CryptoError::io(
            format!(
                "could not rename {} to {}",
                tmp_path.display(),
                path.display()
            ),
            e,
        )
    })
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist yet.
pub fn ensure_private_dir(dir: &Path) -> Result<(), CryptoError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CryptoError::io(format!("could not create directory {}", dir.display()), e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.txt");
        write_private_file(&path, b"hello").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn replaces_existing_file_and_its_loose_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.txt");
        std::fs::write(&path, b"old contents that are longer").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private_file(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_private_file(&path, b"1").unwrap();
        write_private_file(&path, b"2").unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("a.json");
        let err = write_private_file(&path, b"1").unwrap_err();
        assert!(matches!(err, CryptoError::Io { .. }));
        assert!(err.to_string().contains("could not create"));
    }

    #[test]
    fn path_without_file_name_is_an_error() {
        let err = write_private_file(Path::new("/"), b"1").unwrap_err();
        assert!(matches!(err, CryptoError::InvalidParameter(_)));
    }

    #[test]
    fn ensure_private_dir_creates_0700() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("x").join("y");
        ensure_private_dir(&sub).unwrap();
        assert!(sub.is_dir());
        assert_eq!(mode(&sub), 0o700);
        ensure_private_dir(&sub).unwrap();
    }
}
