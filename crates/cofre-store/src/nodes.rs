//! The node registry: each server process's row, refreshed by its heartbeat.

use crate::{Result, Store};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub node_id: String,
    pub name: String,
    pub api_address: String,
    pub ssh_address: String,
    pub version: String,
    /// Unix seconds, as is `last_heartbeat`.
    pub started_at: i64,
    pub last_heartbeat: i64,
    pub live_sessions: i64,
}

impl Store {
    /// The heartbeat: this node's row as it is now. Not audited (operational state, every few
    /// seconds); SQLite's writers still queue on the store's gate.
    pub async fn node_heartbeat(&self, node: &NodeRow) -> Result<()> {
        let _gate = match &self.write_gate {
            Some(g) => Some(g.clone().lock_owned().await),
            None => None,
        };
        sqlx::query(
            "INSERT INTO cluster_nodes (node_id, name, api_address, ssh_address, version, \
             started_at, last_heartbeat, live_sessions) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (node_id) DO UPDATE SET name = excluded.name, \
             api_address = excluded.api_address, ssh_address = excluded.ssh_address, \
             version = excluded.version, started_at = excluded.started_at, \
             last_heartbeat = excluded.last_heartbeat, live_sessions = excluded.live_sessions",
        )
        .bind(&node.node_id)
        .bind(&node.name)
        .bind(&node.api_address)
        .bind(&node.ssh_address)
        .bind(&node.version)
        .bind(node.started_at)
        .bind(node.last_heartbeat)
        .bind(node.live_sessions)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every node that ever ran on this database, by name.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(
            "SELECT node_id, name, api_address, ssh_address, version, started_at, \
             last_heartbeat, live_sessions FROM cluster_nodes ORDER BY name, node_id",
        )
        .fetch_all(&mut *c)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeRow {
                    node_id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    api_address: r.try_get(2)?,
                    ssh_address: r.try_get(3)?,
                    version: r.try_get(4)?,
                    started_at: r.try_get(5)?,
                    last_heartbeat: r.try_get(6)?,
                    live_sessions: r.try_get(7)?,
                })
            })
            .collect()
    }
}
