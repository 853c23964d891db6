//! Bad input over HTTP: each mistake gets the right 4xx and a JSON error naming the field; random
//! garbage never gets a 5xx and leaves the server healthy.

use crate::harness::*;
use serde_json::{json, Value};

fn setup() -> (Instance, Server, String) {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_token(&server);
    let api = server.api();
    api.post(
        "/api/v1/targets",
        Some(&admin),
        json!({"name": "db01", "host": "10.0.0.5", "tags": ["prod"]}),
    )
    .assert_ok();
    api.post(
        "/api/v1/targets/db01/credentials",
        Some(&admin),
        json!({"account": "root", "password": "pw-1-abcdef"}),
    )
    .assert_ok();
    api.post("/api/v1/groups", Some(&admin), json!({"name": "ops"}))
        .assert_ok();
    api.post(
        "/api/v1/policies",
        Some(&admin),
        json!({"name": "ops-prod", "group": "ops", "targets": ["tag:prod"], "allow": ["reveal"], "outcome": "justify"}),
    )
    .assert_ok();
    (inst, server, admin)
}

#[test]
fn bad_input_is_named() {
    let (_inst, server, admin) = setup();
    let api = server.api();
    let t = Some(admin.as_str());
    let mut c = Checks::default();
    let (user_token, _) = api.make_user(&admin, "opsuser", "user", &["ops"]);

    // Oversized body.
    let big = json!({"username": "a".repeat(70 * 1024), "role": "user"});
    c.expect(
        &api.post("/api/v1/users", t, big),
        413,
        Some("body_too_large"),
        None,
    );
    let big_raw = vec![b' '; 65 * 1024 + 1];
    c.expect(
        &api.call(
            "POST",
            "/api/v1/groups",
            t,
            Body::Raw {
                content_type: "application/json",
                bytes: big_raw,
            },
        ),
        413,
        Some("body_too_large"),
        None,
    );

    // Not JSON.
    let r = api.call(
        "POST",
        "/api/v1/groups",
        t,
        Body::Raw {
            content_type: "text/plain",
            bytes: br#"{"name":"ops2"}"#.to_vec(),
        },
    );
    c.expect(&r, 415, None, None);
    let r = api.call("POST", "/api/v1/groups", t, Body::None);
    c.expect(&r, 415, None, None);

    // Malformed JSON.
    for raw in [
        &br#"{"name":"#[..],
        b"{",
        b"",
        b"nul",
        br#"{"name": "a",}"#,
        b"\xff\xfe",
    ] {
        let r = api.call(
            "POST",
            "/api/v1/groups",
            t,
            Body::Raw {
                content_type: "application/json",
                bytes: raw.to_vec(),
            },
        );
        c.expect(&r, 400, Some("malformed_json"), None);
    }
    let deep = "[".repeat(10_000);
    let r = api.call(
        "POST",
        "/api/v1/groups",
        t,
        Body::Raw {
            content_type: "application/json",
            bytes: deep.into_bytes(),
        },
    );
    c.expect(&r, 400, None, None);

    // Unknown fields, wrong types, missing fields: the field is named.
    let cases: Vec<(&str, &str, Option<&str>, Value, &str)> = vec![
        (
            "POST",
            "/api/v1/users",
            t,
            json!({"username": "bob", "role": "user", "groups": [], "colour": "red"}),
            "colour",
        ),
        (
            "POST",
            "/api/v1/users",
            t,
            json!({"username": "bob", "role": "user", "groups": [1]}),
            "groups[0]",
        ),
        (
            "POST",
            "/api/v1/users",
            t,
            json!({"username": "bob", "role": "user", "groups": "ops"}),
            "groups",
        ),
        (
            "POST",
            "/api/v1/users",
            t,
            json!({"username": "bob"}),
            "role",
        ),
        (
            "POST",
            "/api/v1/users",
            t,
            json!({"username": null, "role": "user"}),
            "username",
        ),
        (
            "POST",
            "/api/v1/users",
            t,
            json!({"username": 7, "role": "user"}),
            "username",
        ),
        (
            "POST",
            "/api/v1/targets",
            t,
            json!({"name": "db9", "host": "10.0.0.9", "port": "twenty-two"}),
            "port",
        ),
        (
            "POST",
            "/api/v1/targets",
            t,
            json!({"name": "db9", "host": "10.0.0.9", "port": 70000}),
            "port",
        ),
        (
            "POST",
            "/api/v1/targets",
            t,
            json!({"name": "db9", "host": "10.0.0.9", "port": -1}),
            "port",
        ),
        (
            "POST",
            "/api/v1/targets",
            t,
            json!({"name": "db9", "host": "10.0.0.9", "tags": [true]}),
            "tags[0]",
        ),
        (
            "POST",
            "/api/v1/targets",
            t,
            json!({"name": "db9", "hots": "10.0.0.9"}),
            "hots",
        ),
        (
            "POST",
            "/api/v1/policies",
            t,
            json!({"name": "p", "group": "ops", "targets": ["*"], "allow": "reveal", "outcome": "allow"}),
            "allow",
        ),
        (
            "POST",
            "/api/v1/targets/db01/credentials/root/reveal",
            Some(user_token.as_str()),
            json!({"reason": "r", "version": "one"}),
            "version",
        ),
        (
            "POST",
            "/api/v1/targets/db01/credentials/root/reveal",
            Some(user_token.as_str()),
            json!({"reason": ["r"]}),
            "reason",
        ),
        (
            "PUT",
            "/api/v1/targets/db01/credentials/root",
            t,
            json!({"password": "x1234567", "note": "n"}),
            "note",
        ),
        (
            "POST",
            "/api/v1/auth/login",
            None,
            json!({"username": "admin", "password": "x", "otp": "1"}),
            "otp",
        ),
        (
            "POST",
            "/api/v1/auth/login",
            None,
            json!({"username": "admin", "password": 1234}),
            "password",
        ),
        (
            "POST",
            "/api/v1/sys/unseal",
            None,
            json!({"share": 5}),
            "share",
        ),
    ];
    for (method, path, token, body, field) in &cases {
        let r = api.call(method, path, *token, Body::Json(body.clone()));
        c.expect(&r, 400, None, Some(field));
    }

    // Invalid values: names, roles, hosts, outcomes; the field is named.
    let invalid: Vec<(&str, &str, Option<&str>, Value, &str)> = vec![
        (
            "POST",
            "/api/v1/users",
            t,
            json!({"username": "Bad Name", "role": "user"}),
            "username",
        ),
        (
            "POST",
            "/api/v1/users",
            t,
            json!({"username": "bob", "role": "root"}),
            "role",
        ),
        (
            "POST",
            "/api/v1/users",
            t,
            json!({"username": "bob", "role": "user", "groups": ["Ops Team"]}),
            "groups",
        ),
        (
            "POST",
            "/api/v1/users",
            t,
            json!({"username": "", "role": "user"}),
            "username",
        ),
        (
            "POST",
            "/api/v1/users",
            t,
            json!({"username": "x".repeat(65), "role": "user"}),
            "username",
        ),
        (
            "POST",
            "/api/v1/users",
            t,
            json!({"username": "ａdmin", "role": "user"}),
            "username",
        ),
        ("POST", "/api/v1/groups", t, json!({"name": "a:b"}), "name"),
        (
            "POST",
            "/api/v1/targets",
            t,
            json!({"name": "a:b", "host": "10.0.0.9"}),
            "name",
        ),
        (
            "POST",
            "/api/v1/targets",
            t,
            json!({"name": "db9", "host": "bad host!"}),
            "host",
        ),
        (
            "POST",
            "/api/v1/targets",
            t,
            json!({"name": "db9", "host": "10.0.0.9", "port": 0}),
            "port",
        ),
        (
            "POST",
            "/api/v1/targets",
            t,
            json!({"name": "db9", "host": "10.0.0.9", "protocol": "telnet"}),
            "protocol",
        ),
        (
            "POST",
            "/api/v1/targets",
            t,
            json!({"name": "db9", "host": "10.0.0.9", "tags": ["Prod Tag"]}),
            "tags",
        ),
        (
            "POST",
            "/api/v1/targets/db01/credentials",
            t,
            json!({"account": "x@y", "password": "pw-1234567"}),
            "account",
        ),
        (
            "POST",
            "/api/v1/targets/db01/credentials",
            t,
            json!({"account": "bad:acct", "password": "pw-1234567"}),
            "account",
        ),
        (
            "POST",
            "/api/v1/targets/db01/credentials",
            t,
            json!({"account": "svc", "password": ""}),
            "password",
        ),
        (
            "POST",
            "/api/v1/policies",
            t,
            json!({"name": "p", "group": "ops", "targets": ["tag:prod"], "allow": ["reveal"], "outcome": "maybe"}),
            "outcome",
        ),
        (
            "POST",
            "/api/v1/policies",
            t,
            json!({"name": "p", "group": "ops", "targets": [], "allow": ["reveal"], "outcome": "allow"}),
            "targets",
        ),
        (
            "POST",
            "/api/v1/policies",
            t,
            json!({"name": "p", "group": "ops", "targets": ["tag:prod"], "allow": ["fly"], "outcome": "allow"}),
            "allow",
        ),
        (
            "POST",
            "/api/v1/policies",
            t,
            json!({"name": "Bad Policy", "group": "ops", "targets": ["tag:prod"], "allow": ["reveal"], "outcome": "allow"}),
            "name",
        ),
        (
            "POST",
            "/api/v1/targets/db01/credentials/root/reveal",
            Some(user_token.as_str()),
            json!({}),
            "reason",
        ),
        (
            "POST",
            "/api/v1/targets/db01/credentials/root/reveal",
            Some(user_token.as_str()),
            json!({"reason": "x".repeat(20_000)}),
            "reason",
        ),
        (
            "POST",
            "/api/v1/targets/db01/credentials/root/reveal",
            Some(user_token.as_str()),
            json!({"reason": "line\u{0}break"}),
            "reason",
        ),
    ];
    for (method, path, token, body, field) in &invalid {
        let r = api.call(method, path, *token, Body::Json(body.clone()));
        c.expect(&r, 400, None, Some(field));
    }

    // A too-short new password.
    let (fresh_token, fresh_pw) = api.make_user(&admin, "shorty", "user", &[]);
    let r = api.post(
        "/api/v1/auth/password",
        Some(&fresh_token),
        json!({"current_password": fresh_pw, "new_password": "short"}),
    );
    c.expect(&r, 400, Some("invalid_field"), Some("new_password"));

    // Query parameters.
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=100000", "limit"),
        ("colour=red", "colour"),
    ] {
        let r = api.get(&format!("/api/v1/users?{q}"), t);
        c.expect(&r, 400, None, Some(field));
    }
    let r = api.get("/api/v1/users?cursor=%00%ff", t);
    assert!(r.status < 500, "a garbage cursor: {}", r.text);

    // Pagination works as documented.
    for name in ["pa", "pb", "pc"] {
        api.post("/api/v1/groups", t, json!({"name": name}))
            .assert_ok();
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/groups?limit=2&cursor={}", urlencode(c)),
            None => "/api/v1/groups?limit=2".to_owned(),
        };
        let r = api.get(&path, t);
        r.assert_ok();
        let items = r.body["items"].as_array().expect("items");
        assert!(items.len() <= 2, "limit=2 gave {}", items.len());
        seen.extend(items.iter().map(|g| g["name"].as_str().unwrap().to_owned()));
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    for name in ["ops", "pa", "pb", "pc"] {
        assert_eq!(
            seen.iter().filter(|s| *s == name).count(),
            1,
            "paging lists {name} exactly once: {seen:?}"
        );
    }

    // Unknown path, wrong method, unknown target: JSON errors too.
    let r = api.get("/api/v1/nothing-here", t);
    c.expect(&r, 404, None, None);
    let r = api.call("DELETE", "/api/v1/users", t, Body::None);
    c.expect(&r, 405, None, None);
    let r = api.post(
        "/api/v1/targets/nope/credentials/root/reveal",
        Some(&user_token),
        json!({"reason": "INC-1 recovery"}),
    );
    assert!(r.status == 404 || r.status == 403, "{}", r.text);
    let r = api.post(
        "/api/v1/targets/db01/credentials/root/reveal",
        Some(&user_token),
        json!({"reason": "INC-1 recovery", "version": 99}),
    );
    c.expect(&r, 404, None, Some("version"));

    // Nothing of that hurt the server or the trail.
    assert_eq!(api.get("/healthz", None).status, 200);
    let v = api.get("/api/v1/audit/verify", t);
    v.assert_ok();
    assert_eq!(v.body["intact"], true, "{}", v.text);
    assert!(
        c.problems.is_empty(),
        "{} wrong answers to bad input:\n{}",
        c.problems.len(),
        c.problems.join("\n")
    );
}

