//! `cofre-bench maintenance`: a maintenance window on an instance of realistic size (MEGABYTES of
//! recordings, CREDENTIALS credentials), applied by the real supervisor, twice: a good release
//! (this very binary, stamped with the next version) and a bad one (the same binary stamped with
//! a version other than its manifest's, so the new process starts, serves and fails its health
//! check, the slowest failure short of a hang). For each it reports, from the window's start:
//! when the new version (or, for the bad one, the old version again) answers, when the window
//! closes (new gateway sessions and API changes are refused until then), and how long the API
//! and the gateway's listener gave no answer at all. Probes run every 50 ms from this process.
//!
//! Releases are signed with a key the benchmark makes with minisign (the vendor's tool), exactly
//! as a vendor would; needs `minisign` and `tar`.

use super::console::{scratch_app, seed_targets, PASSWORD};
use super::gateway::{clock_ticks, cpu_seconds};
use super::{password_login, start_server_supervised};
use anyhow::{anyhow, bail, Context, Result};
use cofre::client::Client;
use cofre_proto::*;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const PROBE_EVERY: Duration = Duration::from_millis(50);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Seconds from proposing to the window's start: enough for the scheduler to have it.
const LEAD_SECONDS: u64 = 3;

pub(crate) async fn run(megabytes: u64, credentials: usize) -> Result<ExitCode> {
    for (tool, why) in [("minisign", "-v"), ("tar", "--version")] {
        let ok = Command::new(tool)
            .arg(why)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            bail!("needs {tool} (apt-get install {tool})");
        }
    }
    let keys = tempfile::tempdir()?;
    let (public, secret) = minisign_key(keys.path())?;
    let config = format!(
        "[maintenance]\nrelease_public_keys = [\"{public}\"]\nwarn_minutes = 0\ntick_seconds = 1\n"
    );

    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let config_file = keys.path().join("cofre.toml");
    std::fs::write(&config_file, &config)?;
    outln!(
        "seeding {credentials} credentials and {megabytes} MiB of recordings (SQLite in a scratch dir)"
    );
    let t = Instant::now();
    let app = scratch_app(&data_dir, Some(&config_file)).await?;
    seed_targets(&app, credentials, |i| {
        (format!("host-{i:06}"), vec![format!("rack-{:03}", i % 100)])
    })
    .await?;
    app.store.close().await;
    drop(app);
    super::snapshot::seed(&data_dir, megabytes)?;
    outln!("seeded in {:.1} s", t.elapsed().as_secs_f64());

    let (server, target, _, gateway_port) =
        start_server_supervised(dir, Some(&config_file)).await?;
    let anon = Client::new(&target, None)?;
    let admin = password_login(&anon, "admin", PASSWORD).await?;
    let health: Health = anon.get("/healthz").await?;
    let old = semver::Version::parse(&health.version)
        .with_context(|| format!("the server's version {:?}", health.version))?;
    let good = semver::Version::new(old.major, old.minor, old.patch + 1);
    let bad = semver::Version::new(old.major, old.minor, old.patch + 2);
    let cofre = std::fs::read(super::cofre_bin()?)?;
    let stamped = |v: &semver::Version| {
        cofre_app::switch::stamp_version(&cofre, &v.to_string()).map_err(|e| anyhow!("{e}"))
    };
    let good_release = make_release(
        keys.path(),
        &secret,
        &good.to_string(),
        &old.to_string(),
        &stamped(&good)?,
    )?;
    // Starts and serves, but as a version its manifest does not name: the health check fails.
    let bad_binary = stamped(&semver::Version::new(bad.major, bad.minor, bad.patch + 1))?;
    let bad_release = make_release(
        keys.path(),
        &secret,
        &bad.to_string(),
        &good.to_string(),
        &bad_binary,
    )?;
    drop(cofre);

    let ticks = clock_ticks();
    let supervisor = server.pid().to_string();
    outln!(
        "cofre {old} -> {good} (good), then {good} -> {bad} (fails its health check); probes every {} ms",
        PROBE_EVERY.as_millis()
    );
    let cpu_before = tree_cpu(&supervisor, ticks);
    let first = window(
        &admin,
        &anon,
        gateway_port,
        &good_release,
        &good.to_string(),
    )
    .await?;
    first.print("good release", "new version serving");
    let second = window(&admin, &anon, gateway_port, &bad_release, &good.to_string()).await?;
    second.print("bad release", "old version serving again");
    let cpu = tree_cpu(&supervisor, ticks) - cpu_before;
    outln!(
        "CPU seconds of the server (the supervisor and every version it ran) over both windows: {cpu:.2}"
    );

    let good_refused = first.closed.unwrap_or(f64::INFINITY);
    let bad_back = second.serving.unwrap_or(f64::INFINITY);
    let ok = first.state == "done"
        && second.state == "rolled_back"
        && good_refused < 30.0
        && bad_back < 60.0;
    outln!(
        "aims: refused service under 30 s for the good release ({}: {good_refused:.1} s), back on the old version under 60 s for the bad one ({}: {bad_back:.1} s)",
        if good_refused < 30.0 { "met" } else { "missed" },
        if bad_back < 60.0 { "met" } else { "missed" },
    );
    drop(server);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A minisign key pair without a password: the public key (as `release_public_keys` takes it)
