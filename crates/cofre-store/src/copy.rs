//! Growing from embedded (`cofre copy-database`): every table of one database copied into an
//! empty PostgreSQL database, all or nothing, and checked on the other side (the same rows per
//! table, the audit chain whole up to its head).
//!
//! The source is read as of one moment (one read transaction) and written as the PostgreSQL
//! dump format of `export` (a header, then `{"t": TABLE, "r": ROW}` lines, a SQLite BLOB as
//! `\x` + hex, which PostgreSQL reads back as `bytea`); `export::restore_postgres_dump` loads it.
//! The two backends' migrations are numbered alike, so the source's schema version is the
//! target's.

use crate::export::{quote_ident, quote_literal, restore_postgres_dump, write_dump};
use crate::{DbKind, Result, Store, StoreError};
use cofre_core::audit::ChainVerifier;
use sqlx::{Executor, Row};
use std::collections::BTreeMap;
use std::path::Path;

/// What a copy did.
#[derive(Debug, Clone)]
pub struct CopyOutcome {
    /// Rows copied per table.
    pub rows: BTreeMap<String, u64>,
    /// Audit entries whose chain verified on the target.
    pub audit_entries: u64,
}

/// Copies the database at `from` into the empty PostgreSQL database at `to`, through a dump
/// file in `work_dir` (removed afterwards; it holds only sealed secrets, and is 0600 anyway).
/// Refuses a target that has any table.
pub async fn copy_database(from: &str, to: &str, work_dir: &Path) -> Result<CopyOutcome> {
    if !(to.starts_with("postgres:") || to.starts_with("postgresql:")) {
        return Err(StoreError::UnsupportedUrl);
    }
    {
        sqlx::any::install_default_drivers();
        let mut probe = <sqlx::AnyConnection as sqlx::Connection>::connect(to).await?;
        let tables: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema()",
        )
        .fetch_one(&mut probe)
        .await?;
        let _ = sqlx::Connection::close(probe).await;
        if tables > 0 {
            return Err(StoreError::Refused(format!(
                "--to: the database is not empty ({tables} tables): the copy goes into an empty database, so that nothing of it is mixed with what is there"
            )));
        }
    }
    let source = Store::open(from).await?;
    // create_new: a name taken (another copy running) fails instead of being shared.
    let dump = work_dir.join(format!(".copy-database-{}.jsonl", std::process::id()));
    let copied = async {
        let source_rows = match source.kind {
            DbKind::Sqlite => dump_sqlite(&source, &dump).await?,
            DbKind::Postgres => source.copy_consistent(&dump).await?.rows,
        };
        source.close().await;
        let rows = restore_postgres_dump(to, &dump).await?;
        for (table, n) in &source_rows {
            let there = rows.get(table).copied().unwrap_or(0);
            if there != *n {
                return Err(StoreError::Corrupt(format!(
                    "{table}: {n} rows in the source, {there} in the copy"
                )));
            }
        }
        let audit_entries = verify_chain(to).await?;
        Ok(CopyOutcome {
            rows,
            audit_entries,
        })
    }
    .await;
    let path = dump.clone();
    // The dump may be large: removed off the async workers.
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
    copied
}

/// Walks the copy's audit chain up to its head.
async fn verify_chain(url: &str) -> Result<u64> {
    let store = Store::open(url).await?;
    let head = store.audit_head_signed().await?;
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    loop {
        let batch = store.audit_page(after, 5_000).await?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for record in batch.iter().filter(|r| r.seq <= head.seq) {
            verifier
                .push(record)
                .map_err(|b| StoreError::Corrupt(format!("the copy's audit chain: {b}")))?;
        }
        if after >= head.seq {
            break;
        }
    }
    store.close().await;
    verifier
        .finish(Some((head.seq, &head.hash)))
        .map_err(|b| StoreError::Corrupt(format!("the copy's audit chain: {b}")))
}

/// Writes the SQLite database as a PostgreSQL dump, inside one read transaction; rows per table.
async fn dump_sqlite(store: &Store, dest: &Path) -> Result<BTreeMap<String, u64>> {
    let mut conn = store.read().await?;
    conn.execute("BEGIN").await?;
    let result = dump_sqlite_in_transaction(&mut conn, dest).await;
    // A read transaction: nothing to keep, whatever happened.
    let _ = conn.execute("ROLLBACK").await;
    result
}

async fn dump_sqlite_in_transaction(
    conn: &mut sqlx::AnyConnection,
    dest: &Path,
) -> Result<BTreeMap<String, u64>> {
    let schema_version: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM _sqlx_migrations WHERE success",
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut tables = Vec::new();
    for table in sqlite_load_order(conn).await? {
        let cols: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                .bind(&table)
                .fetch_all(&mut *conn)
                .await?;
        // json_object takes no BLOB: a BLOB goes as PostgreSQL's hex text form of bytea.
        let pairs: Vec<String> = cols
            .iter()
            .map(|c| {
                let q = quote_ident(c);
                format!(
                    "{}, CASE WHEN typeof({q}) = 'blob' THEN '\\x' || lower(hex({q})) ELSE {q} END",
                    quote_literal(c)
                )
            })
            .collect();
        let sql = format!(
            "SELECT json_object('t', {}, 'r', json_object({})) FROM {}",
            quote_literal(&table),
            pairs.join(", "),
            quote_ident(&table)
        );
        tables.push((table, sql));
    }
    let (_, rows) = write_dump(conn, dest, schema_version, &tables).await?;
    Ok(rows)
}

/// The SQLite schema's tables, each after the tables its foreign keys reference.
async fn sqlite_load_order(conn: &mut sqlx::AnyConnection) -> Result<Vec<String>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut edges = Vec::new();
    for t in &names {
        let refs: Vec<String> =
            sqlx::query("SELECT \"table\" AS parent FROM pragma_foreign_key_list($1)")
                .bind(t)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>("parent"))
                .collect::<std::result::Result<_, sqlx::Error>>()?;
        edges.extend(refs.into_iter().map(|p| (t.clone(), p)));
    }
    crate::export::in_load_order(names.into_iter().collect(), &edges)
}
