//! `cofre change`: dual control's change requests.

use crate::client::path_segment;
use crate::commands::Ctx;
use anyhow::Result;
use clap::Subcommand;
use cofre_proto::*;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum ChangeCmd {
    /// Change requests, newest first; --pending: only those waiting for a second admin.
    List {
        #[arg(long)]
        pending: bool,
    },
    /// One change request: what it does, who proposed it, who decided.
    Show { id: String },
    /// Approve another admin's change: it takes effect now (a one-time password, if any, is
    /// printed once, here).
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a change; say why.
    Deny {
        id: String,
        #[arg(long)]
        comment: String,
    },
}

fn print_row(c: &ChangeInfo) {
    outln!(
        "{}\t{}\t{}\tby {}\t{}",
        c.id,
        c.state,
        c.kind,
        c.proposer,
        c.diff
    );
}

fn print_full(c: &ChangeInfo) {
    outln!("change {}", c.id);
    outln!("  kind:     {}", c.kind);
    outln!("  state:    {}", c.state);
    outln!("  proposer: {}", c.proposer);
    outln!("  proposed: {}", c.created_at);
    outln!("  decide by: {}", c.decide_by);
    outln!("  diff:     {}", c.diff);
    if let Some(d) = &c.decided_by {
        outln!(
            "  decided:  by {d} at {}",
            c.decided_at.as_deref().unwrap_or("")
        );
    }
    if !c.comment.is_empty() {
        outln!("  comment:  {}", c.comment);
    }
}

pub(crate) async fn change(ctx: &Ctx, cmd: ChangeCmd) -> Result<ExitCode> {
    match cmd {
        ChangeCmd::List { pending } => {
            let url = if pending {
                "/api/v1/changes?pending=true"
            } else {
                "/api/v1/changes"
            };
            let cs: Vec<ChangeInfo> = ctx.all(url).await?;
            ctx.print(&cs, |cs| cs.iter().for_each(print_row))?;
        }
        ChangeCmd::Show { id } => {
            let c: ChangeInfo = ctx
                .client
                .get(&format!("/api/v1/changes/{}", path_segment(&id)))
                .await?;
            ctx.print(&c, print_full)?;
        }
        ChangeCmd::Approve { id, comment } => {
            let d: ChangeDecision = ctx
                .client
                .post(
                    &format!("/api/v1/changes/{}/approve", path_segment(&id)),
                    &DecideChangeRequest { comment },
                )
                .await?;
            ctx.print(&d, |d| {
                outln!("approved change {} ({})", d.change.id, d.change.kind);
                outln!("  {}", d.change.diff);
                if let Some(p) = &d.one_time_password {
                    outln!("one-time password: {}", p.expose());
                }
                if let Some(to) = &d.sent_to {
                    outln!("the one-time password was sent to the user by email ({to}); nobody else sees it");
                }
            })?;
        }
        ChangeCmd::Deny { id, comment } => {
            let d: ChangeDecision = ctx
                .client
                .post(
                    &format!("/api/v1/changes/{}/deny", path_segment(&id)),
                    &DecideChangeRequest {
                        comment: Some(comment),
                    },
                )
                .await?;
            ctx.print(&d, |d| {
                outln!("denied change {} ({})", d.change.id, d.change.kind)
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
