//! Credential rotation against real sshd users: local accounts made for each test (useradd), the
//! target's sshd reading their own `~/.ssh/authorized_keys`, the real `cofre` server and CLI. What
//! a user would check: after a rotation the old secret is refused by sshd, the new one works
//! directly and through the gateway, and reveal returns it; after a failure the old one stays
//! current and still works, and the failure is audited and alerted; the vault and the target never
//! disagree, a crash between applying and verifying included.
//!
//! These tests need root (sshd, useradd) and skip with a printed reason without it; CI runs them
//! as root.

use crate::backup::{webhook, Webhook};
use crate::gateway::{wait_until, with_askpass, Gw, Running};
use crate::harness::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A local Unix account for one test, removed (with its home) when dropped.
struct LocalUser {
    name: String,
}

impl LocalUser {
    fn new(prefix: &str) -> LocalUser {
        let name = format!("{prefix}{}", &random_hex(4));
        let mut cmd = Command::new("useradd");
        cmd.args(["-m", "-s", "/bin/sh", &name]);
        run_command(cmd, None, "useradd").assert_ok();
        LocalUser { name }
    }

    fn set_password(&self, password: &str) {
        let cmd = Command::new("chpasswd");
        run_command(
            cmd,
            Some(&format!("{}:{password}\n", self.name)),
            "chpasswd",
        )
        .assert_ok();
    }

    fn home(&self) -> PathBuf {
        PathBuf::from(format!("/home/{}", self.name))
    }

