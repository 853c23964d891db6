//! Live sessions (terminate), past sessions and the recording player. The live list is where the
//! live-session controls (watch, lock, moderation, the emergency panel) add their buttons.

use super::{next_link, urlencode, Paging};
use crate::auth::{Change, Viewer};
use crate::layout::{self, csrf_field, PageResult};
use crate::Console;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use cofre_core::role::Action;
use cofre_proto::{RecordingFormat, SessionInfo};
use maud::{html, Markup};
use serde::Deserialize;

fn table(v: &Viewer, caption: &str, items: &[SessionInfo], live: bool) -> Markup {
    let kill = live && v.who.require(Action::KillSessions).is_ok();
    html! {
        @if items.is_empty() { p { "No session." } } @else {
            table {
                caption { (caption) }
                thead { tr {
                    th scope="col" { "Session" } th scope="col" { "User" } th scope="col" { "Target" } th scope="col" { "Kind" }
                    th scope="col" { "From" } th scope="col" { "Started" } th scope="col" { "State" } th scope="col" { "Actions" }
                } }
                tbody {
                    @for s in items {
                        tr {
                            td { (s.id) }
                            td { (s.username) }
                            td { (s.account) "@" (s.target) }
                            td { (s.kind) }
                            td { (s.source) }
                            td { (s.started_at) }
                            td { @if s.live { "live" } @else { "ended " (s.ended_at.clone().unwrap_or_default()) ": " (s.end_reason.clone().unwrap_or_default()) } }
                            td {
                                a href={ "/recordings/" (urlencode(&s.id)) } { "Recording of " (s.id) }
                                @if kill && s.live {
                                    form method="post" action={ "/sessions/" (urlencode(&s.id)) "/terminate" } class="inline" {
                                        (csrf_field(v))
                                        label for={ "why-" (s.id) } { "Reason" }
                                        input id={ "why-" (s.id) } name="reason";
                                        button type="submit" { "Terminate " (s.id) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) async fn live(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<Paging>,
) -> PageResult {
    let page = c
        .app
        .sessions()
        .list_sessions(&v.who, true, None, q.cursor.as_deref())
        .await?;
    Ok(layout::page(
        &v,
        "/sessions",
        "Live sessions",
        html! {
            (table(&v, "Sessions running now, across the instance", &page.items, true))
            (next_link("/sessions", page.next_cursor.as_deref()))
            p { a href="/sessions" { "Refresh" } }
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct TerminateForm {
    #[serde(default)]
    reason: Option<String>,
}

pub(crate) async fn terminate(
    State(c): State<Console>,
    Path(id): Path<String>,
    ch: Change<TerminateForm>,
) -> PageResult {
    let reason = ch
        .form
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    c.app
        .sessions()
        .kill_session(&ch.viewer.who, &id, reason)
        .await?;
    Ok(Redirect::to("/sessions").into_response())
}

pub(crate) async fn recordings(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<Paging>,
) -> PageResult {
    v.who.require(Action::ReadRecordings)?;
    let page = c
        .app
        .sessions()
        .list_sessions(&v.who, false, None, q.cursor.as_deref())
        .await?;
    Ok(layout::page(
        &v,
        "/recordings",
        "Recordings",
        html! {
            (table(&v, "Sessions, newest first; each recording plays in the player", &page.items, false))
            (next_link("/recordings", page.next_cursor.as_deref()))
        },
    ))
}

pub(crate) async fn player(
    State(c): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
) -> PageResult {
    v.who.require(Action::ReadRecordings)?;
    // The page is refused as the recording is: its check is the service's.
    let check = c.app.sessions().verify_recording(&v.who, &id).await?;
    let enc = urlencode(&id);
    Ok(layout::page_with(
        &v,
        "/recordings",
        &format!("Recording of session {id}"),
        &["xterm.js", "player.js"],
        &["xterm.css"],
        html! {
            p role="status" { "Integrity: " strong { (check.status) } " — " (check.message) }
            div id="player" data-cast={ "/recordings/" (enc) "/cast" } {
                div class="controls" role="group" aria-label="Playback" {
                    button type="button" id="play" { "Play" }
                    " "
                    label for="seek" { "Position" }
                    input type="range" id="seek" min="0" max="1000" value="0" step="1";
                    output id="clock" for="seek" { "0.0 s" }
                    " "
                    label for="speed" { "Speed" }
                    select id="speed" { option value="0.5" { "0.5×" } option value="1" selected { "1×" } option value="2" { "2×" } option value="4" { "4×" } option value="8" { "8×" } }
                }
                section id="screen" class="terminal" aria-label="The session's terminal as it was recorded" {}
                h2 { "Markers" }
                p { "Commands, file transfers and the session's end; choose one to jump to it." }
                ol id="markers" {}
            }
        },
    ))
}

/// The asciicast of a session, streamed, for the player.
pub(crate) async fn cast(
    State(c): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
) -> Result<Response, layout::PageError> {
    let frames = c
        .app
        .sessions()
        .export_recording(&v.who, &id, RecordingFormat::Asciicast, None)
        .await?;
    let body =
        axum::body::Body::from_stream(futures::stream::unfold(frames, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
    Ok(([("content-type", "application/x-asciicast")], body).into_response())
}
