//! Maintenance windows (issue 13): who decides by mode (private-saas: two distinct customer
//! admins, one refusal ends it, undecided windows expire; saas: announced ahead, customer admins
//! watch but cannot block; on-prem with `approvals = 0`: the admin schedules), the release
//! verified again at propose, and a window run by the scheduler: live gateway sessions warned,
//! new ones refused, the rest ended, the pre-maintenance snapshot verified, the release installed
//! beside the running binary, each step streamed (SSE, with replay and Last-Event-ID); then the
//! switch-over under the supervisor: a good release serves after it (and after a restart), a
//! release that does not start, or whose migration fails half-way (SQLite and PostgreSQL), is
//! rolled back with the database restored, and a supervisor killed mid-way rolls back at the
//! next start.

use crate::approvals::Smtp;
use crate::gateway::{setup_with_config, wait_until, Running};
use crate::harness::*;
use crate::orbit::{make_release, make_release_of, minisign_key, Spoil};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// An RFC 3339 time `secs` from now.
fn in_secs(secs: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(secs))
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A vendor key pair and the config lines that trust it.
struct Vendor {
    key: PathBuf,
    dir: PathBuf,
    config: String,
}

fn vendor(inst: &Instance) -> Vendor {
    let dir = inst.path().join("vendor");
    std::fs::create_dir_all(&dir).unwrap();
    let (public, key) = minisign_key(&dir, "vendor");
    Vendor {
        key,
        dir,
        config: format!("release_public_keys = [\"{public}\"]\n"),
    }
}

fn audit_of(admin: &Cli, action: &str) -> Vec<Value> {
    parse_export(&admin.ok(&["audit", "export", "--format", "jsonl"]).stdout)
        .into_iter()
        .filter(|e| e["action"] == action)
        .collect()
}

fn show(cli: &Cli, id: &str) -> Value {
    cli.ok(&["--output", "json", "maintenance", "show", id])
        .json()
}

/// `maintenance propose` by `cli`; the window's id.
fn propose(cli: &Cli, release: &str, start: &str, duration: &str) -> String {
    let out = cli.ok(&[
        "--output",
        "json",
        "maintenance",
        "propose",
        "--release",
        release,
        "--start",
        start,
        "--duration",
        duration,
        "--notes",
        "fixes CVE-2026-0001",
    ]);
    out.json()["id"].as_str().unwrap().to_owned()
}

/// Uploads a good release; its id.
fn upload(cli: &Cli, v: &Vendor, version: &str) -> String {
    let file = make_release(&v.dir, version, "0.1.0", &v.key, Spoil::Nothing);
    let out = cli.ok(&[
        "--output",
        "json",
        "release",
        "upload",
        file.to_str().unwrap(),
    ]);
    out.json()["id"].as_str().unwrap().to_owned()
}

/// private-saas: the operator proposes; one customer admin's approval is not enough, the same
/// admin never counts twice, the operator and other roles cannot approve; a second admin
/// schedules it. One refusal ends a window; an undecided one expires at its start and nothing
/// runs. A release altered after upload is refused at propose. Only the proposing side cancels.
#[test]
fn private_saas_needs_two_distinct_customer_admins() {
    private_saas_decisions(Backend::Sqlite);
}

/// The same on PostgreSQL (its migration 0020 and the queries on it).
#[test]
fn private_saas_needs_two_distinct_customer_admins_postgres() {
    private_saas_decisions(Backend::Postgres);
}

