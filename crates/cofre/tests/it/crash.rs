//! kill -9 right after acknowledged writes: after a restart every acknowledged write is there and
//! the audit chain verifies.

use crate::harness::*;

fn crash_keeps_acknowledged_writes(backend: Backend) {
    let inst = Instance::new(backend);
    let mut server = inst.start();
    let (admin, admin_pw) = admin_cli(&inst, &server);
    admin.ok(&[
        "target", "add", "db01", "--host", "10.0.0.5", "--tag", "prod",
    ]);
    grant_admin_reveal(&admin, "allow");
    let creds: Vec<(String, String)> = (1..=20)
        .map(|i| {
            (
                format!("acct{i:02}"),
                format!("secret-{i:02}-{}", random_hex(20)),
            )
        })
        .collect();
    for (account, secret) in &creds {
        // `ok_in` asserts exit 0: the CLI saw the server acknowledge the write.
        admin.ok_in(
            &["credential", "add", "db01", account, "--password-stdin"],
            &format!("{secret}\n"),
        );
    }
    let fingerprint = server.fingerprint.clone();
    server.kill9();
    assert!(!server.is_running());

    let server = inst.start();
    assert!(
        server.admin_password_file.is_none(),
        "a restart is not a first start: no new admin password"
    );
    assert_eq!(
        server.fingerprint, fingerprint,
        "the TLS identity survives the restart"
    );
    let admin = Cli {
        server: Some(server.url.clone()),
        fingerprint: Some(server.fingerprint.clone()),
        ..admin
    };
    admin
        .login("admin", &admin_pw)
        .assert_stdout_contains("logged in as admin (admin)");
    let admin = Cli {
        server: None,
        fingerprint: None,
        ..admin
    };

    let listed = admin
        .ok(&["--output", "json", "credential", "list", "db01"])
        .json();
    let items = json_items(&listed);
    let accounts: Vec<&str> = items.iter().filter_map(|c| c["account"].as_str()).collect();
    for (account, secret) in &creds {
        assert!(
            accounts.contains(&account.as_str()),
            "{account} is missing after the crash: {listed}"
        );
        let out = admin.ok(&["credential", "reveal", "db01", account]);
        assert_eq!(
            out.stdout,
            format!("{secret}\n"),
            "{account} after the crash"
        );
    }
    admin
        .ok(&["audit", "verify"])
        .assert_stdout_contains("audit chain intact");
    let entries = parse_export(&admin.ok(&["audit", "export", "--format", "jsonl"]).stdout);
    for (account, _) in &creds {
        assert!(
            entries.iter().any(|e| {
                e["object"]
                    .as_str()
                    .is_some_and(|o| o.contains(&format!("db01/{account}")))
                    && e["action"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("credential.") && a != "credential.reveal")
            }),
            "the audit entry of {account}'s creation is missing after the crash"
        );
    }
}

#[test]
fn crash_sqlite() {
    crash_keeps_acknowledged_writes(Backend::Sqlite);
}

#[test]
fn crash_postgres() {
    crash_keeps_acknowledged_writes(Backend::Postgres);
}
