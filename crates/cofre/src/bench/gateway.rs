//! `cofre-bench gateway`: the SSH gateway against direct OpenSSH, to the same sshd, in the same
//! run. Bulk throughput and `ssh host true` use the real `ssh` client both ways; round trips use a
//! russh client so that a thousand tiny exchanges are timed without process start-up in them.
//! Idle sessions go, through the gateway, from in-process russh clients to the light target of
//! [`super::light`]: ten thousand sshd processes would not fit the machine, ten thousand tasks do.

use super::{add_target, login, provision, root_key_credential};
use anyhow::{anyhow, bail, Context, Result};
use cofre::client::Client;
use cofre_proto::*;
use russh::keys::PrivateKeyWithHashAlg;
use russh::ChannelMsg;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct Sshd(std::process::Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(super) fn keygen(path: &Path) -> Result<()> {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .context("ssh-keygen")?
        .success();
    if !ok {
        bail!("ssh-keygen failed");
    }
    Ok(())
}

pub(super) fn start_sshd(dir: &Path, port: u16) -> Result<Sshd> {
    start_sshd_with(dir, port, "")
}

/// The one cipher both paths use, so that the comparison is of relaying and recording, not of
/// ciphers: AES-256-GCM, which OpenSSH, the gateway and its upstream client all offer.
const CIPHER: &str = "aes256-gcm@openssh.com";

/// The key exchange both paths use: OpenSSH's default (sntrup761x25519 before 9.9) costs the
/// client more than all the rest of `ssh host true`, and the gateway does not offer it, so the
/// setup comparison would be of key exchanges. Every hop offers curve25519.
const KEX: &str = "curve25519-sha256";

/// sshd with `extra` lines in its configuration.
fn start_sshd_with(dir: &Path, port: u16, extra: &str) -> Result<Sshd> {
    keygen(&dir.join("host_key"))?;
    std::fs::copy(dir.join("root_key.pub"), dir.join("authorized_keys"))?;
    // SHLVL=1: commands skip the machine's ~/.bashrc (see the tests' Sshd), so both paths
    // measure the relay and not a profile.
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
         AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPermitRootLogin yes\nUsePAM no\n\
         SetEnv SHLVL=1\nMaxStartups 1000\nMaxSessions 1000\nLogLevel ERROR\n{extra}",
        d = dir.display()
    );
    std::fs::write(dir.join("sshd_config"), config)?;
    let _ = std::fs::create_dir_all("/run/sshd");
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-f"])
        .arg(dir.join("sshd_config"))
        .stderr(Stdio::null())
        .spawn()
        .context("starting /usr/sbin/sshd (install openssh-server; run as root)")?;
    let sshd = Sshd(child);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(sshd);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("sshd did not start on port {port}")
}

/// `cat FILE` over ssh into /dev/null; returns the seconds it took.
fn bulk(port: u16, key: &Path, login: &str, file: &Path) -> Result<f64> {
    let started = Instant::now();
    let status = ssh(port, key, login)
        .arg(format!("cat {}", file.display()))
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("ssh {login} cat failed: {status}");
    }
    Ok(started.elapsed().as_secs_f64())
}

pub(super) struct AnyHostKey;

impl russh::client::Handler for AnyHostKey {
    type Error = russh::Error;

    // The benchmark talks to a server it started itself, on loopback.
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

type SshClient = (
    russh::client::Handle<AnyHostKey>,
    russh::Channel<russh::client::Msg>,
);

/// An SSH session channel at `port` as `user` with `key`, not yet asked for anything.
pub(super) async fn open_channel(port: u16, user: &str, key: &Path) -> Result<SshClient> {
    let key = Arc::new(russh::keys::load_secret_key(key, None)?);
    open_channel_with(port, user, key).await
}

/// [`open_channel`] with a key already loaded (ten thousand logins read it once).
async fn open_channel_with(
    port: u16,
    user: &str,
    key: Arc<russh::keys::PrivateKey>,
) -> Result<SshClient> {
    let config = Arc::new(russh::client::Config {
        nodelay: true,
        inactivity_timeout: None,
        ..Default::default()
    });
    let mut handle = russh::client::connect(config, ("127.0.0.1", port), AnyHostKey).await?;
    let auth = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, None))
        .await?;
    if !auth.success() {
        bail!("{user} was refused at port {port}");
    }
    let channel = handle.channel_open_session().await?;
    Ok((handle, channel))
}

