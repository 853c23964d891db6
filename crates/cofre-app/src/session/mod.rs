//! The protocol-independent session: authorise → credential → recording → connect → relay → end,
//! with kill and the shutdown's notice. A front end (the SSH gateway today, a WebSocket terminal
//! tomorrow) asks for a [`Session`] with what its user asked for, opens its channel on
//! [`Session::connection`], relays bytes through [`Session::recorder`] while it listens to
//! [`Session::events`], and hands the reason to [`Session::end`]. Everything in between that is
//! particular to one protocol (SSH channel requests, exit-status ordering, SFTP) stays in the front
//! end; everything that is a rule (policy, credential, pinning, recording, audit) is here. A front
//! end with only a terminal to show (a WebSocket terminal) needs no relay of its own:
//! [`Session::run_terminal`] takes a channel pair ([`terminal`]).
//!
//! Watch, lock and moderation are the session's [`Control`]: the front end hands it each chunk
//! of output, asks it before passing input on (blocked input is dropped, a held session passes
//! nothing), and shows its notices to the user as [`Event::Notice`]s.

pub mod control;
pub mod live;
pub mod terminal;

pub use control::{Control, Watching, MODERATOR_WAIT_NOTICE};

pub use cofre_recording::{FlushSchedule, Recorder};

use crate::services::sessions::GatewayLogin;
use crate::services::Sessions;
use crate::services::{App, Principal};
use cofre_connect::{Connection, HostKey, HostKeyPolicy, Login, Secret, Target};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What a live session's user is told when the server begins to stop.
pub const SHUTDOWN_NOTICE: &str = "the server is shutting down";
/// Why the sessions still running when the drain time is over were ended.
pub const SHUTDOWN_REASON: &str = "ended: the server shut down";

/// What a front end's user asked for.
pub struct Request<'a> {
    pub principal: &'a Principal,
    pub login: &'a GatewayLogin,
    /// `shell`, `exec` or `sftp`.
    pub kind: &'a str,
    /// Where the user connected from.
    pub source: &'a str,
    /// The justification, where the policy asks for one.
    pub reason: Option<&'a str>,
    /// The recording's asciicast header.
    pub header: serde_json::Value,
}

/// Why a session could not start, in words for the user.
#[derive(Debug, Clone)]
pub struct Refused(pub String);

/// What the front end's loop hears besides its own traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A line for the user; the session goes on.
    Notice(String),
    /// The session must end now (an admin's kill, a grant over, access taken away, shutdown).
    End(String),
}

pub struct Events {
    kill: watch::Receiver<Option<String>>,
    notice: watch::Receiver<Option<String>>,
    notice_open: bool,
    /// This session's own lines (input blocked and back, moderator joined or left).
    own: tokio::sync::mpsc::UnboundedReceiver<String>,
    own_open: bool,
    /// A notice that was out before this session started listening.
    notice_pending: bool,
}

impl Events {
    fn new(
        kill: watch::Receiver<Option<String>>,
        notice: watch::Receiver<Option<String>>,
        own: tokio::sync::mpsc::UnboundedReceiver<String>,
    ) -> Events {
        let notice_pending = notice.borrow().is_some();
        Events {
            kill,
            notice,
            notice_open: true,
            own,
            own_open: true,
            notice_pending,
        }
    }

    /// The next event. Cancel-safe: a front end may `select!` on it beside its traffic.
    pub async fn next(&mut self) -> Event {
        if std::mem::take(&mut self.notice_pending) {
            if let Some(text) = self.notice.borrow().clone() {
                return Event::Notice(text);
            }
        }
        loop {
            tokio::select! {
                changed = self.kill.changed() => {
                    let why = match changed {
                        Ok(()) => self.kill.borrow().clone().unwrap_or_else(|| "terminated".into()),
                        Err(_) => "terminated".into(),
                    };
                    return Event::End(why);
                }
                changed = self.notice.changed(), if self.notice_open => match changed {
                    Ok(()) => {
                        if let Some(text) = self.notice.borrow().clone() {
                            return Event::Notice(text);
                        }
                    }
                    Err(_) => self.notice_open = false,
                },
                own = self.own.recv(), if self.own_open => match own {
                    Some(text) => return Event::Notice(text),
                    None => self.own_open = false,
                },
            }
        }
    }
}

/// A session that is authorised, audited as started, recorded, and logged in at its target.
pub struct Session {
    app: Arc<App>,
    pub id: String,
    user: String,
    pub connection: Connection,
    pub recorder: Recorder,
    pub events: Events,
    /// Watch, lock and moderation: hand it the output, ask it before passing input on.
    pub control: Arc<Control>,
}

/// The services' pin check as cofre-connect's host-key policy.
struct Pinned {
    app: Arc<App>,
    session: String,
    target: String,
}

impl HostKeyPolicy for Pinned {
    fn check<'a>(
        &'a self,
        key: &'a HostKey,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            self.app
                .sessions()
                .check_host_key(&self.session, &self.target, &key.fingerprint)
                .await
                .map_err(|e| e.message)
        })
    }
}

