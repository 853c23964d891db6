//! Anchors of the audit chain's head outside the database. The chain shows an edited, deleted or
//! reordered entry, and the head's MAC shows a head moved back by someone without the master key;
//! an anchor shows a head moved back to an older, genuinely signed state (a replayed row, a
//! restored backup of the database, a `TRUNCATE` and a re-created genesis row). The server writes
//! `DATA_DIR/audit-anchor.json` whenever the head has moved (checked every `ANCHOR_EVERY`), every
//! snapshot's `ID.json` and every break-glass file's clear header carry the head they saw;
//! `verify_audit` compares the chain with the newest of them.

use super::App;
use crate::error::{Error, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_crypto::audit_mac::AuditMacKey;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often the head is compared with the anchor file.
const ANCHOR_EVERY: Duration = Duration::from_secs(2);
/// Set once every head written has a MAC (so an empty MAC is tampering, not an old instance).
const SIGNED_SINCE: &str = "audit_head_signed_since";
pub const ANCHOR_FILE: &str = "audit-anchor.json";

/// The head as some place outside the database saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub seq: i64,
    pub hash: String,
    pub written_at: String,
    /// The audit head MAC of (seq, hash): a forged anchor is recognised as such.
    pub mac: String,
}

/// An anchor and where it was found, for the verify report.
#[derive(Debug, Clone)]
pub struct FoundAnchor {
    pub anchor: Anchor,
    pub source: String,
}

pub fn anchor_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ANCHOR_FILE)
}

impl App {
    pub(crate) fn audit_mac_key(&self) -> Result<AuditMacKey> {
        self.with_master(AuditMacKey::derive)
    }

    /// Called once the keyring is open (`set_master` has made every append MAC the head): an
    /// instance whose head was never signed (new, or from before MACs) gets its first signed head
    /// at once, rather than at its next audited action.
    pub(crate) async fn start_signing_audit_head(&self) -> Result<()> {
        if self.store.meta_get(SIGNED_SINCE).await?.is_some() {
            return Ok(());
        }
        let mut tx = self.store.write().await?;
        tx.meta_set(SIGNED_SINCE, &self.now_text()).await?;
        self.commit(
            tx,
            NewAuditEntry::new("system", "audit.head_signing", "audit:head")
                .detail("anchor", ANCHOR_FILE),
        )
        .await
    }

    /// The current head as an anchor, if this instance signed it (for snapshots' metadata).
    pub(crate) async fn signed_audit_head(&self) -> Result<Option<Anchor>> {
        let head = self.store.audit_head_signed().await?;
        let key = self.audit_mac_key()?;
        Ok(key.verify(head.seq, &head.hash, &head.mac).then(|| Anchor {
            seq: head.seq,
            hash: head.hash,
            written_at: self.now_text(),
            mac: head.mac,
        }))
    }

    /// Every anchor this node can see, newest state (highest seq) first.
    pub(crate) async fn audit_anchors(&self) -> Vec<FoundAnchor> {
        let data_dir = self.config.data_dir.clone();
        let found = tokio::task::spawn_blocking(move || read_anchors(&data_dir)).await;
        let mut anchors = found.unwrap_or_default();
        anchors.sort_by_key(|f| std::cmp::Reverse(f.anchor.seq));
        anchors
    }

    /// Moves the anchor file forward to the current head, only ever forward and only along the
    /// anchored chain: a head moved back, or a chain rewritten past the anchor, must never
    /// overwrite the evidence (verify reports it). Returns the anchor in force.
    async fn write_anchor(&self, last: Option<Anchor>) -> Result<Option<Anchor>> {
        let path = anchor_path(&self.config.data_dir);
        let last = match last {
            Some(a) => Some(a),
            None => {
                let p = path.clone();
                tokio::task::spawn_blocking(move || read_anchor_file(&p))
                    .await
                    .map_err(|e| Error::internal("reading the audit anchor", e))?
            }
        };
        // Only a head this instance signed is worth anchoring.
        let Some(anchor) = self.signed_audit_head().await? else {
            return Ok(last);
        };
        if let Some(a) = &last {
            if anchor.seq <= a.seq {
                return Ok(last);
            }
            let anchored = self.store.audit_entry(a.seq).await?;
            if anchored.as_ref().map(|r| r.hash.as_str()) != Some(a.hash.as_str()) {
                tracing::error!(
                    anchor = a.seq,
                    head = anchor.seq,
                    "the audit chain no longer contains its anchored entry; the anchor is kept as evidence"
                );
                return Ok(last);
            }
        }
        let text = serde_json::to_vec_pretty(&anchor)
            .map_err(|e| Error::internal("writing the audit anchor", e))?;
        tokio::task::spawn_blocking(move || cofre_crypto::files::write_private_file(&path, &text))
            .await
            .map_err(|e| Error::internal("writing the audit anchor", e))?
            .map_err(|e| Error::internal("writing the audit anchor", e))?;
        Ok(Some(anchor))
    }
}

fn read_anchor_file(path: &Path) -> Option<Anchor> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The head in the newest break-glass file of `DATA_DIR/breakglass/` (file names sort by the
/// time they were written), if it carries one.
fn newest_breakglass_anchor(data_dir: &Path) -> Option<FoundAnchor> {
    let dir = data_dir.join(super::breakglass::DATA_SUBDIR);
    let suffix = format!(".{}", cofre_breakglass::file::FILE_EXTENSION);
    let newest = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("cofre-breakglass-") && n.ends_with(&suffix))
        })
        .max()?;
    let header = cofre_breakglass::Header::read_file(&newest).ok()?;
    let head = header.audit_head?;
    Some(FoundAnchor {
        anchor: Anchor {
            seq: head.seq,
            hash: head.hash,
            written_at: header.written_at,
            mac: head.mac,
        },
        source: format!("the break-glass file {}", newest.display()),
    })
}

/// The anchor file, the heads recorded by snapshots (`snapshots/*.json`) and the newest
/// break-glass file's.
fn read_anchors(data_dir: &Path) -> Vec<FoundAnchor> {
    let mut out = Vec::new();
    out.extend(newest_breakglass_anchor(data_dir));
    let path = anchor_path(data_dir);
    if let Some(anchor) = read_anchor_file(&path) {
        out.push(FoundAnchor {
            anchor,
            source: format!("the anchor file {}", path.display()),
        });
    }
    let dir = data_dir.join("snapshots");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let p = entry.path();
            if p.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(text) = std::fs::read(&p) else {
                continue;
            };
            let Ok(meta) = serde_json::from_slice::<serde_json::Value>(&text) else {
                continue;
            };
            if let Ok(anchor) = serde_json::from_value::<Anchor>(meta["audit_head"].clone()) {
                out.push(FoundAnchor {
                    anchor,
                    source: format!("snapshot {}", p.display()),
                });
            }
        }
    }
    out
}

/// Keeps the anchor file up to date (started with the server).
pub fn spawn_anchor_writer(app: &Arc<App>) {
    let weak = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut last = None;
        let mut tick = tokio::time::interval(ANCHOR_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(app) = weak.upgrade() else { return };
            if app.is_sealed() {
                continue;
            }
            match app.write_anchor(last.clone()).await {
                Ok(anchor) => last = anchor,
                Err(e) => tracing::error!(error = %e, "cannot write the audit anchor; retrying"),
            }
        }
    });
}
