//! The audit trail as a hash chain.
//!
//! Each entry stores the SHA-256 of the previous entry (`prev_hash`) and the SHA-256 of its own
//! canonical form (`hash`, which covers `prev_hash`). Editing an entry breaks its own hash; deleting
//! or reordering entries breaks the sequence or a `prev_hash` link; cutting the tail is caught by the
//! chain head that the store keeps beside the entries. This module only computes and checks; the store
//! writes entries in the same transaction as the action they record.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a service asks to record. `details` must never hold a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    /// Who acted: a user name, or `system`, or `anonymous` for unauthenticated callers.
    pub actor: String,
    /// Dotted verb, e.g. `credential.reveal`, `auth.login_failed`.
    pub action: String,
    /// What it was done to, e.g. `credential:db01/root`.
    pub object: String,
    /// `ok`, `denied` or `failed`.
    pub outcome: String,
    pub details: Value,
}

impl NewAuditEntry {
    pub fn new(actor: &str, action: &str, object: impl Into<String>) -> Self {
        Self {
            actor: actor.to_owned(),
            action: action.to_owned(),
            object: object.into(),
            outcome: "ok".to_owned(),
            details: Value::Object(Default::default()),
        }
    }

    pub fn outcome(mut self, outcome: &str) -> Self {
        outcome.clone_into(&mut self.outcome);
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Value::Object(map) = &mut self.details {
            map.insert(key.to_owned(), value.into());
        }
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    /// RFC 3339, UTC, as given by the caller's clock.
    pub ts: String,
    pub actor: String,
    pub action: String,
    pub object: String,
    pub outcome: String,
    pub details: Value,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// Chains `entry` after the entry `(prev_seq, prev_hash)`; use `(0, GENESIS_HASH)` for the first.
    pub fn chain(prev_seq: i64, prev_hash: &str, ts: String, entry: NewAuditEntry) -> AuditRecord {
        let mut record = AuditRecord {
            seq: prev_seq + 1,
            ts,
            actor: entry.actor,
            action: entry.action,
            object: entry.object,
            outcome: entry.outcome,
            details: entry.details,
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        record
    }

    /// SHA-256 over the canonical form: every field but `hash`, in a fixed order, JSON with sorted keys.
    pub fn compute_hash(&self) -> String {
        let mut canonical = String::new();
        canonical.push_str("cofre-audit-v1\n");
        for (name, value) in [
            ("seq", Value::from(self.seq)),
            ("ts", Value::from(self.ts.as_str())),
            ("actor", Value::from(self.actor.as_str())),
            ("action", Value::from(self.action.as_str())),
            ("object", Value::from(self.object.as_str())),
            ("outcome", Value::from(self.outcome.as_str())),
            ("details", self.details.clone()),
            ("prev_hash", Value::from(self.prev_hash.as_str())),
        ] {
            canonical.push_str(name);
            canonical.push('=');
            write_canonical(&value, &mut canonical);
            canonical.push('\n');
        }
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }
}

/// JSON with object keys sorted at every depth, whatever map type serde_json was built with.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                if let Some(v) = map.get(k) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Where and how the chain is broken. `seq` names the first entry that cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "audit entry {}: {}", self.seq, self.reason)
    }
}

/// Checks entries fed in `seq` order, one at a time, so a long trail is verified in constant memory.
#[derive(Debug)]
pub struct ChainVerifier {
    next_seq: i64,
    prev_hash: String,
    checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            checked: 0,
        }
    }
}

impl ChainVerifier {
    pub fn push(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        if record.seq > self.next_seq {
            return Err(ChainBreak {
                seq: self.next_seq,
                reason: if record.seq == self.next_seq + 1 {
                    format!(
                        "missing (deleted); the next entry present is {}",
                        record.seq
                    )
                } else {
                    format!(
                        "missing (deleted), with {} entries after it, up to {}",
                        record.seq - self.next_seq - 1,
                        record.seq - 1
                    )
                },
            });
        }
        if record.seq < self.next_seq {
            return Err(ChainBreak {
                seq: record.seq,
                reason: "out of order or duplicated".into(),
            });
        }
        if record.compute_hash() != record.hash {
            return Err(ChainBreak {
                seq: record.seq,
                reason: "content does not match its hash (edited, or moved from another position)"
                    .into(),
            });
        }
        if record.prev_hash != self.prev_hash {
            return Err(ChainBreak {
                seq: record.seq,
                reason:
                    "does not link to the entry before it (entries inserted, swapped or rewritten)"
                        .into(),
            });
        }
        self.next_seq += 1;
        self.prev_hash.clone_from(&record.hash);
        self.checked += 1;
        Ok(())
    }

