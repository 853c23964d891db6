//! Offboarding: access can be taken back, and it ends at once. A removed key and a disabled user
//! can no longer open a gateway session, their live session ends within a second, their tokens
//! fail; disabled or deleted targets and credentials refuse reveal and sessions; a removed group
//! member loses what the group granted; backup targets and jobs are removed cleanly. The gateway
//! tests need root (sshd) and skip with a printed reason without it.

use crate::gateway::{askpass, find_entry, setup, with_askpass, Gw, Running};
use crate::harness::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

/// A shell of alice's through the gateway, up and answering.
fn live_shell(gw: &Gw) -> Running {
    let mut ssh = Running::spawn(gw.ssh("alice:root@db01", &["-tt"], None), "ssh -tt (shell)");
    ssh.send("echo ready-$((40+2))\n");
    ssh.wait_for_stdout("ready-42", Duration::from_secs(30));
    ssh
}

/// Runs `take_away` and waits for the live shell to end: within a second, and the user is told why.
fn ends_within_a_second(ssh: &mut Running, why: &str, take_away: impl FnOnce()) {
    take_away();
    let done = Instant::now();
    let status = ssh.wait(Duration::from_secs(10));
    let took = done.elapsed();
    assert!(
        status.is_some(),
        "the session still runs: {}",
        ssh.describe()
    );
    assert!(
        took < Duration::from_secs(1),
        "the live session should end within a second, took {took:?}"
    );
    let seen = format!("{}{}", ssh.stdout(), ssh.stderr());
    assert!(
        seen.contains(why),
        "the user sees {why:?}: {}",
        ssh.describe()
    );
}

/// `ssh ... 'echo through'` with alice's key: Some(true) it ran, Some(false) refused.
fn key_login_works(gw: &Gw) -> bool {
    let out = gw.run_ssh("alice:root@db01", &[], Some("echo through"), None);
    match out.code {
        Some(0) => {
            assert_eq!(out.stdout, "through\n");
            true
        }
        Some(255) => {
            assert!(out.stderr.contains("Permission denied"), "{out:?}");
            false
        }
        _ => panic!("neither ran nor refused: {out:?}"),
    }
}

fn password_login_works(gw: &Gw) -> bool {
    let script = askpass(&gw.keys, &[("Password", &gw.alice_password)]);
    let no_key = [
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PreferredAuthentications=keyboard-interactive",
        "-o",
        "BatchMode=no",
        "-o",
        "KbdInteractiveAuthentication=yes",
    ];
    let mut cmd: Command = gw.ssh("alice:root@db01", &no_key, Some("echo through"));
    with_askpass(&mut cmd, &script);
    let out = run_command(cmd, None, "ssh with a password");
    match out.code {
        Some(0) => true,
        Some(255) => {
            assert!(out.stderr.contains("Permission denied"), "{out:?}");
            false
        }
        _ => panic!("neither ran nor refused: {out:?}"),
    }
}

fn whoami_status(gw: &Gw, token: &str) -> u16 {
    gw.server
        .api()
        .get("/api/v1/auth/whoami", Some(token))
        .status
}

