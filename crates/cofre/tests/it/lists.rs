//! Lists that stay usable at scale (issue 16, found by `cofre-bench console`): a page of targets
//! holds the targets its viewer may see however sparse they are among all of them (the scan
//! per page is bounded, and a page cut short carries its cursor); a page of users carries each
//! one's groups, a page of groups its members, each read in one query. On both backends, the
//! pages together list each item once, in order; the console's pages link to the next.

use crate::harness::*;
use serde_json::{json, Value};

/// Every page of `path` at `limit`, following `next_cursor` to the end.
fn pages(api: &Api, token: &str, path: &str, limit: u32) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit={limit}&cursor={c}"),
            None => format!("{path}?limit={limit}"),
        };
        let r = api.get(&url, Some(token));
        r.assert_ok();
        let items = r.body["items"].as_array().unwrap().clone();
        assert!(
            items.len() <= limit as usize,
            "{url}: {} items",
            items.len()
        );
        out.push(items);
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(out.len() < 1000, "{path}: the pages do not end");
    }
    out
}

fn names(pages: &[Vec<Value>], field: &str) -> Vec<String> {
    pages
        .iter()
        .flatten()
        .map(|v| v[field].as_str().unwrap().to_owned())
        .collect()
}

fn lists(backend: Backend) {
    let inst = Instance::new(backend);
    let server = inst.start();
    let (token, _) = admin_token(&server);
    let api = server.api();

    // 160 targets; carol's policy covers four, with gaps of more than a page's scan at limit 1
    // (50 targets) between some of them.
    let few = [2, 5, 120, 158];
    for i in 0..160 {
        let tag = if few.contains(&i) { "few" } else { "many" };
        api.post(
            "/api/v1/targets",
            Some(&token),
            json!({ "name": format!("t{i:03}"), "host": "10.0.0.1", "tags": [tag] }),
        )
        .assert_ok();
    }
    for g in ["fewers", "g1", "g2", "g3", "g4", "g5"] {
        api.post("/api/v1/groups", Some(&token), json!({ "name": g }))
            .assert_ok();
    }
    api.post(
        "/api/v1/policies",
        Some(&token),
        json!({ "name": "few", "group": "fewers", "targets": ["tag:few"], "allow": ["session"], "outcome": "allow" }),
    )
    .assert_ok();
    let (carol, carol_pw) = api.make_user(&token, "carol", "user", &["fewers"]);

    let expected: Vec<String> = few.iter().map(|i| format!("t{i:03}")).collect();
    for limit in [1, 3, 100] {
        let got = pages(&api, &carol, "/api/v1/targets", limit);
        assert_eq!(
            names(&got, "name"),
            expected,
            "carol's targets at limit {limit}"
        );
        if limit == 100 {
            assert_eq!(got.len(), 1, "all four on the first page: {got:?}");
        }
    }
    let all: Vec<String> = (0..160).map(|i| format!("t{i:03}")).collect();
    let got = pages(&api, &token, "/api/v1/targets", 7);
    assert_eq!(names(&got, "name"), all, "the admin's targets");
    assert!(got[..got.len() - 1].iter().all(|p| p.len() == 7));

    // Users with their groups, groups with their members.
    let mut members: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    members.insert("fewers", vec!["carol".into()]);
    let mut users = vec!["admin".to_owned(), "carol".to_owned()];
    for i in 0..11 {
        let name = format!("u{i:02}");
        let groups: Vec<&str> = ["g1", "g2", "g3", "g4", "g5"]
            .into_iter()
            .enumerate()
            .filter(|(k, _)| (i + k) % 3 == 0)
            .map(|(_, g)| g)
            .collect();
        api.create_user(&token, &name, "user", &groups);
        for g in &groups {
            members.entry(g).or_default().push(name.clone());
        }
        users.push(name);
    }
    users.sort();
    let got = pages(&api, &token, "/api/v1/users", 4);
    assert_eq!(names(&got, "username"), users);
    for u in got.iter().flatten() {
        let name = u["username"].as_str().unwrap();
        let mut want: Vec<&str> = members
            .iter()
            .filter(|(_, m)| m.iter().any(|n| n == name))
            .map(|(g, _)| *g)
            .collect();
        want.sort();
        assert_eq!(u["groups"], json!(want), "the groups of {name}");
    }
    let got = pages(&api, &token, "/api/v1/groups", 2);
    assert_eq!(
        names(&got, "name"),
        ["fewers", "g1", "g2", "g3", "g4", "g5"]
    );
    for g in got.iter().flatten() {
        let name = g["name"].as_str().unwrap();
        let mut want = members.get(name).cloned().unwrap_or_default();
        want.sort();
        assert_eq!(g["members"], json!(want), "the members of {name}");
    }

    // The console's targets page for carol: her four targets on its first page, no next link.
    let mut b = crate::console::Browser::new(&server);
    b.login("carol", &carol_pw, None);
    let page = b.get("/targets");
    page.assert_ok();
    for t in &expected {
        assert!(page.text.contains(&format!(">{t}<")), "{t} on carol's page");
    }
    assert!(!page.text.contains("rel=\"next\""));
}

#[test]
fn target_user_and_group_pages_list_each_item_once_sqlite() {
    lists(Backend::Sqlite);
}

#[test]
fn target_user_and_group_pages_list_each_item_once_postgres() {
    lists(Backend::Postgres);
}
