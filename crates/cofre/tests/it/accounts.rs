//! Accounts: the per-address back-off and the account lock, the same answer for unknown users,
//! password strength, and TOTP (RFC 6238) enrolment and login.

use crate::harness::*;
use serde_json::Value;

fn user_json(admin: &Cli, name: &str) -> Value {
    admin.ok(&["--output", "json", "user", "show", name]).json()
}

/// Five wrong passwords from one address make that address wait (429, back-off); the real user
/// logs in from another address at once. Failures from `lockout_sources` addresses lock the
/// account for password logins everywhere, end its tokens, and an admin unlocks it.
#[test]
fn lockout_after_five_failures() {
    let inst = Instance::new(Backend::Sqlite);
    let config = inst.path().join("cofre.toml");
    std::fs::write(&config, "lockout_sources = 2\n").unwrap();
    let server = inst.start_with_env(&[("COFRE_CONFIG", config.to_str().unwrap())]);
    let (admin, _) = admin_cli(&inst, &server);
    let (alice, _, alice_pw) = add_user_cli(&inst, &server, &admin, "alice", "user", &[]);
    // A second device of alice's, so her saved session stays out of it.
    let device = Cli::new(&inst, "alice-laptop").at(&server);
    let login = ["login", "--user", "alice", "--password-stdin"];

    let wrong: Vec<String> = (1..=5).map(|i| format!("{alice_pw}-typo{i}")).collect();
    for w in &wrong {
        device
            .fail_in(&login, &format!("{w}\n"))
            .assert_stderr_contains("invalid_credentials");
    }
    // The right password, from the address that failed: it must wait.
    device
        .fail_in(&login, &format!("{alice_pw}\n"))
        .assert_stderr_contains("login_delayed");
    let r = server.api().login("alice", &alice_pw);
    r.assert_error(429, "login_delayed");
    assert!(
        r.text
            .contains("other addresses and SSH keys are not affected"),
        "{}",
        r.text
    );
    // From another address the real user gets in, and the account is not locked.
    server
        .api_from("127.0.0.2")
        .login("alice", &alice_pw)
        .assert_ok();
    assert_eq!(user_json(&admin, "alice")["locked"], false);
    alice.ok(&["whoami"]).assert_stdout_contains("alice");

    // Failures from two addresses (lockout_sources = 2): the account is locked for passwords
    // from anywhere, and alice's tokens end.
    let third = server.api_from("127.0.0.3");
    for _ in 0..5 {
        third
            .login("alice", "not-alice-password-at-all")
            .assert_error(401, "invalid_credentials");
    }
    server
        .api_from("127.0.0.4")
        .login("alice", &alice_pw)
        .assert_error(423, "account_locked");
    assert_eq!(user_json(&admin, "alice")["locked"], true);
    alice
        .fail(&["whoami"])
        .assert_stderr_contains("unauthenticated");

    admin.ok(&["user", "unlock", "alice"]);
    assert_eq!(user_json(&admin, "alice")["locked"], false);
    device
        .login("alice", &alice_pw)
        .assert_stdout_contains("logged in as alice (user)");

    let export = admin.ok(&["audit", "export", "--format", "jsonl"]).stdout;
    let entries = parse_export(&export);
    let failures: Vec<&Value> = entries
        .iter()
        .filter(|e| {
            e["action"] == "auth.login_failed" && e["actor"] == "alice" && e["outcome"] != "ok"
        })
        .collect();
    assert_eq!(
        failures.len(),
        10,
        "every failed login is in the audit export:\n{export}"
    );
    assert!(
        failures
            .iter()
            .any(|e| e["details"]["source"] == "127.0.0.3"
                && e["details"]["failures"] == 5
                && e["details"]["locked"] == true),
        "the lock names its source and count:\n{export}"
    );
    assert!(
        entries.iter().any(|e| e["action"] == "auth.login_refused"
            && e["details"]["why"] == "address waiting after repeated failures"
            && e["details"]["source"] == "127.0.0.1"),
        "the refused login while waiting is in the audit export:\n{export}"
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

/// An unknown user and a wrong password for a real one get the same status and body, cost an
/// argon2 verification alike, and start their back-off at the same count.
#[test]
fn unknown_and_existing_users_get_the_same_answer() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    add_user_cli(&inst, &server, &admin, "alice", "user", &[]);
    let answers = |api: &Api, user: &str| -> Vec<(u16, String, String)> {
        (0..6)
            .map(|i| {
                let r = api.login(user, &format!("wrong-password-{i}"));
                // The 429's message names the moment the wait ends; everything else is equal.
                let text = if r.status == 429 {
                    String::new()
                } else {
                    r.text.clone()
                };
                (r.status, r.code().to_owned(), text)
            })
            .collect()
    };
    let known_answers = answers(&server.api_from("127.0.0.5"), "alice");
    let unknown_answers = answers(&server.api_from("127.0.0.6"), "mallory");
    assert_eq!(
        known_answers, unknown_answers,
        "the same statuses and bodies, the back-off (429) starting at the same attempt"
    );
    assert_eq!(known_answers[4].0, 401);
    assert_eq!(known_answers[5].0, 429);

    // Timing: alternate known and unknown names (each from addresses of their own, under the
    // threshold) so that the machine's load falls on both alike, and compare the fastest of
    // each, which is the work itself: an argon2 verification for both. Without it, an unknown
    // name would answer in a small fraction of the time.
    let mut known_times = Vec::new();
    let mut unknown_times = Vec::new();
    for round in 0..3 {
        let k_api = server.api_from(&format!("127.0.2.{}", 2 * round + 1));
        let u_api = server.api_from(&format!("127.0.2.{}", 2 * round + 2));
        // The first request of a client pays its TLS handshake: not counted.
        k_api.get("/healthz", None);
        u_api.get("/healthz", None);
        for i in 0..4 {
            for (api, user, times) in [
                (&k_api, "alice", &mut known_times),
                (&u_api, "mallory", &mut unknown_times),
            ] {
                let t = std::time::Instant::now();
                let r = api.login(user, &format!("wrong-{round}-{i}"));
                times.push(t.elapsed().as_micros());
                assert_eq!(r.status, 401, "{}", r.text);
            }
        }
    }
    let k = known_times.iter().min().copied().unwrap_or(0);
    let u = unknown_times.iter().min().copied().unwrap_or(0);
    assert!(
        u * 3 >= k && k * 3 >= u,
        "fastest unknown {u} us vs fastest known {k} us: the same work"
    );
}

/// Wrong current passwords at `POST /auth/password` count like wrong logins: after five, that
/// address waits, even with the right one, and a login from there waits too.
#[test]
fn wrong_current_passwords_count_as_failures() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    let (_, _, alice_pw) = add_user_cli(&inst, &server, &admin, "alice", "user", &[]);
    let thief = server.api_from("127.0.0.7");
    let token = thief.login("alice", &alice_pw).assert_ok().body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let change = |current: &str| {
        thief.post(
            "/api/v1/auth/password",
            Some(&token),
            serde_json::json!({"current_password": current, "new_password": new_password("alice")}),
        )
    };
    for i in 0..5 {
        change(&format!("guess-{i}-of-the-password")).assert_error(403, "invalid_credentials");
    }
    change(&alice_pw).assert_error(429, "login_delayed");
    thief
        .login("alice", &alice_pw)
        .assert_error(429, "login_delayed");
    server.api().login("alice", &alice_pw).assert_ok();
    let export = admin.ok(&["audit", "export", "--format", "jsonl"]).stdout;
    let counted = parse_export(&export)
        .into_iter()
        .filter(|e| {
            e["action"] == "auth.password_change"
                && e["outcome"] == "denied"
                && e["details"]["why"] == "wrong current password"
                && e["details"]["source"] == "127.0.0.7"
        })
        .count();
    assert_eq!(counted, 5, "{export}");
}

