//! Issue 2's user story end to end through the CLI, on SQLite and on PostgreSQL.

use crate::harness::*;
use serde_json::Value;

/// What the flow leaves behind, for tests that build on it (secret_logs).
pub(crate) struct Flow {
    // Field order is drop order: the server goes before the instance (and its database).
    pub server: Server,
    pub admin: Cli,
    pub alice: Cli,
    pub carol: Cli,
    /// Every secret value the flow handled, with a label for messages.
    pub secrets: Vec<(String, String)>,
    pub inst: Instance,
}

pub(crate) const REASON: &str = "INC-42 disk full";

pub(crate) fn run_flow(backend: Backend, server_env: &[(&str, &str)]) -> Flow {
    let inst = Instance::new(backend);
    let server = inst.start_with_env(server_env);

    // Start-up output: the listening line, the fingerprint, the admin password file, then `ready`.
    let lines = server.stdout_lines();
    assert_eq!(
        lines.last().map(String::as_str),
        Some("ready"),
        "`ready` is the last line:\n{lines:#?}"
    );
    assert!(
        !server.started_sealed,
        "the embedded default unseals itself from the key file"
    );
    let cert_path = inst.data_dir.join("tls").join("cert.pem");
    {
        use rustls::pki_types::pem::PemObject;
        use sha2::{Digest, Sha256};
        let cert = rustls::pki_types::CertificateDer::from_pem_file(&cert_path)
            .unwrap_or_else(|e| panic!("{}: {e}", cert_path.display()));
        assert_eq!(
            hex::encode(Sha256::digest(cert.as_ref())),
            server.fingerprint,
            "the printed fingerprint must be the SHA-256 of the certificate the server presents"
        );
    }
    let admin_otp = server.initial_admin_password();

    // Admin: one-time password from the file, replaced at first login.
    let (admin, admin_pw) = admin_cli_with(&inst, &server, &admin_otp);
    admin.ok(&["whoami"]).assert_stdout_contains("admin");
    server
        .api()
        .login("admin", &admin_otp)
        .assert_error(401, "invalid_credentials");
    let admin_token = admin.token();

    // TLS trust: a wrong pin is refused; --ca-cert trusts the server; nothing trusts it by default.
    let stranger = Cli {
        fingerprint: Some("00".repeat(32)),
        server: Some(server.url.clone()),
        ..Cli::new(&inst, "wrong-pin")
    };
    let wrong_pin = stranger.fail_in(
        &["login", "--user", "admin", "--password-stdin"],
        &format!("{admin_pw}\n"),
    );
    assert_tls_refusal(&wrong_pin);
    assert!(!wrong_pin.all().contains(&admin_pw));
    let mut by_ca = Cli::new(&inst, "by-ca");
    by_ca.server = Some(server.url.clone());
    by_ca.env.push(("COFRE_TOKEN".into(), admin_token.clone()));
    by_ca
        .ok(&["--ca-cert", cert_path.to_str().unwrap(), "whoami"])
        .assert_stdout_contains("admin");
    assert_tls_refusal(&by_ca.fail(&["whoami"]));

    // Alice, in group ops, logs in with her own client config.
    let alice_out = admin.ok(&["user", "add", "alice", "--role", "user", "--group", "ops"]);
    let alice_otp = one_time_password(&alice_out);
    let alice_pw = new_password("alice");
    let alice = Cli::new(&inst, "alice").at(&server);
    alice
        .first_login("alice", &alice_otp, &alice_pw)
        .assert_stdout_contains("logged in as alice (user)");
    let alice = Cli {
        server: None,
        fingerprint: None,
        ..alice
    };
    alice.ok(&["whoami"]).assert_stdout_contains("alice");
    assert_ne!(alice.config, admin.config);
    admin.ok(&["whoami"]).assert_stdout_contains("admin");

    admin.ok(&[
        "target", "add", "db01", "--host", "10.0.0.5", "--port", "22", "--tag", "prod",
    ]);
    admin
        .ok(&["target", "show", "db01"])
        .assert_stdout_contains("10.0.0.5");
    admin.ok(&["target", "list"]).assert_stdout_contains("db01");

    let secret1 = format!("root-v1-{}", random_hex(24));
    admin.ok_in(
        &["credential", "add", "db01", "root", "--password-stdin"],
        &format!("{secret1}\n"),
    );
    let listed = admin.ok(&["credential", "list", "db01"]);
    listed.assert_stdout_contains("root");
    assert!(
        !listed.all().contains(&secret1),
        "listing never shows a secret"
    );

    // No policy yet: alice is refused, and the refusal says why.
    let refused = alice.fail(&["credential", "reveal", "db01", "root", "--reason", REASON]);
    refused.assert_stderr_contains("policy_denied");
    assert!(!refused.all().contains(&secret1));

    admin.ok(&[
        "policy",
        "add",
        "ops-prod",
        "--group",
        "ops",
        "--targets",
        "tag:prod",
        "--allow",
        "session,reveal",
        "--outcome",
        "justify",
    ]);
    admin
        .ok(&["policy", "list"])
        .assert_stdout_contains("ops-prod");

    // `justify` without a reason: refused, naming the field.
    let no_reason = alice.fail(&["credential", "reveal", "db01", "root"]);
    no_reason.assert_stderr_contains("field reason");
    assert!(!no_reason.all().contains(&secret1));

    let revealed = alice.ok(&["credential", "reveal", "db01", "root", "--reason", REASON]);
    assert_eq!(
        revealed.stdout,
        format!("{secret1}\n"),
        "reveal prints exactly the secret and a newline"
    );

    // Carol, a second admin, so that the history shows who made each version. Made after the
    // policy: with two admins a new policy would wait for a second admin's approval.
    let (carol, carol_otp, carol_pw) = add_user_cli(&inst, &server, &admin, "carol", "admin", &[]);

    // A new version by carol; the old one is kept.
    let secret2 = format!("root-v2-{}", random_hex(24));
    carol.ok_in(
        &["credential", "update", "db01", "root", "--password-stdin"],
        &format!("{secret2}\n"),
    );
    let history = admin.ok(&["credential", "history", "db01", "root"]);
    assert!(!history.all().contains(&secret1) && !history.all().contains(&secret2));
    let version_line = |v: &str| -> String {
        history
            .stdout
            .lines()
            .find(|l| {
                l.split_whitespace().next().is_some_and(|first| {
                    first.trim_start_matches(['v', 'V']).trim_end_matches(':') == v
                })
            })
            .unwrap_or_else(|| {
                panic!(
                    "no line for version {v} in the history:\n{}",
                    history.stdout
                )
            })
            .to_owned()
    };
    let (v1, v2) = (version_line("1"), version_line("2"));
    assert!(
        v1.contains("admin") && !v1.contains("carol") && !v1.contains("current"),
        "version 1: {v1}"
    );
    assert!(
        v2.contains("carol") && v2.contains("current"),
        "version 2: {v2}"
    );
    assert!(
        v1.contains("password") && v2.contains("password"),
        "the kind is shown:\n{}",
        history.stdout
    );
    let hist_json = admin
        .ok(&["--output", "json", "credential", "history", "db01", "root"])
        .json();
    let items = json_items(&hist_json);
    assert_eq!(items.len(), 2, "{hist_json}");
    let by_version = |v: i64| {
        items
            .iter()
            .find(|i| i["version"] == v)
            .unwrap_or_else(|| panic!("{hist_json}"))
    };
    assert_eq!(by_version(1)["created_by"], "admin");
    assert_eq!(by_version(1)["current"], false);
    assert_eq!(by_version(2)["created_by"], "carol");
    assert_eq!(by_version(2)["current"], true);

    let current = alice.ok(&["credential", "reveal", "db01", "root", "--reason", REASON]);
    assert_eq!(current.stdout, format!("{secret2}\n"));
    let old = alice.ok(&[
        "credential",
        "reveal",
        "db01",
        "root",
        "--reason",
        "INC-43 rollback",
        "--version",
        "1",
    ]);
    assert_eq!(
        old.stdout,
        format!("{secret1}\n"),
        "--version 1 gives the old secret"
    );

    // The admin is not in ops: no policy, no secret, whatever the role.
    let admin_refused = admin.fail(&["credential", "reveal", "db01", "root", "--reason", REASON]);
    admin_refused.assert_stderr_contains("policy_denied");
    assert!(!admin_refused.all().contains(&secret2));

    // The audit trail: intact, exported, with the reason and without any secret.
    let verify = admin.ok(&["audit", "verify"]);
    let n: usize = verify
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("audit chain intact: "))
        .and_then(|rest| rest.strip_suffix(" entries"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "expected `audit chain intact: N entries`, got:\n{}",
                verify.stdout
            )
        });
    let export = admin.ok(&["audit", "export", "--format", "jsonl"]);
    let entries = parse_export(&export.stdout);
    assert!(
        n >= 10 && entries.len() >= n,
        "verify checked {n} entries, the export has {}",
        entries.len()
    );
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(
            e["seq"],
            Value::from(i as i64 + 1),
            "seq numbers run 1, 2, 3..."
        );
        if i > 0 {
            assert_eq!(
                e["prev_hash"],
                entries[i - 1]["hash"],
                "each entry links to the one before"
            );
        }
    }
    let reveals: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "credential.reveal")
        .collect();
    assert!(
        reveals.iter().any(|e| e["actor"] == "alice"
            && e["outcome"] == "ok"
            && e["details"]["reason"] == REASON),
        "a successful credential.reveal by alice with the reason:\n{}",
        export.stdout
    );
    assert!(
        reveals
            .iter()
            .any(|e| e["actor"] == "alice" && e["outcome"] != "ok"),
        "alice's refused reveal is audited too"
    );
    assert!(
        reveals
            .iter()
            .any(|e| e["actor"] == "admin" && e["outcome"] != "ok"),
        "the admin's refused reveal is audited too"
    );
    admin
        .ok(&["audit", "list"])
        .assert_stdout_contains("credential.reveal");

    let secrets: Vec<(String, String)> = vec![
        ("credential version 1".into(), secret1),
        ("credential version 2".into(), secret2),
        ("admin one-time password".into(), admin_otp),
        ("admin password".into(), admin_pw),
        ("alice one-time password".into(), alice_otp),
        ("alice password".into(), alice_pw),
        ("carol one-time password".into(), carol_otp),
        ("carol password".into(), carol_pw),
        ("admin token".into(), admin.token()),
        ("alice token".into(), alice.token()),
        ("carol token".into(), carol.token()),
    ];
    for (label, s) in &secrets {
        assert!(
            !export.stdout.contains(s.as_str()),
            "the audit export contains the {label}"
        );
    }
    Flow {
        server,
        admin,
        alice,
        carol,
        secrets,
        inst,
    }
}

