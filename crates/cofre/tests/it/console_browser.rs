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

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Why the browser cannot run here; under CI a missing tool fails the test instead.
fn browser_unavailable() -> Option<String> {
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
fn screenshot_dir() -> PathBuf {
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

    let shots = screenshot_dir();
    let config = json!({
        "base": server.url.trim_end_matches('/'),
        "chromium": CHROMIUM,
        "screenshots": shots,
        "admin": {"name": "admin", "password": admin_pw},
        "user": {"name": "alice", "password": alice_pw},
        "approver": {"name": "lead1", "password": lead_pw},
        "auditor": {"name": "aud1", "password": aud_pw},
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
