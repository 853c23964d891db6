//! A consistent copy of the whole database, taken while writers go on, and its way back.
//!
//! - SQLite: `VACUUM INTO` a new file. It runs as one read transaction, so the copy is the
//!   database as of one moment, and (WAL mode) writers are not blocked while it runs.
//! - PostgreSQL: every table read inside one `REPEATABLE READ, READ ONLY` transaction (one
//!   snapshot of the database), written as JSON lines (`{"t": TABLE, "r": ROW}`, the row as
//!   `row_to_json` gives it). [`restore_postgres_dump`] loads such a file into an empty database
//!   of the same schema version.
//!
//! Snapshots use these; backups of kind `system` are meant to as well.

use crate::{DbKind, Result, Store, StoreError};
use futures::StreamExt;
use sqlx::{Connection, Executor, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::Path;

/// First line of a PostgreSQL dump.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DumpHeader {
    /// Dump format version (1).
    pub format: u32,
    /// The newest migration applied to the dumped database.
    pub schema_version: i64,
    /// Tables in the order they are loaded (referenced tables first).
    pub tables: Vec<String>,
}

/// What a copy holds, for the snapshot's manifest and its progress report.
#[derive(Debug, Clone)]
pub struct CopyReport {
    pub kind: DbKind,
    pub bytes: u64,
    /// Rows per table (PostgreSQL) or the single entry `users` (SQLite), as a sanity figure.
    pub rows: BTreeMap<String, u64>,
}

const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

impl Store {
    /// Writes a consistent copy of the database to `dest` (which must not exist): a SQLite file
    /// for SQLite, a JSON-lines dump for PostgreSQL. The copy is fsynced.
    pub async fn copy_consistent(&self, dest: &Path) -> Result<CopyReport> {
        match self.kind {
            DbKind::Sqlite => self.copy_sqlite(dest).await,
            DbKind::Postgres => self.dump_postgres(dest).await,
        }
    }

    async fn copy_sqlite(&self, dest: &Path) -> Result<CopyReport> {
        let text = dest
            .to_str()
            .ok_or_else(|| StoreError::Corrupt(format!("{}: not UTF-8", dest.display())))?;
        let mut conn = self.read().await?;
        sqlx::query(&format!("VACUUM INTO '{}'", text.replace('\'', "''")))
            .execute(&mut *conn)
            .await?;
        drop(conn);
        // The fsync of a copy the size of the database: not on an async worker.
        let path = dest.to_owned();
        let bytes = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
            Ok::<_, StoreError>(file.metadata().map_err(io_err(&path))?.len())
        })
        .await
        .map_err(|e| StoreError::Io(format!("{}: {e}", dest.display())))??;
        Ok(CopyReport {
            kind: DbKind::Sqlite,
            bytes,
            rows: BTreeMap::new(),
        })
    }

    async fn dump_postgres(&self, dest: &Path) -> Result<CopyReport> {
        let mut conn = self.read().await?;
        // One snapshot for every table: the dump is the database as of this BEGIN's first read.
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        let result = dump_in_transaction(&mut conn, dest).await;
        if result.is_ok() {
            conn.execute("COMMIT").await?;
        } else {
            // Never hand a connection with an open transaction back to the pool.
            conn.close_on_drop();
        }
        result
    }
}

async fn dump_in_transaction(conn: &mut sqlx::AnyConnection, dest: &Path) -> Result<CopyReport> {
    let schema_version: i64 = sqlx::query_scalar(&format!(
        "SELECT COALESCE(MAX(version), 0) FROM {MIGRATIONS_TABLE} WHERE success"
    ))
    .fetch_one(&mut *conn)
    .await?;
    let tables: Vec<(String, String)> = load_order(conn)
        .await?
        .into_iter()
        .map(|table| {
            let sql = format!(
                "SELECT json_build_object('t', {lit}, 'r', row_to_json(x))::text FROM {ident} x",
                lit = quote_literal(&table),
                ident = quote_ident(&table)
            );
            (table, sql)
        })
        .collect();
    let (bytes, rows) = write_dump(conn, dest, schema_version, &tables).await?;
    Ok(CopyReport {
        kind: DbKind::Postgres,
        bytes,
        rows,
    })
}

/// Writes a dump to `dest`: the header, then for each `(table, query)` the lines the query
/// gives (one `{"t": TABLE, "r": ROW}` text per row), in that order. Returns the file's size
/// and the rows per table.
pub(crate) async fn write_dump(
    conn: &mut sqlx::AnyConnection,
    dest: &Path,
    schema_version: i64,
    tables: &[(String, String)],
) -> Result<(u64, BTreeMap<String, u64>)> {
    let (tx, writer) = spawn_dump_writer(dest);
    let produced = dump_rows(conn, tables, schema_version, &tx).await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| StoreError::Io(format!("{}: {e}", dest.display())))?;
    // A writer that failed closed the queue: its error is the cause, so it goes first.
    let bytes = written?;
    Ok((bytes, produced?))
}

