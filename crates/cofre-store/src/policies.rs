//! Policies as stored: the selector, access and outcome lists are kept as JSON text.

use crate::{Result, Store, StoreError, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct PolicyRow {
    pub name: String,
    pub group: String,
    pub targets: Vec<String>,
    pub access: Vec<String>,
    pub outcome: String,
    pub created_at: String,
    /// Time limits, approval levels, emergency access: JSON the server reads (`{}`: none).
    pub limits: String,
}

fn policy_from_row(row: &sqlx::any::AnyRow) -> Result<PolicyRow> {
    let targets: String = row.try_get("targets")?;
    let access: String = row.try_get("access")?;
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("policy: {e}"));
    Ok(PolicyRow {
        name: row.try_get("name")?,
        group: row.try_get("group_name")?,
        targets: serde_json::from_str(&targets).map_err(corrupt)?,
        access: serde_json::from_str(&access).map_err(corrupt)?,
        outcome: row.try_get("outcome")?,
        created_at: row.try_get("created_at")?,
        limits: row.try_get("limits")?,
    })
}

const COLUMNS: &str = "name, group_name, targets, access, outcome, created_at, limits";

impl Store {
    /// Every policy of the given groups (what a decision for one user needs).
    pub async fn policies_for_groups(&self, groups: &[String]) -> Result<Vec<PolicyRow>> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.read().await?;
        let placeholders: Vec<String> = (1..=groups.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM policies WHERE group_name IN ({}) ORDER BY name",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for g in groups {
            q = q.bind(g);
        }
        let rows = q.fetch_all(&mut *c).await?;
        rows.iter().map(policy_from_row).collect()
    }

    pub async fn policies_page(&self, after: Option<&str>, limit: i64) -> Result<Vec<PolicyRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM policies WHERE name > $1 ORDER BY name LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(policy_from_row).collect()
    }
}

impl WriteTx {
    pub async fn insert_policy(&mut self, p: &PolicyRow, created_by: &str) -> Result<()> {
        let enc = |v: &Vec<String>| {
            serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("policy: {e}")))
        };
        sqlx::query(
            "INSERT INTO policies (name, group_name, targets, access, outcome, created_at, created_by, limits) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&p.name)
        .bind(&p.group)
        .bind(enc(&p.targets)?)
        .bind(enc(&p.access)?)
        .bind(&p.outcome)
        .bind(&p.created_at)
        .bind(created_by)
        .bind(&p.limits)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("policy {}", p.name)))?;
        Ok(())
    }

    /// The policy as this transaction sees it (the edit's check of the version it was made from).
    pub async fn policy_by_name(&mut self, name: &str) -> Result<Option<PolicyRow>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM policies WHERE name = $1"))
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(policy_from_row).transpose()
    }

    /// Replaces what a policy says (its name and creation stay); whether it existed.
    pub async fn update_policy(&mut self, p: &PolicyRow) -> Result<bool> {
        let enc = |v: &Vec<String>| {
            serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("policy: {e}")))
        };
        let done = sqlx::query(
            "UPDATE policies SET group_name = $2, targets = $3, access = $4, outcome = $5, limits = $6 \
             WHERE name = $1",
        )
        .bind(&p.name)
        .bind(&p.group)
        .bind(enc(&p.targets)?)
        .bind(enc(&p.access)?)
        .bind(&p.outcome)
        .bind(&p.limits)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Returns whether a policy was removed.
    pub async fn delete_policy(&mut self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM policies WHERE name = $1")
            .bind(name)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// Every policy, by name.
pub(crate) async fn all_policies(conn: &mut sqlx::AnyConnection) -> Result<Vec<PolicyRow>> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM policies ORDER BY name"))
        .fetch_all(conn)
        .await?;
    rows.iter().map(policy_from_row).collect()
}

impl Store {
    pub async fn policy_by_name(&self, name: &str) -> Result<Option<PolicyRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM policies WHERE name = $1"))
            .bind(name)
            .fetch_optional(&mut *c)
            .await?;
        row.as_ref().map(policy_from_row).transpose()
    }

    pub async fn all_policies(&self) -> Result<Vec<PolicyRow>> {
        let mut c = self.read().await?;
        all_policies(&mut c).await
    }
}
