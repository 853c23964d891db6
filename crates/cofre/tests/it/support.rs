//! Vendor support grants end to end: a real server, the real CLI, real mail (aiosmtpd). A
//! support user can do nothing until a customer admin approves; a `diagnostics` grant opens
//! only the instance's facts; the grant ends on time and on revoke; every call under it is in
//! `support activity`; the vendor and the requester never approve; an undecided request expires;
//! the customer's admins hear of each step.

use crate::approvals::Smtp;
use crate::harness::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

struct World {
    smtp: Smtp,
    admin: Cli,
    sup1: Cli,
    sup2: Cli,
    op1: Cli,
    server: Server,
    _inst: Instance,
}

fn world(backend: Backend) -> Option<World> {
    let inst = Instance::new(backend);
    let Some(smtp) = Smtp::start(inst.path()) else {
        assert!(
            std::env::var("CI").is_err(),
            "aiosmtpd is missing in CI (scripts/test installs it)"
        );
        return None;
    };
    let config = inst.path().join("cofre.toml");
    std::fs::write(
        &config,
        format!(
            "[support]\nrequest_expiry_seconds = 3\ntick_seconds = 1\n\
             [alerts]\nwebhook_url = \"https://hooks.example/services/T0/B0/HOOKSECRET?token=QUERYSECRET\"\n\
             [notify]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsmtp_tls = \"none\"\n\
             smtp_from = \"Cofre <cofre@example.test>\"\n",
            smtp.port
        ),
    )
    .unwrap();
    let server = inst.start_with_env(&[("COFRE_CONFIG", config.to_str().unwrap())]);
    let (admin, _) = admin_cli(&inst, &server);
    admin.ok(&["user", "set-email", "admin", "admin@example.test"]);
    admin.ok(&["target", "add", "db01", "--host", "10.0.0.5"]);
    admin.ok_in(
        &["credential", "add", "db01", "root", "--password-stdin"],
        "root-pw-5521\n",
    );
    let (sup1, _, _) = add_user_cli(&inst, &server, &admin, "sup1", "support", &[]);
    let (sup2, _, _) = add_user_cli(&inst, &server, &admin, "sup2", "support", &[]);
    let (op1, _, _) = add_user_cli(&inst, &server, &admin, "op1", "operator", &[]);
    Some(World {
        smtp,
        admin,
        sup1,
        sup2,
        op1,
        server,
        _inst: inst,
    })
}

