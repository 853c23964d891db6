//! Break-glass key epochs, their custodians, the sealed shares waiting for delivery, and the one
//! query that reads the whole vault (still sealed) for a backup file.

use crate::{Result, Store, StoreError, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct EpochRow {
    pub epoch: i64,
    pub recipient: String,
    pub threshold: i64,
    pub shares: i64,
    pub created_at: String,
    pub created_by: String,
    pub closed_at: Option<String>,
    pub abandoned_at: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CustodianRow {
    pub epoch: i64,
    pub share_index: i64,
    pub user_id: i64,
    pub username: String,
    pub delivered_at: Option<String>,
}

/// A custodian's place in their latest epoch, and the sealed share if it is still waiting.
#[derive(Debug, Clone)]
pub struct Custody {
    pub custodian: CustodianRow,
    pub epoch: EpochRow,
    /// (wrapped data key, ciphertext) while undelivered.
    pub pending: Option<(Vec<u8>, Vec<u8>)>,
}

/// One version of one credential of one target (or a target without credentials), sealed.
#[derive(Debug, Clone)]
pub struct BackupRow {
    pub target_id: i64,
    pub target: String,
    pub host: String,
    pub port: i64,
    pub protocol: String,
    pub tags: Vec<String>,
    pub credential: Option<BackupVersion>,
}

#[derive(Debug, Clone)]
pub struct BackupVersion {
    pub credential_id: i64,
    pub account: String,
    pub credential_kind: String,
    pub current_version: i64,
    pub version: i64,
    pub kind: String,
    pub wrapped_key: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub created_at: String,
    pub created_by: String,
}

const EPOCH_COLUMNS: &str =
    "e.epoch, e.recipient, e.threshold, e.shares, e.created_at, e.created_by, e.closed_at, e.abandoned_at";

fn epoch_from_row(row: &sqlx::any::AnyRow) -> Result<EpochRow> {
    Ok(EpochRow {
        epoch: row.try_get("epoch")?,
        recipient: row.try_get("recipient")?,
        threshold: row.try_get("threshold")?,
        shares: row.try_get("shares")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        closed_at: row.try_get("closed_at")?,
        abandoned_at: row.try_get("abandoned_at")?,
    })
}

fn custodian_from_row(row: &sqlx::any::AnyRow) -> Result<CustodianRow> {
    Ok(CustodianRow {
        epoch: row.try_get("epoch")?,
        share_index: row.try_get("share_index")?,
        user_id: row.try_get("user_id")?,
        username: row.try_get("username")?,
        delivered_at: row.try_get("delivered_at")?,
    })
}

impl Store {
    /// Every epoch, newest first, with its custodians in share order.
    pub async fn breakglass_epochs(&self) -> Result<Vec<(EpochRow, Vec<CustodianRow>)>> {
        let mut c = self.read().await?;
        let epochs = sqlx::query(&format!(
            "SELECT {EPOCH_COLUMNS} FROM breakglass_epochs e ORDER BY e.epoch DESC"
        ))
        .fetch_all(&mut *c)
        .await?;
        let custodians = sqlx::query(
            "SELECT epoch, share_index, user_id, username, delivered_at FROM breakglass_custodians \
             ORDER BY epoch, share_index",
        )
        .fetch_all(&mut *c)
        .await?;
        let custodians: Vec<CustodianRow> = custodians
            .iter()
            .map(custodian_from_row)
            .collect::<Result<_>>()?;
        epochs
            .iter()
            .map(|r| {
                let e = epoch_from_row(r)?;
                let mine = custodians
                    .iter()
                    .filter(|c| c.epoch == e.epoch)
                    .cloned()
                    .collect();
                Ok((e, mine))
            })
            .collect()
    }

    /// The epoch files are written under: the newest one whose shares were all delivered.
    pub async fn breakglass_active_epoch(&self) -> Result<Option<EpochRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!(
            "SELECT {EPOCH_COLUMNS} FROM breakglass_epochs e WHERE e.closed_at IS NOT NULL \
             ORDER BY e.epoch DESC LIMIT 1"
        ))
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(epoch_from_row).transpose()
    }

    /// Every target, and every version of every credential, still sealed, grouped by target and
    /// credential (ordered by target name, account, version). One statement, so one snapshot.
    pub async fn backup_rows(&self) -> Result<Vec<BackupRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(
            "SELECT t.id AS target_id, t.name AS target, t.host, t.port, t.protocol, t.tags, \
             c.id AS credential_id, c.account, c.kind AS credential_kind, c.current_version, \
             v.version, v.kind AS version_kind, v.wrapped_key, v.ciphertext, v.created_at, v.created_by \
             FROM targets t \
             LEFT JOIN credentials c ON c.target_id = t.id \
             LEFT JOIN credential_versions v ON v.credential_id = c.id \
             ORDER BY t.name, t.id, c.account, c.id, v.version",
        )
        .fetch_all(&mut *c)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let tags: String = row.try_get("tags")?;
            let credential_id: Option<i64> = row.try_get("credential_id")?;
            let version: Option<i64> = row.try_get("version")?;
            let credential = match (credential_id, version) {
                (Some(credential_id), Some(version)) => Some(BackupVersion {
                    credential_id,
                    account: row.try_get("account")?,
                    credential_kind: row.try_get("credential_kind")?,
                    current_version: row.try_get("current_version")?,
                    version,
                    kind: row.try_get("version_kind")?,
                    wrapped_key: row.try_get("wrapped_key")?,
                    ciphertext: row.try_get("ciphertext")?,
                    created_at: row.try_get("created_at")?,
                    created_by: row.try_get("created_by")?,
                }),
                // A credential row without any version cannot be committed (both are written in
                // one transaction); a target without credentials has neither.
                _ => None,
            };
            out.push(BackupRow {
                target_id: row.try_get("target_id")?,
                target: row.try_get("target")?,
                host: row.try_get("host")?,
                port: row.try_get("port")?,
                protocol: row.try_get("protocol")?,
                tags: serde_json::from_str(&tags)
                    .map_err(|e| StoreError::Corrupt(format!("target tags: {e}")))?,
                credential,
            });
        }
        Ok(out)
    }
}