async fn open_exec(port: u16, user: &str, key: &Path, command: &str) -> Result<SshClient> {
    let (handle, channel) = open_channel(port, user, key).await?;
    channel.exec(true, command).await?;
    Ok((handle, channel))
}

/// 1-byte echo round trips through `cat`; returns (p50, p99) in milliseconds.
async fn echo(port: u16, user: &str, key: &Path, n: usize) -> Result<(f64, f64)> {
    let (_handle, mut ch) = open_exec(port, user, key, "cat").await?;
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 50 {
        let t = Instant::now();
        ch.data(&b"x"[..]).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ch.wait()).await? {
                Some(ChannelMsg::Data { data }) if !data.is_empty() => break,
                Some(ChannelMsg::Data { .. }) | Some(ChannelMsg::WindowAdjusted { .. }) => {}
                Some(ChannelMsg::Success) => {}
                other => bail!("echo ended: {other:?}"),
            }
        }
        // The first round trips warm up buffers and the recording; they are not counted.
        if i >= 50 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(percentiles(&mut times))
}

/// CPU seconds a process has used (user + system), and those of its children it has waited for,
/// from /proc/PID/stat.
pub(super) fn cpu_seconds(pid: &str, ticks: f64) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("/proc/{pid}/stat: no command name"))?;
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // utime, stime, cutime, cstime are fields 14-17 of the line: 12-15 after the name.
    let get = |i: usize| f.get(i).copied().unwrap_or(0.0) / ticks;
    Ok((get(11) + get(12), get(13) + get(14)))
}

pub(super) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds of the three processes of one path: the ssh client (a child of this process),
/// the gateway (the server; 0 on the direct path), sshd (its listener and the per-connection
/// children it has reaped).
#[derive(Clone, Copy, Default)]
struct Cpu {
    client: f64,
    gateway: f64,
    sshd: f64,
}

fn cpu_now(server: u32, sshd: u32, ticks: f64) -> Result<Cpu> {
    let (_, client) = cpu_seconds("self", ticks)?;
    let (gateway, _) = cpu_seconds(&server.to_string(), ticks)?;
    let (own, reaped) = cpu_seconds(&sshd.to_string(), ticks)?;
    Ok(Cpu {
        client,
        gateway,
        sshd: own + reaped,
    })
}

/// `bulk`, with the CPU each process spent on it.
fn bulk_cpu(
    port: u16,
    key: &Path,
    login: &str,
    file: &Path,
    pids: (u32, u32),
    ticks: f64,
) -> Result<(f64, Cpu)> {
    let before = cpu_now(pids.0, pids.1, ticks)?;
    let secs = bulk(port, key, login, file)?;
    // sshd's listener reaps the connection's process just after the client has exited.
    let mut after = cpu_now(pids.0, pids.1, ticks)?;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        let again = cpu_now(pids.0, pids.1, ticks)?;
        let settled = again.sshd == after.sshd;
        after = again;
        if settled && after.sshd > before.sshd {
            break;
        }
    }
    Ok((
        secs,
        Cpu {
            client: after.client - before.client,
            gateway: after.gateway - before.gateway,
            sshd: after.sshd - before.sshd,
        },
    ))
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))
}

fn random_file(path: &Path, megabytes: u64) -> Result<()> {
    use std::io::{Read, Write};
    let mut src = std::fs::File::open("/dev/urandom")?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..megabytes {
        src.read_exact(&mut buf)?;
        out.write_all(&buf)?;
    }
    out.flush()?;
    Ok(())
}

/// What `cofre-bench gateway` measures, and how much of each (0 skips a part).
pub(super) struct Sizes {
    pub megabytes: u64,
    pub echoes: usize,
    pub setups: usize,
    pub idle: usize,
    pub probes: usize,
    pub hold: Duration,
}

/// Logins in flight at once while the idle sessions are opened: enough to keep both cores busy,
/// well under the server's cap on connections waiting to log in from one address.
const OPEN_BATCH: usize = 64;
/// The longest one session may take to open (login, channel, first output byte) on a loaded
/// machine; past it the benchmark fails rather than waits.
const OPEN_DEADLINE: Duration = Duration::from_secs(60);
/// The longest a whole `ssh host true` may take.
const SETUP_DEADLINE: Duration = Duration::from_secs(60);

/// The benchmark server's configuration: its defaults but one.
fn server_config() -> String {
    format!(
        "[limits]\n\
         # The benchmark logs in {OPEN_BATCH} at a time, all from 127.0.0.1 (default 10).\n\
         ssh_unauthenticated_per_source = {}\n",
        OPEN_BATCH * 4
    )
}

