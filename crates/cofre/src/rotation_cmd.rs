//! `credential rotate|set-rotation|verify`, `rotation status`, `password-policy set|show`.

use crate::client::path_segment;
use crate::commands::Ctx;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use cofre_proto::*;
use std::process::ExitCode;

/// How a credential is changed on its target.
#[derive(Args, Clone, Default)]
pub(crate) struct MethodArgs {
    /// chpasswd (as the --as account, e.g. root), passwd (as the account itself, answering its
    /// prompts), key (a new key pair; its line replaces the old one in authorized_keys) or
    /// command (the credential's template, set with set-rotation --template-file).
    #[arg(long)]
    method: Option<String>,
    /// The account on the same target that makes the change: ACCOUNT or TARGET/ACCOUNT.
    #[arg(long = "as")]
    as_account: Option<String>,
    /// A key credential: the same as --method key.
    #[arg(long, conflicts_with = "method")]
    key: bool,
}

impl MethodArgs {
    fn method(&self) -> Option<String> {
        if self.key {
            Some("key".into())
        } else {
            self.method.clone()
        }
    }
}

/// `credential set-rotation`: when and how a credential rotates.
#[derive(Args, Clone, Default)]
pub(crate) struct SettingsArgs {
    /// A schedule, e.g. 30d.
    #[arg(long)]
    every: Option<String>,
    #[arg(long)]
    after_reveal: bool,
    #[arg(long)]
    after_session: bool,
    /// When an access grant on it ends (its window, or a revocation).
    #[arg(long)]
    after_grant: bool,
    /// Check the vaulted secret against the target this often (drift alerts; reset through
    /// --as when set).
    #[arg(long)]
    verify_every: Option<String>,
    /// A command template for devices without chpasswd or passwd (TOML: `command`, optional
    /// `stdin`, `[[prompt]]` with `expect` and `answer`, optional `success_output`; placeholders
    /// {account}, {old}, {new}, the secrets only in stdin and answers). Stored as the
    /// credential's next template version; implies --method command.
    #[arg(long, value_name = "FILE")]
    template_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    how: MethodArgs,
}

