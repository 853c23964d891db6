//! The web console in a real browser: Debian's Chromium driven by playwright-core
//! (crates/cofre/tests/browser/console.mjs), each role's main flow end to end against a real
//! server and a real sshd target, a screenshot of every main page kept under the build
//! directory (`console-screenshots/`), axe-core on each with no serious or critical violation,
//! no dialog from markup in stored strings, no CSP violation, a revealed secret gone after its
//! 30 s, and a web terminal session typed into, seen in the live list, terminated by an admin
//! and replayed in the player.

use crate::harness::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

pub(crate) fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Why the browser cannot run here; under CI a missing tool fails the test instead.
pub(crate) fn browser_unavailable() -> Option<String> {
    let why = if !Path::new(CHROMIUM).exists() {
        Some("chromium is not installed: apt-get install chromium (scripts/test does)".to_owned())
    } else if Command::new("node").arg("--version").output().is_err() {
        Some("node is not installed: apt-get install npm (scripts/test does)".to_owned())
    } else if !browser_dir().join("node_modules/playwright-core").exists()
        || !browser_dir().join("node_modules/axe-core").exists()
    {
        Some(format!(
            "playwright-core and axe-core are not installed: npm ci in {} (scripts/test does)",
            browser_dir().display()
        ))
    } else {
        None
    };
    if let Some(w) = &why {
        assert!(std::env::var("CI").is_err(), "{w}");
    }
    why
}

/// Where the screenshots go: beside the build, so CI keeps them with its other artifacts.
pub(crate) fn screenshot_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("console-screenshots")
}

#[test]
fn every_role_in_a_real_browser() {
    if let Some(why) = browser_unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    if let Some(why) = sshd_unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin_cli, admin_pw) = admin_cli(&inst, &server);
    let keys = inst.path().join("keys");
    std::fs::create_dir_all(&keys).expect("keys dir");
    ssh_keygen(&keys.join("alice_key"));
    ssh_keygen(&keys.join("root_key"));
    let sshd = Sshd::start(&inst.path().join("sshd"));
    sshd.authorize(&keys.join("root_key.pub"));
    let (_alice, alice_pw, _) = gateway_world(&inst, &server, &admin_cli, &keys, sshd.port);
    allow_sessions(&admin_cli, "allow");
    let api = server.api();
    let admin = admin_cli.token();
    // alice may also reveal db01's key; db02 needs a lead's approval.
    api.post(
        "/api/v1/policies",
        Some(&admin),
        json!({"name": "r", "group": "ops", "targets": ["db01"], "allow": ["reveal"], "outcome": "allow"}),
    )
    .assert_ok();
    api.post(
        "/api/v1/targets",
        Some(&admin),
        json!({"name": "db02", "host": "127.0.0.1", "port": sshd.port, "tags": ["apr"]}),
    )
    .assert_ok();
    api.post(
        "/api/v1/targets/db02/credentials",
        Some(&admin),
        json!({"account": "root", "password": "pw-db02-1"}),
    )
    .assert_ok();
    api.post("/api/v1/groups", Some(&admin), json!({"name": "leads"}))
        .assert_ok();
    api.post(
        "/api/v1/policies",
        Some(&admin),
        json!({"name": "ap", "group": "ops", "targets": ["db02"], "allow": ["session", "reveal"], "outcome": "approve", "levels": "leads:1"}),
    )
    .assert_ok();
    let (_, lead_pw) = api.make_user(&admin, "lead1", "approver", &["leads"]);
    let (_, aud_pw) = api.make_user(&admin, "aud1", "auditor", &[]);
    let (_, sup_pw) = api.make_user(&admin, "sup1", "support", &[]);

    let shots = screenshot_dir();
    let config = json!({
        "base": server.url.trim_end_matches('/'),
        "chromium": CHROMIUM,
        "screenshots": shots,
        "admin": {"name": "admin", "password": admin_pw},
        "user": {"name": "alice", "password": alice_pw},
        "approver": {"name": "lead1", "password": lead_pw},
        "auditor": {"name": "aud1", "password": aud_pw},
        "support": {"name": "sup1", "password": sup_pw},
        "xss": "<img src=x onerror=alert(1)>",
        "secretFragment": "OPENSSH PRIVATE KEY",
    });
    let file = inst.path().join("browser.json");
    std::fs::write(&file, config.to_string()).expect("config");
    let out = Command::new("node")
        .arg(browser_dir().join("console.mjs"))
        .arg(&file)
        .current_dir(browser_dir())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser flow failed:\n{stderr}\n{stdout}\nserver:\n{}",
        server.stderr_text()
    );
    let results: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("results: {e}: {stdout}"));
    assert_eq!(results["dialogs"], json!([]), "{results}");
    assert_eq!(results["cspViolations"], json!([]), "{results}");
    assert_eq!(results["secretHidden"], true, "{results}");
    assert_eq!(results["secretNotInHistory"], true, "{results}");
    assert_eq!(results["auditorUsersStatus"], 403, "{results}");
    assert_eq!(results["supportApproved"], true, "{results}");
    let ended = results["terminalEnded"].as_str().unwrap_or("");
    assert!(ended.contains("terminated by admin"), "{results}");
    for p in results["pages"].as_array().expect("pages") {
        let p = Path::new(p.as_str().unwrap());
        assert!(
            p.exists() && std::fs::metadata(p).unwrap().len() > 1000,
            "{p:?}"
        );
    }

    // The web session is a session like the gateway's: listed with its kind, recorded, its
    // start and end audited, its recording whole. (A new client: the server closed the first
    // one's idle connection while the browser ran.)
    let api = server.api();
    let sessions = api.get("/api/v1/sessions", Some(&admin));
    let web = sessions.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "web-shell")
        .unwrap_or_else(|| panic!("a web-shell session: {}", sessions.text))
        .clone();
    assert_eq!(web["live"], false);
    assert_eq!(web["username"], "alice");
    let id = web["id"].as_str().unwrap();
    let v = api.get(
        &format!("/api/v1/sessions/{id}/recording/verify"),
        Some(&admin),
    );
    v.assert_ok();
    assert_eq!(v.body["status"], "intact", "{}", v.text);
    let cast = api.get(&format!("/api/v1/sessions/{id}/recording"), Some(&admin));
    assert!(cast.text.contains("web-42"), "{}", cast.text);
    drop(sshd);
}

