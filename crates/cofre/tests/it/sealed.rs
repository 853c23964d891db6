//! Shamir-sealed start: nothing secret can be read until k valid shares are given; k-1 are not
//! enough; a mistyped or foreign share is refused with a clear message.

use crate::harness::*;
use serde_json::json;

/// One character of the share's data part replaced by another character of the same alphabet, so
/// only the checksum can tell.
fn mistype(share: &str) -> String {
    let parts: Vec<&str> = share.split('-').collect();
    // cofre-unseal-<id>-<threshold>-<n>-<data>-<checksum>
    assert_eq!(parts.len(), 7, "unexpected share shape: {share}");
    let data = parts[5];
    let mut chars: Vec<char> = data.chars().collect();
    let i = chars.len() / 2;
    chars[i] = match chars[i] {
        'a'..='y' | 'A'..='Y' | '2'..='6' => (chars[i] as u8 + 1) as char,
        'z' => 'a',
        'Z' => 'A',
        '7' => '2',
        c => {
            if c == '0' {
                '1'
            } else {
                '0'
            }
        }
    };
    let mut p: Vec<String> = parts.iter().map(|s| (*s).to_owned()).collect();
    p[5] = chars.into_iter().collect();
    let out = p.join("-");
    assert_ne!(out, share);
    assert_eq!(out.len(), share.len());
    out
}

fn unseal(cli: &Cli, share: &str) -> Out {
    cli.run(
        &["operator", "unseal", "--share-stdin"],
        Some(&format!("{share}\n")),
    )
}

fn seal_status(api: &Api) -> serde_json::Value {
    let r = api.get("/api/v1/sys/seal-status", None);
    r.assert_ok();
    r.body
}

#[test]
fn sealed_start_needs_threshold_shares() {
    let inst = Instance::new(Backend::Sqlite);
    let (shares, pw_file) = inst.init_shamir(3, 2);
    let other = Instance::new(Backend::Sqlite);
    let (foreign_shares, _) = other.init_shamir(3, 2);
    let admin_otp = read_password_file(&pw_file);

    let mut server = inst.start();
    assert!(
        server.started_sealed,
        "a Shamir-sealed instance starts sealed:\n{}",
        server.stdout_text()
    );
    assert!(server
        .stdout_text()
        .contains("sealed: unseal with `cofre operator unseal`"));
    let api = server.api();
    let custodian = Cli::new(&inst, "custodian").at(&server);

    // Sealed: health says so, login and reveal are impossible, status answers.
    let h = api.get("/healthz", None);
    assert_eq!(h.status, 503, "{}", h.text);
    api.login("admin", &admin_otp).assert_error(503, "sealed");
    api.post(
        "/api/v1/targets/db01/credentials/root/reveal",
        Some("x"),
        json!({"reason": "r"}),
    )
    .assert_error(503, "sealed");
    let st = seal_status(&api);
    assert_eq!(st["sealed"], true);
    assert_eq!(st["threshold"], 2);
    assert_eq!(st["shares"], 3);
    assert_eq!(st["progress"], 0);
    assert!(!custodian
        .ok(&["operator", "seal-status"])
        .stdout
        .trim()
        .is_empty());
    let st_cli = custodian
        .ok(&["--output", "json", "operator", "seal-status"])
        .json();
    assert_eq!(st_cli["sealed"], true, "{st_cli}");
    let cli_login = Cli::new(&inst, "early").at(&server).fail_in(
        &["login", "--user", "admin", "--password-stdin"],
        &format!("{admin_otp}\n{}\n", new_password("x")),
    );
    cli_login.assert_stderr_contains("sealed");

    // One share (number 3): progress, still sealed.
    let out = unseal(&custodian, &shares[2]);
    out.assert_ok()
        .assert_stdout_contains("unseal progress: 1/2");
    assert_eq!(api.get("/healthz", None).status, 503);
    assert_eq!(seal_status(&api)["sealed"], true);

    // A mistyped share: refused, says checksum, counts for nothing.
    let out = unseal(&custodian, &mistype(&shares[0]));
    out.assert_error().assert_stderr_contains("checksum");
    // The same share again counts once only.
    unseal(&custodian, &shares[2]).assert_error();
    // A share from another instance's init.
    let out = unseal(&custodian, &foreign_shares[0]);
    out.assert_error();
    assert!(
        out.stderr.contains("another") || out.stderr.contains("share_wrong_keyring"),
        "a foreign share should be called that:\n{}",
        out.stderr
    );
    // Garbage.
    unseal(&custodian, "not-a-share").assert_error();
    let st = seal_status(&api);
    assert_eq!(st["sealed"], true, "{st}");
    assert_eq!(st["progress"], 1, "refused shares must not count: {st}");
    api.login("admin", &admin_otp).assert_error(503, "sealed");

    // The second valid share (number 1): unsealed.
    unseal(&custodian, &shares[0])
        .assert_ok()
        .assert_stdout_contains("unsealed");
    assert_eq!(api.get("/healthz", None).status, 200);
    assert_eq!(seal_status(&api)["sealed"], false);

    // Now the flow works.
    let (admin, admin_pw) = admin_cli_with(&inst, &server, &admin_otp);
    admin.ok(&[
        "target", "add", "db01", "--host", "10.0.0.5", "--tag", "prod",
    ]);
    let secret = format!("sealed-secret-{}", random_hex(20));
    admin.ok_in(
        &["credential", "add", "db01", "root", "--password-stdin"],
        &format!("{secret}\n"),
    );
    grant_admin_reveal(&admin, "allow");
    assert_eq!(
        admin.ok(&["credential", "reveal", "db01", "root"]).stdout,
        format!("{secret}\n")
    );
    let token = admin.token();

    // Restart: sealed again, and the secret stays out of reach until unsealed.
    server.stop();
    let server = inst.start();
    assert!(
        server.started_sealed,
        "a restart seals again:\n{}",
        server.stdout_text()
    );
    let api = server.api();
    assert_eq!(api.get("/healthz", None).status, 503);
    let r = api.post(
        "/api/v1/targets/db01/credentials/root/reveal",
        Some(&token),
        json!({}),
    );
    r.assert_error(503, "sealed");
    assert!(!r.text.contains(&secret));
    let admin = admin.at_with_token(&server);
    let out = admin.fail(&["credential", "reveal", "db01", "root"]);
    out.assert_stderr_contains("sealed");
    assert!(!out.all().contains(&secret));
    api.login("admin", &admin_pw).assert_error(503, "sealed");

    let custodian = Cli::new(&inst, "custodian2").at(&server);
    unseal(&custodian, &shares[1])
        .assert_ok()
        .assert_stdout_contains("unseal progress: 1/2");
    unseal(&custodian, &shares[2])
        .assert_ok()
        .assert_stdout_contains("unsealed");
    assert_eq!(
        admin.ok(&["credential", "reveal", "db01", "root"]).stdout,
        format!("{secret}\n")
    );
    admin
        .ok(&["audit", "verify"])
        .assert_stdout_contains("audit chain intact");
}
