//! The audited reveal path under load: concurrent reveals share the audit writer's transactions
//! (group commit) yet each is answered only after its own entry committed, exactly once and in
//! the chain; a failing audit write refuses every reveal waiting on it; a revoked token or a
//! removed policy stops the very next reveal.

use crate::harness::*;
use serde_json::{json, Value};
use std::sync::Barrier;

const SECRET: &str = "s3cret-of-db01-root";
const REVEAL: &str = "/api/v1/targets/db01/credentials/root/reveal";

/// A server with target db01 (tag prod), credential root and the admin allowed to reveal it.
fn vault(backend: Backend) -> (Instance, Server, Cli, String) {
    let inst = Instance::new(backend);
    let server = inst.start();
    let (admin, password) = admin_cli(&inst, &server);
    admin.ok(&[
        "target", "add", "db01", "--host", "10.0.0.5", "--tag", "prod",
    ]);
    grant_admin_reveal(&admin, "allow");
    admin.ok_in(
        &["credential", "add", "db01", "root", "--password-stdin"],
        &format!("{SECRET}\n"),
    );
    (inst, server, admin, password)
}

fn reveal(api: &Api, token: &str, reason: &str) -> Resp {
    api.post(REVEAL, Some(token), json!({ "reason": reason }))
}

/// `threads` clients at once, `each` reveals apiece, every reason distinct; the answers.
fn burst(server: &Server, token: &str, threads: usize, each: usize, tag: &str) -> Vec<Resp> {
    let start = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let start = &start;
                s.spawn(move || {
                    let api = server.api();
                    start.wait();
                    (0..each)
                        .map(|i| reveal(&api, token, &format!("{tag}-{t}-{i}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a client thread"))
            .collect()
    })
}

fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn reveal_entries(admin: &Cli) -> Vec<Value> {
    parse_export(&admin.ok(&["audit", "export", "--format", "jsonl"]).stdout)
        .into_iter()
        .filter(|e| e["action"] == "credential.reveal")
        .collect()
}

fn concurrent_reveals_are_each_audited_once(backend: Backend) {
    let (inst, mut server, admin, password) = vault(backend);
    let token = admin.token();
    let before = server.api().get("/metrics", None).text;
    let (threads, each) = (32, 8);
    let answers = burst(&server, &token, threads, each, "burst");
    for a in &answers {
        a.assert_ok();
        assert_eq!(a.body["secret"], SECRET, "{}", a.text);
    }
    let after = server.api().get("/metrics", None).text;
    let commits = counter(&after, "cofre_audit_group_commits_total")
        - counter(&before, "cofre_audit_group_commits_total");
    let reveals = (threads * each) as f64;
    assert!(
        commits >= 1.0 && commits < reveals,
        "{reveals} concurrent reveals should share the audit writer's commits, took {commits}"
    );

    // Every answered reveal's entry survives a kill -9 at once after the last answer.
    server.kill9();
    let server = inst.start();
    let admin = Cli {
        server: Some(server.url.clone()),
        fingerprint: Some(server.fingerprint.clone()),
        ..admin
    };
    admin
        .login("admin", &password)
        .assert_stdout_contains("logged in as admin (admin)");
    let admin = Cli {
        server: None,
        fingerprint: None,
        ..admin
    };
    let entries = reveal_entries(&admin);
    for t in 0..threads {
        for i in 0..each {
            let reason = format!("burst-{t}-{i}");
            let n = entries
                .iter()
                .filter(|e| e["details"]["reason"] == reason.as_str())
                .count();
            assert_eq!(
                n, 1,
                "reveal {reason} should be in the trail once, is {n} times"
            );
        }
    }
    for e in &entries {
        assert_eq!(e["outcome"], "ok", "{e}");
        assert_eq!(e["object"], "credential:db01/root", "{e}");
    }
    let seqs: Vec<i64> = parse_export(&admin.ok(&["audit", "export", "--format", "jsonl"]).stdout)
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "the trail's sequence has no gap or repeat"
    );
    admin
        .ok(&["audit", "verify"])
        .assert_stdout_contains("audit chain intact");
}

