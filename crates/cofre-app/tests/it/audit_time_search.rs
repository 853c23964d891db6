//! The audit search by `since` on a real store, when the clock stepped back and forward between
//! appends: every entry whose own time is at or after `since` is found, however its neighbours'
//! times run, through pages, with other conditions, after a restart; and a trail written before
//! migration 0029 is searched the same once it is migrated.

use cofre_core::audit::NewAuditEntry;
use cofre_store::audit::{AuditFilter, Match};
use cofre_store::Store;
use std::borrow::Cow;

/// (time, action) per entry, in append order: the clock jumps ahead at the second entry, is set
/// back at the third, and runs on from there.
const TRAIL: [(&str, &str); 7] = [
    ("2026-01-01T10:00:00Z", "a.one"),
    ("2026-01-01T12:00:00.5Z", "a.two"),
    ("2026-01-01T09:00:00Z", "b.three"),
    ("2026-01-01T11:00:00Z", "a.four"),
    ("2026-01-01T11:30:00Z", "b.five"),
    ("2026-01-01T10:30:00Z", "a.six"),
    ("2026-01-01T13:00:00Z", "a.seven"),
];

fn window(since: Option<&str>, until: Option<&str>) -> AuditFilter {
    AuditFilter {
        since: since.map(str::to_owned),
        until: until.map(str::to_owned),
        ..AuditFilter::default()
    }
}

/// Every match, a page of `limit` at a time, each page from the last one's sequence number.
async fn objects(store: &Store, f: &AuditFilter, limit: i64) -> Vec<String> {
    let mut found = Vec::new();
    let mut after = 0;
    loop {
        let page = store.audit_search(f, after, limit).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        let full = page.len() as i64 == limit;
        found.extend(page.into_iter().map(|r| r.object));
        if !full {
            break;
        }
    }
    found
}

/// What a search must find, whatever is in the database: the entries whose own time is in
/// `[since, until)`, in trail order.
fn expected(since: Option<&str>, until: Option<&str>) -> Vec<String> {
    TRAIL
        .iter()
        .filter(|(ts, _)| since.is_none_or(|s| *ts >= s) && until.is_none_or(|u| *ts < u))
        .map(|(_, a)| a.to_string())
        .collect()
}

async fn check_searches(url: &str) {
    let store = Store::open(url).await.unwrap();
    let times = [
        None,
        Some("2026-01-01T08:00:00"),
        Some("2026-01-01T10:00:00"),
        Some("2026-01-01T10:15:00"),
        Some("2026-01-01T11:00:00"),
        Some("2026-01-01T12:00:00"),
        Some("2026-01-01T12:30:00"),
        Some("2026-01-01T13:00:00"),
        Some("2026-01-01T13:00:01"),
    ];
    for since in times {
        for until in times {
            let f = window(since, until);
            let want = expected(since, until);
            for limit in [1, 2, 100] {
                assert_eq!(
                    objects(&store, &f, limit).await,
                    want,
                    "since {since:?} until {until:?}, pages of {limit}"
                );
            }
        }
    }
    // The entry stamped 12:00 came before the clock was set back: a search that started at the
    // first entry stamped after 11:00 in time order (the 11:00 one) would miss it; and the ones
    // stamped 09:00 and 10:30 came after the 12:00 one, which a search up to 11:00 that stopped
    // at the first later stamp would miss.
    let f = window(Some("2026-01-01T11:00:00"), None);
    assert_eq!(
        objects(&store, &f, 100).await,
        ["a.two", "a.four", "b.five", "a.seven"]
    );
    let f = window(None, Some("2026-01-01T11:00:00"));
    assert_eq!(
        objects(&store, &f, 100).await,
        ["a.one", "b.three", "a.six"]
    );
    // With an action prefix as well.
    let f = AuditFilter {
        action: Some(Match::Prefix("a.".into())),
        ..window(Some("2026-01-01T10:15:00"), Some("2026-01-01T12:30:00"))
    };
    assert_eq!(objects(&store, &f, 100).await, ["a.two", "a.four", "a.six"]);
    store.close().await;
}

fn entry(action: &str) -> NewAuditEntry {
    // The object names the entry, so that a search's result reads as the trail's order.
    NewAuditEntry::new("test", action, action)
}

/// Appends the trail through the server's own path, in three transactions (one a batch), so the
/// running highest time crosses commits and a reopen.
async fn append_trail(url: &str) {
    let store = Store::open(url).await.unwrap();
    let mut tx = store.write().await.unwrap();
    tx.append_audit(TRAIL[0].0.into(), entry(TRAIL[0].1))
        .await
        .unwrap();
    tx.append_audit(TRAIL[1].0.into(), entry(TRAIL[1].1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.write().await.unwrap();
    let batch = TRAIL[2..5]
        .iter()
        .map(|(ts, a)| (ts.to_string(), entry(a)))
        .collect();
    tx.append_audit_batch(batch).await.unwrap();
    tx.commit().await.unwrap();
    store.close().await;
    let store = Store::open(url).await.unwrap();
    for (ts, a) in &TRAIL[5..] {
        let mut tx = store.write().await.unwrap();
        tx.append_audit(ts.to_string(), entry(a)).await.unwrap();
        tx.commit().await.unwrap();
    }
    store.close().await;
}

#[tokio::test]
async fn since_finds_every_entry_across_clock_steps_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    append_trail(&url).await;
    check_searches(&url).await;
}

#[tokio::test]
async fn since_finds_every_entry_across_clock_steps_postgres() {
    crate::approvals::with_scratch_pg("cofre_since", |url| async move {
        append_trail(&url).await;
        check_searches(&url).await;
    })
    .await;
}

/// A trail written by a server from before migration 0029 (the schema stopped at 0028, the rows
/// inserted as that server did), then opened by this one: the migration fills in the running
/// highest time, and new entries carry on from it.
#[tokio::test]
async fn a_trail_from_before_the_migration_is_searched_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    sqlx::any::install_default_drivers();
    let mut old = sqlx::migrate!("../cofre-store/migrations/sqlite");
    old.migrations = Cow::Owned(
        old.migrations
            .iter()
            .filter(|m| m.version <= 28)
            .cloned()
            .collect(),
    );
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    old.run(&pool).await.unwrap();
    let (mut prev, mut seq) = ("0".repeat(64), 0i64);
    for (ts, a) in &TRAIL[..6] {
        let r = cofre_core::audit::AuditRecord::chain(seq, &prev, ts.to_string(), entry(a));
        sqlx::query(
            "INSERT INTO audit_log (seq, ts, actor, action, object, outcome, details, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(r.seq)
        .bind(&r.ts)
        .bind(&r.actor)
        .bind(&r.action)
        .bind(&r.object)
        .bind(&r.outcome)
        .bind(r.details.to_string())
        .bind(&r.prev_hash)
        .bind(&r.hash)
        .execute(&pool)
        .await
        .unwrap();
        (prev, seq) = (r.hash, r.seq);
    }
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&prev)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    // Opening migrates; the last entry is appended by this server.
    let store = Store::open(&url).await.unwrap();
    let mut tx = store.write().await.unwrap();
    tx.append_audit(TRAIL[6].0.into(), entry(TRAIL[6].1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    store.close().await;
    check_searches(&url).await;
}
