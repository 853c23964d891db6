//! Editing a policy (issue 16): through the CLI and the API, on SQLite and PostgreSQL. An edit
//! that only narrows applies at once; one that widens (old against new) waits for a second
//! admin; an edit made from a version that is no longer the policy's is refused (409
//! `stale_version`), also when it waited as a change request while another edit landed; bad
//! input names its field; every edit is audited `policy.update` with before and after. The
//! console's edit form, prefilled and carrying the version, with its CSRF token.

use crate::console::{csrf_of, Browser};
use crate::harness::*;
use serde_json::{json, Value};

struct World {
    server: Server,
    admin: Cli,
    bob: Cli,
    token: String,
    /// Kept (and dropped last): its directory and PostgreSQL database live as long as the world.
    _inst: Instance,
}

/// Groups ops, leads and sec; the policy `ops-db` (approve by leads then sec, moderated, office
/// hours, from 10.0.0.0/8) approved by bob, the second admin.
fn world(backend: Backend) -> World {
    let inst = Instance::new(backend);
    let server = start_with_config(&inst, "[governance]\ncooling_off_days = 0\n");
    let (admin, _) = admin_cli(&inst, &server);
    let (bob, _, _) = add_user_cli(&inst, &server, &admin, "bob", "admin", &[]);
    admin.ok(&[
        "target", "add", "db01", "--host", "10.0.0.5", "--tag", "prod",
    ]);
    for g in ["ops", "leads", "sec"] {
        admin.ok(&["group", "add", g]);
    }
    let held = admin.ok(&[
        "policy",
        "add",
        "ops-db",
        "--group",
        "ops",
        "--targets",
        "db01",
        "--allow",
        "session,reveal",
        "--outcome",
        "approve",
        "--levels",
        "leads:1,sec:1",
        "--hours",
        "08:00-20:00",
        "--from",
        "10.0.0.0/8",
        "--moderated",
    ]);
    approve_held(&bob, &held);
    let token = admin.token();
    World {
        _inst: inst,
        server,
        admin,
        bob,
        token,
    }
}

fn get(w: &World, name: &str) -> Value {
    let r = w
        .server
        .api()
        .get(&format!("/api/v1/policies/{name}"), Some(&w.token));
    r.assert_ok();
    r.body.clone()
}

fn put(w: &World, name: &str, version: &str, body: Value) -> Resp {
    w.server.api().call(
        "PUT",
        &format!("/api/v1/policies/{name}?version={version}"),
        Some(&w.token),
        Body::Json(body),
    )
}

/// The policy as the add body, to edit from.
fn body_of(p: &Value) -> Value {
    let mut b = json!({
        "name": p["name"], "group": p["group"], "targets": p["targets"],
        "allow": p["allow"], "outcome": p["outcome"],
        "emergency": p["emergency"].as_bool().unwrap_or(false),
        "moderated": p["moderated"].as_bool().unwrap_or(false),
        "networks": p["networks"].as_array().cloned().unwrap_or_default(),
    });
    for k in ["levels", "max_duration", "hours", "days", "from", "until"] {
        if !p[k].is_null() {
            b[k] = p[k].clone();
        }
    }
    b
}

