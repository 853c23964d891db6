//! `cofre emergency`: the emergency panel (admin). Terminating every live session and locking
//! the instance down each take the admin's own TOTP code and a reason; lifting the lockdown takes
//! a second admin.

use crate::commands::Ctx;
use anyhow::Result;
use clap::Subcommand;
use cofre_proto::*;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum EmergencyCmd {
    /// End every live session now (each user is told why; recorded and audited as kills).
    TerminateAll {
        /// Your current TOTP code.
        #[arg(long)]
        totp: String,
        #[arg(long)]
        reason: String,
    },
    /// Lock the instance down: the API, the console and the gateway refuse everyone but admins
    /// until another admin lifts it. Live sessions go on (end them with `terminate-all`).
    Lockdown {
        /// Your current TOTP code.
        #[arg(long)]
        totp: String,
        #[arg(long)]
        reason: String,
    },
    /// Lift the lockdown; the admin who locked the instance down cannot.
    Lift {
        #[arg(long)]
        reason: String,
    },
    /// Whether the instance is locked down, since when, by whom and why.
    Status,
}

fn print_status(s: &LockdownStatus) {
    if s.locked_down {
        outln!(
            "locked down since {} by {}: {}",
            s.since.as_deref().unwrap_or("?"),
            s.by.as_deref().unwrap_or("?"),
            s.reason.as_deref().unwrap_or("")
        );
    } else {
        outln!("not locked down");
    }
}

pub(crate) async fn run(ctx: &Ctx, cmd: EmergencyCmd) -> Result<ExitCode> {
    match cmd {
        EmergencyCmd::TerminateAll { totp, reason } => {
            let r: TerminateAllResponse = ctx
                .client
                .post(
                    "/api/v1/emergency/terminate-all",
                    &EmergencyRequest {
                        totp_code: totp,
                        reason,
                    },
                )
                .await?;
            ctx.print(&r, |r| {
                outln!("{} live sessions terminated", r.terminated.len());
                for id in &r.terminated {
                    outln!("{id}");
                }
            })?;
        }
        EmergencyCmd::Lockdown { totp, reason } => {
            let s: LockdownStatus = ctx
                .client
                .post(
                    "/api/v1/emergency/lockdown",
                    &EmergencyRequest {
                        totp_code: totp,
                        reason,
                    },
                )
                .await?;
            ctx.print(&s, print_status)?;
        }
        EmergencyCmd::Lift { reason } => {
            let s: LockdownStatus = ctx
                .client
                .post(
                    "/api/v1/emergency/lockdown/lift",
                    &LiftLockdownRequest { reason },
                )
                .await?;
            ctx.print(&s, print_status)?;
        }
        EmergencyCmd::Status => {
            let s: LockdownStatus = ctx.client.get("/api/v1/emergency/lockdown").await?;
            ctx.print(&s, print_status)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