fn private_saas_decisions(backend: Backend) {
    let inst = Instance::new(backend);
    let v = vendor(&inst);
    let server = start_with_config(
        &inst,
        &format!(
            "mode = \"private-saas\"\n[maintenance]\n{}tick_seconds = 1\n",
            v.config
        ),
    );
    let (admin, _) = admin_cli(&inst, &server);
    let (ad2, _, _) = add_user_cli(&inst, &server, &admin, "ad2", "admin", &[]);
    let (op, _, _) = add_user_cli(&inst, &server, &admin, "op1", "operator", &[]);
    let (auditor, _, _) = add_user_cli(&inst, &server, &admin, "aud1", "auditor", &[]);
    let release = upload(&op, &v, "0.2.0");

    // Customer admins do not propose in private-saas: the vendor's operator does.
    admin
        .fail(&[
            "maintenance",
            "propose",
            "--release",
            &release,
            "--start",
            &in_secs(3600),
            "--duration",
            "2h",
        ])
        .assert_stderr_contains("may not");
    let w1 = propose(&op, &release, &in_secs(3600), "2h");
    let shown = show(&auditor, &w1);
    assert_eq!(shown["state"], "proposed", "{shown}");
    assert_eq!(shown["required_approvals"], 2);
    assert_eq!(shown["proposer"], "op1");

    admin
        .ok(&[
            "maintenance",
            "approve",
            &w1,
            "--comment",
            "ok for Thursday",
        ])
        .assert_stdout_contains("approvals: 1 of 2")
        .assert_stdout_contains("maintenance ")
        .assert_stdout_contains(": proposed");
    admin
        .fail(&["maintenance", "approve", &w1, "--comment", "again"])
        .assert_stderr_contains("decided this window already");
    for (who, cli) in [("operator", &op), ("auditor", &auditor)] {
        let out = cli.fail(&["maintenance", "approve", &w1, "--comment", "me too"]);
        assert!(out.all().contains("may not"), "{who}: {}", out.all());
    }
    assert_eq!(show(&admin, &w1)["state"], "proposed");
    ad2.ok(&[
        "maintenance",
        "approve",
        &w1,
        "--comment",
        "second pair of eyes",
    ])
    .assert_stdout_contains("approvals: 2 of 2")
    .assert_stdout_contains(": scheduled");
    let shown = show(&admin, &w1);
    let steps: Vec<&str> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["proposed", "approved", "approved", "state"],
        "{shown}"
    );
    admin
        .ok(&["instance", "show"])
        .assert_stdout_contains(&format!("next window: {w1} scheduled (Cofre 0.2.0)"));

    // One refusal ends a window; nothing decides it afterwards.
    let w2 = propose(&op, &release, &in_secs(7200), "1h");
    admin
        .fail(&["maintenance", "deny", &w2, "--comment", "no"])
        .assert_stderr_contains("say why");
    admin.ok(&[
        "maintenance",
        "deny",
        &w2,
        "--comment",
        "quarter-end freeze",
    ]);
    assert_eq!(show(&admin, &w2)["state"], "denied");
    ad2.fail(&["maintenance", "approve", &w2, "--comment", "late"])
        .assert_stderr_contains("denied already");

    // Only the proposing side cancels, and only before the start.
    admin
        .fail(&["maintenance", "cancel", &w1])
        .assert_stderr_contains("may not");
    op.ok(&["maintenance", "cancel", &w1])
        .assert_stdout_contains(": cancelled");
    op.fail(&["maintenance", "cancel", &w1])
        .assert_stderr_contains("cancelled already");

    // Undecided by its start: expired by the scheduler, never run.
    let w3 = propose(&op, &release, &in_secs(3), "1h");
    admin.ok(&["maintenance", "approve", &w3, "--comment", "only one"]);
    wait_until(
        "the undecided window expires",
        Duration::from_secs(30),
        || show(&auditor, &w3)["state"] == "expired",
    );
    let steps: Vec<String> = show(&auditor, &w3)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}:{}", e["step"], e["outcome"]))
        .collect();
    assert_eq!(
        steps,
        [
            "\"proposed\":\"info\"",
            "\"approved\":\"info\"",
            "\"state\":\"expired\""
        ],
        "{steps:?}"
    );
    ad2.fail(&["maintenance", "approve", &w3, "--comment", "too late"])
        .assert_stderr_contains("expired already");
    assert!(
        audit_of(&admin, "maintenance.begin").is_empty(),
        "nothing ran"
    );

    // The kept release file altered after its upload: refused at propose, audited.
    let tampered = make_release(&v.dir, "0.2.0", "0.1.0", &v.key, Spoil::OtherBinary);
    std::fs::copy(
        &tampered,
        inst.data_dir
            .join("releases")
            .join(format!("{release}.release")),
    )
    .unwrap();
    let api = server.api();
    let r = api.post(
        "/api/v1/maintenance",
        Some(&op.token()),
        serde_json::json!({"release": release, "start": in_secs(3600), "duration": "1h"}),
    );
    r.assert_error(400, "release_tampered");
    assert_eq!(r.field(), Some("release"));
    let refused: Vec<Value> = audit_of(&admin, "maintenance.propose")
        .into_iter()
        .filter(|e| e["outcome"] == "denied")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");

    let decided = audit_of(&admin, "maintenance.decide");
    let ok: Vec<_> = decided.iter().filter(|e| e["outcome"] == "ok").collect();
    assert_eq!(ok.len(), 4, "{decided:?}");
    assert!(decided
        .iter()
        .any(|e| e["outcome"] == "denied" && e["actor"] == "admin"));
    admin.ok(&["audit", "verify"]);
}

