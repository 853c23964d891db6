//! No secret value ever reaches the server's logs, even at debug level.

use crate::flow::run_flow;
use crate::harness::*;

#[test]
fn no_secret_in_debug_logs() {
    let mut flow = run_flow(Backend::Sqlite, &[("COFRE_LOG", "debug")]);
    let mut secrets = flow.secrets.clone();

    // More secrets through the server: a TOTP enrolment, a password change, a password reset.
    let enroll = flow.alice.ok(&["totp", "enroll"]);
    let totp_secret = enroll.value_after("secret:");
    let uri = enroll.value_after("uri:");
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    let seed = base32_decode(&totp_secret);
    flow.alice
        .ok(&["totp", "confirm", &totp_at_step(&seed, current_step())]);
    secrets.push(("TOTP secret".into(), totp_secret));
    secrets.push(("otpauth URI".into(), uri));

    let carol_old = secrets
        .iter()
        .find(|(l, _)| l == "carol password")
        .map(|(_, s)| s.clone())
        .expect("carol's password");
    let carol_new = new_password("carol2");
    flow.carol.ok_in(
        &["passwd", "--stdin"],
        &format!("{carol_old}\n{carol_new}\n"),
    );
    // The change ended carol's session: she logs in again with the new password.
    flow.carol.login("carol", &carol_new).assert_ok();
    secrets.push(("carol's changed password".into(), carol_new));

    // A reset, then the new one-time password used over HTTP: its password-change-only token and
    // the password set with it are secrets too. Carol resets her own: another admin's reset of
    // her password would wait for a second admin's approval (dual control).
    let reset = flow.carol.ok(&["user", "reset-password", "carol"]);
    let held = flow.admin.ok(&["user", "reset-password", "alice"]);
    held_change(&held);
    assert!(
        !held.all().contains("one-time password"),
        "a held reset's answer holds no password: {}",
        held.all()
    );
    let reset_otp = one_time_password(&reset);
    secrets.push(("carol's reset one-time password".into(), reset_otp.clone()));
    let api = flow.server.api();
    let r = api.login("carol", &reset_otp);
    r.assert_ok();
    let change_token = r.body["token"].as_str().expect("token").to_owned();
    let carol_new2 = new_password("carol3");
    api.post(
        "/api/v1/auth/password",
        Some(&change_token),
        serde_json::json!({"current_password": reset_otp, "new_password": carol_new2}),
    )
    .assert_ok();
    secrets.push(("carol's password-change token".into(), change_token));
    secrets.push(("carol's password set over HTTP".into(), carol_new2.clone()));
    let r = api.login("carol", &carol_new2);
    r.assert_ok();
    secrets.push((
        "carol's token from an HTTP login".into(),
        r.body["token"].as_str().expect("token").to_owned(),
    ));

    flow.server.stop();
    let stderr = flow.server.stderr_text();
    let stdout = flow.server.stdout_text();

    // The log is really at debug level and really covers the requests (else this test proves nothing).
    assert!(
        stderr.len() > 2_000,
        "the debug log is suspiciously short:\n{stderr}"
    );
    assert!(
        stderr.contains("DEBUG") || stderr.contains("\"debug\""),
        "COFRE_LOG=debug should produce debug lines:\n{}",
        &stderr[..stderr.len().min(3000)]
    );
    assert!(
        stderr.contains("/api/v1/targets/db01/credentials"),
        "the debug log should show the requests, credential ones included"
    );

    assert!(secrets.len() >= 15);
    let mut leaks = Vec::new();
    for (label, secret) in &secrets {
        assert!(secret.len() >= 8, "{label} is too short to search for");
        if stderr.contains(secret.as_str()) {
            leaks.push(format!("{label} in the server's stderr"));
        }
        if stdout.contains(secret.as_str()) {
            leaks.push(format!("{label} in the server's stdout"));
        }
    }
    assert!(leaks.is_empty(), "secrets leaked into the logs: {leaks:#?}");

    // Encrypted at rest: neither credential version nor the TOTP seed is in the database in clear.
    let mut db_bytes = Vec::new();
    for entry in std::fs::read_dir(&flow.inst.data_dir).expect("data dir") {
        let entry = entry.expect("entry");
        if entry.file_name().to_string_lossy().starts_with("cofre.db") {
            db_bytes.extend(std::fs::read(entry.path()).expect("read the database"));
        }
    }
    assert!(
        db_bytes.len() > 4096,
        "the SQLite database should be in the data dir"
    );
    for (label, secret) in secrets
        .iter()
        .filter(|(l, _)| l.starts_with("credential") || l.starts_with("TOTP"))
    {
        assert!(
            !contains_bytes(&db_bytes, secret.as_bytes()),
            "the {label} is stored in clear in the database"
        );
    }
}

fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