pub struct NewCustodian<'a> {
    pub share_index: i64,
    pub user_id: i64,
    pub username: &'a str,
    pub wrapped_key: &'a [u8],
    pub ciphertext: &'a [u8],
}

impl WriteTx {
    pub async fn breakglass_next_epoch(&mut self) -> Result<i64> {
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(epoch) FROM breakglass_epochs")
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(max.unwrap_or(0) + 1)
    }

    /// Epochs that never closed: marked abandoned, their undelivered shares deleted. Returns them.
    pub async fn breakglass_abandon_open(&mut self, at: &str) -> Result<Vec<i64>> {
        let open: Vec<i64> = sqlx::query_scalar(
            "SELECT epoch FROM breakglass_epochs WHERE closed_at IS NULL AND abandoned_at IS NULL \
             ORDER BY epoch",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        for epoch in &open {
            sqlx::query("DELETE FROM breakglass_pending_shares WHERE epoch = $1")
                .bind(epoch)
                .execute(&mut *self.tx)
                .await?;
            sqlx::query("UPDATE breakglass_epochs SET abandoned_at = $1 WHERE epoch = $2")
                .bind(at)
                .bind(epoch)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(open)
    }

    pub async fn breakglass_insert_epoch(&mut self, e: &EpochRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO breakglass_epochs (epoch, recipient, threshold, shares, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(e.epoch)
        .bind(&e.recipient)
        .bind(e.threshold)
        .bind(e.shares)
        .bind(&e.created_at)
        .bind(&e.created_by)
        .execute(&mut *self.tx)
        .await
        .map_err(|err| StoreError::conflict_or(err, format!("break-glass epoch {}", e.epoch)))?;
        Ok(())
    }

    pub async fn breakglass_insert_custodian(
        &mut self,
        epoch: i64,
        c: NewCustodian<'_>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO breakglass_custodians (epoch, share_index, user_id, username) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(epoch)
        .bind(c.share_index)
        .bind(c.user_id)
        .bind(c.username)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("custodian {}", c.username)))?;
        sqlx::query(
            "INSERT INTO breakglass_pending_shares (epoch, user_id, wrapped_key, ciphertext) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(epoch)
        .bind(c.user_id)
        .bind(c.wrapped_key)
        .bind(c.ciphertext)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The user's place in the newest epoch they are a custodian of.
    pub async fn breakglass_custody(&mut self, user_id: i64) -> Result<Option<Custody>> {
        let row = sqlx::query(&format!(
            "SELECT {EPOCH_COLUMNS}, c.share_index, c.user_id, c.username, c.delivered_at, \
             p.wrapped_key, p.ciphertext \
             FROM breakglass_custodians c JOIN breakglass_epochs e ON e.epoch = c.epoch \
             LEFT JOIN breakglass_pending_shares p ON p.epoch = c.epoch AND p.user_id = c.user_id \
             WHERE c.user_id = $1 ORDER BY c.epoch DESC LIMIT 1"
        ))
        .bind(user_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let wrapped: Option<Vec<u8>> = row.try_get("wrapped_key")?;
        let ct: Option<Vec<u8>> = row.try_get("ciphertext")?;
        Ok(Some(Custody {
            custodian: custodian_from_row(&row)?,
            epoch: epoch_from_row(&row)?,
            pending: wrapped.zip(ct),
        }))
    }

    /// Deletes the sealed share and records the delivery; returns how many shares of the epoch are
    /// still undelivered.
    pub async fn breakglass_deliver(&mut self, epoch: i64, user_id: i64, at: &str) -> Result<i64> {
        let deleted =
            sqlx::query("DELETE FROM breakglass_pending_shares WHERE epoch = $1 AND user_id = $2")
                .bind(epoch)
                .bind(user_id)
                .execute(&mut *self.tx)
                .await?
                .rows_affected();
        if deleted != 1 {
            return Err(StoreError::NotFound {
                what: format!("pending share of epoch {epoch}"),
            });
        }
        sqlx::query(
            "UPDATE breakglass_custodians SET delivered_at = $1 WHERE epoch = $2 AND user_id = $3",
        )
        .bind(at)
        .bind(epoch)
        .bind(user_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM breakglass_custodians WHERE epoch = $1 AND delivered_at IS NULL",
        )
        .bind(epoch)
        .fetch_one(&mut *self.tx)
        .await?)
    }

    pub async fn breakglass_close(&mut self, epoch: i64, at: &str) -> Result<()> {
        sqlx::query("UPDATE breakglass_epochs SET closed_at = $1 WHERE epoch = $2")
            .bind(at)
            .bind(epoch)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