/// saas: the operator schedules; a window must be announced at least `notice_hours` ahead, and
/// every customer admin is told by email; customer admins watch but cannot approve, deny or
/// cancel.
#[test]
fn saas_windows_are_announced_ahead_and_admins_cannot_block() {
    let inst = Instance::new(Backend::Sqlite);
    let Some(smtp) = Smtp::start(inst.path()) else {
        assert!(
            std::env::var("CI").is_err(),
            "aiosmtpd is missing in CI (scripts/test installs it)"
        );
        return;
    };
    let v = vendor(&inst);
    let server = start_with_config(
        &inst,
        &format!(
            "mode = \"saas\"\n[maintenance]\n{}notice_hours = 2\ntick_seconds = 1\n\
             [notify]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsmtp_tls = \"none\"\n\
             smtp_from = \"Cofre <cofre@example.test>\"\n",
            v.config, smtp.port
        ),
    );
    let (admin, _) = admin_cli(&inst, &server);
    admin.ok(&["user", "set-email", "admin", "admin@example.test"]);
    let (op, _, _) = add_user_cli(&inst, &server, &admin, "op1", "operator", &[]);
    let release = upload(&op, &v, "0.2.0");

    let api = server.api();
    let r = api.post(
        "/api/v1/maintenance",
        Some(&op.token()),
        serde_json::json!({"release": release, "start": in_secs(3600), "duration": "1h"}),
    );
    r.assert_error(400, "maintenance_notice");
    assert_eq!(r.field(), Some("start"));
    assert!(r.text.contains("at least 2 hours"), "{}", r.text);

    let id = propose(&op, &release, &in_secs(3 * 3600), "1h");
    let shown = show(&admin, &id);
    assert_eq!(shown["state"], "scheduled", "{shown}");
    assert_eq!(shown["required_approvals"], 0);
    let mail = smtp.wait_for(
        "admin@example.test",
        &format!("Maintenance window {id} scheduled"),
    );
    assert!(mail.contains("cofre maintenance watch"), "{mail}");

    for args in [
        &["maintenance", "approve", &id, "--comment", "fine"][..],
        &["maintenance", "deny", &id, "--comment", "not now please"][..],
        &["maintenance", "cancel", &id][..],
    ] {
        admin.fail(args).assert_stderr_contains("may not");
    }
    admin
        .ok(&["maintenance", "list"])
        .assert_stdout_contains(&id);
    admin
        .ok(&["instance", "show"])
        .assert_stdout_contains(&format!("next window: {id} scheduled"));
    assert_eq!(show(&admin, &id)["state"], "scheduled");
    op.ok(&["maintenance", "cancel", &id])
        .assert_stdout_contains(": cancelled");
    admin.ok(&["audit", "verify"]);
}

/// The events of an SSE body: (id, data as JSON).
fn sse_events(text: &str) -> Vec<(i64, Value)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut id = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().parse::<i64>().unwrap());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if let Some(id) = id {
            out.push((id, serde_json::from_str(&data).unwrap()));
        }
    }
    out
}

