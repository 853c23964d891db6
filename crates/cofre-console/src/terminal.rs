//! The web terminal: xterm.js in the page, a WebSocket to here, and the session layer's
//! `Session::run_terminal` behind it, so the policy check, the credential injection, the
//! recording, the audit and an admin's terminate are exactly the SSH gateway's. The session's
//! kind is [`crate::WEB_SHELL`].
//!
//! Frames: binary from the browser is keystrokes, text is `{"type":"resize","cols":C,"rows":R}`;
//! binary to the browser is terminal output, text is `{"type":"notice","text":..}` or, last,
//! `{"type":"ended","reason":..,"exit_status":..}`.

use crate::auth::{same_origin, Source, Viewer};
use crate::layout::{self, PageError, PageResult};
use crate::pages::urlencode;
use crate::{Console, WEB_SHELL};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use cofre_app::session::terminal::{Input, Output, Pty};
use cofre_app::session::{Request, Session};
use cofre_core::names::GatewayLogin;
use cofre_core::policy::Outcome;
use cofre_core::role::Action;
use maud::html;
use serde::Deserialize;
use tokio::sync::mpsc;

pub(crate) async fn page(
    State(c): State<Console>,
    v: Viewer,
    Path((target, account)): Path<(String, String)>,
) -> PageResult {
    v.who.require(Action::UseCredentials)?;
    let t = c.app.vault().get_target(&v.who, &target).await?;
    let how = c.app.sessions().decide_session(&v.who, &t.name).await?;
    let ws = format!(
        "/terminal/{}/{}/ws",
        urlencode(&t.name),
        urlencode(&account)
    );
    Ok(layout::page_with(
        &v,
        "/targets",
        &format!("Terminal: {account}@{}", t.name),
        &["xterm.js", "addon-fit.js", "terminal.js"],
        &["xterm.css"],
        html! {
            p { "A shell on " strong { (t.name) } " as " strong { (account) } ", through Cofre: the session is recorded and an admin can end it." }
            form id="connect" data-ws=(ws) {
                @if matches!(how, Some(Outcome::Justify)) {
                    label for="reason" { "Reason (your policy asks for one)" }
                    input id="reason" name="reason" required;
                }
                button type="submit" { "Connect" }
            }
            p id="term-status" role="status" aria-live="polite" { "Not connected." }
            div id="terminal" class="terminal" aria-label="Terminal" {}
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct Open {
    #[serde(default)]
    cols: Option<u32>,
    #[serde(default)]
    rows: Option<u32>,
    #[serde(default)]
    reason: Option<String>,
}

pub(crate) async fn socket(
    State(c): State<Console>,
    v: Viewer,
    Source(src): Source,
    headers: HeaderMap,
    Path((target, account)): Path<(String, String)>,
    Query(open): Query<Open>,
    ws: WebSocketUpgrade,
) -> Response {
    // A WebSocket is not bound by the same-origin policy: a page elsewhere could open one with
    // the user's cookie (SameSite=Strict stops that in current browsers; this, in any).
    if !same_origin(&headers) {
        return PageError::csrf().into_response();
    }
    if let Err(e) = v.who.require(Action::UseCredentials) {
        return PageError::from(e).into_response();
    }
    let app = c.app.clone();
    ws.on_upgrade(move |socket| async move {
        run(app, v.who, WEB_SHELL, src, target, account, open, socket).await;
    })
}

fn text(v: serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

/// Drives one web-terminal session for `who` over `socket`: the console's, and the external
/// listener's for invitees (kind `external`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    app: std::sync::Arc<cofre_app::services::App>,
    who: cofre_app::services::Principal,
    kind: &str,
    src: String,
    target: String,
    account: String,
    open: Open,
    mut socket: WebSocket,
) {
    let cols = open.cols.unwrap_or(80).clamp(10, 500);
    let rows = open.rows.unwrap_or(24).clamp(5, 300);
    let login = GatewayLogin {
        user: who.username().to_owned(),
        account: account.clone(),
        target: target.clone(),
    };
    let header = serde_json::json!({
        "version": 2, "width": cols, "height": rows, "timestamp": app.now().unix_timestamp(),
        "title": format!("{}:{}@{}", login.user, account, target),
        "env": { "TERM": "xterm-256color", "SHELL": null },
    });
    let reason = open
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    let request = Request {
        principal: &who,
        login: &login,
        kind,
        source: &src,
        reason,
        header,
    };
    let session = match Session::start(&app, request).await {
        Ok(s) => s,
        Err(refused) => {
            let _ = socket
                .send(text(
                    serde_json::json!({"type": "ended", "reason": refused.0, "exit_status": null}),
                ))
                .await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    };
    let _ = socket
        .send(text(
            serde_json::json!({"type": "started", "session": session.id}),
        ))
        .await;
    let (to_session, input) = mpsc::channel::<Input>(64);
    let (output, mut from_session) = mpsc::channel::<Output>(64);
    let pty = Pty {
        term: "xterm-256color".into(),
        cols,
        rows,
    };
    let relay = tokio::spawn(session.run_terminal(pty, input, output));
    loop {
        tokio::select! {
            out = from_session.recv() => match out {
                Some(Output::Data(d)) => {
                    if socket.send(Message::Binary(d.into())).await.is_err() {
                        let _ = to_session.send(Input::Close).await;
                    }
                }
                Some(Output::Notice(t)) => {
                    let _ = socket.send(text(serde_json::json!({"type": "notice", "text": t}))).await;
                }
                Some(Output::Ended { exit_status, reason }) => {
                    let _ = socket
                        .send(text(serde_json::json!({"type": "ended", "reason": reason, "exit_status": exit_status})))
                        .await;
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
                None => break,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if to_session.send(Input::Data(b.to_vec())).await.is_err() { break; }
                }
                Some(Ok(Message::Text(t))) => {
                    if let Some((cols, rows)) = resize(t.as_str()) {
                        let _ = to_session.send(Input::Resize { cols, rows }).await;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    let _ = to_session.send(Input::Close).await;
                    // The relay ends the session, records and audits its end; wait for it.
                    while let Some(o) = from_session.recv().await {
                        if matches!(o, Output::Ended { .. }) { break; }
                    }
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = relay.await;
}

fn resize(t: &str) -> Option<(u32, u32)> {
    let v: serde_json::Value = serde_json::from_str(t).ok()?;
    if v.get("type")?.as_str()? != "resize" {
        return None;
    }
    let cols = u32::try_from(v.get("cols")?.as_u64()?).ok()?.clamp(10, 500);
    let rows = u32::try_from(v.get("rows")?.as_u64()?).ok()?.clamp(5, 300);
    Some((cols, rows))
}
