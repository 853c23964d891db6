//! Access requests and four-eye approvals through the services, with an injectable clock: levels,
//! self-approval, one person once, deny, expiry, most-restrictive-wins, hours and days, grants that
//! end, emergency access, and concurrent decisions on SQLite and PostgreSQL.

use cofre_app::config::ServerConfig;
use cofre_app::services::{App, Principal};
use cofre_core::approval::Verdict;
use cofre_core::role::{Mode, Role};
use cofre_proto::requests::CreateAccessRequest;
use cofre_proto::{CreatePolicyRequest, CreateTargetRequest, RevealRequest, SecretString};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Monday 2026-11-23 10:00 UTC.
const MONDAY_10: i64 = 1_795_428_000;

#[derive(Clone, Copy, Debug)]
enum Db {
    Sqlite,
    Postgres,
}

struct World {
    app: Arc<App>,
    now: Arc<AtomicI64>,
    admin: Principal,
    _dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.pg.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(pg_exec(
                    &admin_url,
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ));
            })
            .join();
        }
    }
}

pub(crate) fn pg_admin_url() -> String {
    std::env::var("COFRE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Runs `body` on a new, empty PostgreSQL database (named `PREFIX_random`), dropped afterwards.
pub(crate) async fn with_scratch_pg<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let admin_url = pg_admin_url();
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    pg_exec(&admin_url, &format!("CREATE DATABASE {name}")).await;
    let base = admin_url.rsplit_once('/').unwrap().0;
    body(format!("{base}/{name}")).await;
    pg_exec(&admin_url, &format!("DROP DATABASE {name} WITH (FORCE)")).await;
}

pub(crate) async fn pg_exec(url: &str, sql: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(url).await.expect("connect");
    sqlx::raw_sql(sql).execute(&mut c).await.expect(sql);
    let _ = c.close().await;
}

fn principal(name: &str, role: Role, groups: &[&str]) -> Principal {
    Principal::for_tests(0, name, role, groups, Mode::OnPrem)
}

impl World {
    async fn new(db: Db) -> World {
        World::with_config(db, |_| {}).await
    }

    async fn with_config(db: Db, f: impl FnOnce(&mut ServerConfig)) -> World {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig {
            data_dir: dir.path().join("data"),
            ..ServerConfig::default()
        };
        f(&mut config);
        config.approvals.request_timeout_seconds = 600;
        // These tests are about access requests; dual control over the setup is tested apart.
        config.governance.dual_control = cofre_core::governance::DualControl::Off;
        let mut pg = None;
        if let Db::Postgres = db {
            let admin_url = pg_admin_url();
            let name = format!("cofre_svc_{}", uuid::Uuid::new_v4().simple());
            pg_exec(&admin_url, &format!("CREATE DATABASE {name}")).await;
            let base = admin_url.rsplit_once('/').unwrap().0;
            config.database_url = Some(format!("{base}/{name}"));
            pg = Some((admin_url, name));
        }
        let (app, now) = crate::app_at(config, MONDAY_10).await;
        let admin = principal("admin", Role::Admin, &[]);
        let w = World {
            app,
            now,
            admin,
            _dir: dir,
            pg,
        };
        for (name, role, groups) in [
            ("alice", "user", vec!["ops"]),
            ("lea", "approver", vec!["leads"]),
            ("leo", "approver", vec!["leads"]),
            ("sam", "approver", vec!["security"]),
            ("both", "approver", vec!["leads", "security"]),
            ("boss", "admin", vec!["ops", "leads"]),
            ("uma", "user", vec!["leads"]),
        ] {
            let groups: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
            w.app
                .accounts()
                .create_user(&w.admin, name, role, &groups, None)
                .await
                .unwrap();
        }
        w.app
            .vault()
            .create_target(
                &w.admin,
                &CreateTargetRequest {
                    name: "db01".into(),
                    host: "127.0.0.1".into(),
                    port: Some(22),
                    protocol: None,
                    tags: vec!["prod".into()],
                },
            )
            .await
            .unwrap();
        w.app
            .vault()
            .put_credential(
                &w.admin,
                "db01",
                "root",
                Some(&SecretString::new("s3cret-root".into())),
                None,
                false,
            )
            .await
            .unwrap();
        w
    }

    fn at(&self, unix: i64) {
        self.now.store(unix, Ordering::SeqCst);
    }

    fn advance(&self, secs: i64) {
        self.now.fetch_add(secs, Ordering::SeqCst);
    }

    async fn policy(&self, name: &str, outcome: &str, f: impl FnOnce(&mut CreatePolicyRequest)) {
        let mut p = CreatePolicyRequest {
            name: name.into(),
            group: "ops".into(),
            targets: vec!["tag:prod".into()],
            allow: vec!["session".into(), "reveal".into()],
            outcome: outcome.into(),
            ..Default::default()
        };
        f(&mut p);
        self.app
            .vault()
            .create_policy(&self.admin, &p)
            .await
            .unwrap();
    }

    async fn request(
        &self,
        who: &Principal,
        duration: &str,
    ) -> Result<String, cofre_app::error::Error> {
        self.app
            .approvals()
            .create_request(
                who,
                &CreateAccessRequest {
                    target: "db01".into(),
                    account: "root".into(),
                    access: None,
                    reason: "CHG-1234 patching".into(),
                    start: None,
                    duration: Some(duration.into()),
                },
            )
            .await
            .map(|r| r.id)
    }

    async fn reveal(&self, who: &Principal) -> Result<String, cofre_app::error::Error> {
        self.app
            .vault()
            .reveal(who, "db01", "root", &RevealRequest::default())
            .await
            .map(|r| r.secret.expose().to_owned())
    }

    async fn state(&self, id: &str) -> String {
        self.app
            .approvals()
            .get_request(&self.admin, id)
            .await
            .unwrap()
            .state
    }
}

fn alice() -> Principal {
    principal("alice", Role::User, &["ops"])
}
fn lea() -> Principal {
    principal("lea", Role::Approver, &["leads"])
}
fn leo() -> Principal {
    principal("leo", Role::Approver, &["leads"])
}
fn sam() -> Principal {
    principal("sam", Role::Approver, &["security"])
}
fn both() -> Principal {
    principal("both", Role::Approver, &["leads", "security"])
}

async fn two_level_world(db: Db) -> World {
    let w = World::new(db).await;
    w.policy("prod-root", "approve", |p| {
        p.levels = Some("leads:1,security:1".into());
        p.max_duration = Some("4h".into());
    })
    .await;
    w
}

#[tokio::test(flavor = "multi_thread")]
async fn two_levels_in_order_then_reveal_until_revoked() {
    let w = two_level_world(Db::Sqlite).await;
    let e = w.reveal(&alice()).await.unwrap_err();
    assert_eq!(e.code.as_str(), "approval_required", "{e:?}");
    let id = w.request(&alice(), "2h").await.unwrap();
    assert_eq!(w.state(&id).await, "pending");
    // Security may not decide before the leads.
    let e = w
        .app
        .approvals()
        .decide_request(&sam(), &id, Verdict::Approve, None)
        .await
        .unwrap_err();
    assert_eq!(e.code.as_str(), "not_an_approver_here", "{e:?}");
    w.app
        .approvals()
        .decide_request(&both(), &id, Verdict::Approve, Some("ok"))
        .await
        .unwrap();
    // One person counts once, even when also in the next level's group.
    let e = w
        .app
        .approvals()
        .decide_request(&both(), &id, Verdict::Approve, None)
        .await
        .unwrap_err();
    assert_eq!(e.code.as_str(), "already_decided");
    assert_eq!(w.state(&id).await, "pending");
    assert!(w.reveal(&alice()).await.is_err(), "not approved yet");
    let info = w
        .app
        .approvals()
        .decide_request(&sam(), &id, Verdict::Approve, Some("fine"))
        .await
        .unwrap();
    assert_eq!(info.state, "approved");
    assert!(info.grant_active);
    assert_eq!(info.decisions.len(), 2);
    assert_eq!(w.reveal(&alice()).await.unwrap(), "s3cret-root");
    // Someone else in ops has no grant.
    let boss = principal("boss", Role::Admin, &["ops", "leads"]);
    assert_eq!(
        w.reveal(&boss).await.unwrap_err().code.as_str(),
        "approval_required"
    );
    w.app
        .approvals()
        .revoke_grant(&w.admin, &id, Some("done early"))
        .await
        .unwrap();
    assert_eq!(w.state(&id).await, "revoked");
    assert_eq!(
        w.reveal(&alice()).await.unwrap_err().code.as_str(),
        "approval_required"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_requester_never_approves_even_as_an_admin_in_the_group() {
    let w = World::new(Db::Sqlite).await;
    w.policy("prod-root", "approve", |p| {
        p.levels = Some("leads:1".into())
    })
    .await;
    let boss = principal("boss", Role::Admin, &["ops", "leads"]);
    let id = w.request(&boss, "1h").await.unwrap();
    let e = w
        .app
        .approvals()
        .decide_request(&boss, &id, Verdict::Approve, None)
        .await
        .unwrap_err();
    assert_eq!(e.code.as_str(), "own_request");
    // A user (not an approver role) in the leads group may not decide either.
    let uma = principal("uma", Role::User, &["leads"]);
    assert_eq!(
        w.app
            .approvals()
            .decide_request(&uma, &id, Verdict::Approve, None)
            .await
            .unwrap_err()
            .code
            .as_str(),
        "forbidden"
    );
    assert_eq!(w.state(&id).await, "pending");
    w.app
        .approvals()
        .decide_request(&lea(), &id, Verdict::Approve, None)
        .await
        .unwrap();
    assert_eq!(w.state(&id).await, "approved");
    assert_eq!(w.reveal(&boss).await.unwrap(), "s3cret-root");
}

#[tokio::test(flavor = "multi_thread")]
async fn n_distinct_approvers_and_one_refusal_ends_it() {
    let w = World::new(Db::Sqlite).await;
    w.policy("prod-root", "approve", |p| {
        p.levels = Some("leads:2".into())
    })
    .await;
    let id = w.request(&alice(), "1h").await.unwrap();
    w.app
        .approvals()
        .decide_request(&lea(), &id, Verdict::Approve, None)
        .await
        .unwrap();
    assert_eq!(
        w.app
            .approvals()
            .decide_request(&lea(), &id, Verdict::Approve, None)
            .await
            .unwrap_err()
            .code
            .as_str(),
        "already_decided"
    );
    assert_eq!(w.state(&id).await, "pending", "one person counted once");
    let e = w
        .app
        .approvals()
        .decide_request(&leo(), &id, Verdict::Deny, None)
        .await
        .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("comment"), "a denial says why");
    let info = w
        .app
        .approvals()
        .decide_request(&leo(), &id, Verdict::Deny, Some("not during the freeze"))
        .await
        .unwrap();
    assert_eq!(info.state, "denied");
    assert_eq!(
        w.reveal(&alice()).await.unwrap_err().code.as_str(),
        "approval_required"
    );
    let both = both();
    assert_eq!(
        w.app
            .approvals()
            .decide_request(&both, &id, Verdict::Approve, None)
            .await
            .unwrap_err()
            .code
            .as_str(),
        "request_closed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undecided_request_expires_and_a_late_decision_is_refused() {
    let w = World::new(Db::Sqlite).await;
    w.policy("prod-root", "approve", |p| {
        p.levels = Some("leads:1".into())
    })
    .await;
    let id = w.request(&alice(), "1h").await.unwrap();
    w.advance(599);
    assert_eq!(w.app.approvals().expire_due_requests().await.unwrap(), 0);
    w.advance(1);
    assert_eq!(w.app.approvals().expire_due_requests().await.unwrap(), 1);
    assert_eq!(w.state(&id).await, "expired");
    let e = w
        .app
        .approvals()
        .decide_request(&lea(), &id, Verdict::Approve, None)
        .await
        .unwrap_err();
    assert_eq!(e.code.as_str(), "request_closed");
    // A decision arriving after the deadline but before the sweep also finds it expired.
    let id = w.request(&alice(), "1h").await.unwrap();
    w.advance(700);
    let e = w
        .app
        .approvals()
        .decide_request(&lea(), &id, Verdict::Approve, None)
        .await
        .unwrap_err();
    assert_eq!(e.code.as_str(), "request_closed");
    assert_eq!(w.state(&id).await, "expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_grant_ends_with_its_window() {
    let w = World::new(Db::Sqlite).await;
    w.policy("prod-root", "approve", |p| {
        p.levels = Some("leads:1".into())
    })
    .await;
    let id = w.request(&alice(), "30m").await.unwrap();
    w.app
        .approvals()
        .decide_request(&lea(), &id, Verdict::Approve, None)
        .await
        .unwrap();
    w.advance(29 * 60);
    assert!(w.reveal(&alice()).await.is_ok());
    w.advance(60);
    assert_eq!(
        w.reveal(&alice()).await.unwrap_err().code.as_str(),
        "approval_required"
    );
    let grants = w
        .app
        .approvals()
        .list_requests(&alice(), &Default::default(), true)
        .await
        .unwrap();
    assert!(
        grants.items.is_empty(),
        "an ended grant is not listed as a grant"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn most_restrictive_wins_with_hours_days_and_duration() {
    let w = World::new(Db::Sqlite).await;
    // A loose policy alone lets alice reveal at once.
    w.policy("loose", "allow", |p| p.targets = vec!["*".into()])
        .await;
    assert_eq!(w.reveal(&alice()).await.unwrap(), "s3cret-root");
    // A stricter one on the same target wins, with its limits.
    w.policy("strict", "approve", |p| {
        p.levels = Some("leads:1".into());
        p.max_duration = Some("2h".into());
        p.hours = Some("08:00-20:00".into());
        p.days = Some("mon-fri".into());
    })
    .await;
    assert_eq!(
        w.reveal(&alice()).await.unwrap_err().code.as_str(),
        "approval_required"
    );
    // Longer than the policy's maximum.
    let e = w.request(&alice(), "3h").await.unwrap_err();
    assert_eq!(e.field.as_deref(), Some("duration"), "{e:?}");
    // A window that runs past 20:00 is outside the policy's hours.
    w.at(MONDAY_10 + 9 * 3600); // 19:00
    let e = w.request(&alice(), "2h").await.unwrap_err();
    assert_eq!(e.field.as_deref(), Some("start"), "{e:?}");
    assert!(e.message.contains("08:00-20:00"), "{}", e.message);
    w.at(MONDAY_10);
    let id = w.request(&alice(), "2h").await.unwrap();
    w.app
        .approvals()
        .decide_request(&lea(), &id, Verdict::Approve, None)
        .await
        .unwrap();
    assert!(w.reveal(&alice()).await.is_ok());
    // Out of hours, even the loose policy does not let anyone in.
    w.at(MONDAY_10 + 11 * 3600); // 21:00
    let e = w.reveal(&alice()).await.unwrap_err();
    assert_eq!(e.code.as_str(), "outside_policy_hours", "{e:?}");
    // Saturday 10:00: not a weekday.
    w.at(MONDAY_10 + 5 * 86400);
    assert_eq!(
        w.reveal(&alice()).await.unwrap_err().code.as_str(),
        "outside_policy_hours"
    );
    // Requests that need no approval are refused with a reason.
    let w2 = World::new(Db::Sqlite).await;
    w2.policy("loose", "allow", |_| {}).await;
    assert_eq!(
        w2.request(&alice(), "1h").await.unwrap_err().code.as_str(),
        "no_approval_needed"
    );
}

/// `[instance] time_zone = "Europe/Lisbon"`: a policy's 08:00-20:00 is Lisbon's, so the same
/// UTC hour is outside in winter time and inside from the day summer time begins (2026-03-29).
#[tokio::test(flavor = "multi_thread")]
async fn policy_hours_follow_the_zone_across_daylight_saving() {
    let lisbon = cofre_core::when::Zone::parse("time_zone", "Europe/Lisbon").unwrap();
    let w = World::with_config(Db::Sqlite, |c| c.instance.time_zone = lisbon).await;
    w.policy("office", "allow", |p| p.hours = Some("08:00-20:00".into()))
        .await;
    // Saturday 2026-03-28 07:30 UTC: 07:30 in Lisbon.
    w.at(1_774_683_000);
    let e = w.reveal(&alice()).await.unwrap_err();
    assert_eq!(e.code.as_str(), "outside_policy_hours", "{e:?}");
    // Sunday 2026-03-29 07:30 UTC: 08:30 in Lisbon (summer time since 01:00 UTC).
    w.at(1_774_769_400);
    assert_eq!(w.reveal(&alice()).await.unwrap(), "s3cret-root");
    // 19:30 UTC that Sunday is 20:30 in Lisbon: outside again.
    w.at(1_774_769_400 + 12 * 3600);
    let e = w.reveal(&alice()).await.unwrap_err();
    assert_eq!(e.code.as_str(), "outside_policy_hours", "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn emergency_only_where_allowed_and_reviewed_by_someone_else() {
    let w = World::new(Db::Sqlite).await;
    w.policy("prod-root", "approve", |p| {
        p.levels = Some("leads:1".into())
    })
    .await;
    let req = CreateAccessRequest {
        target: "db01".into(),
        account: "root".into(),
        access: None,
        reason: "outage INC-9".into(),
        start: None,
        duration: Some("1h".into()),
    };
    let e = w
        .app
        .approvals()
        .create_emergency_request(&alice(), &req)
        .await
        .unwrap_err();
    assert_eq!(e.code.as_str(), "emergency_not_allowed");
    let w = World::new(Db::Sqlite).await;
    w.policy("prod-root", "approve", |p| {
        p.levels = Some("leads:1".into());
        p.emergency = true;
    })
    .await;
    let info = w
        .app
        .approvals()
        .create_emergency_request(&alice(), &req)
        .await
        .unwrap();
    assert_eq!(info.state, "approved");
    assert!(info.emergency && info.review_pending);
    assert!(w.reveal(&alice()).await.is_ok());
    let e = w
        .app
        .approvals()
        .review_request(&alice(), &info.id, Some("fine by me"))
        .await
        .unwrap_err();
    assert_eq!(e.code.as_str(), "forbidden", "a user does not review");
    let r = w
        .app
        .approvals()
        .review_request(&lea(), &info.id, Some("outage confirmed"))
        .await
        .unwrap();
    assert!(!r.review_pending);
    assert_eq!(r.review.unwrap().by, "lea");
    assert_eq!(
        w.app
            .approvals()
            .review_request(&leo(), &info.id, Some("again"))
            .await
            .unwrap_err()
            .code
            .as_str(),
        "already_reviewed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn visibility_and_pending_lists() {
    let w = two_level_world(Db::Sqlite).await;
    let id = w.request(&alice(), "1h").await.unwrap();
    let pending = |p: Principal| {
        let app = w.app.clone();
        async move {
            app.approvals()
                .list_requests(
                    &p,
                    &cofre_proto::requests::RequestListQuery {
                        pending: Some(true),
                        ..Default::default()
                    },
                    false,
                )
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(pending(lea()).await, vec![id.clone()]);
    assert!(pending(sam()).await.is_empty(), "level 2 is not asked yet");
    assert!(pending(alice()).await.is_empty(), "never one's own");
    let stranger = principal("uma", Role::User, &["leads"]);
    assert_eq!(
        w.app
            .approvals()
            .get_request(&stranger, &id)
            .await
            .unwrap_err()
            .code
            .as_str(),
        "not_found"
    );
    w.app
        .approvals()
        .decide_request(&lea(), &id, Verdict::Approve, None)
        .await
        .unwrap();
    assert!(pending(lea()).await.is_empty());
    assert_eq!(pending(sam()).await, vec![id.clone()]);
}

/// lea and leo approve `id` from two tasks at the same moment.
async fn two_at_once(
    app: &Arc<App>,
    id: &str,
) -> (
    Result<cofre_proto::requests::RequestInfo, cofre_app::error::Error>,
    Result<cofre_proto::requests::RequestInfo, cofre_app::error::Error>,
) {
    let start = Arc::new(tokio::sync::Barrier::new(2));
    let spawn = |who: Principal| {
        let (app, id, start) = (app.clone(), id.to_owned(), start.clone());
        tokio::spawn(async move {
            start.wait().await;
            app.approvals()
                .decide_request(&who, &id, Verdict::Approve, None)
                .await
        })
    };
    let (a, b) = (spawn(lea()), spawn(leo()));
    (a.await.unwrap(), b.await.unwrap())
}

async fn concurrent_decisions(db: Db) {
    let w = World::new(db).await;
    w.policy("one", "approve", |p| p.levels = Some("leads:1".into()))
        .await;
    for round in 0..5 {
        // Two approvers at the same moment on a one-approval level: one grant, one refusal.
        let id = w.request(&alice(), "1h").await.unwrap();
        let (a, b) = two_at_once(&w.app, &id).await;
        assert!(
            a.is_ok() ^ b.is_ok(),
            "round {round}: exactly one decision completes the level: {a:?} {b:?}"
        );
        let loser = if a.is_ok() { b } else { a };
        assert_eq!(loser.unwrap_err().code.as_str(), "request_closed");
        let r = w.app.approvals().get_request(&w.admin, &id).await.unwrap();
        assert_eq!(r.state, "approved");
        assert_eq!(r.decisions.len(), 1, "round {round}: {:?}", r.decisions);
        w.app
            .approvals()
            .revoke_grant(&w.admin, &id, None)
            .await
            .unwrap();
    }
    let w = World::new(db).await;
    w.policy("two", "approve", |p| p.levels = Some("leads:2".into()))
        .await;
    for round in 0..5 {
        // Two approvers at once on a two-approval level: both counted, none lost.
        let id = w.request(&alice(), "1h").await.unwrap();
        let (a, b) = two_at_once(&w.app, &id).await;
        a.unwrap();
        b.unwrap();
        let r = w.app.approvals().get_request(&w.admin, &id).await.unwrap();
        assert_eq!(r.state, "approved", "round {round}");
        assert_eq!(r.decisions.len(), 2);
        w.app
            .approvals()
            .revoke_grant(&w.admin, &id, None)
            .await
            .unwrap();
    }
    // A decision racing the expiry sweep (this level needs two): the decision is either counted
    // and kept (whatever the sweep then does), or refused, reported, and absent.
    for round in 0..8 {
        let id = w.request(&alice(), "1h").await.unwrap();
        w.advance(599);
        let sweeper = {
            let app = w.app.clone();
            let now = w.now.clone();
            tokio::spawn(async move {
                // The deadline passes while the decision is on its way.
                now.fetch_add(1, Ordering::SeqCst);
                app.approvals().expire_due_requests().await.unwrap()
            })
        };
        let decided = w
            .app
            .approvals()
            .decide_request(&leo(), &id, Verdict::Approve, None)
            .await;
        sweeper.await.unwrap();
        w.app.approvals().expire_due_requests().await.unwrap();
        let r = w.app.approvals().get_request(&w.admin, &id).await.unwrap();
        assert_eq!(r.state, "expired", "round {round}: the deadline has passed");
        let recorded: Vec<&str> = r.decisions.iter().map(|d| d.approver.as_str()).collect();
        match &decided {
            Ok(_) => assert_eq!(
                recorded,
                vec!["leo"],
                "round {round}: an accepted decision is kept"
            ),
            Err(e) => {
                assert_eq!(e.code.as_str(), "request_closed", "round {round}");
                assert!(
                    recorded.is_empty(),
                    "round {round}: a refused decision leaves no trace"
                );
            }
        }
    }
    let verify = w.app.audit().verify_audit(&w.admin).await.unwrap();
    assert!(verify.intact, "{:?}", verify.first_broken);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_decisions_sqlite() {
    concurrent_decisions(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_decisions_postgres() {
    concurrent_decisions(Db::Postgres).await;
}
