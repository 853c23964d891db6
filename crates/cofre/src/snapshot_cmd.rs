//! `cofre snapshot`: create (with progress), list, verify and prune through the API, and the
//! offline `restore`, which needs no server.

use crate::client::path_segment;
use crate::commands::Ctx;
use crate::Output;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use cofre_app::snapshot::restore::{self, RestoreOptions, Unlock};
use cofre_proto::*;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub(crate) enum SnapshotCmd {
    /// Take a snapshot of the whole instance now, while it keeps serving: a consistent copy of the
    /// database, the recordings, config, sealed keyring, TLS certificate and SSH host key, in one
    /// compressed, encrypted file in DATA_DIR/snapshots. Shows progress; prints id, size,
    /// duration and SHA-256.
    Create {
        /// `manual` or `pre-maintenance`.
        #[arg(long, default_value = "manual")]
        reason: String,
        /// Leave DATA_DIR/recordings out.
        #[arg(long)]
        no_recordings: bool,
    },
    /// The snapshots, newest first: id, time, reason, size, last verification.
    List,
    /// Read a snapshot back: every member's checksum, every frame decrypts, the database opens.
    /// Exits 1 and names the damaged member if it fails.
    Verify { id: String },
    /// Remove what retention ([snapshots] keep_daily, keep_weekly) does not keep; the newest
    /// verified snapshot always stays.
    Prune {
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Offline: restore a snapshot into a new, empty data dir (no server needed). Every member
    /// is checked before anything usable is written. A key-file instance's snapshot needs that
    /// instance's master.key (--key-file): the snapshot alone opens nothing. A Shamir-sealed
    /// instance's needs k unseal shares, and the restored instance starts sealed again.
    Restore(RestoreArgs),
}

impl SnapshotCmd {
    pub(crate) fn is_offline(&self) -> bool {
        matches!(self, SnapshotCmd::Restore(_))
    }
}

#[derive(Args)]
pub(crate) struct RestoreArgs {
    /// A snapshot id (looked up in --from) or the path of a .cofresnap file.
    snapshot: String,
    /// The new data dir: must be empty or not exist.
    #[arg(long)]
    data_dir: PathBuf,
    /// Where the snapshots are (default: cofre-data/snapshots, the default data dir's).
    #[arg(long, default_value = "cofre-data/snapshots")]
    from: PathBuf,
    /// The master.key of the instance the snapshot was taken from (key-file instances). It is
    /// copied into the new data dir.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// A file with unseal shares, one per line (Shamir instances).
    #[arg(long, conflicts_with = "key_file")]
    shares_file: Option<PathBuf>,
    /// Read unseal shares from stdin, one per line, until end of input (Shamir instances).
    #[arg(long, conflicts_with_all = ["key_file", "shares_file"])]
    shares_stdin: bool,
    /// PostgreSQL snapshots: the URL of an empty database to restore into (postgres://...).
    /// The restored server is started with the same --database-url.
    #[arg(long)]
    database_url: Option<String>,
}

pub(crate) async fn online(ctx: &Ctx, cmd: SnapshotCmd) -> Result<ExitCode> {
    match cmd {
        SnapshotCmd::Create {
            reason,
            no_recordings,
        } => create(ctx, reason, !no_recordings).await,
        SnapshotCmd::List => {
            let list: SnapshotList = ctx.client.get("/api/v1/snapshots").await?;
            ctx.print(&list, |l| {
                let sc = &l.schedule;
                let when = if sc.time == "off" {
                    "off".to_owned()
                } else {
                    format!(
                        "daily at {} ({}), next {}",
                        sc.time,
                        sc.time_zone,
                        sc.next_at.as_deref().unwrap_or("-")
                    )
                };
                outln!(
                    "schedule: {when}; keeps {} daily, {} weekly",
                    sc.keep_daily,
                    sc.keep_weekly
                );
                if l.snapshots.is_empty() {
                    outln!("no snapshots in {}", l.directory);
                    return;
                }
                outln!(
                    "{:<24} {:<20} {:<15} {:>12} VERIFIED",
                    "ID",
                    "TIME",
                    "REASON",
                    "SIZE"
                );
                for s in &l.snapshots {
                    let verified = match s.verified {
                        Some(true) => format!("yes ({})", s.verified_at.as_deref().unwrap_or("")),
                        Some(false) => "FAILED".to_owned(),
                        None => "not yet".to_owned(),
                    };
                    outln!(
                        "{:<24} {:<20} {:<15} {:>12} {verified}",
                        s.id,
                        s.created_at,
                        s.reason,
                        human_bytes(s.size)
                    );
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCmd::Verify { id } => {
            let resp: SnapshotVerifyResponse = ctx
                .client
                .post(
                    &format!("/api/v1/snapshots/{}/verify", path_segment(&id)),
                    &(),
                )
                .await?;
            ctx.print(&resp, |r| {
                if r.ok {
                    outln!(
                        "snapshot {} verified: {} members, every checksum matches, the database opens",
                        r.id,
                        r.members.len()
                    );
                }
            })?;
            if !resp.ok {
                bail!(
                    "snapshot {} is damaged; damaged member: {} ({})",
                    resp.id,
                    resp.damaged_member.as_deref().unwrap_or("unknown"),
                    resp.error.as_deref().unwrap_or("no reason given")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCmd::Prune { dry_run } => {
            let resp: PruneSnapshotsResponse = ctx
                .client
                .post(
                    "/api/v1/snapshots/prune",
                    &PruneSnapshotsRequest { dry_run },
                )
                .await?;
            ctx.print(&resp, |r| {
                let verb = if r.dry_run { "would remove" } else { "removed" };
                if r.removed.is_empty() {
                    outln!("nothing to remove; {} kept", r.kept.len());
                }
                for s in &r.removed {
                    outln!(
                        "{verb} {} ({}, {}, {})",
                        s.id,
                        s.created_at,
                        s.reason,
                        human_bytes(s.size)
                    );
                }
                if !r.removed.is_empty() {
                    outln!("kept: {}", r.kept.join(", "));
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCmd::Restore(_) => Err(anyhow!("internal: restore is an offline command")),
    }
}

async fn create(ctx: &Ctx, reason: String, include_recordings: bool) -> Result<ExitCode> {
    let started: SnapshotJob = ctx
        .client
        .post(
            "/api/v1/snapshots",
            &CreateSnapshotRequest {
                reason: Some(reason),
                include_recordings: Some(include_recordings),
            },
        )
        .await?;
    let show = ctx.output == Output::Text && std::io::stderr().is_terminal();
    let path = format!("/api/v1/snapshots/jobs/{}", path_segment(&started.id));
    let job = loop {
        let job: SnapshotJob = ctx.client.get(&path).await?;
        if show {
            eprint!(
                "\r{:<10} {} / {}   ",
                job.phase,
                human_bytes(job.bytes_done),
                human_bytes(job.bytes_total)
            );
            let _ = std::io::stderr().flush();
        }
        if job.finished_at.is_some() {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if show {
        eprintln!();
    }
    match (&job.snapshot, &job.error) {
        (Some(s), _) => {
            ctx.print(s, |s| {
                outln!("snapshot {}", s.id);
                outln!("size: {} ({} bytes)", human_bytes(s.size), s.size);
                outln!("duration: {:.1} s", s.duration_ms as f64 / 1000.0);
                outln!("sha256: {}", s.sha256);
            })?;
            Ok(ExitCode::SUCCESS)
        }
        (None, error) => bail!(
            "the snapshot failed: {}",
            error.as_deref().unwrap_or("no reason given")
        ),
    }
}

pub(crate) async fn offline(cmd: SnapshotCmd, output: Output) -> Result<ExitCode> {
    let SnapshotCmd::Restore(args) = cmd else {
        bail!("internal: not an offline command");
    };
    let path = if args.snapshot.ends_with(".cofresnap") || args.snapshot.contains('/') {
        PathBuf::from(&args.snapshot)
    } else {
        if !cofre_app::snapshot::valid_id(&args.snapshot) {
            bail!(
                "snapshot: {:?} is neither a snapshot id nor a .cofresnap file",
                args.snapshot
            );
        }
        cofre_app::snapshot::snapshot_path(&args.from, &args.snapshot)
    };
    if !path.is_file() {
        bail!(
            "snapshot {}: no such snapshot file ({}); `cofre snapshot list` shows the ids, --from says where they are",
            args.snapshot,
            path.display()
        );
    }
    let unlock = if let Some(k) = args.key_file {
        Unlock::KeyFile(k)
    } else if let Some(f) = args.shares_file {
        let text = Zeroizing::new(
            std::fs::read_to_string(&f)
                .with_context(|| format!("--shares-file {}", f.display()))?,
        );
        Unlock::Shares(share_lines(text.lines()))
    } else if args.shares_stdin {
        let mut lines = Vec::new();
        for line in std::io::stdin().lock().lines() {
            lines.push(Zeroizing::new(line.context("reading stdin")?));
        }
        Unlock::Shares(share_lines(lines.iter().map(|l| l.as_str())))
    } else {
        bail!("give what opens the snapshot: --key-file (the instance's master.key) or, for a Shamir-sealed instance, --shares-file / --shares-stdin");
    };
    let show = output == Output::Text && std::io::stderr().is_terminal();
    let mut last = std::time::Instant::now();
    let report = restore::restore(
        RestoreOptions {
            snapshot: path,
            data_dir: args.data_dir.clone(),
            unlock,
            database_url: args.database_url.clone(),
        },
        &mut |done, total| {
            if show && last.elapsed() > Duration::from_millis(200) {
                last = std::time::Instant::now();
                eprint!(
                    "\rrestoring {} / {}   ",
                    human_bytes(done),
                    human_bytes(total)
                );
            }
        },
    )
    .await?;
    if show {
        eprintln!();
    }
    match output {
        Output::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "id": report.id,
                "created_at": report.created_at,
                "members": report.members,
                "bytes": report.bytes,
                "database": report.database,
                "sealed": report.sealed,
                "data_dir": args.data_dir,
            }))?
        ),
        Output::Text => {
            outln!(
                "restored snapshot {} ({}) into {}: {} members, {}, every checksum verified",
                report.id,
                report.created_at,
                args.data_dir.display(),
                report.members,
                human_bytes(report.bytes)
            );
            let db = match &args.database_url {
                Some(_) => " --database-url URL",
                None => "",
            };
            outln!(
                "start it with: cofre server --data-dir {}{db}",
                args.data_dir.display()
            );
            if report.sealed {
                outln!("it starts sealed: unseal it with k shares (`cofre operator unseal`)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn share_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<Zeroizing<String>> {
    lines
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| Zeroizing::new(l.to_owned()))
        .collect()
}

pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