/// Collects every wrong answer, so one run reports them all.
#[derive(Default)]
struct Checks {
    problems: Vec<String>,
}

impl Checks {
    /// The status, a JSON error body with a code and a message, and (where given) the code and field.
    fn expect(&mut self, r: &Resp, status: u16, code: Option<&str>, field: Option<&str>) {
        let mut wrong = Vec::new();
        if r.status != status {
            wrong.push(format!("status {} (want {status})", r.status));
        }
        if r.code().is_empty() || r.body["message"].as_str().is_none_or(str::is_empty) {
            wrong.push("no JSON error with code and message".to_owned());
        }
        if let Some(code) = code {
            if r.code() != code {
                wrong.push(format!("code {:?} (want {code:?})", r.code()));
            }
        }
        if let Some(field) = field {
            if r.field() != Some(field) {
                wrong.push(format!("field {:?} (want {field:?})", r.field()));
            }
        }
        if !wrong.is_empty() {
            let shown: String = r.what.chars().take(120).collect();
            self.problems.push(format!(
                "{shown}: {} -- {}",
                wrong.join(", "),
                r.text.chars().take(300).collect::<String>()
            ));
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const FIELD_NAMES: &[&str] = &[
    "username",
    "password",
    "totp_code",
    "role",
    "groups",
    "name",
    "host",
    "port",
    "protocol",
    "tags",
    "account",
    "private_key",
    "reason",
    "version",
    "group",
    "targets",
    "allow",
    "outcome",
    "share",
    "current_password",
    "new_password",
    "code",
    "x",
    "",
];

fn random_string(rng: &mut Prng) -> String {
    const PIECES: &[&str] = &[
        "a", "Z", "0", "-", "_", ".", ":", "@", " ", "/", "\\", "\"", "'", "é", "ｚ", "\u{0}",
        "\u{7f}", "\u{202e}", "tag:", "*", "prod", "db01", "root", "admin", "%00", "../", "\n",
        "\t", "💥", "null", "{}", "[]",
    ];
    let n = rng.below(12);
    (0..n).map(|_| *rng.pick(PIECES)).collect()
}

fn random_value(rng: &mut Prng, depth: usize) -> Value {
    match rng.below(if depth > 3 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(50)),
        2 => json!(rng.next_u64() as i64),
        3 => json!((rng.next_u64() % 100_000) as f64 / 7.0),
        4 | 5 => Value::String(random_string(rng)),
        6 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => random_object(rng, depth + 1),
    }
}

fn random_object(rng: &mut Prng, depth: usize) -> Value {
    let mut m = serde_json::Map::new();
    for _ in 0..rng.below(6) {
        let k = if rng.chance(85) {
            (*rng.pick(FIELD_NAMES)).to_owned()
        } else {
            random_string(rng)
        };
        m.insert(k, random_value(rng, depth));
    }
    Value::Object(m)
}

/// A valid-looking body, then damaged: a byte flipped, cut short, or a piece duplicated.
fn mutate(rng: &mut Prng, mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.is_empty() {
        return bytes;
    }
    match rng.below(4) {
        0 => {
            let i = rng.below(bytes.len());
            bytes[i] ^= 1 << rng.below(8);
        }
        1 => bytes.truncate(rng.below(bytes.len())),
        2 => {
            let i = rng.below(bytes.len());
            let piece = bytes[i..].to_vec();
            bytes.extend(piece);
        }
        _ => {
            let i = rng.below(bytes.len());
            bytes.insert(i, *rng.pick(b"{}[],:\"\\0"));
        }
    }
    bytes
}

#[test]
fn garbage_never_breaks_the_server() {
    let (_inst, server, admin) = setup();
    let api = server.api();
    let (user_token, _) = api.make_user(&admin, "opsuser", "user", &["ops"]);
    let endpoints: &[(&str, &str, Option<&str>)] = &[
        ("POST", "/api/v1/users", Some(&admin)),
        ("POST", "/api/v1/groups", Some(&admin)),
        ("POST", "/api/v1/groups/ops/members", Some(&admin)),
        ("POST", "/api/v1/targets", Some(&admin)),
        ("POST", "/api/v1/targets/db01/credentials", Some(&admin)),
        ("PUT", "/api/v1/targets/db01/credentials/root", Some(&admin)),
        (
            "POST",
            "/api/v1/targets/db01/credentials/root/reveal",
            Some(&user_token),
        ),
        ("POST", "/api/v1/policies", Some(&admin)),
        ("POST", "/api/v1/auth/login", None),
        ("POST", "/api/v1/auth/totp/confirm", Some(&user_token)),
        ("POST", "/api/v1/sys/unseal", None),
    ];
    let samples: &[&str] = &[
        r#"{"username":"bob","role":"user","groups":["ops"]}"#,
        r#"{"name":"web01","host":"10.0.0.7","port":22,"tags":["prod"]}"#,
        r#"{"account":"svc","password":"pw-123456789"}"#,
        r#"{"name":"p1","group":"ops","targets":["tag:prod"],"allow":["reveal"],"outcome":"justify"}"#,
        r#"{"reason":"INC-1","version":1}"#,
        r#"{"username":"nobody","password":"nothing-at-all"}"#,
    ];
    let mut rng = Prng::new(0x00C0_FFEE_2024);
    let mut problems = Vec::new();
    for i in 0..200 {
        let (method, path, token) = *rng.pick(endpoints);
        let bytes = match rng.below(4) {
            0 => (0..rng.below(600)).map(|_| rng.next_u64() as u8).collect(),
            1 => serde_json::to_vec(&random_object(&mut rng, 0)).unwrap(),
            2 => serde_json::to_vec(&random_value(&mut rng, 0)).unwrap(),
            _ => {
                let sample = rng.pick(samples).as_bytes().to_vec();
                mutate(&mut rng, sample)
            }
        };
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        let r = api.call(
            method,
            path,
            token,
            Body::Raw {
                content_type: "application/json",
                bytes,
            },
        );
        if r.status >= 500 {
            problems.push(format!(
                "#{i} {method} {path} {shown:?} -> {} {}",
                r.status, r.text
            ));
        } else if r.status >= 400 && (r.code().is_empty() || !r.body["message"].is_string()) {
            problems.push(format!(
                "#{i} {method} {path} {shown:?} -> {} without a JSON error: {}",
                r.status, r.text
            ));
        }
    }
    // Random query strings on the lists.
    for i in 0..50 {
        let path = *rng.pick(&[
            "/api/v1/users",
            "/api/v1/targets",
            "/api/v1/audit",
            "/api/v1/policies",
        ]);
        let key = *rng.pick(&["limit", "cursor", "x", "limit[]", ""]);
        let value = urlencode(&random_string(&mut rng));
        let r = api.get(&format!("{path}?{key}={value}"), Some(&admin));
        if r.status >= 500 {
            problems.push(format!(
                "#q{i} GET {path}?{key}={value} -> {} {}",
                r.status, r.text
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} bad answers to garbage:\n{}",
        problems.len(),
        problems.join("\n")
    );

    assert_eq!(
        api.get("/healthz", None).status,
        200,
        "the server is healthy after the garbage"
    );
    api.get("/api/v1/auth/whoami", Some(&admin)).assert_ok();
    let v = api.get("/api/v1/audit/verify", Some(&admin));
    v.assert_ok();
    assert_eq!(v.body["intact"], true, "{}", v.text);
}

#[test]
fn cli_reports_bad_input() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    admin.ok(&[
        "target", "add", "db01", "--host", "10.0.0.5", "--tag", "prod",
    ]);

    // The API's refusal, as the CLI shows it: `error: ...`, exit 1, code and field named.
    for (args, stdin, field) in [
        (
            vec!["user", "add", "Bad Name", "--role", "user"],
            None,
            "username",
        ),
        (vec!["user", "add", "bob", "--role", "root"], None, "role"),
        (
            vec!["target", "add", "a:b", "--host", "10.0.0.9"],
            None,
            "name",
        ),
        (
            vec!["target", "add", "db9", "--host", "bad host!"],
            None,
            "host",
        ),
        (
            vec!["credential", "add", "db01", "x@y", "--password-stdin"],
            Some("pw-123456789\n"),
            "account",
        ),
        (
            vec![
                "policy",
                "add",
                "p1",
                "--group",
                "ops",
                "--targets",
                "tag:prod",
                "--allow",
                "reveal",
                "--outcome",
                "maybe",
            ],
            None,
            "outcome",
        ),
    ] {
        let out = admin.run(&args, stdin);
        out.assert_error();
        out.assert_stderr_contains(&format!("field {field}"));
        out.assert_stderr_contains("code ");
    }

    // Usage errors: exit status 2, before anything reaches the server.
    for args in [
        vec!["user", "add"],
        vec![
            "target",
            "add",
            "db9",
            "--host",
            "10.0.0.9",
            "--port",
            "twenty-two",
        ],
        vec!["--output", "yaml", "whoami"],
        vec!["credential", "frobnicate"],
    ] {
        let out = admin.run(&args, None);
        assert_eq!(
            out.code,
            Some(2),
            "a usage error exits 2: {args:?}\n{}",
            out.stderr
        );
        assert!(
            !out.stderr.trim().is_empty(),
            "a usage error says what is wrong: {args:?}"
        );
    }
}

/// A private key the gateway could never use is refused when it is added, not when a session
/// starts: one protected by a passphrase (nobody is there to type it), or one that is not a key.
#[test]
fn unusable_private_keys_are_refused_when_added() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    admin.ok(&["target", "add", "db01", "--host", "10.0.0.5"]);
    let locked = inst.path().join("locked_key");
    let mut cmd = std::process::Command::new("ssh-keygen");
    cmd.args(["-q", "-t", "ed25519", "-N", "a passphrase", "-f"])
        .arg(&locked);
    run_command(cmd, None, "ssh-keygen -N").assert_ok();
    let locked = locked.to_str().expect("path");
    admin
        .fail(&["credential", "add", "db01", "root", "--key-file", locked])
        .assert_stderr_contains("private_key: the key is protected by a passphrase");
    let garbage = inst.path().join("garbage_key");
    std::fs::write(
        &garbage,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .expect("file");
    admin
        .fail(&[
            "credential",
            "add",
            "db01",
            "root",
            "--key-file",
            garbage.to_str().expect("path"),
        ])
        .assert_stderr_contains("private_key: not a private key");
    let plain = inst.path().join("plain_key");
    ssh_keygen(&plain);
    admin.ok(&[
        "credential",
        "add",
        "db01",
        "root",
        "--key-file",
        plain.to_str().expect("path"),
    ]);
    let listed = admin.ok(&["credential", "list", "db01"]).stdout;
    assert!(
        listed.contains("root"),
        "only the usable key was stored: {listed}"
    );
}

/// Public keys go through russh's parser wherever they are accepted: a key type without key data,
/// bad base64 or a blob of another type is refused with the field named (a user's key, a backup
/// host's known_hosts), and nothing is stored; real keys are taken.
#[test]
fn ssh_public_keys_without_key_data_are_refused() {
    let (inst, server, admin) = setup();
    let api = server.api();
    let t = Some(admin.as_str());
    let mut c = Checks::default();
    let key = inst.path().join("k");
    ssh_keygen(&key);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let private = std::fs::read_to_string(&key).unwrap();
    let blob = public.split_whitespace().nth(1).unwrap().to_owned();
    let not_keys = [
        "ssh-ed25519".to_owned(),
        "ssh-ed25519 ".to_owned(),
        "ssh-ed25519 !!!not-base64".to_owned(),
        "ssh-ed25519 AAAA".to_owned(),
        format!("ssh-rsa {blob}"),
        format!("ssh-ed25519 {}", &blob[..blob.len() - 8]),
    ];
    for bad in &not_keys {
        let r = api.post("/api/v1/users/admin/keys", t, json!({ "public_key": bad }));
        c.expect(&r, 400, Some("invalid_field"), Some("public_key"));
        let r = api.post(
            "/api/v1/backup/targets",
            t,
            json!({
                "name": "nas",
                "ssh": "backup@127.0.0.1:/srv/cofre",
                "ssh_private_key": private,
                "known_hosts": format!("127.0.0.1 {bad}\n"),
            }),
        );
        c.expect(&r, 400, Some("invalid_field"), Some("known_hosts"));
    }
    // One bad line among good ones is named by its number.
    let r = api.post(
        "/api/v1/backup/targets",
        t,
        json!({
            "name": "nas",
            "ssh": "backup@127.0.0.1:/srv/cofre",
            "ssh_private_key": private,
            "known_hosts": format!("# scanned\n127.0.0.1 {}\n127.0.0.1 ssh-ed25519 AAAA\n", public.trim()),
        }),
    );
    c.expect(&r, 400, Some("invalid_field"), Some("known_hosts"));
    assert!(r.text.contains("line 3"), "{}", r.text);
    let keys = api.get("/api/v1/users/admin/keys", t);
    keys.assert_ok();
    assert_eq!(
        json_items(&keys.body).len(),
        0,
        "nothing was stored: {}",
        keys.text
    );
    let targets = api.get("/api/v1/backup/targets", t);
    assert!(!targets.text.contains("\"nas\""), "{}", targets.text);

    // The real key, with its comment, is taken (and shown without it).
    api.post(
        "/api/v1/users/admin/keys",
        t,
        json!({ "public_key": public }),
    )
    .assert_ok();
    api.post(
        "/api/v1/backup/targets",
        t,
        json!({
            "name": "nas",
            "ssh": "backup@127.0.0.1:/srv/cofre",
            "ssh_private_key": private,
            "known_hosts": format!("127.0.0.1 {}", public.trim()),
        }),
    )
    .assert_ok();
    assert!(
        c.problems.is_empty(),
        "{} wrong answers to bad keys:\n{}",
        c.problems.len(),
        c.problems.join("\n")
    );
}