impl Session {
    /// Checks policy, opens the credential, starts the recording and audits the start (nothing
    /// reaches the target before that has committed), then connects and logs in. A refusal after
    /// the start is recorded and audited as the session's end.
    pub async fn start(app: &Arc<App>, req: Request<'_>) -> Result<Session, Refused> {
        if app.live.is_draining() {
            return Err(Refused(SHUTDOWN_NOTICE.to_owned()));
        }
        let start = app
            .sessions()
            .start_session(
                req.principal,
                req.login,
                req.kind,
                req.source,
                req.reason,
                req.header,
            )
            .await
            .map_err(|e| Refused(e.message))?;
        let user = req.principal.username().to_owned();
        let notice = app.live.notices();
        let target = Target {
            name: req.login.target.clone(),
            host: start.host,
            port: start.port,
        };
        let login = Login {
            account: start.account,
            secret: if start.secret_kind == "private_key" {
                Secret::PrivateKey(start.secret)
            } else {
                Secret::Password(start.secret)
            },
        };
        let policy = Arc::new(Pinned {
            app: app.clone(),
            session: start.id.clone(),
            target: target.name.clone(),
        });
        let recording = start.recording;
        let connection = match Connection::open(&target, &login, policy).await {
            Ok(c) => c,
            Err(e) => {
                let message = e.to_string();
                let marker = format!("refused: {message}");
                let ended = tokio::task::spawn_blocking(move || recording.end(&marker)).await;
                let summary = match ended {
                    Ok(Ok(summary)) => Some(summary),
                    _ => {
                        tracing::error!(session = %start.id, "cannot write the refusal to the recording");
                        None
                    }
                };
                end_audit(app, &start.id, &user, &message, 0, summary.as_ref()).await;
                return Err(Refused(message));
            }
        };
        drop(login);
        let recorder = Recorder::start(recording);
        Ok(Session {
            app: app.clone(),
            id: start.id,
            user,
            connection,
            recorder,
            events: Events::new(start.kill, notice, start.notices),
            control: start.control,
        })
    }

    /// For a moderated session with no moderator yet: waits until one watches, for
    /// `[server] moderator_wait_seconds` at most (the front end has told the user
    /// [`MODERATOR_WAIT_NOTICE`]). Nothing has been asked of the target yet. An `Err` is why the
    /// session cannot go on (no moderator in time, or it was ended meanwhile); the front end
    /// ends the session with it.
    pub async fn wait_for_moderator(&mut self) -> Result<(), String> {
        if !self.control.is_held() {
            return Ok(());
        }
        let wait = self.app.config.server.moderator_wait_seconds;
        let control = self.control.clone();
        let deadline = tokio::time::sleep(Duration::from_secs(wait));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                // First, so the moderator's arrival notice stays for the front end's loop.
                biased;
                () = control.while_held() => return Ok(()),
                () = &mut deadline => {
                    return Err(format!("refused: no moderator watched within {wait} seconds"));
                }
                event = self.events.next() => match event {
                    Event::End(why) => return Err(why),
                    // The moderator's arrival is said by whoever waited; others are dropped
                    // until the session runs.
                    Event::Notice(_) => {}
                },
            }
        }
    }

    /// Ends the session: the recording's last event says why (then it is synced to disk), the
    /// target connection closes, and `session.end` is audited with the bytes recorded and the
    /// recording's frame count and final hash (which `recording verify` checks it against).
    pub async fn end(self, reason: &str) {
        let summary = match self.recorder.end(reason).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(session = %self.id, error = %e, "the recording's end cannot be written");
                None
            }
        };
        let bytes = self.recorder.output_bytes();
        self.connection.disconnect("session ended").await;
        end_audit(
            &self.app,
            &self.id,
            &self.user,
            reason,
            bytes,
            summary.as_ref(),
        )
        .await;
    }
}

async fn end_audit(
    app: &App,
    id: &str,
    user: &str,
    reason: &str,
    bytes: u64,
    recording: Option<&cofre_recording::Summary>,
) {
    if let Err(e) = app
        .sessions()
        .end_session(id, user, reason, bytes, recording)
        .await
    {
        tracing::error!(session = %id, error = %e, "cannot record the end of a session");
    }
}

impl Sessions<'_> {
    /// The shutdown's drain: no new session starts, every live one is told [`SHUTDOWN_NOTICE`],
    /// and those still running after `wait` are ended (each flushes its recording and audits its
    /// end, as for a kill). Returns how many had to be ended.
    pub async fn drain_sessions(&self, wait: Duration) -> usize {
        self.live.start_draining(&format!(
            "{SHUTDOWN_NOTICE}; this session ends in {} seconds at the latest",
            wait.as_secs()
        ));
        if self.live.wait_empty(wait).await {
            return 0;
        }
        let ended = self.live.kill_where(|_| true, SHUTDOWN_REASON);
        tracing::info!(
            sessions = ended.len(),
            "ending the sessions still running at shutdown"
        );
        // A session's end closes its target connection and commits its audit entry; a target
        // that does not answer must not keep the server from stopping.
        if !self.live.wait_empty(END_WAIT).await {
            tracing::warn!(
                sessions = self.live.count(),
                "sessions did not end in time; the next start closes them"
            );
        }
        ended.len()
    }
}

/// How long ended sessions get to write their last line and audit entry at shutdown.
const END_WAIT: Duration = Duration::from_secs(15);
