//! `cofre request` and `cofre grant`: access requests, four-eye approvals, emergency access.

use crate::client::path_segment;
use crate::commands::Ctx;
use anyhow::Result;
use clap::{Args, Subcommand};
use cofre_proto::requests::*;
use std::process::ExitCode;

#[derive(Args)]
pub(crate) struct RequestArgs {
    /// The target (host) name, e.g. db01.
    #[arg(long)]
    target: String,
    /// The account on the target whose credential the grant covers, e.g. root.
    #[arg(long)]
    account: String,
    /// Why (a ticket number); the approvers see it and the audit trail keeps it.
    #[arg(long)]
    reason: String,
    /// session and/or reveal (default: whatever policy puts under approval).
    #[arg(long, value_delimiter = ',')]
    access: Option<Vec<String>>,
    /// How long the grant lasts, e.g. 2h, 90m (default 1h; at most the policy's maximum).
    #[arg(long)]
    duration: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum RequestCmd {
    /// Ask for access that policy puts under approval; prints the request id.
    Create {
        #[command(flatten)]
        args: RequestArgs,
        /// `now` or an RFC 3339 time (e.g. 2026-12-01T08:00:00Z).
        #[arg(long, default_value = "now")]
        start: String,
    },
    /// Requests: your own; with --pending, those waiting for your decision; --all: everyone's
    /// (admin, auditor).
    List {
        #[arg(long)]
        pending: bool,
        #[arg(long)]
        all: bool,
    },
    /// A request with every decision: who, when, at which level, and its state.
    Show { id: String },
    /// Approve a request waiting on your level (never your own).
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a request (one refusal ends it); say why.
    Deny {
        id: String,
        #[arg(long)]
        comment: String,
    },
    /// Withdraw your own pending request.
    Cancel { id: String },
    /// Emergency access where policy allows it: no approval, every approver is notified, and it is
    /// flagged for review afterwards.
    Emergency {
        #[command(flatten)]
        args: RequestArgs,
    },
    /// Review an emergency access after the fact (admin or approver; not your own).
    Review {
        id: String,
        #[arg(long)]
        comment: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum GrantCmd {
    /// Approved requests whose window has not ended (yours; --all: everyone's, admin).
    List {
        #[arg(long)]
        all: bool,
    },
    /// End a grant now: its live gateway sessions are closed and reveals stop.
    Revoke {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

fn when(r: &RequestInfo) -> String {
    format!("{} .. {}", r.starts_at, r.ends_at)
}

fn print_row(r: &RequestInfo) {
    let mut state = r.state.clone();
    if let Some(l) = r.waiting_on_level {
        if let Some(level) = r.levels.get(l as usize - 1) {
            state = format!(
                "pending: level {l} ({} {}/{})",
                level.group, level.approvals, level.required
            );
        }
    }
    if r.grant_active {
        state.push_str(", in force");
    }
    if r.review_pending {
        state.push_str(", EMERGENCY: review pending");
    }
    outln!(
        "{}\t{}\t{}@{}\t{}\t{}\t{}",
        r.id,
        r.requester,
        r.account,
        r.target,
        r.access.join(","),
        when(r),
        state
    );
}

fn print_full(r: &RequestInfo) {
    outln!("request {}", r.id);
    outln!("  requester: {}", r.requester);
    outln!("  target:    {} (account {})", r.target, r.account);
    outln!("  access:    {}", r.access.join(", "));
    outln!("  reason:    {}", r.reason);
    outln!("  policy:    {}", r.policy);
    outln!("  window:    {}", when(r));
    outln!("  created:   {}", r.created_at);
    if r.state == "pending" {
        outln!("  decide by: {}", r.decide_by);
    }
    let mut state = r.state.clone();
    if r.grant_active {
        state.push_str(" (grant in force)");
    }
    outln!("  state:     {state}");
    if r.emergency {
        match &r.review {
            Some(rv) => outln!(
                "  emergency: reviewed by {} at {}: {}",
                rv.by,
                rv.at,
                rv.comment
            ),
            None => outln!("  emergency: REVIEW PENDING"),
        }
    }
    for (i, l) in r.levels.iter().enumerate() {
        let marker = if r.waiting_on_level == Some(i as u32 + 1) {
            "  <- waiting"
        } else {
            ""
        };
        outln!(
            "  level {}: {} needs {}, has {}{marker}",
            i + 1,
            l.group,
            l.required,
            l.approvals
        );
    }
    for d in &r.decisions {
        let comment = if d.comment.is_empty() {
            String::new()
        } else {
            format!(": {}", d.comment)
        };
        outln!(
            "  {} level {} {} by {}{comment}",
            d.at,
            d.level,
            d.verdict,
            d.approver
        );
    }
    if let Some(by) = &r.revoked_by {
        outln!(
            "  revoked by {by} at {}{}",
            r.closed_at.as_deref().unwrap_or("?"),
            r.revoke_reason
                .as_deref()
                .map(|x| format!(": {x}"))
                .unwrap_or_default()
        );
    }
}

fn body(args: RequestArgs, start: Option<String>) -> CreateAccessRequest {
    CreateAccessRequest {
        target: args.target,
        account: args.account,
        access: args.access,
        reason: args.reason,
        start,
        duration: args.duration,
    }
}

pub(crate) async fn request(ctx: &Ctx, cmd: RequestCmd) -> Result<ExitCode> {
    let path = |id: &str, what: &str| format!("/api/v1/requests/{}/{what}", path_segment(id));
    match cmd {
        RequestCmd::Create { args, start } => {
            let r: RequestInfo = ctx
                .client
                .post("/api/v1/requests", &body(args, Some(start)))
                .await?;
            ctx.print(&r, |r| {
                outln!("request {} is {}", r.id, r.state);
                if let Some(l) = r.levels.first() {
                    outln!(
                        "waiting for {} approver(s) from {}; it expires undecided at {}",
                        l.required,
                        l.group,
                        r.decide_by
                    );
                }
            })?;
        }
        RequestCmd::Emergency { args } => {
            let r: RequestInfo = ctx
                .client
                .post("/api/v1/requests/emergency", &body(args, None))
                .await?;
            ctx.print(&r, |r| {
                outln!(
                    "emergency access {}: granted until {}; every approver has been notified and it will be reviewed",
                    r.id, r.ends_at
                );
            })?;
        }
        RequestCmd::List { pending, all } => {
            let mut q = vec![];
            if pending {
                q.push("pending=true");
            }
            if all {
                q.push("all=true");
            }
            let url = if q.is_empty() {
                "/api/v1/requests".to_owned()
            } else {
                format!("/api/v1/requests?{}", q.join("&"))
            };
            let rs: Vec<RequestInfo> = ctx.all(&url).await?;
            ctx.print_list(&rs, "requests", |rs| rs.iter().for_each(print_row))?;
        }
        RequestCmd::Show { id } => {
            let r: RequestInfo = ctx
                .client
                .get(&format!("/api/v1/requests/{}", path_segment(&id)))
                .await?;
            ctx.print(&r, print_full)?;
        }
        RequestCmd::Approve { id, comment } => {
            let r: RequestInfo = ctx
                .client
                .post(&path(&id, "approve"), &DecideRequest { comment })
                .await?;
            ctx.print(&r, |r| match r.waiting_on_level {
                Some(l) => outln!("approved; request {} now waits on level {l}", r.id),
                None => outln!("approved; request {} is {}", r.id, r.state),
            })?;
        }
        RequestCmd::Deny { id, comment } => {
            let r: RequestInfo = ctx
                .client
                .post(
                    &path(&id, "deny"),
                    &DecideRequest {
                        comment: Some(comment),
                    },
                )
                .await?;
            ctx.print(&r, |r| outln!("request {} is {}", r.id, r.state))?;
        }
        RequestCmd::Cancel { id } => {
            let r: RequestInfo = ctx
                .client
                .call(reqwest::Method::POST, &path(&id, "cancel"), None::<&()>)
                .await?;
            ctx.print(&r, |r| outln!("request {} is {}", r.id, r.state))?;
        }
        RequestCmd::Review { id, comment } => {
            let r: RequestInfo = ctx
                .client
                .post(
                    &path(&id, "review"),
                    &DecideRequest {
                        comment: Some(comment),
                    },
                )
                .await?;
            ctx.print(&r, |r| outln!("emergency access {} reviewed", r.id))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn grant(ctx: &Ctx, cmd: GrantCmd) -> Result<ExitCode> {
    match cmd {
        GrantCmd::List { all } => {
            let url = if all {
                "/api/v1/grants?all=true"
            } else {
                "/api/v1/grants"
            };
            let rs: Vec<RequestInfo> = ctx.all(url).await?;
            ctx.print_list(&rs, "grants", |rs| rs.iter().for_each(print_row))?;
        }
        GrantCmd::Revoke { id, reason } => {
            let r: RequestInfo = ctx
                .client
                .post(
                    &format!("/api/v1/grants/{}/revoke", path_segment(&id)),
                    &RevokeRequest { reason },
                )
                .await?;
            ctx.print(&r, |r| {
                outln!("grant {} revoked; its sessions are being closed", r.id)
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
