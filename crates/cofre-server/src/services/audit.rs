//! Reading and verifying the audit trail.

use super::{page_limit, paginate, App, Principal};
use crate::error::{Error, Result};
use cofre_core::audit::ChainVerifier;
use cofre_core::role::Action;
use cofre_proto::{AuditBreak, AuditEntryInfo, AuditVerifyResponse, Page};

const VERIFY_BATCH: i64 = 2000;

impl App {
    pub async fn list_audit(
        &self,
        who: &Principal,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<AuditEntryInfo>> {
        who.require(Action::ReadAudit)?;
        let limit = page_limit(limit)?;
        let after = match cursor {
            None => 0,
            Some(c) => c
                .parse()
                .map_err(|_| Error::invalid("cursor", "cursor: not a cursor from this list"))?,
        };
        let rows = self.store.audit_page(after, limit + 1).await?;
        Ok(paginate(
            rows,
            limit,
            |r| r.seq.to_string(),
            |r| AuditEntryInfo {
                seq: r.seq,
                ts: r.ts,
                actor: r.actor,
                action: r.action,
                object: r.object,
                outcome: r.outcome,
                details: r.details,
                prev_hash: r.prev_hash,
                hash: r.hash,
            },
        ))
    }

    /// Walks the whole chain in batches and names the first entry that cannot be trusted.
    pub async fn verify_audit(&self, who: &Principal) -> Result<AuditVerifyResponse> {
        who.require(Action::ReadAudit)?;
        // Read the head first: entries appended while we walk are past it and do not count.
        let (head_seq, head_hash) = self.store.audit_head().await?;
        let mut verifier = ChainVerifier::default();
        let mut after = 0;
        let broken = 'walk: loop {
            let batch = self.store.audit_page(after, VERIFY_BATCH).await?;
            let Some(last) = batch.last() else { break None };
            after = last.seq;
            for record in batch.iter().filter(|r| r.seq <= head_seq) {
                if let Err(b) = verifier.push(record) {
                    break 'walk Some(b);
                }
            }
            if after >= head_seq {
                break None;
            }
        };
        let result = match broken {
            Some(b) => Err(b),
            None => verifier.finish(Some((head_seq, &head_hash))),
        };
        Ok(match result {
            Ok(n) => AuditVerifyResponse {
                intact: true,
                entries_checked: n,
                first_broken: None,
            },
            Err(b) => {
                tracing::warn!(seq = b.seq, reason = %b.reason, "audit chain broken");
                AuditVerifyResponse {
                    intact: false,
                    entries_checked: u64::try_from(b.seq.saturating_sub(1)).unwrap_or(0),
                    first_broken: Some(AuditBreak {
                        seq: b.seq,
                        reason: b.reason,
                    }),
                }
            }
        })
    }
}
