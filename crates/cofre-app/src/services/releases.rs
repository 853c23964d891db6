//! Release files (Orbit's updates): uploaded by whoever manages the instance, verified (see
//! [`crate::release`]) before anything keeps them, and kept in `DATA_DIR/releases/ID.release`
//! with a row that maintenance windows name. A refused file is deleted and audited
//! (`release.refused`, with why); an accepted one is audited `release.upload`.

use super::Orbit;
use super::{page_limit, paginate, App, Principal};
use crate::error::{Error, ErrorCode, ErrorKind, Result};
use crate::release::{self, ReleaseError};
use bytes::Bytes;
use cofre_core::audit::NewAuditEntry;
use cofre_core::role::Action;
use cofre_proto::{Page, ReleaseInfo};
use cofre_store::instance::ReleaseRow;
use futures::{Stream, StreamExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Larger than any `cofre` binary; a bigger upload is refused before it fills the disk.
pub const MAX_RELEASE_BYTES: u64 = 512 * 1024 * 1024;
/// An upload has this long to arrive whole: no connection holds the server's disk open.
const UPLOAD_DEADLINE: Duration = Duration::from_secs(600);

pub(crate) fn release_error(e: &ReleaseError) -> Error {
    let code = match e {
        ReleaseError::Unreadable(_) => ErrorCode::ReleaseUnreadable,
        ReleaseError::Unsigned => ErrorCode::ReleaseUnsigned,
        ReleaseError::BadSignature(_) => ErrorCode::ReleaseBadSignature,
        ReleaseError::Tampered(_) => ErrorCode::ReleaseTampered,
        ReleaseError::TooOld { .. } | ReleaseError::NotNewer { .. } => ErrorCode::ReleaseTooOld,
        ReleaseError::NoKeys => ErrorCode::ReleaseKeysMissing,
    };
    Error::new(ErrorKind::BadRequest, code, e.to_string()).with_field("release")
}

fn info(r: ReleaseRow) -> ReleaseInfo {
    ReleaseInfo {
        id: r.id,
        version: r.version,
        binary_sha256: r.binary_sha256,
        upgrades_from: r.upgrades_from,
        notes: r.notes,
        bytes: r.bytes,
        uploaded_at: r.uploaded_at,
        uploaded_by: r.uploaded_by,
    }
}

/// Removes a file that must not stay (a refused or unrecorded upload); a failure only logs.
async fn discard(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::error!(path = %path.display(), error = %e, "cannot remove a release file");
        }
    }
}

impl App {
    fn releases_dir(&self) -> PathBuf {
        self.config.data_dir.join("releases")
    }
}

impl Orbit<'_> {
    /// Where the verified release `id` is kept.
    pub fn release_path(&self, id: &str) -> PathBuf {
        self.releases_dir().join(format!("{id}.release"))
    }

    /// Takes a release file from `body`, verifies it, and keeps it. Refused: unsigned, signed by
    /// a key that is not in `[maintenance] release_public_keys`, altered after signing, not newer
    /// than the running version or not upgrading from it.
    pub async fn upload_release<S, E>(&self, who: &Principal, body: S) -> Result<ReleaseInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        who.require(Action::ManageInstance)?;
        let dir = self.releases_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::internal("creating the releases directory", e))?;
        let tmp = dir.join(format!(".upload-{}", uuid::Uuid::new_v4()));
        let received = tokio::time::timeout(UPLOAD_DEADLINE, receive(&tmp, body)).await;
        let bytes = match received {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                discard(&tmp).await;
                return Err(e);
            }
            Err(_) => {
                discard(&tmp).await;
                return Err(Error::invalid(
                    "release",
                    format!(
                        "release: the upload took longer than {} s",
                        UPLOAD_DEADLINE.as_secs()
                    ),
                ));
            }
        };
        let keys = release::parse_keys(&self.config.maintenance.release_public_keys)
            .map_err(|e| Error::internal("reading the release keys", e))?;
        let path = tmp.clone();
        let verified = tokio::task::spawn_blocking(move || {
            release::verify(&path, &keys, crate::switch::version())
        })
        .await
        .map_err(|e| Error::internal("verifying the release", e))?;
        let verified = match verified {
            Ok(v) => v,
            Err(e) => {
                discard(&tmp).await;
                self.record(
                    NewAuditEntry::new(who.username(), "release.refused", "release")
                        .outcome("denied")
                        .detail("why", e.to_string())
                        .detail("bytes", bytes),
                )
                .await?;
                return Err(release_error(&e));
            }
        };
        let m = verified.manifest;
        let sha = m.binary_sha256.to_ascii_lowercase();
        let id = format!("{}-{}", m.version, sha.get(..12).unwrap_or(&sha));
        let row = ReleaseRow {
            id: id.clone(),
            version: m.version,
            binary_sha256: sha,
            upgrades_from: m.upgrades_from,
            notes: m.notes,
            file_name: format!("{id}.release"),
            bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
            uploaded_at: self.now_text(),
            uploaded_by: who.username().to_owned(),
        };
        let kept = self.release_path(&id);
        let mut tx = self.store.write().await?;
        if self.store.release(&id).await?.is_some() {
            discard(&tmp).await;
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::Conflict,
                format!("release {id} was uploaded already"),
            ));
        }
        tx.insert_release(&row).await?;
        if let Err(e) = tokio::fs::rename(&tmp, &kept).await {
            discard(&tmp).await;
            return Err(Error::internal("keeping the release file", e));
        }
        let committed = self
            .commit(
                tx,
                NewAuditEntry::new(who.username(), "release.upload", format!("release:{id}"))
                    .detail("version", row.version.as_str())
                    .detail("binary_sha256", row.binary_sha256.as_str())
                    .detail("upgrades_from", row.upgrades_from.as_str())
                    .detail("bytes", row.bytes),
            )
            .await;
        if let Err(e) = committed {
            discard(&kept).await;
            return Err(e);
        }
        Ok(info(row))
    }

    /// The verified releases, by id.
    pub async fn list_releases(
        &self,
        who: &Principal,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<ReleaseInfo>> {
        who.require(Action::ManageInstance)?;
        let limit = page_limit(limit)?;
        let rows = self.store.releases_page(cursor, limit + 1).await?;
        Ok(paginate(rows, limit, |r| r.id.clone(), info))
    }
}

/// Writes the upload to `path` (fsynced), refusing more than [`MAX_RELEASE_BYTES`].
async fn receive<S, E>(path: &Path, mut body: S) -> Result<u64>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| Error::internal("writing the release file", e))?;
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            Error::invalid("release", format!("release: the upload broke off: {e}"))
        })?;
        total += chunk.len() as u64;
        if total > MAX_RELEASE_BYTES {
            return Err(Error::new(
                ErrorKind::TooLarge,
                ErrorCode::BodyTooLarge,
                format!("release: larger than {MAX_RELEASE_BYTES} bytes"),
            )
            .with_field("release"));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| Error::internal("writing the release file", e))?;
    }
    file.sync_all()
        .await
        .map_err(|e| Error::internal("writing the release file", e))?;
    Ok(total)
}
