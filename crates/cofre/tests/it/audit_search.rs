//! The audit trail's search (`GET /api/v1/audit?actor=&action=&object=&since=&until=`, `cofre
//! audit list --actor ...`, the console's audit page): done by the service in SQL, on both
//! backends, paginated within the matches.

use crate::harness::*;
use serde_json::Value;

fn items(r: &Resp) -> Vec<Value> {
    r.assert_ok();
    r.body["items"].as_array().unwrap().clone()
}

fn search(backend: Backend) {
    let inst = Instance::new(backend);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    let api = server.api();
    let token = admin.token();
    for g in ["g1", "g2", "g3", "g_x", "gaxb"] {
        admin.ok(&["group", "add", g]);
    }
    let (_, pw) = api.make_user(&token, "carol", "user", &[]);
    api.login("carol", &pw).assert_ok();

    // Exact actor and action.
    let got = items(&api.get("/api/v1/audit?actor=carol&action=auth.login", Some(&token)));
    assert!(!got.is_empty());
    assert!(
        got.iter()
            .all(|e| e["actor"] == "carol" && e["action"] == "auth.login"),
        "{got:?}"
    );
    // A prefix; `_` and `%` in it are literal, not wildcards.
    let got = items(&api.get("/api/v1/audit?action=auth.*&actor=carol", Some(&token)));
    assert!(got
        .iter()
        .all(|e| e["action"].as_str().unwrap().starts_with("auth.")));
    assert!(got.len() >= 2, "{got:?}");
    let created = items(&api.get("/api/v1/audit?action=group.*&actor=admin", Some(&token)));
    let objects: Vec<&str> = created
        .iter()
        .map(|e| e["object"].as_str().unwrap())
        .collect();
    assert!(objects.len() >= 5, "{objects:?}");
    let one = &created[0]["object"].as_str().unwrap().to_owned();
    let got = items(&api.get(
        &format!("/api/v1/audit?object={}", urlencode(one)),
        Some(&token),
    ));
    assert!(got.iter().all(|e| e["object"] == *one), "{got:?}");
    let underscore = objects.iter().find(|o| o.contains("g_x")).unwrap();
    let prefix = &underscore[..underscore.find("g_x").unwrap() + 2];
    let got = items(&api.get(
        &format!("/api/v1/audit?object={}*", urlencode(prefix)),
        Some(&token),
    ));
    assert!(
        got.iter()
            .all(|e| e["object"].as_str().unwrap().starts_with(prefix)),
        "`_` matched as a wildcard: {got:?}"
    );
    assert!(!got.is_empty());

    // Pages within the matches: one entry each, then the end.
    let all = items(&api.get("/api/v1/audit?action=group.*&actor=admin", Some(&token)));
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/audit?action=group.*&actor=admin&limit=2&cursor={c}"),
            None => "/api/v1/audit?action=group.*&actor=admin&limit=2".to_owned(),
        };
        let r = api.get(&path, Some(&token));
        seen.extend(items(&r));
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, all);

    // Time: everything is since yesterday and before tomorrow; nothing is before yesterday.
    let today = all[0]["ts"].as_str().unwrap()[..10].to_owned();
    let got = items(&api.get(
        &format!("/api/v1/audit?action=group.*&since={today}"),
        Some(&token),
    ));
    assert_eq!(got.len(), all.len());
    let got = items(&api.get(
        &format!("/api/v1/audit?action=group.*&until={today}"),
        Some(&token),
    ));
    assert!(got.is_empty(), "{got:?}");
    let last_ts = all.last().unwrap()["ts"].as_str().unwrap().to_owned();
    let got = items(&api.get(
        &format!("/api/v1/audit?action=group.*&since={}", urlencode(&last_ts)),
        Some(&token),
    ));
    assert!(got.contains(all.last().unwrap()), "{got:?}");

    // A bad condition names its field.
    let r = api.get("/api/v1/audit?since=yesterday", Some(&token));
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["field"], "since", "{}", r.text);
    let r = api.get("/api/v1/audit?nope=1", Some(&token));
    assert_eq!(r.status, 400, "{}", r.text);

    // The CLI asks the server the same.
    let out = admin.ok(&["audit", "list", "--actor", "carol", "--action", "auth.*"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let cols: Vec<&str> = l.split('\t').collect();
        assert_eq!(cols[2], "carol", "{l}");
        assert!(cols[3].starts_with("auth."), "{l}");
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn audit_search_sqlite() {
    search(Backend::Sqlite);
}

#[test]
fn audit_search_postgres() {
    search(Backend::Postgres);
}
