//! Orbit's instance state (issue 13): the instance type and its banner, disabling the application
//! (only Orbit answers, the gateway refuses new sessions), who may do it in each mode, and a demo
//! promoted to production with its drift report. The gateway test needs root (sshd).

use crate::gateway::setup;
use crate::harness::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn audit_of(admin: &Cli, action: &str) -> Vec<Value> {
    parse_export(&admin.ok(&["audit", "export", "--format", "jsonl"]).stdout)
        .into_iter()
        .filter(|e| e["action"] == action)
        .collect()
}

fn put_type(api: &Api, token: &str, t: &str) -> Resp {
    api.call(
        "PUT",
        "/api/v1/instance/type",
        Some(token),
        Body::Json(json!({ "type": t })),
    )
}

#[test]
fn instance_type_shows_a_banner_and_production_needs_a_promotion() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    let show = admin.ok(&["instance", "show"]);
    show.assert_stdout_contains("type: production")
        .assert_stdout_contains("application: enabled");
    assert!(!show.stderr.contains("instance:"), "{}", show.stderr);

    admin.ok(&["instance", "set-type", "demo"]);
    // Every CLI answer of a demo instance says so, on stderr: stdout stays what scripts read.
    let listed = admin.ok(&["--output", "json", "target", "list"]);
    listed.assert_stderr_contains("cofre: DEMO instance");
    json_items(&listed.json());
    let info = admin.ok(&["--output", "json", "instance", "show"]).json();
    assert_eq!(info["type"], "demo");
    assert!(info["banner"].as_str().unwrap().contains("DEMO"), "{info}");

    // Out of demo into production only by promotion; unknown types name the field.
    admin
        .fail(&["instance", "set-type", "production"])
        .assert_stderr_contains("promote --to production");
    let api = server.api();
    let token = admin.token();
    put_type(&api, &token, "production").assert_error(409, "promote_required");
    let bad = put_type(&api, &token, "staging");
    bad.assert_error(400, "invalid_field");
    assert_eq!(bad.field(), Some("type"));

    admin.ok(&["instance", "set-type", "contingency"]);
    admin
        .ok(&["instance", "show"])
        .assert_stderr_contains("cofre: CONTINGENCY instance");
    admin.ok(&["instance", "set-type", "testing"]);
    let quiet = admin.ok(&["target", "list"]);
    assert!(!quiet.stderr.contains("instance:"), "{}", quiet.stderr);
    admin.ok(&["instance", "set-type", "production"]);
    admin
        .ok(&["instance", "show"])
        .assert_stdout_contains("type: production");

    let moves: Vec<(String, String)> = audit_of(&admin, "instance.set_type")
        .iter()
        .map(|e| {
            (
                e["details"]["from"].as_str().unwrap().to_owned(),
                e["details"]["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("production", "demo"),
        ("demo", "contingency"),
        ("contingency", "testing"),
        ("testing", "production"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(moves, expected);
}

/// While disabled: the API answers 503 `application_disabled` with the reason everywhere but
/// Orbit, the gateway refuses new sessions with it, and a contingency instance's SSH login shows
/// its banner. Enabled again, everything answers as before.
#[test]
fn a_disabled_application_answers_only_orbit_and_the_gateway_refuses() {
    let Some(gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    let through = gw.run_ssh("alice:root@db01", &[], Some("echo through"), None);
    assert_eq!(through.code, Some(0), "{through:?}");
    let reason = "moving to the new datacenter (CHG-77)";
    gw.admin
        .ok(&["instance", "disable", "--reason", reason])
        .assert_stdout_contains("application: DISABLED since")
        .assert_stdout_contains(reason);

    let api = gw.server.api();
    let admin_token = gw.admin.token();
    for (who, token) in [("admin", admin_token.clone()), ("alice", gw.alice.token())] {
        for path in ["/api/v1/targets", "/api/v1/audit/verify", "/api/v1/users"] {
            let r = api.get(path, Some(&token));
            r.assert_error(503, "application_disabled");
            assert!(
                r.body["message"].as_str().unwrap().contains(reason),
                "{who} {path}: {}",
                r.text
            );
        }
    }
    gw.alice
        .fail(&["target", "list"])
        .assert_stderr_contains(reason);
    // Orbit, logging in and the API description still answer.
    gw.admin.ok(&["snapshot", "list"]);
    gw.admin.ok(&["backup", "status"]);
    gw.admin
        .ok(&["instance", "show"])
        .assert_stdout_contains(reason);
    api.get("/api/v1/openapi.json", None).assert_ok();
    api.get("/api/v1/auth/whoami", Some(&admin_token))
        .assert_ok();

    let refused = gw.run_ssh("alice:root@db01", &[], Some("echo through"), None);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(!refused.stdout.contains("through"), "{refused:?}");
    assert!(
        refused.stderr.contains("the application is disabled") && refused.stderr.contains(reason),
        "{refused:?}"
    );

    gw.admin
        .ok(&["instance", "enable"])
        .assert_stdout_contains("application: enabled");
    gw.admin
        .fail(&["instance", "enable"])
        .assert_stderr_contains("not disabled");
    let again = gw.run_ssh("alice:root@db01", &[], Some("echo through"), None);
    assert_eq!(again.code, Some(0), "{again:?}");
    api.get("/api/v1/targets", Some(&admin_token)).assert_ok();

    // A contingency instance says so before the login (OpenSSH shows the banner at LogLevel INFO).
    gw.admin.ok(&["instance", "set-type", "contingency"]);
    let bannered = gw.run_ssh(
        "alice:root@db01",
        &["-o", "LogLevel=INFO"],
        Some("echo through"),
        None,
    );
    assert_eq!(bannered.code, Some(0), "{bannered:?}");
    assert!(
        bannered.stderr.contains("cofre: CONTINGENCY instance"),
        "{bannered:?}"
    );

    let disable = audit_of(&gw.admin, "instance.disable");
    assert_eq!(disable.len(), 1, "{disable:?}");
    assert_eq!(disable[0]["details"]["reason"], reason);
    assert_eq!(disable[0]["actor"], "admin");
    let enable = audit_of(&gw.admin, "instance.enable");
    assert_eq!(enable.len(), 1, "{enable:?}");
    assert_eq!(enable[0]["details"]["reason"], reason);
    let refusals: Vec<Value> = audit_of(&gw.admin, "session.refused")
        .into_iter()
        .filter(|e| e["details"]["why"] == "application_disabled")
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["actor"], "alice");
}

/// Every node of an active-active instance follows the state: disabled on one, refused on the
/// other within a few seconds (each node re-reads it at most every 2 s).
#[test]
fn every_node_follows_the_disabled_state_postgres() {
    let inst = Instance::new(Backend::Postgres);
    let node_a = inst.start();
    let (admin, _) = admin_cli(&inst, &node_a);
    let node_b = inst.start();
    let token = admin.token();
    let api_b = node_b.api();
    api_b.get("/api/v1/targets", Some(&token)).assert_ok();
    admin.ok(&["instance", "disable", "--reason", "failover drill"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = api_b.get("/api/v1/targets", Some(&token));
        if r.status == 503 {
            r.assert_error(503, "application_disabled");
            assert!(r.text.contains("failover drill"), "{}", r.text);
            break;
        }
        r.assert_ok();
        assert!(
            Instant::now() < deadline,
            "node b still answers 10 s after node a disabled the application"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    admin.ok(&["instance", "enable"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while api_b.get("/api/v1/targets", Some(&token)).status != 200 {
        assert!(
            Instant::now() < deadline,
            "node b still refuses after enable"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Who manages the instance follows the mode, like the rest of Orbit: the admin on-prem, admin
/// and operator in private-saas, only the operator in saas. Auditors read `instance show` and
/// change nothing; vendor operators read it where they manage the instance.
#[test]
fn instance_management_follows_the_mode() {
    for (mode, admin_may, operator_may) in [
        ("on-prem", true, false),
        ("private-saas", true, true),
        ("saas", false, true),
    ] {
        let inst = Instance::new(Backend::Sqlite);
        let server = start_with_config(&inst, &format!("mode = \"{mode}\"\n"));
        let (admin, _) = admin_cli(&inst, &server);
        let (operator, _, _) = add_user_cli(&inst, &server, &admin, "op1", "operator", &[]);
        let (auditor, _, _) = add_user_cli(&inst, &server, &admin, "aud1", "auditor", &[]);
        let (user, _, _) = add_user_cli(&inst, &server, &admin, "u1", "user", &[]);
        for (who, cli, may) in [
            ("admin", &admin, admin_may),
            ("operator", &operator, operator_may),
            ("auditor", &auditor, false),
            ("user", &user, false),
        ] {
            for args in [
                &["instance", "set-type", "testing"][..],
                &["instance", "disable", "--reason", "mode check"][..],
                &["instance", "enable"][..],
                &["instance", "promote", "--to", "production", "--confirm"][..],
                &["release", "list"][..],
            ] {
                let out = cli.run(args, None);
                assert_eq!(
                    out.code == Some(0),
                    may,
                    "{mode}: {who} {args:?}: {}",
                    out.all()
                );
                if !may {
                    assert!(out.all().contains("may not"), "{mode} {who}: {}", out.all());
                }
            }
            let show = cli.run(&["instance", "show"], None);
            let may_read = matches!(who, "admin" | "auditor") || operator_may && who == "operator";
            assert_eq!(
                show.code == Some(0),
                may_read,
                "{mode}: {who}: {}",
                show.all()
            );
        }
    }
}

/// `cofre init --demo`: sample users (with kept passwords), targets, credentials and policies.
/// Promotion prints the drift report and refuses without --confirm, changing nothing; with it,
/// the instance is production and the report is in the audit trail.
#[test]
fn a_demo_is_promoted_to_production_with_its_drift_report() {
    let inst = Instance::new(Backend::Sqlite);
    let init = inst.init_demo();
    init.assert_ok();
    init.assert_stdout_contains("demo data loaded (type: demo)");
    let demo_file = init.value_after("sample users' passwords written to");
    let admin_file = init.value_after("initial admin password written to");
    let passwords: Vec<(String, String)> = std::fs::read_to_string(&demo_file)
        .unwrap()
        .lines()
        .map(|l| {
            let (u, p) = l.split_once(' ').unwrap();
            (u.to_owned(), p.to_owned())
        })
        .collect();
    let names: Vec<&str> = passwords.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(names, ["demo-alice", "demo-bob", "demo-carol"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&demo_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{demo_file}");

    let server = inst.start();
    // A demo is tried at once: the initial admin and the sample users log in with their
    // passwords as given, no one-time change first.
    let admin = Cli::new(&inst, "admin").at(&server);
    admin
        .login(
            "admin",
            &read_password_file(std::path::Path::new(&admin_file)),
        )
        .assert_stdout_contains("logged in as admin (admin)")
        .assert_stderr_contains("cofre: DEMO instance");
    let alice = Cli::new(&inst, "demo-alice").at(&server);
    alice.login("demo-alice", &passwords[0].1);
    let targets = alice.ok(&["target", "list"]);
    targets
        .assert_stdout_contains("demo-web01")
        .assert_stdout_contains("demo-db01");
    alice.ok(&[
        "credential",
        "reveal",
        "demo-db01",
        "root",
        "--reason",
        "trying the demo",
    ]);

    let refused = admin.run(&["instance", "promote", "--to", "production"], None);
    assert_eq!(refused.code, Some(1), "{}", refused.all());
    for needle in [
        "sample_users: sample users still present: demo-alice, demo-bob, demo-carol",
        "sample_targets: sample targets still present: demo-db01, demo-web01",
        "sample_policies",
        "initial_admin_password",
        "allow_everywhere",
        "demo-ops-everywhere",
        "not promoted",
    ] {
        refused.assert_stdout_contains(needle);
    }
    admin
        .ok(&["instance", "show"])
        .assert_stdout_contains("type: demo");
    assert!(audit_of(&admin, "instance.promote").is_empty());

    // Removing a sample target takes it off the report.
    admin.ok(&["target", "delete", "demo-web01"]);
    let promoted = admin.ok(&["instance", "promote", "--to", "production", "--confirm"]);
    promoted
        .assert_stdout_contains("promoted: demo -> production")
        .assert_stdout_contains("sample targets still present: demo-db01\n");
    let show = admin.ok(&["instance", "show"]);
    show.assert_stdout_contains("type: production");
    assert!(!show.stderr.contains("DEMO"), "{}", show.stderr);
    admin
        .fail(&["instance", "promote", "--to", "production", "--confirm"])
        .assert_stderr_contains("production already");

    let entries = audit_of(&admin, "instance.promote");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["details"]["from"], "demo");
    let kinds: Vec<&str> = entries[0]["details"]["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "sample_users",
            "sample_targets",
            "sample_policies",
            "initial_admin_password",
            "allow_everywhere"
        ]
    );
    let loaded = audit_of(&admin, "instance.demo_load");
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert_eq!(loaded[0]["actor"], "system");
    admin.ok(&["audit", "verify"]);
}

/// A minisign key pair made with the vendor's tool: (public key line, secret key file).
pub(crate) fn minisign_key(dir: &std::path::Path, name: &str) -> (String, std::path::PathBuf) {
    let public = dir.join(format!("{name}.pub"));
    let secret = dir.join(format!("{name}.key"));
    let mut cmd = std::process::Command::new("minisign");
    cmd.args(["-G", "-W", "-p"])
        .arg(&public)
        .arg("-s")
        .arg(&secret);
    run_command(cmd, None, "minisign -G").assert_ok();
    let text = std::fs::read_to_string(&public).unwrap();
    (text.lines().nth(1).unwrap().trim().to_owned(), secret)
}

/// How to make a release file go wrong after (or instead of) signing it.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Spoil {
    Nothing,
    Unsigned,
    /// The binary replaced after the manifest was signed.
    OtherBinary,
    /// The manifest's notes edited after it was signed.
    EditedManifest,
}

/// A release file made as a vendor would: manifest.json, `minisign -Sm manifest.json`, `tar cf`.
pub(crate) fn make_release(
    dir: &std::path::Path,
    version: &str,
    upgrades_from: &str,
    key: &std::path::Path,
    spoil: Spoil,
) -> std::path::PathBuf {
    // What the binary is does not matter to verification; a small one keeps the test fast.
    let binary = format!("#!/bin/sh\necho cofre {version}\n");
    make_release_of(dir, version, upgrades_from, key, spoil, &binary)
}

/// A release whose binary is `binary` (a script: the switch-over tests wrap the built cofre).
pub(crate) fn make_release_of(
    dir: &std::path::Path,
    version: &str,
    upgrades_from: &str,
    key: &std::path::Path,
    spoil: Spoil,
    binary: &str,
) -> std::path::PathBuf {
    use sha2::Digest;
    let work = dir.join(format!("release-{}", random_hex(6)));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("cofre"), binary).unwrap();
    let manifest = json!({
        "format": "cofre-release-v1",
        "version": version,
        "binary_sha256": hex::encode(sha2::Sha256::digest(binary.as_bytes())),
        "upgrades_from": upgrades_from,
        "notes": "fixes CVE-2026-0001",
    });
    std::fs::write(work.join("manifest.json"), manifest.to_string()).unwrap();
    let mut members = vec!["manifest.json", "cofre"];
    if spoil != Spoil::Unsigned {
        let mut sign = std::process::Command::new("minisign");
        sign.arg("-S")
            .arg("-s")
            .arg(key)
            .arg("-m")
            .arg(work.join("manifest.json"));
        run_command(sign, None, "minisign -S").assert_ok();
        members.push("manifest.json.minisig");
    }
    match spoil {
        Spoil::OtherBinary => {
            std::fs::write(work.join("cofre"), "#!/bin/sh\necho something else\n").unwrap()
        }
        Spoil::EditedManifest => std::fs::write(
            work.join("manifest.json"),
            manifest
                .to_string()
                .replace("CVE-2026-0001", "nothing to see"),
        )
        .unwrap(),
        Spoil::Nothing | Spoil::Unsigned => {}
    }
    let file = dir.join(format!("cofre-{version}-{}.release", random_hex(4)));
    let mut tar = std::process::Command::new("tar");
    tar.arg("cf").arg(&file).arg("-C").arg(&work).args(&members);
    run_command(tar, None, "tar cf").assert_ok();
    file
}

/// Only a release signed by a configured key, holding the binary its manifest names, newer than
/// the running version and upgrading from it, is kept; every refusal says why and is audited.
#[test]
fn releases_are_verified_before_they_are_kept() {
    let inst = Instance::new(Backend::Sqlite);
    let keys = inst.path().join("vendor-keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (trusted, trusted_key) = minisign_key(&keys, "vendor");
    let (_, stranger_key) = minisign_key(&keys, "stranger");
    let server = start_with_config(
        &inst,
        &format!("[maintenance]\nrelease_public_keys = [\"{trusted}\"]\n"),
    );
    let (admin, _) = admin_cli(&inst, &server);
    let dir = inst.path().join("releases-made");
    std::fs::create_dir_all(&dir).unwrap();

    let good = make_release(&dir, "0.2.0", "0.1.0", &trusted_key, Spoil::Nothing);
    let kept = admin.ok(&["release", "upload", good.to_str().unwrap()]);
    kept.assert_stdout_contains("verified and kept")
        .assert_stdout_contains("version:       0.2.0");
    let id = kept
        .value_after("release")
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("0.2.0-"), "{id}");
    assert!(inst
        .data_dir
        .join("releases")
        .join(format!("{id}.release"))
        .is_file());
    admin
        .ok(&["release", "list"])
        .assert_stdout_contains(&id)
        .assert_stdout_contains("fixes CVE-2026-0001");
    admin
        .fail(&["release", "upload", good.to_str().unwrap()])
        .assert_stderr_contains("uploaded already");

    for (what, file, expected) in [
        (
            "unsigned",
            make_release(&dir, "0.2.1", "0.1.0", &trusted_key, Spoil::Unsigned),
            "not signed",
        ),
        (
            "wrongly signed",
            make_release(&dir, "0.2.1", "0.1.0", &stranger_key, Spoil::Nothing),
            "signed by a key that is not configured",
        ),
        (
            "tampered binary",
            make_release(&dir, "0.2.1", "0.1.0", &trusted_key, Spoil::OtherBinary),
            "altered after it was signed",
        ),
        (
            "tampered manifest",
            make_release(&dir, "0.2.1", "0.1.0", &trusted_key, Spoil::EditedManifest),
            "signature is not valid",
        ),
        (
            "too old to upgrade from",
            make_release(&dir, "0.3.0", "0.2.0", &trusted_key, Spoil::Nothing),
            "upgrades from 0.2.0 on, and this instance runs 0.1.0",
        ),
        (
            "not newer",
            make_release(&dir, "0.1.0", "0.0.1", &trusted_key, Spoil::Nothing),
            "is not newer than the running version 0.1.0",
        ),
    ] {
        let out = admin.run(&["release", "upload", file.to_str().unwrap()], None);
        assert_ne!(out.code, Some(0), "{what}: {}", out.all());
        assert!(out.stderr.contains(expected), "{what}: {}", out.all());
    }
    let api = server.api();
    let r = api.call(
        "POST",
        "/api/v1/releases",
        Some(&admin.token()),
        Body::Raw {
            content_type: "application/octet-stream",
            bytes: b"not a tar file at all".repeat(100),
        },
    );
    r.assert_error(400, "release_unreadable");
    assert_eq!(r.field(), Some("release"));

    // Nothing refused was kept; every refusal is audited with why.
    let listed = json_items(&admin.ok(&["--output", "json", "release", "list"]).json());
    assert_eq!(listed.len(), 1, "{listed:?}");
    let leftovers: Vec<_> = std::fs::read_dir(inst.data_dir.join("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, vec![format!("{id}.release")]);
    assert_eq!(audit_of(&admin, "release.upload").len(), 1);
    let refused = audit_of(&admin, "release.refused");
    assert_eq!(refused.len(), 7, "{refused:?}");
    assert!(refused.iter().all(|e| e["outcome"] == "denied"));
}