/// Chunks of at most about this many bytes go to the dump's writer thread.
const DUMP_CHUNK: usize = 256 * 1024;

/// A blocking thread that writes the chunks it is sent to `dest` (a new file, 0600), then
/// fsyncs it and gives its size: file work never runs on an async worker, and the bounded
/// queue keeps memory to a few chunks whatever the database's size. Dropping the sender ends it.
fn spawn_dump_writer(
    dest: &Path,
) -> (
    tokio::sync::mpsc::Sender<Vec<u8>>,
    tokio::task::JoinHandle<Result<u64>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let path = dest.to_owned();
    let writer = tokio::task::spawn_blocking(move || {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(io_err(&path))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        while let Some(chunk) = rx.blocking_recv() {
            out.write_all(&chunk).map_err(io_err(&path))?;
        }
        let file = out
            .into_inner()
            .map_err(|e| StoreError::Io(format!("{}: {}", path.display(), e.error())))?;
        file.sync_all().map_err(io_err(&path))?;
        Ok::<_, StoreError>(file.metadata().map_err(io_err(&path))?.len())
    });
    (tx, writer)
}

/// The dump's lines (header, then one per row), in chunks to `tx`; rows per table. A closed
/// queue means the writer failed: its error is the one reported.
async fn dump_rows(
    conn: &mut sqlx::AnyConnection,
    tables: &[(String, String)],
    schema_version: i64,
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
) -> Result<BTreeMap<String, u64>> {
    let closed = || StoreError::Io("the dump's writer stopped".into());
    let header = DumpHeader {
        format: 1,
        schema_version,
        tables: tables.iter().map(|(t, _)| t.clone()).collect(),
    };
    let mut chunk = serde_json::to_vec(&header).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    chunk.push(b'\n');
    let mut rows = BTreeMap::new();
    for (table, sql) in tables {
        let mut stream = sqlx::query_scalar::<_, String>(sql).fetch(&mut *conn);
        let mut n = 0u64;
        while let Some(line) = stream.next().await {
            let line = line?;
            chunk.extend_from_slice(line.as_bytes());
            chunk.push(b'\n');
            n += 1;
            if chunk.len() >= DUMP_CHUNK {
                tx.send(std::mem::take(&mut chunk))
                    .await
                    .map_err(|_| closed())?;
            }
        }
        rows.insert(table.clone(), n);
    }
    if !chunk.is_empty() {
        tx.send(chunk).await.map_err(|_| closed())?;
    }
    Ok(rows)
}

/// The schema's tables, each after the tables its foreign keys reference.
async fn load_order(conn: &mut sqlx::AnyConnection) -> Result<Vec<String>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename",
    )
    .fetch_all(&mut *conn)
    .await?;
    let edges: Vec<(String, String)> = sqlx::query(
        "SELECT c.conrelid::regclass::text AS child, c.confrelid::regclass::text AS parent \
         FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE c.contype = 'f' AND n.nspname = current_schema()",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| Ok((r.try_get("child")?, r.try_get("parent")?)))
    .collect::<Result<_, sqlx::Error>>()?;
    let pending: BTreeSet<String> = names
        .into_iter()
        .filter(|n| n != MIGRATIONS_TABLE)
        .collect();
    in_load_order(pending, &edges)
}

/// `tables` ordered so that each comes after the tables it references (`edges`: child,
/// parent); a table's reference to itself does not count.
pub(crate) fn in_load_order(
    mut pending: BTreeSet<String>,
    edges: &[(String, String)],
) -> Result<Vec<String>> {
    let mut order = Vec::new();
    while !pending.is_empty() {
        let ready: Vec<String> = pending
            .iter()
            .filter(|t| {
                edges
                    .iter()
                    .all(|(child, parent)| child != *t || parent == *t || !pending.contains(parent))
            })
            .cloned()
            .collect();
        if ready.is_empty() {
            return Err(StoreError::Corrupt(
                "foreign keys form a cycle between tables; cannot order the dump".into(),
            ));
        }
        for t in ready {
            pending.remove(&t);
            order.push(t);
        }
    }
    Ok(order)
}

/// The newest PostgreSQL migration this build knows.
pub fn postgres_schema_version() -> i64 {
    sqlx::migrate!("migrations/postgres")
        .migrations
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// Reads a dump's first line.
pub fn read_dump_header(path: &Path) -> Result<DumpHeader> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut first = String::new();
    std::io::BufReader::new(file)
        .read_line(&mut first)
        .map_err(io_err(path))?;
    let header: DumpHeader = serde_json::from_str(&first)
        .map_err(|e| StoreError::Corrupt(format!("database dump header: {e}")))?;
    if header.format != 1 {
        return Err(StoreError::Corrupt(format!(
            "database dump format {} is not supported (this cofre reads 1)",
            header.format
        )));
    }
    Ok(header)
}

