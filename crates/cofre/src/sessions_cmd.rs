//! `cofre session`, `cofre recording` and `cofre user key`: the SSH gateway's side of the CLI.

use crate::client::path_segment;
use crate::commands::Ctx;
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use cofre_proto::*;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand)]
pub(crate) enum KeyCmd {
    /// Register an SSH public key for gateway logins (your own, or anyone's as admin).
    Add {
        user: String,
        /// The public key file (e.g. ~/.ssh/id_ed25519.pub), or `-` for stdin.
        file: PathBuf,
    },
    /// A user's registered keys (fingerprint, when added).
    List { user: String },
    /// Remove a key (your own, or anyone's as admin): the gateway refuses it at once, and live
    /// sessions opened with it end.
    Remove {
        user: String,
        /// Its fingerprint as `cofre user key list` prints it, e.g.
        /// SHA256:ZIFUG+rj5JZ9X0CQ0GcQtN8QT5IJNGA4YIODRw2A3uU.
        #[arg(value_name = "FINGERPRINT")]
        key: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum SessionCmd {
    /// Gateway sessions, newest first: who, where, since when, from which address.
    List {
        /// Only sessions still running. An approver lists only these: the live moderated
        /// sessions of its groups, which it may watch as their moderator.
        #[arg(long)]
        live: bool,
    },
    /// End a live session at once; the user is told why.
    Kill {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Watch a live session in this terminal: what its user sees, as it happens, until the
    /// session ends or Ctrl-C. Audited. An admin's watch (or an approver's, of a moderated
    /// session of its groups) is the session's moderator.
    Watch { id: String },
    /// Block a live session's input: the user is told why; what they type is dropped until
    /// `session unlock`.
    Lock {
        id: String,
        /// Shown to the user and recorded.
        #[arg(long)]
        reason: String,
    },
    /// Give a blocked session its input back; the user is told.
    Unlock {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum RecordingCmd {
    /// Write a session's recording: asciicast v2 (`asciinema play FILE` plays it), or with
    /// `--format raw` exactly the bytes the user's terminal received (`--stream input`: exactly
    /// what the user sent). Streamed: the recording's length does not matter.
    Export {
        id: String,
        /// Output file (default: stdout). Written whole or not at all.
        #[arg(short = 'o', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        /// `asciicast`: text for players (bytes that are not UTF-8 shown as U+FFFD); `raw`: the
        /// exact bytes of one stream.
        #[arg(long, value_enum, default_value_t = FormatArg::Asciicast)]
        format: FormatArg,
        /// With `--format raw`: `output` (what the user saw) or `input` (what the user typed).
        #[arg(long, value_enum)]
        stream: Option<StreamArg>,
    },
    /// Check that a recording is whole, in order, untruncated and as the audit trail says it
    /// ended; otherwise say at which frame it is not. Exit status 0 when it is (or when the
    /// gateway's restart ended it, which leaves a torn last frame), 1 when it was tampered with.
    Verify { id: String },
    /// Play a recording in this terminal.
    Play {
        id: String,
        /// Playback speed factor.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Start this many seconds in (what came before is shown at once).
        #[arg(long, default_value_t = 0.0)]
        seek: f64,
        /// Longest pause between two events, in seconds.
        #[arg(long, default_value_t = 2.0)]
        max_wait: f64,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum FormatArg {
    Asciicast,
    Raw,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum StreamArg {
    Output,
    Input,
}

pub(crate) async fn key(ctx: &Ctx, cmd: KeyCmd) -> Result<ExitCode> {
    match cmd {
        KeyCmd::Add { user, file } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?
            };
            let line = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .ok_or_else(|| anyhow!("{}: no public key in the file", file.display()))?;
            let k: SshKeyInfo = match ctx
                .propose(
                    reqwest::Method::POST,
                    &format!("/api/v1/users/{}/keys", path_segment(&user)),
                    Some(&AddSshKeyRequest {
                        public_key: line.to_owned(),
                    }),
                )
                .await?
            {
                crate::commands::Maybe::Done(k) => k,
                crate::commands::Maybe::Held(h) => {
                    ctx.print_held(&h)?;
                    return Ok(ExitCode::SUCCESS);
                }
            };
            ctx.print(&k, |k| outln!("added key {} for {user}", k.fingerprint))?;
        }
        KeyCmd::Remove { user, key } => {
            return crate::offboarding_cmd::key_remove(ctx, &user, key).await
        }
        KeyCmd::List { user } => {
            let keys: Vec<SshKeyInfo> = ctx
                .all(&format!("/api/v1/users/{}/keys", path_segment(&user)))
                .await?;
            ctx.print_list(&keys, "keys", |ks| {
                for k in ks {
                    outln!("{}\t{}\t{}", k.fingerprint, k.created_at, k.public_key);
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn session(ctx: &Ctx, cmd: SessionCmd) -> Result<ExitCode> {
    match cmd {
        SessionCmd::List { live } => {
            let path = if live {
                "/api/v1/sessions?live=true"
            } else {
                "/api/v1/sessions"
            };
            let sessions: Vec<SessionInfo> = ctx.all(path).await?;
            ctx.print_list(&sessions, "sessions", |ss| {
                for s in ss {
                    outln!(
                        "{}\t{}:{}@{}\t{}\tfrom {}\tsince {}\t{}",
                        s.id,
                        s.username,
                        s.account,
                        s.target,
                        s.kind,
                        s.source,
                        s.started_at,
                        if s.live {
                            let mut state = "live".to_owned();
                            for (on, what) in [
                                (s.input_blocked, "input blocked"),
                                (s.moderated, "moderated"),
                                (s.held, "held: no moderator watching"),
                            ] {
                                if on {
                                    state.push('\t');
                                    state.push_str(what);
                                }
                            }
                            state
                        } else {
                            format!(
                                "ended {} ({})",
                                s.ended_at.as_deref().unwrap_or("?"),
                                s.end_reason.as_deref().unwrap_or("")
                            )
                        }
                    );
                }
            })?;
        }
        SessionCmd::Kill { id, reason } => {
            let _: OkResponse = ctx
                .client
                .post(
                    &format!("/api/v1/sessions/{}/kill", path_segment(&id)),
                    &KillSessionRequest { reason },
                )
                .await?;
            outln!("session {id} terminated");
        }
        SessionCmd::Watch { id } => return watch(ctx, &id).await,
        SessionCmd::Lock { id, reason } => {
            let _: OkResponse = ctx
                .client
                .post(
                    &format!("/api/v1/sessions/{}/lock", path_segment(&id)),
                    &LockSessionRequest { reason },
                )
                .await?;
            outln!("session {id}: input blocked");
        }
        SessionCmd::Unlock { id, reason } => {
            let _: OkResponse = ctx
                .client
                .post(
                    &format!("/api/v1/sessions/{}/unlock", path_segment(&id)),
                    &LockSessionRequest { reason },
                )
                .await?;
            outln!("session {id}: input unblocked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `session watch`: the watch's Server-Sent Events, the output's bytes written to stdout as
/// they come, the rest said on stderr.
async fn watch(ctx: &Ctx, id: &str) -> Result<ExitCode> {
    let path = format!("/api/v1/sessions/{}/watch", path_segment(id));
    let mut events = SseParser::default();
    let mut failure: Option<anyhow::Error> = None;
    let mut ended = false;
    let stream = ctx.client.get_streaming(&path, |chunk| {
        for (event, data) in events.feed(chunk) {
            match event.as_str() {
                "start" => {
                    if let Ok(s) = serde_json::from_str::<WatchStart>(&data) {
                        eprintln!(
                            "watching session {} ({}x{}{}{}); Ctrl-C to stop\r",
                            s.session,
                            s.cols,
                            s.rows,
                            if s.moderator {
                                ", as its moderator"
                            } else {
                                ""
                            },
                            if s.input_blocked {
                                ", input blocked"
                            } else {
                                ""
                            },
                        );
                    }
                }
                "output" => {
                    use base64::Engine as _;
                    match base64::engine::general_purpose::STANDARD.decode(data.trim()) {
                        Ok(bytes) => {
                            let mut out = std::io::stdout().lock();
                            if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                                // A closed stdout ends the watch quietly.
                                return false;
                            }
                        }
                        Err(e) => {
                            failure = Some(anyhow!("a watch event is not base64: {e}"));
                            return false;
                        }
                    }
                }
                "missed" => eprintln!("\r\n[cofre: {data} chunks of output missed]\r"),
                "end" => {
                    ended = true;
                    return false;
                }
                _ => {}
            }
        }
        true
    });
    tokio::select! {
        done = stream => done?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\r\nstopped watching session {id}\r");
            return Ok(ExitCode::SUCCESS);
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if ended {
        eprintln!("\r\nsession {id} ended\r");
    }
    Ok(ExitCode::SUCCESS)
}

/// Server-Sent Events out of a byte stream: `event:` and `data:` lines, an empty line ends one;
/// comments (the keep-alives) are skipped.
#[derive(Default)]
struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: String,
}

impl SseParser {
    fn feed(&mut self, chunk: &[u8]) -> Vec<(String, String)> {
        self.buf.extend_from_slice(chunk);
        let mut done = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.event.is_empty() || !self.data.is_empty() {
                    done.push((
                        std::mem::take(&mut self.event),
                        std::mem::take(&mut self.data),
                    ));
                }
            } else if let Some(v) = line.strip_prefix("event:") {
                self.event = v.trim_start().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        done
    }
}

pub(crate) async fn recording(ctx: &Ctx, cmd: RecordingCmd) -> Result<ExitCode> {
    let recording_path = |id: &str| format!("/api/v1/sessions/{}/recording", path_segment(id));
    match cmd {
        RecordingCmd::Export {
            id,
            file,
            format,
            stream,
        } => {
            let mut path = recording_path(&id);
            match (format, stream) {
                (FormatArg::Asciicast, None) => {}
                (FormatArg::Asciicast, Some(_)) => {
                    bail!("--stream: only with --format raw (asciicast holds both streams)")
                }
                (FormatArg::Raw, stream) => {
                    let stream = match stream {
                        Some(StreamArg::Input) => "input",
                        Some(StreamArg::Output) | None => "output",
                    };
                    path.push_str(&format!("?format=raw&stream={stream}"));
                }
            }
            match file {
                Some(file) => {
                    // Into a temporary file beside it, renamed when complete: a broken transfer
                    // leaves no partial recording under the name asked for.
                    let dir = file
                        .parent()
                        .filter(|d| !d.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new("."));
                    let mut tmp = tempfile::NamedTempFile::new_in(dir)
                        .with_context(|| format!("-o {}", file.display()))?;
                    ctx.client.get_to(&path, tmp.as_file_mut()).await?;
                    tmp.as_file().sync_all()?;
                    tmp.persist(&file)
                        .with_context(|| format!("-o {}", file.display()))?;
                    eprintln!("wrote {}", file.display());
                }
                None => {
                    let mut out = std::io::stdout().lock();
                    ctx.client.get_to(&path, &mut out).await?;
                    out.flush()?;
                }
            }
        }
        RecordingCmd::Verify { id } => {
            let r: RecordingVerification = ctx
                .client
                .get(&format!("{}/verify", recording_path(&id)))
                .await?;
            ctx.print(&r, |r| {
                outln!("recording of session {}: {}", r.session, r.message);
                if let Some(hash) = &r.hash {
                    outln!("frames: {}, final hash: {hash}", r.frames);
                }
            })?;
            return Ok(if r.status == "tampered" {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        RecordingCmd::Play {
            id,
            speed,
            seek,
            max_wait,
        } => {
            if !speed.is_finite() || speed <= 0.0 {
                bail!("--speed: must be greater than 0");
            }
            let cast = ctx.client.get_text(&recording_path(&id)).await?;
            play(&cast, speed, seek, max_wait)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Replays the `o` events with their timing; markers (commands, transfers) go to stderr.
fn play(cast: &str, speed: f64, seek: f64, max_wait: f64) -> Result<()> {
    let mut lines = cast.lines();
    let header: serde_json::Value =
        serde_json::from_str(lines.next().ok_or_else(|| anyhow!("empty recording"))?)?;
    if header.get("version").and_then(|v| v.as_i64()) != Some(2) {
        bail!("not an asciicast v2 recording");
    }
    let mut out = std::io::stdout().lock();
    let mut last = seek;
    for line in lines {
        let event: (f64, String, String) =
            serde_json::from_str(line).with_context(|| format!("bad event: {line}"))?;
        let (t, code, data) = event;
        if t > seek {
            let wait = ((t - last).min(max_wait) / speed).max(0.0);
            out.flush()?;
            std::thread::sleep(Duration::from_secs_f64(wait));
            last = t;
        }
        match code.as_str() {
            "o" => out.write_all(data.as_bytes())?,
            "m" => eprintln!("\r\n[cofre {t:.1}s] {data}\r"),
            _ => {}
        }
    }
    out.flush()?;
    Ok(())
}