fn request(cli: &Cli, scope: &str, duration: &str) -> String {
    let out = cli.ok(&[
        "--output",
        "json",
        "support",
        "request",
        "--scope",
        scope,
        "--reason",
        "TICKET-881 slow backups",
        "--ticket",
        "TICKET-881",
        "--duration",
        duration,
    ]);
    let v = out.json();
    assert_eq!(v["state"], "pending", "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// What support may read: (path, allowed) for the instance, the audit trail, a credential and a
/// recording.
fn probe(w: &World, token: &str) -> [(String, u16); 4] {
    let api = w.server.api();
    let get = |p: &str| (p.to_owned(), api.get(p, Some(token)).status);
    let reveal = api.post(
        "/api/v1/targets/db01/credentials/root/reveal",
        Some(token),
        json!({"reason": "support"}),
    );
    [
        get("/api/v1/instance"),
        get("/api/v1/audit"),
        (
            "/api/v1/targets/db01/credentials/root/reveal".into(),
            reveal.status,
        ),
        get("/api/v1/sessions/no-such-session/recording"),
    ]
}

fn activity(w: &World, id: &str) -> Vec<Value> {
    w.admin
        .ok(&["support", "activity", id])
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_diagnostics_grant_opens_only_diagnostics_and_ends_on_revoke() {
    diagnostics_grant(Backend::Sqlite);
}

#[test]
fn a_diagnostics_grant_opens_only_diagnostics_and_ends_on_revoke_postgres() {
    diagnostics_grant(Backend::Postgres);
}

fn diagnostics_grant(backend: Backend) {
    let Some(w) = world(backend) else {
        return;
    };
    let token = w.sup1.token();
    let id = request(&w.sup1, "diagnostics", "1h");
    w.smtp.wait_for("admin@example.test", "requested");

    // Without approval: nothing but its own account.
    for (path, status) in probe(&w, &token) {
        assert_eq!(status, 403, "unapproved support on {path}");
    }
    // The vendor never approves, nor the requester.
    for cli in [&w.op1, &w.sup2, &w.sup1] {
        cli.fail(&["support", "approve", &id, "--comment", "ok"])
            .assert_stderr_contains("customer admin");
    }
    // Another support user does not even see it, nor list it.
    w.sup2.fail(&["support", "show", &id]);
    let listed = w.sup2.ok(&["--output", "json", "support", "list"]).json();
    assert!(json_items(&listed).is_empty(), "{listed}");
    let pending = w
        .admin
        .ok(&["--output", "json", "support", "list", "--pending"])
        .json();
    assert_eq!(json_items(&pending).len(), 1, "{pending}");

    let approved = w
        .admin
        .ok(&[
            "--output",
            "json",
            "support",
            "approve",
            &id,
            "--comment",
            "ok",
        ])
        .json();
    assert_eq!(approved["state"], "approved", "{approved}");
    w.smtp.wait_for("admin@example.test", "approved");

    // Diagnostics: the instance's facts, the public health and metrics; never the audit
    // trail, a credential or a recording.
    let [instance, audit, reveal, recording] = probe(&w, &token);
    assert_eq!(instance.1, 200, "{instance:?}");
    for (path, status) in [audit, reveal, recording] {
        assert_eq!(status, 403, "support with a diagnostics grant on {path}");
    }
    let api = w.server.api();
    assert_eq!(api.get("/healthz", Some(&token)).status, 200);
    assert_eq!(api.get("/metrics", Some(&token)).status, 200);
    // The redacted configuration: the settings as the file has them, the webhook's secret path
    // and query gone.
    let config = w
        .sup1
        .ok(&["--output", "json", "diagnostics", "config"])
        .json();
    assert_eq!(config["settings"]["support"]["tick_seconds"], 1, "{config}");
    assert_eq!(
        config["settings"]["notify"]["smtp_host"], "127.0.0.1",
        "{config}"
    );
    assert_eq!(
        config["settings"]["alerts"]["webhook_url"],
        "https://hooks.example/[redacted]?[redacted]"
    );
    let text = w.sup1.ok(&["diagnostics", "config"]).stdout;
    for secret in ["HOOKSECRET", "QUERYSECRET"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(text.contains("mode:          on-prem"), "{text}");
    // The log's tail: the server's own lines, never a secret.
    let logs = w
        .sup1
        .ok(&["--output", "json", "diagnostics", "logs", "--lines", "50"])
        .json();
    let lines: Vec<&str> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("cofre server listening")),
        "{lines:#?}"
    );
    assert!(lines.len() <= 50 && logs["total"].as_u64().unwrap() >= lines.len() as u64);
    assert!(!lines.iter().any(|l| l.contains("root-pw-5521")));
    w.sup1
        .fail(&["diagnostics", "logs", "--lines", "0"])
        .assert_stderr_contains("lines");

    // Every call under the grant is in its activity, with the grant's id.
    let entries = activity(&w, &id);
    for path in [
        "/api/v1/instance",
        "/api/v1/audit",
        "/api/v1/targets/db01/credentials/root/reveal",
        "/api/v1/diagnostics/config",
        "/api/v1/diagnostics/logs",
    ] {
        assert!(
            entries.iter().any(|e| e["action"] == "support.call"
                && e["object"] == format!("api:{path}")
                && e["details"]["support_grant"] == id.as_str()),
            "no call to {path} in {entries:#?}"
        );
    }
    w.sup1.ok(&["support", "activity", &id]);

    // Revoked: the next call is refused at once.
    w.admin.ok(&["support", "revoke", &id]);
    w.smtp.wait_for("admin@example.test", "revoked");
    assert_eq!(api.get("/api/v1/instance", Some(&token)).status, 403);
    assert_eq!(
        api.get("/api/v1/diagnostics/logs", Some(&token)).status,
        403
    );
    let shown = w
        .admin
        .ok(&["--output", "json", "support", "show", &id])
        .json();
    assert_eq!(shown["state"], "revoked");
}

#[test]
fn orbit_and_audit_grants_end_on_time_and_an_undecided_request_expires() {
    grants_end(Backend::Sqlite);
}

#[test]
fn orbit_and_audit_grants_end_on_time_and_an_undecided_request_expires_postgres() {
    grants_end(Backend::Postgres);
}

fn grants_end(backend: Backend) {
    let Some(w) = world(backend) else {
        return;
    };
    let token = w.sup1.token();
    let api = w.server.api();
    // An orbit grant: the operations plane (on-prem), still not the audit trail.
    let orbit = request(&w.sup1, "orbit", "1h");
    w.admin
        .ok(&["support", "approve", &orbit, "--comment", "ok"]);
    assert_eq!(api.get("/api/v1/backup/status", Some(&token)).status, 200);
    assert_eq!(api.get("/api/v1/snapshots", Some(&token)).status, 200);
    assert_eq!(api.get("/api/v1/audit", Some(&token)).status, 403);
    w.sup1.ok(&["support", "revoke", &orbit]);
    assert_eq!(api.get("/api/v1/snapshots", Some(&token)).status, 403);

    let id = request(&w.sup1, "audit", "5s");
    w.admin.ok(&["support", "approve", &id, "--comment", "ok"]);
    assert_eq!(api.get("/api/v1/audit", Some(&token)).status, 200);
    assert_eq!(api.get("/api/v1/instance", Some(&token)).status, 403);
    // The end is announced when it comes; from then on the next call is refused.
    w.smtp.wait_for("admin@example.test", "ended");
    assert_eq!(api.get("/api/v1/audit", Some(&token)).status, 403);
    let shown = w
        .admin
        .ok(&["--output", "json", "support", "show", &id])
        .json();
    assert_eq!(shown["state"], "ended");

    // Nobody decides: the request expires by itself (request_expiry_seconds = 3) and cannot be
    // approved any more.
    let late = request(&w.sup2, "diagnostics", "1h");
    w.smtp.wait_for("admin@example.test", "expired");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = w
            .admin
            .ok(&["--output", "json", "support", "show", &late])
            .json();
        if shown["state"] == "expired" {
            break;
        }
        assert!(Instant::now() < deadline, "not expired: {shown}");
        std::thread::sleep(Duration::from_millis(200));
    }
    w.admin
        .fail(&["support", "approve", &late, "--comment", "ok"])
        .assert_stderr_contains("pending");
    let pending = w
        .admin
        .ok(&["--output", "json", "support", "list", "--pending"])
        .json();
    assert!(json_items(&pending).is_empty(), "{pending}");
}