/// on-prem with `approvals = 0`: the admin schedules. `warn_minutes` ahead a live gateway
/// session is told in its terminal; from the start new sessions are refused with the window's
/// message; the scheduler then ends the live session, takes and verifies a pre-maintenance
/// snapshot, verifies the release again and installs it beside the running binary, in that
/// order, each step streamed to a watcher that joined before and replayed to one that joins
/// after (from `Last-Event-ID` on). The switch-over does not exist yet: the window ends
/// `failed` there, and sessions are served again.
#[test]
fn on_prem_window_warns_refuses_and_runs_its_steps_in_order() {
    // tick_seconds is long so the window's start passes with it still scheduled (new sessions
    // refused) until a proposal wakes the scheduler.
    let inst_config =
        |keys: &str| format!("[maintenance]\n{keys}warn_minutes = 1\ntick_seconds = 3600\n");
    // The vendor key is made before the server starts, in a directory of its own.
    let keys_dir = tempfile::tempdir().unwrap();
    let (public, key) = minisign_key(keys_dir.path(), "vendor");
    let v = Vendor {
        key,
        dir: keys_dir.path().to_owned(),
        config: format!("release_public_keys = [\"{public}\"]\n"),
    };
    let Some(gw) = setup_with_config(
        Backend::Sqlite,
        Some("allow"),
        Some(&inst_config(&v.config)),
    ) else {
        return;
    };
    let admin = &gw.admin;
    let release = upload(admin, &v, "0.2.0");

    let mut shell = Running::spawn(gw.ssh("alice:root@db01", &["-tt"], None), "ssh -tt (shell)");
    shell.send("echo ready-$((40+2))\n");
    shell.wait_for_stdout("ready-42", Duration::from_secs(30));

    let start = in_secs(8);
    let id = propose(admin, &release, &start, "1h");
    assert_eq!(show(admin, &id)["state"], "scheduled");
    // The gateway's notices go to the terminal's stderr, as its other messages do.
    let warning = format!("cofre: maintenance window {id} starts at {start}");
    wait_until(
        "the live session is warned",
        Duration::from_secs(30),
        || shell.stderr().contains(&warning),
    );
    assert!(
        !shell.stderr().contains("cofre: cofre:"),
        "{}",
        shell.describe()
    );

    // From the start, still scheduled: new sessions are refused with the window's message.
    let begun = Instant::now();
    wait_until("a new session is refused", Duration::from_secs(60), || {
        let out = gw.run_ssh("alice:root@db01", &[], Some("echo through"), None);
        out.code != Some(0)
            && out
                .stderr
                .contains(&format!("maintenance window {id} is running"))
    });
    assert!(
        begun.elapsed() >= Duration::from_secs(3),
        "refused only from the start"
    );
    let refusals: Vec<Value> = audit_of(admin, "session.refused")
        .into_iter()
        .filter(|e| e["details"]["why"] == "maintenance_window")
        .collect();
    assert!(!refusals.is_empty());

    // A watcher that joins before the window runs follows it to the end.
    let (cmd, _) = admin.command(&["maintenance", "watch", &id]);
    let mut watcher = Running::spawn(cmd, "cofre maintenance watch");
    watcher.wait_for_stdout("#2 state scheduled", Duration::from_secs(30));
    // A proposal wakes the scheduler, which finds the first window due.
    let later = propose(admin, &release, &in_secs(24 * 3600), "1h");
    let status = watcher.wait(Duration::from_secs(180)).unwrap_or_else(|| {
        panic!(
            "the watcher follows the window to its end: {}",
            watcher.describe()
        )
    });
    assert_eq!(
        status.code(),
        Some(1),
        "ended failed: {}",
        watcher.describe()
    );
    let watched = watcher.stdout();
    let order = [
        "proposed info",
        "state scheduled",
        "sessions_warned ok",
        "state running",
        "sessions_refused ok",
        "sessions_ended ok: 1 live",
        "snapshot ok: pre-maintenance snapshot",
        "release_verified ok",
        "installed ok",
        "switch_over started",
        // The release's "binary" is a script that prints a line and exits: never healthy.
        "switch_over failed: Cofre 0.2.0 exited",
        "rollback ok: Cofre 0.1.0 serves again; the database is as this version left it",
        "state rolled_back",
    ];
    let mut at = 0;
    for step in order {
        let found = watched[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} after the steps before it in:\n{watched}"));
        at += found + step.len();
    }

    // The live session was ended at the start.
    assert!(
        shell.wait(Duration::from_secs(30)).is_some(),
        "the live session ends: {}",
        shell.describe()
    );
    assert!(
        shell
            .describe()
            .contains(&format!("maintenance window {id} begins")),
        "{}",
        shell.describe()
    );

    // The snapshot is there, verified; the release is installed beside the running binary.
    let snapshots = admin.ok(&["snapshot", "list"]).stdout;
    assert!(snapshots.contains("pre-maintenance"), "{snapshots}");
    let installed = gw
        .inst
        .data_dir
        .join("releases")
        .join("installed")
        .join(&release);
    let binary = std::fs::read(installed.join("cofre")).unwrap();
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(&binary));
    assert!(
        release.starts_with(&format!("0.2.0-{}", &sha[..12])),
        "{release} {sha}"
    );
    assert!(installed.join("manifest.json").is_file());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(installed.join("cofre"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    // A late joiner gets every step again, in order; with Last-Event-ID only the later ones.
    let api = gw.server.api();
    let path = format!("/api/v1/maintenance/{id}/events");
    let all = api.get(&path, Some(&admin.token()));
    all.assert_ok();
    assert!(
        all.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "{:?}",
        all.headers
    );
    let events = sse_events(&all.text);
    let ids: Vec<i64> = events.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as i64).collect::<Vec<_>>(),
        "{}",
        all.text
    );
    assert!(ids.len() >= order.len(), "{}", all.text);
    assert_eq!(events.last().unwrap().1["state"], "rolled_back");
    let resumed = api.call_with_headers(
        "GET",
        &path,
        Some(&admin.token()),
        Body::None,
        &[("Last-Event-ID", "4")],
    );
    resumed.assert_ok();
    let later_ids: Vec<i64> = sse_events(&resumed.text).iter().map(|(i, _)| *i).collect();
    assert_eq!(later_ids, ids[4..].to_vec());
    api.call_with_headers(
        "GET",
        &path,
        Some(&admin.token()),
        Body::None,
        &[("Last-Event-ID", "four")],
    )
    .assert_error(400, "invalid_field");

    // The window over (rolled back), sessions are served again; the next window is shown.
    let again = gw.run_ssh("alice:root@db01", &[], Some("echo through"), None);
    assert_eq!(again.code, Some(0), "{again:?}");
    assert!(
        !again.stderr.contains("starts at"),
        "the warning is over: {again:?}"
    );
    admin
        .ok(&["instance", "show"])
        .assert_stdout_contains(&format!("next window: {later} scheduled"));
    admin.ok(&["maintenance", "cancel", &later]);
    let steps = audit_of(admin, "maintenance.step");
    assert!(steps.len() >= 7, "{steps:?}");
    let finished = audit_of(admin, "maintenance.finish");
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert_eq!(finished[0]["details"]["state"], "rolled_back");
    let rollbacks = audit_of(admin, "maintenance.rollback");
    assert_eq!(rollbacks.len(), 1, "{rollbacks:?}");
    assert!(
        rollbacks[0]["details"]["why"]
            .as_str()
            .unwrap()
            .contains("exited"),
        "{rollbacks:?}"
    );
    admin.ok(&["audit", "verify"]);
}