/// and the secret key's path.
fn minisign_key(dir: &Path) -> Result<(String, std::path::PathBuf)> {
    let (public, secret) = (dir.join("vendor.pub"), dir.join("vendor.key"));
    let status = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&public)
        .arg("-s")
        .arg(&secret)
        .output()
        .context("minisign -G")?;
    if !status.status.success() {
        bail!(
            "minisign -G failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
    let text = std::fs::read_to_string(&public)?;
    let key = text
        .lines()
        .nth(1)
        .ok_or_else(|| anyhow!("{} has no key line", public.display()))?;
    Ok((key.trim().to_owned(), secret))
}

/// A release file as the vendor makes one: the manifest signed with minisign, then `tar cf`.
fn make_release(
    dir: &Path,
    secret: &Path,
    version: &str,
    upgrades_from: &str,
    binary: &[u8],
) -> Result<Vec<u8>> {
    use sha2::Digest;
    let work = dir.join(format!("release-{version}"));
    std::fs::create_dir_all(&work)?;
    std::fs::write(work.join("cofre"), binary)?;
    let manifest = serde_json::json!({
        "format": "cofre-release-v1",
        "version": version,
        "binary_sha256": hex::encode(sha2::Sha256::digest(binary)),
        "upgrades_from": upgrades_from,
        "notes": "cofre-bench maintenance",
    });
    std::fs::write(work.join("manifest.json"), manifest.to_string())?;
    let signed = Command::new("minisign")
        .args(["-S", "-s"])
        .arg(secret)
        .arg("-m")
        .arg(work.join("manifest.json"))
        .output()
        .context("minisign -S")?;
    if !signed.status.success() {
        bail!(
            "minisign -S failed: {}",
            String::from_utf8_lossy(&signed.stderr)
        );
    }
    let file = dir.join(format!("cofre-{version}.release"));
    let tar = Command::new("tar")
        .arg("cf")
        .arg(&file)
        .arg("-C")
        .arg(&work)
        .args(["manifest.json", "manifest.json.minisig", "cofre"])
        .status()
        .context("tar cf")?;
    if !tar.success() {
        bail!("tar cf failed: {tar}");
    }
    let bytes = std::fs::read(&file)?;
    std::fs::remove_dir_all(&work)?;
    std::fs::remove_file(&file)?;
    Ok(bytes)
}

/// What one window looked like from outside, in seconds from its start.
struct Window {
    state: String,
    /// The expected version answered /healthz again.
    serving: Option<f64>,
    /// The window was closed (done or rolled back): changes and new sessions accepted again.
    closed: Option<f64>,
    /// Time the API answered nothing (no connection, or no answer within the probe's timeout).
    api_silent: f64,
    /// Time a change (creating a group) was refused, for any reason.
    changes_refused: f64,
    /// Time the gateway's listener sent no SSH banner.
    gateway_silent: f64,
    probes: usize,
}

impl Window {
    fn print(&self, what: &str, serving: &str) {
        let s = |v: Option<f64>| v.map_or("never".to_owned(), |v| format!("{v:.1} s"));
        outln!(
            "{what}: window {}; from the window's start: {serving} {}, window closed {}; API silent {:.1} s, API changes refused {:.1} s, gateway listener silent {:.1} s ({} probes)",
            self.state,
            s(self.serving),
            s(self.closed),
            self.api_silent,
            self.changes_refused,
            self.gateway_silent,
            self.probes
        );
    }
}

/// Uploads `release`, proposes a window starting in a few seconds, and probes until it closes
/// and `serving` (a version) answers.
async fn window(
    admin: &Client,
    anon: &Client,
    gateway_port: u16,
    release: &[u8],
    serving: &str,
) -> Result<Window> {
    let uploaded: ReleaseInfo = admin
        .post_octets("/api/v1/releases", release.to_vec())
        .await?;
    let start = SystemTime::now() + Duration::from_secs(LEAD_SECONDS);
    let start_text = time::OffsetDateTime::from(start)
        .replace_nanosecond(0)
        .map_err(|e| anyhow!("{e}"))?
        .format(&time::format_description::well_known::Rfc3339)?;
    // The window opens at a whole second; the figures count from there.
    let start = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            start
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_err(|e| anyhow!("{e}"))?
                .as_secs(),
        );
    let w: MaintenanceInfo = admin
        .post(
            "/api/v1/maintenance",
            &ProposeMaintenanceRequest {
                release: uploaded.id.clone(),
                start: start_text,
                duration: "30m".into(),
                notes: Some("cofre-bench maintenance".into()),
            },
        )
        .await?;
    if w.state != "scheduled" {
        bail!("the window is {} after proposing, not scheduled", w.state);
    }
    let since_start = move || match SystemTime::now().duration_since(start) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    let timeline = Arc::new(Mutex::new(Vec::<Probe>::new()));
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut n = 0u64;
    let (mut state, mut closed, mut serving_at) = (w.state.clone(), None, None);
    // The version that serves after the switch-over is the first to answer with a version other
    // than the one before; after a rollback, the same version answers again: the first answer
    // after the API went silent (the old process was answering until then) or the window closed.
    let before: Health = anon.get("/healthz").await?;
    let mut went_silent = false;
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        n += 1;
        let at = since_start();
        let read = probe(anon.get::<Health>("/healthz")).await;
        let change = probe(admin.post::<GroupInfo>(
            "/api/v1/groups",
            &CreateGroupRequest {
                name: format!("probe-{}-{n}", uploaded.id.replace('.', "-")),
            },
        ))
        .await;
        let banner = gateway_banner(gateway_port).await;
        if at >= 0.0 {
            match &read {
                Ok(Some(h))
                    if h.version == serving
                        && serving_at.is_none()
                        && (h.version != before.version || went_silent || closed.is_some()) =>
                {
                    serving_at = Some(at);
                }
                Err(()) => went_silent = true,
                _ => {}
            }
            let p = Probe {
                at,
                api_answered: read.is_ok(),
                change_accepted: matches!(change, Ok(Some(_))),
                banner,
            };
            if let Ok(mut t) = timeline.lock() {
                t.push(p);
            }
        }
        if n.is_multiple_of(4) || closed.is_none() {
            if let Ok(Some(w)) =
                probe(admin.get::<MaintenanceInfo>(&format!("/api/v1/maintenance/{}", w.id))).await
            {
                if !matches!(w.state.as_str(), "proposed" | "scheduled" | "running")
                    && closed.is_none()
                {
                    closed = Some(at);
                }
                state = w.state;
            }
        }
        if let (Some(_), Some(_)) = (closed, serving_at) {
            break;
        }
        if Instant::now() > deadline {
            bail!("window {} still {state} after 600 s", w.id);
        }
    }
    let t = timeline.lock().map_err(|_| anyhow!("probe timeline"))?;
    let gap = |ok: &dyn Fn(&Probe) -> bool| {
        t.windows(2)
            .filter(|w| !ok(&w[1]))
            .map(|w| w[1].at - w[0].at)
            .sum::<f64>()
    };
    Ok(Window {
        state,
        serving: serving_at,
        closed,
        api_silent: gap(&|p| p.api_answered),
        changes_refused: gap(&|p| p.change_accepted),
        gateway_silent: gap(&|p| p.banner),
        probes: t.len(),
    })
}

