//! `cofre copy-database`: grows an embedded instance into PostgreSQL (offline: no server, no
//! login). Every table is copied into an empty PostgreSQL database in one transaction and
//! checked there: the same rows per table, the audit chain whole up to its head.

use crate::Output;
use anyhow::{Context, Result};
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub(crate) struct CopyDatabaseArgs {
    /// The database to copy, e.g. sqlite://cofre-data/cofre.db (the server's --database-url,
    /// or its default). Stop the server first: what it writes after the copy starts is not in
    /// the copy.
    #[arg(long)]
    from: String,
    /// An empty PostgreSQL database, e.g. postgres://cofre@db/cofre; one with any table is
    /// refused. Then start the server with --database-url set to it and the same data dir (its
    /// keyring opens the copied secrets).
    #[arg(long)]
    to: String,
}

pub(crate) async fn run(args: CopyDatabaseArgs, output: Output) -> Result<ExitCode> {
    let work_dir = std::env::current_dir().context("the working directory")?;
    if let Some(rest) = args.from.strip_prefix("sqlite://") {
        // Never create an empty database where a path was mistyped.
        let path = rest.split('?').next().unwrap_or(rest);
        if !std::path::Path::new(path).is_file() {
            anyhow::bail!("--from: {path}: no such database file");
        }
    }
    let copied = cofre_store::copy::copy_database(&args.from, &args.to, &work_dir)
        .await
        .map_err(|e| match e {
            cofre_store::StoreError::UnsupportedUrl => {
                anyhow::anyhow!("--to: must be a postgres:// URL (the copy grows into PostgreSQL); --from: sqlite:// or postgres://")
            }
            other => anyhow::anyhow!("{other}"),
        })?;
    match output {
        Output::Json => outln!(
            "{}",
            serde_json::json!({"rows": copied.rows, "audit_entries": copied.audit_entries})
        ),
        Output::Text => {
            let total: u64 = copied.rows.values().sum();
            outln!(
                "copied {total} rows in {} tables; the audit chain verifies on the copy ({} entries)",
                copied.rows.len(),
                copied.audit_entries
            );
            outln!("start the server on it: cofre server --database-url <the --to URL> (same data dir)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