/// Weak new passwords are refused with zxcvbn's reason, naming the field; the password is never
/// in the answer.
#[test]
fn weak_passwords_are_refused() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, admin_pw) = admin_cli(&inst, &server);
    let api = server.api();
    let token = api.login("admin", &admin_pw).assert_ok().body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for weak in [
        "password1234",
        "admin-admin-admin",
        "qwertyuiopasdf",
        "cofre-cofre-2024",
    ] {
        let r = api.post(
            "/api/v1/auth/password",
            Some(&token),
            serde_json::json!({"current_password": admin_pw, "new_password": weak}),
        );
        r.assert_error(400, "invalid_field");
        assert_eq!(r.field(), Some("new_password"), "{}", r.text);
        assert!(r.text.contains("too weak"), "{}", r.text);
        assert!(
            !r.text.contains(weak),
            "the password is not echoed: {}",
            r.text
        );
    }
    // The same through the CLI's first login, with a one-time password.
    let otp = one_time_password(&admin.ok(&["user", "add", "bob", "--role", "user"]));
    let bob = Cli::new(&inst, "bob").at(&server);
    let out = bob.run(
        &["login", "--user", "bob", "--password-stdin"],
        Some(&format!("{otp}\nbob-bob-bob-bob\n")),
    );
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("new_password: too weak") && !out.stderr.contains("bob-bob-bob-bob"),
        "{out:?}"
    );
    // A strong one passes.
    bob.first_login("bob", &otp, &new_password("bob"))
        .assert_stdout_contains("logged in as bob (user)");
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