struct Probe {
    at: f64,
    api_answered: bool,
    change_accepted: bool,
    banner: bool,
}

/// `Ok(Some)`: answered with success; `Ok(None)`: answered with a refusal; `Err`: no answer.
async fn probe<T>(
    call: impl std::future::Future<Output = Result<T, cofre::client::ApiFailure>>,
) -> Result<Option<T>, ()> {
    match tokio::time::timeout(PROBE_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(Some(v)),
        Ok(Err(cofre::client::ApiFailure::Api { .. })) => Ok(None),
        Ok(Err(cofre::client::ApiFailure::Transport(_))) | Err(_) => Err(()),
    }
}

/// Whether the gateway's listener accepts a connection and sends its SSH version line.
async fn gateway_banner(port: u16) -> bool {
    use tokio::io::AsyncReadExt;
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut buf = [0u8; 8];
        s.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(&buf == b"SSH-2.0-")
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, attempt).await,
        Ok(Ok(true))
    )
}

/// CPU seconds of the supervisor, the versions it ran and reaped, and the one running now.
fn tree_cpu(supervisor: &str, ticks: f64) -> f64 {
    let own = cpu_seconds(supervisor, ticks)
        .map(|(own, reaped)| own + reaped)
        .unwrap_or(0.0);
    let children =
        std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children"))
            .unwrap_or_default();
    own + children
        .split_whitespace()
        .filter_map(|pid| cpu_seconds(pid, ticks).ok())
        .map(|(own, reaped)| own + reaped)
        .sum::<f64>()
}
