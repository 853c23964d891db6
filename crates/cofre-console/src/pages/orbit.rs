//! Orbit at a glance: snapshots, backups and break-glass status, each what its service returns.
//! Parts that other issues add (maintenance, support, network) join as one more section here.

use super::urlencode;
use crate::auth::{Change, Viewer};
use crate::layout::{self, csrf_field, PageResult};
use crate::Console;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use cofre_proto::CreateSnapshotRequest;
use maud::{html, Markup};
use serde::Deserialize;

fn section(title: &str, r: Result<serde_json::Value, cofre_app::error::Error>) -> Markup {
    html! {
        section aria-labelledby={ "s-" (title) } {
            h2 id={ "s-" (title) } { (title) }
            @match r {
                Ok(v) => { (layout::json_view(&v)) }
                Err(e) => { p role="alert" { (e.message) } }
            }
        }
    }
}

fn json<T: serde::Serialize>(
    r: Result<T, cofre_app::error::Error>,
) -> Result<serde_json::Value, cofre_app::error::Error> {
    r.and_then(|t| {
        serde_json::to_value(t).map_err(|e| cofre_app::error::Error::internal("rendering Orbit", e))
    })
}

pub(crate) async fn orbit(State(c): State<Console>, v: Viewer) -> PageResult {
    use cofre_core::role::Action;
    let may = |a: Action| v.who.require(a).is_ok();
    if !(may(Action::ViewSnapshots) || may(Action::SystemBackups) || may(Action::CredentialBackups))
    {
        v.who.require(Action::ViewSnapshots)?;
    }
    // What each part shows is what its service lets the caller see; the buttons only for who
    // may press them.
    let manage_snapshots = may(Action::ManageSnapshots);
    let orbit = c.app.orbit();
    let list = orbit.list_snapshots(&v.who);
    let ids: Vec<String> = list
        .as_ref()
        .map(|l| l.snapshots.iter().map(|s| s.id.clone()).collect())
        .unwrap_or_default();
    let snapshots = json(list);
    let status = orbit.get_backup_status(&v.who).await;
    let jobs: Vec<String> = status
        .as_ref()
        .map(|s| s.jobs.iter().map(|j| j.name.clone()).collect())
        .unwrap_or_default();
    let backups = json(status);
    let breakglass = json(orbit.get_breakglass_status(&v.who).await);
    Ok(layout::page(
        &v,
        "/orbit",
        "Orbit",
        html! {
            @if manage_snapshots {
                form method="post" action="/orbit/snapshots" {
                    (csrf_field(&v))
                    input id="o-rec" name="include_recordings" type="checkbox" value="true" checked;
                    label for="o-rec" { "Include the recordings" }
                    button type="submit" { "Take a snapshot now" }
                }
                @for id in &ids {
                    form method="post" action={ "/orbit/snapshots/" (urlencode(id)) "/verify" } {
                        (csrf_field(&v))
                        button type="submit" { "Verify snapshot " (id) }
                    }
                }
            }
            (section("Snapshots", snapshots))
            @for job in &jobs {
                form method="post" action={ "/orbit/backups/" (urlencode(job)) "/run" } {
                    (csrf_field(&v))
                    button type="submit" { "Run backup job " (job) " now" }
                }
            }
            (section("Backups", backups))
            (section("Break-glass", breakglass))
            p {
                "The break-glass ceremony and export hand out shares and files that must never pass through a web page: run them with "
                code { "cofre breakglass" } " in a terminal. Backup targets and jobs are added with " code { "cofre backup" } "."
            }
        },
    ))
}

/// A job's page reloads itself (the `Refresh` header: no script) until the job ends.
fn progress_page(v: &Viewer, title: &str, running: bool, body: Markup) -> Response {
    let mut res = layout::page(v, "/orbit", title, body);
    if running {
        res.headers_mut().insert(
            HeaderName::from_static("refresh"),
            HeaderValue::from_static("2"),
        );
    }
    res
}

#[derive(Deserialize)]
pub(crate) struct SnapshotForm {
    #[serde(default)]
    include_recordings: Option<String>,
}

pub(crate) async fn create_snapshot(
    State(c): State<Console>,
    ch: Change<SnapshotForm>,
) -> PageResult {
    let job = c
        .app
        .orbit()
        .start_snapshot(
            &ch.viewer.who,
            &CreateSnapshotRequest {
                reason: None,
                include_recordings: Some(ch.form.include_recordings.is_some()),
            },
        )
        .await?;
    Ok(Redirect::to(&format!("/orbit/snapshots/jobs/{}", urlencode(&job.id))).into_response())
}

pub(crate) async fn snapshot_job(
    State(c): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
) -> PageResult {
    let job = c.app.orbit().get_snapshot_job(&v.who, &id)?;
    let running = job.finished_at.is_none();
    let value = json(Ok(job.clone()))?;
    Ok(progress_page(
        &v,
        "Snapshot",
        running,
        html! {
            p role="status" {
                "Phase: " strong { (job.phase) }
                @if job.bytes_total > 0 { " — " (job.bytes_done) " of " (job.bytes_total) " bytes" }
                @if running { " (this page refreshes until it ends)" }
            }
            progress max=(job.bytes_total.max(1)) value=(job.bytes_done) aria-label="Snapshot progress" {}
            (layout::json_view(&value))
            p { a href="/orbit" { "Back to Orbit" } }
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct Empty {}

pub(crate) async fn verify_snapshot(
    State(c): State<Console>,
    Path(id): Path<String>,
    ch: Change<Empty>,
) -> PageResult {
    let r = c.app.orbit().verify_snapshot(&ch.viewer.who, &id).await?;
    let value = json(Ok(r))?;
    Ok(layout::page(
        &ch.viewer,
        "/orbit",
        &format!("Snapshot {id} verified"),
        html! { (layout::json_view(&value)) p { a href="/orbit" { "Back to Orbit" } } },
    ))
}

pub(crate) async fn run_backup(
    State(c): State<Console>,
    Path(job): Path<String>,
    ch: Change<Empty>,
) -> PageResult {
    let run = c.app.orbit().run_backup_now(&ch.viewer.who, &job).await?;
    Ok(Redirect::to(&format!("/orbit/backups/runs/{}", run.id)).into_response())
}

pub(crate) async fn backup_run(
    State(c): State<Console>,
    v: Viewer,
    Path(id): Path<i64>,
) -> PageResult {
    let run = c.app.orbit().get_backup_run(&v.who, id).await?;
    let running = run.status == "running";
    let value = json(Ok(run.clone()))?;
    Ok(progress_page(
        &v,
        &format!("Backup run {id}"),
        running,
        html! {
            p role="status" {
                "Status: " strong { (run.status) } " — " (run.files_sent) " files, " (run.bytes_sent) " bytes sent"
                @if running { " (this page refreshes until it ends)" }
            }
            (layout::json_view(&value))
            p { a href="/orbit" { "Back to Orbit" } }
        },
    ))
}
