//! The network policy's rows (`network_policy`, one per listener): the lists as the service wrote
//! them (comma-separated CIDRs, already validated by `cofre_core::network`).

use crate::{Result, Store, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicyRow {
    pub listener: String,
    pub allow: String,
    pub vendor_allow: String,
    pub trusted_proxies: String,
    pub updated_at: Option<String>,
    pub updated_by: Option<String>,
}

const ROWS: &str = "SELECT listener, allow, vendor_allow, trusted_proxies, updated_at, updated_by FROM network_policy ORDER BY listener";

fn row_of(row: &sqlx::any::AnyRow) -> Result<NetworkPolicyRow> {
    Ok(NetworkPolicyRow {
        listener: row.try_get(0)?,
        allow: row.try_get(1)?,
        vendor_allow: row.try_get(2)?,
        trusted_proxies: row.try_get(3)?,
        updated_at: row.try_get(4)?,
        updated_by: row.try_get(5)?,
    })
}

impl Store {
    pub async fn network_policy(&self) -> Result<Vec<NetworkPolicyRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(ROWS).fetch_all(&mut *c).await?;
        rows.iter().map(row_of).collect()
    }
}

impl WriteTx {
    /// Read under the write lock, so a change is judged against the policy it replaces.
    pub async fn network_policy(&mut self) -> Result<Vec<NetworkPolicyRow>> {
        let rows = sqlx::query(ROWS).fetch_all(&mut *self.tx).await?;
        rows.iter().map(row_of).collect()
    }

    pub async fn set_network_policy(&mut self, row: &NetworkPolicyRow) -> Result<()> {
        sqlx::query(
            "UPDATE network_policy SET allow = $1, vendor_allow = $2, trusted_proxies = $3, updated_at = $4, updated_by = $5 WHERE listener = $6",
        )
        .bind(&row.allow)
        .bind(&row.vendor_allow)
        .bind(&row.trusted_proxies)
        .bind(&row.updated_at)
        .bind(&row.updated_by)
        .bind(&row.listener)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