#[derive(Subcommand)]
pub(crate) enum RotationCmd {
    /// Per credential with rotation: last attempt (when, trigger, outcome, reason) and next.
    Status {
        /// Only those whose last attempt did not succeed.
        #[arg(long)]
        failed: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum PasswordPolicyCmd {
    /// Passwords Cofre generates when it rotates: length, classes that must appear, characters
    /// never used. A policy under 64 bits of entropy is refused.
    Set {
        #[arg(long, default_value_t = 24)]
        length: u32,
        /// Comma-separated: upper,lower,digit,symbol.
        #[arg(long, default_value = "upper,lower,digit,symbol")]
        classes: String,
        /// Characters never used, e.g. "'\"\\".
        #[arg(long, default_value = "")]
        exclude: String,
    },
    Show,
}

fn cred_path(target: &str, account: &str, what: &str) -> String {
    format!(
        "/api/v1/targets/{}/credentials/{}/{what}",
        path_segment(target),
        path_segment(account)
    )
}

fn print_result(r: &RotationResult) {
    match r.outcome.as_str() {
        "rotated" => outln!(
            "rotated {}/{}: version {} is current ({})",
            r.target,
            r.account,
            r.version,
            r.method
        ),
        "waiting" => outln!(
            "waiting: {}",
            r.reason.as_deref().unwrap_or("a session is live")
        ),
        other => outln!(
            "{other}: {}/{} stays at version {}: {}",
            r.target,
            r.account,
            r.version,
            r.reason.as_deref().unwrap_or("")
        ),
    }
}

/// Exit 0 for rotated and waiting, 1 for anything else (the old version stays current).
fn result_code(outcome: &str) -> ExitCode {
    if matches!(outcome, "rotated" | "waiting" | "recovered") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub(crate) async fn rotate(
    ctx: &Ctx,
    target: &str,
    account: &str,
    how: &MethodArgs,
) -> Result<ExitCode> {
    let r: RotationResult = ctx
        .client
        .post(
            &cred_path(target, account, "rotate"),
            &RotateRequest {
                method: how.method(),
                as_account: how.as_account.clone(),
            },
        )
        .await?;
    ctx.print(&r, print_result)?;
    Ok(result_code(&r.outcome))
}

pub(crate) async fn set_rotation(
    ctx: &Ctx,
    target: &str,
    account: &str,
    settings: &SettingsArgs,
) -> Result<ExitCode> {
    let template = match &settings.template_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--template-file {}", path.display()))?,
        ),
        None => None,
    };
    let how = &settings.how;
    let r: RotationInfo = ctx
        .client
        .call(
            reqwest::Method::PUT,
            &cred_path(target, account, "rotation"),
            Some(&SetRotationRequest {
                every: settings.every.clone(),
                after_reveal: settings.after_reveal,
                after_session: settings.after_session,
                after_grant: settings.after_grant,
                method: how.method(),
                as_account: how.as_account.clone(),
                verify_every: settings.verify_every.clone(),
                template,
            }),
        )
        .await?;
    ctx.print(&r, |r| {
        outln!(
            "rotation of {}/{}: {}",
            r.target,
            r.account,
            settings_text(r)
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

fn settings_text(r: &RotationInfo) -> String {
    let mut parts = vec![format!(
        "method {}{}",
        r.method.as_deref().unwrap_or("-"),
        r.as_account
            .as_deref()
            .map(|a| format!(" as {a}"))
            .unwrap_or_default()
    )];
    if let Some(e) = &r.every {
        parts.push(format!("every {e}"));
    }
    for (on, what) in [
        (r.after_reveal, "after reveal"),
        (r.after_session, "after session"),
        (r.after_grant, "after grant"),
    ] {
        if on {
            parts.push(what.into());
        }
    }
    if let Some(v) = &r.verify_every {
        parts.push(format!("verify every {v}"));
    }
    if let (Some("command"), Some(v)) = (r.method.as_deref(), r.template_version) {
        parts.push(format!("template version {v}"));
    }
    parts.join(", ")
}

pub(crate) async fn verify(ctx: &Ctx, target: &str, account: &str) -> Result<ExitCode> {
    let r: VerifyResult = ctx
        .client
        .post(
            &cred_path(target, account, "verify"),
            &serde_json::json!({}),
        )
        .await?;
    ctx.print(&r, |r| {
        match r.outcome.as_str() {
            "ok" => outln!(
                "ok: version {} of {}/{} logs in",
                r.version,
                r.target,
                r.account
            ),
            _ => outln!(
                "drift: version {} of {}/{} does not log in: {}",
                r.version,
                r.target,
                r.account,
                r.reason.as_deref().unwrap_or("")
            ),
        }
        if let Some(rr) = &r.reconciled {
            print_result(rr);
        }
    })?;
    let reconciled = r
        .reconciled
        .as_ref()
        .is_some_and(|rr| rr.outcome == "rotated");
    Ok(if r.outcome == "ok" || reconciled {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(crate) async fn rotation(ctx: &Ctx, cmd: RotationCmd) -> Result<ExitCode> {
    match cmd {
        RotationCmd::Status { failed } => {
            let path = if failed {
                "/api/v1/rotations?failed=true"
            } else {
                "/api/v1/rotations"
            };
            let items: Vec<RotationInfo> = ctx.all(path).await?;
            ctx.print_list(&items, "rotations", |items| {
                for r in items {
                    outln!(
                        "{}/{}\tv{}\tlast {} {} ({}){}\tnext {}{}{}",
                        r.target,
                        r.account,
                        r.version,
                        r.last_at.as_deref().unwrap_or("never"),
                        r.last_outcome.as_deref().unwrap_or("-"),
                        r.last_trigger.as_deref().unwrap_or("-"),
                        r.last_reason
                            .as_deref()
                            .map(|x| format!(": {x}"))
                            .unwrap_or_default(),
                        r.next_at.as_deref().unwrap_or("-"),
                        r.waiting_for
                            .as_deref()
                            .map(|w| format!(" (waiting: {w})"))
                            .unwrap_or_default(),
                        r.pending_version
                            .map(|v| format!("\tpending v{v}"))
                            .unwrap_or_default(),
                    );
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn password_policy(ctx: &Ctx, cmd: PasswordPolicyCmd) -> Result<ExitCode> {
    let p: PasswordPolicyInfo = match cmd {
        PasswordPolicyCmd::Set {
            length,
            classes,
            exclude,
        } => {
            ctx.client
                .call(
                    reqwest::Method::PUT,
                    "/api/v1/password-policy",
                    Some(&SetPasswordPolicyRequest {
                        length,
                        classes,
                        exclude: Some(exclude),
                    }),
                )
                .await?
        }
        PasswordPolicyCmd::Show => ctx.client.get("/api/v1/password-policy").await?,
    };
    ctx.print(&p, |p| {
        outln!(
            "length {}, classes {}, exclude {:?} ({} bits)",
            p.length,
            p.classes.join(","),
            p.exclude,
            p.entropy_bits
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
