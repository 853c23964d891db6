//! Single sign-on through a real OpenID provider: oidc-provider from npm (a certified
//! implementation), run by the test with its own users and groups (tests/browser/oidc-idp.mjs),
//! and its login pages driven in Debian's Chromium (tests/browser/oidc-login.mjs).

use crate::console_browser::{browser_dir, browser_unavailable, CHROMIUM};
use crate::gateway::Running;
use crate::harness::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CLIENT_SECRET: &str = "cofre-client-secret-5b1e";

/// The provider, its users in a file it reads at every login, and its control path.
struct Idp {
    node: Running,
    issuer: String,
    accounts: PathBuf,
}

impl Idp {
    fn start(dir: &Path, server: &Server, accounts: Value) -> Idp {
        std::fs::create_dir_all(dir).expect("idp dir");
        let accounts_file = dir.join("accounts.json");
        std::fs::write(&accounts_file, accounts.to_string()).expect("accounts");
        let config = dir.join("idp.json");
        let console_callback = format!("{}/login/sso/callback", server.url.trim_end_matches('/'));
        std::fs::write(
            &config,
            json!({
                "client_id": "cofre",
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [console_callback, "http://127.0.0.1/callback"],
                "accounts": accounts_file,
            })
            .to_string(),
        )
        .expect("idp config");
        let mut cmd = Command::new("node");
        cmd.arg(browser_dir().join("oidc-idp.mjs"))
            .arg(&config)
            .current_dir(browser_dir());
        let mut node = Running::spawn(cmd, "node oidc-idp.mjs");
        node.wait_for_stdout("\"issuer\"", Duration::from_secs(60));
        let line = node
            .stdout()
            .lines()
            .find(|l| l.contains("\"issuer\""))
            .expect("issuer line")
            .to_owned();
        let issuer = serde_json::from_str::<Value>(&line).expect("issuer JSON")["issuer"]
            .as_str()
            .expect("issuer")
            .to_owned();
        Idp {
            node,
            issuer,
            accounts: accounts_file,
        }
    }

    fn control(&self, path: &str, body: Value) -> Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            reqwest::Client::new()
                .post(format!("{}{path}", self.issuer))
                .json(&body)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}\n{}", self.node.describe()))
                .json::<Value>()
                .await
                .expect("control answer")
        })
    }

    /// From now on the token endpoint's ID tokens have this one thing wrong (or nothing).
    fn mode(&self, mode: &str) {
        assert_eq!(
            self.control("/__test/mode", json!({ "mode": mode }))["mode"],
            mode
        );
    }

    /// A new signing key replaces the old one; returns its kid.
    fn rotate(&self) -> String {
        self.control("/__test/rotate", json!({}))["kid"]
            .as_str()
            .expect("kid")
            .to_owned()
    }

    fn set_accounts(&self, accounts: Value) {
        std::fs::write(&self.accounts, accounts.to_string()).expect("accounts");
    }
}

fn accounts(alice_groups: &[&str]) -> Value {
    json!({
        "alice": {"sub": "sub-alice-7c2", "preferred_username": "alice", "name": "Alice",
                  "email": "alice@corp.example", "email_verified": true, "groups": alice_groups},
        "bob": {"sub": "sub-bob-91d", "preferred_username": "bob",
                "email": "bob@corp.example", "email_verified": true, "groups": ["marketing"]},
    })
}

/// Logs in at the provider in Chromium, from `start`. With `stop_at`, the browser's request to
/// that prefix is held back and its URL returned; without, the browser follows to the end.
fn browser_login(dir: &Path, start: &str, login: &str, stop_at: Option<&str>) -> Value {
    browser_login_with(dir, start, login, stop_at, None)
}

/// `browser_login`, answering the console's TOTP step after the provider with `totp`.
fn browser_login_with(
    dir: &Path,
    start: &str,
    login: &str,
    stop_at: Option<&str>,
    totp: Option<&str>,
) -> Value {
    let file = dir.join(format!("login-{}.json", random_hex(4)));
    std::fs::write(
        &file,
        json!({"chromium": CHROMIUM, "start": start, "login": login, "password": "any",
               "stopAt": stop_at, "totp": totp})
        .to_string(),
    )
    .expect("login config");
    let out = Command::new("node")
        .arg(browser_dir().join("oidc-login.mjs"))
        .arg(&file)
        .current_dir(browser_dir())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the provider's login failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("login result: {e}: {stdout}"))
}

