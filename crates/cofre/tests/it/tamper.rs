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
