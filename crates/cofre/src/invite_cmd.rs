//! `cofre invite`: invitations for third parties — create (admins), list, show, revoke.
use crate::client::path_segment;
use crate::commands::Ctx;
use anyhow::Result;
use clap::Subcommand;
use cofre_proto::*;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum InviteCmd {
    /// Invite someone without a Cofre account (a vendor's engineer, a contractor) to a recorded
    /// web terminal on the external listener. They get a one-time link by e-mail, set a password
    /// and enrol TOTP, and may open sessions to TARGETS × ACCOUNTS between --from and --until.
    /// An admin's invitation is held for a second admin (dual control) where one exists; a
    /// user's needs a policy giving it `invite` (and `session`) on each target, and waits for
    /// approval where that policy says so. The link is sent once the invitation is kept.
    ///
    /// Example: cofre invite create --email ana@vendor.example --targets db01,web02
    ///   --accounts deploy --from 2026-12-03T13:00Z --until 2026-12-03T18:00Z
    ///   --reason "CHG-77 vendor patch"
    Create {
        /// Where the link goes.
        #[arg(long)]
        email: String,
        /// Target names, comma-separated.
        #[arg(long)]
        targets: String,
        /// Account names, comma-separated.
        #[arg(long)]
        accounts: String,
        /// RFC 3339 (`2026-12-03T13:00Z`) or `now` (the default).
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339; at most 31 days after --from.
        #[arg(long)]
        until: String,
        #[arg(long)]
        reason: String,
        /// Each session waits until an admin or the inviter approves it.
        #[arg(long)]
        approve_each_session: bool,
    },
    /// Every invitation and its status (upcoming, sent, open, expired, revoked).
    List,
    /// One invitation.
    Show { id: String },
    /// End an invitation now: its link and login stop working, its live sessions end.
    Revoke { id: String },
    /// Let a waiting session of an --approve-each-session invitation open (`invite show ID`
    /// lists the waiting ones).
    ApproveSession {
        id: String,
        ask: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Refuse a waiting session, saying why: the invitee's terminal ends.
    DenySession {
        id: String,
        ask: String,
        #[arg(long)]
        comment: String,
    },
}

fn print_session_ask(a: &InvitationSessionInfo) {
    outln!(
        "session request {}: {} ({}@{} from {}, asked at {})",
        a.id,
        a.state,
        a.account,
        a.target,
        a.source,
        a.asked_at
    );
}

fn print_invitation(i: &InvitationInfo) {
    outln!("invitation {}: {}", i.id, i.status);
    outln!("  email:    {}", i.email);
    outln!("  inviter:  {} at {}", i.inviter, i.created_at);
    outln!("  targets:  {}", i.targets.join(","));
    outln!("  accounts: {}", i.accounts.join(","));
    outln!("  window:   {} to {}", i.starts_at, i.ends_at);
    outln!("  reason:   {}", i.reason);
    if i.approve_each_session {
        outln!("  each session waits for an approval");
    }
    if let Some(at) = &i.redeemed_at {
        outln!("  enrolled: {at}");
    }
    if let (Some(at), Some(by)) = (&i.revoked_at, &i.revoked_by) {
        outln!("  revoked:  {at} by {by}");
    }
    for a in &i.pending_sessions {
        outln!(
            "  waiting:  {} {}@{} from {} since {}",
            a.id,
            a.account,
            a.target,
            a.source,
            a.asked_at
        );
    }
}

pub(crate) async fn run(ctx: &Ctx, cmd: InviteCmd) -> Result<ExitCode> {
    let i: InvitationInfo = match cmd {
        InviteCmd::Create {
            email,
            targets,
            accounts,
            from,
            until,
            reason,
            approve_each_session,
        } => {
            let req = InviteRequest {
                email,
                targets,
                accounts,
                from,
                until,
                reason,
                approve_each_session,
            };
            let v: serde_json::Value = ctx
                .client
                .call(reqwest::Method::POST, "/api/v1/invitations", Some(&req))
                .await?;
            if v.get("requested").and_then(|r| r.as_bool()) == Some(true) {
                let r: InvitationRequested = serde_json::from_value(v)?;
                ctx.print(&r, |r| {
                    outln!(
                        "waiting for approval: request {} (policy {})",
                        r.request.id,
                        r.request.policy
                    );
                    let levels: Vec<String> = r
                        .request
                        .levels
                        .iter()
                        .map(|l| format!("{}:{}", l.group, l.required))
                        .collect();
                    outln!(
                        "  approvers decide with `cofre request approve {}` ({}); the link is \
                         sent once it is approved",
                        r.request.id,
                        levels.join(", ")
                    );
                })?;
                return Ok(ExitCode::SUCCESS);
            }
            if v.get("held").and_then(|h| h.as_bool()) == Some(true) {
                let h: HeldResponse = serde_json::from_value(v)?;
                ctx.print_held(&h)?;
                return Ok(ExitCode::SUCCESS);
            }
            serde_json::from_value(v)?
        }
        InviteCmd::List => {
            let is: Vec<InvitationInfo> = ctx.all("/api/v1/invitations").await?;
            ctx.print_list(&is, "invitations", |is| {
                for i in is {
                    outln!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        i.id,
                        i.status,
                        i.email,
                        i.targets.join(","),
                        i.accounts.join(","),
                        i.ends_at,
                        i.reason
                    );
                }
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        InviteCmd::Show { id } => {
            ctx.client
                .get(&format!("/api/v1/invitations/{}", path_segment(&id)))
                .await?
        }
        InviteCmd::Revoke { id } => {
            ctx.client
                .post(
                    &format!("/api/v1/invitations/{}/revoke", path_segment(&id)),
                    &serde_json::json!({}),
                )
                .await?
        }
        InviteCmd::ApproveSession { id, ask, comment } => {
            let a: InvitationSessionInfo = ctx
                .client
                .post(
                    &format!(
                        "/api/v1/invitations/{}/sessions/{}/approve",
                        path_segment(&id),
                        path_segment(&ask)
                    ),
                    &DecideInvitationSessionRequest { comment },
                )
                .await?;
            ctx.print(&a, print_session_ask)?;
            return Ok(ExitCode::SUCCESS);
        }
        InviteCmd::DenySession { id, ask, comment } => {
            let a: InvitationSessionInfo = ctx
                .client
                .post(
                    &format!(
                        "/api/v1/invitations/{}/sessions/{}/deny",
                        path_segment(&id),
                        path_segment(&ask)
                    ),
                    &DecideInvitationSessionRequest {
                        comment: Some(comment),
                    },
                )
                .await?;
            ctx.print(&a, print_session_ask)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    ctx.print(&i, print_invitation)?;
    Ok(ExitCode::SUCCESS)
}