/// Loads a PostgreSQL dump into the empty database at `url`: creates the schema, then inserts
/// every row in one transaction (all or nothing) and moves each id sequence past the highest id.
/// Refuses a database that has any table, and a dump of another schema version.
pub async fn restore_postgres_dump(url: &str, dump: &Path) -> Result<BTreeMap<String, u64>> {
    sqlx::any::install_default_drivers();
    let header = read_dump_header(dump)?;
    let ours = postgres_schema_version();
    if header.schema_version != ours {
        return Err(StoreError::Corrupt(format!(
            "the snapshot's database is at schema version {}, this cofre's is {ours}: restore it with the cofre version that took it",
            header.schema_version
        )));
    }
    {
        let mut probe = sqlx::AnyConnection::connect(url).await?;
        let tables: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema()",
        )
        .fetch_one(&mut probe)
        .await?;
        if tables > 0 {
            return Err(StoreError::Conflict {
                what: format!(
                    "the database at --database-url is not empty ({tables} tables); a restore goes into an empty database, and"
                ),
            });
        }
        probe.close().await?;
    }
    let store = Store::open(url).await?;
    if store.kind != DbKind::Postgres {
        return Err(StoreError::UnsupportedUrl);
    }
    let mut conn = store.read().await?;
    let result = load_rows(&mut conn, &header, dump).await;
    drop(conn);
    store.close().await;
    result
}

async fn load_rows(
    conn: &mut sqlx::AnyConnection,
    header: &DumpHeader,
    dump: &Path,
) -> Result<BTreeMap<String, u64>> {
    let mut tx = conn.begin().await?;
    // The migrations seed some rows (the audit head); the dump has them as they were.
    let list: Vec<String> = header.tables.iter().map(|t| quote_ident(t)).collect();
    if !list.is_empty() {
        tx.execute(format!("TRUNCATE {}", list.join(", ")).as_str())
            .await?;
    }
    let file = std::fs::File::open(dump).map_err(io_err(dump))?;
    let mut lines = std::io::BufReader::with_capacity(1 << 20, file).lines();
    lines.next();
    let known: BTreeSet<&str> = header.tables.iter().map(String::as_str).collect();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (n, line) in lines.enumerate() {
        let line = line.map_err(io_err(dump))?;
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| StoreError::Corrupt(format!("database dump line {}: {e}", n + 2)))?;
        let table = value["t"].as_str().unwrap_or_default();
        if !known.contains(table) {
            return Err(StoreError::Corrupt(format!(
                "database dump line {}: unknown table {table:?}",
                n + 2
            )));
        }
        let row = value["r"].to_string();
        let sql = format!(
            "INSERT INTO {t} SELECT * FROM json_populate_record(NULL::{t}, $1::json)",
            t = quote_ident(table)
        );
        sqlx::query(&sql).bind(row).execute(&mut *tx).await?;
        *counts.entry(table.to_owned()).or_default() += 1;
    }
    let serials: Vec<(String, String)> = sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns \
         WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%'",
    )
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| Ok((r.try_get("t")?, r.try_get("c")?)))
    .collect::<Result<_, sqlx::Error>>()?;
    for (table, column) in serials {
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence({tl}, {cl}), COALESCE((SELECT MAX({c}) FROM {t}), 0) + 1, false)::text",
            tl = quote_literal(&quote_ident(&table)),
            cl = quote_literal(&column),
            c = quote_ident(&column),
            t = quote_ident(&table)
        );
        sqlx::query_scalar::<_, String>(&sql)
            .fetch_one(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(counts)
}

pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Io(format!("{}: {e}", path.display()))
}

/// Opens a SQLite database copy read-only and checks it: `PRAGMA integrity_check` says ok and
/// the tables answer. Returns the number of users, as a sign of life.
pub async fn check_sqlite_copy(path: &Path) -> Result<i64> {
    sqlx::any::install_default_drivers();
    let text = path
        .to_str()
        .ok_or_else(|| StoreError::Corrupt(format!("{}: not UTF-8", path.display())))?;
    let mut conn = sqlx::AnyConnection::connect(&format!("sqlite://{text}?mode=ro")).await?;
    let verdict: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await?;
    if verdict != "ok" {
        return Err(StoreError::Corrupt(format!(
            "the database copy fails its integrity check: {verdict}"
        )));
    }
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(users)
}

/// Checks a PostgreSQL dump without a database: the header, and that every line is a row of a
/// table the header lists. Returns the number of rows.
pub fn check_postgres_dump(path: &Path) -> Result<u64> {
    let header = read_dump_header(path)?;
    let known: BTreeSet<&str> = header.tables.iter().map(String::as_str).collect();
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut rows = 0u64;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate().skip(1) {
        let line = line.map_err(io_err(path))?;
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| StoreError::Corrupt(format!("database dump line {}: {e}", n + 1)))?;
        let table = value["t"].as_str().unwrap_or_default();
        if !known.contains(table) || !value["r"].is_object() {
            return Err(StoreError::Corrupt(format!(
                "database dump line {}: not a row of a dumped table",
                n + 1
            )));
        }
        rows += 1;
    }
    Ok(rows)
}