/// on-prem with `[maintenance] approvals = 1`: the admin proposes, may not approve its own
/// window, and one other admin schedules it; operators have no part in an on-prem instance.
#[test]
fn on_prem_approvals_ask_other_admins() {
    let inst = Instance::new(Backend::Sqlite);
    let v = vendor(&inst);
    let server = start_with_config(
        &inst,
        &format!("[maintenance]\n{}approvals = 1\n", v.config),
    );
    let (admin, _) = admin_cli(&inst, &server);
    let (ad2, _, _) = add_user_cli(&inst, &server, &admin, "ad2", "admin", &[]);
    let (op, _, _) = add_user_cli(&inst, &server, &admin, "op1", "operator", &[]);
    let release = upload(&admin, &v, "0.2.0");
    let id = propose(&admin, &release, &in_secs(3600), "1h");
    assert_eq!(show(&admin, &id)["state"], "proposed");
    admin
        .fail(&["maintenance", "approve", &id, "--comment", "mine"])
        .assert_stderr_contains("never approves its own window");
    for args in [
        &["maintenance", "show", &id][..],
        &["maintenance", "approve", &id, "--comment", "vendor"][..],
    ] {
        op.fail(args).assert_stderr_contains("may not");
    }
    ad2.ok(&["maintenance", "approve", &id, "--comment", "fine"])
        .assert_stdout_contains(": scheduled");
    admin.ok(&["maintenance", "cancel", &id]);
    admin.ok(&["audit", "verify"]);
}

/// A vendor key, trusted by a config that runs the scheduler every second.
fn quick_windows() -> (tempfile::TempDir, PathBuf, String) {
    let keys_dir = tempfile::tempdir().unwrap();
    let (public, key) = minisign_key(keys_dir.path(), "vendor");
    let config = format!(
        "[maintenance]\nrelease_public_keys = [\"{public}\"]\nwarn_minutes = 1\ntick_seconds = 1\n"
    );
    (keys_dir, key, config)
}

