//! Someone with access to the database edits, deletes or swaps audit rows; `cofre audit verify`
//! names the entry. Each case runs on its own copy of the instance, taken while the server is stopped.

use crate::harness::*;

const TAMPER_REASON: &str = "INC-7 checking the backups";

fn drop_triggers(backend: Backend) -> Vec<String> {
    match backend {
        Backend::Sqlite => vec![
            "DROP TRIGGER audit_log_no_update".into(),
            "DROP TRIGGER audit_log_no_delete".into(),
        ],
        Backend::Postgres => vec!["DROP TRIGGER audit_log_no_change ON audit_log".into()],
    }
}

fn overwrite(seq: i64, with: &AuditRow) -> String {
    format!(
        "UPDATE audit_log SET ts = {}, actor = {}, action = {}, object = {}, outcome = {}, details = {}, \
         prev_hash = {}, hash = {} WHERE seq = {seq}",
        sql_quote(&with.ts),
        sql_quote(&with.actor),
        sql_quote(&with.action),
        sql_quote(&with.object),
        sql_quote(&with.outcome),
        sql_quote(&with.details),
        sql_quote(&with.prev_hash),
        sql_quote(&with.hash),
    )
}

/// Tampers with a copy of `inst`, starts a server on it, and checks that verify names `expect_seq`.
fn check_case(inst: &Instance, admin: &Cli, what: &str, tamper: &[String], expect_seq: i64) {
    let copy = inst.fork();
    let url = copy.db_url_for_tests();
    let mut statements = drop_triggers(copy.backend);
    statements.extend_from_slice(tamper);
    sql_exec(&url, &statements).unwrap_or_else(|e| panic!("{what}: {e}"));

    let server = copy.start();
    let admin = admin.at_with_token(&server);
    let out = admin.run(&["audit", "verify"], None);
    assert_eq!(
        out.code,
        Some(1),
        "{what}: verify must exit 1:\n{}",
        out.all()
    );
    let expected = format!("audit chain broken at entry {expect_seq}: ");
    assert!(
        out.all().contains(&expected),
        "{what}: verify must name entry {expect_seq} (`{expected}REASON`):\n{}",
        out.all()
    );
    let api = server
        .api()
        .get("/api/v1/audit/verify", Some(&admin.token()));
    api.assert_ok();
    assert_eq!(api.body["intact"], false, "{what}: {}", api.text);
    assert_eq!(
        api.body["first_broken"]["seq"], expect_seq,
        "{what}: {}",
        api.text
    );
}

fn tampering_is_named(backend: Backend) {
    let inst = Instance::new(backend);
    let mut server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    admin.ok(&[
        "target", "add", "db01", "--host", "10.0.0.5", "--tag", "prod",
    ]);
    admin.ok_in(
        &["credential", "add", "db01", "root", "--password-stdin"],
        "hunter2-hunter2\n",
    );
    grant_admin_reveal(&admin, "justify");
    admin.ok(&[
        "credential",
        "reveal",
        "db01",
        "root",
        "--reason",
        TAMPER_REASON,
    ]);
    admin.ok(&[
        "target", "add", "db02", "--host", "10.0.0.6", "--tag", "prod",
    ]);
    admin
        .ok(&["audit", "verify"])
        .assert_stdout_contains("audit chain intact");
    server.stop();

    let url = inst.db_url_for_tests();
    let rows = audit_rows(&url);
    assert!(
        rows.len() >= 8,
        "expected a few audit entries, found {}",
        rows.len()
    );
    assert_eq!(rows.first().map(|r| r.seq), Some(1));

    // The database itself refuses changes to the trail while the triggers are in place.
    assert!(
        sql_exec(
            &url,
            &[format!(
                "UPDATE audit_log SET actor = 'mallory' WHERE seq = {}",
                rows[1].seq
            )]
        )
        .is_err(),
        "an UPDATE on audit_log must be refused"
    );
    assert!(
        sql_exec(
            &url,
            &[format!("DELETE FROM audit_log WHERE seq = {}", rows[1].seq)]
        )
        .is_err(),
        "a DELETE on audit_log must be refused"
    );
    assert_eq!(audit_rows(&url).len(), rows.len());

    // (a) Edit the reason of the reveal.
    let reveal = rows
        .iter()
        .find(|r| r.action == "credential.reveal" && r.details.contains(TAMPER_REASON))
        .expect("the reveal with its reason is in audit_log");
    let edited = reveal.details.replace(TAMPER_REASON, "routine check");
    check_case(
        &inst,
        &admin,
        "edited details",
        &[format!(
            "UPDATE audit_log SET details = {} WHERE seq = {}",
            sql_quote(&edited),
            reveal.seq
        )],
        reveal.seq,
    );

    // (b) Delete a row in the middle.
    let middle = rows[rows.len() / 2].seq;
    assert!(middle > 1 && middle < rows.last().unwrap().seq);
    check_case(
        &inst,
        &admin,
        "deleted row",
        &[format!("DELETE FROM audit_log WHERE seq = {middle}")],
        middle,
    );

    // (c) Swap the contents of two neighbouring rows: the first of them is named.
    let (a, b) = (&rows[2], &rows[3]);
    check_case(
        &inst,
        &admin,
        "swapped rows",
        &[overwrite(a.seq, b), overwrite(b.seq, a)],
        a.seq,
    );

    // (d) Lower one entry's bound for time searches (not in the chain, but checked).
    check_case(
        &inst,
        &admin,
        "lowered ts_high",
        &[format!(
            "UPDATE audit_log SET ts_high = '2000-01-01T00:00:00Z' WHERE seq = {middle}"
        )],
        middle,
    );

    // The untouched original still verifies.
    let server = inst.start();
    let admin = admin.at_with_token(&server);
    admin
        .ok(&["audit", "verify"])
        .assert_stdout_contains("audit chain intact");
}

