//! What rolling an update back needs from the database, on a plain connection (no migrations:
//! the database may be at a newer version's schema): a fingerprint of the schema, the rows a
//! restore must carry over, and emptying a PostgreSQL schema for the restore.
//!
//! Carried over, verbatim, so the restored database goes on where the live one was: the audit
//! entries after a given sequence number and the chain head (the chain and its anchors still
//! verify), and the steps of the window being rolled back.

use crate::{Result, StoreError};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
}

fn kind(url: &str) -> Result<Kind> {
    if url.starts_with("sqlite:") {
        Ok(Kind::Sqlite)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Kind::Postgres)
    } else {
        Err(StoreError::UnsupportedUrl)
    }
}

async fn connect(url: &str) -> Result<sqlx::AnyConnection> {
    sqlx::any::install_default_drivers();
    Ok(sqlx::AnyConnection::connect(url).await?)
}

/// The schema as a sorted list: every migration applied (version, checksum, success), every
/// table and index, every column with its type. Two equal lists: no migration ran between them.
pub async fn schema_fingerprint(url: &str) -> Result<Vec<String>> {
    let k = kind(url)?;
    let mut conn = connect(url).await?;
    let queries: &[&str] = match k {
        Kind::Sqlite => &[
            "SELECT 'migration:' || version || ':' || hex(checksum) || ':' || CAST(success AS INTEGER) AS f FROM _sqlx_migrations",
            "SELECT type || ':' || name AS f FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'",
            "SELECT 'column:' || m.name || '.' || p.name || ':' || p.type AS f FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
        ],
        Kind::Postgres => &[
            "SELECT 'migration:' || version || ':' || upper(encode(checksum, 'hex')) || ':' || CAST(success AS INTEGER) AS f FROM _sqlx_migrations",
            "SELECT 'table:' || tablename::text AS f FROM pg_tables WHERE schemaname = current_schema()",
            "SELECT 'index:' || indexname::text AS f FROM pg_indexes WHERE schemaname = current_schema()",
            "SELECT 'column:' || table_name::text || '.' || column_name::text || ':' || data_type::text AS f FROM information_schema.columns WHERE table_schema = current_schema()",
        ],
    };
    let mut out = Vec::new();
    for q in queries {
        for row in sqlx::query(q).fetch_all(&mut conn).await? {
            out.push(row.try_get::<String, _>("f")?);
        }
    }
    conn.close().await?;
    out.sort();
    Ok(out)
}

/// Rows to put back after a restore: `(table, rows as JSON objects)`, and how to put them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Carry {
    pub tables: Vec<CarriedTable>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CarriedTable {
    pub name: String,
    /// Replace every row of the restored table (the chain head) instead of adding the missing ones.
    pub replace: bool,
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
}

impl Carry {
    pub fn count(&self, table: &str) -> usize {
        self.tables
            .iter()
            .filter(|t| t.name == table)
            .map(|t| t.rows.len())
            .sum()
    }
}

async fn columns(conn: &mut sqlx::AnyConnection, k: Kind, table: &str) -> Result<Vec<String>> {
    let sql = match k {
        Kind::Sqlite => "SELECT name AS c FROM pragma_table_info($1) ORDER BY cid",
        Kind::Postgres => {
            "SELECT column_name::text AS c FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
        }
    };
    let rows = sqlx::query(sql).bind(table).fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<String, _>("c")?))
        .collect()
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

async fn rows_as_json(
    conn: &mut sqlx::AnyConnection,
    k: Kind,
    table: &str,
    filter: &str,
    bind: Vec<String>,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let sql = match k {
        Kind::Sqlite => {
            let cols = columns(conn, k, table).await?;
            let pairs: Vec<String> = cols
                .iter()
                .map(|c| format!("'{}', {}", c.replace('\'', "''"), quote(c)))
                .collect();
            format!(
                "SELECT json_object({}) AS j FROM {} WHERE {filter}",
                pairs.join(", "),
                quote(table)
            )
        }
        Kind::Postgres => format!(
            "SELECT row_to_json(t)::text AS j FROM {} t WHERE {filter}",
            quote(table)
        ),
    };
    let mut q = sqlx::query(&sql);
    for b in bind {
        q = q.bind(b);
    }
    let mut out = Vec::new();
    for row in q.fetch_all(&mut *conn).await? {
        let text: String = row.try_get("j")?;
        match serde_json::from_str(&text) {
            Ok(serde_json::Value::Object(map)) => out.push(map),
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "{table}: a row did not read back as a JSON object"
                )))
            }
        }
    }
    Ok(out)
}