/// Signs and uploads a 0.2.0 release whose binary is `script`; its id.
fn upload_script(
    admin: &Cli,
    dir: &std::path::Path,
    key: &std::path::Path,
    script: &str,
) -> String {
    let file = make_release_of(dir, "0.2.0", "0.1.0", key, Spoil::Nothing, script);
    admin
        .ok(&[
            "--output",
            "json",
            "release",
            "upload",
            file.to_str().unwrap(),
        ])
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The window's steps as `step outcome: detail` lines.
fn steps_of(admin: &Cli, id: &str) -> Vec<String> {
    show(admin, id)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}: {}",
                e["step"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
                e["detail"].as_str().unwrap()
            )
        })
        .collect()
}

fn wait_closed(admin: &Cli, server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        // The server is down for a moment during the switch-over.
        let out = admin.run(&["--output", "json", "maintenance", "show", id], None);
        if out.code == Some(0) {
            let w = out.json();
            if !matches!(
                w["state"].as_str(),
                Some("proposed" | "scheduled" | "running")
            ) {
                return w;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the window closes within 240 s: {}\nserver stderr:\n{}",
            out.stdout,
            server.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn assert_in_order(lines: &[String], expected: &[&str]) {
    let text = lines.join("\n");
    let mut at = 0;
    for step in expected {
        let found = text[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} after the steps before it in:\n{text}"));
        at += found + step.len();
    }
}

/// A good release (the built binary, reporting 0.2.0) applied in a window: the live session is
/// warned, changes through the API are refused while it runs (reads are not), the watcher sees
/// every step to `done`, the new version answers with its version, every
/// user, target, policy and recording is still there, the chain verifies, and a restart of the
/// server runs the new version again.
#[test]
fn a_signed_release_is_applied_in_its_window() {
    let (keys, key, config) = quick_windows();
    let Some(mut gw) = setup_with_config(Backend::Sqlite, Some("allow"), Some(&config)) else {
        return;
    };
    let script = format!(
        "#!/bin/sh\nCOFRE_TEST_VERSION=0.2.0 exec {} \"$@\"\n",
        bin()
    );
    let release = upload_script(&gw.admin, keys.path(), &key, &script);
    let recorded = gw.run_ssh("alice:root@db01", &[], Some("echo before-the-update"), None);
    assert_eq!(recorded.code, Some(0), "{recorded:?}");
    let listing = |admin: &Cli| {
        ["user", "target", "policy"]
            .iter()
            .map(|what| admin.ok(&[what, "list"]).stdout)
            .collect::<Vec<_>>()
    };
    let before = listing(&gw.admin);
    let sessions_before = gw.sessions().len();

    let mut shell = Running::spawn(gw.ssh("alice:root@db01", &["-tt"], None), "ssh -tt (shell)");
    shell.send("echo ready-$((40+2))\n");
    shell.wait_for_stdout("ready-42", Duration::from_secs(30));
    let id = propose(&gw.admin, &release, &in_secs(6), "10m");
    let (cmd, _) = gw.admin.command(&["maintenance", "watch", &id]);
    let mut watcher = Running::spawn(cmd, "cofre maintenance watch");
    wait_until(
        "the live session is warned",
        Duration::from_secs(30),
        || {
            shell
                .stderr()
                .contains(&format!("cofre: maintenance window {id} starts at"))
        },
    );
    // While the window runs, reading goes on and changes are refused: on the old version, and on
    // the new one until it is committed. The server is down for a moment in between.
    let api = gw.server.api();
    let token = gw.admin.token();
    let (mut refused, mut tries) = (None, 0);
    let deadline = Instant::now() + Duration::from_secs(240);
    while !["state done", "state rolled_back", "state failed"]
        .iter()
        .any(|s| watcher.stdout().contains(s))
    {
        assert!(
            Instant::now() < deadline,
            "the window ends within 240 s: {}",
            watcher.describe()
        );
        if watcher.stdout().contains("state running") {
            tries += 1;
            let change = api.try_call(
                "POST",
                "/api/v1/groups",
                Some(&token),
                Body::Json(serde_json::json!({ "name": format!("during-{tries}") })),
                &[],
            );
            let read = api.try_call("GET", "/api/v1/groups", Some(&token), Body::None, &[]);
            if let (Ok(change), Ok(read)) = (change, read) {
                if change.status == 503 && read.status == 200 && refused.is_none() {
                    refused = Some(change.body);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = refused.unwrap_or_else(|| {
        panic!("no change was refused in {tries} tries while the window ran, reads answering")
    });
    assert_eq!(refused["code"], "maintenance_window", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains(&format!("maintenance window {id} is running until")),
        "{refused}"
    );
    let status = watcher
        .wait(Duration::from_secs(240))
        .unwrap_or_else(|| panic!("the watcher follows the window: {}", watcher.describe()));
    assert_eq!(status.code(), Some(0), "ended done: {}", watcher.describe());
    let expected = [
        "state running",
        "sessions_ended ok: 1 live",
        "snapshot ok: pre-maintenance snapshot",
        "release_verified ok",
        "installed ok",
        "switch_over started",
        "switch_over ok: Cofre 0.2.0 serves",
        "health_check ok: ok: unsealed; schema at migration",
        "state done",
    ];
    let watched: Vec<String> = watcher.stdout().lines().map(str::to_owned).collect();
    assert_in_order(&watched, &expected);
    assert_in_order(
        &steps_of(&gw.admin, &id),
        &["switch_over started", "health_check ok", "state done"],
    );

    let health = gw.server.api().get("/healthz", None);
    health.assert_ok();
    assert_eq!(health.body["version"], "0.2.0", "{}", health.text);
    gw.admin
        .ok(&["instance", "show"])
        .assert_stdout_contains("0.2.0");
    assert_eq!(listing(&gw.admin), before);
    assert_eq!(
        gw.sessions().len(),
        sessions_before + 1,
        "the warned session is listed too"
    );
    let again = gw.run_ssh("alice:root@db01", &[], Some("echo after-the-update"), None);
    assert_eq!(again.code, Some(0), "{again:?}");
    gw.admin.ok(&["audit", "verify"]);
    let finished = audit_of(&gw.admin, "maintenance.finish");
    assert_eq!(
        finished.last().unwrap()["details"]["state"],
        "done",
        "{finished:?}"
    );
    // A change made while the window ran would be in the trail before its end.
    let done_at = finished.last().unwrap()["seq"].as_i64().unwrap();
    let begun_at = audit_of(&gw.admin, "maintenance.begin").last().unwrap()["seq"]
        .as_i64()
        .unwrap();
    let during: Vec<i64> = audit_of(&gw.admin, "group.create")
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .filter(|seq| (begun_at..done_at).contains(seq))
        .collect();
    assert!(
        during.is_empty(),
        "changes accepted during the window: {during:?}"
    );
    gw.admin.ok(&["group", "add", "after-the-window"]);
    assert!(!gw
        .inst
        .data_dir
        .join("releases")
        .join("switch.json")
        .exists());

    // The supervisor starts the committed version from now on.
    gw.server.stop();
    gw.server = gw.inst.start();
    gw.admin = gw.admin.at_with_token(&gw.server);
    assert_eq!(
        gw.server.api().get("/healthz", None).body["version"],
        "0.2.0"
    );
    gw.admin.ok(&["audit", "verify"]);
}

/// A script standing for a new version whose migrations fail half-way: one new migration
/// recorded and its table made, then the failure.
fn half_migration(inst: &Instance) -> String {
    let sql = "CREATE TABLE upgrade_half_done (x BIGINT); INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99990, 'the new version, half-way', TRUE, X'00', 0);";
    let apply = match inst.database_url() {
        None => format!(
            "python3 -c \"import sqlite3; c = sqlite3.connect('{}'); c.executescript(\\\"{}\\\"); c.commit()\"",
            inst.data_dir.join("cofre.db").display(),
            sql.replace("TRUE", "1")
        ),
        Some(url) => format!(
            "psql '{url}' -v ON_ERROR_STOP=1 -c \"{}\"",
            sql.replace("X'00'", "'\\\\x00'")
        ),
    };
    format!("#!/bin/sh\nset -e\n{apply}\necho 'error: migration 99991 failed: column \"nope\" does not exist' >&2\nexit 1\n")
}

fn has_half_table(inst: &Instance) -> bool {
    let out = match inst.database_url() {
        None => std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import sqlite3; print(sqlite3.connect('{}').execute(\"SELECT COUNT(*) FROM sqlite_master WHERE name = 'upgrade_half_done'\").fetchone()[0])",
                inst.data_dir.join("cofre.db").display()
            ))
            .output()
            .unwrap(),
        Some(url) => std::process::Command::new("psql")
            .arg(url)
            .args(["-tAc", "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'upgrade_half_done'"])
            .output()
            .unwrap(),
    };
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim() != "0"
}

fn migration_fails_half_way(backend: Backend) {
    let (keys, key, config) = quick_windows();
    let Some(gw) = setup_with_config(backend, Some("allow"), Some(&config)) else {
        return;
    };
    let release = upload_script(&gw.admin, keys.path(), &key, &half_migration(&gw.inst));
    let before = gw.admin.ok(&["target", "list"]).stdout;
    let id = propose(&gw.admin, &release, &in_secs(4), "10m");
    let closed = wait_closed(&gw.admin, &gw.server, &id);
    assert_eq!(closed["state"], "rolled_back", "{closed}");
    let steps = steps_of(&gw.admin, &id);
    assert_in_order(
        &steps,
        &[
            "snapshot ok",
            "installed ok",
            "switch_over started",
            "switch_over failed: Cofre 0.2.0 exited",
            "rollback ok: Cofre 0.1.0 serves again; the new version changed the schema",
            "restored from the pre-maintenance snapshot",
            "state rolled_back",
        ],
    );
    // The half-applied migration is gone (else this version would not have started at all).
    assert!(!has_half_table(&gw.inst), "the new version's table is gone");
    assert_eq!(
        gw.server.api().get("/healthz", None).body["version"],
        "0.1.0"
    );
    assert_eq!(gw.admin.ok(&["target", "list"]).stdout, before);
    // Every step's audit entry survived the restore, and the chain verifies.
    let steps_audited: Vec<String> = audit_of(&gw.admin, "maintenance.step")
        .iter()
        .map(|e| e["details"]["step"].as_str().unwrap_or_default().to_owned())
        .collect();
    for step in ["snapshot", "release_verified", "installed", "switch_over"] {
        assert!(
            steps_audited.iter().any(|s| s == step),
            "{step} in {steps_audited:?}"
        );
    }
    assert_eq!(audit_of(&gw.admin, "maintenance.rollback").len(), 1);
    gw.admin.ok(&["audit", "verify"]);
    let again = gw.run_ssh(
        "alice:root@db01",
        &[],
        Some("echo after-the-rollback"),
        None,
    );
    assert_eq!(again.code, Some(0), "{again:?}");
}

#[test]
fn a_release_whose_migration_fails_half_way_is_rolled_back() {
    migration_fails_half_way(Backend::Sqlite);
}

#[test]
fn a_release_whose_migration_fails_half_way_is_rolled_back_postgres() {
    migration_fails_half_way(Backend::Postgres);
}

/// The supervisor killed (SIGKILL) while the new version starts: the next start rolls back.
#[test]
fn a_kill_during_the_switch_over_is_rolled_back_at_the_next_start() {
    let (keys, key, config) = quick_windows();
    let Some(mut gw) = setup_with_config(Backend::Sqlite, Some("allow"), Some(&config)) else {
        return;
    };
    let started = gw.inst.path().join("new-version-started");
    // It says it started, then waits on its stdin: the supervisor's pipe, closed by its death.
    let script = format!(
        "#!/bin/sh\ntouch '{}'\nread line\nexit 1\n",
        started.display()
    );
    let release = upload_script(&gw.admin, keys.path(), &key, &script);
    let id = propose(&gw.admin, &release, &in_secs(4), "10m");
    wait_until("the new version starts", Duration::from_secs(120), || {
        started.exists()
    });
    gw.server.kill9();
    gw.server = gw.inst.start();
    gw.admin = gw.admin.at_with_token(&gw.server);
    let closed = wait_closed(&gw.admin, &gw.server, &id);
    assert_eq!(closed["state"], "rolled_back", "{closed}");
    assert_in_order(
        &steps_of(&gw.admin, &id),
        &[
            "switch_over started",
            "switch_over failed: the switch-over was cut short",
            "rollback ok: Cofre 0.1.0 serves again",
        ],
    );
    assert_eq!(
        gw.server.api().get("/healthz", None).body["version"],
        "0.1.0"
    );
    gw.admin.ok(&["audit", "verify"]);
}