/// A connection refused because the server's certificate is not trusted says so.
fn assert_tls_refusal(out: &Out) {
    let text = out.stderr.to_lowercase();
    assert!(
        ["fingerprint", "certificate", "tls"]
            .iter()
            .any(|w| text.contains(w)),
        "the refusal should say the certificate is not trusted:\n{}",
        out.stderr
    );
}

#[test]
fn flow_sqlite() {
    run_flow(Backend::Sqlite, &[("COFRE_LOG", "info")]);
}

#[test]
fn flow_postgres() {
    let flow = run_flow(Backend::Postgres, &[("COFRE_LOG", "info")]);
    assert!(flow.inst.pg.is_some());
    assert!(
        !flow.inst.data_dir.join("cofre.db").exists(),
        "with --database-url postgres://... nothing goes to the SQLite file"
    );
}

/// `cofre audit list | head -1`: when the reader goes away the CLI ends quietly with status 0, as
/// Unix tools do, never with a panic and a backtrace.
#[test]
fn empty_lists_say_so_and_a_closed_stdout_ends_the_cli_quietly() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    // An empty list says so (on stderr: counting lines still gives 0).
    for (args, note) in [
        (&["session", "list"][..], "no sessions"),
        (&["request", "list"][..], "no requests"),
        (&["target", "list"][..], "no targets"),
    ] {
        let out = admin.ok(args);
        assert!(out.stdout.is_empty(), "{out:?}");
        out.assert_stderr_contains(note);
    }
    for i in 0..5 {
        admin.ok(&["group", "add", &format!("g{i}")]);
    }

    // The reader is gone before the first line is written.
    let (mut cmd, shown) = admin.command(&["audit", "list"]);
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cofre");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("cofre ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{shown}: {stderr}");
    assert!(!stderr.contains("panicked"), "{shown}: {stderr}");

    // As a user types it, in a real shell pipe; pipefail reports cofre's own status.
    let (cmd, shown) = admin.command(&["audit", "list"]);
    let mut sh = std::process::Command::new("bash");
    sh.args(["-c", "set -o pipefail; \"$@\" | head -1", "sh"])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .current_dir(cmd.get_current_dir().expect("dir"));
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    let out = run_command(sh, None, &format!("{shown} | head -1"));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}

/// HTTPS only, from the first visit on (HSTS), nothing cached, and a generated certificate that
/// says when it stops being trusted (rcgen's default would run to the year 4096).
#[test]
fn https_headers_and_certificate_validity() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let r = server.api().get("/healthz", None);
    assert_eq!(r.status, 200, "{}", r.text);
    for (name, value) in [
        ("strict-transport-security", "max-age=31536000"),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
    ] {
        assert_eq!(
            r.headers.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{name}: {:?}",
            r.headers
        );
    }
    let cert = inst.path().join("data").join("tls").join("cert.pem");
    let checkend = |seconds: u64| {
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(["x509", "-noout", "-checkend", &seconds.to_string(), "-in"])
            .arg(&cert);
        run_command(cmd, None, "openssl x509 -checkend").code
    };
    assert_eq!(checkend(0), Some(0), "valid now");
    assert_eq!(checkend(800 * 86_400), Some(0), "valid for about two years");
    assert_eq!(checkend(830 * 86_400), Some(1), "but not for ever");
}
