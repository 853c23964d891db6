//! Credentials and their versions. Every change adds a version; none is ever overwritten.

use crate::{Result, Store, StoreError, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct CredentialRow {
    pub id: i64,
    pub target: String,
    pub account: String,
    pub kind: String,
    pub current_version: i64,
    pub updated_at: String,
    pub updated_by: String,
    /// Set while the credential is disabled.
    pub disabled_at: Option<String>,
    /// Set while its target is disabled.
    pub target_disabled_at: Option<String>,
}

#[derive(Debug, Clone)]
pub struct VersionRow {
    pub version: i64,
    pub kind: String,
    pub wrapped_key: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub created_at: String,
    pub created_by: String,
}

/// What a reveal reads: the credential, its target's tags, one sealed version, and whether the
/// reveal asks for a rotation.
#[derive(Debug, Clone)]
pub struct SecretRow {
    pub credential: CredentialRow,
    pub tags: Vec<String>,
    pub version: VersionRow,
    pub rotate_after_reveal: bool,
}

fn credential_from_row(row: &sqlx::any::AnyRow) -> Result<CredentialRow> {
    Ok(CredentialRow {
        id: row.try_get("id")?,
        target: row.try_get("target")?,
        account: row.try_get("account")?,
        kind: row.try_get("kind")?,
        current_version: row.try_get("current_version")?,
        updated_at: row.try_get("updated_at")?,
        updated_by: row.try_get("updated_by")?,
        disabled_at: row.try_get("disabled_at")?,
        target_disabled_at: row.try_get("target_disabled_at")?,
    })
}

fn version_from_row(row: &sqlx::any::AnyRow) -> Result<VersionRow> {
    Ok(VersionRow {
        version: row.try_get("version")?,
        kind: row.try_get("kind")?,
        wrapped_key: row.try_get("wrapped_key")?,
        ciphertext: row.try_get("ciphertext")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

const COLUMNS: &str =
    "c.id, t.name AS target, c.account, c.kind, c.current_version, c.updated_at, c.updated_by, \
    c.disabled_at, t.disabled_at AS target_disabled_at";

impl Store {
    pub async fn credential(&self, target: &str, account: &str) -> Result<Option<CredentialRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM credentials c JOIN targets t ON t.id = c.target_id \
             WHERE t.name = $1 AND c.account = $2"
        ))
        .bind(target)
        .bind(account)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(credential_from_row).transpose()
    }

    /// One version of a credential (the current one when `version` is `None`), with the credential
    /// and its target's tags: what a reveal needs, in one query. Never a deleted one, even by the
    /// name its history is kept under.
    pub async fn credential_secret(
        &self,
        target: &str,
        account: &str,
        version: Option<i64>,
    ) -> Result<Option<(CredentialRow, Vec<String>, VersionRow)>> {
        Ok(self
            .credential_to_reveal(target, account, version)
            .await?
            .map(|s| (s.credential, s.tags, s.version)))
    }

    /// [`Store::credential_secret`], and whether a reveal should ask for a rotation (set to
    /// rotate after a reveal, none asked for yet), so the hot path needs no second look.
    pub async fn credential_to_reveal(
        &self,
        target: &str,
        account: &str,
        version: Option<i64>,
    ) -> Result<Option<SecretRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, t.tags, v.version, v.kind AS version_kind, v.wrapped_key, v.ciphertext, \
             v.created_at, v.created_by, \
             COALESCE((SELECT r.after_reveal FROM credential_rotation r \
                       WHERE r.credential_id = c.id AND r.due_at IS NULL), 0) AS rotate_after_reveal \
             FROM credentials c JOIN targets t ON t.id = c.target_id \
             JOIN credential_versions v ON v.credential_id = c.id \
             AND v.version = COALESCE($3, c.current_version) \
             WHERE t.name = $1 AND c.account = $2 AND c.deleted_at IS NULL AND t.deleted_at IS NULL"
        ))
        .bind(target)
        .bind(account)
        .bind(version)
        .fetch_optional(&mut *c)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let version = VersionRow {
            version: row.try_get("version")?,
            kind: row.try_get("version_kind")?,
            wrapped_key: row.try_get("wrapped_key")?,
            ciphertext: row.try_get("ciphertext")?,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
        };
        let tags: String = row.try_get("tags")?;
        let tags = serde_json::from_str(&tags)
            .map_err(|e| crate::StoreError::Corrupt(format!("target tags: {e}")))?;
        let rotate: i64 = row.try_get("rotate_after_reveal")?;
        Ok(Some(SecretRow {
            credential: credential_from_row(&row)?,
            tags,
            version,
            rotate_after_reveal: rotate != 0,
        }))
    }

    /// Credentials of one target ordered by account, after `after`.
    pub async fn credentials_page(
        &self,
        target: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CredentialRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM credentials c JOIN targets t ON t.id = c.target_id \
             WHERE t.name = $1 AND c.account > $2 AND c.deleted_at IS NULL ORDER BY c.account LIMIT $3"
        ))
        .bind(target)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(credential_from_row).collect()
    }

    pub async fn credential_version(
        &self,
        credential_id: i64,
        version: i64,
    ) -> Result<Option<VersionRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(
            "SELECT version, kind, wrapped_key, ciphertext, created_at, created_by \
             FROM credential_versions WHERE credential_id = $1 AND version = $2",
        )
        .bind(credential_id)
        .bind(version)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    /// Versions newest first, before `before` (exclusive; `i64::MAX` for the first page).
    pub async fn credential_versions(
        &self,
        credential_id: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<VersionRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(
            "SELECT version, kind, wrapped_key, ciphertext, created_at, created_by \
             FROM credential_versions WHERE credential_id = $1 AND version < $2 \
             ORDER BY version DESC LIMIT $3",
        )
        .bind(credential_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(version_from_row).collect()
    }
}