    /// Compares the end of the chain with the head the store recorded, catching a cut-off tail.
    pub fn finish(self, head: Option<(i64, &str)>) -> Result<u64, ChainBreak> {
        let (head_seq, head_hash) = head.unwrap_or((0, GENESIS_HASH));
        let last = self.next_seq - 1;
        if head_seq > last {
            return Err(ChainBreak {
                seq: last + 1,
                reason: format!(
                    "missing (deleted): the chain head says the trail ends at {head_seq}"
                ),
            });
        }
        if head_seq < last || head_hash != self.prev_hash {
            return Err(ChainBreak {
                seq: head_seq.max(1),
                reason: "the chain head does not match the last entry (trail rewritten)".into(),
            });
        }
        Ok(self.checked)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn build(n: i64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let (seq, hash) = out
                .last()
                .map_or((0, GENESIS_HASH.to_owned()), |r| (r.seq, r.hash.clone()));
            let e = NewAuditEntry::new(
                "alice",
                "credential.reveal",
                format!("credential:db0{i}/root"),
            )
            .detail("reason", format!("INC-{i}"))
            .detail("a", serde_json::json!({"z": 1, "b": [1, 2]}));
            out.push(AuditRecord::chain(
                seq,
                &hash,
                format!("2026-01-01T00:00:0{i}Z"),
                e,
            ));
        }
        out
    }

    fn verify(records: &[AuditRecord], head: Option<(i64, &str)>) -> Result<u64, ChainBreak> {
        let mut v = ChainVerifier::default();
        for r in records {
            v.push(r)?;
        }
        v.finish(head)
    }

    fn head(records: &[AuditRecord]) -> Option<(i64, &str)> {
        records.last().map(|r| (r.seq, r.hash.as_str()))
    }

    #[test]
    fn intact_chain_verifies() {
        let r = build(5);
        assert_eq!(verify(&r, head(&r)).unwrap(), 5);
        assert_eq!(verify(&[], None).unwrap(), 0);
    }

    #[test]
    fn key_order_does_not_change_the_hash() {
        let r = build(1);
        let mut copy = r[0].clone();
        copy.details = serde_json::from_str(&copy.details.to_string()).unwrap();
        assert_eq!(copy.compute_hash(), r[0].hash);
    }

    #[test]
    fn edit_is_named() {
        let r = build(5);
        let mut t = r.clone();
        t[2].actor = "mallory".into();
        assert_eq!(verify(&t, head(&r)).unwrap_err().seq, 3);
    }

    #[test]
    fn edit_with_recomputed_hash_breaks_the_next_link() {
        let r = build(5);
        let mut t = r.clone();
        t[2].details = serde_json::json!({"reason": "nothing to see"});
        t[2].hash = t[2].compute_hash();
        assert_eq!(verify(&t, head(&r)).unwrap_err().seq, 4);
    }

    #[test]
    fn deletion_is_named() {
        let r = build(5);
        let mut t = r.clone();
        t.remove(1);
        let err = verify(&t, head(&r)).unwrap_err();
        assert_eq!(err.seq, 2);
        assert!(err.reason.contains("missing"));
    }

    #[test]
    fn deleting_the_tail_is_caught_by_the_head() {
        let r = build(5);
        let t = &r[..4];
        assert_eq!(verify(t, head(&r)).unwrap_err().seq, 5);
    }

    #[test]
    fn swapping_contents_is_named() {
        let r = build(5);
        let mut t = r.clone();
        let (a, b) = (t[1].clone(), t[2].clone());
        t[1] = AuditRecord { seq: 2, ..b };
        t[2] = AuditRecord { seq: 3, ..a };
        assert_eq!(verify(&t, head(&r)).unwrap_err().seq, 2);
    }
}