fn removed_key_and_disabled_user(backend: Backend) {
    let Some(gw) = setup(backend, Some("allow")) else {
        return;
    };
    let fingerprint = ssh_fingerprint(&gw.keys.join("alice_key.pub"));
    let key_file = gw.keys.join("alice_key.pub");
    let key_file = key_file.to_str().expect("path");

    // A removed key: the live session it opened ends, and it no longer logs in.
    let mut ssh = live_shell(&gw);
    ends_within_a_second(&mut ssh, &format!("SSH key {fingerprint} removed"), || {
        gw.admin
            .ok(&["user", "key", "remove", "alice", &fingerprint])
            .assert_stdout_contains("removed key");
    });
    assert!(!key_login_works(&gw), "a removed key is refused");
    gw.admin
        .fail(&["user", "key", "remove", "alice", &fingerprint])
        .assert_stderr_contains("not found");
    // Her own key, added and removed by herself.
    gw.alice.ok(&["user", "key", "add", "alice", key_file]);
    assert!(key_login_works(&gw));
    gw.alice
        .ok(&["user", "key", "remove", "alice", &fingerprint]);
    assert!(!key_login_works(&gw));
    gw.alice.ok(&["user", "key", "add", "alice", key_file]);

    // A disabled user: live session ended, tokens dead, key and password refused.
    let token = gw.alice.token();
    assert_eq!(whoami_status(&gw, &token), 200);
    let mut ssh = live_shell(&gw);
    ends_within_a_second(&mut ssh, "account alice disabled", || {
        gw.admin
            .ok(&["user", "disable", "alice", "--reason", "left the company"])
            .assert_stdout_contains("disabled alice");
    });
    assert_eq!(whoami_status(&gw, &token), 401, "her token fails");
    gw.alice.fail(&["whoami"]);
    assert!(!key_login_works(&gw), "a disabled user's key is refused");
    assert!(
        !password_login_works(&gw),
        "a disabled user's password is refused"
    );
    let api = gw.server.api();
    api.login("alice", &gw.alice_password)
        .assert_error(403, "account_disabled");
    let shown = gw
        .admin
        .ok(&["--output", "json", "user", "show", "alice"])
        .json();
    assert_eq!(shown["disabled"], true);
    assert_eq!(shown["disabled_reason"], "left the company");

    // Re-enabled: everything works again (the old token stays dead).
    gw.admin.ok(&["user", "enable", "alice"]);
    assert_eq!(whoami_status(&gw, &token), 401);
    assert!(key_login_works(&gw));
    assert!(password_login_works(&gw));
    gw.alice.login("alice", &gw.alice_password);
    gw.alice.ok(&["whoami"]);

    // A user with history is never erased.
    gw.admin
        .fail(&["user", "delete", "alice"])
        .assert_stderr_contains("disable it instead");

    let audit = gw.audit();
    let disable = find_entry(&audit, "user.disable", |e| e["object"] == "user:alice");
    assert_eq!(disable["actor"], "admin");
    assert_eq!(disable["details"]["reason"], "left the company");
    assert_eq!(
        disable["details"]["sessions"].as_array().map(Vec::len),
        Some(1),
        "names the session it ended: {disable}"
    );
    find_entry(&audit, "user.enable", |e| e["object"] == "user:alice");
    let removals: Vec<&Value> = audit
        .iter()
        .filter(|e| e["action"] == "user.ssh_key_remove")
        .collect();
    assert_eq!(removals.len(), 2, "{removals:?}");
    assert_eq!(removals[0]["actor"], "admin");
    assert_eq!(removals[1]["actor"], "alice");
    // The refused password logins (API and gateway); a key offer is refused before any
    // signature, unaudited like any unknown key.
    let refused: Vec<&Value> = audit
        .iter()
        .filter(|e| {
            e["action"] == "auth.login_refused" && e["details"]["why"] == "account disabled"
        })
        .collect();
    // (ssh tries the password up to three times.)
    assert!(refused.len() >= 2, "{refused:?}");
    let out = gw.admin.ok(&["audit", "verify"]);
    out.assert_stdout_contains("intact");
}

#[test]
fn removed_key_and_disabled_user_sqlite() {
    removed_key_and_disabled_user(Backend::Sqlite);
}

#[test]
fn removed_key_and_disabled_user_postgres() {
    removed_key_and_disabled_user(Backend::Postgres);
}