fn query_param(url: &str, name: &str) -> String {
    let parsed = reqwest::Url::parse(url).expect("URL");
    parsed
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

/// A login the way the CLI starts it (loopback redirect), through the provider's pages, stopped
/// before the code reaches anyone: (state, code).
fn code_for(api: &Api, dir: &Path, login: &str) -> (String, String) {
    let redirect = "http://127.0.0.1:9/callback";
    let begun = api.post(
        "/api/v1/auth/sso/corp/begin",
        None,
        json!({ "redirect_uri": redirect }),
    );
    begun.assert_ok();
    let url = begun.body["authorization_url"].as_str().expect("url");
    let stopped = browser_login(dir, url, login, Some(redirect));
    let at = stopped["stopped"]
        .as_str()
        .expect("stopped at the callback");
    let state = query_param(at, "state");
    assert_eq!(state, begun.body["state"].as_str().unwrap());
    (state, query_param(at, "code"))
}

fn finish(api: &Api, state: &str, code: &str) -> Resp {
    api.post(
        "/api/v1/auth/sso/finish",
        None,
        json!({ "state": state, "code": code }),
    )
}

fn audit(cli: &Cli) -> Vec<Value> {
    parse_export(&cli.ok(&["audit", "export", "--format", "jsonl"]).stdout)
}

fn unavailable() -> bool {
    if let Some(why) = browser_unavailable() {
        eprintln!("SKIPPED: {why}");
        return true;
    }
    if !browser_dir().join("node_modules/oidc-provider").exists() {
        let why = "oidc-provider is not installed: npm ci in tests/browser (scripts/test does)";
        assert!(std::env::var("CI").is_err(), "{why}");
        eprintln!("SKIPPED: {why}");
        return true;
    }
    false
}

fn add_provider(admin: &Cli, issuer: &str, extra: &[&str]) -> Out {
    let mut args = vec![
        "sso",
        "add",
        "corp",
        "--issuer",
        issuer,
        "--client-id",
        "cofre",
        "--client-secret-stdin",
        "--scopes",
        "openid profile email groups",
    ];
    args.extend_from_slice(extra);
    admin.ok_in(&args, &format!("{CLIENT_SECRET}\n"))
}

/// The whole flow: a provider whose mapping grants a group a policy names waits for a second
/// admin; a console login in Chromium provisions alice with the mapped group; the CLI logs in
/// through the loopback redirect and reveals what the policy grants; a second login with other
/// IdP groups replaces her groups, and the reveal is refused.
#[test]
fn console_and_cli_logins_follow_the_providers_groups() {
    if unavailable() {
        return;
    }
    let inst = Instance::new(Backend::Sqlite);
    let server = start_with_config(&inst, "[governance]\ncooling_off_days = 0\n");
    let (admin, _) = admin_cli(&inst, &server);
    let (bob, _, _) = add_user_cli(&inst, &server, &admin, "bob-admin", "admin", &[]);
    admin.ok(&["target", "add", "db01", "--host", "10.0.0.5"]);
    admin.ok_in(
        &["credential", "add", "db01", "root", "--password-stdin"],
        "root-secret-sso-4411\n",
    );
    admin.ok(&["group", "add", "ops"]);
    admin.ok(&["group", "add", "dbas"]);
    // The policy widens access too: the second admin approves it.
    let policy = admin.ok(&[
        "policy",
        "add",
        "ops-reveal",
        "--group",
        "ops",
        "--targets",
        "db01",
        "--allow",
        "reveal",
        "--outcome",
        "allow",
    ]);
    approve_held(&bob, &policy);
    let dir = inst.path().join("idp");
    let idp = Idp::start(&dir, &server, accounts(&["pam-ops"]));

    // Mapping into a group a policy names: held for the second admin.
    let held = add_provider(
        &admin,
        &idp.issuer,
        &[
            "--map-group",
            "idp:pam-ops=ops",
            "--map-group",
            "pam-dba=dbas",
        ],
    );
    let approved = approve_held(&bob, &held);
    assert!(approved.code == Some(0), "{}", approved.all());
    let listed = admin.ok(&["sso", "list"]);
    listed.assert_stdout_contains("corp");
    listed.assert_stdout_contains("pam-ops=ops");
    assert!(!listed.all().contains(CLIENT_SECRET));
    let tested = admin.ok(&["sso", "test", "corp"]);
    tested.assert_stdout_contains("keys:");
    tested.assert_stdout_contains("ok");

    // The console: "Log in with corp", the provider's pages, back in the console as alice.
    let base = server.url.trim_end_matches('/');
    let page = server.api().get("/login", None);
    assert!(
        page.text.contains("href=\"/login/sso/corp\"") && page.text.contains("Log in with corp"),
        "{}",
        page.text
    );
    let done = browser_login(&dir, &format!("{base}/login/sso/corp"), "alice", None);
    assert_eq!(done["final"], format!("{base}/"), "{done}");
    assert!(done["text"].as_str().unwrap().contains("alice"), "{done}");
    let alice = admin
        .ok(&["--output", "json", "user", "show", "alice"])
        .json();
    assert_eq!(alice["role"], "user", "{alice}");
    assert_eq!(alice["groups"], json!(["ops"]), "{alice}");

    // The CLI: the URL printed, the browser sent back to the CLI's loopback listener.
    let alice_cli = Cli::new(&inst, "alice").at(&server);
    let (cmd, shown) = alice_cli.command(&["login", "--sso", "corp", "--no-browser"]);
    let mut login = Running::spawn(cmd, &shown);
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = loop {
        if let Some(u) = login.stderr().lines().find(|l| l.starts_with(&idp.issuer)) {
            break u.to_owned();
        }
        assert!(Instant::now() < deadline, "no URL: {}", login.describe());
        std::thread::sleep(Duration::from_millis(20));
    };
    let seen = browser_login(&dir, &url, "alice", None);
    assert!(
        seen["text"].as_str().unwrap_or("").contains("logged in"),
        "{seen}"
    );
    let status = login.wait(Duration::from_secs(60)).expect("login ends");
    assert!(status.success(), "{}", login.describe());
    assert!(
        login
            .stdout()
            .contains("logged in as alice (user) through corp, groups [ops]"),
        "{}",
        login.describe()
    );
    let alice_cli = Cli {
        server: None,
        fingerprint: None,
        ..alice_cli
    };
    let revealed = alice_cli.ok(&["credential", "reveal", "db01", "root", "--reason", "sso-1"]);
    revealed.assert_stdout_contains("root-secret-sso-4411");

    // The provider moves alice to another group: the next login replaces hers.
    idp.set_accounts(accounts(&["pam-dba"]));
    let again = browser_login(&dir, &format!("{base}/login/sso/corp"), "alice", None);
    assert_eq!(again["final"], format!("{base}/"), "{again}");
    let alice = admin
        .ok(&["--output", "json", "user", "show", "alice"])
        .json();
    assert_eq!(alice["groups"], json!(["dbas"]), "{alice}");
    let refused = alice_cli.run(
        &["credential", "reveal", "db01", "root", "--reason", "sso-2"],
        None,
    );
    assert_ne!(refused.code, Some(0), "{}", refused.all());
    assert!(!refused.all().contains("root-secret-sso-4411"));

    let trail = audit(&admin);
    let logins: Vec<&Value> = trail
        .iter()
        .filter(|e| e["action"] == "auth.sso_login")
        .collect();
    assert_eq!(logins.len(), 3, "{logins:?}");
    assert_eq!(logins[0]["details"]["provisioned"], true, "{}", logins[0]);
    assert_eq!(
        logins[2]["details"]["groups_removed"], "ops",
        "{}",
        logins[2]
    );
    assert_eq!(
        logins[2]["details"]["groups_added"], "dbas",
        "{}",
        logins[2]
    );
    assert!(trail.iter().any(|e| e["action"] == "sso.add"));
    let text = serde_json::to_string(&trail).unwrap();
    assert!(
        !text.contains(CLIENT_SECRET),
        "the client secret is in the trail"
    );
    // Nor in the server's log, nor the codes the console's callbacks carried in their URLs.
    let log = server.stderr_text();
    assert!(
        !log.contains(CLIENT_SECRET),
        "the client secret is in the log"
    );
    assert!(!log.contains("code="), "a callback's code is in the log");
}

/// Each thing a provider (or someone between it and Cofre) can get wrong is refused and names
/// its check: another audience, an expired token, a wrong signature, a replayed state, a replayed
/// nonce, an unmapped user; a key rotation at the provider does not break the next login.
#[test]
fn bad_tokens_are_refused_by_name_and_key_rotation_is_followed_sqlite() {
    bad_tokens_are_refused_by_name_and_key_rotation_is_followed(Backend::Sqlite);
}

#[test]
fn bad_tokens_are_refused_by_name_and_key_rotation_is_followed_postgres() {
    bad_tokens_are_refused_by_name_and_key_rotation_is_followed(Backend::Postgres);
}

fn bad_tokens_are_refused_by_name_and_key_rotation_is_followed(backend: Backend) {
    if unavailable() {
        return;
    }
    let inst = Instance::new(backend);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    admin.ok(&["group", "add", "ops"]);
    let dir = inst.path().join("idp");
    let idp = Idp::start(&dir, &server, accounts(&["pam-ops"]));
    // No default role: a user with no mapped group is refused.
    add_provider(&admin, &idp.issuer, &["--map-group", "pam-ops=ops"]);
    let api = server.api();

    let bad = api.post(
        "/api/v1/auth/sso/corp/begin",
        None,
        json!({"redirect_uri": "https://evil.example/cb"}),
    );
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(bad.body["field"], "redirect_uri", "{}", bad.text);

    let (state, code) = code_for(&api, &dir, "alice");
    let ok = finish(&api, &state, &code);
    ok.assert_ok();
    assert_eq!(ok.body["user"]["username"], "alice", "{}", ok.text);
    let token = ok.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        api.get("/api/v1/auth/whoami", Some(&token)).body["groups"],
        json!(["ops"])
    );
    // The same state (and code) again: a replay.
    let replay = finish(&api, &state, &code);
    assert_eq!(replay.status, 401, "{}", replay.text);
    assert!(replay.text.contains("state:"), "{}", replay.text);

    for (mode, says) in [
        ("audience", "audience:"),
        ("expired", "expired:"),
        ("badsig", "signature:"),
        ("nonce", "nonce:"),
    ] {
        idp.mode(mode);
        let (state, code) = code_for(&api, &dir, "alice");
        let r = finish(&api, &state, &code);
        assert_eq!(r.status, 401, "{mode}: {}", r.text);
        assert_eq!(r.body["code"], "sso_refused", "{mode}: {}", r.text);
        assert!(r.text.contains(says), "{mode}: {}", r.text);
        assert!(!r.text.contains(&code), "{mode}: the code is in the error");
    }
    idp.mode("none");

    let (state, code) = code_for(&api, &dir, "bob");
    let r = finish(&api, &state, &code);
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("unmapped:"), "{}", r.text);
    let users = admin.ok(&["user", "list"]);
    assert!(!users.stdout.contains("bob"), "{}", users.all());

    // The provider rotates its key: Cofre's cached keys lack the new kid and fetch them again.
    let kid = idp.rotate();
    let (state, code) = code_for(&api, &dir, "alice");
    finish(&api, &state, &code).assert_ok();
    let tested = admin.ok(&["sso", "test", "corp"]);
    tested.assert_stdout_contains(&kid);

    let checks: Vec<String> = audit(&admin)
        .iter()
        .filter(|e| e["action"] == "auth.sso_refused")
        .map(|e| e["details"]["check"].as_str().unwrap_or("").to_owned())
        .collect();
    for want in [
        "state",
        "audience",
        "expired",
        "signature",
        "nonce",
        "unmapped",
    ] {
        assert!(
            checks.iter().any(|c| c == want),
            "{want} not audited: {checks:?}"
        );
    }
}

