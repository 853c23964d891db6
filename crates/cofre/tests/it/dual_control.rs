//! Dual control and no impersonation (issue 10). A security tester, as one admin alone, reached
//! every secret four ways: approvers it made approved its own request; a group and an `allow *`
//! policy of its own; a reset password that came back to it; its own SSH key on another user's
//! account. Each is tried here and refused (or held for a second admin), and works once a second
//! admin approves. An instance with one admin shows the warning.

use crate::harness::*;
use serde_json::Value;

const SECRET: &str = "root-secret-dual-control-7f3a";

struct World {
    inst: Instance,
    server: Server,
    admin: Cli,
    /// The second admin (made while `admin` was alone, so that was `unilateral`).
    bob: Cli,
}

/// An instance with db01 (tag prod) and its root credential, `admin`, and a second admin `bob`.
/// `cooling_off_days` 0 lets bob count on admin's changes at once (otherwise he would wait the
/// cooling-off period, being admin's creation; `fresh_admins_do_not_count` tests that).
fn world(backend: Backend, cooling_off_days: u32) -> World {
    let inst = Instance::new(backend);
    let server = start_with_config(
        &inst,
        &format!("[governance]\ncooling_off_days = {cooling_off_days}\n"),
    );
    let (admin, _) = admin_cli(&inst, &server);
    admin.ok(&[
        "target", "add", "db01", "--host", "10.0.0.5", "--tag", "prod",
    ]);
    admin.ok_in(
        &["credential", "add", "db01", "root", "--password-stdin"],
        &format!("{SECRET}\n"),
    );
    let (bob, _, _) = add_user_cli(&inst, &server, &admin, "bob", "admin", &[]);
    World {
        inst,
        server,
        admin,
        bob,
    }
}

fn audit(cli: &Cli) -> Vec<Value> {
    parse_export(&cli.ok(&["audit", "export", "--format", "jsonl"]).stdout)
}

fn reveal(cli: &Cli) -> Out {
    cli.run(
        &[
            "credential",
            "reveal",
            "db01",
            "root",
            "--reason",
            "INC-1 dual",
        ],
        None,
    )
}

#[test]
fn one_admin_is_warned_and_acts_unilaterally() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    let shown = admin.ok(&["instance", "show"]);
    shown.assert_stdout_contains("WARNING: only one admin (admin)");
    shown.assert_stdout_contains("dual control: when-possible");
    // Alone, a widening change applies, but is audited `unilateral`.
    admin.ok(&["group", "add", "vault"]);
    admin
        .ok(&[
            "policy",
            "add",
            "all",
            "--group",
            "vault",
            "--targets",
            "*",
            "--allow",
            "reveal",
            "--outcome",
            "allow",
        ])
        .assert_stdout_contains("created policy all");
    let entries = audit(&admin);
    let created = entries
        .iter()
        .find(|e| e["action"] == "policy.create")
        .expect("policy.create audited");
    assert_eq!(created["outcome"], "unilateral", "{created}");
    assert!(
        server.stderr_text().contains("ALERT"),
        "a unilateral change raises an alert:\n{}",
        server.stderr_text()
    );
    // With a second admin, the warning goes.
    add_user_cli(&inst, &server, &admin, "bob", "admin", &[]);
    let shown = admin.ok(&["instance", "show"]);
    assert!(!shown.stdout.contains("WARNING"), "{}", shown.stdout);
    shown.assert_stdout_contains("admins: admin,bob");
}

/// Finding 1: approvers the requester made do not count on its requests (cooling off).
#[test]
fn approvers_made_by_the_requester_do_not_count() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    admin.ok(&[
        "target", "add", "db01", "--host", "10.0.0.5", "--tag", "prod",
    ]);
    admin.ok_in(
        &["credential", "add", "db01", "root", "--password-stdin"],
        &format!("{SECRET}\n"),
    );
    admin.ok(&["group", "add", "leads"]);
    admin.ok(&["group", "add", "vault"]);
    // Alone, so these apply (unilateral), one-time passwords included: the tester's situation.
    let (ap1, _, _) = add_user_cli(&inst, &server, &admin, "ap1", "approver", &["leads"]);
    admin.ok(&["group", "add-member", "vault", "admin"]);
    admin.ok(&[
        "policy",
        "add",
        "four-eyes",
        "--group",
        "vault",
        "--targets",
        "tag:prod",
        "--allow",
        "reveal",
        "--outcome",
        "approve",
        "--levels",
        "leads:1",
    ]);
    let id = admin
        .ok(&[
            "--output",
            "json",
            "request",
            "create",
            "--target",
            "db01",
            "--account",
            "root",
            "--reason",
            "INC-1",
        ])
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ap1.fail(&["request", "approve", &id])
        .assert_stderr_contains("cooling_off");
    let refused = reveal(&admin);
    assert_ne!(refused.code, Some(0), "{}", refused.all());
    assert!(!refused.all().contains(SECRET));
    let decided = audit(&admin)
        .into_iter()
        .find(|e| e["action"] == "request.decide")
        .expect("the refused decision is audited");
    assert_eq!(decided["outcome"], "denied", "{decided}");
}

