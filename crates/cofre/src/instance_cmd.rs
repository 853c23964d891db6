//! `cofre instance`: the instance's facts, its type, and disabling or enabling the application;
//! `cofre release`: the release files updates are made of (Orbit).
use crate::commands::Ctx;
use anyhow::Result;
use clap::Subcommand;
use cofre_proto::*;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum InstanceCmd {
    /// Version, mode, type, whether the application is enabled, dual control, admins, pending
    /// changes, and warnings.
    Show,
    /// Set the instance's type: production, contingency (a standby), testing or demo.
    /// Contingency and demo instances show a banner on every CLI answer and SSH login; they
    /// become production only by `cofre instance promote --to production`.
    SetType {
        #[arg(value_parser = ["production", "contingency", "testing", "demo"])]
        r#type: String,
    },
    /// Disable the application: every API call but Orbit's (snapshots, backups, maintenance,
    /// instance) is refused with REASON, and so is every new gateway session. Live sessions go
    /// on (`cofre session kill` ends them).
    Disable {
        /// Why; everyone who is refused sees it.
        #[arg(long)]
        reason: String,
    },
    /// Enable the application again.
    Enable,
    /// Make a demo, contingency or testing instance production. Prints the drift report (sample
    /// users, targets and policies still present, the initial admin password never changed,
    /// relaxed settings); without --confirm nothing changes and the exit status is 1.
    Promote {
        #[arg(long, value_parser = ["production"])]
        to: String,
        /// Promote in spite of the report (the promotion and the report are audited).
        #[arg(long)]
        confirm: bool,
    },
}

fn print_info(i: &InstanceInfo) {
    outln!("version: {}", i.version);
    outln!("mode: {}", i.mode);
    outln!("type: {}", i.instance_type);
    if i.application.enabled {
        outln!("application: enabled");
    } else {
        outln!(
            "application: DISABLED since {} by {}: {}",
            i.application.disabled_at.as_deref().unwrap_or("?"),
            i.application.disabled_by.as_deref().unwrap_or("?"),
            i.application.reason.as_deref().unwrap_or("")
        );
    }
    outln!("dual control: {}", i.dual_control);
    outln!("cooling off: {} days", i.cooling_off_days);
    outln!("admins: {}", i.admins.join(","));
    outln!("pending changes: {}", i.pending_changes);
    match &i.next_window {
        Some(w) => outln!(
            "next window: {} {} (Cofre {}) {} to {}",
            w.id,
            w.state,
            w.version,
            w.starts_at,
            w.ends_at
        ),
        None => outln!("next window: none"),
    }
    for w in &i.warnings {
        outln!("WARNING: {w}");
    }
}

fn print_report(r: &PromoteReport) {
    if r.drift.is_empty() {
        outln!("drift report: nothing left of the {} setup", r.from);
    } else {
        outln!("drift report ({} findings):", r.drift.len());
        for f in &r.drift {
            outln!("  {}: {}", f.kind, f.detail);
        }
    }
    if r.promoted {
        outln!("promoted: {} -> {}", r.from, r.to);
    } else {
        outln!(
            "not promoted: read the report, then run again with --confirm to make this {} instance {}",
            r.from,
            r.to
        );
    }
}

pub(crate) async fn instance(ctx: &Ctx, cmd: InstanceCmd) -> Result<ExitCode> {
    let info: InstanceInfo = match cmd {
        InstanceCmd::Promote { to, confirm } => {
            let r: PromoteReport = ctx
                .client
                .post("/api/v1/instance/promote", &PromoteRequest { to, confirm })
                .await?;
            ctx.print(&r, print_report)?;
            return Ok(if r.promoted {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        InstanceCmd::Show => ctx.client.get("/api/v1/instance").await?,
        InstanceCmd::SetType { r#type } => {
            ctx.client
                .call(
                    reqwest::Method::PUT,
                    "/api/v1/instance/type",
                    Some(&SetInstanceTypeRequest {
                        instance_type: r#type,
                    }),
                )
                .await?
        }
        InstanceCmd::Disable { reason } => {
            ctx.client
                .post(
                    "/api/v1/instance/disable",
                    &DisableApplicationRequest { reason },
                )
                .await?
        }
        InstanceCmd::Enable => {
            ctx.client
                .post("/api/v1/instance/enable", &serde_json::json!({}))
                .await?
        }
    };
    ctx.print(&info, print_info)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub(crate) enum ReleaseCmd {
    /// Upload a release file (a tar of manifest.json, its minisign signature
    /// manifest.json.minisig, and the `cofre` binary). The server keeps it only if the signature
    /// is good under `[maintenance] release_public_keys`, the binary is the one the manifest
    /// names, and the release is newer than the running version and upgrades from it.
    Upload { file: std::path::PathBuf },
    /// The releases the server verified and keeps.
    List,
}

fn print_release(r: &ReleaseInfo) {
    outln!(
        "{}\tversion {}\tupgrades from {}\t{} bytes\tby {} at {}\t{}",
        r.id,
        r.version,
        r.upgrades_from,
        r.bytes,
        r.uploaded_by,
        r.uploaded_at,
        r.notes
    );
}

pub(crate) async fn release(ctx: &Ctx, cmd: ReleaseCmd) -> Result<ExitCode> {
    match cmd {
        ReleaseCmd::Upload { file } => {
            let bytes = tokio::fs::read(&file)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let r: ReleaseInfo = ctx.client.post_octets("/api/v1/releases", bytes).await?;
            ctx.print(&r, |r| {
                outln!("release {} verified and kept", r.id);
                outln!("  version:       {}", r.version);
                outln!("  upgrades from: {}", r.upgrades_from);
                outln!("  binary sha256: {}", r.binary_sha256);
                outln!("  notes:         {}", r.notes);
            })?;
        }
        ReleaseCmd::List => {
            let rs: Vec<ReleaseInfo> = ctx.all("/api/v1/releases").await?;
            ctx.print(&rs, |rs| {
                if rs.is_empty() {
                    outln!("no releases (`cofre release upload FILE` adds one)");
                }
                rs.iter().for_each(print_release)
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub(crate) enum NodeCmd {
    /// Every node that ran on this database: alive or dead (no heartbeat for three
    /// `[cluster] heartbeat_seconds`), its addresses, version, live sessions and last heartbeat.
    List,
}

pub(crate) async fn node(ctx: &Ctx, cmd: NodeCmd) -> Result<ExitCode> {
    match cmd {
        NodeCmd::List => {
            let nodes: Vec<NodeInfo> = ctx.client.get("/api/v1/nodes").await?;
            ctx.print_list(&nodes, "nodes", |l| {
                for n in l {
                    outln!(
                        "{}{}\t{}\tapi {}\tssh {}\tversion {}\tsessions {}\tlast heartbeat {}",
                        n.name,
                        if n.this_node { " (this node)" } else { "" },
                        if n.alive { "alive" } else { "DEAD" },
                        n.api_address,
                        n.ssh_address,
                        n.version,
                        n.live_sessions,
                        n.last_heartbeat
                    );
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
