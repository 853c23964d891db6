//! The supervisor that `cofre server` runs as: a small process apart from the server it starts,
//! so that a maintenance window's switch-over survives the new version failing. It runs the
//! current binary (`DATA_DIR/releases/current.json`, or itself) with the same arguments; when
//! that server exits with `EXIT_SWITCH` it starts the new version on the same addresses, waits
//! for it to be healthy and commits it, or brings the old one back (`cofre_app::switch` has the
//! whole protocol). It opens no database and holds no key.
//!
//! The child's stdin is a pipe from here: `stop` drains and exits (this process got SIGTERM or
//! SIGINT), `commit` tells a new version it is the current one, and end of file (this process
//! died, even by SIGKILL) makes the child exit at once, so no server outlives its supervisor.

use anyhow::{anyhow, Context, Result};
use cofre_app::switch::{self, Phase, Switch, EXIT_SWITCH, SUPERVISOR_ENV};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

/// Environment variables that give the child the addresses its predecessor listened on.
pub(crate) const LISTEN_ENV: &str = "COFRE_HANDOVER_LISTEN";
pub(crate) const SSH_LISTEN_ENV: &str = "COFRE_HANDOVER_SSH_LISTEN";
pub(crate) const EXTERNAL_LISTEN_ENV: &str = "COFRE_HANDOVER_EXTERNAL_LISTEN";
/// How often a starting new version's `/healthz` is asked.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// Each probe's own deadline.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a child told to stop gets before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(60);

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("{e}"))??)
}

async fn load(data_dir: &Path) -> Result<Option<Switch>> {
    let d = data_dir.to_owned();
    blocking(move || switch::load(&d)).await
}

async fn save(data_dir: &Path, mut s: Switch, phase: Phase) -> Result<Switch> {
    let d = data_dir.to_owned();
    blocking(move || {
        switch::save(&d, &mut s, phase, now())?;
        Ok(s)
    })
    .await
}

/// What to run: a committed update's binary, else this one.
async fn current_binary(data_dir: &Path) -> Result<PathBuf> {
    let d = data_dir.to_owned();
    let current = blocking(move || switch::current(&d)).await?;
    match current {
        Some(c) if c.binary.is_file() => Ok(c.binary),
        Some(c) => Err(anyhow!(
            "{}: names {}, which is not there (reinstall it or remove the file to run this binary)",
            switch::current_path(data_dir).display(),
            c.binary.display()
        )),
        None => std::env::current_exe().context("finding this binary"),
    }
}

/// A child and the write end of its stdin, kept apart: tokio closes a child's stdin when it is
/// waited for, which the child would take for this process's death.
struct Running {
    child: Child,
    stdin: Option<tokio::process::ChildStdin>,
}

impl Running {
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    async fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill().await
    }
}

fn spawn(binary: &Path, s: Option<&Switch>) -> Result<Running> {
    let mut cmd = Command::new(binary);
    cmd.args(std::env::args_os().skip(1))
        .env(SUPERVISOR_ENV, std::process::id().to_string())
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    if let Some(s) = s {
        cmd.env(LISTEN_ENV, &s.listen)
            .env(SSH_LISTEN_ENV, &s.ssh_listen);
        if let Some(x) = &s.external_listen {
            cmd.env(EXTERNAL_LISTEN_ENV, x);
        }
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdin = child.stdin.take();
    Ok(Running { child, stdin })
}

async fn tell(child: &mut Running, line: &str) {
    if let Some(stdin) = child.stdin.as_mut() {
        let _ = stdin.write_all(format!("{line}\n").as_bytes()).await;
        let _ = stdin.flush().await;
    }
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        (None, Some(sig)) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)),
        _ => ExitCode::FAILURE,
    }
}

