//! Targets: hosts that credentials belong to.

use crate::{Result, Store, StoreError, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct TargetRow {
    pub id: i64,
    pub name: String,
    pub host: String,
    pub port: i64,
    pub protocol: String,
    pub tags: Vec<String>,
    pub created_at: String,
    /// Set while the target is disabled: no reveal, no session.
    pub disabled_at: Option<String>,
}

fn target_from_row(row: &sqlx::any::AnyRow) -> Result<TargetRow> {
    let tags: String = row.try_get("tags")?;
    Ok(TargetRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        host: row.try_get("host")?,
        port: row.try_get("port")?,
        protocol: row.try_get("protocol")?,
        tags: serde_json::from_str(&tags)
            .map_err(|e| StoreError::Corrupt(format!("target tags: {e}")))?,
        created_at: row.try_get("created_at")?,
        disabled_at: row.try_get("disabled_at")?,
    })
}

const COLUMNS: &str = "id, name, host, port, protocol, tags, created_at, disabled_at";

impl Store {
    pub async fn target_by_name(&self, name: &str) -> Result<Option<TargetRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM targets WHERE name = $1 AND deleted_at IS NULL"
        ))
        .bind(name)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(target_from_row).transpose()
    }

    pub async fn targets_page(&self, after: Option<&str>, limit: i64) -> Result<Vec<TargetRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM targets WHERE name > $1 AND deleted_at IS NULL ORDER BY name LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(target_from_row).collect()
    }
}

pub struct NewTarget<'a> {
    pub name: &'a str,
    pub host: &'a str,
    pub port: i64,
    pub protocol: &'a str,
    pub tags: &'a [String],
    pub created_at: &'a str,
}

impl WriteTx {
    pub async fn insert_target(&mut self, t: NewTarget<'_>) -> Result<i64> {
        let tags = serde_json::to_string(t.tags)
            .map_err(|e| StoreError::Corrupt(format!("target tags: {e}")))?;
        sqlx::query_scalar(
            "INSERT INTO targets (name, host, port, protocol, tags, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(t.name)
        .bind(t.host)
        .bind(t.port)
        .bind(t.protocol)
        .bind(tags)
        .bind(t.created_at)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("target {}", t.name)))
    }

    pub async fn target_id(&mut self, name: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM targets WHERE name = $1 AND deleted_at IS NULL")
                .bind(name)
                .fetch_optional(&mut *self.tx)
                .await?,
        )
    }
}