/// Finding 1, the way that works: an approver proposed by admin is created only when a second
/// admin approves, and its one-time password goes to that admin, never to the proposer.
#[test]
fn new_approvers_wait_for_a_second_admin_who_gets_the_password() {
    let w = world(Backend::Sqlite, 0);
    w.admin.ok(&["group", "add", "leads"]);
    w.admin.ok(&["group", "add", "vault"]);
    w.admin.ok(&["group", "add-member", "vault", "admin"]);
    let held = w.admin.ok(&[
        "user", "add", "ap1", "--role", "approver", "--group", "leads",
    ]);
    assert!(
        !held.all().contains("one-time password"),
        "the proposer never sees the new user's password: {}",
        held.all()
    );
    let id = held_change(&held);
    w.admin
        .ok(&["change", "list", "--pending"])
        .assert_stdout_contains(&id);
    w.admin
        .fail(&["change", "approve", &id])
        .assert_stderr_contains("own_change");
    let approved = approve_held(&w.bob, &held);
    let otp = one_time_password(&approved);
    let ap1 = Cli::new(&w.inst, "ap1").at(&w.server);
    ap1.first_login("ap1", &otp, &new_password("ap1"))
        .assert_stdout_contains("logged in as ap1 (approver)");
    // The approve policy names leads now; it is held too, and approved by bob.
    let held = w.admin.ok(&[
        "policy",
        "add",
        "four-eyes",
        "--group",
        "vault",
        "--targets",
        "tag:prod",
        "--allow",
        "reveal",
        "--outcome",
        "approve",
        "--levels",
        "leads:1",
    ]);
    approve_held(&w.bob, &held);
    let id = w
        .admin
        .ok(&[
            "--output",
            "json",
            "request",
            "create",
            "--target",
            "db01",
            "--account",
            "root",
            "--reason",
            "INC-1",
        ])
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ap1.ok(&["request", "approve", &id]);
    assert_eq!(reveal(&w.admin).stdout, format!("{SECRET}\n"));
}

/// Finding 2: a group of one's own and an `allow *` policy wait for a second admin.
fn policy_and_group_are_held(backend: Backend) {
    let w = world(backend, 0);
    w.admin.ok(&["group", "add", "vault"]);
    // No policy names vault yet: joining it widens nothing and applies at once.
    w.admin
        .ok(&["group", "add-member", "vault", "admin"])
        .assert_stdout_contains("added admin to vault");
    let held = w.admin.ok(&[
        "policy",
        "add",
        "all",
        "--group",
        "vault",
        "--targets",
        "*",
        "--allow",
        "reveal",
        "--outcome",
        "allow",
    ]);
    let id = held_change(&held);
    w.bob
        .ok(&["change", "list", "--pending"])
        .assert_stdout_contains(&id);
    let refused = reveal(&w.admin);
    refused.assert_stderr_contains("policy_denied");
    w.admin
        .fail(&["change", "approve", &id])
        .assert_stderr_contains("own_change");
    assert!(!reveal(&w.admin).all().contains(SECRET));
    approve_held(&w.bob, &held);
    assert_eq!(reveal(&w.admin).stdout, format!("{SECRET}\n"));
    let shown = w.admin.ok(&["change", "show", &id]).stdout;
    assert!(
        shown.contains("approved") && shown.contains("bob") && shown.contains("policy all"),
        "{shown}"
    );
    // A policy that only narrows what the group has applies at once.
    w.admin
        .ok(&[
            "policy",
            "add",
            "prod-justify",
            "--group",
            "vault",
            "--targets",
            "tag:prod",
            "--allow",
            "reveal",
            "--outcome",
            "justify",
        ])
        .assert_stdout_contains("created policy prod-justify");
    // Now vault is named: adding a member waits; bob denies it.
    add_user_cli(&w.inst, &w.server, &w.admin, "carol", "user", &[]);
    let held = w.admin.ok(&["group", "add-member", "vault", "carol"]);
    let id = held_change(&held);
    w.bob
        .ok(&[
            "change",
            "deny",
            &id,
            "--comment",
            "carol has no business here",
        ])
        .assert_stdout_contains("denied");
    let groups = w.admin.ok(&["group", "list"]).stdout;
    assert!(!groups.contains("carol"), "{groups}");
    let pending = w.admin.ok(&["change", "list", "--pending"]).stdout;
    assert!(
        !pending.contains(&id),
        "a denied change is closed: {pending}"
    );
    let all = w.admin.ok(&["change", "list"]).stdout;
    assert!(all.contains(&id) && all.contains("denied"), "{all}");
    // Audited: the proposal, and the decision with its diff and both people.
    let entries = audit(&w.admin);
    assert!(entries
        .iter()
        .any(|e| e["action"] == "change.propose" && e["actor"] == "admin"));
    let approval = entries
        .iter()
        .find(|e| {
            e["action"] == "change.decide"
                && e["details"]["verdict"] == "approve"
                && e["outcome"] != "denied"
        })
        .expect("the approval is audited");
    assert_eq!(approval["actor"], "bob");
    assert_eq!(approval["details"]["proposer"], "admin");
    assert_eq!(approval["details"]["approver"], "bob");
    assert!(approval["details"]["diff"]
        .as_str()
        .unwrap()
        .contains("policy all"));
    w.admin.ok(&["audit", "verify"]);
}

