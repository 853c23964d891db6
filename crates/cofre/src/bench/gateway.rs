//! `cofre-bench gateway`: the SSH gateway against direct OpenSSH, to the same sshd, in the same
//! run. Bulk throughput uses the real `ssh` client both ways; round trips and idle sessions use a
//! russh client so that a thousand tiny exchanges are timed without process start-up in them.

use super::{login, provision, start_server};
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
    let status = Command::new("ssh")
        .args([
            "-c",
            CIPHER,
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
            "-p",
            &port.to_string(),
            "-i",
        ])
        .arg(key)
        .arg(format!("{login}@127.0.0.1"))
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

/// An SSH session channel at `port` as `user` with `key`, not yet asked for anything.
pub(super) async fn open_channel(
    port: u16,
    user: &str,
    key: &Path,
) -> Result<(
    russh::client::Handle<AnyHostKey>,
    russh::Channel<russh::client::Msg>,
)> {
    let config = Arc::new(russh::client::Config {
        nodelay: true,
        inactivity_timeout: None,
        ..Default::default()
    });
    let mut handle = russh::client::connect(config, ("127.0.0.1", port), AnyHostKey).await?;
    let key = russh::keys::load_secret_key(key, None)?;
    let auth = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), None))
        .await?;
    if !auth.success() {
        bail!("{user} was refused at port {port}");
    }
    let channel = handle.channel_open_session().await?;
    Ok((handle, channel))
}

async fn open_exec(
    port: u16,
    user: &str,
    key: &Path,
    command: &str,
) -> Result<(
    russh::client::Handle<AnyHostKey>,
    russh::Channel<russh::client::Msg>,
)> {
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
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok((pct(0.5), pct(0.99)))
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

pub(crate) async fn run(megabytes: u64, echoes: usize, idle: usize) -> Result<ExitCode> {
    let scratch = tempfile::tempdir()?;
    let dir: PathBuf = scratch.path().to_owned();
    keygen(&dir.join("root_key"))?;
    keygen(&dir.join("user_key"))?;
    let sshd_port = free_port()?;
    let sshd = start_sshd_with(&dir, sshd_port, &format!("Ciphers {CIPHER}\n"))?;
    let ticks = clock_ticks();
    let (server, target, otp, gw_port) = start_server(None).await?;
    let anon = Client::new(&target, None)?;
    let admin = login(&anon, "admin", &otp, "bench-admin-password").await?;
    provision(
        &admin,
        sshd_port,
        CreateCredentialRequest {
            account: "root".into(),
            password: None,
            private_key: Some(SecretString::new(std::fs::read_to_string(
                dir.join("root_key"),
            )?)),
        },
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
    let gw_login = "bench:root@db01";
    outln!("direct = OpenSSH client -> sshd; gateway = OpenSSH client -> cofre (recording) -> sshd; all on this machine; cipher {CIPHER} on every hop");
    let pids = (server.pid(), sshd.0.id());

    // Random bytes are the recorder's worst case (every byte needs escaping or replacing);
    // base64 text is what terminal output looks like.
    let file = dir.join("bulk.bin");
    random_file(&file, megabytes)?;
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
    let mb = megabytes as f64;
    for (what, path, size) in [
        ("random bytes", &file, mb),
        ("base64 text", &text, mb * 4.0 / 3.0),
    ] {
        bulk(sshd_port, &root_key, "root", path)?;
        bulk(gw_port, &user_key, gw_login, path)?;
        let (direct, dcpu) = bulk_cpu(sshd_port, &root_key, "root", path, pids, ticks)?;
        let (via, gcpu) = bulk_cpu(gw_port, &user_key, gw_login, path, pids, ticks)?;
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

    let (d50, d99) = echo(sshd_port, "root", &root_key, echoes).await?;
    let (g50, g99) = echo(gw_port, gw_login, &user_key, echoes).await?;
    outln!(
        "1-byte echo, {echoes} round trips: direct p50 {d50:.3} ms p99 {d99:.3} ms; gateway p50 {g50:.3} ms p99 {g99:.3} ms; added p50 {:.3} ms",
        g50 - d50
    );

    let before = rss_kib(server.pid())?;
    let mut held = Vec::with_capacity(idle);
    for _ in 0..idle {
        held.push(open_exec(gw_port, gw_login, &user_key, "sleep 3600").await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(server.pid())?;
    outln!(
        "{idle} idle recorded sessions: server RSS {} KiB -> {} KiB, {:.0} KiB per session",
        before,
        after,
        (after.saturating_sub(before)) as f64 / idle as f64
    );
    drop(held);
    Ok(ExitCode::SUCCESS)
}