/// p50 and p99 of `times`.
fn percentiles(times: &mut [f64]) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    (pct(0.5), pct(0.99))
}

/// The real OpenSSH client at `port` as `login`, with the benchmark's options.
fn ssh(port: u16, key: &Path, login: &str) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-c",
        CIPHER,
        "-o",
        &format!("KexAlgorithms={KEX}"),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
        "-p",
        &port.to_string(),
        "-i",
    ])
    .arg(key)
    .arg(format!("{login}@127.0.0.1"));
    cmd
}

/// One whole `ssh host true`, process start to exit; milliseconds.
fn ssh_true(port: u16, key: &Path, login: &str) -> Result<f64> {
    let started = Instant::now();
    let mut child = ssh(port, key, login)
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("ssh")?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > SETUP_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            bail!("ssh {login} true took over {} s", SETUP_DEADLINE.as_secs());
        }
        // Polling adds up to 0.2 ms to both paths alike; a blocking wait could hang.
        std::thread::sleep(Duration::from_micros(200));
    };
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if !status.success() {
        bail!("ssh {login} true failed: {status}");
    }
    Ok(ms)
}

/// `ssh host true` `n` times on each path, alternating, after one unmeasured run each.
async fn setups(n: usize, direct: (u16, PathBuf), gateway: (u16, PathBuf)) -> Result<()> {
    let ((mut d, mut g), _) = tokio::task::spawn_blocking(move || {
        let run = |(port, key): &(u16, PathBuf), login: &str| ssh_true(*port, key, login);
        let warm = (run(&direct, "root")?, run(&gateway, GW_LOGIN)?);
        let (mut d, mut g) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            d.push(run(&direct, "root")?);
            g.push(run(&gateway, GW_LOGIN)?);
        }
        Ok::<_, anyhow::Error>(((d, g), warm))
    })
    .await??;
    let ((d50, d99), (g50, g99)) = (percentiles(&mut d), percentiles(&mut g));
    outln!(
        "ssh host true, {n} runs (process start to exit): direct p50 {d50:.1} ms p99 {d99:.1} ms; gateway p50 {g50:.1} ms p99 {g99:.1} ms; added p50 {:.1} ms p99 {:.1} ms",
        g50 - d50,
        g99 - d99
    );
    Ok(())
}

const GW_LOGIN: &str = "bench:root@db01";
const LIGHT_LOGIN: &str = "bench:root@light01";

/// Raises this process's open-files limit, and so the server's (a child inherits it and raises
/// its soft limit to the hard one), to what `idle` sessions need. The server lets its gateway hold
/// a quarter of its limit less a reserve in connections (`cofre_app::fd_limit`; a session also
/// holds its recording and its connection to the target); here each session is two sockets (the
/// client's and the light target's).
fn raise_open_files(idle: usize) -> Result<u64> {
    use rlimit::Resource;
    const SERVER_RESERVE: u64 = 512;
    let needed = 4 * (idle as u64 + OPEN_BATCH as u64) + SERVER_RESERVE;
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let (_, hard) = Resource::NOFILE.get()?;
    // Raising the hard limit takes CAP_SYS_RESOURCE; without it, the hard limit is what we get.
    if hard >= needed || Resource::NOFILE.set(ceiling, ceiling).is_err() {
        let _ = Resource::NOFILE.set(hard, hard);
    }
    let (soft, _) = Resource::NOFILE.get()?;
    if soft < needed {
        let fits = (soft.saturating_sub(SERVER_RESERVE) / 4).saturating_sub(OPEN_BATCH as u64);
        bail!(
            "--idle {idle} needs an open-files limit of at least {needed} (the server's gateway \
             may use a quarter of it), and this process cannot raise its hard limit of {soft} \
             (that takes root with CAP_SYS_RESOURCE, or a higher `ulimit -Hn` / LimitNOFILE); \
             at most --idle {fits} fits"
        );
    }
    Ok(soft)
}

fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Waits for the first output byte of `ch`; anything else that ends it first is an error, with
/// what the gateway said on stderr.
async fn first_output(ch: &mut russh::Channel<russh::client::Msg>) -> Result<()> {
    let mut said = Vec::new();
    loop {
        match ch.wait().await {
            Some(ChannelMsg::Data { data }) if !data.is_empty() => return Ok(()),
            Some(ChannelMsg::ExtendedData { data, .. }) => said.extend_from_slice(&data),
            Some(ChannelMsg::ExitStatus { .. } | ChannelMsg::Eof | ChannelMsg::Close) | None => {
                bail!(
                    "the session ended before any output: {}",
                    String::from_utf8_lossy(&said).trim()
                )
            }
            Some(_) => {}
        }
    }
}

/// One new session at `port`: connect, key exchange, login, channel, exec, first output byte;
/// milliseconds. The session is then let end.
async fn probe(port: u16, user: &str, key: Arc<russh::keys::PrivateKey>) -> Result<f64> {
    tokio::time::timeout(OPEN_DEADLINE, async {
        let started = Instant::now();
        let (handle, mut ch) = open_channel_with(port, user, key).await?;
        ch.exec(true, super::light::PROBE_COMMAND).await?;
        first_output(&mut ch).await?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        while let Some(msg) = ch.wait().await {
            if matches!(msg, ChannelMsg::Close) {
                break;
            }
        }
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, "", "")
            .await;
        Ok::<_, anyhow::Error>(ms)
    })
    .await
    .map_err(|_| anyhow!("a new session at port {port} did not open within {OPEN_DEADLINE:?}"))?
}

/// `n` probes one after the other; (p50, p99).
async fn probes(
    n: usize,
    port: u16,
    user: &str,
    key: &Arc<russh::keys::PrivateKey>,
) -> Result<(f64, f64)> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        times.push(probe(port, user, key.clone()).await?);
    }
    Ok(percentiles(&mut times))
}

