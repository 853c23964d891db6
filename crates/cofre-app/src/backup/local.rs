//! A directory target (a mounted NAS, a removable disk): each file is copied to a temporary name
//! beside its final one, fsynced, then renamed, so a final name only ever holds a whole file.

use super::{probe_name, Progress, Source, SyncStats, TargetError};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub struct DirTarget {
    pub root: PathBuf,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> TargetError {
    TargetError::new(format!("{what} {}: {e}", path.display()))
}

impl DirTarget {
    pub async fn probe(&self) -> Result<(), TargetError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || probe_dir(&root))
            .await
            .map_err(|e| TargetError::new(format!("write test: {e}")))?
    }

    pub async fn sync(
        &self,
        source: &Source,
        progress: &Progress,
    ) -> Result<SyncStats, TargetError> {
        let root = self.root.join(&source.kind);
        let source = source.clone();
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || sync_dir(&root, &source, &progress))
            .await
            .map_err(|e| TargetError::new(format!("copying: {e}")))?
    }
}

fn probe_dir(root: &Path) -> Result<(), TargetError> {
    std::fs::create_dir_all(root).map_err(|e| io_err("write test: cannot create", root, e))?;
    let path = root.join(probe_name());
    let content = format!("cofre write test {}\n", uuid::Uuid::new_v4());
    let written = (|| {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        return Err(io_err("write test: cannot write", &path, e));
    }
    let back = std::fs::read(&path);
    let _ = std::fs::remove_file(&path);
    match back {
        Ok(b) if b == content.as_bytes() => {}
        Ok(_) => {
            return Err(TargetError::new(format!(
                "write test: {} read back different bytes",
                path.display()
            )))
        }
        Err(e) => return Err(io_err("write test: cannot read back", &path, e)),
    }
    if path.exists() {
        return Err(TargetError::new(format!(
            "write test: cannot delete {}",
            path.display()
        )));
    }
    Ok(())
}

/// What temporary files are called: hidden, and marked as ours.
const PARTIAL_MARK: &str = ".cofre-partial-";

fn sync_dir(root: &Path, source: &Source, progress: &Progress) -> Result<SyncStats, TargetError> {
    // A killed run of this job left its temporary file behind: never used, removed now. Other
    // jobs' temporary files may belong to a run going on beside this one.
    let mut dirs: Vec<PathBuf> = source
        .files
        .iter()
        .filter_map(|f| root.join(&f.rel).parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        remove_partials(dir, &source.owner);
    }
    let mut stats = SyncStats::default();
    for file in &source.files {
        let dest = root.join(&file.rel);
        let present = std::fs::metadata(&dest).map(|m| m.len() == file.size);
        if !matches!(present, Ok(true)) {
            copy_atomically(&file.path, &dest, file.size, &source.owner, progress)?;
            stats.files_sent += 1;
            stats.bytes_sent += file.size;
        } else {
            progress.update(|p| p.bytes_done += file.size);
        }
        progress.update(|p| p.files_done += 1);
    }
    Ok(stats)
}

/// Copies the first `size` bytes of `from` (a recording may have grown since it was listed) to
/// a temporary name beside `to`, then renames it into place.
fn copy_atomically(
    from: &Path,
    to: &Path,
    size: u64,
    owner: &str,
    progress: &Progress,
) -> Result<(), TargetError> {
    let parent = to
        .parent()
        .ok_or_else(|| TargetError::new(format!("{} has no parent directory", to.display())))?;
    std::fs::create_dir_all(parent).map_err(|e| io_err("cannot create", parent, e))?;
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = parent.join(format!(
        ".{name}{PARTIAL_MARK}{owner}-{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| -> Result<(), TargetError> {
        let input = std::fs::File::open(from).map_err(|e| io_err("cannot read", from, e))?;
        let mut input = input.take(size);
        // Owner-only, like the originals: a backup disk is often shared.
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err("cannot write", &tmp, e))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = input
                .read(&mut buf)
                .map_err(|e| io_err("cannot read", from, e))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .map_err(|e| io_err("cannot write", &tmp, e))?;
            progress.update(|p| p.bytes_done += n as u64);
        }
        out.sync_all()
            .map_err(|e| io_err("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, to).map_err(|e| io_err("cannot rename into", to, e))?;
        // The rename itself must survive a crash.
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn remove_partials(dir: &Path, owner: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mark = format!("{PARTIAL_MARK}{owner}-");
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(&mark) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::backup::{list_files, Source};

    #[test]
    fn sends_what_is_missing_or_grown_and_clears_only_its_own_jobs_leftovers() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("day")).unwrap();
        std::fs::write(src.path().join("day/a.rec"), b"aaaa").unwrap();
        std::fs::write(src.path().join("day/b.rec"), b"bb").unwrap();
        std::fs::write(src.path().join("day/.c.rec.tmp"), b"being written").unwrap();
        let source = |dir: &Path| Source {
            kind: "recordings".into(),
            owner: "j7".into(),
            base: dir.to_owned(),
            files: list_files(dir).unwrap(),
        };
        let progress = Progress::default();
        let root = dst.path().join("recordings");
        let first = sync_dir(&root, &source(src.path()), &progress).unwrap();
        assert_eq!((first.files_sent, first.bytes_sent), (2, 6));
        assert!(!root.join("day/.c.rec.tmp").exists());

        std::fs::write(src.path().join("day/a.rec"), b"aaaaAAAA").unwrap();
        let leftover = root.join(format!("day/.b.rec{PARTIAL_MARK}j7-dead.tmp"));
        std::fs::write(&leftover, b"half").unwrap();
        // Another job's temporary file: that job may be copying it right now.
        let other = root.join(format!("day/.b.rec{PARTIAL_MARK}j71-live.tmp"));
        std::fs::write(&other, b"in flight").unwrap();
        let second = sync_dir(&root, &source(src.path()), &progress).unwrap();
        assert_eq!((second.files_sent, second.bytes_sent), (1, 8));
        assert_eq!(std::fs::read(root.join("day/a.rec")).unwrap(), b"aaaaAAAA");
        assert!(!leftover.exists());
        assert_eq!(std::fs::read(&other).unwrap(), b"in flight");
    }
}