/// Waits for a file the browser script writes (its steps, for the parts this side checks).
fn wait_for_file(path: &Path, node: &crate::gateway::Running) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the browser script never reached {path:?}: {}",
            node.describe()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Live session control in Chromium (crates/cofre/tests/browser/live.mjs): alice types in a web
/// terminal in one browser context while an admin in another watches it live (and the CLI's
/// `cofre session watch` too), blocks her input (she is told; what she types is dropped, never
/// run), unblocks, terminates. Then the emergency panel: lockdown with the admin's TOTP refuses
/// alice on the console (a page saying so), the API and the gateway; the admin who locked it
/// cannot lift it, a second admin does; terminate-all (TOTP too) ends her next session. axe-core
/// on the watch and emergency pages.
#[test]
fn live_sessions_and_the_emergency_panel_in_a_real_browser() {
    use crate::gateway::Running;
    use std::time::Duration;
    if let Some(why) = browser_unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    // No cooling off: the second admin (boss2, approved by boss) counts at once.
    let Some(gw) = crate::gateway::setup_with_config(
        Backend::Sqlite,
        Some("allow"),
        Some("[governance]\ncooling_off_days = 0\n"),
    ) else {
        return;
    };
    let api = gw.server.api();
    let (boss_cli, _, boss_pw) =
        add_user_cli(&gw.inst, &gw.server, &gw.admin, "boss", "admin", &[]);
    // A second admin is held for another admin's approval (no one alone): boss approves it.
    let held = gw.admin.ok(&["user", "add", "boss2", "--role", "admin"]);
    let otp = one_time_password(&approve_held(&boss_cli, &held));
    let boss2_pw = new_password("boss2");
    Cli::new(&gw.inst, "boss2")
        .at(&gw.server)
        .first_login("boss2", &otp, &boss2_pw)
        .assert_stdout_contains("logged in as boss2 (admin)");
    let boss = boss_cli.token();
    // boss's TOTP: the browser computes its codes from the seed (one per step, as the server
    // takes each once).
    let enrolled = api.post("/api/v1/auth/totp/enroll", Some(&boss), json!({}));
    enrolled.assert_ok();
    let seed = base32_decode(enrolled.body["secret_base32"].as_str().expect("secret"));
    let confirm_step = current_step().saturating_sub(1);
    api.post(
        "/api/v1/auth/totp/confirm",
        Some(&boss),
        json!({"code": totp_at_step(&seed, confirm_step)}),
    )
    .assert_ok();

    let sync = gw.inst.path().join("browser-sync");
    std::fs::create_dir_all(&sync).expect("sync dir");
    let shots = screenshot_dir();
    let config = json!({
        "base": gw.server.url.trim_end_matches('/'),
        "chromium": CHROMIUM,
        "screenshots": shots,
        "sync": sync,
        "user": {"name": "alice", "password": gw.alice_password},
        "admin": {"name": "boss", "password": boss_pw, "seed": hex::encode(&seed), "usedStep": confirm_step},
        "admin2": {"name": "boss2", "password": boss2_pw},
    });
    let file = gw.inst.path().join("live-browser.json");
    std::fs::write(&file, config.to_string()).expect("config");
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir().join("live.mjs"))
        .arg(&file)
        .current_dir(browser_dir());
    let mut node = Running::spawn(cmd, "node live.mjs");

    // The CLI watches the same session as the browser does.
    wait_for_file(&sync.join("session"), &node);
    // node creates the file before it writes the id into it.
    let mut id = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while id.trim().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the session id is written"
        );
        std::thread::sleep(Duration::from_millis(20));
        id = std::fs::read_to_string(sync.join("session")).expect("session id");
    }
    let (cmd, what) = gw.admin.command(&["session", "watch", id.trim()]);
    let mut cli_watch = Running::spawn(cmd, &what);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cli_watch.stderr().contains("watching session") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            cli_watch.describe()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(sync.join("cli-watching"), "").expect("sync");
    cli_watch.wait_for_stdout("live-42", Duration::from_secs(60));

    // Locked down: alice is refused on the API and the gateway too (the console, in the browser).
    wait_for_file(&sync.join("locked-down"), &node);
    // A new client each time: the server closes an idle connection while the browser runs.
    let alice_api = gw
        .server
        .api()
        .get("/api/v1/auth/whoami", Some(&gw.alice.token()));
    assert!(
        alice_api.text.contains("instance_locked_down"),
        "{}",
        alice_api.text
    );
    let refused = gw.run_ssh("alice:root@db01", &[], Some("echo hi-$((1+2))"), None);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(refused.stderr.contains("locked down"), "{refused:?}");
    assert!(!refused.stdout.contains("hi-3"), "{refused:?}");
    std::fs::write(sync.join("others-refused"), "").expect("sync");

    let status = node.wait(Duration::from_secs(300));
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser flow failed: {}\nserver:\n{}",
        node.describe(),
        gw.server.stderr_text()
    );
    let stdout = node.stdout();
    let results: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("results: {e}: {stdout}"));
    assert_eq!(results["cspViolations"], json!([]), "{results}");
    assert_eq!(results["blockedNeverRan"], true, "{results}");
    assert_eq!(results["consoleRefused"], 403, "{results}");
    assert_eq!(results["consoleBack"], 200, "{results}");
    let ended = results["terminalEnded"].as_str().unwrap_or("");
    assert!(ended.contains("terminated by boss"), "{results}");
    let all = results["terminateAllEnded"].as_str().unwrap_or("");
    assert!(
        all.contains("emergency") && all.contains("all out"),
        "{results}"
    );
    // The watch ends with the session, and the lockdown lifted, alice is back on the API.
    assert!(
        cli_watch.wait(Duration::from_secs(30)).is_some(),
        "{}",
        cli_watch.describe()
    );
    gw.server
        .api()
        .get("/api/v1/auth/whoami", Some(&gw.alice.token()))
        .assert_ok();
    // Watching from the console is audited as the API's is: start and end, boss the moderator.
    let audit = gw.audit();
    for event in ["start", "end"] {
        assert!(
            audit.iter().any(|e| e["action"] == "session.watch"
                && e["actor"] == "boss"
                && e["details"]["event"] == event),
            "a console watch's {event} is audited"
        );
    }
}