#[derive(Clone, Copy)]
pub struct NewVersion<'a> {
    pub kind: &'a str,
    pub wrapped_key: &'a [u8],
    pub ciphertext: &'a [u8],
    pub created_at: &'a str,
    pub created_by: &'a str,
}

impl WriteTx {
    /// Creates the credential row (version 0, no secret yet) and returns its id. The caller seals
    /// the secret with the id in its associated data and then calls [`WriteTx::add_credential_version`].
    pub async fn insert_credential(
        &mut self,
        target_id: i64,
        target_name: &str,
        account: &str,
        kind: &str,
        at: &str,
        by: &str,
    ) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO credentials (target_id, account, kind, current_version, updated_at, updated_by) \
             VALUES ($1, $2, $3, 0, $4, $5) RETURNING id",
        )
        .bind(target_id)
        .bind(account)
        .bind(kind)
        .bind(at)
        .bind(by)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("credential {target_name}/{account}")))
    }

    /// Locks and returns `(id, current_version)` of a credential.
    pub async fn credential_for_update(
        &mut self,
        target: &str,
        account: &str,
    ) -> Result<Option<(i64, i64)>> {
        let row = sqlx::query(
            "SELECT c.id, c.current_version FROM credentials c JOIN targets t ON t.id = c.target_id \
             WHERE t.name = $1 AND c.account = $2 AND c.deleted_at IS NULL AND t.deleted_at IS NULL",
        )
        .bind(target)
        .bind(account)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| Ok((r.try_get("id")?, r.try_get("current_version")?)))
            .transpose()
    }

    /// Adds `version` and makes it current. The primary key refuses two writers adding the same version.
    pub async fn add_credential_version(
        &mut self,
        credential_id: i64,
        version: i64,
        v: NewVersion<'_>,
    ) -> Result<()> {
        self.add_pending_credential_version(credential_id, version, v)
            .await?;
        sqlx::query(
            "UPDATE credentials SET current_version = $1, kind = $2, updated_at = $3, updated_by = $4 WHERE id = $5",
        )
        .bind(version)
        .bind(v.kind)
        .bind(v.created_at)
        .bind(v.created_by)
        .bind(credential_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
