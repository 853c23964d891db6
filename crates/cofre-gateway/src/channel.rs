//! One session channel, from the first request to the end: collect pty and environment, start the
//! session through cofre-app's session layer (policy, credential, recording, the target's
//! connection), then relay and record until either side ends, the session is ended from outside
//! (kill, grant over, shutdown), or the recording cannot be written (then the session ends: it
//! never runs unrecorded). What is SSH's own stays here: the channel requests, and the order of
//! exit status, EOF and CLOSE that clients are strict about.

use crate::sftp::SftpObserver;
use cofre_app::services::sessions::GatewayLogin;
use cofre_app::services::{App, Principal};
use cofre_app::session::{
    self, Control, Event, FlushSchedule, Recorder, Session, MODERATOR_WAIT_NOTICE,
};
use russh::server::Msg;
use russh::{Channel, ChannelMsg, Pty};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

pub(crate) struct ChannelSetup {
    pub app: Arc<App>,
    pub handle: russh::server::Handle,
    pub source: String,
    pub login: Option<GatewayLogin>,
    pub principal: Option<Principal>,
    pub refusal: Option<String>,
    pub reason: Option<String>,
}

/// Environment variables a client may pass to the target; the rest could change how the target's
/// shell behaves in ways the recording would not show.
pub(crate) fn env_allowed(name: &str) -> bool {
    matches!(name, "LANG" | "TZ" | "TERM" | "COLORTERM") || name.starts_with("LC_")
}

struct PtyRequest {
    term: String,
    cols: u32,
    rows: u32,
    pix_width: u32,
    pix_height: u32,
    modes: Vec<(Pty, u32)>,
}

enum Start {
    Shell,
    Exec(Vec<u8>),
    Sftp,
}

type ToClient = russh::ChannelWriteHalf<Msg>;

async fn tell(to_client: &ToClient, text: &str) {
    let mut line = text.replace('\n', "\r\n");
    line.push_str("\r\n");
    let _ = to_client.extended_data_bytes(1, line.into_bytes()).await;
}

async fn finish(to_client: &ToClient, status: u32) {
    let _ = to_client.exit_status(status).await;
    let _ = to_client.eof().await;
    let _ = to_client.close().await;
}

