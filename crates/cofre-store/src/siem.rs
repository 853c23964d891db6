//! SIEM destinations and how far each has received the audit trail (`position`).

use crate::{Result, Store, StoreError, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct SiemRow {
    pub id: i64,
    pub name: String,
    /// `tcp://`, `tls://` or `udp://HOST:PORT`.
    pub url: String,
    /// `rfc5424` or `cef`.
    pub format: String,
    pub ca_cert: Option<String>,
    pub created_at: String,
    pub created_by: String,
    /// The last audit sequence delivered.
    pub position: i64,
    pub last_ok_at: Option<String>,
    pub last_error_at: Option<String>,
    pub last_error: Option<String>,
    /// Unix seconds of the first failure of the current outage.
    pub failing_since: Option<i64>,
    pub alerted: bool,
}

const COLUMNS: &str = "id, name, url, format, ca_cert, created_at, created_by, position, \
    last_ok_at, last_error_at, last_error, failing_since, alerted";

fn from_row(row: &sqlx::any::AnyRow) -> Result<SiemRow> {
    let alerted: i64 = row.try_get("alerted")?;
    Ok(SiemRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        url: row.try_get("url")?,
        format: row.try_get("format")?,
        ca_cert: row.try_get("ca_cert")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        position: row.try_get("position")?,
        last_ok_at: row.try_get("last_ok_at")?,
        last_error_at: row.try_get("last_error_at")?,
        last_error: row.try_get("last_error")?,
        failing_since: row.try_get("failing_since")?,
        alerted: alerted != 0,
    })
}

/// A destination to add.
pub struct NewSiem<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub format: &'a str,
    pub ca_cert: Option<&'a str>,
    pub created_at: &'a str,
    pub created_by: &'a str,
}

impl WriteTx {
    pub async fn siem_insert(&mut self, d: NewSiem<'_>) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO siem_destinations (name, url, format, ca_cert, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(d.name)
        .bind(d.url)
        .bind(d.format)
        .bind(d.ca_cert)
        .bind(d.created_at)
        .bind(d.created_by)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("SIEM destination {}", d.name)))
    }

    /// Removes a destination; the row it was, if there was one.
    pub async fn siem_remove(&mut self, name: &str) -> Result<Option<SiemRow>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM siem_destinations WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(row) = row.as_ref().map(from_row).transpose()? else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM siem_destinations WHERE id = $1")
            .bind(row.id)
            .execute(&mut *self.tx)
            .await?;
        Ok(Some(row))
    }

    /// Marks the current outage as alerted (once per outage; false if another node did it).
    pub async fn siem_mark_alerted(&mut self, id: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE siem_destinations SET alerted = 1 WHERE id = $1 AND alerted = 0 \
             AND failing_since IS NOT NULL",
        )
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    pub async fn siem_destinations(&self) -> Result<Vec<SiemRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM siem_destinations ORDER BY name"
        ))
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn siem_destination(&self, name: &str) -> Result<Option<SiemRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM siem_destinations WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Entries up to `position` arrived. The position only moves forward, so a slower node (or
    /// an older batch) never moves it back. Not audited: delivery changes no state of the
    /// instance, and auditing it would make entries to forward forever.
    pub async fn siem_delivered(&self, id: i64, position: i64, at: &str) -> Result<()> {
        let mut c = self.read().await?;
        sqlx::query(
            "UPDATE siem_destinations SET position = $1, last_ok_at = $2, failing_since = NULL, \
             alerted = 0 WHERE id = $3 AND position < $1",
        )
        .bind(position)
        .bind(at)
        .bind(id)
        .execute(&mut *c)
        .await?;
        Ok(())
    }

    /// A failed attempt; the outage starts at the first one (`since`, Unix seconds).
    pub async fn siem_failed(&self, id: i64, error: &str, at: &str, since: i64) -> Result<()> {
        let mut c = self.read().await?;
        sqlx::query(
            "UPDATE siem_destinations SET last_error = $1, last_error_at = $2, \
             failing_since = COALESCE(failing_since, $3) WHERE id = $4",
        )
        .bind(error)
        .bind(at)
        .bind(since)
        .bind(id)
        .execute(&mut *c)
        .await?;
        Ok(())
    }
}