/// Runs the server under supervision until it stops for good.
pub(crate) async fn run(data_dir: PathBuf) -> Result<ExitCode> {
    // A hand-over this process did not see to its end (it was killed): the old version comes
    // back. A committed one is the new version's to finish.
    if let Some(s) = load(&data_dir).await? {
        if matches!(s.phase, Phase::Prepared | Phase::Starting) {
            let mut s = s;
            s.failure = Some(format!(
                "the switch-over was cut short: the supervisor stopped while it was {}",
                if s.phase == Phase::Prepared {
                    "about to start the new version"
                } else {
                    "starting the new version"
                }
            ));
            save(&data_dir, s, Phase::RollingBack).await?;
        }
    }
    let mut stopping = std::pin::pin!(stop_signal());
    let mut child = {
        let s = load(&data_dir).await?;
        match &s {
            Some(s) if s.phase == Phase::RollingBack => spawn(&s.from_binary, Some(s))?,
            Some(s) if s.phase == Phase::Committed => spawn(&s.to_binary, Some(s))?,
            _ => spawn(&current_binary(&data_dir).await?, None)?,
        }
    };
    loop {
        let status = tokio::select! {
            status = child.wait() => status?,
            _ = &mut stopping => {
                tell(&mut child, "stop").await;
                return match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                    Ok(status) => Ok(exit_code(status?)),
                    Err(_) => {
                        let _ = child.kill().await;
                        Ok(ExitCode::FAILURE)
                    }
                };
            }
        };
        if status.code() != Some(EXIT_SWITCH) {
            return Ok(exit_code(status));
        }
        let Some(s) = load(&data_dir)
            .await?
            .filter(|s| s.phase == Phase::Prepared)
        else {
            return Err(anyhow!(
                "the server asked for a switch-over, but {} holds none to start",
                switch::switch_path(&data_dir).display()
            ));
        };
        let s = save(&data_dir, s, Phase::Starting).await?;
        eprintln!(
            "cofre supervisor: window {}: starting Cofre {} ({})",
            s.window,
            s.to_version,
            s.to_binary.display()
        );
        let verdict = match spawn(&s.to_binary, Some(&s)) {
            Ok(mut candidate) => {
                let v = watch_candidate(&data_dir, &s, &mut candidate, &mut stopping).await;
                if matches!(v, Verdict::Healthy) {
                    child = candidate;
                } else {
                    let _ = candidate.kill().await;
                    let _ = candidate.wait().await;
                }
                v
            }
            Err(e) => Verdict::Failed(format!("{e:#}")),
        };
        match verdict {
            Verdict::Healthy => {
                let c = switch::Current {
                    binary: s.to_binary.clone(),
                    version: s.to_version.clone(),
                    release: s.release.clone(),
                    window: s.window.clone(),
                };
                let d = data_dir.clone();
                blocking(move || switch::set_current(&d, &c)).await?;
                save(&data_dir, s.clone(), Phase::Committed).await?;
                tell(&mut child, "commit").await;
                eprintln!(
                    "cofre supervisor: window {}: Cofre {} is healthy and current",
                    s.window, s.to_version
                );
            }
            Verdict::Failed(why) => {
                eprintln!(
                    "cofre supervisor: window {}: rolling back to Cofre {}: {why}",
                    s.window, s.from_version
                );
                let s = fail(&data_dir, s, why).await?;
                child = spawn(&s.from_binary, Some(&s))?;
            }
            Verdict::Stopped => {
                // Told to stop mid-way: the next start rolls back.
                fail(
                    &data_dir,
                    s,
                    "the supervisor was told to stop during the switch-over".into(),
                )
                .await?;
                return Ok(ExitCode::FAILURE);
            }
        }
    }
}

async fn fail(data_dir: &Path, mut s: Switch, why: String) -> Result<Switch> {
    s.failure = Some(why);
    save(data_dir, s, Phase::RollingBack).await
}

enum Verdict {
    Healthy,
    Failed(String),
    Stopped,
}

/// Waits until the new version is healthy, exits, fails its self-check, or the deadline passes.
async fn watch_candidate(
    data_dir: &Path,
    s: &Switch,
    candidate: &mut Running,
    stopping: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Verdict {
    let left = u64::try_from(s.deadline - now()).unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(left);
    let probe = match Probe::new(data_dir, s) {
        Ok(p) => p,
        Err(e) => return Verdict::Failed(format!("cannot check the new version: {e:#}")),
    };
    let mut last = String::from("it never answered /healthz");
    loop {
        tokio::select! {
            status = candidate.wait() => {
                return Verdict::Failed(match status {
                    Ok(st) => format!("Cofre {} exited ({st}) before it was healthy; last seen: {last}", s.to_version),
                    Err(e) => format!("Cofre {}: {e}", s.to_version),
                });
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Verdict::Failed(format!("Cofre {} was not healthy by the window's end; last seen: {last}", s.to_version));
            }
            _ = stopping.as_mut() => return Verdict::Stopped,
            _ = tokio::time::sleep(PROBE_EVERY) => {
                match probe.check().await {
                    Ok(()) => return Verdict::Healthy,
                    Err(ProbeError::Failed(why)) => return Verdict::Failed(why),
                    Err(ProbeError::NotYet(why)) => last = why,
                }
            }
        }
    }
}

enum ProbeError {
    /// Not answering yet, or still checking itself.
    NotYet(String),
    /// It answered that it failed.
    Failed(String),
}

/// `GET /healthz` of the new version, trusting the instance's own certificate.
struct Probe {
    client: reqwest::Client,
    url: String,
    version: String,
}

impl Probe {
    fn new(data_dir: &Path, s: &Switch) -> Result<Probe> {
        let tls = cofre_http::tls::load_or_generate(data_dir)?;
        let target = crate::client::Target {
            server: format!("https://{}", s.listen),
            fingerprint: Some(tls.fingerprint),
            ca_cert: None,
        };
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(crate::client::tls_config(&target)?)
            .timeout(PROBE_TIMEOUT)
            .build()?;
        Ok(Probe {
            client,
            url: format!("https://{}/healthz", s.listen),
            version: s.to_version.clone(),
        })
    }

    async fn check(&self) -> Result<(), ProbeError> {
        let health: cofre_proto::Health = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| ProbeError::NotYet(format!("/healthz: {e}")))?
            .json()
            .await
            .map_err(|e| ProbeError::NotYet(format!("/healthz: {e}")))?;
        if health.version != self.version {
            return Err(ProbeError::Failed(format!(
                "the new binary reports version {}, the release says {}",
                health.version, self.version
            )));
        }
        match health.handover.as_deref() {
            Some(c) if c.starts_with("ok") && health.status == "ok" => Ok(()),
            Some(c) if c.starts_with("failed") => {
                Err(ProbeError::Failed(format!("its self-check {c}")))
            }
            other => Err(ProbeError::NotYet(format!(
                "/healthz: {} (self-check: {})",
                health.status,
                other.unwrap_or("not started")
            ))),
        }
    }
}