pub(crate) async fn run(setup: ChannelSetup, channel: Channel<Msg>) {
    let id = channel.id();
    let (mut from_client, to_client) = channel.split();
    let mut pty: Option<PtyRequest> = None;
    let mut env: Vec<(String, String)> = Vec::new();
    let start = loop {
        match from_client.wait().await {
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            }) => {
                pty = Some(PtyRequest {
                    term,
                    cols: col_width,
                    rows: row_height,
                    pix_width,
                    pix_height,
                    modes: terminal_modes,
                })
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) if env_allowed(&variable_name) => env.push((variable_name, variable_value)),
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            }) => {
                if let Some(p) = pty.as_mut() {
                    p.cols = col_width;
                    p.rows = row_height;
                }
            }
            Some(ChannelMsg::RequestShell { .. }) => break Start::Shell,
            Some(ChannelMsg::Exec { command, .. }) => break Start::Exec(command),
            Some(ChannelMsg::RequestSubsystem { name, .. }) if name == "sftp" => break Start::Sftp,
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    };
    if let Some(message) = &setup.refusal {
        tell(&to_client, &format!("cofre: {message}")).await;
        finish(&to_client, 255).await;
        return;
    }
    let (Some(principal), Some(login)) = (&setup.principal, &setup.login) else {
        tell(&to_client, "cofre: not authenticated").await;
        finish(&to_client, 255).await;
        return;
    };
    let app = &setup.app;
    let kind = match start {
        Start::Shell => "shell",
        Start::Exec(_) => "exec",
        Start::Sftp => "sftp",
    };
    // RFC 4254 6.2: zero dimensions (what a client without a terminal sends) are ignored.
    let nonzero = |n: u32, default: u32| if n == 0 { default } else { n };
    let (cols, rows) = pty
        .as_ref()
        .map_or((80, 24), |p| (nonzero(p.cols, 80), nonzero(p.rows, 24)));
    let header = serde_json::json!({
        "version": 2,
        "width": cols,
        "height": rows,
        "timestamp": app.now().unix_timestamp(),
        "title": format!("{}:{}@{}", login.user, login.account, login.target),
        "env": { "TERM": pty.as_ref().map(|p| p.term.clone()), "SHELL": null },
    });
    let request = session::Request {
        principal,
        login,
        kind,
        source: &setup.source,
        reason: setup.reason.as_deref(),
        header,
    };
    let mut session = match Session::start(app, request).await {
        Ok(s) => s,
        Err(session::Refused(message)) => {
            tell(&to_client, &format!("cofre: {message}")).await;
            finish(&to_client, 1).await;
            return;
        }
    };
    // A failure between the start and the relay: the user is told, the session ends with it.
    let fail = |session: Session, message: String| {
        let to_client = &to_client;
        async move {
            tell(to_client, &format!("cofre: {message}")).await;
            session.end(&message).await;
            finish(to_client, 1).await;
        }
    };
    // A moderated session asks nothing of the target until a moderator watches.
    if session.control.is_held() {
        tell(&to_client, &format!("cofre: {MODERATOR_WAIT_NOTICE}")).await;
        if let Err(why) = session.wait_for_moderator().await {
            return fail(session, why).await;
        }
    }
    let up = match session.connection.session_channel().await {
        Ok(c) => c,
        Err(e) => return fail(session, e.to_string()).await,
    };
    if let Some(p) = &pty {
        let _ = up
            .request_pty(
                false,
                &p.term,
                p.cols,
                p.rows,
                p.pix_width,
                p.pix_height,
                &p.modes,
            )
            .await;
    }
    for (name, value) in &env {
        let _ = up.set_env(false, name.clone(), value.clone()).await;
    }
    let started = match &start {
        Start::Shell => up.request_shell(true).await,
        Start::Exec(command) => {
            let recorded = session
                .recorder
                .exec(bytes::Bytes::copy_from_slice(command))
                .await;
            if let Err(why) = recorded {
                return fail(session, why).await;
            }
            up.exec(true, command.clone()).await
        }
        Start::Sftp => up.request_subsystem(true, "sftp").await,
    };
    if let Err(e) = started {
        let message = format!("the target refused the {kind} request: {e}");
        return fail(session, message).await;
    }
    let (from_up, to_up) = up.split();
    let relay = Relay {
        rec: session.recorder.clone(),
        control: session.control.clone(),
        sftp: Arc::new(Mutex::new(
            matches!(start, Start::Sftp).then(SftpObserver::default),
        )),
        to_client: Arc::new(to_client),
        to_up: Arc::new(to_up),
        record_input: app.config.record_input,
        flags: Arc::new(Flags::default()),
        client_gone: Arc::new(tokio::sync::watch::Sender::new(false)),
    };
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(4);
    // One task per direction: a send that waits for the peer's window must never keep the other
    // direction from being read (that deadlocks as soon as both sides are busy).
    let upward = tokio::spawn(relay.clone().client_to_target(from_client, done_tx.clone()));
    let downward = tokio::spawn(relay.clone().target_to_client(
        from_up,
        setup.handle.clone(),
        id,
        kind,
        login.target.clone(),
        done_tx,
    ));
    let mut flushes = FlushSchedule::default();
    // Set once the client has closed its side: the target gets the same close, and the session
    // waits this long for the target to end the command and report its exit status.
    let mut closing: Option<tokio::time::Instant> = None;
    let reason = loop {
        let grace = async {
            match closing {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = done_rx.recv() => match done {
                Some(Done::ClientClosed) => {
                    // EOF, not CLOSE: russh forgets a channel once it has sent CLOSE, so the
                    // target's exit status would never be read. CLOSE follows at the end.
                    relay.client_gone.send_replace(true);
                    relay.eof_to_target().await;
                    closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                }
                Some(Done::TargetClosed) | None => break relay.end_reason(closing.is_some()),
                Some(Done::Failed(why)) => break why,
            },
            () = grace => {
                break "the client closed the channel before the command ended (no exit status)"
                    .to_owned();
            }
            event = session.events.next() => match event {
                Event::Notice(text) => relay.tell(&format!("cofre: {text}")).await,
                Event::End(why) => {
                    relay.tell(&format!("\n*** cofre: session {why} ***")).await;
                    break why;
                }
            },
            () = flushes.due(&relay.rec) => {
                if let Err(why) = relay.rec.flush().await {
                    relay.tell(RECORDING_FAILED).await;
                    break why;
                }
            }
        }
    };
    upward.abort();
    // Whatever ended the session, the target's side stops here too: a killed session, or one that
    // can no longer be recorded, must not go on streaming output (nor hang on an idle target).
    downward.abort();
    let _ = downward.await;
    let unanswered = relay
        .lock_sftp()
        .as_mut()
        .map(SftpObserver::finish)
        .unwrap_or_default();
    let _ = relay.record_all(unanswered).await;
    relay.close_upstream().await;
    // The recording's last line, the target's disconnect and the `session.end` entry.
    session.end(&reason).await;
    // A session the gateway ended (kill, grant over, recording failed) reports a failure; one the
    // target ended without a status reports none, as a direct connection would: a made-up 0
    // would make a failed command look like a success.
    if !relay.flags.exit_sent.load(Ordering::Relaxed)
        && !relay.flags.target_closed.load(Ordering::Relaxed)
    {
        let _ = relay.to_client.exit_status(1).await;
    }
    relay.eof_to_client().await;
    let _ = relay.to_client.close().await;
}