fn policy_round_trip(backend: Backend) {
    let w = world(backend);
    let before = get(&w, "ops-db");
    assert_eq!(before["levels"], "leads:1,sec:1", "{before}");

    // Narrowing (a shorter grant) applies at once; what is not given is kept.
    w.admin
        .ok(&["policy", "edit", "ops-db", "--max-duration", "2h"])
        .assert_stdout_contains("changed policy ops-db");
    let now = get(&w, "ops-db");
    assert_eq!(now["max_duration"], "2h", "{now}");
    for k in [
        "levels",
        "hours",
        "networks",
        "moderated",
        "targets",
        "allow",
    ] {
        assert_eq!(now[k], before[k], "{k} kept: {now}");
    }
    assert_ne!(now["version"], before["version"]);

    // Widening (one approval level fewer) waits for bob; until then nothing changes.
    let held = w
        .admin
        .ok(&["policy", "edit", "ops-db", "--levels", "leads:1"]);
    let id = held_change(&held);
    held.assert_stdout_contains("levels leads:1,sec:1 -> leads:1");
    assert_eq!(get(&w, "ops-db")["levels"], "leads:1,sec:1");
    w.admin
        .fail(&["change", "approve", &id])
        .assert_stderr_contains("own_change");
    approve_held(&w.bob, &held);
    assert_eq!(get(&w, "ops-db")["levels"], "leads:1");

    // Clearing an optional field with an empty value, and dropping --moderated: both widen.
    let held = w
        .admin
        .ok(&["policy", "edit", "ops-db", "--hours", "", "--no-moderated"]);
    approve_held(&w.bob, &held);
    let now = get(&w, "ops-db");
    assert!(now["hours"].is_null(), "{now}");
    assert!(
        now["moderated"].is_null() || now["moderated"] == false,
        "{now}"
    );
    let listed = w.admin.ok(&["policy", "list"]).stdout;
    assert!(
        listed.contains("ops-db") && !listed.contains("hours=") && !listed.contains("moderated"),
        "{listed}"
    );

    // The API: a narrowing PUT from the current version applies (200)...
    let v1 = now["version"].as_str().unwrap().to_owned();
    let mut narrower = body_of(&now);
    narrower["days"] = json!("mon-fri");
    let r = put(&w, "ops-db", &v1, narrower.clone());
    r.assert_ok();
    assert_eq!(r.body["days"], "mon,tue,wed,thu,fri", "{}", r.body);
    // ...the same edit from the old version is refused, naming the version.
    put(&w, "ops-db", &v1, narrower).assert_error(409, "stale_version");
    // A widening PUT is held (202) from the current version, and when another edit lands
    // before bob approves it, the approval is refused as stale: nothing is overwritten.
    let now = get(&w, "ops-db");
    let v2 = now["version"].as_str().unwrap().to_owned();
    let mut wider = body_of(&now);
    wider["allow"] = json!(["session"]);
    wider["targets"] = json!(["*"]);
    let r = put(&w, "ops-db", &v2, wider);
    assert_eq!(r.status, 202, "{}", r.text);
    let change = r.body["change"]["id"].as_str().unwrap().to_owned();
    w.admin
        .ok(&["policy", "edit", "ops-db", "--max-duration", "1h"])
        .assert_stdout_contains("changed policy ops-db");
    w.bob
        .fail(&["change", "approve", &change])
        .assert_stderr_contains("stale_version");
    assert_eq!(get(&w, "ops-db")["targets"], json!(["db01"]));

    // Bad input names the field.
    let now = get(&w, "ops-db");
    let v = now["version"].as_str().unwrap().to_owned();
    let mut bad = body_of(&now);
    bad["hours"] = json!("25:00-26:00");
    let r = put(&w, "ops-db", &v, bad);
    r.assert_error(400, "invalid_field");
    assert_eq!(r.field(), Some("hours"), "{}", r.text);
    let mut renamed = body_of(&now);
    renamed["name"] = json!("other");
    let r = put(&w, "ops-db", &v, renamed);
    assert_eq!(r.field(), Some("name"), "{}", r.text);
    let r = w.server.api().call(
        "PUT",
        "/api/v1/policies/ops-db",
        Some(&w.token),
        Body::Json(body_of(&now)),
    );
    r.assert_error(400, "invalid_field");
    assert_eq!(r.field(), Some("version"), "{}", r.text);
    put(&w, "no-such", &v, json!({"name": "no-such", "group": "ops", "targets": ["db01"], "allow": ["session"], "outcome": "allow"}))
        .assert_error(404, "not_found");
    w.admin
        .fail(&["policy", "edit", "ops-db", "--outcome", "maybe"])
        .assert_stderr_contains("outcome");

    // Audited with before and after; the held one with its approver.
    let audit = parse_export(&w.admin.ok(&["audit", "export"]).stdout);
    let updates: Vec<&Value> = audit
        .iter()
        .filter(|e| e["action"] == "policy.update")
        .collect();
    assert_eq!(updates.len(), 5, "{updates:?}");
    let first = updates[0];
    assert_eq!(first["object"], "policy:ops-db");
    assert_eq!(
        first["details"]["before"]["limits"]["max_duration"],
        Value::Null
    );
    assert_eq!(first["details"]["after"]["limits"]["max_duration"], "2h");
    assert_eq!(
        first["details"]["before"]["limits"]["levels"],
        "leads:1,sec:1"
    );
    let approved = updates[1];
    assert_eq!(approved["details"]["approved_by"], "bob", "{approved}");
    assert_eq!(approved["details"]["after"]["limits"]["levels"], "leads:1");
}