    /// `~/.ssh/authorized_keys` with this public key, owned by the user (sshd's StrictModes is off).
    fn authorize(&self, pub_file: &Path) {
        let ssh = self.home().join(".ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        std::fs::copy(pub_file, ssh.join("authorized_keys")).unwrap();
        let mut cmd = Command::new("chown");
        cmd.args(["-R", &format!("{0}:{0}", self.name)]).arg(&ssh);
        run_command(cmd, None, "chown").assert_ok();
    }

    fn authorized_keys(&self) -> String {
        std::fs::read_to_string(self.home().join(".ssh/authorized_keys")).unwrap_or_default()
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .status();
        let _ = Command::new("userdel").args(["-r", &self.name]).output();
    }
}

/// The gateway world (admin, alice in ops, db01 with root's key) on an sshd that also reads users'
/// own authorized_keys, and a policy letting ops open sessions on and reveal db01's credentials.
fn setup(backend: Backend, env: &[(&str, &str)], config: Option<&str>) -> Option<Gw> {
    if let Some(why) = sshd_unavailable() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let inst = Instance::new(backend);
    let mut env: Vec<(&str, &str)> = env.to_vec();
    let file = inst.path().join("cofre.toml");
    let file_text = file.to_str().expect("path").to_owned();
    if let Some(text) = config {
        std::fs::write(&file, text).expect("config file");
        env.push(("COFRE_CONFIG", &file_text));
    }
    let server = inst.start_with_env(&env);
    let (admin, _) = admin_cli(&inst, &server);
    let keys = inst.path().join("keys");
    std::fs::create_dir_all(&keys).expect("keys dir");
    ssh_keygen(&keys.join("alice_key"));
    ssh_keygen(&keys.join("root_key"));
    let sshd = Sshd::start_with(&inst.path().join("sshd"), true, "");
    sshd.authorize(&keys.join("root_key.pub"));
    let (alice, alice_password, _) = gateway_world(&inst, &server, &admin, &keys, sshd.port);
    admin.ok(&[
        "policy",
        "add",
        "p",
        "--group",
        "ops",
        "--targets",
        "tag:prod",
        "--allow",
        "session,reveal",
        "--outcome",
        "allow",
    ]);
    Some(Gw {
        sshd,
        server,
        admin,
        alice,
        alice_password,
        keys,
        inst,
    })
}

/// `ssh` straight to the target's sshd as `user` with a password (through SSH_ASKPASS).
fn password_login_works(gw: &Gw, user: &str, password: &str) -> bool {
    let dir = gw.inst.path().join(format!("askpass-{}", random_hex(4)));
    std::fs::create_dir_all(&dir).unwrap();
    // The password is read from a file: a generated one may hold any quote.
    let secret = dir.join("password");
    std::fs::write(&secret, password).unwrap();
    let script = dir.join("askpass.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ncat '{}'\necho\n", secret.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut cmd = Command::new("ssh");
    cmd.env_remove("SSH_AUTH_SOCK")
        .env("HOME", &dir)
        .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .args([
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
        ])
        .args(["-o", "NumberOfPasswordPrompts=1", "-o", "BatchMode=no"])
        .args([
            "-p",
            &gw.sshd.port.to_string(),
            &format!("{user}@127.0.0.1"),
            "id -un",
        ]);
    with_askpass(&mut cmd, &script);
    let out = run_command(cmd, Some(""), "ssh with a password");
    out.code == Some(0) && out.stdout.trim() == user
}

/// `ssh` straight to the target's sshd as `user` with a private key (given as text).
fn key_login_works(gw: &Gw, user: &str, private_key: &str) -> bool {
    let file = gw.inst.path().join(format!("key-{}", random_hex(4)));
    std::fs::write(&file, format!("{}\n", private_key.trim_end())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = Command::new("ssh");
    cmd.env_remove("SSH_AUTH_SOCK")
        .env("HOME", gw.inst.path())
        .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(&file)
        .args([
            "-p",
            &gw.sshd.port.to_string(),
            &format!("{user}@127.0.0.1"),
            "id -un",
        ]);
    let out = run_command(cmd, None, "ssh with a key");
    out.code == Some(0) && out.stdout.trim() == user
}

/// What alice's reveal returns: (version, secret).
fn reveal(gw: &Gw, account: &str, version: Option<i64>) -> (i64, String) {
    let mut args = vec!["--output", "json", "credential", "reveal", "db01", account];
    let v;
    if let Some(n) = version {
        v = n.to_string();
        args.extend(["--version", &v]);
    }
    let out = gw.alice.ok(&args);
    let j = out.json();
    (
        j["version"].as_i64().unwrap(),
        j["secret"].as_str().unwrap().to_owned(),
    )
}

/// Through the gateway as alice: `id -un` on db01 as `account`.
fn gateway_login_works(gw: &Gw, account: &str) -> bool {
    let out = gw.run_ssh(&format!("alice+{account}+db01"), &[], Some("id -un"), None);
    out.code == Some(0) && out.stdout.trim() == account
}

fn rotate(gw: &Gw, account: &str, how: &[&str]) -> Out {
    let mut args = vec!["--output", "json", "credential", "rotate", "db01", account];
    args.extend(how);
    gw.admin.run(&args, None)
}

fn rotate_entries(gw: &Gw, account: &str) -> Vec<Value> {
    gw.audit()
        .into_iter()
        .filter(|e| e["action"] == "credential.rotate")
        .filter(|e| e["object"] == format!("credential:db01/{account}"))
        .collect()
}

fn status_of(gw: &Gw, account: &str) -> Value {
    let out = gw.admin.ok(&["--output", "json", "rotation", "status"]);
    json_items(&out.json())
        .into_iter()
        .find(|r| r["account"] == account)
        .unwrap_or(Value::Null)
}

/// A local user with a fresh password, vaulted as db01's credential for it.
fn user_with_password(gw: &Gw, prefix: &str) -> (LocalUser, String) {
    let u = LocalUser::new(prefix);
    let old = format!("Old-{}-pw", random_hex(8));
    u.set_password(&old);
    add_password_credential(gw, &u.name, &old);
    (u, old)
}

fn add_password_credential(gw: &Gw, account: &str, password: &str) {
    gw.admin.ok_in(
        &["credential", "add", "db01", account, "--password-stdin"],
        &format!("{password}\n"),
    );
}

/// No audit detail anywhere holds a secret of the rotation.
fn assert_not_in_audit(gw: &Gw, secrets: &[&str]) {
    let text = gw
        .admin
        .ok(&["audit", "export", "--format", "jsonl"])
        .stdout;
    for s in secrets {
        assert!(!text.contains(s), "a secret is in the audit trail");
    }
}

fn chpasswd_as_root(backend: Backend) {
    let Some(gw) = setup(backend, &[], None) else {
        return;
    };
    let (u, old) = user_with_password(&gw, "crt");
    assert!(password_login_works(&gw, &u.name, &old));

    let out = rotate(&gw, &u.name, &["--method", "chpasswd", "--as", "db01/root"]);
    out.assert_ok();
    let r = out.json();
    assert_eq!(r["outcome"], "rotated", "{r:#}");
    assert_eq!(r["version"], 2);
    assert!(!out.stdout.contains(&old));

    let (version, new) = reveal(&gw, &u.name, None);
    assert_eq!(version, 2);
    assert_ne!(new, old);
    assert_eq!(new.len(), 24, "the default password policy");
    assert!(
        !password_login_works(&gw, &u.name, &old),
        "sshd still takes the old password"
    );
    assert!(
        password_login_works(&gw, &u.name, &new),
        "sshd refuses the new password"
    );
    assert!(gateway_login_works(&gw, &u.name));

    let entries = rotate_entries(&gw, &u.name);
    let last = entries.last().unwrap();
    assert_eq!(last["outcome"], "rotated");
    assert_eq!(last["details"]["method"], "chpasswd");
    assert_eq!(last["details"]["trigger"], "manual");
    assert_not_in_audit(&gw, &[&old, &new]);
    let history = gw
        .admin
        .ok(&["credential", "history", "db01", &u.name])
        .stdout;
    assert!(
        history.contains("v1") && history.contains("v2\tpassword"),
        "{history}"
    );
}

#[test]
fn chpasswd_as_root_sqlite() {
    chpasswd_as_root(Backend::Sqlite);
}

#[test]
fn chpasswd_as_root_postgres() {
    chpasswd_as_root(Backend::Postgres);
}

#[test]
fn passwd_as_the_user_itself() {
    let Some(gw) = setup(Backend::Sqlite, &[], None) else {
        return;
    };
    // The generated password follows the instance's policy.
    gw.admin.ok(&[
        "password-policy",
        "set",
        "--length",
        "30",
        "--classes",
        "upper,lower,digit",
        "--exclude",
        "0Ol1",
    ]);
    let (u, old) = user_with_password(&gw, "crp");

    let out = rotate(&gw, &u.name, &["--method", "passwd"]);
    out.assert_ok();
    assert_eq!(out.json()["outcome"], "rotated", "{}", out.stdout);

    let (version, new) = reveal(&gw, &u.name, None);
    assert_eq!(version, 2);
    assert_eq!(new.len(), 30);
    assert!(
        new.chars()
            .all(|c| c.is_ascii_alphanumeric() && !"0Ol1".contains(c)),
        "{}",
        new.len()
    );
    assert!(!password_login_works(&gw, &u.name, &old));
    assert!(password_login_works(&gw, &u.name, &new));
    assert!(gateway_login_works(&gw, &u.name));
    assert_not_in_audit(&gw, &[&old, &new]);
}

#[test]
fn key_credential_replaces_its_authorized_keys_line() {
    let Some(gw) = setup(Backend::Sqlite, &[], None) else {
        return;
    };
    let u = LocalUser::new("crk");
    // sshd (without PAM) refuses every login to a locked account, keys too: give it a password.
    u.set_password(&format!("Unused-{}-pw", random_hex(8)));
    let old_key = gw.keys.join("crk_key");
    ssh_keygen(&old_key);
    u.authorize(&old_key.with_extension("pub"));
    // Another line in the file stays as it was.
    let other = std::fs::read_to_string(gw.keys.join("alice_key.pub")).unwrap();
    let mut keys_file = u.authorized_keys();
    keys_file.push_str(&other);
    std::fs::write(u.home().join(".ssh/authorized_keys"), &keys_file).unwrap();
    gw.admin.ok(&[
        "credential",
        "add",
        "db01",
        &u.name,
        "--key-file",
        old_key.to_str().unwrap(),
    ]);
    let old_text = std::fs::read_to_string(&old_key).unwrap();
    assert!(key_login_works(&gw, &u.name, &old_text));

    let out = rotate(&gw, &u.name, &["--key"]);
    out.assert_ok();
    assert_eq!(out.json()["outcome"], "rotated", "{}", out.stdout);

    let (version, new_key) = reveal(&gw, &u.name, None);
    assert_eq!(version, 2);
    assert!(new_key.contains("OPENSSH PRIVATE KEY"));
    assert!(
        !key_login_works(&gw, &u.name, &old_text),
        "sshd still takes the old key"
    );
    assert!(
        key_login_works(&gw, &u.name, &new_key),
        "sshd refuses the new key"
    );
    assert!(gateway_login_works(&gw, &u.name));
    let lines: Vec<String> = u.authorized_keys().lines().map(str::to_owned).collect();
    let old_blob = std::fs::read_to_string(old_key.with_extension("pub")).unwrap();
    let old_blob = old_blob.split_whitespace().nth(1).unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| !l.contains(old_blob)));
    assert!(lines.contains(&other.trim_end().to_owned()), "{lines:?}");
    assert_not_in_audit(&gw, &[&new_key]);
}

/// A target that refuses the change (here `passwd` as the user, with a minimum password age that
/// has not passed): the old version stays current and still works; the failure is audited with
/// its reason, alerted (webhook, metric) and shown by `rotation status --failed`.
#[test]
fn a_refused_change_keeps_the_old_secret() {
    let hook: Webhook = webhook();
    let config = format!("[alerts]\nwebhook_url = \"{}\"\n", hook.url);
    let Some(gw) = setup(Backend::Sqlite, &[], Some(&config)) else {
        return;
    };
    let (u, old) = user_with_password(&gw, "crr");
    let mut chage = Command::new("chage");
    chage.args(["-m", "30", &u.name]);
    run_command(chage, None, "chage").assert_ok();

    let out = rotate(&gw, &u.name, &["--method", "passwd"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let r = out.json();
    assert_eq!(r["outcome"], "failed", "{r:#}");
    assert_eq!(r["version"], 1);
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("refused the change"), "{reason}");
    assert!(reason.contains("old secret still logs in"), "{reason}");

    assert_eq!(reveal(&gw, &u.name, None), (1, old.clone()));
    assert!(password_login_works(&gw, &u.name, &old));
    assert!(gateway_login_works(&gw, &u.name));
    let last = rotate_entries(&gw, &u.name).pop().unwrap();
    assert_eq!(last["outcome"], "failed");
    assert!(last["details"]["reason"]
        .as_str()
        .unwrap()
        .contains("refused"));
    let failed = gw.admin.ok(&["rotation", "status", "--failed"]).stdout;
    assert!(
        failed.contains(&format!("db01/{}", u.name)) && failed.contains("failed"),
        "{failed}"
    );
    wait_until(
        "the rotation alert's webhook",
        Duration::from_secs(20),
        || {
            hook.bodies
                .lock()
                .unwrap()
                .iter()
                .any(|b| b.contains("credential.rotate_failed") && b.contains(&u.name))
        },
    );
    assert!(hook
        .bodies
        .lock()
        .unwrap()
        .iter()
        .all(|b| !b.contains(&old)));
    let metrics = gw.server.api().get("/metrics", None).text;
    assert!(
        metrics.contains("cofre_rotation_failures_total"),
        "no failure metric"
    );
}

/// The target takes the new password (chpasswd as root) but the verifying login fails (sshd does
/// not let this user in with a password): the old password is set back through root, the old
/// version stays current, and once sshd lets the user in again the old password is what works.
#[test]
fn an_accepted_change_that_does_not_verify_is_set_back() {
    let Some(mut gw) = setup(Backend::Sqlite, &[], None) else {
        return;
    };
    let (u, old) = user_with_password(&gw, "crv");
    gw.sshd.reconfigure(&format!(
        "Match User {}\n    PasswordAuthentication no",
        u.name
    ));

    let out = rotate(&gw, &u.name, &["--method", "chpasswd", "--as", "root"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let r = out.json();
    assert_eq!(r["outcome"], "failed", "{r:#}");
    assert_eq!(r["version"], 1);
    assert_eq!(r["attempted_version"], 2);
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("set back through root"),
        "{r:#}"
    );

    gw.sshd.reconfigure("");
    assert!(
        password_login_works(&gw, &u.name, &old),
        "the target kept the new password"
    );
    let (_, attempted) = reveal(&gw, &u.name, Some(2));
    assert!(!password_login_works(&gw, &u.name, &attempted));
    assert_eq!(reveal(&gw, &u.name, None), (1, old));
}

/// kill -9 (an abort) after the change reached the target and before the verifying login: at the
/// next start the pending version is resolved: the target takes the new one, so it is current.
#[test]
fn a_crash_between_apply_and_verify_is_resolved_at_restart() {
    let Some(mut gw) = setup(
        Backend::Sqlite,
        &[("COFRE_TEST_ONLY_ABORT_ROTATION_AFTER_APPLY", "1")],
        None,
    ) else {
        return;
    };
    let (u, old) = user_with_password(&gw, "crc");

    let out = rotate(&gw, &u.name, &["--method", "chpasswd", "--as", "root"]);
    assert_ne!(
        out.code,
        Some(0),
        "the server should have aborted: {}",
        out.all()
    );
    assert!(
        gw.server.wait_exit(Duration::from_secs(20)).is_some(),
        "the server did not abort"
    );
    assert!(
        !password_login_works(&gw, &u.name, &old),
        "the change did not reach the target"
    );

    let server = gw.inst.start();
    gw.admin = gw.admin.at_with_token(&server);
    gw.alice = gw.alice.at_with_token(&server);
    gw.server = server;
    wait_until(
        "the cut-short rotation resolved",
        Duration::from_secs(60),
        || status_of(&gw, &u.name)["last_outcome"] == "recovered",
    );
    let (version, new) = reveal(&gw, &u.name, None);
    assert_eq!(version, 2);
    assert!(password_login_works(&gw, &u.name, &new));
    assert!(gateway_login_works(&gw, &u.name));
    let last = rotate_entries(&gw, &u.name).pop().unwrap();
    assert_eq!(last["outcome"], "recovered");
}

/// A rotation asked for while alice has a live session on the credential waits for its end.
#[test]
fn a_rotation_waits_for_the_live_session() {
    let Some(gw) = setup(Backend::Sqlite, &[], None) else {
        return;
    };
    let (u, old) = user_with_password(&gw, "crw");

    let mut shell = Running::spawn(
        gw.ssh(
            &format!("alice+{}+db01", u.name),
            &[],
            Some("echo ready; read line; echo bye"),
        ),
        "ssh shell",
    );
    shell.wait_for_stdout("ready", Duration::from_secs(30));
    let out = rotate(&gw, &u.name, &["--method", "chpasswd", "--as", "root"]);
    out.assert_ok();
    assert_eq!(out.json()["outcome"], "waiting", "{}", out.stdout);
    let status = status_of(&gw, &u.name);
    assert!(
        status["waiting_for"]
            .as_str()
            .unwrap_or("")
            .contains("live session"),
        "{status:#}"
    );
    assert_eq!(reveal(&gw, &u.name, None).0, 1);
    assert!(password_login_works(&gw, &u.name, &old));

    shell.send("done\n");
    shell.wait_for_stdout("bye", Duration::from_secs(30));
    shell.wait(Duration::from_secs(30));
    wait_until(
        "the rotation after the session",
        Duration::from_secs(60),
        || status_of(&gw, &u.name)["last_outcome"] == "rotated",
    );
    let (version, new) = reveal(&gw, &u.name, None);
    assert_eq!(version, 2);
    assert!(password_login_works(&gw, &u.name, &new));
    assert!(!password_login_works(&gw, &u.name, &old));
    // It ran the way it was asked for, not with the (unset) settings' default.
    let last = rotate_entries(&gw, &u.name).pop().unwrap();
    assert_eq!(last["details"]["method"], "chpasswd", "{last:#}");
    assert_eq!(last["details"]["trigger"], "manual", "{last:#}");
}

/// `set-rotation --after-reveal`: alice's reveal makes it rotate (the secret she saw stops
/// working); `--after-grant`: revoking a grant on it makes it rotate.
#[test]
fn after_reveal_and_after_grant_triggers_rotate() {
    let Some(gw) = setup(Backend::Sqlite, &[], None) else {
        return;
    };
    let (u, old) = user_with_password(&gw, "crt");
    gw.admin.ok(&[
        "credential",
        "set-rotation",
        "db01",
        &u.name,
        "--after-reveal",
        "--after-grant",
        "--method",
        "chpasswd",
        "--as",
        "db01/root",
    ]);
    let set = gw
        .audit()
        .into_iter()
        .find(|e| e["action"] == "credential.set_rotation")
        .unwrap();
    assert_eq!(set["details"]["after_reveal"], true);

    let (_, seen) = reveal(&gw, &u.name, None);
    assert_eq!(seen, old);
    wait_until(
        "the rotation after the reveal",
        Duration::from_secs(60),
        || {
            status_of(&gw, &u.name)["last_trigger"] == "reveal"
                && status_of(&gw, &u.name)["last_outcome"] == "rotated"
        },
    );
    assert!(
        !password_login_works(&gw, &u.name, &seen),
        "the revealed secret still works"
    );

    // After a grant: an approve policy for another group, a request approved, then revoked.
    gw.admin.ok(&["group", "add", "leads"]);
    let (lead, _, _) = add_user_cli(
        &gw.inst,
        &gw.server,
        &gw.admin,
        "lea",
        "approver",
        &["leads"],
    );
    gw.admin.ok(&["group", "add", "ops2"]);
    let (bob, _, _) = add_user_cli(&gw.inst, &gw.server, &gw.admin, "bob", "user", &["ops2"]);
    gw.admin.ok(&[
        "policy",
        "add",
        "p2",
        "--group",
        "ops2",
        "--targets",
        "db01",
        "--allow",
        "session",
        "--outcome",
        "approve",
        "--levels",
        "leads:1",
    ]);
    let created = bob.ok(&[
        "--output",
        "json",
        "request",
        "create",
        "--target",
        "db01",
        "--account",
        &u.name,
        "--reason",
        "CHG-1 patch",
        "--start",
        "now",
        "--duration",
        "1h",
    ]);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    lead.ok(&["request", "approve", &id, "--comment", "ok"]);
    let before = status_of(&gw, &u.name)["version"].as_i64().unwrap();
    bob.ok(&["grant", "revoke", &id]);
    wait_until(
        "the rotation after the grant",
        Duration::from_secs(60),
        || {
            let s = status_of(&gw, &u.name);
            s["last_trigger"] == "grant" && s["version"].as_i64().unwrap() > before
        },
    );
    let due: Vec<Value> = gw
        .audit()
        .into_iter()
        .filter(|e| e["action"] == "credential.rotation_due")
        .collect();
    assert!(
        due.iter().any(|e| e["details"]["trigger"] == "reveal"),
        "{due:#?}"
    );
    assert!(
        due.iter().any(|e| e["details"]["trigger"] == "grant"),
        "{due:#?}"
    );
}

/// `--method command --template-file`: a template that answers `passwd`'s prompts as root changes
/// the password (old refused, new works, every template version kept and named in the audit);
/// a template whose `success_output` does not appear fails and the old password stays.
#[test]
fn a_command_template_changes_the_password() {
    let Some(gw) = setup(Backend::Sqlite, &[], None) else {
        return;
    };
    let (u, old) = user_with_password(&gw, "crc");
    let template = gw.inst.path().join("change.tmpl");
    std::fs::write(
        &template,
        "# passwd as root asks twice and never for the old one\n\
         command = \"LC_ALL=C passwd {account}\"\n\
         success_output = \"updated successfully\"\n\
         [[prompt]]\nexpect = \"New password:\"\nanswer = \"{new}\"\n\
         [[prompt]]\nexpect = \"Retype new password:\"\nanswer = \"{new}\"\n",
    )
    .unwrap();
    let set = gw.admin.ok(&[
        "credential",
        "set-rotation",
        "db01",
        &u.name,
        "--template-file",
        template.to_str().unwrap(),
        "--as",
        "db01/root",
    ]);
    set.assert_stdout_contains("method command as root");
    set.assert_stdout_contains("template version 1");

    let out = rotate(&gw, &u.name, &[]);
    out.assert_ok();
    assert_eq!(out.json()["outcome"], "rotated", "{}", out.stdout);
    assert_eq!(out.json()["method"], "command");
    let (version, new) = reveal(&gw, &u.name, None);
    assert_eq!(version, 2);
    assert!(
        !password_login_works(&gw, &u.name, &old),
        "the old password still works"
    );
    assert!(
        password_login_works(&gw, &u.name, &new),
        "the new password is refused"
    );
    let started = rotate_entries(&gw, &u.name)
        .into_iter()
        .find(|e| e["outcome"] == "started")
        .unwrap();
    assert_eq!(started["details"]["template_version"], 1, "{started:#}");
    let sha = started["details"]["template_sha256"].as_str().unwrap();
    assert_eq!(sha.len(), 64);
    assert_not_in_audit(&gw, &[&old, &new]);

    // Version 2 runs a device that reads the password and changes nothing, exiting 0: the
    // template's success_output is what tells, and the vault keeps what the target has.
    std::fs::write(
        &template,
        "command = \"cat > /dev/null; echo the device said no\"\n\
         stdin = \"{new}\\n\"\n\
         success_output = \"password changed\"\n",
    )
    .unwrap();
    gw.admin
        .ok(&[
            "credential",
            "set-rotation",
            "db01",
            &u.name,
            "--template-file",
            template.to_str().unwrap(),
            "--as",
            "root",
        ])
        .assert_stdout_contains("template version 2");
    let out = rotate(&gw, &u.name, &[]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let r = out.json();
    assert_eq!(r["outcome"], "failed", "{r:#}");
    assert!(
        r["reason"].as_str().unwrap().contains("success_output"),
        "{r:#}"
    );
    let (version, current) = reveal(&gw, &u.name, None);
    assert_eq!((version, current.as_str()), (2, new.as_str()));
    assert!(
        password_login_works(&gw, &u.name, &new),
        "vault and target disagree"
    );
    let sets: Vec<Value> = gw
        .audit()
        .into_iter()
        .filter(|e| e["action"] == "credential.set_rotation")
        .map(|e| e["details"]["template_version"].clone())
        .collect();
    assert_eq!(sets, [1, 2]);
}

/// `--every` rotates on the schedule; `--verify-every` finds drift on its own and, with a
/// reconcile account (`--as`), resets the credential to a new vaulted secret through it;
/// `--after-session` rotates once a session on the credential has ended.
#[test]
fn schedules_verify_reconcile_and_after_session() {
    let Some(gw) = setup(Backend::Sqlite, &[], None) else {
        return;
    };
    let (u, old) = user_with_password(&gw, "crs");
    let set = |extra: &[&str]| {
        let mut args = vec![
            "credential",
            "set-rotation",
            "db01",
            &u.name,
            "--method",
            "chpasswd",
            "--as",
            "db01/root",
        ];
        args.extend(extra);
        gw.admin.ok(&args);
    };

    set(&["--every", "1s"]);
    wait_until("a scheduled rotation", Duration::from_secs(60), || {
        let s = status_of(&gw, &u.name);
        s["last_trigger"] == "schedule" && s["last_outcome"] == "rotated"
    });
    let (_, scheduled) = reveal(&gw, &u.name, None);
    assert!(!password_login_works(&gw, &u.name, &old));
    assert!(password_login_works(&gw, &u.name, &scheduled));

    // No schedule now; someone changes the password on the target behind the vault's back.
    set(&["--verify-every", "1s"]);
    let rotations = rotate_entries(&gw, &u.name).len();
    u.set_password(&format!("Drift-{}-pw", random_hex(8)));
    wait_until(
        "the scheduled verify and its reconcile",
        Duration::from_secs(60),
        || {
            let s = status_of(&gw, &u.name);
            s["last_verify_outcome"] == "drift" && s["last_trigger"] == "reconcile"
        },
    );
    assert_eq!(status_of(&gw, &u.name)["last_outcome"], "rotated");
    let (_, reconciled) = reveal(&gw, &u.name, None);
    assert!(
        password_login_works(&gw, &u.name, &reconciled),
        "the reconciled secret is refused"
    );
    let drift = gw
        .audit()
        .into_iter()
        .find(|e| e["action"] == "credential.verify" && e["outcome"] == "drift")
        .unwrap();
    assert_eq!(drift["actor"], "system");
    assert!(rotate_entries(&gw, &u.name).len() > rotations);

    // After a session: it rotates once the session has ended.
    set(&["--after-session"]);
    assert!(gateway_login_works(&gw, &u.name));
    wait_until(
        "the rotation after the session",
        Duration::from_secs(60),
        || {
            let s = status_of(&gw, &u.name);
            s["last_trigger"] == "session" && s["last_outcome"] == "rotated"
        },
    );
    let (_, after) = reveal(&gw, &u.name, None);
    assert_ne!(after, reconciled);
    assert!(!password_login_works(&gw, &u.name, &reconciled));
    assert!(password_login_works(&gw, &u.name, &after));
}

/// `credential verify`: ok while the vaulted secret logs in; drift (exit 1, audited) once
/// someone changed it on the target.
#[test]
fn verify_finds_drift() {
    let Some(gw) = setup(Backend::Sqlite, &[], None) else {
        return;
    };
    let (u, _) = user_with_password(&gw, "crd");
    gw.admin
        .ok(&["credential", "verify", "db01", &u.name])
        .assert_stdout_contains("ok: version 1");
    u.set_password(&format!("Other-{}-pw", random_hex(8)));
    let out = gw
        .admin
        .run(&["credential", "verify", "db01", &u.name], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    out.assert_stdout_contains("drift");
    let v = gw
        .audit()
        .into_iter()
        .filter(|e| e["action"] == "credential.verify")
        .map(|e| e["outcome"].as_str().unwrap_or("").to_owned())
        .collect::<Vec<_>>();
    assert_eq!(v, ["ok", "drift"]);
}

/// Bad input is refused naming the field.
#[test]
fn rotation_input_names_the_field() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    admin.ok(&[
        "target",
        "add",
        "db01",
        "--host",
        "127.0.0.1",
        "--port",
        "1",
    ]);
    admin.ok_in(
        &["credential", "add", "db01", "app", "--password-stdin"],
        "Secret-123-abc\n",
    );
    let token = admin.token();
    let api = server.api();
    for (body, field) in [
        (
            serde_json::json!({"length": 8, "classes": "upper"}),
            "length",
        ),
        (
            serde_json::json!({"length": 24, "classes": "upper,emoji"}),
            "classes",
        ),
        (
            serde_json::json!({"length": 24, "classes": "digit", "exclude": "0123456789"}),
            "exclude",
        ),
    ] {
        let r = api.call(
            "PUT",
            "/api/v1/password-policy",
            Some(&token),
            Body::Json(body),
        );
        r.assert_error(400, "invalid_field");
        assert_eq!(r.field(), Some(field));
    }
    let rot = "/api/v1/targets/db01/credentials/app/rotate";
    for (body, field) in [
        (serde_json::json!({"method": "telnet"}), "method"),
        (serde_json::json!({"method": "key"}), "method"),
        (
            serde_json::json!({"method": "chpasswd", "as": "db02/root"}),
            "as",
        ),
        (serde_json::json!({"method": "passwd", "as": "root"}), "as"),
        // A template is set with set-rotation first.
        (serde_json::json!({"method": "command"}), "method"),
    ] {
        let r = api.post(rot, Some(&token), body);
        r.assert_error(400, "invalid_field");
        assert_eq!(r.field(), Some(field));
    }
    let r = api.call(
        "PUT",
        "/api/v1/targets/db01/credentials/app/rotation",
        Some(&token),
        Body::Json(serde_json::json!({"every": "soon"})),
    );
    r.assert_error(400, "invalid_field");
    assert_eq!(r.field(), Some("every"));
    for (body, says) in [
        (
            serde_json::json!({"template": "command = \"setpw {account} {new}\"\nstdin = \"{new}\"\n"}),
            "command: {old} and {new} may not appear on the command line",
        ),
        (
            serde_json::json!({"template": "command = \"x\"\nstdin = \"{nwe}\"\n"}),
            "unknown placeholder {nwe}",
        ),
        (
            serde_json::json!({"template": "command = \"x\"\nstdin = \"{new}\"\n", "method": "chpasswd"}),
            "run by the command method, not chpasswd",
        ),
        (
            serde_json::json!({"method": "command"}),
            "give one (--template-file FILE)",
        ),
    ] {
        let r = api.call(
            "PUT",
            "/api/v1/targets/db01/credentials/app/rotation",
            Some(&token),
            Body::Json(body),
        );
        r.assert_error(400, "invalid_field");
        assert_eq!(r.field(), Some("template"));
        assert!(r.text.contains(says), "{}", r.text);
    }
}

/// Two rotations of one credential never run at once, across nodes too: while another node
/// holds the credential's lease in the shared database (a row as that node writes it), a
/// rotation here is refused and leaves the target alone; once the lease has run out, it runs.
#[test]
fn a_lease_held_by_another_node_keeps_a_rotation_out() {
    let Some(gw) = setup(Backend::Postgres, &[], None) else {
        return;
    };
    let (u, old) = user_with_password(&gw, "crl");
    gw.admin.ok(&[
        "credential",
        "set-rotation",
        "db01",
        &u.name,
        "--method",
        "chpasswd",
        "--as",
        "db01/root",
    ]);
    let url = gw.inst.db_url_for_tests();
    let set_lease = |until: &str| {
        sql_exec(
            &url,
            &[format!(
                "UPDATE credential_rotation SET lease_owner = 'node-elsewhere', lease_until = {until} \
                 WHERE credential_id = (SELECT c.id FROM credentials c JOIN targets t ON t.id = c.target_id \
                 WHERE t.name = 'db01' AND c.account = {})",
                sql_quote(&u.name)
            )],
        )
        .expect("writing the other node's lease");
    };
    set_lease("CAST(EXTRACT(EPOCH FROM now()) AS BIGINT) + 600");

    let out = rotate(&gw, &u.name, &[]);
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(
        out.all().contains("already in progress"),
        "the refusal does not say why: {}",
        out.all()
    );
    assert_eq!(reveal(&gw, &u.name, None), (1, old.clone()));
    assert!(
        password_login_works(&gw, &u.name, &old),
        "the refused rotation touched the target"
    );
    assert!(rotate_entries(&gw, &u.name).is_empty());

    // A minute past (not a second: the cast rounds, and the server compares whole seconds).
    set_lease("CAST(EXTRACT(EPOCH FROM now()) AS BIGINT) - 60");
    let out = rotate(&gw, &u.name, &[]);
    out.assert_ok();
    assert_eq!(out.json()["outcome"], "rotated", "{}", out.stdout);
    let (version, new) = reveal(&gw, &u.name, None);
    assert_eq!(version, 2);
    assert!(password_login_works(&gw, &u.name, &new));
    assert!(!password_login_works(&gw, &u.name, &old));
}

/// A scheduled rotation that the target refuses is retried with back-off, not on every
/// scheduler round: with `--every 1s` and a verify each second (so each round reads the row),
/// two further rounds pass without a second attempt, and the next one is a minute after the
/// failure.
#[test]
fn a_failing_scheduled_rotation_backs_off() {
    let Some(gw) = setup(Backend::Sqlite, &[], None) else {
        return;
    };
    let (u, old) = user_with_password(&gw, "crb");
    let mut chage = Command::new("chage");
    chage.args(["-m", "30", &u.name]);
    run_command(chage, None, "chage").assert_ok();
    gw.admin.ok(&[
        "credential",
        "set-rotation",
        "db01",
        &u.name,
        "--method",
        "passwd",
        "--every",
        "1s",
        "--verify-every",
        "1s",
    ]);
    wait_until("the scheduled attempt", Duration::from_secs(60), || {
        status_of(&gw, &u.name)["failures"] == 1
    });
    let failed = status_of(&gw, &u.name);
    assert_eq!(failed["last_outcome"], "failed", "{failed:#}");
    let at = |field: &str, s: &Value| {
        time::OffsetDateTime::parse(
            s[field].as_str().unwrap_or_default(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|e| panic!("{field} in {s:#}: {e}"))
    };
    assert_eq!(
        (at("next_at", &failed) - at("last_at", &failed)).whole_seconds(),
        60,
        "{failed:#}"
    );
    for round in 0..2 {
        let seen = status_of(&gw, &u.name)["last_verify_at"].clone();
        wait_until(
            &format!("scheduler round {round} after the failure"),
            Duration::from_secs(60),
            || status_of(&gw, &u.name)["last_verify_at"] != seen,
        );
    }
    let now = status_of(&gw, &u.name);
    assert_eq!(now["failures"], 1, "retried before its back-off: {now:#}");
    let attempts = rotate_entries(&gw, &u.name)
        .into_iter()
        .filter(|e| e["outcome"] == "failed")
        .count();
    assert_eq!(attempts, 1);
    assert_eq!(reveal(&gw, &u.name, None), (1, old.clone()));
    assert!(password_login_works(&gw, &u.name, &old));
}