/// Idle sessions held open; dropping them closes them.
struct Held {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Sessions that ended while held (the gateway or the target closed them).
    ended: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Held {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Opens `n` idle sessions, [`OPEN_BATCH`] at a time, each waiting for its first output byte so
/// that it is known to be open end to end and recorded.
async fn hold_idle(
    n: usize,
    port: u16,
    user: &str,
    key: &Arc<russh::keys::PrivateKey>,
) -> Result<Held> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let batch = Arc::new(tokio::sync::Semaphore::new(OPEN_BATCH));
    let opened = Arc::new(AtomicUsize::new(0));
    let failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let mut held = Held {
        tasks: Vec::with_capacity(n),
        ended: Arc::default(),
    };
    let user: Arc<str> = user.into();
    let started = Instant::now();
    let failed = |failure: &std::sync::Mutex<Option<String>>| {
        failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    };
    for i in 0..n {
        // Every open gives its permit back within OPEN_DEADLINE, so this wait is bounded too.
        let permit = batch.clone().acquire_owned().await?;
        if let Some(why) = failed(&failure) {
            bail!(
                "an idle session failed to open after {} were open: {why}",
                opened.load(Ordering::Relaxed)
            );
        }
        if i > 0 && i % 1000 == 0 {
            outln!(
                "  {} idle sessions open after {:.1} s",
                opened.load(Ordering::Relaxed),
                started.elapsed().as_secs_f64()
            );
        }
        let (user, key, opened, failure, ended) = (
            user.clone(),
            key.clone(),
            opened.clone(),
            failure.clone(),
            held.ended.clone(),
        );
        held.tasks.push(tokio::spawn(async move {
            let open = tokio::time::timeout(OPEN_DEADLINE, async {
                let (handle, mut ch) = open_channel_with(port, &user, key).await?;
                ch.exec(true, super::light::IDLE_COMMAND).await?;
                first_output(&mut ch).await?;
                Ok::<_, anyhow::Error>((handle, ch))
            })
            .await;
            let (handle, mut ch) = match open {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => {
                    failure
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get_or_insert_with(|| format!("{e:#}"));
                    return;
                }
                Err(_) => {
                    failure
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get_or_insert_with(|| format!("no output within {OPEN_DEADLINE:?}"));
                    return;
                }
            };
            opened.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            // Held until the benchmark drops it: anything that ends it before is counted.
            while let Some(msg) = ch.wait().await {
                if matches!(
                    msg,
                    ChannelMsg::Eof | ChannelMsg::Close | ChannelMsg::ExitStatus { .. }
                ) {
                    break;
                }
            }
            ended.fetch_add(1, Ordering::Relaxed);
            drop(handle);
        }));
    }
    let all = u32::try_from(OPEN_BATCH)?;
    let _last = batch.acquire_many(all).await?;
    if let Some(why) = failed(&failure) {
        bail!(
            "an idle session failed to open after {} were open: {why}",
            opened.load(Ordering::Relaxed)
        );
    }
    let secs = started.elapsed().as_secs_f64();
    outln!(
        "  {n} idle sessions open in {secs:.1} s ({:.0} a second, {OPEN_BATCH} at a time)",
        n as f64 / secs
    );
    Ok(held)
}

/// The server's `cofre_gateway_live_sessions` gauge.
async fn live_sessions(anon: &Client) -> Result<f64> {
    let metrics = anon.get_text("/metrics").await?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("cofre_gateway_live_sessions "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("/metrics has no cofre_gateway_live_sessions"))
}

/// The idle part: `light01` (the light target) next to `db01`, then `idle` sessions held.
async fn idle_part(
    sizes: &Sizes,
    dir: &Path,
    admin: &Client,
    anon: &Client,
    server: u32,
    gw_port: u16,
    ticks: f64,
) -> Result<()> {
    let light = super::light::start(dir).await?;
    add_target(
        admin,
        "light01",
        light.port,
        "bench",
        &root_key_credential(dir)?,
    )
    .await?;
    let user_key = Arc::new(russh::keys::load_secret_key(dir.join("user_key"), None)?);
    let root_key = Arc::new(russh::keys::load_secret_key(dir.join("root_key"), None)?);
    let n = sizes.idle;
    outln!(
        "idle sessions: in-process russh clients -> cofre (recording) -> a russh target in this process (light01); {OPEN_BATCH} opened at a time"
    );
    // The first session pins light01's host key; it and a few more warm up, unmeasured.
    probes(3, gw_port, LIGHT_LOGIN, &user_key).await?;
    probes(3, light.port, "root", &root_key).await?;
    let (l50, l99) = probes(sizes.probes, light.port, "root", &root_key).await?;
    let (i50, i99) = probes(sizes.probes, gw_port, LIGHT_LOGIN, &user_key).await?;
    let (rss0, fds0) = (rss_kib(server)?, open_fds(server)?);
    let live0 = live_sessions(anon).await?;

    let held = hold_idle(n, gw_port, LIGHT_LOGIN, &user_key).await?;
    // What opening left behind (handshake buffers, audit batches) settles first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let live = live_sessions(anon).await? - live0;
    let (cpu0, _) = cpu_seconds(&server.to_string(), ticks)?;
    let (own0, _) = cpu_seconds("self", ticks)?;
    let t = Instant::now();
    tokio::time::sleep(sizes.hold).await;
    let (cpu1, _) = cpu_seconds(&server.to_string(), ticks)?;
    let (own1, _) = cpu_seconds("self", ticks)?;
    let held_secs = t.elapsed().as_secs_f64();
    let (rss1, fds1) = (rss_kib(server)?, open_fds(server)?);
    let (h50, h99) = probes(sizes.probes, gw_port, LIGHT_LOGIN, &user_key).await?;
    let ended = held.ended.load(std::sync::atomic::Ordering::Relaxed);
    let accept_errors = light
        .accept_errors
        .load(std::sync::atomic::Ordering::Relaxed);

    outln!(
        "new session (connect, login, channel, exec, first byte), {} probes: direct to light01 p50 {l50:.2} ms p99 {l99:.2} ms; gateway, idle server p50 {i50:.2} ms p99 {i99:.2} ms; gateway, {n} sessions held p50 {h50:.2} ms p99 {h99:.2} ms; added by the held sessions p50 {:.2} ms p99 {:.2} ms",
        sizes.probes,
        h50 - i50,
        h99 - i99
    );
    outln!(
        "{n} idle recorded sessions (server's live-session gauge: +{live:.0}): server RSS {rss0} KiB -> {rss1} KiB, {:.1} KiB per session; open fds {fds0} -> {fds1} ({:.2} per session)",
        rss1.saturating_sub(rss0) as f64 / n as f64,
        fds1.saturating_sub(fds0) as f64 / n as f64
    );
    outln!(
        "holding them {held_secs:.1} s: server CPU {:.2} s ({:.1}% of one core, {:.2} us per session-second); this process (clients and light target) {:.2} s",
        cpu1 - cpu0,
        (cpu1 - cpu0) / held_secs * 100.0,
        (cpu1 - cpu0) / held_secs / n as f64 * 1e6,
        own1 - own0
    );
    if ended > 0 || accept_errors > 0 {
        bail!("{ended} idle sessions ended while held; the light target failed {accept_errors} accepts");
    }
    drop(held);
    Ok(())
}

pub(crate) async fn run(sizes: Sizes) -> Result<ExitCode> {
    if sizes.idle > 0 {
        let limit = raise_open_files(sizes.idle)?;
        outln!("open-files limit {limit} (this process and the server it starts)");
    }
    let scratch = tempfile::tempdir()?;
    let dir: PathBuf = scratch.path().to_owned();
    keygen(&dir.join("root_key"))?;
    keygen(&dir.join("user_key"))?;
    let sshd_port = free_port()?;
    let sshd = start_sshd_with(
        &dir,
        sshd_port,
        &format!("Ciphers {CIPHER}\nKexAlgorithms {KEX}\n"),
    )?;
    let ticks = clock_ticks();
    let (server, target, otp, gw_port) =
        super::start_server_configured(None, Some(&server_config())).await?;
    let anon = Client::new(&target, None)?;
    let admin = login(&anon, "admin", &otp, "bench-admin-password").await?;
    provision(
        &admin,
        sshd_port,
        root_key_credential(&dir)?,
        "session",
        "allow",
    )
    .await?;
    let _: SshKeyInfo = admin
        .post(
            "/api/v1/users/bench/keys",
            &AddSshKeyRequest {
                public_key: std::fs::read_to_string(dir.join("user_key.pub"))?
                    .trim()
                    .to_owned(),
            },
        )
        .await?;
    let (root_key, user_key) = (dir.join("root_key"), dir.join("user_key"));
    outln!("direct = OpenSSH client -> sshd; gateway = OpenSSH client -> cofre (recording) -> sshd; all on this machine; cipher {CIPHER} and key exchange {KEX} on every hop");
    let pids = (server.pid(), sshd.0.id());

    if sizes.megabytes > 0 {
        // Random bytes are the recorder's worst case (every byte needs escaping or replacing);
        // base64 text is what terminal output looks like.
        let file = dir.join("bulk.bin");
        random_file(&file, sizes.megabytes)?;
        let text = dir.join("bulk.txt");
        let encoded = Command::new("base64")
            .arg("-w")
            .arg("76")
            .arg(&file)
            .stdout(std::fs::File::create(&text)?)
            .status()?;
        if !encoded.success() {
            bail!("base64 failed");
        }
        let mb = sizes.megabytes as f64;
        for (what, path, size) in [
            ("random bytes", &file, mb),
            ("base64 text", &text, mb * 4.0 / 3.0),
        ] {
            bulk(sshd_port, &root_key, "root", path)?;
            bulk(gw_port, &user_key, GW_LOGIN, path)?;
            let (direct, dcpu) = bulk_cpu(sshd_port, &root_key, "root", path, pids, ticks)?;
            let (via, gcpu) = bulk_cpu(gw_port, &user_key, GW_LOGIN, path, pids, ticks)?;
            outln!(
                "bulk cat of {size:.0} MiB of {what}: direct {:.0} MiB/s, gateway (recorded) {:.0} MiB/s, ratio gateway/direct {:.2}",
                size / direct,
                size / via,
                direct / via
            );
            let gib = size / 1024.0;
            outln!(
                "  CPU s/GiB: direct: client {:.2}, sshd {:.2}; gateway: client {:.2}, gateway {:.2}, sshd {:.2}",
                dcpu.client / gib,
                dcpu.sshd / gib,
                gcpu.client / gib,
                gcpu.gateway / gib,
                gcpu.sshd / gib
            );
        }
    }

    if sizes.echoes > 0 {
        let (d50, d99) = echo(sshd_port, "root", &root_key, sizes.echoes).await?;
        let (g50, g99) = echo(gw_port, GW_LOGIN, &user_key, sizes.echoes).await?;
        outln!(
            "1-byte echo, {} round trips: direct p50 {d50:.3} ms p99 {d99:.3} ms; gateway p50 {g50:.3} ms p99 {g99:.3} ms; added p50 {:.3} ms",
            sizes.echoes,
            g50 - d50
        );
    }

    if sizes.setups > 0 {
        setups(
            sizes.setups,
            (sshd_port, root_key.clone()),
            (gw_port, user_key.clone()),
        )
        .await?;
    }

    if sizes.idle > 0 {
        idle_part(&sizes, &dir, &admin, &anon, server.pid(), gw_port, ticks).await?;
    }
    Ok(ExitCode::SUCCESS)
}
