//! The audit trail as CSV (issue 16): `GET /api/v1/audit/export.csv` and `cofre audit export
//! --format csv`, read back with Python's csv module, equal the API's entries for the same
//! conditions; a value with a comma, a quote, a newline and a leading `=` comes back whole and
//! cannot run as a formula; the export is audited (`audit.export` with its conditions) before
//! any row, and bad conditions name their field.

use crate::harness::*;
use serde_json::Value;
use std::process::Command;

/// Rows of a CSV file as Python's csv module reads them.
fn python_csv(path: &std::path::Path) -> Vec<Vec<String>> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import csv, json, sys\n\
             with open(sys.argv[1], newline='', encoding='utf-8') as f:\n    \
             print(json.dumps(list(csv.reader(f, strict=True))))",
        )
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python's csv reader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("rows as JSON")
}

/// What a cell of `value` holds: the value, after an apostrophe where a spreadsheet would read
/// a formula.
fn neutral(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    }
}

/// Every entry the API's search answers for `conditions` (`&k=v...`), following the cursors.
fn api_entries(api: &Api, token: &str, conditions: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = api.get(
            &format!("/api/v1/audit?limit=1000{cursor}{conditions}"),
            Some(token),
        );
        r.assert_ok();
        out.extend(r.body["items"].as_array().unwrap().iter().cloned());
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}

/// The rows (after the header) equal `entries`, cell by cell, up to the last row's entry.
fn assert_rows_are(rows: &[Vec<String>], entries: &[Value]) {
    assert_eq!(
        rows[0],
        [
            "seq",
            "ts",
            "actor",
            "action",
            "object",
            "outcome",
            "details",
            "prev_hash",
            "hash"
        ]
    );
    let rows = &rows[1..];
    let last: i64 = rows.last().map_or(0, |r| r[0].parse().unwrap());
    let entries: Vec<&Value> = entries
        .iter()
        .filter(|e| e["seq"].as_i64().unwrap() <= last)
        .collect();
    assert_eq!(rows.len(), entries.len(), "{rows:?}");
    for (row, e) in rows.iter().zip(entries) {
        let text = |k: &str| neutral(e[k].as_str().unwrap());
        let want = vec![
            e["seq"].to_string(),
            text("ts"),
            text("actor"),
            text("action"),
            text("object"),
            text("outcome"),
            neutral(&e["details"].to_string()),
            text("prev_hash"),
            text("hash"),
        ];
        assert_eq!(row, &want, "entry {e}");
        let details: Value = serde_json::from_str(&row[6]).unwrap();
        assert_eq!(details, e["details"]);
    }
}

#[test]
fn audit_csv_export_equals_the_api_search() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let api = server.api();
    let (admin, _) = admin_cli(&inst, &server);
    let token = admin.token();
    // Failed logins put what was typed as the username into the trail as its actor.
    // (The API refuses CR in a username; a cell starting with CR is `csv_tests`'.)
    let nasty = "=HYPERLINK(\"http://evil.example\",\"a,b\")\nsecond line";
    for who in [nasty, "+1+1", "-2", "@SUM(A1)", "\tTAB"] {
        assert_eq!(api.login(who, "wrong-password").status, 401, "{who:?}");
    }

    // Everything.
    let r = api.get("/api/v1/audit/export.csv", Some(&token));
    assert_eq!(r.status, 200, "{}", r.text);
    let ct = r.headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("text/csv"), "{ct}");
    assert!(r.text.ends_with("\r\n"), "CRLF line ends");
    let file = inst.path().join("all.csv");
    std::fs::write(&file, &r.text).unwrap();
    let rows = python_csv(&file);
    assert_rows_are(&rows, &api_entries(&api, &token, ""));
    // The nasty value comes back whole, behind an apostrophe; so do the others.
    let actors: Vec<&str> = rows.iter().map(|r| r[2].as_str()).collect();
    assert!(actors.contains(&format!("'{nasty}").as_str()), "{actors:?}");
    for who in ["'+1+1", "'-2", "'@SUM(A1)", "'\tTAB"] {
        assert!(actors.contains(&who), "{who:?} in {actors:?}");
    }
    assert!(
        !rows
            .iter()
            .flatten()
            .any(|c| c.starts_with(['=', '+', '-', '@', '\t', '\r'])),
        "no cell starts a formula"
    );
    // The export is audited, its own entry the last row (written before any row was read).
    let last = rows.last().unwrap();
    assert_eq!(
        (last[2].as_str(), last[3].as_str()),
        ("admin", "audit.export")
    );

    // The same conditions as the search, from the CLI into a file.
    let out = inst.path().join("failed.csv");
    admin.ok(&[
        "audit",
        "export",
        "--format",
        "csv",
        "-o",
        out.to_str().unwrap(),
        "--action",
        "auth.login_*",
        "--since",
        "2020-01-01",
    ]);
    let rows = python_csv(&out);
    let entries = api_entries(&api, &token, "&action=auth.login_*&since=2020-01-01");
    assert_eq!(rows.len(), 1 + 5, "{rows:?}");
    assert_rows_are(&rows, &entries);
    let export = api_entries(&api, &token, "&action=audit.export");
    let cli_export = export.last().unwrap();
    assert_eq!(
        cli_export["details"]["action"], "auth.login_*",
        "{cli_export}"
    );
    assert_eq!(cli_export["details"]["since"], "2020-01-01");
    assert_eq!(cli_export["details"]["format"], "csv");

    // Bad conditions name their field, and nothing is exported or audited.
    let r = api.get("/api/v1/audit/export.csv?since=yesterday", Some(&token));
    r.assert_error(400, "invalid_field");
    assert_eq!(r.field(), Some("since"), "{}", r.text);
    assert_eq!(api_entries(&api, &token, "&action=audit.export").len(), 2);
    let r = api.get("/api/v1/audit/export.csv?colour=red", Some(&token));
    assert_eq!(r.status, 400, "{}", r.text);
}

/// Pages of the database make the file: more entries than one page, in order, none twice.
#[test]
fn audit_csv_export_spans_pages() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let api = server.api();
    let (admin, _) = admin_token(&server);
    api.post(
        "/api/v1/targets",
        Some(&admin),
        serde_json::json!({"name": "db01", "host": "10.0.0.5"}),
    )
    .assert_ok();
    api.post(
        "/api/v1/targets/db01/credentials",
        Some(&admin),
        serde_json::json!({"account": "root", "password": "pw-export-1"}),
    )
    .assert_ok();
    // Each refused reveal (the admin has no policy) is one entry, quickly made.
    for i in 0..1100 {
        let r = api.post(
            "/api/v1/targets/db01/credentials/root/reveal",
            Some(&admin),
            serde_json::json!({"reason": format!("page test {i}")}),
        );
        assert_eq!(r.status, 403, "{}", r.text);
    }
    let r = api.get(
        "/api/v1/audit/export.csv?action=credential.reveal",
        Some(&admin),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains("pw-export-1"));
    let file = inst.path().join("pages.csv");
    std::fs::write(&file, &r.text).unwrap();
    let rows = python_csv(&file);
    assert_eq!(rows.len(), 1 + 1100);
    assert_rows_are(
        &rows,
        &api_entries(&api, &admin, "&action=credential.reveal"),
    );
}
