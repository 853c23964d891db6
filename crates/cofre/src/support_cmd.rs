//! `cofre support`: vendor support grants — request (support users), list, show, approve and
//! deny (customer admins), revoke, and the activity under a grant.
use crate::client::path_segment;
use crate::commands::Ctx;
use anyhow::Result;
use clap::Subcommand;
use cofre_proto::*;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum SupportCmd {
    /// Ask the customer for access (role support). Nothing is allowed until a customer admin
    /// approves; the grant then runs for its duration and ends by itself.
    Request {
        /// diagnostics, orbit, audit or host (comma-separated for more than one).
        #[arg(long)]
        scope: String,
        #[arg(long)]
        reason: String,
        /// The vendor's ticket reference.
        #[arg(long)]
        ticket: String,
        /// How long the grant runs once approved, e.g. 2h, 90m (default 8h, at most
        /// `[support] max_hours`).
        #[arg(long)]
        duration: Option<String>,
    },
    /// A support user's own requests and grants; a customer admin's every one.
    List {
        /// Only the requests waiting for a decision.
        #[arg(long)]
        pending: bool,
    },
    /// One grant with its decisions.
    Show { id: String },
    /// Approve a request (customer admins; never the vendor, never the requester).
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a request, saying why.
    Deny {
        id: String,
        #[arg(long)]
        comment: String,
    },
    /// End a request or a grant now (a customer admin, or its holder).
    Revoke { id: String },
    /// Every audit entry made under the grant, one JSON object a line.
    Activity { id: String },
}

fn print_grant(g: &SupportGrantInfo) {
    outln!("support {}: {}", g.id, g.state);
    outln!("  requester: {} at {}", g.requester, g.created_at);
    outln!("  scopes:    {}", g.scopes.join(","));
    outln!("  reason:    {}", g.reason);
    outln!("  ticket:    {}", g.ticket);
    match (&g.starts_at, &g.ends_at) {
        (Some(a), Some(b)) => outln!("  window:    {a} to {b}"),
        _ => outln!(
            "  duration:  {}s once approved (undecided by {} it expires)",
            g.duration_seconds,
            g.decide_by
        ),
    }
    let approvals = g
        .decisions
        .iter()
        .filter(|d| d.verdict == "approve")
        .count();
    outln!("  approvals: {approvals} of {}", g.required_approvals);
    for d in &g.decisions {
        outln!(
            "    {} {} at {}: {}",
            d.approver,
            d.verdict,
            d.at,
            d.comment
        );
    }
    if let Some(by) = &g.closed_by {
        outln!("  closed by: {by}");
    }
}

pub(crate) async fn run(ctx: &Ctx, cmd: SupportCmd) -> Result<ExitCode> {
    let g: SupportGrantInfo = match cmd {
        SupportCmd::Request {
            scope,
            reason,
            ticket,
            duration,
        } => {
            ctx.client
                .post(
                    "/api/v1/support",
                    &SupportRequest {
                        scope,
                        reason,
                        ticket,
                        duration,
                    },
                )
                .await?
        }
        SupportCmd::List { pending } => {
            let path = if pending {
                "/api/v1/support?pending=true"
            } else {
                "/api/v1/support"
            };
            let gs: Vec<SupportGrantInfo> = ctx.all(path).await?;
            ctx.print_list(&gs, "support grants", |gs| {
                for g in gs {
                    outln!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        g.id,
                        g.state,
                        g.requester,
                        g.scopes.join(","),
                        g.ticket,
                        g.ends_at.as_deref().unwrap_or("-"),
                        g.reason
                    );
                }
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        SupportCmd::Show { id } => {
            ctx.client
                .get(&format!("/api/v1/support/{}", path_segment(&id)))
                .await?
        }
        SupportCmd::Approve { id, comment } => {
            ctx.client
                .post(
                    &format!("/api/v1/support/{}/approve", path_segment(&id)),
                    &DecideSupportRequest { comment },
                )
                .await?
        }
        SupportCmd::Deny { id, comment } => {
            ctx.client
                .post(
                    &format!("/api/v1/support/{}/deny", path_segment(&id)),
                    &DecideSupportRequest {
                        comment: Some(comment),
                    },
                )
                .await?
        }
        SupportCmd::Revoke { id } => {
            ctx.client
                .post(
                    &format!("/api/v1/support/{}/revoke", path_segment(&id)),
                    &serde_json::json!({}),
                )
                .await?
        }
        SupportCmd::Activity { id } => {
            let es: Vec<AuditEntryInfo> = ctx
                .all(&format!("/api/v1/support/{}/activity", path_segment(&id)))
                .await?;
            for e in &es {
                outln!("{}", serde_json::to_string(e)?);
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    ctx.print(&g, print_grant)?;
    Ok(ExitCode::SUCCESS)
}
