//! Accounts: lockout after repeated failures, and TOTP (RFC 6238) enrolment and login.

use crate::harness::*;
use serde_json::Value;

fn user_json(admin: &Cli, name: &str) -> Value {
    admin.ok(&["--output", "json", "user", "show", name]).json()
}

#[test]
fn lockout_after_five_failures() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    let (_alice, _, alice_pw) = add_user_cli(&inst, &server, &admin, "alice", "user", &[]);
    // A second device of alice's, so her saved session stays out of it.
    let device = Cli::new(&inst, "alice-laptop").at(&server);
    let login = ["login", "--user", "alice", "--password-stdin"];

    let wrong: Vec<String> = (1..=5).map(|i| format!("{alice_pw}-typo{i}")).collect();
    for (i, w) in wrong.iter().enumerate() {
        let out = device.fail_in(&login, &format!("{w}\n"));
        if i < 4 {
            out.assert_stderr_contains("invalid_credentials");
        }
    }
    // The right password, too late.
    device
        .fail_in(&login, &format!("{alice_pw}\n"))
        .assert_stderr_contains("account_locked");
    server
        .api()
        .login("alice", &alice_pw)
        .assert_error(423, "account_locked");
    assert_eq!(user_json(&admin, "alice")["locked"], true);

    admin.ok(&["user", "unlock", "alice"]);
    assert_eq!(user_json(&admin, "alice")["locked"], false);
    device
        .login("alice", &alice_pw)
        .assert_stdout_contains("logged in as alice (user)");

    let export = admin.ok(&["audit", "export", "--format", "jsonl"]).stdout;
    let entries = parse_export(&export);
    let failures = entries
        .iter()
        .filter(|e| {
            e["action"] == "auth.login_failed" && e["actor"] == "alice" && e["outcome"] != "ok"
        })
        .count();
    assert!(
        failures >= 5,
        "the 5 failed logins are in the audit export ({failures} found):\n{export}"
    );
    assert!(
        entries.iter().any(|e| e["actor"] == "alice"
            && e["outcome"] != "ok"
            && e["action"] != "auth.login_failed"
            || e["details"]["locked"] == true),
        "the lock (or the refused login while locked) is in the audit export:\n{export}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"].as_str().is_some_and(|a| a.contains("unlock"))),
        "the unlock is in the audit export:\n{export}"
    );
    for w in &wrong {
        assert!(
            !export.contains(w.as_str()),
            "a mistyped password is in the audit export"
        );
    }
    assert!(!export.contains(&alice_pw));
}

#[test]
fn totp_enrolment_and_login() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    let (alice, _, alice_pw) = add_user_cli(&inst, &server, &admin, "alice", "user", &[]);

    let enroll = alice.ok(&["totp", "enroll"]);
    let secret = enroll.value_after("secret:");
    let uri = enroll.value_after("uri:");
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(
        uri.contains(&format!("secret={secret}")),
        "the URI carries the same secret: {uri}"
    );
    for (param, default) in [("algorithm=", "SHA1"), ("digits=", "6"), ("period=", "30")] {
        if let Some(v) = uri.split(['?', '&']).find_map(|p| p.strip_prefix(param)) {
            assert_eq!(v, default, "{uri}");
        }
    }
    let seed = base32_decode(&secret);
    assert!(seed.len() >= 16, "a TOTP secret of at least 128 bits");

    // Not active until confirmed: a wrong code is refused, naming the field.
    let step = current_step();
    let wrong = ["000000", "123456", "999999", "424242"]
        .into_iter()
        .find(|c| (step.saturating_sub(2)..=step + 3).all(|s| totp_at_step(&seed, s) != *c))
        .expect("a code that is surely wrong");
    alice
        .fail(&["totp", "confirm", wrong])
        .assert_stderr_contains("code");
    let confirm_step = current_step();
    alice.ok(&["totp", "confirm", &totp_at_step(&seed, confirm_step)]);
    assert_eq!(user_json(&admin, "alice")["totp_enabled"], true);

    let device = Cli::new(&inst, "alice-phone").at(&server);
    let login = ["login", "--user", "alice", "--password-stdin"];
    device
        .fail_in(&login, &format!("{alice_pw}\n"))
        .assert_stderr_contains("totp_required");
    let mut with_code = login.to_vec();
    with_code.extend(["--totp", wrong]);
    let out = device.fail_in(&with_code, &format!("{alice_pw}\n"));
    assert!(
        out.stderr.to_lowercase().contains("totp"),
        "a wrong code is called that:\n{}",
        out.stderr
    );

    // The next step's code: within the accepted window and never used before.
    let used = current_step().max(confirm_step) + 1;
    let code = totp_at_step(&seed, used);
    let mut with_code = login.to_vec();
    with_code.extend(["--totp", &code]);
    device
        .ok_in(&with_code, &format!("{alice_pw}\n"))
        .assert_stdout_contains("logged in as alice (user)");
    let device = Cli {
        server: None,
        fingerprint: None,
        ..device
    };
    device.ok(&["whoami"]).assert_stdout_contains("alice");

    // A code works once.
    let replay = Cli::new(&inst, "alice-thief").at(&server);
    replay.fail_in(&with_code, &format!("{alice_pw}\n"));

    // Two logins at the same moment with one fresh code: exactly one gets in (the step is read
    // and written inside the login's write transaction).
    // The next unused step must be inside the accepted window: wait for the clock to get there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    while current_step() < used {
        assert!(
            std::time::Instant::now() < deadline,
            "the TOTP step advances"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let fresh = totp_at_step(&seed, used + 1);
    let body = serde_json::json!({"username": "alice", "password": alice_pw, "totp_code": fresh});
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let body = body.clone();
                let server = &server;
                s.spawn(move || server.api().post("/api/v1/auth/login", None, body).status)
            })
            .collect();
        racers
            .into_iter()
            .map(|h| h.join().expect("racer"))
            .collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "one code, one login: {statuses:?}"
    );

    // Replacing the TOTP in use needs a current code and the password, not only a token.
    device
        .fail(&["totp", "enroll"])
        .assert_stderr_contains("replacing the TOTP in use needs your password and a current code");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    // The race used step `used + 1`; the next code inside the window comes one step later.
    while current_step() < used + 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the TOTP step advances"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let current = totp_at_step(&seed, used + 2);
    device
        .fail_in(
            &["totp", "enroll", "--totp", &current, "--password-stdin"],
            "not-alice-password\n",
        )
        .assert_stderr_contains("invalid");
    device
        .ok_in(
            &["totp", "enroll", "--totp", &current, "--password-stdin"],
            &format!("{alice_pw}\n"),
        )
        .assert_stdout_contains("secret:");

    device.ok(&["logout"]);
    device.fail(&["whoami"]);
}