/// How long a session waits, after the client closed its channel, for the target to end the
/// command (the target sees EOF, so a command that reads its input ends at once).
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Why one direction of the relay stopped.
enum Done {
    /// The client closed its channel (or the connection went away).
    ClientClosed,
    /// The target closed its channel: the normal end.
    TargetClosed,
    /// The session cannot go on (the recording failed, the target refused the request...).
    Failed(String),
}

/// What the two directions tell each other, so that each message goes once and in order.
#[derive(Default)]
struct Flags {
    /// The target's exit status or exit signal has reached the client.
    exit_sent: AtomicBool,
    /// The target sent EOF; it is passed on only after the exit status (see `target_to_client`).
    eof_pending: AtomicBool,
    /// EOF has been sent to the client (exactly once per channel, RFC 4254 5.3).
    eof_to_client: AtomicBool,
    /// EOF, and CLOSE, have been sent to the target (once each).
    eof_to_target: AtomicBool,
    close_to_target: AtomicBool,
    /// The target closed its channel.
    target_closed: AtomicBool,
}

const RECORDING_FAILED: &str =
    "\n*** cofre: the session recording can no longer be written, so the session is ended ***";

/// What both directions of a running session share.
#[derive(Clone)]
struct Relay {
    rec: Recorder,
    /// Watchers get the output; blocked input is dropped; a held session passes nothing.
    control: Arc<Control>,
    sftp: Arc<Mutex<Option<SftpObserver>>>,
    to_client: Arc<ToClient>,
    to_up: Arc<russh::ChannelWriteHalf<russh::client::Msg>>,
    record_input: bool,
    flags: Arc<Flags>,
    /// Set when the client has closed its channel: output for it is recorded but no longer sent
    /// (russh would wait forever for the window of a channel that is gone).
    client_gone: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Relay {
    fn lock_sftp(&self) -> std::sync::MutexGuard<'_, Option<SftpObserver>> {
        self.sftp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn output(&self, data: &bytes::Bytes) -> Result<(), String> {
        self.rec.output(data.clone()).await?;
        self.control.output(data);
        Ok(())
    }

    async fn record_all(&self, events: Vec<String>) -> Result<(), String> {
        for event in events {
            self.rec.sftp(event).await?;
        }
        Ok(())
    }

    /// A message from the gateway on the client's stderr; nothing may follow the client's EOF.
    async fn tell(&self, text: &str) {
        if !self.flags.eof_to_client.load(Ordering::Relaxed) {
            self.to_client(tell(&self.to_client, text)).await;
        }
    }

    async fn eof_to_client(&self) {
        if !self.flags.eof_to_client.swap(true, Ordering::Relaxed) {
            let _ = self.to_client.eof().await;
        }
    }

    async fn eof_to_target(&self) {
        if !self.flags.eof_to_target.swap(true, Ordering::Relaxed) {
            let _ = self.to_up.eof().await;
        }
    }

    /// Sends to the client unless (or until) it has closed its channel.
    async fn to_client<F: std::future::Future>(&self, send: F) {
        let mut gone = self.client_gone.subscribe();
        if *gone.borrow() {
            return;
        }
        tokio::select! {
            _ = send => {}
            _ = gone.wait_for(|g| *g) => {}
        }
    }

    /// The session is over: the target gets EOF and CLOSE (once each).
    async fn close_upstream(&self) {
        self.eof_to_target().await;
        if !self.flags.close_to_target.swap(true, Ordering::Relaxed) {
            let _ = self.to_up.close().await;
        }
    }

    /// Why a session the target closed ended, for the audit trail and the recording's last line.
    fn end_reason(&self, client_closed: bool) -> String {
        let exit = self.flags.exit_sent.load(Ordering::Relaxed);
        match (client_closed, exit) {
            (false, true) => "ended".to_owned(),
            (false, false) => "the target closed the channel without an exit status".to_owned(),
            (true, true) => "the client closed the channel".to_owned(),
            (true, false) => {
                "the client closed the channel before the command ended (no exit status)".to_owned()
            }
        }
    }

    async fn client_to_target(
        self,
        mut from_client: russh::ChannelReadHalf,
        done: mpsc::Sender<Done>,
    ) {
        let why = loop {
            match from_client.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    self.control.while_held().await;
                    if self.control.input_blocked() {
                        if self.lock_sftp().is_none() {
                            // Dropped, not queued: what was typed while blocked never runs.
                            continue;
                        }
                        // SFTP packets cannot be dropped without breaking the stream: held.
                        self.control.while_blocked().await;
                    }
                    let events = self.lock_sftp().as_mut().map(|s| s.client_data(&data));
                    let recorded = match events {
                        Some(events) => self.record_all(events).await,
                        None if self.record_input => self.rec.input(data.clone()).await,
                        None => Ok(()),
                    };
                    if let Err(why) = recorded {
                        self.tell(RECORDING_FAILED).await;
                        break Done::Failed(why);
                    }
                    if self.to_up.data_bytes(data).await.is_err() {
                        // The target's side is gone; its task reports how it ended.
                        std::future::pending::<()>().await;
                    }
                }
                Some(ChannelMsg::Eof) => self.eof_to_target().await,
                Some(ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                }) => {
                    if let Err(why) = self.rec.resize(col_width, row_height).await {
                        self.tell(RECORDING_FAILED).await;
                        break Done::Failed(why);
                    }
                    self.control.resize(col_width, row_height);
                    let _ = self
                        .to_up
                        .window_change(col_width, row_height, pix_width, pix_height)
                        .await;
                }
                Some(ChannelMsg::Signal { signal }) if !self.control.input_blocked() => {
                    let _ = self.to_up.signal(signal).await;
                }
                Some(ChannelMsg::Close) | None => break Done::ClientClosed,
                Some(_) => {}
            }
        };
        let _ = done.send(why).await;
    }

    async fn target_to_client(
        self,
        mut from_up: russh::ChannelReadHalf,
        handle: russh::server::Handle,
        id: russh::ChannelId,
        kind: &'static str,
        target: String,
        done: mpsc::Sender<Done>,
    ) {
        let why = loop {
            let msg = from_up.wait().await;
            if matches!(
                msg,
                Some(ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. })
            ) {
                // Held here, unread behind it: SSH's window keeps the rest at the target.
                self.control.while_held().await;
            }
            match msg {
                Some(ChannelMsg::Data { data }) => {
                    let sftp = self.lock_sftp().as_mut().map(|s| s.server_data(&data));
                    let recorded = match sftp {
                        Some(events) => self.record_all(events).await,
                        None => self.output(&data).await,
                    };
                    if let Err(why) = recorded {
                        self.tell(RECORDING_FAILED).await;
                        break Done::Failed(why);
                    }
                    self.to_client(self.to_client.data_bytes(data)).await;
                }
                Some(ChannelMsg::ExtendedData { data, ext }) => {
                    let sftp = self.lock_sftp().is_some();
                    if !sftp {
                        if let Err(why) = self.output(&data).await {
                            self.tell(RECORDING_FAILED).await;
                            break Done::Failed(why);
                        }
                    }
                    self.to_client(self.to_client.extended_data_bytes(ext, data))
                        .await;
                }
                Some(ChannelMsg::ExitStatus {
                    exit_status: status,
                }) => {
                    let _ = self.rec.marker(format!("exit status {status}")).await;
                    let _ = self.to_client.exit_status(status).await;
                    self.exit_passed().await;
                }
                Some(ChannelMsg::ExitSignal {
                    signal_name,
                    core_dumped,
                    error_message,
                    lang_tag,
                }) => {
                    let _ = self
                        .rec
                        .marker(format!("exit signal {signal_name:?}"))
                        .await;
                    let _ = handle
                        .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                        .await;
                    self.exit_passed().await;
                }
                // Held until the exit status has gone: a client that closes its channel as soon
                // as both sides sent EOF (PuTTY, OpenSSH multiplexing) would otherwise close it
                // before the status arrives, and report a failed command as a success.
                Some(ChannelMsg::Eof) => {
                    if self.flags.exit_sent.load(Ordering::Relaxed) {
                        self.eof_to_client().await;
                    } else {
                        self.flags.eof_pending.store(true, Ordering::Relaxed);
                    }
                }
                Some(ChannelMsg::Failure) => {
                    self.tell(&format!("cofre: {target} refused the {kind} request"))
                        .await;
                    break Done::Failed(format!("the target refused the {kind} request"));
                }
                Some(ChannelMsg::Close) | None => {
                    self.flags.target_closed.store(true, Ordering::Relaxed);
                    break Done::TargetClosed;
                }
                Some(_) => {}
            }
        };
        let _ = done.send(why).await;
    }

    /// After the exit status or signal went to the client: the EOF held back may follow.
    async fn exit_passed(&self) {
        self.flags.exit_sent.store(true, Ordering::Relaxed);
        if self.flags.eof_pending.load(Ordering::Relaxed) {
            self.eof_to_client().await;
        }
    }
}
