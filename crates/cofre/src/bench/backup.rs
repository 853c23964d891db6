//! `cofre-bench backup`: bytes an incremental backup sends after 1% new recordings, against the
//! new bytes, in the same run. Recordings are made by real sessions through the gateway (to an
//! sshd the benchmark starts; needs root and /usr/sbin/sshd), and sent with the real rsync over
//! ssh to the same sshd, and to a directory.

use super::gateway::{free_port, keygen, start_sshd};
use super::{login, provision, start_server};
use anyhow::{bail, Context, Result};
use cofre::client::Client;
use cofre_proto::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Recording files and their sizes.
fn sizes(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => {
                    out.insert(e.path(), e.metadata().map(|m| m.len()).unwrap_or(0));
                }
                _ => {}
            }
        }
    }
    out
}

/// `count` sessions through the gateway, `parallel` at a time, each printing `kib` KiB of base64.
fn sessions(gw_port: u16, key: &Path, count: usize, kib: u64, parallel: usize) -> Result<()> {
    let mut left = count;
    while left > 0 {
        let batch = left.min(parallel);
        let mut children = Vec::with_capacity(batch);
        for _ in 0..batch {
            children.push(
                Command::new("ssh")
                    .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
                    .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
                    .args(["-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-i"])
                    .arg(key)
                    .args(["-p", &gw_port.to_string(), "bench:root@db01@127.0.0.1"])
                    .arg(format!(
                        "head -c {} /dev/urandom | base64 -w 76",
                        kib * 1024 * 3 / 4
                    ))
                    .stdout(Stdio::null())
                    .spawn()
                    .context("ssh")?,
            );
        }
        for mut c in children {
            if !c.wait()?.success() {
                bail!("a gateway session failed");
            }
        }
        left -= batch;
    }
    Ok(())
}

async fn wait_sessions_ended(admin: &Client) -> Result<()> {
    for _ in 0..600 {
        let page: Page<SessionInfo> = admin.get("/api/v1/sessions?live=true").await?;
        if page.items.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("sessions did not end")
}

async fn run_job(admin: &Client, job: &str) -> Result<BackupRunInfo> {
    let started: BackupRunInfo = admin
        .post(&format!("/api/v1/backup/jobs/{job}/run"), &())
        .await?;
    loop {
        let r: BackupRunInfo = admin
            .get(&format!("/api/v1/backup/runs/{}", started.id))
            .await?;
        if r.status == "ok" {
            return Ok(r);
        }
        if r.status != "running" {
            bail!("backup run of {job} failed: {:?}", r.error);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn run(megabytes: u64, recordings: usize) -> Result<ExitCode> {
    if recordings < 100 {
        bail!("--recordings: at least 100, so that one new recording is 1%");
    }
    let scratch = tempfile::tempdir()?;
    let dir: PathBuf = scratch.path().to_owned();
    keygen(&dir.join("root_key"))?;
    keygen(&dir.join("user_key"))?;
    let sshd_port = free_port()?;
    let _sshd = start_sshd(&dir, sshd_port)?;
    let (server, target, otp, gw_port) = start_server(None).await?;
    let data_dir = server.1.path().join("data");
    let anon = Client::new(&target, None)?;
    let admin = login(&anon, "admin", &otp, "bench-admin-password").await?;
    let root_key = std::fs::read_to_string(dir.join("root_key"))?;
    provision(
        &admin,
        sshd_port,
        CreateCredentialRequest {
            account: "root".into(),
            password: None,
            private_key: Some(SecretString::new(root_key.clone())),
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
    let user_key = dir.join("user_key");
    // A recording of base64 output is about 3/4 of the output's size (zstd frames).
    let kib = (megabytes * 1024 * 4 / 3 / recordings as u64).max(1);
    outln!("making {recordings} recordings of ~{kib} KiB through the gateway ...");
    let t = Instant::now();
    sessions(gw_port, &user_key, recordings, kib, 4)?;
    wait_sessions_ended(&admin).await?;
    let rec_dir = data_dir.join("recordings");
    let before = sizes(&rec_dir);
    let total: u64 = before.values().sum();
    outln!(
        "{} recordings, {:.1} MiB, made in {:.1} s",
        before.len(),
        total as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );

    let nas = dir.join("nas");
    let _: BackupTargetInfo = admin
        .post(
            "/api/v1/backup/targets",
            &NewBackupTargetRequest {
                name: "nas".into(),
                ssh: Some(format!("root@127.0.0.1:{}", nas.display())),
                port: Some(sshd_port),
                ssh_private_key: Some(SecretString::new(root_key)),
                ..Default::default()
            },
        )
        .await?;
    let _: BackupTargetInfo = admin
        .post(
            "/api/v1/backup/targets",
            &NewBackupTargetRequest {
                name: "disk".into(),
                dir: Some(dir.join("disk").display().to_string()),
                ..Default::default()
            },
        )
        .await?;
    for t in ["nas", "disk"] {
        let _: BackupJobInfo = admin
            .post(
                "/api/v1/backup/jobs",
                &NewBackupJobRequest {
                    name: Some(t.into()),
                    kind: "recordings".into(),
                    target: t.into(),
                    schedule: "manual".into(),
                },
            )
            .await?;
    }
    let mut full = Vec::new();
    for t in ["nas", "disk"] {
        full.push(run_job(&admin, t).await?);
    }

    // 1% new recordings.
    sessions(gw_port, &user_key, recordings / 100, kib, 4)?;
    wait_sessions_ended(&admin).await?;
    let after = sizes(&rec_dir);
    let new_bytes: u64 = after
        .iter()
        .map(|(p, s)| s.saturating_sub(before.get(p).copied().unwrap_or(0)))
        .sum();
    outln!(
        "new recordings: {} files, {} bytes ({:.2}% of {:.1} MiB)",
        after.len() - before.len(),
        new_bytes,
        new_bytes as f64 * 100.0 / total.max(1) as f64,
        total as f64 / 1048576.0
    );
    for (t, first) in ["nas", "disk"].iter().zip(&full) {
        let inc = run_job(&admin, t).await?;
        let how = if *t == "nas" {
            "rsync over ssh (rsync's Total bytes sent)"
        } else {
            "directory (bytes copied)"
        };
        outln!(
            "{how}: full {} bytes in {} ms; incremental {} files, {} bytes in {} ms; sent/new = {:.3} (aim <= 1.1)",
            first.bytes_sent,
            first.duration_ms.unwrap_or(0),
            inc.files_sent,
            inc.bytes_sent,
            inc.duration_ms.unwrap_or(0),
            inc.bytes_sent as f64 / new_bytes.max(1) as f64
        );
    }
    drop(server);
    Ok(ExitCode::SUCCESS)
}