#[test]
fn policy_and_group_are_held_sqlite() {
    policy_and_group_are_held(Backend::Sqlite);
}

#[test]
fn policy_and_group_are_held_postgres() {
    policy_and_group_are_held(Backend::Postgres);
}

/// Finding 3: a reset's one-time password goes to the approving admin, never to the one who asked.
#[test]
fn a_reset_password_goes_to_the_second_admin() {
    let w = world(Backend::Sqlite, 0);
    let (alice, _, alice_pw) = add_user_cli(&w.inst, &w.server, &w.admin, "alice", "user", &[]);
    let held = w.admin.ok(&["user", "reset-password", "alice"]);
    assert!(
        !held.all().contains("one-time password"),
        "the asking admin never sees it: {}",
        held.all()
    );
    // Held: alice's password still works, and nobody else's does.
    alice.login("alice", &alice_pw).assert_ok();
    let approved = approve_held(&w.bob, &held);
    let otp = one_time_password(&approved);
    let r = w.server.api().login("alice", &alice_pw);
    assert_eq!(r.status, 401, "{}", r.text);
    let r = w.server.api().login("alice", &otp);
    r.assert_ok();
    assert_eq!(r.body["password_change_required"], true);
    // Bob, having seen the password, no longer counts on alice's requests for a while (the
    // period is 0 here); the account change is recorded, and so is the reset.
    assert!(audit(&w.admin)
        .iter()
        .any(|e| e["action"] == "user.reset_password" && e["details"]["approved_by"] == "bob"));
}

/// Enabling a disabled user gives back all it had: held for a second admin, audited with both;
/// alone, an admin's enable is `unilateral`.
#[test]
fn enabling_a_user_waits_for_a_second_admin() {
    let w = world(Backend::Sqlite, 0);
    let (_, _, alice_pw) = add_user_cli(&w.inst, &w.server, &w.admin, "alice", "user", &[]);
    w.admin
        .ok(&["user", "disable", "alice", "--reason", "left the team"]);
    let held = w.admin.ok(&["user", "enable", "alice"]);
    held.assert_stdout_contains("held for a second admin's approval");
    held.assert_stdout_contains("user alice: enabled again");
    // Held: alice stays disabled.
    w.server
        .api()
        .login("alice", &alice_pw)
        .assert_error(403, "account_disabled");
    approve_held(&w.bob, &held);
    w.server.api().login("alice", &alice_pw).assert_ok();
    let entries = audit(&w.admin);
    assert!(
        entries.iter().any(|e| e["action"] == "user.enable"
            && e["actor"] == "admin"
            && e["details"]["approved_by"] == "bob"),
        "the enable names both admins"
    );
    // An enabled user cannot be enabled again (nothing to approve).
    w.admin
        .fail(&["user", "enable", "alice"])
        .assert_stderr_contains("not_disabled");

    // One admin alone: applied, audited `unilateral`.
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    add_user_cli(&inst, &server, &admin, "carol", "user", &[]);
    admin.ok(&["user", "disable", "carol", "--reason", "on leave"]);
    admin
        .ok(&["user", "enable", "carol"])
        .assert_stdout_contains("enabled carol");
    assert!(audit(&admin)
        .iter()
        .any(|e| e["action"] == "user.enable" && e["outcome"] == "unilateral"));
}