#[test]
fn tamper_sqlite() {
    tampering_is_named(Backend::Sqlite);
}

#[test]
fn tamper_postgres() {
    tampering_is_named(Backend::Postgres);
}

/// The head row `(seq, hash, mac)` as stored.
fn audit_head(url: &str) -> (i64, String, String) {
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    block_on(async {
        let mut conn = sqlx::AnyConnection::connect(url).await.expect("connect");
        let r = sqlx::query("SELECT seq, hash, mac FROM audit_head WHERE id = 1")
            .fetch_one(&mut conn)
            .await
            .expect("read audit_head");
        let head = (r.get::<i64, _>(0), r.get(1), r.get(2));
        conn.close().await.ok();
        head
    })
}

/// The seq the server's anchor file (DATA_DIR/audit-anchor.json) records, once it exists.
fn anchor_seq(inst: &Instance) -> Option<i64> {
    let text = std::fs::read(inst.path().join("data").join("audit-anchor.json")).ok()?;
    serde_json::from_slice::<serde_json::Value>(&text).ok()?["seq"].as_i64()
}

fn wait_for_anchor(inst: &Instance, seq: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while anchor_seq(inst) != Some(seq) {
        assert!(
            std::time::Instant::now() < deadline,
            "the anchor file reaches entry {seq} (it says {:?})",
            anchor_seq(inst)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Cutting off the newest entries and moving the head back is found, however the head is made to
/// look: recomputed without the key (its MAC fails), replayed from an older genuine state (the
/// anchor outside the database saw further), or the whole log emptied (TRUNCATE, or DELETE on
/// SQLite) with the genesis row put back.
fn tail_cuts_are_found(backend: Backend) {
    let inst = Instance::new(backend);
    let mut server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    let url = inst.db_url_for_tests();
    let genesis_like = audit_head(&url);
    admin.ok(&["group", "add", "g1"]);
    let older = audit_head(&url);
    assert!(!older.2.is_empty(), "the head carries a MAC: {older:?}");
    for g in ["g2", "g3", "g4"] {
        admin.ok(&["group", "add", g]);
    }
    let newest = audit_head(&url);
    wait_for_anchor(&inst, newest.0);
    let verified = admin.ok(&["audit", "verify"]);
    verified.assert_stdout_contains("audit chain intact");
    verified.assert_stdout_contains(&format!("checked against entry {}", newest.0));
    server.stop();
    let cut_from = older.0 + 1;
    let delete_tail = format!("DELETE FROM audit_log WHERE seq > {}", older.0);

    // (a) Rewound with the head recomputed by someone without the key: the MAC does not match.
    let forged = format!(
        "UPDATE audit_head SET seq = {}, hash = {} WHERE id = 1",
        older.0,
        sql_quote(&older.1)
    );
    check_case(
        &inst,
        &admin,
        "tail cut, head recomputed",
        &[delete_tail.clone(), forged],
        cut_from,
    );

    // (b) Rewound to an older, genuinely signed head (replayed): the anchor saw further.
    let replayed = format!(
        "UPDATE audit_head SET seq = {}, hash = {}, mac = {} WHERE id = 1",
        older.0,
        sql_quote(&older.1),
        sql_quote(&older.2)
    );
    check_case(
        &inst,
        &admin,
        "tail cut, older head replayed",
        &[delete_tail, replayed],
        cut_from,
    );

    // (c) The whole log emptied and the head put back to an early state.
    let empty = match backend {
        Backend::Postgres => "TRUNCATE audit_log".to_owned(),
        Backend::Sqlite => "DELETE FROM audit_log".to_owned(),
    };
    let reset = format!(
        "UPDATE audit_head SET seq = 0, hash = {}, mac = {} WHERE id = 1",
        sql_quote("0".repeat(64).as_str()),
        sql_quote(&genesis_like.2)
    );
    check_case(&inst, &admin, "log emptied, head reset", &[empty, reset], 1);

    // The untouched original still verifies.
    let server = inst.start();
    let admin = admin.at_with_token(&server);
    admin
        .ok(&["audit", "verify"])
        .assert_stdout_contains("audit chain intact");
}

#[test]
fn tail_cut_sqlite() {
    tail_cuts_are_found(Backend::Sqlite);
}

#[test]
fn tail_cut_postgres() {
    tail_cuts_are_found(Backend::Postgres);
}

/// The newest break-glass file in DATA_DIR/breakglass anchors the head too: with the anchor
/// file gone (and no snapshot), a tail cut after the file was written is still found, and the
/// offline opener shows the head the file anchored.
#[test]
fn tail_cut_found_by_the_breakglass_file() {
    let inst = Instance::new(Backend::Sqlite);
    let config = inst.path().join("cofre.toml");
    std::fs::write(&config, "[breakglass]\nmin_interval_seconds = 1\n").unwrap();
    let mut server = inst.start_with_env(&[("COFRE_CONFIG", config.to_str().unwrap())]);
    let (admin, _) = admin_cli(&inst, &server);
    let url = inst.db_url_for_tests();
    let custodians: Vec<Cli> = ["kim", "lee"]
        .iter()
        .map(|n| add_user_cli(&inst, &server, &admin, n, "user", &[]).0)
        .collect();
    admin.ok(&["group", "add", "g1"]);
    let older = audit_head(&url);
    admin.ok(&[
        "breakglass",
        "ceremony",
        "--custodians",
        "kim,lee",
        "--threshold",
        "2",
    ]);
    let shares: Vec<String> = custodians
        .iter()
        .map(|c| c.ok(&["breakglass", "share"]).stdout.trim().to_owned())
        .collect();
    // Closing the ceremony writes the first file.
    let dir = inst.data_dir.join("breakglass");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let file = loop {
        let found = std::fs::read_dir(&dir).ok().and_then(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "cofre"))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no break-glass file in {}",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
    let stanza = text.lines().nth(1).unwrap().to_owned();
    let anchored: i64 = stanza
        .split(' ')
        .find_map(|w| w.strip_prefix("audit_seq="))
        .unwrap_or_else(|| panic!("no audit head in the clear header: {stanza}"))
        .parse()
        .unwrap();
    let hash = stanza
        .split(' ')
        .find_map(|w| w.strip_prefix("audit_hash="))
        .unwrap()
        .to_owned();
    assert!(anchored > older.0, "{stanza}");
    let rows = audit_rows(&url);
    let row = rows.iter().find(|r| r.seq == anchored).unwrap();
    assert_eq!(row.hash, hash, "the file anchors a real entry");
    server.stop();
    std::fs::remove_file(inst.data_dir.join("audit-anchor.json")).unwrap();
    assert!(
        !inst.data_dir.join("snapshots").exists() || {
            std::fs::read_dir(inst.data_dir.join("snapshots"))
                .unwrap()
                .next()
                .is_none()
        }
    );

    let replayed = format!(
        "UPDATE audit_head SET seq = {}, hash = {}, mac = {} WHERE id = 1",
        older.0,
        sql_quote(&older.1),
        sql_quote(&older.2)
    );
    check_case(
        &inst,
        &admin,
        "tail cut after a break-glass file, anchor file removed",
        &[
            format!("DELETE FROM audit_log WHERE seq > {}", older.0),
            replayed,
        ],
        older.0 + 1,
    );

    // The offline opener shows the anchored head.
    let offline = tempfile::tempdir().unwrap();
    let mut args = vec![
        "breakglass".to_owned(),
        "open".into(),
        file.display().to_string(),
    ];
    for (i, s) in shares.iter().enumerate() {
        let p = offline.path().join(format!("share-{i}.txt"));
        std::fs::write(&p, format!("{s}\n")).unwrap();
        args.push("--share-file".into());
        args.push(p.display().to_string());
    }
    args.push("--log".into());
    args.push(offline.path().join("open.log").display().to_string());
    let mut cmd = std::process::Command::new(bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", offline.path())
        .current_dir(offline.path())
        .args(&args);
    let out = run_command(cmd, Some(""), "cofre breakglass open");
    assert!(
        out.stderr.contains(&format!(
            "audit chain head then: entry {anchored} (hash {hash})"
        )),
        "{}",
        out.all()
    );
}