/// `[sso] require_totp`: an SSO user without Cofre's TOTP gets a token that may only enrol it;
/// then each SSO login owes the code, the token in between may do nothing else, a wrong code
/// is refused; an IdP that says it did a second factor (`amr`, trusted by `trusted_amr`) is
/// taken at its word.
#[test]
fn require_totp_asks_for_cofres_code_unless_the_idp_did_mfa() {
    if unavailable() {
        return;
    }
    let inst = Instance::new(Backend::Sqlite);
    let server = start_with_config(
        &inst,
        "[sso]\nrequire_totp = true\ntrusted_amr = [\"mfa\"]\n",
    );
    let (admin, _) = admin_cli(&inst, &server);
    let dir = inst.path().join("idp");
    let idp = Idp::start(&dir, &server, accounts(&["pam-ops"]));
    add_provider(&admin, &idp.issuer, &["--default-role", "user"]);
    let api = server.api();

    let (state, code) = code_for(&api, &dir, "alice");
    let first = finish(&api, &state, &code);
    first.assert_ok();
    assert_eq!(first.body["next_step"], "totp_enrolment", "{}", first.text);
    let t1 = first.body["token"].as_str().unwrap().to_owned();
    let refused = api.get("/api/v1/auth/whoami", Some(&t1));
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(
        refused.body["code"], "totp_not_enrolled",
        "{}",
        refused.text
    );
    let enrol = api.post("/api/v1/auth/totp/enroll", Some(&t1), json!({}));
    enrol.assert_ok();
    let seed = base32_decode(enrol.body["secret_base32"].as_str().unwrap());
    let confirm_step = current_step();
    api.post(
        "/api/v1/auth/totp/confirm",
        Some(&t1),
        json!({"code": totp_at_step(&seed, confirm_step)}),
    )
    .assert_ok();

    let (state, code) = code_for(&api, &dir, "alice");
    let second = finish(&api, &state, &code);
    second.assert_ok();
    assert_eq!(second.body["next_step"], "totp", "{}", second.text);
    let t2 = second.body["token"].as_str().unwrap().to_owned();
    let refused = api.get("/api/v1/auth/whoami", Some(&t2));
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(refused.body["code"], "totp_required", "{}", refused.text);
    let wrong = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|c| {
            (confirm_step.saturating_sub(2)..=confirm_step + 3)
                .all(|s| totp_at_step(&seed, s) != *c)
        })
        .unwrap();
    let bad = api.post(
        "/api/v1/auth/sso/totp",
        Some(&t2),
        json!({"totp_code": wrong}),
    );
    assert_eq!(bad.status, 401, "{}", bad.text);
    assert_eq!(bad.body["code"], "totp_invalid", "{}", bad.text);
    let good = api.post(
        "/api/v1/auth/sso/totp",
        Some(&t2),
        json!({"totp_code": totp_at_step(&seed, current_step().max(confirm_step) + 1)}),
    );
    good.assert_ok();
    assert!(good.body.get("next_step").is_none(), "{}", good.text);
    let session = good.body["token"].as_str().unwrap();
    assert_eq!(
        api.get("/api/v1/auth/whoami", Some(session)).body["username"],
        "alice"
    );
    // The pending token ended with the step.
    assert_eq!(api.get("/api/v1/auth/whoami", Some(&t2)).status, 401);

    // The console's TOTP step, in Chromium: bob enrols through the API's restricted token,
    // then logs in with "Log in with corp" and the code on the console's form.
    let (state, code) = code_for(&api, &dir, "bob");
    let bob = finish(&api, &state, &code);
    assert_eq!(bob.body["next_step"], "totp_enrolment", "{}", bob.text);
    let tb = bob.body["token"].as_str().unwrap().to_owned();
    let enrol = api.post("/api/v1/auth/totp/enroll", Some(&tb), json!({}));
    let bob_seed = base32_decode(enrol.body["secret_base32"].as_str().unwrap());
    let bob_step = current_step();
    api.post(
        "/api/v1/auth/totp/confirm",
        Some(&tb),
        json!({"code": totp_at_step(&bob_seed, bob_step)}),
    )
    .assert_ok();
    let base = server.url.trim_end_matches('/');
    let page = browser_login_with(
        &dir,
        &format!("{base}/login/sso/corp"),
        "bob",
        None,
        Some(&totp_at_step(&bob_seed, current_step().max(bob_step) + 1)),
    );
    assert_eq!(page["final"], format!("{base}/"), "{page}");
    assert!(page["text"].as_str().unwrap().contains("bob"), "{page}");

    // The IdP says it did MFA, and the instance trusts that: no TOTP step.
    idp.mode("mfa");
    let (state, code) = code_for(&api, &dir, "alice");
    let trusted = finish(&api, &state, &code);
    trusted.assert_ok();
    assert!(trusted.body.get("next_step").is_none(), "{}", trusted.text);
    let t3 = trusted.body["token"].as_str().unwrap();
    api.get("/api/v1/auth/whoami", Some(t3)).assert_ok();
    let factors: Vec<String> = audit(&admin)
        .iter()
        .filter(|e| e["action"] == "auth.sso_login")
        .map(|e| {
            e["details"]["second_factor"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(
        factors,
        [
            "totp_enrolment",
            "totp_pending",
            "totp_enrolment",
            "totp_pending",
            "idp"
        ],
        "{factors:?}"
    );
}