#[test]
fn concurrent_reveals_are_each_audited_once_sqlite() {
    concurrent_reveals_are_each_audited_once(Backend::Sqlite);
}

#[test]
fn concurrent_reveals_are_each_audited_once_postgres() {
    concurrent_reveals_are_each_audited_once(Backend::Postgres);
}

/// What makes every insert into the trail fail, and what undoes it, as the database's owner would.
fn refuse_audit_sql(backend: Backend) -> (Vec<String>, Vec<String>) {
    match backend {
        Backend::Sqlite => (
            vec![
                "CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_log \
                  BEGIN SELECT RAISE(ABORT, 'the test refuses audit entries'); END"
                    .into(),
            ],
            vec!["DROP TRIGGER test_refuse_audit".into()],
        ),
        Backend::Postgres => (
            vec![
                "CREATE FUNCTION test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'the test refuses audit entries'; END $$"
                    .into(),
                "CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_log \
                 FOR EACH ROW EXECUTE FUNCTION test_refuse_audit()"
                    .into(),
            ],
            vec![
                "DROP TRIGGER test_refuse_audit ON audit_log".into(),
                "DROP FUNCTION test_refuse_audit()".into(),
            ],
        ),
    }
}

fn an_audit_failure_refuses_the_reveal(backend: Backend) {
    let (inst, server, admin, _) = vault(backend);
    let token = admin.token();
    let url = inst.db_url_for_tests();
    let (refuse, allow) = refuse_audit_sql(backend);
    sql_exec(&url, &refuse).expect("install the refusing trigger");

    // Alone and many at once (one failed batch answers all its waiters): never the secret.
    let mut answers = vec![reveal(&server.api(), &token, "refused-alone")];
    answers.extend(burst(&server, &token, 16, 2, "refused"));
    for a in &answers {
        a.assert_error(500, "internal");
        assert!(
            !a.text.contains(SECRET),
            "a reveal whose audit entry failed gave the secret: {}",
            a.text
        );
    }

    sql_exec(&url, &allow).expect("drop the refusing trigger");
    let ok = reveal(&server.api(), &token, "after");
    ok.assert_ok();
    assert_eq!(ok.body["secret"], SECRET);
    let entries = reveal_entries(&admin);
    assert!(
        entries.iter().all(|e| !e["details"]["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("refused")),
        "a refused reveal left an entry: {entries:?}"
    );
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["details"]["reason"] == "after")
            .count(),
        1
    );
    admin
        .ok(&["audit", "verify"])
        .assert_stdout_contains("audit chain intact");
}

#[test]
fn an_audit_failure_refuses_the_reveal_sqlite() {
    an_audit_failure_refuses_the_reveal(Backend::Sqlite);
}

#[test]
fn an_audit_failure_refuses_the_reveal_postgres() {
    an_audit_failure_refuses_the_reveal(Backend::Postgres);
}

fn revocation_stops_the_next_reveal(backend: Backend) {
    let (_inst, server, admin, password) = vault(backend);
    let api = server.api();
    // A second session of the admin's, beside the CLI's.
    let login = api.login("admin", &password);
    login.assert_ok();
    let token = login.body["token"].as_str().expect("token").to_owned();
    reveal(&api, &token, "before logout").assert_ok();
    api.post("/api/v1/auth/logout", Some(&token), json!({}))
        .assert_ok();
    let r = reveal(&api, &token, "after logout");
    r.assert_error(401, "unauthenticated");
    assert!(!r.text.contains(SECRET));

    let cli_token = admin.token();
    reveal(&api, &cli_token, "before policy removal").assert_ok();
    admin.ok(&["policy", "remove", "vault-prod"]);
    let r = reveal(&api, &cli_token, "after policy removal");
    r.assert_error(403, "policy_denied");
    assert!(!r.text.contains(SECRET));
}

#[test]
fn revocation_stops_the_next_reveal_sqlite() {
    revocation_stops_the_next_reveal(Backend::Sqlite);
}

#[test]
fn revocation_stops_the_next_reveal_postgres() {
    revocation_stops_the_next_reveal(Backend::Postgres);
}
