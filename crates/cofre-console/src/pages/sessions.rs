//! Live sessions (watch, block input, terminate), past sessions and the recording player. The
//! watch page is a read-only xterm.js fed by [`watch_events`] (Server-Sent Events over the
//! cookie session) calling `watch_session`, so the audit, the moderator's presence and what an
//! approver may watch are the service's.

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
    let watch = live && v.who.require(Action::WatchSessions).is_ok();
    let lock = live && v.who.require(Action::LockSessions).is_ok();
    let recordings = v.who.require(Action::ReadRecordings).is_ok();
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
                            td { (state(s)) }
                            td {
                                @if recordings {
                                    a href={ "/recordings/" (urlencode(&s.id)) } { "Recording of " (s.id) }
                                }
                                @if watch && s.live {
                                    " " a href={ "/sessions/" (urlencode(&s.id)) "/watch" } { "Watch " (s.id) }
                                }
                                @if kill && s.live {
                                    form method="post" action={ "/sessions/" (urlencode(&s.id)) "/terminate" } class="inline" {
                                        (csrf_field(v))
                                        label for={ "why-" (s.id) } { "Reason" }
                                        input id={ "why-" (s.id) } name="reason";
                                        button type="submit" { "Terminate " (s.id) }
                                    }
                                }
                                @if lock && s.live {
                                    (lock_form(v, s))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The session's state in words (never by colour alone).
fn state(s: &SessionInfo) -> String {
    if !s.live {
        return format!(
            "ended {}: {}",
            s.ended_at.clone().unwrap_or_default(),
            s.end_reason.clone().unwrap_or_default()
        );
    }
    let mut words = vec!["live"];
    if s.moderated {
        words.push("moderated");
    }
    if s.held {
        words.push("held (no moderator watching)");
    }
    if s.input_blocked {
        words.push("input blocked");
    }
    words.join(", ")
}

/// Block or unblock the input of a live session, with the reason the service asks for.
fn lock_form(v: &Viewer, s: &SessionInfo) -> Markup {
    let (verb, label) = if s.input_blocked {
        ("unlock", "Unblock input of ")
    } else {
        ("lock", "Block input of ")
    };
    html! {
        form method="post" action={ "/sessions/" (urlencode(&s.id)) "/" (verb) } class="inline" {
            (csrf_field(v))
            label for={ (verb) "-why-" (s.id) } { "Reason to " (verb) }
            input id={ (verb) "-why-" (s.id) } name="reason" required minlength="3";
            button type="submit" { (label) (s.id) }
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
    // An approver is answered only the moderated sessions of its groups (the service's rule).
    let caption = if v.who.require(Action::ListSessions).is_ok() {
        "Sessions running now, across the instance"
    } else {
        "Moderated sessions of your groups running now: watching one makes you its moderator"
    };
    Ok(layout::page(
        &v,
        "/sessions",
        "Live sessions",
        html! {
            (table(&v, caption, &page.items, true))
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

#[derive(Deserialize)]
pub(crate) struct LockForm {
    #[serde(default)]
    reason: String,
    /// `watch` when sent from the watch page, which it returns to.
    #[serde(default)]
    back: Option<String>,
}

fn after_lock(id: &str, form: &LockForm) -> Response {
    if form.back.as_deref() == Some("watch") {
        Redirect::to(&format!("/sessions/{}/watch", urlencode(id))).into_response()
    } else {
        Redirect::to("/sessions").into_response()
    }
}

pub(crate) async fn lock(
    State(c): State<Console>,
    Path(id): Path<String>,
    ch: Change<LockForm>,
) -> PageResult {
    c.app
        .sessions()
        .lock_session(&ch.viewer.who, &id, &ch.form.reason)
        .await?;
    Ok(after_lock(&id, &ch.form))
}

pub(crate) async fn unlock(
    State(c): State<Console>,
    Path(id): Path<String>,
    ch: Change<LockForm>,
) -> PageResult {
    c.app
        .sessions()
        .unlock_session(&ch.viewer.who, &id, &ch.form.reason)
        .await?;
    Ok(after_lock(&id, &ch.form))
}

/// The watch page: a read-only terminal that `watch.js` feeds from [`watch_events`]. Only a
/// shell: the watch (and its refusal: unknown, ended, not an approver's to watch) is the
/// events', which also say the session's state; an approver moderating opens it by the id.
pub(crate) async fn watch(v: Viewer, Path(id): Path<String>) -> PageResult {
    v.who.require(Action::WatchSessions)?;
    let enc = urlencode(&id);
    let lock = v.who.require(Action::LockSessions).is_ok();
    let kill = v.who.require(Action::KillSessions).is_ok();
    Ok(layout::page_with(
        &v,
        "/sessions",
        &format!("Watching session {id}"),
        &["xterm.js", "watch.js"],
        &["xterm.css"],
        html! {
            p { "What the session's user sees, as it happens. Read only: your keys go nowhere. Your watching is audited." }
            p { "State: " span id="watch-state" { "unknown yet" } }
            p id="watch-status" role="status" aria-live="polite" { "Connecting…" }
            section id="watch-screen" class="terminal" aria-label="The session's terminal, live" data-events={ "/sessions/" (enc) "/watch/events" } {}
            @if lock {
                @for (verb, label) in [("lock", "Block input"), ("unlock", "Unblock input")] {
                    form method="post" action={ "/sessions/" (enc) "/" (verb) } class="inline" {
                        (csrf_field(&v))
                        input type="hidden" name="back" value="watch";
                        label for={ (verb) "-why" } { "Reason to " (verb) }
                        input id={ (verb) "-why" } name="reason" required minlength="3";
                        button type="submit" id={ (verb) "-input" } { (label) }
                    }
                }
            }
            @if kill {
                form method="post" action={ "/sessions/" (enc) "/terminate" } class="inline" {
                    (csrf_field(&v))
                    label for="why-terminate" { "Reason to terminate" }
                    input id="why-terminate" name="reason";
                    button type="submit" id="terminate" { "Terminate" }
                }
            }
            p { a href="/sessions" { "Back to the live sessions" } }
        },
    ))
}

/// The watch itself, as Server-Sent Events (the API's format): `start` (JSON `WatchStart`),
/// `output` (base64 of what the user saw), `missed`, and a last `end`. The watch lasts as long
/// as the page listens; its end (and for a moderator, the session's hold) comes when it stops.
pub(crate) async fn watch_events(
    State(c): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
) -> Result<Response, layout::PageError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use base64::Engine as _;
    use cofre_app::services::live::WatchEvent;
    use futures::StreamExt as _;
    use std::convert::Infallible;
    let watch = c.app.sessions().watch_session(&v.who, &id).await?;
    let start = serde_json::to_string(&watch.start).unwrap_or_default();
    let first = futures::stream::once(async move {
        Ok::<_, Infallible>(Event::default().event("start").data(start))
    });
    let rest = futures::stream::unfold(Some(watch), |w| async move {
        let mut w = w?;
        let event = match w.next().await {
            WatchEvent::Output(data) => Event::default()
                .event("output")
                .data(base64::engine::general_purpose::STANDARD.encode(&data)),
            WatchEvent::Missed(n) => Event::default().event("missed").data(n.to_string()),
            WatchEvent::Ended => {
                return Some((Ok(Event::default().event("end").data("ended")), None));
            }
        };
        Some((Ok::<_, Infallible>(event), Some(w)))
    });
    Ok(Sse::new(first.chain(rest))
        // A comment every few seconds: a page that went away is noticed (and a moderated
        // session held) within that time.
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(2)))
        .into_response())
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
