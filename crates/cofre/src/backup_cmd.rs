//! `cofre backup ...`: targets (where copies go), jobs (what, where, when), runs and status.

use crate::client::path_segment;
use crate::commands::Ctx;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use cofre_proto::*;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub(crate) enum BackupCmd {
    /// Where backups go: a directory, a host over rsync+SSH, or an S3-compatible bucket.
    #[command(subcommand)]
    Target(TargetCmd),
    /// What is backed up where, and when.
    #[command(subcommand)]
    Job(JobCmd),
    /// Run a job now and follow its progress (the target is write-tested first).
    Run {
        /// The job's name (`cofre backup status` lists them).
        job: String,
        /// Start it and print the run id, without waiting for the end.
        #[arg(long)]
        no_wait: bool,
    },
    /// Every job's last success and last failure, the run in progress, and the next run.
    Status,
}

#[derive(Subcommand)]
pub(crate) enum TargetCmd {
    /// Add a target. Examples:
    ///   cofre backup target add local --dir /mnt/backup
    ///   cofre backup target add client-nas --ssh backup@nas.corp:/srv/cofre --key-file id_ed25519
    ///   cofre backup target add bucket --s3 s3://cofre-backups/prod --endpoint https://s3.example.com
    ///     (keys from --access-key-id and --secret-access-key-stdin, or AWS_ACCESS_KEY_ID and
    ///     AWS_SECRET_ACCESS_KEY)
    #[command(verbatim_doc_comment)]
    Add(Box<TargetAddArgs>),
    /// Every backup target, its pinned host keys and how its last contact went.
    List,
    /// Write, read back and delete a probe file on the target. An SSH host's keys are pinned at
    /// the first contact (this, or the first run) and printed.
    Test { name: String },
    /// Remove a target no job uses (it names the jobs that still do). Its sealed key or secret
    /// is dropped; what was copied there stays.
    Remove { name: String },
}

#[derive(Args)]
pub(crate) struct TargetAddArgs {
    /// A lowercase name, e.g. client-nas.
    name: String,
    /// Whose backups it holds: credentials (break-glass files, the customer's in every mode) or
    /// system (system, snapshots, recordings). Default: the one duty the caller's role keeps;
    /// for a role that keeps both, the target's first job decides.
    #[arg(long, value_name = "credentials|system")]
    duty: Option<String>,
    /// An absolute directory on the server's machine (a NAS mount, a removable disk).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["ssh", "s3"])]
    dir: Option<String>,
    /// user@host:/absolute/path, reached with rsync over SSH.
    #[arg(
        long,
        value_name = "USER@HOST:PATH",
        conflicts_with = "s3",
        requires = "key_file"
    )]
    ssh: Option<String>,
    /// SSH port (default 22).
    #[arg(long, requires = "ssh")]
    port: Option<u16>,
    /// The private key the server logs in with; it is sealed in the vault.
    #[arg(long, value_name = "FILE", requires = "ssh")]
    key_file: Option<PathBuf>,
    /// The host's keys in known_hosts format (e.g. from `ssh-keyscan HOST`); without it they are
    /// pinned at first contact and printed, and never silently accepted after that.
    #[arg(long, value_name = "FILE", requires = "ssh")]
    known_hosts: Option<PathBuf>,
    /// s3://bucket/prefix of an S3-compatible bucket.
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    s3: Option<String>,
    /// The S3 endpoint URL (default: AWS).
    #[arg(long, value_name = "URL", requires = "s3")]
    endpoint: Option<String>,
    /// The S3 region (default us-east-1).
    #[arg(long, requires = "s3")]
    region: Option<String>,
    /// The S3 access key id (used with --s3 only).
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    access_key_id: Option<String>,
    /// Read the S3 secret access key from the first line of stdin (else AWS_SECRET_ACCESS_KEY).
    #[arg(long, requires = "s3")]
    secret_access_key_stdin: bool,
}

