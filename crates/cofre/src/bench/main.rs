//! `cofre-bench`: the benchmarks, a binary apart from `cofre` (which does not contain them). Each
//! starts its own `cofre server` (the `cofre` binary next to this one, or `COFRE_BIN`).
//! `cofre-bench reveal`: starts its own server on a scratch data dir and measures audited reveals
//! against the same server's /healthz in the same run, so the ratio is comparable across machines.
//! `cofre-bench breakglass`: see [`breakglass`]. `cofre-bench gateway`: see [`gateway`].
//! `cofre-bench backup`: see [`backup`]. `cofre-bench snapshot`: see [`snapshot`].
//! `cofre-bench console`: see [`console`]. `cofre-bench maintenance`: see [`maintenance`].

#[macro_use]
extern crate cofre;

mod backup;
mod breakglass;
mod console;
mod gateway;
mod light;
mod maintenance;
mod snapshot;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use clap::Subcommand;
use cofre::client::{Client, Target};
use cofre_proto::*;
use std::io::BufRead;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "cofre-bench",
    version,
    about = "Cofre's benchmarks: each starts its own server (and, for `gateway`, `backup` and `console`, its own sshd)",
    long_about = "Cofre's benchmarks: each starts its own server (and, for `gateway`, `backup` and `console`, its \
own sshd) from the `cofre` binary next to this one (or the one COFRE_BIN names)."
)]
struct Cli {
    #[command(subcommand)]
    command: BenchCmd,
}

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Audited credential reveals per second and latency, next to /healthz, at several concurrencies.
    Reveal {
        /// Concurrent clients, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        clients: Vec<usize>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Database for the benchmark server (default: SQLite in a scratch dir).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Builds a break-glass file of CREDENTIALS x VERSIONS with the real writer, then times
    /// `cofre breakglass open` until the first search result, next to a plain `age -d` of the file.
    Breakglass {
        #[arg(long, default_value_t = 100_000)]
        credentials: usize,
        #[arg(long, default_value_t = 5)]
        versions: usize,
        /// Where to build the file (default: a scratch dir, removed afterwards).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Gateway vs direct OpenSSH to the same sshd (started by the benchmark; needs root and
    /// /usr/sbin/sshd): bulk throughput, 1-byte echo round trip, `ssh host true` setup; then IDLE
    /// idle recorded sessions held by the server (to a light SSH target inside the benchmark):
    /// memory, descriptors and CPU per idle session, and how fast a new session still opens.
    Gateway {
        /// Size of the bulk transfer (a random file `cat` over ssh); 0 skips it.
        #[arg(long, default_value_t = 512)]
        megabytes: u64,
        /// Echo round trips to time; 0 skips them.
        #[arg(long, default_value_t = 2000)]
        echoes: usize,
        /// Whole `ssh -p PORT host true` runs to time on each path; 0 skips them.
        #[arg(long, default_value_t = 50)]
        setups: usize,
        /// Idle recorded sessions to hold open at once; 0 skips them.
        #[arg(long, default_value_t = 10_000)]
        idle: usize,
        /// New sessions timed on the idle server and again with IDLE sessions held.
        #[arg(long, default_value_t = 20)]
        probes: usize,
        /// Seconds to hold the idle sessions while the server's CPU is measured.
        #[arg(long, default_value_t = 10)]
        hold: u64,
    },
    /// Bytes an incremental backup sends after 1% new recordings, against the new bytes: the
    /// recordings are made by gateway sessions to an sshd the benchmark starts (needs root and
    /// /usr/sbin/sshd) and sent with rsync over ssh to the same sshd, and to a directory.
    Backup {
        /// Size of all recordings together.
        #[arg(long, default_value_t = 1024)]
        megabytes: u64,
        /// How many recordings (at least 100: one more is the 1%).
        #[arg(long, default_value_t = 100)]
        recordings: usize,
    },
    /// Snapshot create and offline restore of a data dir with MEGABYTES of recordings, next to
    /// `tar -I 'zstd -1'` of the same data dir in the same run (needs tar and zstd).
    Snapshot {
        /// MiB of recordings in the data dir (default 1 GiB).
        #[arg(long, default_value_t = 1024)]
        megabytes: u64,
    },
    /// A maintenance window applying a good release (this build, stamped with the next version)
    /// and then a bad one (failing its health check) on an instance with MEGABYTES of recordings
    /// and CREDENTIALS credentials: time from the window's start to the new (or the old) version
    /// serving, and how long the API and the gateway refuse service (needs minisign and tar).
    Maintenance {
        #[arg(long, default_value_t = 1024)]
        megabytes: u64,
        #[arg(long, default_value_t = 100_000)]
        credentials: usize,
    },
    /// The web console's main pages for every role on a seeded instance (TARGETS targets with a
    /// credential each, USERS users in groups with policies, AUDIT audit entries, REQUESTS
    /// access requests), time to first byte and to the whole page, next to /healthz; then a
    /// keystroke's echo through the web terminal, the SSH gateway and direct OpenSSH to the
    /// same sshd (started by the benchmark; needs root and /usr/sbin/sshd).
    Console {
        #[arg(long, default_value_t = 10_000)]
        targets: usize,
        #[arg(long, default_value_t = 1_000)]
        users: usize,
        #[arg(long, default_value_t = 1_000_000)]
        audit: usize,
        #[arg(long, default_value_t = 100)]
        requests: usize,
        /// Timed GETs of each page.
        #[arg(long, default_value_t = 30)]
        rounds: usize,
        /// Echo round trips to time on each path.
        #[arg(long, default_value_t = 1000)]
        echoes: usize,
        /// Skip the keystroke echo (and so the sshd it needs).
        #[arg(long)]
        no_terminal: bool,
        /// Where playwright-core is installed, for the Chromium timings (skipped, saying why,
        /// when it or /usr/bin/chromium is missing).
        #[arg(long, default_value = "crates/cofre/tests/browser/node_modules")]
        browser_modules: std::path::PathBuf,
        /// Loads of each page in Chromium; 0 skips the browser part.
        #[arg(long, default_value_t = 5)]
        browser_rounds: usize,
    },
}

/// The `cofre` binary the benchmarks run: `COFRE_BIN`, else the one next to this binary (cargo
/// builds both into the same directory).
fn cofre_bin() -> Result<std::path::PathBuf> {
    if let Some(bin) = std::env::var_os("COFRE_BIN") {
        return Ok(bin.into());
    }
    let me = std::env::current_exe().context("where is cofre-bench")?;
    let bin = me.with_file_name("cofre");
    if !bin.is_file() {
        bail!(
            "no cofre binary at {} (build it too: cargo build --release -p cofre; or set COFRE_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The scratch dir lives as long as the server that uses it.
struct ServerProcess(std::process::Child, #[allow(dead_code)] tempfile::TempDir);

impl ServerProcess {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_server(database_url: Option<&str>) -> Result<(ServerProcess, Target, String, u16)> {
    start_server_configured(database_url, None).await
}

/// [`start_server`] with `config` (TOML) as its `--config` file.
async fn start_server_configured(
    database_url: Option<&str>,
    config: Option<&str>,
) -> Result<(ServerProcess, Target, String, u16)> {
    let dir = tempfile::tempdir()?;
    let config_file = match config {
        Some(text) => {
            let path = dir.path().join("cofre.toml");
            std::fs::write(&path, text)?;
            Some(path)
        }
        None => None,
    };
    let (proc, target, otp, ssh_port) =
        start_server_in(dir, database_url, config_file.as_deref()).await?;
    let otp = otp.ok_or_else(|| anyhow!("the benchmark server wrote no initial admin password"))?;
    Ok((proc, target, otp, ssh_port))
}

/// A server on `DIR/data` (new, or one a benchmark has seeded); the initial admin's one-time
/// password if this start created the admin.
async fn start_server_in(
    dir: tempfile::TempDir,
    database_url: Option<&str>,
    config_file: Option<&std::path::Path>,
) -> Result<(ServerProcess, Target, Option<String>, u16)> {
    // In-process: the CPU figures read /proc of the process that serves, not of its supervisor.
    start_server_as(dir, database_url, config_file, false).await
}

/// [`start_server_in`] under the supervisor, as `cofre server` runs in production: what a
/// maintenance window's switch-over needs.
async fn start_server_supervised(
    dir: tempfile::TempDir,
    config_file: Option<&std::path::Path>,
) -> Result<(ServerProcess, Target, Option<String>, u16)> {
    start_server_as(dir, None, config_file, true).await
}

async fn start_server_as(
    dir: tempfile::TempDir,
    database_url: Option<&str>,
    config_file: Option<&std::path::Path>,
    supervised: bool,
) -> Result<(ServerProcess, Target, Option<String>, u16)> {
    let mut cmd = std::process::Command::new(cofre_bin()?);
    cmd.arg("server");
    if !supervised {
        cmd.arg("--no-supervisor");
    }
    cmd.arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--ssh-listen")
        .arg("127.0.0.1:0")
        // The changes a maintenance window refuses (503) are what is measured, not failures.
        .env(
            "COFRE_LOG",
            if supervised {
                "warn,tower_http=off"
            } else {
                "warn"
            },
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(url) = database_url {
        cmd.arg("--database-url").arg(url);
    }
    if let Some(path) = config_file {
        cmd.arg("--config").arg(path);
    }
    let mut child = cmd.spawn().context("starting the benchmark server")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let proc = ServerProcess(child, dir);
    let (mut url, mut fp, mut pw_file, mut ssh_port) = (None, None, None, None);
    let mut lines = std::io::BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line?;
        if let Some(u) = line.strip_prefix("cofre listening on ") {
            url = Some(u.to_owned());
        } else if let Some(f) = line.strip_prefix("tls fingerprint (sha256): ") {
            fp = Some(f.to_owned());
        } else if let Some(a) = line.strip_prefix("ssh gateway listening on ") {
            ssh_port = a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        } else if let Some(p) = line.strip_prefix("initial admin password written to ") {
            pw_file = Some(p.to_owned());
        } else if line == "ready" {
            break;
        }
    }
    // What the server (or a version the supervisor starts later) prints after this is read and
    // dropped: a closed pipe would fail its writes.
    std::thread::spawn(move || lines.for_each(drop));
    let (Some(url), Some(fp), Some(ssh_port)) = (url, fp, ssh_port) else {
        bail!("the benchmark server did not start");
    };
    let otp = match pw_file {
        Some(f) => Some(std::fs::read_to_string(f)?.trim().to_owned()),
        None => None,
    };
    Ok((
        proc,
        Target {
            server: url,
            fingerprint: Some(fp),
            ca_cert: None,
        },
        otp,
        ssh_port,
    ))
}

/// `user` logged in with a password that need not be changed.
async fn password_login(client: &Client, user: &str, password: &str) -> Result<Client> {
    let r: LoginResponse = client
        .post(
            "/api/v1/auth/login",
            &LoginRequest {
                username: user.into(),
                password: SecretString::new(password.into()),
                totp_code: None,
            },
        )
        .await?;
    Ok(client.with_token(Some(r.token.expose().to_owned())))
}

async fn login(client: &Client, user: &str, password: &str, new_password: &str) -> Result<Client> {
    let authed = password_login(client, user, password).await?;
    let changed: ChangePasswordResponse = authed
        .post(
            "/api/v1/auth/password",
            &ChangePasswordRequest {
                current_password: SecretString::new(password.into()),
                new_password: SecretString::new(new_password.into()),
            },
        )
        .await?;
    let token = changed
        .token
        .ok_or_else(|| anyhow!("no token after password change"))?;
    Ok(client.with_token(Some(token.expose().to_owned())))
}

/// Target `name` at 127.0.0.1:`port`, tagged `tag`, with `credential` on it.
async fn add_target(
    admin: &Client,
    name: &str,
    port: u16,
    tag: &str,
    credential: &CreateCredentialRequest,
) -> Result<()> {
    let _: TargetInfo = admin
        .post(
            "/api/v1/targets",
            &CreateTargetRequest {
                name: name.into(),
                host: "127.0.0.1".into(),
                port: Some(port),
                protocol: None,
                tags: vec![tag.into()],
            },
        )
        .await?;
    let _: CredentialInfo = admin
        .post(&format!("/api/v1/targets/{name}/credentials"), credential)
        .await?;
    Ok(())
}

/// The `root` account with the private key `dir/root_key` (which the benchmark's sshd and
/// light target let in).
fn root_key_credential(dir: &std::path::Path) -> Result<CreateCredentialRequest> {
    Ok(CreateCredentialRequest {
        account: "root".into(),
        password: None,
        private_key: Some(SecretString::new(std::fs::read_to_string(
            dir.join("root_key"),
        )?)),
    })
}

/// What every benchmark needs: user `bench` in group `bench`, target `db01` (127.0.0.1:`port`,
/// tagged `bench`), the given credential on it, and a policy granting the group `access`.
async fn provision(
    admin: &Client,
    port: u16,
    credential: CreateCredentialRequest,
    access: &str,
    outcome: &str,
) -> Result<CreateUserResponse> {
    let user: CreateUserResponse = admin
        .post(
            "/api/v1/users",
            &CreateUserRequest {
                username: "bench".into(),
                role: "user".into(),
                groups: vec!["bench".into()],
                ..Default::default()
            },
        )
        .await?;
    add_target(admin, "db01", port, "bench", &credential).await?;
    let _: PolicyInfo = admin
        .post(
            "/api/v1/policies",
            &CreatePolicyRequest {
                name: "bench".into(),
                group: "bench".into(),
                targets: vec!["tag:bench".into()],
                allow: vec![access.into()],
                outcome: outcome.into(),
                ..Default::default()
            },
        )
        .await?;
    Ok(user)
}

struct Measurement {
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

async fn measure<F, Fut>(clients: usize, seconds: u64, op: F) -> Result<Measurement>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                op().await?;
                lat.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    Ok(Measurement {
        ops_per_sec: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(run(cli.command)));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: BenchCmd) -> Result<ExitCode> {
    let (clients, seconds, database_url) = match cmd {
        BenchCmd::Reveal {
            clients,
            seconds,
            database_url,
        } => (clients, seconds, database_url),
        BenchCmd::Breakglass {
            credentials,
            versions,
            dir,
        } => return breakglass::run(credentials, versions, dir),
        BenchCmd::Gateway {
            megabytes,
            echoes,
            setups,
            idle,
            probes,
            hold,
        } => {
            return gateway::run(gateway::Sizes {
                megabytes,
                echoes,
                setups,
                idle,
                probes,
                hold: Duration::from_secs(hold),
            })
            .await
        }
        BenchCmd::Backup {
            megabytes,
            recordings,
        } => return backup::run(megabytes, recordings).await,
        BenchCmd::Snapshot { megabytes } => return snapshot::run(megabytes).await,
        BenchCmd::Maintenance {
            megabytes,
            credentials,
        } => return maintenance::run(megabytes, credentials).await,
        BenchCmd::Console {
            targets,
            users,
            audit,
            requests,
            rounds,
            echoes,
            no_terminal,
            browser_modules,
            browser_rounds,
        } => {
            return console::run(
                console::Sizes {
                    targets,
                    users,
                    audit,
                    requests,
                },
                rounds,
                echoes,
                !no_terminal,
                (browser_rounds > 0).then_some(console::BrowserOptions {
                    modules: browser_modules,
                    rounds: browser_rounds,
                }),
            )
            .await
        }
    };
    let (_server, target, otp, _) = start_server(database_url.as_deref()).await?;
    let anon = Client::new(&target, None)?;
    let admin = login(&anon, "admin", &otp, "bench-admin-password").await?;
    let user = provision(
        &admin,
        22,
        CreateCredentialRequest {
            account: "root".into(),
            password: Some(SecretString::new("bench-secret".into())),
            private_key: None,
        },
        "reveal",
        "justify",
    )
    .await?;
    let bench = login(
        &anon,
        "bench",
        user.one_time_password.expose(),
        "bench-user-password",
    )
    .await?;
    let bench = std::sync::Arc::new(bench);
    let anon = std::sync::Arc::new(anon);
    outln!(
        "database: {}; {} s per point; the server runs on this machine too",
        if database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        seconds
    );
    outln!("clients\treveals/s\tp50 ms\tp99 ms\thealthz/s\thealthz p50 ms\treveal/healthz");
    for n in clients {
        let b = bench.clone();
        let reveal = measure(n, seconds, move || {
            let b = b.clone();
            async move {
                let r: RevealResponse = b
                    .post(
                        "/api/v1/targets/db01/credentials/root/reveal",
                        &RevealRequest {
                            reason: Some("benchmark".into()),
                            version: None,
                        },
                    )
                    .await?;
                if r.secret.expose() != "bench-secret" {
                    bail!("wrong secret revealed");
                }
                Ok(())
            }
        })
        .await?;
        let a = anon.clone();
        let health = measure(n, seconds, move || {
            let a = a.clone();
            async move {
                let _: Health = a.get("/healthz").await?;
                Ok(())
            }
        })
        .await?;
        outln!(
            "{n}\t{:.0}\t{:.2}\t{:.2}\t{:.0}\t{:.2}\t{:.3}",
            reveal.ops_per_sec,
            reveal.p50.as_secs_f64() * 1e3,
            reveal.p99.as_secs_f64() * 1e3,
            health.ops_per_sec,
            health.p50.as_secs_f64() * 1e3,
            reveal.ops_per_sec / health.ops_per_sec
        );
    }
    Ok(ExitCode::SUCCESS)
}