/// Finding 4: only the user adds keys to their own account; an admin's key for someone else waits.
#[test]
fn a_key_for_someone_else_waits_for_a_second_admin() {
    let w = world(Backend::Sqlite, 0);
    let (alice, _, _) = add_user_cli(&w.inst, &w.server, &w.admin, "alice", "user", &[]);
    let keys = w.inst.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    ssh_keygen(&keys.join("admin_key"));
    ssh_keygen(&keys.join("alice_key"));
    let admin_fp = ssh_fingerprint(&keys.join("admin_key.pub"));
    let alice_fp = ssh_fingerprint(&keys.join("alice_key.pub"));
    let admin_pub = keys.join("admin_key.pub");
    let held = w
        .admin
        .ok(&["user", "key", "add", "alice", admin_pub.to_str().unwrap()]);
    held_change(&held);
    let listed = w.admin.ok(&["user", "key", "list", "alice"]).stdout;
    assert!(!listed.contains(&admin_fp), "held, not added: {listed}");
    // Her own key needs nobody's approval.
    let alice_pub = keys.join("alice_key.pub");
    alice
        .ok(&["user", "key", "add", "alice", alice_pub.to_str().unwrap()])
        .assert_stdout_contains(&alice_fp);
    approve_held(&w.bob, &held);
    let listed = w.admin.ok(&["user", "key", "list", "alice"]).stdout;
    assert!(
        listed.contains(&admin_fp) && listed.contains(&alice_fp),
        "{listed}"
    );
}

/// A second admin made by the first does not count on the first's changes during cooling off.
#[test]
fn fresh_admins_do_not_count_on_their_makers_changes() {
    let w = world(Backend::Sqlite, 7);
    let (_alice, _, _) = add_user_cli(&w.inst, &w.server, &w.admin, "alice", "user", &[]);
    let held = w.admin.ok(&["user", "set-role", "alice", "approver"]);
    let id = held_change(&held);
    w.bob
        .fail(&["change", "approve", &id])
        .assert_stderr_contains("cooling_off");
    w.admin
        .ok(&["change", "show", &id])
        .assert_stdout_contains("pending");
    // The other way round counts: admin did not make or change bob's changes.
    let held = w.bob.ok(&["user", "set-role", "alice", "approver"]);
    approve_held(&w.admin, &held);
    w.admin
        .ok(&["user", "show", "alice"])
        .assert_stdout_contains("approver");
    let shown = w.admin.ok(&["instance", "show"]).stdout;
    assert!(shown.contains("pending changes: 1"), "{shown}");
}

/// Finding 4 through the gateway: the admin's own key, added to alice's account, opens no session
/// as alice until a second admin approves it.
#[test]
fn a_key_for_someone_else_opens_no_gateway_session_until_approved() {
    if let Some(why) = sshd_unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let inst = Instance::new(Backend::Sqlite);
    let server = start_with_config(&inst, "[governance]\ncooling_off_days = 0\n");
    let (admin, _) = admin_cli(&inst, &server);
    let keys = inst.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for k in ["alice_key", "root_key", "admin_key"] {
        ssh_keygen(&keys.join(k));
    }
    let sshd = Sshd::start(&inst.path().join("sshd"));
    sshd.authorize(&keys.join("root_key.pub"));
    // Alone, admin sets up alice (her key included) and a session policy: unilateral.
    gateway_world(&inst, &server, &admin, &keys, sshd.port);
    allow_sessions(&admin, "allow");
    let (bob, _, _) = add_user_cli(&inst, &server, &admin, "bob", "admin", &[]);
    let held = admin.ok(&[
        "user",
        "key",
        "add",
        "alice",
        keys.join("admin_key.pub").to_str().unwrap(),
    ]);
    let home = inst.path().join("ssh-home");
    std::fs::create_dir_all(&home).unwrap();
    let ssh_as_alice = |key: &str| {
        let mut cmd = std::process::Command::new("ssh");
        cmd.env_remove("SSH_AUTH_SOCK")
            .env("HOME", &home)
            .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
            .args(["-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR"])
            .arg("-i")
            .arg(keys.join(key))
            .args([
                "-p",
                &server.ssh_port.to_string(),
                "alice:root@db01@127.0.0.1",
            ])
            .arg("echo dual-ok");
        run_command(cmd, None, &format!("ssh as alice with {key}"))
    };
    let refused = ssh_as_alice("admin_key");
    assert_ne!(refused.code, Some(0), "{}", refused.all());
    assert!(!refused.stdout.contains("dual-ok"));
    // Alice's own key works, so the refusal above was the key's.
    ssh_as_alice("alice_key").assert_stdout_contains("dual-ok");
    approve_held(&bob, &held);
    ssh_as_alice("admin_key").assert_stdout_contains("dual-ok");
}