/// Disabling a target or a credential, or taking alice out of the group whose policy allowed the
/// session, ends her live session at once and refuses the next one; enabling gives it back.
#[test]
fn disabled_target_credential_and_group_removal_end_sessions() {
    let Some(gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    let refused = |why: &str| {
        let out = gw.run_ssh("alice:root@db01", &[], Some("echo through"), None);
        assert_ne!(out.code, Some(0), "{out:?}");
        assert!(
            format!("{}{}", out.stdout, out.stderr).contains(why),
            "{why:?}: {out:?}"
        );
    };

    let mut ssh = live_shell(&gw);
    ends_within_a_second(&mut ssh, "target db01 disabled", || {
        gw.admin.ok(&["target", "disable", "db01"]);
    });
    refused("target db01 is disabled");
    gw.admin
        .fail(&["target", "disable", "db01"])
        .assert_stderr_contains("already disabled");
    let listed = gw.admin.ok(&["target", "list"]).stdout;
    assert!(listed.contains("disabled"), "{listed}");
    gw.admin.ok(&["target", "enable", "db01"]);
    assert!(key_login_works(&gw));

    let mut ssh = live_shell(&gw);
    ends_within_a_second(&mut ssh, "credential db01/root disabled", || {
        gw.admin.ok(&["credential", "disable", "db01", "root"]);
    });
    refused("credential db01/root is disabled");
    gw.admin.ok(&["credential", "enable", "db01", "root"]);
    assert!(key_login_works(&gw));

    let mut ssh = live_shell(&gw);
    ends_within_a_second(&mut ssh, "left group ops", || {
        gw.admin
            .ok(&["group", "remove-member", "ops", "alice"])
            .assert_stdout_contains("removed alice from ops");
    });
    refused("no policy grants you sessions on db01");
    gw.admin.ok(&["group", "add-member", "ops", "alice"]);
    assert!(key_login_works(&gw));

    let audit = gw.audit();
    for (action, object) in [
        ("target.disable", "target:db01"),
        ("target.enable", "target:db01"),
        ("credential.disable", "credential:db01/root"),
        ("credential.enable", "credential:db01/root"),
        ("group.remove_member", "group:ops"),
    ] {
        find_entry(&audit, action, |e| e["object"] == object);
    }
    find_entry(&audit, "session.refused", |e| {
        e["details"]["why"] == "target disabled"
    });
}

/// The API side, on both databases: group membership, disabled and deleted credentials and
/// targets, user deletion, the last admin, a locked user's tokens, backup targets and jobs.
fn api_offboarding(backend: Backend) {
    let inst = Instance::new(backend);
    let server = inst.start();
    let api = server.api();
    let (admin, _) = admin_token(&server);
    let post = |path: &str, body: Value| api.post(path, Some(&admin), body);
    let delete = |path: &str| api.call("DELETE", path, Some(&admin), Body::None);

    post(
        "/api/v1/targets",
        json!({"name": "db01", "host": "10.0.0.5", "tags": ["prod"]}),
    )
    .assert_ok();
    post(
        "/api/v1/targets/db01/credentials",
        json!({"account": "root", "password": "old-secret-1"}),
    )
    .assert_ok();
    post("/api/v1/groups", json!({"name": "ops"})).assert_ok();
    post(
        "/api/v1/policies",
        json!({"name": "ops-prod", "group": "ops", "targets": ["tag:prod"], "allow": ["reveal"], "outcome": "allow"}),
    )
    .assert_ok();
    let (bob, bob_pw) = api.make_user(&admin, "bob", "user", &["ops"]);
    let reveal = |token: &str| {
        api.post(
            "/api/v1/targets/db01/credentials/root/reveal",
            Some(token),
            json!({}),
        )
    };
    assert_eq!(reveal(&bob).assert_ok().body["secret"], "old-secret-1");

    // Out of the group: the policy no longer applies, on the very next request.
    delete("/api/v1/groups/ops/members/bob").assert_ok();
    reveal(&bob).assert_error(403, "policy_denied");
    delete("/api/v1/groups/ops/members/bob").assert_error(404, "not_found");
    post("/api/v1/groups/ops/members", json!({"username": "bob"})).assert_ok();
    reveal(&bob).assert_ok();

    // Disabled credential, then disabled target: refused with a clear error, audited.
    post("/api/v1/targets/db01/credentials/root/disable", json!({})).assert_ok();
    let r = reveal(&bob);
    r.assert_error(403, "credential_disabled");
    assert!(
        r.text.contains("cofre credential enable db01 root"),
        "{}",
        r.text
    );
    post("/api/v1/targets/db01/credentials/root/enable", json!({})).assert_ok();
    post("/api/v1/targets/db01/disable", json!({})).assert_ok();
    reveal(&bob).assert_error(403, "target_disabled");
    let t = api.get("/api/v1/targets/db01", Some(&admin));
    assert_eq!(t.body["disabled"], true);
    post("/api/v1/targets/db01/enable", json!({})).assert_ok();
    post("/api/v1/targets/db01/enable", json!({})).assert_error(409, "not_disabled");
    reveal(&bob).assert_ok();

    // A deleted credential is gone by name; a new one of the same account starts afresh at
    // version 1 and never yields the old secret.
    delete("/api/v1/targets/db01/credentials/root").assert_ok();
    reveal(&bob).assert_error(404, "not_found");
    let listed = api.get("/api/v1/targets/db01/credentials", Some(&admin));
    assert_eq!(json_items(&listed.body).len(), 0, "{}", listed.text);
    post(
        "/api/v1/targets/db01/credentials",
        json!({"account": "root", "password": "new-secret-2"}),
    )
    .assert_ok();
    // The old one's history stays readable under the name its deletion recorded.
    let audit = json_items(&api.get("/api/v1/audit?limit=1000", Some(&admin)).body);
    let kept = audit
        .iter()
        .find(|e| e["action"] == "credential.delete")
        .and_then(|e| e["details"]["kept_as"].as_str())
        .expect("credential.delete names where the history is kept")
        .to_owned();
    assert!(kept.starts_with("root~deleted~"), "{kept}");
    let history = api.get(
        &format!("/api/v1/targets/db01/credentials/{kept}/history"),
        Some(&admin),
    );
    assert_eq!(json_items(&history.body).len(), 1, "{}", history.text);
    let r = api.post(
        &format!("/api/v1/targets/db01/credentials/{kept}/reveal"),
        Some(&bob),
        json!({}),
    );
    assert_eq!(
        r.status, 404,
        "a deleted credential is never revealed: {}",
        r.text
    );
    let r = reveal(&bob);
    assert_eq!(r.body["secret"], "new-secret-2");
    assert_eq!(r.body["version"], 1);
    let r = api.post(
        "/api/v1/targets/db01/credentials/root/reveal",
        Some(&bob),
        json!({"version": 2}),
    );
    assert_eq!(r.status, 404, "no old version comes back: {}", r.text);

    // A deleted target: gone from the list, its name free, nothing of it comes back.
    delete("/api/v1/targets/db01").assert_ok();
    assert_eq!(
        json_items(&api.get("/api/v1/targets", Some(&admin)).body).len(),
        0
    );
    // Answered like a target no policy grants: names cannot be probed.
    reveal(&bob).assert_error(403, "policy_denied");
    post(
        "/api/v1/targets",
        json!({"name": "db01", "host": "10.0.0.9", "tags": ["prod"]}),
    )
    .assert_ok();
    reveal(&bob).assert_error(404, "not_found");
    let creds = api.get("/api/v1/targets/db01/credentials", Some(&admin));
    assert_eq!(json_items(&creds.body).len(), 0, "{}", creds.text);

    // Deleting users: one that never acted goes; bob (who revealed) is refused; the last admin
    // is neither disabled nor deleted.
    api.create_user(&admin, "mistake", "user", &["ops"]);
    delete("/api/v1/users/mistake").assert_ok();
    api.get("/api/v1/users/mistake", Some(&admin))
        .assert_error(404, "not_found");
    let r = delete("/api/v1/users/bob");
    r.assert_error(409, "user_has_history");
    assert!(r.text.contains("disable it instead"), "{}", r.text);
    post("/api/v1/users/admin/disable", json!({"reason": "oops"})).assert_error(409, "last_admin");
    delete("/api/v1/users/admin").assert_error(409, "last_admin");
    post("/api/v1/users/bob/disable", json!({"reason": ""})).assert_error(400, "invalid_field");
    post("/api/v1/users/bob/disable", json!({"reason": "moved team"})).assert_ok();
    reveal(&bob).assert_error(401, "unauthenticated");
    post("/api/v1/users/bob/enable", json!({})).assert_ok();
    post("/api/v1/users/bob/enable", json!({})).assert_error(409, "not_disabled");

    // A locked user's tokens end. One address's failures only make that address wait; the
    // account locks when `lockout_sources` (10) addresses fail at once.
    let bob = api.login("bob", &bob_pw).assert_ok().body["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(api.get("/api/v1/auth/whoami", Some(&bob)).status, 200);
    for i in 0..10 {
        let from = server.api_from(&format!("127.0.1.{}", i + 1));
        for _ in 0..5 {
            assert_eq!(from.login("bob", "not-bobs-password").status, 401);
        }
        if i < 9 {
            assert_eq!(api.get("/api/v1/auth/whoami", Some(&bob)).status, 200);
        }
    }
    assert_eq!(
        api.get("/api/v1/auth/whoami", Some(&bob)).status,
        401,
        "locked: its tokens end"
    );

    // Backup targets and jobs: a target in use names its jobs; removed cleanly; names reusable.
    let dir = inst.path().join("offboard-backups");
    post(
        "/api/v1/backup/targets",
        json!({"name": "nas", "dir": dir.to_str().unwrap()}),
    )
    .assert_ok();
    post(
        "/api/v1/backup/jobs",
        json!({"name": "nightly", "kind": "system", "target": "nas", "schedule": "manual"}),
    )
    .assert_ok();
    let r = delete("/api/v1/backup/targets/nas");
    r.assert_error(409, "backup_target_in_use");
    assert!(r.text.contains("nightly"), "names the job: {}", r.text);
    delete("/api/v1/backup/jobs/nightly").assert_ok();
    delete("/api/v1/backup/jobs/nightly").assert_error(404, "not_found");
    api.post("/api/v1/backup/jobs/nightly/run", Some(&admin), json!({}))
        .assert_error(404, "not_found");
    delete("/api/v1/backup/targets/nas").assert_ok();
    let targets = api.get("/api/v1/backup/targets", Some(&admin));
    assert_eq!(
        targets.body.as_array().map(Vec::len),
        Some(0),
        "{}",
        targets.text
    );
    let status = api.get("/api/v1/backup/status", Some(&admin));
    assert!(!status.text.contains("nightly"), "{}", status.text);
    post(
        "/api/v1/backup/targets",
        json!({"name": "nas", "dir": dir.to_str().unwrap()}),
    )
    .assert_ok();

    let audit = json_items(&api.get("/api/v1/audit?limit=1000", Some(&admin)).body);
    for action in [
        "group.remove_member",
        "credential.disable",
        "credential.enable",
        "target.disable",
        "target.enable",
        "credential.delete",
        "target.delete",
        "user.delete",
        "user.disable",
        "user.enable",
        "backup.job_remove",
        "backup.target_remove",
    ] {
        assert!(
            audit.iter().any(|e| e["action"] == action),
            "{action} is audited"
        );
    }
    let verify = api.get("/api/v1/audit/verify", Some(&admin));
    assert_eq!(verify.body["intact"], true, "{}", verify.text);
}

#[test]
fn api_offboarding_sqlite() {
    api_offboarding(Backend::Sqlite);
}

#[test]
fn api_offboarding_postgres() {
    api_offboarding(Backend::Postgres);
}