#[derive(Subcommand)]
pub(crate) enum JobCmd {
    /// Add a job, e.g. `cofre backup job add --kind recordings --target client-nas --schedule "every 1h"`.
    Add {
        /// recordings (incremental), credentials (break-glass files; also after each new file),
        /// snapshots (copies), or system (database copy, config and keyring, sealed).
        #[arg(long)]
        kind: String,
        #[arg(long)]
        target: String,
        /// `every 30m`, `every 1h`, `every 1d`, `daily 03:00` (in the server's `[instance] time_zone`), or `manual`.
        #[arg(long)]
        schedule: String,
        /// Default: KIND-TARGET.
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a job that is not running; its runs stay in the history and what it copied stays
    /// on the target.
    Remove { name: String },
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn run_line(r: &BackupRunInfo) -> String {
    let mut s = format!(
        "run {} {} ({}, started {})",
        r.id, r.status, r.reason, r.started_at
    );
    if r.status == "ok" {
        s.push_str(&format!(
            ": {} files, {} sent in {} ms",
            r.files_sent,
            human_bytes(r.bytes_sent),
            r.duration_ms.unwrap_or(0)
        ));
    }
    if let Some(e) = &r.error {
        s.push_str(&format!(": {e}"));
    }
    s
}

fn print_target(t: &BackupTargetInfo) {
    let port = t.port.map(|p| format!(" port {p}")).unwrap_or_default();
    let endpoint = t
        .endpoint
        .as_ref()
        .map(|e| format!(" endpoint {e}"))
        .unwrap_or_default();
    outln!("{}\t{}\t{}{port}{endpoint}", t.name, t.kind, t.location);
    match &t.duty {
        Some(d) => outln!("  duty: {d}"),
        None => outln!("  duty: not yet (its first job decides)"),
    }
    for k in &t.host_keys {
        outln!("  pinned host key: {k}");
    }
    if let Some(at) = &t.last_ok_at {
        outln!("  last worked: {at}");
    }
    if let (Some(at), Some(e)) = (&t.last_error_at, &t.last_error) {
        outln!("  last failed: {at}: {e}");
    }
}

pub(crate) async fn run(ctx: &Ctx, cmd: BackupCmd) -> Result<ExitCode> {
    match cmd {
        BackupCmd::Target(TargetCmd::Add(a)) => target_add(ctx, *a).await,
        BackupCmd::Target(TargetCmd::Remove { name }) => {
            crate::offboarding_cmd::backup_target_remove(ctx, &name).await
        }
        BackupCmd::Job(JobCmd::Remove { name }) => {
            crate::offboarding_cmd::backup_job_remove(ctx, &name).await
        }
        BackupCmd::Target(TargetCmd::List) => {
            let list: Vec<BackupTargetInfo> = ctx.client.get("/api/v1/backup/targets").await?;
            ctx.print(&list, |l| {
                for t in l {
                    print_target(t);
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        BackupCmd::Target(TargetCmd::Test { name }) => {
            let r: BackupTestResult = ctx
                .client
                .post(
                    &format!("/api/v1/backup/targets/{}/test", path_segment(&name)),
                    &(),
                )
                .await?;
            ctx.print(&r, |r| {
                for k in &r.pinned_host_keys {
                    outln!("pinned host key (first contact; check it with the host's admin): {k}");
                }
                if r.ok {
                    outln!("{}: write test passed ({} ms)", r.target, r.duration_ms);
                }
            })?;
            match r.error {
                None => Ok(ExitCode::SUCCESS),
                Some(e) => Err(anyhow!("{name}: write test failed: {e}")),
            }
        }
        BackupCmd::Job(JobCmd::Add {
            kind,
            target,
            schedule,
            name,
        }) => {
            let j: BackupJobInfo = ctx
                .client
                .post(
                    "/api/v1/backup/jobs",
                    &NewBackupJobRequest {
                        name,
                        kind,
                        target,
                        schedule,
                    },
                )
                .await?;
            ctx.print(&j, |j| {
                outln!(
                    "job {} added: {} to {}, {}{}",
                    j.name,
                    j.kind,
                    j.target,
                    j.schedule,
                    j.next_run
                        .as_ref()
                        .map(|n| format!(" (next run {n})"))
                        .unwrap_or_default()
                );
            })?;
            Ok(ExitCode::SUCCESS)
        }
        BackupCmd::Run { job, no_wait } => run_job(ctx, &job, no_wait).await,
        BackupCmd::Status => {
            let s: BackupStatus = ctx.client.get("/api/v1/backup/status").await?;
            ctx.print(&s, |s| {
                if s.jobs.is_empty() {
                    outln!("no backup jobs (add one with `cofre backup job add`)");
                }
                for j in &s.jobs {
                    outln!("{}\t{} to {}\t{}", j.name, j.kind, j.target, j.schedule);
                    outln!("  duty: {}", j.duty);
                    match &j.last_success {
                        Some(r) => outln!("  last success: {}", run_line(r)),
                        None => outln!("  last success: never"),
                    }
                    if let Some(r) = &j.last_failure {
                        outln!("  last failure: {}", run_line(r));
                    }
                    if let Some(r) = &j.running {
                        outln!("  running: {}", run_line(r));
                    }
                    if let Some(n) = &j.next_run {
                        outln!("  next run: {n}");
                    }
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn target_add(ctx: &Ctx, a: TargetAddArgs) -> Result<ExitCode> {
    let mut req = NewBackupTargetRequest {
        name: a.name,
        duty: a.duty,
        dir: a.dir,
        ssh: a.ssh,
        port: a.port,
        s3: a.s3.clone(),
        endpoint: a.endpoint,
        region: a.region,
        ..Default::default()
    };
    if let Some(f) = &a.key_file {
        let key = Zeroizing::new(
            std::fs::read_to_string(f).with_context(|| format!("--key-file {}", f.display()))?,
        );
        req.ssh_private_key = Some(SecretString::new(key.to_string()));
    }
    if let Some(f) = &a.known_hosts {
        req.known_hosts = Some(
            std::fs::read_to_string(f).with_context(|| format!("--known-hosts {}", f.display()))?,
        );
    }
    if a.s3.is_some() {
        req.access_key_id = a.access_key_id;
        let secret = if a.secret_access_key_stdin {
            let mut line = Zeroizing::new(String::new());
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the secret access key from stdin")?;
            Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned())
        } else {
            Zeroizing::new(std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default())
        };
        if secret.is_empty() {
            bail!("an S3 target needs its secret access key: --secret-access-key-stdin, or AWS_SECRET_ACCESS_KEY");
        }
        req.secret_access_key = Some(SecretString::new(secret.to_string()));
    }
    let t: BackupTargetInfo = ctx.client.post("/api/v1/backup/targets", &req).await?;
    ctx.print(&t, |t| {
        out!("target added: ");
        print_target(t);
        if t.kind == "ssh" && t.host_keys.is_empty() {
            outln!("the host's keys are pinned at first contact: run `cofre backup target test {}` and check the fingerprint", t.name);
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn run_job(ctx: &Ctx, job: &str, no_wait: bool) -> Result<ExitCode> {
    let started: BackupRunInfo = ctx
        .client
        .post(
            &format!("/api/v1/backup/jobs/{}/run", path_segment(job)),
            &(),
        )
        .await?;
    if no_wait {
        ctx.print(&started, |r| outln!("run {} started", r.id))?;
        return Ok(ExitCode::SUCCESS);
    }
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = String::new();
    let run = loop {
        let r: BackupRunInfo = ctx
            .client
            .get(&format!("/api/v1/backup/runs/{}", started.id))
            .await?;
        if r.status != "running" {
            break r;
        }
        if let Some(p) = &r.progress {
            let line = format!(
                "{job}: {} {}/{} files, {} of {}",
                p.phase,
                p.files_done,
                p.files_total,
                human_bytes(p.bytes_done),
                human_bytes(p.bytes_total)
            );
            // On a terminal only: elsewhere stderr carries nothing but the error, if any.
            if terminal && line != last_line {
                let mut err = std::io::stderr();
                let _ = write!(err, "\r\x1b[2K{line}");
                let _ = err.flush();
                last_line = line;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    if terminal && !last_line.is_empty() {
        eprintln!();
    }
    ctx.print(&run, |r| outln!("{job}: {}", run_line(r)))?;
    if run.status == "ok" {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(anyhow!(
            "backup run {} of {job} failed: {}",
            run.id,
            run.error.as_deref().unwrap_or("no reason recorded")
        ))
    }
}