/// Reads what a restore must put back: the audit entries after `audit_after`, the chain head,
/// and the steps of `window`.
pub async fn read_carry(url: &str, audit_after: i64, window: &str) -> Result<Carry> {
    let k = kind(url)?;
    let mut conn = connect(url).await?;
    let after = audit_after.to_string();
    // Placeholders differ ($1 works for both through the Any driver's SQLite too).
    let audit = rows_as_json(
        &mut conn,
        k,
        "audit_log",
        "seq > CAST($1 AS BIGINT)",
        vec![after],
    )
    .await?;
    let head = rows_as_json(&mut conn, k, "audit_head", "1 = 1", Vec::new()).await?;
    let steps = rows_as_json(
        &mut conn,
        k,
        "maintenance_events",
        "window_id = $1",
        vec![window.to_owned()],
    )
    .await?;
    conn.close().await?;
    Ok(Carry {
        tables: vec![
            CarriedTable {
                name: "audit_log".into(),
                replace: false,
                rows: audit,
            },
            CarriedTable {
                name: "audit_head".into(),
                replace: true,
                rows: head,
            },
            CarriedTable {
                name: "maintenance_events".into(),
                replace: false,
                rows: steps,
            },
        ],
    })
}

/// Puts carried rows into the (restored) database at `url`, in one transaction: rows it already
/// has are kept as they are; a `replace` table gets exactly the carried rows. Only the columns
/// both sides know are written.
pub async fn apply_carry(url: &str, carry: &Carry) -> Result<()> {
    let k = kind(url)?;
    let mut conn = connect(url).await?;
    let mut tx = conn.begin().await?;
    for t in &carry.tables {
        let cols = columns(&mut tx, k, &t.name).await?;
        if cols.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "the restored database has no table {}",
                t.name
            )));
        }
        if t.replace {
            sqlx::query(&format!("DELETE FROM {}", quote(&t.name)))
                .execute(&mut *tx)
                .await?;
        }
        for row in &t.rows {
            let text = serde_json::Value::Object(row.clone()).to_string();
            let sql = match k {
                Kind::Sqlite => {
                    let present: Vec<&String> =
                        cols.iter().filter(|c| row.contains_key(*c)).collect();
                    let names: Vec<String> = present.iter().map(|c| quote(c)).collect();
                    let values: Vec<String> = present
                        .iter()
                        .map(|c| format!("json_extract($1, '$.\"{}\"')", c.replace('\'', "''")))
                        .collect();
                    format!(
                        "INSERT OR IGNORE INTO {} ({}) SELECT {}",
                        quote(&t.name),
                        names.join(", "),
                        values.join(", ")
                    )
                }
                Kind::Postgres => format!(
                    "INSERT INTO {t} SELECT * FROM json_populate_record(NULL::{t}, $1::json) ON CONFLICT DO NOTHING",
                    t = quote(&t.name)
                ),
            };
            sqlx::query(&sql).bind(text).execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(())
}

/// Drops every table, view, sequence and function of the connection's schema, so that a dump can
/// be restored into it. PostgreSQL only (a SQLite database is replaced as a file).
pub async fn empty_postgres(url: &str) -> Result<()> {
    if kind(url)? != Kind::Postgres {
        return Err(StoreError::UnsupportedUrl);
    }
    let mut conn = connect(url).await?;
    let mut tx = conn.begin().await?;
    let objects: Vec<(String, String)> = sqlx::query(
        "SELECT 'TABLE' AS k, tablename::text AS n FROM pg_tables WHERE schemaname = current_schema() \
         UNION ALL SELECT 'VIEW', viewname::text FROM pg_views WHERE schemaname = current_schema() \
         UNION ALL SELECT 'SEQUENCE', sequencename::text FROM pg_sequences WHERE schemaname = current_schema()",
    )
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| Ok((r.try_get("k")?, r.try_get("n")?)))
    .collect::<Result<_, sqlx::Error>>()?;
    for (k, n) in objects {
        sqlx::query(&format!("DROP {k} IF EXISTS {} CASCADE", quote(&n)))
            .execute(&mut *tx)
            .await?;
    }
    let functions: Vec<String> = sqlx::query(
        "SELECT p.oid::regprocedure::text AS f FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = current_schema() AND p.prokind = 'f'",
    )
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| r.try_get("f"))
    .collect::<Result<_, sqlx::Error>>()?;
    for f in functions {
        sqlx::query(&format!("DROP FUNCTION IF EXISTS {f} CASCADE"))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(())
}

/// Moves everything in a SQLite database's write-ahead log into the file, so the file alone is
/// the whole database.
pub async fn checkpoint_sqlite(url: &str) -> Result<()> {
    if kind(url)? != Kind::Sqlite {
        return Err(StoreError::UnsupportedUrl);
    }
    let mut conn = connect(url).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}
