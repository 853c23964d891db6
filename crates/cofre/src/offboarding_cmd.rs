//! The offboarding commands: `user disable|enable|delete`, `user key remove`,
//! `group remove-member`, `target disable|enable|delete`, `credential disable|enable|delete`,
//! `backup target remove`, `backup job remove`. Each is one API call.

use crate::client::path_segment;
use crate::commands::Ctx;
use anyhow::Result;
use cofre_proto::*;
use std::process::ExitCode;

/// One call; prints `done` (or the JSON answer with `--output json`).
async fn call(
    ctx: &Ctx,
    method: reqwest::Method,
    path: &str,
    body: Option<&impl serde::Serialize>,
    done: &str,
) -> Result<ExitCode> {
    let answer: serde_json::Value = ctx.client.call(method, path, body).await?;
    ctx.print(&answer, |_| outln!("{done}"))?;
    Ok(ExitCode::SUCCESS)
}

const NO_BODY: Option<&()> = None;

pub(crate) async fn user_disable(ctx: &Ctx, name: &str, reason: String) -> Result<ExitCode> {
    call(
        ctx,
        reqwest::Method::POST,
        &format!("/api/v1/users/{}/disable", path_segment(name)),
        Some(&DisableUserRequest { reason }),
        &format!("disabled {name}: its tokens and live sessions have ended"),
    )
    .await
}

/// Enabling widens access: it may be held for a second admin (printed, exit 0).
pub(crate) async fn user_enable(ctx: &Ctx, name: &str) -> Result<ExitCode> {
    let answer = ctx
        .propose::<serde_json::Value>(
            reqwest::Method::POST,
            &format!("/api/v1/users/{}/enable", path_segment(name)),
            NO_BODY,
        )
        .await?;
    match answer {
        crate::commands::Maybe::Done(v) => ctx.print(&v, |_| outln!("enabled {name}"))?,
        crate::commands::Maybe::Held(h) => ctx.print_held(&h)?,
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn user_delete(ctx: &Ctx, name: &str) -> Result<ExitCode> {
    call(
        ctx,
        reqwest::Method::DELETE,
        &format!("/api/v1/users/{}", path_segment(name)),
        NO_BODY,
        &format!("deleted {name}"),
    )
    .await
}

pub(crate) async fn key_remove(ctx: &Ctx, user: &str, fingerprint: String) -> Result<ExitCode> {
    let done = format!("removed key {fingerprint} of {user}");
    call(
        ctx,
        reqwest::Method::POST,
        &format!("/api/v1/users/{}/keys/remove", path_segment(user)),
        Some(&RemoveSshKeyRequest { fingerprint }),
        &done,
    )
    .await
}

pub(crate) async fn group_remove_member(ctx: &Ctx, group: &str, user: &str) -> Result<ExitCode> {
    call(
        ctx,
        reqwest::Method::DELETE,
        &format!(
            "/api/v1/groups/{}/members/{}",
            path_segment(group),
            path_segment(user)
        ),
        NO_BODY,
        &format!("removed {user} from {group}"),
    )
    .await
}

/// `what` is `disable`, `enable` or `delete`.
pub(crate) async fn target(ctx: &Ctx, what: &str, name: &str) -> Result<ExitCode> {
    let base = format!("/api/v1/targets/{}", path_segment(name));
    let (method, path) = match what {
        "delete" => (reqwest::Method::DELETE, base),
        _ => (reqwest::Method::POST, format!("{base}/{what}")),
    };
    call(
        ctx,
        method,
        &path,
        NO_BODY,
        &format!("{what}d target {name}"),
    )
    .await
}

/// `what` is `disable`, `enable` or `delete`.
pub(crate) async fn credential(
    ctx: &Ctx,
    what: &str,
    target: &str,
    account: &str,
) -> Result<ExitCode> {
    let base = format!(
        "/api/v1/targets/{}/credentials/{}",
        path_segment(target),
        path_segment(account)
    );
    let (method, path) = match what {
        "delete" => (reqwest::Method::DELETE, base),
        _ => (reqwest::Method::POST, format!("{base}/{what}")),
    };
    call(
        ctx,
        method,
        &path,
        NO_BODY,
        &format!("{what}d credential {target}/{account}"),
    )
    .await
}

pub(crate) async fn backup_target_remove(ctx: &Ctx, name: &str) -> Result<ExitCode> {
    call(
        ctx,
        reqwest::Method::DELETE,
        &format!("/api/v1/backup/targets/{}", path_segment(name)),
        NO_BODY,
        &format!("removed backup target {name}"),
    )
    .await
}

pub(crate) async fn backup_job_remove(ctx: &Ctx, name: &str) -> Result<ExitCode> {
    call(
        ctx,
        reqwest::Method::DELETE,
        &format!("/api/v1/backup/jobs/{}", path_segment(name)),
        NO_BODY,
        &format!("removed backup job {name}"),
    )
    .await
}
