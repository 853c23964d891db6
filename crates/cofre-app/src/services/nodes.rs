//! The node registry (issue 17): every server process on this database registers at start
//! and then refreshes its row every `[cluster] heartbeat_seconds`; a node
//! whose last heartbeat is more than three intervals old is reported dead. The node's identity
//! is the data dir's `node-id`, the one rotation leases already name.

use super::handover::Bound;
use super::{rfc3339, App, Orbit, Principal};
use crate::error::Result;
use cofre_core::role::Action;
use cofre_proto::NodeInfo;
use cofre_store::nodes::NodeRow;
use std::sync::Arc;
use std::time::Duration;

/// Heartbeats a node may miss before it is reported dead.
pub const MISSED_HEARTBEATS: i64 = 3;

impl App {
    /// This node's name: `[cluster] node_name` (`--node-name`), else the host name.
    pub fn node_name(&self) -> String {
        self.config.cluster.node_name.clone().unwrap_or_else(|| {
            hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "node".into())
        })
    }

    fn node_row(&self, bound: &Bound, now: i64) -> NodeRow {
        NodeRow {
            node_id: self.node_id(),
            name: self.node_name(),
            api_address: bound.listen.to_string(),
            ssh_address: bound.ssh_listen.to_string(),
            version: crate::switch::version().to_owned(),
            started_at: now,
            last_heartbeat: now,
            live_sessions: i64::try_from(self.live.count()).unwrap_or(i64::MAX),
        }
    }

    /// Registers this node with the addresses it listens on, then keeps its row alive. Not
    /// audited: a start appended to the trail would be the first entry after whatever someone
    /// cut from it, and hide where the cut was (`tamper::tail_cut_*`). The heartbeat holds the
    /// app weakly and ends with it.
    pub async fn start_node(self: &Arc<Self>, bound: Bound) -> Result<()> {
        let mut row = self.node_row(&bound, self.now().unix_timestamp());
        self.store.node_heartbeat(&row).await?;
        let weak = Arc::downgrade(self);
        let every = Duration::from_secs(self.config.cluster.heartbeat_seconds);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(app) = weak.upgrade() else { return };
                // Only these change: name, addresses and version are the start's.
                row.last_heartbeat = app.now().unix_timestamp();
                row.live_sessions = i64::try_from(app.live.count()).unwrap_or(i64::MAX);
                if let Err(e) = app.store.node_heartbeat(&row).await {
                    tracing::warn!(error = %e, "cannot write this node's heartbeat");
                }
            }
        });
        Ok(())
    }
}

impl Orbit<'_> {
    /// Every node that ran on this database: alive or dead (no heartbeat for three intervals),
    /// its addresses, version and live sessions. Whoever reads the instance's facts.
    pub async fn list_nodes(&self, who: &Principal) -> Result<Vec<NodeInfo>> {
        if who.require(Action::ViewInstance).is_err() {
            who.require(Action::ManageInstance)?;
        }
        let now = self.now().unix_timestamp();
        let dead_after =
            MISSED_HEARTBEATS * i64::try_from(self.config.cluster.heartbeat_seconds).unwrap_or(5);
        let me = self.node_id();
        Ok(self
            .store
            .nodes()
            .await?
            .into_iter()
            .map(|n| NodeInfo {
                alive: now - n.last_heartbeat <= dead_after,
                this_node: n.node_id == me,
                name: n.name,
                node_id: n.node_id,
                api_address: n.api_address,
                ssh_address: n.ssh_address,
                version: n.version,
                started_at: rfc3339(n.started_at),
                last_heartbeat: rfc3339(n.last_heartbeat),
                live_sessions: u64::try_from(n.live_sessions).unwrap_or(0),
            })
            .collect())
    }
}
