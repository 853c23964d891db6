//! The emergency panel (admins): terminate every live session, lock the instance down (each with
//! the admin's own TOTP code and a reason), the lockdown's state, and lifting it, which the
//! service lets only another admin do. The rules and the audit are `services::live`'s.

use crate::auth::{Change, Viewer};
use crate::layout::{self, csrf_field, PageResult};
use crate::Console;
use axum::extract::State;
use cofre_proto::LockdownStatus;
use maud::{html, Markup};
use serde::Deserialize;

fn panel(v: &Viewer, status: &LockdownStatus, done: Option<&str>) -> Markup {
    html! {
        @if let Some(d) = done { (layout::notice(d)) }
        section aria-labelledby="lockdown-state" {
            h2 id="lockdown-state" { "Lockdown" }
            @if status.locked_down {
                p id="lockdown-status" data-locked="true" {
                    strong { "Locked down" } " since " (status.since.clone().unwrap_or_default())
                    " by " (status.by.clone().unwrap_or_default()) ": " (status.reason.clone().unwrap_or_default())
                    ". The API, the console and the gateway refuse everyone but admins."
                }
                form method="post" action="/emergency/lift" {
                    (csrf_field(v))
                    p { "Lifting takes another admin than the one who locked the instance down." }
                    label for="lift-reason" { "Reason to lift" }
                    input id="lift-reason" name="reason" required minlength="3";
                    button type="submit" { "Lift the lockdown" }
                }
            } @else {
                p id="lockdown-status" data-locked="false" { "Not locked down." }
                (step_up_form(v, "/emergency/lockdown", "lockdown", "Lock the instance down"))
            }
        }
        section aria-labelledby="terminate-all" {
            h2 id="terminate-all" { "Terminate every live session" }
            p { "Every live session on this node ends now, each recorded and audited." }
            (step_up_form(v, "/emergency/terminate-all", "terminate", "Terminate all sessions"))
        }
    }
}

/// A form with the admin's TOTP code and a reason, as every emergency action asks.
fn step_up_form(v: &Viewer, action: &str, id: &str, button: &str) -> Markup {
    html! {
        form method="post" action=(action) {
            (csrf_field(v))
            label for={ (id) "-totp" } { "Your TOTP code" }
            input id={ (id) "-totp" } name="totp_code" inputmode="numeric" autocomplete="one-time-code" required pattern="[0-9]{6}";
            label for={ (id) "-reason" } { "Reason" }
            input id={ (id) "-reason" } name="reason" required minlength="3";
            button type="submit" { (button) }
        }
    }
}

fn render(v: &Viewer, status: &LockdownStatus, done: Option<&str>) -> PageResult {
    Ok(layout::page(
        v,
        "/emergency",
        "Emergency",
        panel(v, status, done),
    ))
}

pub(crate) async fn page(State(c): State<Console>, v: Viewer) -> PageResult {
    let status = c.app.sessions().get_lockdown(&v.who).await?;
    render(&v, &status, None)
}

#[derive(Deserialize)]
pub(crate) struct StepUpForm {
    #[serde(default)]
    totp_code: String,
    #[serde(default)]
    reason: String,
}

pub(crate) async fn terminate_all(State(c): State<Console>, ch: Change<StepUpForm>) -> PageResult {
    let ended = c
        .app
        .sessions()
        .terminate_all_sessions(&ch.viewer.who, ch.form.totp_code.trim(), &ch.form.reason)
        .await?;
    let status = c.app.sessions().get_lockdown(&ch.viewer.who).await?;
    let done = match ended.len() {
        0 => "No session was live.".to_owned(),
        n => format!("{n} live session(s) told to end: {}.", ended.join(", ")),
    };
    render(&ch.viewer, &status, Some(&done))
}

pub(crate) async fn lockdown(State(c): State<Console>, ch: Change<StepUpForm>) -> PageResult {
    let status = c
        .app
        .sessions()
        .lock_down_instance(&ch.viewer.who, ch.form.totp_code.trim(), &ch.form.reason)
        .await?;
    render(&ch.viewer, &status, Some("The instance is locked down."))
}

#[derive(Deserialize)]
pub(crate) struct LiftForm {
    #[serde(default)]
    reason: String,
}

pub(crate) async fn lift(State(c): State<Console>, ch: Change<LiftForm>) -> PageResult {
    let status = c
        .app
        .sessions()
        .lift_lockdown(&ch.viewer.who, &ch.form.reason)
        .await?;
    render(&ch.viewer, &status, Some("The lockdown is lifted."))
}
