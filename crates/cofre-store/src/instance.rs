//! The instance's type and whether the application is enabled (one row, `instance_state`), and
//! the rows `cofre init --demo` made (`demo_items`).

use crate::{Result, Store, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStateRow {
    pub instance_type: String,
    pub disabled_at: Option<String>,
    pub disabled_by: Option<String>,
    pub disabled_reason: Option<String>,
    /// The emergency lockdown (migration 0019): since when, by whom, why.
    pub locked_down_at: Option<String>,
    pub locked_down_by: Option<String>,
    pub locked_down_reason: Option<String>,
}

const STATE: &str = "SELECT instance_type, disabled_at, disabled_by, disabled_reason, \
     locked_down_at, locked_down_by, locked_down_reason FROM instance_state WHERE id = 1";

fn state_of(row: &sqlx::any::AnyRow) -> Result<InstanceStateRow> {
    Ok(InstanceStateRow {
        instance_type: row.try_get(0)?,
        disabled_at: row.try_get(1)?,
        disabled_by: row.try_get(2)?,
        disabled_reason: row.try_get(3)?,
        locked_down_at: row.try_get(4)?,
        locked_down_by: row.try_get(5)?,
        locked_down_reason: row.try_get(6)?,
    })
}

impl Store {
    pub async fn instance_state(&self) -> Result<InstanceStateRow> {
        let mut c = self.read().await?;
        let row = sqlx::query(STATE).fetch_one(&mut *c).await?;
        state_of(&row)
    }
}

impl WriteTx {
    /// Read under the write lock, so two changes of the state are judged one after the other.
    pub async fn instance_state(&mut self) -> Result<InstanceStateRow> {
        let row = sqlx::query(STATE).fetch_one(&mut *self.tx).await?;
        state_of(&row)
    }

    pub async fn set_instance_type(&mut self, instance_type: &str) -> Result<()> {
        sqlx::query("UPDATE instance_state SET instance_type = $1 WHERE id = 1")
            .bind(instance_type)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// `None` enables the application again.
    pub async fn set_application_disabled(
        &mut self,
        disabled: Option<(&str, &str, &str)>,
    ) -> Result<()> {
        let (at, by, reason) = match disabled {
            Some((at, by, reason)) => (Some(at), Some(by), Some(reason)),
            None => (None, None, None),
        };
        sqlx::query(
            "UPDATE instance_state SET disabled_at = $1, disabled_by = $2, disabled_reason = $3 WHERE id = 1",
        )
        .bind(at)
        .bind(by)
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// `None` lifts the lockdown.
    pub async fn set_lockdown(&mut self, lockdown: Option<(&str, &str, &str)>) -> Result<()> {
        let (at, by, reason) = match lockdown {
            Some((at, by, reason)) => (Some(at), Some(by), Some(reason)),
            None => (None, None, None),
        };
        sqlx::query(
            "UPDATE instance_state SET locked_down_at = $1, locked_down_by = $2, locked_down_reason = $3 WHERE id = 1",
        )
        .bind(at)
        .bind(by)
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn add_demo_item(&mut self, kind: &str, item_id: i64) -> Result<()> {
        sqlx::query("INSERT INTO demo_items (kind, item_id) VALUES ($1, $2)")
            .bind(kind)
            .bind(item_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Marks the policy just inserted under `name` (`insert_policy` gives no id back).
    pub async fn add_demo_policy(&mut self, name: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO demo_items (kind, item_id) SELECT 'policy', id FROM policies WHERE name = $1",
        )
        .bind(name)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The names of the sample rows of `kind` (`user`, `target`, `policy`) that are still there
    /// (targets: not deleted).
    pub async fn demo_items_left(&mut self, kind: &str) -> Result<Vec<String>> {
        let sql = match kind {
            "user" => {
                "SELECT u.username FROM demo_items d JOIN users u ON u.id = d.item_id WHERE d.kind = 'user' ORDER BY u.username"
            }
            "target" => {
                "SELECT t.name FROM demo_items d JOIN targets t ON t.id = d.item_id WHERE d.kind = 'target' AND t.deleted_at IS NULL ORDER BY t.name"
            }
            "policy" => {
                "SELECT p.name FROM demo_items d JOIN policies p ON p.id = d.item_id WHERE d.kind = 'policy' ORDER BY p.name"
            }
            _ => return Ok(Vec::new()),
        };
        Ok(sqlx::query_scalar(sql).fetch_all(&mut *self.tx).await?)
    }
}

/// A release file that passed verification when it was uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRow {
    pub id: String,
    pub version: String,
    pub binary_sha256: String,
    pub upgrades_from: String,
    pub notes: String,
    pub file_name: String,
    pub bytes: i64,
    pub uploaded_at: String,
    pub uploaded_by: String,
}

const RELEASE_COLUMNS: &str =
    "id, version, binary_sha256, upgrades_from, notes, file_name, bytes, uploaded_at, uploaded_by";

fn release_of(row: &sqlx::any::AnyRow) -> Result<ReleaseRow> {
    Ok(ReleaseRow {
        id: row.try_get(0)?,
        version: row.try_get(1)?,
        binary_sha256: row.try_get(2)?,
        upgrades_from: row.try_get(3)?,
        notes: row.try_get(4)?,
        file_name: row.try_get(5)?,
        bytes: row.try_get(6)?,
        uploaded_at: row.try_get(7)?,
        uploaded_by: row.try_get(8)?,
    })
}

impl Store {
    /// Releases by id (`VERSION-SHA`), after `after`.
    pub async fn releases_page(&self, after: Option<&str>, limit: i64) -> Result<Vec<ReleaseRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(release_of).collect()
    }

    pub async fn release(&self, id: &str) -> Result<Option<ReleaseRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(release_of).transpose()
    }
}

impl WriteTx {
    pub async fn insert_release(&mut self, r: &ReleaseRow) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO releases ({RELEASE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&r.id)
        .bind(&r.version)
        .bind(&r.binary_sha256)
        .bind(&r.upgrades_from)
        .bind(&r.notes)
        .bind(&r.file_name)
        .bind(r.bytes)
        .bind(&r.uploaded_at)
        .bind(&r.uploaded_by)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| crate::StoreError::conflict_or(e, format!("release {}", r.id)))?;
        Ok(())
    }
}
