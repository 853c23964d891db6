//! Growing from embedded (issue 17): `cofre copy-database` moves a SQLite instance into an
//! empty PostgreSQL database, and the server runs on the copy with everything as it was: the
//! same logins, secrets, users and audit trail, whose chain and anchors verify.

use crate::harness::*;
use serde_json::Value;
use std::process::Command;

const SECRET: &str = "copy-database-secret-8812";

fn copy(from: &str, to: &str, dir: &std::path::Path) -> Out {
    let mut cmd = Command::new(bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("COFRE_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir)
        .args(["copy-database", "--from", from, "--to", to]);
    run_command(cmd, None, "cofre copy-database")
}

fn trail(cli: &Cli) -> Vec<Value> {
    parse_export(&cli.ok(&["audit", "export", "--format", "jsonl"]).stdout)
}

#[test]
fn a_sqlite_instance_moves_into_postgres_whole() {
    let mut inst = Instance::new(Backend::Sqlite);
    let mut server = inst.start();
    let (admin, admin_pw) = admin_cli(&inst, &server);
    admin.ok(&[
        "target", "add", "db01", "--host", "10.0.0.5", "--tag", "prod",
    ]);
    admin.ok_in(
        &["credential", "add", "db01", "root", "--password-stdin"],
        &format!("{SECRET}\n"),
    );
    grant_admin_reveal(&admin, "allow");
    admin
        .ok(&["credential", "reveal", "db01", "root", "--reason", "before"])
        .assert_stdout_contains(SECRET);
    add_user_cli(&inst, &server, &admin, "bob", "user", &["vault"]);
    let users = admin.ok(&["--output", "json", "user", "list"]).json();
    let before = trail(&admin);
    server.stop();

    let pg = PgDb::create();
    let sqlite = inst.db_url_for_tests();
    // Not into PostgreSQL: refused naming the field.
    copy(&sqlite, &sqlite, inst.path())
        .assert_error()
        .assert_stderr_contains("--to: must be a postgres:// URL");
    let copied = copy(&sqlite, &pg.url, inst.path());
    copied.assert_ok();
    copied.assert_stdout_contains("the audit chain verifies on the copy");
    assert!(
        copied
            .stdout
            .contains(&format!("({} entries)", before.len())),
        "{}",
        copied.all()
    );
    // Twice: the target is not empty any more.
    copy(&sqlite, &pg.url, inst.path())
        .assert_error()
        .assert_stderr_contains("not empty");
    assert!(
        std::fs::read_dir(inst.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("copy-database")),
        "the dump is removed"
    );

    // The server on the copy: the same data dir, the PostgreSQL database.
    inst.pg = Some(pg);
    inst.backend = Backend::Postgres;
    let server = inst.start();
    let admin = Cli::new(&inst, "admin-on-pg").at(&server);
    admin.login("admin", &admin_pw);
    admin
        .ok(&["credential", "reveal", "db01", "root", "--reason", "after"])
        .assert_stdout_contains(SECRET);
    assert_eq!(
        admin.ok(&["--output", "json", "user", "list"]).json(),
        users
    );
    let after = trail(&admin);
    assert_eq!(
        after[..before.len()],
        before[..],
        "the trail is the same up to the copy"
    );
    admin
        .ok(&["audit", "verify"])
        .assert_stdout_contains("intact");
}
