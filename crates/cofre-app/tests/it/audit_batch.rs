//! The audit writer's batch append on a real store: batches of every size the multi-row INSERTs
//! split differently (1, 2, 63, 64, 65, 200), between single appends, chain into one trail that
//! verifies, with no gap or repeat, and the head (with its MAC) is the last entry's.

use cofre_core::audit::{ChainVerifier, NewAuditEntry};
use cofre_store::Store;
use std::sync::Arc;

async fn batches_chain_into_one_trail(url: &str) {
    let store = Store::open(url).await.unwrap();
    store.set_head_signer(Arc::new(|seq, hash| format!("mac:{seq}:{hash}")));
    let mut expected = Vec::new();
    for (round, size) in [1usize, 2, 63, 64, 65, 200].into_iter().enumerate() {
        let mut tx = store.write().await.unwrap();
        let single = format!("single-{round}");
        tx.append_audit(
            "2026-01-01T00:00:00Z".into(),
            NewAuditEntry::new("test", "test.single", &*single),
        )
        .await
        .unwrap();
        expected.push(single);
        let entries: Vec<_> = (0..size)
            .map(|i| {
                let object = format!("batch-{round}-{i}");
                expected.push(object.clone());
                (
                    "2026-01-01T00:00:01Z".to_owned(),
                    NewAuditEntry::new("test", "test.batch", object).detail("i", i as i64),
                )
            })
            .collect();
        let written = tx.append_audit_batch(entries).await.unwrap();
        assert_eq!(written.len(), size);
        tx.commit().await.unwrap();
    }
    let records = store.audit_page(0, 10_000).await.unwrap();
    let objects: Vec<&str> = records.iter().map(|r| r.object.as_str()).collect();
    assert_eq!(objects, expected, "every entry once, in the order given");
    let mut verifier = ChainVerifier::default();
    for r in &records {
        verifier.push(r).unwrap();
    }
    let head = store.audit_head_signed().await.unwrap();
    let last = records.last().unwrap();
    assert_eq!(
        (head.seq, head.hash.as_str()),
        (last.seq, last.hash.as_str())
    );
    assert_eq!(head.mac, format!("mac:{}:{}", last.seq, last.hash));
    verifier
        .finish(Some((head.seq, head.hash.as_str())))
        .unwrap();
    store.close().await;
}

#[tokio::test]
async fn batches_chain_into_one_trail_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    batches_chain_into_one_trail(&url).await;
}

#[tokio::test]
async fn batches_chain_into_one_trail_postgres() {
    crate::approvals::with_scratch_pg("cofre_batch", |url| async move {
        batches_chain_into_one_trail(&url).await;
    })
    .await;
}