#[test]
fn policy_edit_round_trip_sqlite() {
    policy_round_trip(Backend::Sqlite);
}

#[test]
fn policy_edit_round_trip_postgres() {
    policy_round_trip(Backend::Postgres);
}

/// The console's edit form: prefilled from the policy, carrying its version; saved with the
/// CSRF token (refused without), a narrowing applied, a widening held, a stale form refused.
#[test]
fn policy_edit_in_the_console() {
    let inst = Instance::new(Backend::Sqlite);
    let server = start_with_config(&inst, "[governance]\ncooling_off_days = 0\n");
    let api = server.api();
    let (admin, admin_pw) = admin_token(&server);
    api.post("/api/v1/groups", Some(&admin), json!({"name": "ops"}))
        .assert_ok();
    api.post(
        "/api/v1/targets",
        Some(&admin),
        json!({"name": "db01", "host": "10.0.0.5"}),
    )
    .assert_ok();
    api.post(
        "/api/v1/policies",
        Some(&admin),
        json!({"name": "web", "group": "ops", "targets": ["db01"], "allow": ["session", "reveal"],
               "outcome": "justify", "max_duration": "4h", "days": "mon-fri", "moderated": true}),
    )
    .assert_ok();
    api.create_user(&admin, "admin2", "admin", &[]);
    let mut b = Browser::new(&server);
    let r = b.login("admin", &admin_pw, None);
    assert_eq!(r.status, 303, "{}", r.text);
    assert!(b.get("/policies").text.contains("/policies/web/edit"));
    let form = b.get("/policies/web/edit");
    assert_eq!(form.status, 200, "{}", form.text);
    let version = api.get("/api/v1/policies/web", Some(&admin)).body["version"]
        .as_str()
        .unwrap()
        .to_owned();
    for shown in [
        format!("name=\"version\" value=\"{version}\""),
        "value=\"4h\"".to_owned(),
        "value=\"mon,tue,wed,thu,fri\"".to_owned(),
        "value=\"justify\" selected".to_owned(),
    ] {
        assert!(form.text.contains(&shown), "{shown} in {}", form.text);
    }
    let csrf = csrf_of(&form.text);
    let fields = |max: &'static str, moderated: bool, version: &str| {
        let mut f = vec![
            ("version", version.to_owned()),
            ("name", "web".to_owned()),
            ("group", "ops".to_owned()),
            ("targets", "db01".to_owned()),
            ("allow_session", "true".to_owned()),
            ("allow_reveal", "true".to_owned()),
            ("outcome", "justify".to_owned()),
            ("max_duration", max.to_owned()),
            ("days", "mon-fri".to_owned()),
        ];
        if moderated {
            f.push(("moderated", "true".to_owned()));
        }
        f
    };
    let post = |f: &[(&str, String)], csrf: Option<&str>| {
        let mut v: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if let Some(c) = csrf {
            v.push(("csrf", c));
        }
        b.post("/policies/web/edit", &v)
    };
    let r = post(&fields("1h", true, &version), None);
    assert_eq!(r.status, 403, "without CSRF: {}", r.text);
    assert!(r.text.contains("csrf_failed"), "{}", r.text);
    let r = post(&fields("1h", true, &version), Some(&csrf));
    assert_eq!(r.status, 303, "a narrowing applies: {}", r.text);
    let now = api.get("/api/v1/policies/web", Some(&admin)).body;
    assert_eq!(now["max_duration"], "1h", "{now}");
    // The same form again: its version is gone.
    let r = post(&fields("30m", true, &version), Some(&csrf));
    assert_eq!(r.status, 409, "a stale form: {}", r.text);
    assert!(r.text.contains("read it again"), "{}", r.text);
    // Unticking moderated widens: held for admin2.
    let v = now["version"].as_str().unwrap().to_owned();
    let r = post(&fields("1h", false, &v), Some(&csrf));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("Edit held for approval"), "{}", r.text);
    assert!(r.text.contains("moderated true -&gt; (none)"), "{}", r.text);
    assert_eq!(
        api.get("/api/v1/policies/web", Some(&admin)).body["moderated"],
        true
    );
}
