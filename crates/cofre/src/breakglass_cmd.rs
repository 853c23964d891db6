//! `cofre breakglass ...`: the key ceremony, share delivery, status and export talk to the server;
//! `open` and `combine` are offline: they read a file and shares, and never touch the network, a
//! data dir or the client config (they are `cofre_opener`, also built alone as `cofre-opener`).

use crate::client::ApiFailure;
use crate::commands::Ctx;
use crate::Output;
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use cofre_breakglass::Header;
use cofre_proto::*;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum BreakglassCmd {
    /// Start a key ceremony (admin; audited): a new key epoch, an age X25519 identity whose secret
    /// is split among the custodians, any THRESHOLD of whom can open its files. The server keeps
    /// only the public key and, until each custodian fetches it, that custodian's sealed share.
    Ceremony {
        /// Distinct existing users, comma-separated (2 to 16), e.g. alice,bob,carol.
        #[arg(long, value_delimiter = ',', required = true)]
        custodians: Vec<String>,
        /// How many shares open a file.
        #[arg(long, default_value_t = 2)]
        threshold: u8,
    },
    /// As a custodian, logged in as yourself: receive your share of the newest ceremony. Works
    /// exactly once; the server deletes its copy. Keep the line offline (paper, a safe).
    Share {
        /// Write the share to this new file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Key epochs, custodians and deliveries, and the last file written (admin).
    Status,
    /// Write the break-glass file of the whole vault now (admin; audited). It is also written
    /// automatically, after credential changes and daily, to DATA_DIR/breakglass/.
    Export {
        /// The file to write.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: PathBuf,
    },
    /// Open a break-glass file offline (no server, network or data dir): asks for the shares of
    /// the file's key epoch, then reads commands: `search TEXT`, `show TARGET ACCOUNT [--version
    /// N]`, `list`, `quit`. Everything shown is logged to FILE.log. The same as `cofre-opener open`.
    Open(cofre_opener::OpenArgs),
    /// Combine shares into the key epoch's age identity and print it, for the standard `age` tool:
    /// `age -d -i identity.txt FILE`. Offline. The same as `cofre-opener combine`.
    Combine(cofre_opener::CombineArgs),
}

impl BreakglassCmd {
    /// `open` and `combine` run without a server.
    pub(crate) fn is_offline(&self) -> bool {
        matches!(self, BreakglassCmd::Open(_) | BreakglassCmd::Combine(_))
    }
}

pub(crate) fn offline(cmd: BreakglassCmd, output: Output) -> Result<ExitCode> {
    match cmd {
        BreakglassCmd::Open(args) => cofre_opener::open(args, output == Output::Json),
        BreakglassCmd::Combine(args) => cofre_opener::combine(args),
        _ => Err(anyhow!("internal: not an offline command")),
    }
}

/// Creates a new file (never overwrites), mode 0600, and syncs it.
fn write_new_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

fn print_epoch(e: &EpochInfo) {
    let state = match (&e.closed_at, &e.abandoned_at) {
        (Some(at), _) => format!("closed {at}"),
        (None, Some(at)) => format!("abandoned {at}"),
        (None, None) => "waiting for custodians".to_owned(),
    };
    outln!(
        "epoch {}\t{} of {}\t{}\tcreated {} by {}\t{}",
        e.epoch,
        e.threshold,
        e.shares,
        state,
        e.created_at,
        e.created_by,
        e.recipient
    );
    for c in &e.custodians {
        outln!(
            "  share {}\t{}\t{}",
            c.share_index,
            c.username,
            c.delivered_at.as_deref().map_or_else(
                || "not fetched yet".to_owned(),
                |at| format!("fetched {at}")
            )
        );
    }
}

pub(crate) async fn online(ctx: &Ctx, cmd: BreakglassCmd) -> Result<ExitCode> {
    match cmd {
        BreakglassCmd::Ceremony {
            custodians,
            threshold,
        } => {
            let r: CeremonyResponse = ctx
                .client
                .post(
                    "/api/v1/breakglass/ceremony",
                    &CeremonyRequest {
                        custodians,
                        threshold,
                    },
                )
                .await?;
            ctx.print(&r, |r| {
                outln!(
                    "key ceremony started: epoch {} of instance {}; {} of {} shares open its files",
                    r.epoch.epoch, r.instance, r.epoch.threshold, r.epoch.shares
                );
                outln!("each custodian now runs `cofre breakglass share` once, logged in as themselves:");
                for c in &r.epoch.custodians {
                    outln!("  share {}\t{}", c.share_index, c.username);
                }
                for a in &r.abandoned {
                    outln!("epoch {a} had not closed and was abandoned");
                }
                outln!(
                    "files are written under epoch {} once every custodian has fetched their share",
                    r.epoch.epoch
                );
            })?;
        }
        BreakglassCmd::Share { out } => {
            let r: ShareResponse = ctx.client.post("/api/v1/breakglass/share", &()).await?;
            if let Some(path) = &out {
                if let Err(e) = write_new_private(path, &format!("{}\n", r.share.expose())) {
                    // The server no longer has the share: never lose it to a file error.
                    outln!("{}", r.share.expose());
                    bail!(
                        "--out {}: {e}; your share was printed above instead (the server no longer has it)",
                        path.display()
                    );
                }
            }
            eprintln!(
                "your break-glass share: instance {}, key epoch {}, share {} of {} ({} open a file).",
                r.instance, r.epoch, r.share_index, r.shares, r.threshold
            );
            eprintln!("The server no longer has it: keep it offline (on paper, in a safe), never next to the files.");
            if r.ceremony_closed {
                eprintln!("You were the last custodian: the ceremony is closed, files are now written under epoch {}.", r.epoch);
            }
            match (&out, ctx.output) {
                (Some(p), _) => eprintln!("written to {}", p.display()),
                (None, Output::Json) => outln!("{}", serde_json::to_string_pretty(&r)?),
                (None, Output::Text) => outln!("{}", r.share.expose()),
            }
        }
        BreakglassCmd::Status => {
            let s: BreakGlassStatus = ctx.client.get("/api/v1/breakglass").await?;
            ctx.print(&s, |s| {
                outln!("instance {}", s.instance);
                match s.active_epoch {
                    Some(e) => outln!("files are written under epoch {e}"),
                    None => outln!("no complete key epoch yet: no file is written (run `cofre breakglass ceremony`)"),
                }
                outln!("directories: {}", s.directories.join(", "));
                if let Some(f) = &s.last_file {
                    outln!(
                        "last file: {} (epoch {}, {}, {} credentials, {} versions, after a {})",
                        f.path, f.epoch, f.written_at, f.credentials, f.versions, f.reason
                    );
                }
                if let Some(e) = &s.last_error {
                    outln!("LAST WRITE FAILED: {e}");
                }
                s.epochs.iter().for_each(print_epoch);
            })?;
        }
        BreakglassCmd::Export { out } => {
            let (bytes, _) = ctx
                .client
                .post_bytes("/api/v1/breakglass/export")
                .await
                .map_err(|e: ApiFailure| anyhow!("{e}"))?;
            let header = Header::parse(&bytes)
                .map_err(|e| anyhow!("the server sent something unexpected: {e}"))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| format!("-o {}", out.display()))?;
            f.write_all(&bytes)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("-o {}", out.display()))?;
            match ctx.output {
                Output::Json => outln!("{}", serde_json::to_string_pretty(&header)?),
                Output::Text => outln!("wrote {}: {}", out.display(), header.describe()),
            }
        }
        BreakglassCmd::Open(_) | BreakglassCmd::Combine(_) => {
            return Err(anyhow!("internal: an offline command"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
