//! `cofre diagnostics`: what support (under a `diagnostics` grant) and admins read without a
//! shell on the machine — the configuration with its secrets taken out, and the log's tail.
use crate::commands::Ctx;
use anyhow::Result;
use clap::Subcommand;
use cofre_proto::*;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum DiagnosticsCmd {
    /// What the server runs with: version, mode, addresses, the database (without its
    /// password), and the config file's settings with every secret replaced by [redacted].
    Config,
    /// The last lines of the server's log, oldest first.
    Logs {
        /// How many lines, 1 to 2000.
        #[arg(long, default_value_t = 200)]
        lines: u32,
    },
}

fn print_config(c: &DiagnosticsConfig) {
    outln!("version:       {}", c.version);
    outln!("mode:          {}", c.mode);
    outln!("instance type: {}", c.instance_type);
    outln!("data dir:      {}", c.data_dir);
    outln!("api:           {}", c.listen);
    outln!("ssh gateway:   {}", c.ssh_listen);
    outln!("database:      {}", c.database);
    outln!("time zone:     {}", c.time_zone);
    match &c.config_file {
        Some(file) => {
            outln!("config file:   {file}");
            let settings =
                serde_json::to_string_pretty(&c.settings).unwrap_or_else(|_| "{}".into());
            outln!("{settings}");
        }
        None => outln!("config file:   none (every setting at its default)"),
    }
}

pub(crate) async fn run(ctx: &Ctx, cmd: DiagnosticsCmd) -> Result<ExitCode> {
    match cmd {
        DiagnosticsCmd::Config => {
            let c: DiagnosticsConfig = ctx.client.get("/api/v1/diagnostics/config").await?;
            ctx.print(&c, print_config)?;
        }
        DiagnosticsCmd::Logs { lines } => {
            let l: DiagnosticsLogs = ctx
                .client
                .get(&format!("/api/v1/diagnostics/logs?lines={lines}"))
                .await?;
            ctx.print(&l, |l| {
                for line in &l.lines {
                    outln!("{line}");
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