/// A web terminal under a `--moderated` policy, moderated from the browser: it waits (alice is
/// told) and runs nothing until an admin watches it in the console; when the admin's watch page
/// goes away it pauses (alice is told; what she types is held), and it goes on when the admin
/// watches again.
#[test]
fn a_moderated_web_session_waits_for_a_moderator_in_the_browser() {
    use crate::gateway::Running;
    use std::time::Duration;
    if let Some(why) = browser_unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let Some(gw) = crate::gateway::setup_with_config(
        Backend::Sqlite,
        None,
        Some("[server]\nmoderator_wait_seconds = 120\n"),
    ) else {
        return;
    };
    gw.admin.ok(&[
        "policy",
        "add",
        "p",
        "--group",
        "ops",
        "--targets",
        "tag:prod",
        "--allow",
        "session",
        "--outcome",
        "allow",
        "--moderated",
    ]);
    let (_, _, boss_pw) = add_user_cli(&gw.inst, &gw.server, &gw.admin, "boss", "admin", &[]);
    let sync = gw.inst.path().join("browser-sync");
    std::fs::create_dir_all(&sync).expect("sync dir");
    let config = json!({
        "scenario": "moderated",
        "base": gw.server.url.trim_end_matches('/'),
        "chromium": CHROMIUM,
        "screenshots": screenshot_dir(),
        "sync": sync,
        "user": {"name": "alice", "password": gw.alice_password},
        "admin": {"name": "boss", "password": boss_pw},
    });
    let file = gw.inst.path().join("moderated-browser.json");
    std::fs::write(&file, config.to_string()).expect("config");
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir().join("live.mjs"))
        .arg(&file)
        .current_dir(browser_dir());
    let mut node = Running::spawn(cmd, "node live.mjs (moderated)");
    let status = node.wait(Duration::from_secs(300));
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser flow failed: {}\nserver:\n{}",
        node.describe(),
        gw.server.stderr_text()
    );
    let stdout = node.stdout();
    let results: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("results: {e}: {stdout}"));
    assert_eq!(results["cspViolations"], json!([]), "{results}");
    assert_eq!(results["ranBeforeModerator"], false, "{results}");
    assert_eq!(results["ranWhilePaused"], false, "{results}");
    let ended = results["terminalEnded"].as_str().unwrap_or("");
    assert!(ended.contains("terminated by boss"), "{results}");
    let audit = gw.audit();
    assert!(
        audit.iter().any(|e| e["action"] == "session.watch"
            && e["actor"] == "boss"
            && e["details"]["moderator"] == true),
        "the console's watch is the session's moderator, audited"
    );
}
