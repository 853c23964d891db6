//! A session driven by a plain terminal front end (a WebSocket terminal tomorrow): a channel pair,
//! terminal input and resizes in, output bytes and notices out, and a last message that says how
//! it ended. The SSH gateway relays on its own (it passes SSH's channel messages through as they
//! are); this is the relay for a front end that has only a terminal to show.

use super::{Event, FlushSchedule, Session};
use russh::ChannelMsg;
use tokio::sync::mpsc;

/// What the front end sends.
#[derive(Debug)]
pub enum Input {
    /// Keystrokes (or pasted text).
    Data(Vec<u8>),
    Resize {
        cols: u32,
        rows: u32,
    },
    /// The user closed the terminal.
    Close,
}

/// What the front end receives.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    Data(Vec<u8>),
    /// A line from Cofre, not from the target (the shutdown's notice...).
    Notice(String),
    /// The last message: the session is over (recorded and audited before this is sent).
    Ended {
        exit_status: Option<u32>,
        reason: String,
    },
}

/// The terminal the front end shows.
#[derive(Debug, Clone)]
pub struct Pty {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
}

impl Session {
    /// Opens a shell on a terminal at the target and relays it until the target, the front end
    /// or an [`Event::End`] ends it; then ends the session and sends [`Output::Ended`].
    pub async fn run_terminal(
        mut self,
        pty: Pty,
        mut input: mpsc::Receiver<Input>,
        output: mpsc::Sender<Output>,
    ) {
        // A moderated session asks nothing of the target until a moderator watches.
        if self.control.is_held() {
            let _ = output
                .send(Output::Notice(super::MODERATOR_WAIT_NOTICE.to_owned()))
                .await;
            if let Err(reason) = self.wait_for_moderator().await {
                self.end(&reason).await;
                let _ = output
                    .send(Output::Ended {
                        exit_status: None,
                        reason,
                    })
                    .await;
                return;
            }
        }
        let channel = match self.open_shell(&pty).await {
            Ok(c) => c,
            Err(reason) => {
                self.end(&reason).await;
                let _ = output
                    .send(Output::Ended {
                        exit_status: None,
                        reason,
                    })
                    .await;
                return;
            }
        };
        let (mut from_up, to_up) = channel.split();
        let record_input = self.app.config.record_input;
        let rec = self.recorder.clone();
        let control = self.control.clone();
        // Input on a task of its own: a write waiting for the target's window must never keep
        // the output from being read (both sides busy would deadlock).
        let (closed_tx, mut closed) = mpsc::channel::<String>(1);
        let upward = tokio::spawn(async move {
            let why = loop {
                match input.recv().await {
                    Some(Input::Data(data)) => {
                        control.while_held().await;
                        if control.input_blocked() {
                            // Dropped, not queued: what was typed while blocked never runs.
                            continue;
                        }
                        if record_input {
                            if let Err(why) = rec.input(bytes::Bytes::copy_from_slice(&data)).await
                            {
                                break why;
                            }
                        }
                        if to_up.data_bytes(data).await.is_err() {
                            // The target's side is gone; the output side says how it ended.
                            std::future::pending::<()>().await;
                        }
                    }
                    Some(Input::Resize { cols, rows }) => {
                        if let Err(why) = rec.resize(cols, rows).await {
                            break why;
                        }
                        control.resize(cols, rows);
                        let _ = to_up.window_change(cols, rows, 0, 0).await;
                    }
                    Some(Input::Close) | None => break "the client closed the terminal".to_owned(),
                }
            };
            let _ = to_up.eof().await;
            let _ = to_up.close().await;
            let _ = closed_tx.send(why).await;
        });
        let mut flushes = FlushSchedule::default();
        let mut exit_status = None;
        let mut moderators = self.control.moderators();
        let reason = loop {
            // A held session reads nothing from the target (SSH's window keeps it there).
            let held = self.control.is_held();
            tokio::select! {
                _ = moderators.changed(), if held => {}
                msg = from_up.wait(), if !held => match msg {
                    Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                        if let Err(why) = self.recorder.output(data.clone()).await {
                            break why;
                        }
                        self.control.output(&data);
                        if output.send(Output::Data(data.to_vec())).await.is_err() {
                            break "the client closed the terminal".to_owned();
                        }
                    }
                    Some(ChannelMsg::ExitStatus { exit_status: status }) => {
                        exit_status = Some(status);
                        let _ = self.recorder.marker(format!("exit status {status}")).await;
                    }
                    Some(ChannelMsg::Close) | None => {
                        break if exit_status.is_some() {
                            "ended".to_owned()
                        } else {
                            "the target closed the channel without an exit status".to_owned()
                        };
                    }
                    Some(_) => {}
                },
                why = closed.recv() => {
                    break why.unwrap_or_else(|| "the client closed the terminal".to_owned());
                }
                event = self.events.next() => match event {
                    Event::Notice(text) => {
                        let _ = output.send(Output::Notice(text)).await;
                    }
                    Event::End(why) => break why,
                },
                () = flushes.due(&self.recorder) => {
                    if let Err(why) = self.recorder.flush().await {
                        break why;
                    }
                }
            }
        };
        upward.abort();
        self.end(&reason).await;
        let _ = output
            .send(Output::Ended {
                exit_status,
                reason,
            })
            .await;
    }

    async fn open_shell(&self, pty: &Pty) -> Result<russh::Channel<russh::client::Msg>, String> {
        let channel = self
            .connection
            .session_channel()
            .await
            .map_err(|e| e.to_string())?;
        let refused = |e: russh::Error| format!("the target refused the shell request: {e}");
        channel
            .request_pty(false, &pty.term, pty.cols, pty.rows, 0, 0, &[])
            .await
            .map_err(refused)?;
        channel.request_shell(true).await.map_err(refused)?;
        Ok(channel)
    }
}
