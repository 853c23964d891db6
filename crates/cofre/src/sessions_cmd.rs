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
        /// Only sessions still running.
        #[arg(long)]
        live: bool,
    },
    /// End a live session at once; the user is told why.
    Kill {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum RecordingCmd {
    /// Write a session's recording as asciicast v2 (`asciinema play FILE` plays it).
    Export {
        id: String,
        /// Output file (default: stdout).
        #[arg(short = 'o', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
    },
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
                            "live".to_owned()
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
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn recording(ctx: &Ctx, cmd: RecordingCmd) -> Result<ExitCode> {
    let fetch = |id: &str| {
        let path = format!("/api/v1/sessions/{}/recording", path_segment(id));
        async move { ctx.client.get_text(&path).await }
    };
    match cmd {
        RecordingCmd::Export { id, file } => {
            let cast = fetch(&id).await?;
            match file {
                Some(path) => {
                    std::fs::write(&path, cast.as_bytes())
                        .with_context(|| format!("-o {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => out!("{cast}"),
            }
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
            let cast = fetch(&id).await?;
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
