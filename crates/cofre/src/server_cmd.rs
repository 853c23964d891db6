//! `cofre server` and `cofre init`.

use anyhow::{Context, Result};
use clap::Args;
use cofre_app::config::{Overrides, ServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Clone)]
pub(crate) struct ServerOptions {
    /// Where the instance keeps its state (created on first start).
    #[arg(long, env = "COFRE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB (default: SQLite in the data dir).
    #[arg(long, env = "COFRE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// TOML config file; flags and COFRE_* variables win over it.
    #[arg(long, env = "COFRE_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct ServerArgs {
    #[command(flatten)]
    pub opts: ServerOptions,
    /// Address of the HTTPS API (default 127.0.0.1:8443; port 0 picks a free one).
    #[arg(long, env = "COFRE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the SSH gateway (default 127.0.0.1:2222; port 0 picks a free one).
    #[arg(long, env = "COFRE_SSH_LISTEN")]
    pub ssh_listen: Option<SocketAddr>,
    /// This node's name in `cofre node list` (default: the host name; `[cluster] node_name`).
    #[arg(long, env = "COFRE_NODE_NAME")]
    pub node_name: Option<String>,
    /// Serve in this process, without the supervisor that a maintenance window's switch-over to
    /// a new version needs (windows then end `failed` at that step).
    #[arg(long, env = "COFRE_NO_SUPERVISOR")]
    pub no_supervisor: bool,
}

#[derive(Args)]
pub(crate) struct InitArgs {
    #[command(flatten)]
    pub opts: ServerOptions,
    /// Split the unseal key into this many Shamir shares (give one to each custodian).
    #[arg(long, requires = "unseal_threshold")]
    pub unseal_shares: Option<u8>,
    /// How many shares it takes to unseal.
    #[arg(long, requires = "unseal_shares")]
    pub unseal_threshold: Option<u8>,
    /// A demo instance: sample users (demo-alice, demo-bob, demo-carol; their passwords in
    /// DATA_DIR/demo-passwords, kept, not one-time, and the admin's too), the group demo-ops,
    /// targets demo-web01 and demo-db01 with credentials, and two policies, all marked as sample
    /// data. `cofre instance promote --to production` later reports what is left of them.
    #[arg(long, conflicts_with = "unseal_shares")]
    pub demo: bool,
}

fn load_config(
    opts: &ServerOptions,
    listen: Option<SocketAddr>,
    ssh_listen: Option<SocketAddr>,
    node_name: Option<String>,
) -> Result<ServerConfig> {
    Ok(ServerConfig::load(
        opts.config.as_deref(),
        Overrides {
            data_dir: opts.data_dir.clone(),
            listen,
            database_url: opts.database_url.clone(),
            ssh_listen,
            node_name,
        },
    )?)
}

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("COFRE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let tail = cofre_app::diagnostics::log_tail();
    let _ = tracing_subscriber::registry()
        .with(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour codes only for a person at a terminal, never in a log file or journal.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        // The same lines, plain, into the tail that `cofre diagnostics logs` reads.
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || tail.writer())
                .with_ansi(false),
        )
        .try_init();
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The addresses a switch-over's predecessor listened on, which win over every other setting.
fn handover_address(var: &str) -> Result<Option<SocketAddr>> {
    match std::env::var(var) {
        Ok(v) => {
            Ok(Some(v.parse().with_context(|| {
                format!("{var}: {v:?} is not an address")
            })?))
        }
        Err(_) => Ok(None),
    }
}

/// `cofre server`: the supervisor, which runs the server as its child, unless this process is
/// that child or `--no-supervisor` was given.
pub(crate) async fn server(args: ServerArgs) -> Result<ExitCode> {
    if !args.no_supervisor && !cofre_app::switch::supervised() {
        let config = load_config(
            &args.opts,
            args.listen,
            args.ssh_listen,
            args.node_name.clone(),
        )?;
        return crate::supervisor::run(config.data_dir).await;
    }
    serve(args).await
}

/// Reads the supervisor's lines on stdin: `commit` is handled here, `stop` resolves the returned
/// receiver; end of file (the supervisor is gone, however it died) ends this process at once.
/// A thread of its own, not the runtime's: a read that never returns would hold the runtime's
/// shutdown.
fn listen_to_supervisor(
    app: std::sync::Arc<cofre_app::services::App>,
) -> tokio::sync::mpsc::Receiver<()> {
    let (line_tx, mut line_rx) = tokio::sync::mpsc::channel::<String>(4);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) => {
                    if line_tx.blocking_send(l).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        eprintln!("cofre: the supervisor is gone; exiting");
        std::process::exit(1);
    });
    let (stop_tx, stop_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(line) = line_rx.recv().await {
            match line.trim() {
                "commit" => {
                    if let Err(e) = app.finish_handover_done().await {
                        tracing::error!(error = %e, "cannot record the end of the update");
                    }
                }
                "stop" => {
                    let _ = stop_tx.send(()).await;
                }
                other => tracing::warn!(line = other, "unknown word from the supervisor"),
            }
        }
    });
    stop_rx
}

async fn serve(args: ServerArgs) -> Result<ExitCode> {
    init_logging();
    let mut config = load_config(
        &args.opts,
        args.listen,
        args.ssh_listen,
        args.node_name.clone(),
    )?;
    if let Some(a) = handover_address(crate::supervisor::LISTEN_ENV)? {
        config.listen = a;
    }
    if let Some(a) = handover_address(crate::supervisor::SSH_LISTEN_ENV)? {
        config.ssh_listen = a;
    }
    if let Some(a) = handover_address(crate::supervisor::EXTERNAL_LISTEN_ENV)? {
        config.external.listen = Some(a);
    }
    let started = cofre_app::start(config.clone()).await.context("server")?;
    let app = started.app.clone();
    let https = cofre_http::bind(app.clone(), &config)
        .await
        .context("server")?;
    let gateway = cofre_gateway::Gateway::bind(app.clone(), config.ssh_listen)
        .await
        .context("ssh gateway")?;
    let external = cofre_http::bind_external(app.clone(), &config)
        .await
        .context("external listener")?;
    // stdout is for the operator (and scripts waiting for `ready`); logs go to stderr.
    let bound = cofre_app::services::handover::Bound {
        listen: https.addr,
        ssh_listen: gateway.addr,
        external_listen: external.as_ref().map(|x| x.addr),
    };
    app.start_node(bound.clone())
        .await
        .context("registering this node")?;
    app.set_bound(bound);
    outln!("cofre listening on https://{}", https.addr);
    outln!("tls fingerprint (sha256): {}", https.fingerprint);
    outln!("ssh gateway listening on {}", gateway.addr);
    outln!("ssh host key: {}", gateway.host_key_fingerprint);
    if let Some(x) = &external {
        outln!("external listener (invitations) on https://{}", x.addr);
        outln!("external tls fingerprint (sha256): {}", x.fingerprint);
    }
    if let Some(path) = &started.admin_password_file {
        outln!("initial admin password written to {}", path.display());
    }
    if started.sealed {
        outln!("sealed: unseal with `cofre operator unseal`");
    }
    outln!("ready");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api = tokio::spawn(https.serve(until_stopped(stopped.clone())));
    let ssh = tokio::spawn(gateway.serve(until_stopped(stopped.clone())));
    let invitations = external.map(|x| tokio::spawn(x.serve(until_stopped(stopped))));
    let mut from_supervisor = if cofre_app::switch::supervised() {
        Some(listen_to_supervisor(app.clone()))
    } else {
        None
    };
    let mut exit_requests = app.exit_requests();
    let exit_code = tokio::select! {
        _ = shutdown_signal() => None,
        Some(()) = async {
            match from_supervisor.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        } => None,
        code = exit_requests.wait_for(|c| c.is_some()) => code.ok().and_then(|c| *c),
    };
    // Draining: both listeners stop accepting, live sessions are told and given
    // `[server] drain_seconds` to end, the rest are ended (recording flushed, `session.end`
    // audited), and only then does the process exit.
    tracing::info!(
        sessions = app.live.count(),
        drain_seconds = config.server.drain_seconds,
        "shutting down"
    );
    let _ = stop.send(true);
    let ended = app
        .sessions()
        .drain_sessions(std::time::Duration::from_secs(config.server.drain_seconds))
        .await;
    if ended > 0 {
        tracing::info!(sessions = ended, "sessions ended by the shutdown");
    }
    let _ = tokio::join!(api, ssh);
    if let Some(x) = invitations {
        let _ = x.await;
    }
    app.store.close().await;
    Ok(exit_code.map_or(ExitCode::SUCCESS, |c| {
        ExitCode::from(u8::try_from(c).unwrap_or(1))
    }))
}

pub(crate) async fn init(args: InitArgs) -> Result<ExitCode> {
    init_logging();
    let config = load_config(&args.opts, None, None, None)?;
    let seal = match (args.unseal_shares, args.unseal_threshold) {
        (Some(shares), Some(threshold)) => cofre_app::SealChoice::Shamir { shares, threshold },
        _ => cofre_app::SealChoice::KeyFile,
    };
    let (app, report) = cofre_app::initialise(&config, seal).await?;
    let demo_passwords = if args.demo && report.keyring_created {
        Some(cofre_app::load_demo(&app, &config).await)
    } else {
        None
    };
    app.store.close().await;
    if !report.keyring_created {
        outln!(
            "data dir {} was already initialised; nothing changed",
            config.data_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    outln!("initialised {}", config.data_dir.display());
    if !report.unseal_shares.is_empty() {
        outln!(
            "unseal shares: give each to a different custodian; the server starts sealed and needs {} of them",
            match seal {
                cofre_app::SealChoice::Shamir { threshold, .. } => threshold,
                cofre_app::SealChoice::KeyFile => 0,
            }
        );
        for (i, share) in report.unseal_shares.iter().enumerate() {
            outln!("unseal share {}: {}", i + 1, share.as_str());
        }
    }
    if let Some(path) = &report.admin_password_file {
        outln!("initial admin password written to {}", path.display());
    }
    if let Some(demo) = demo_passwords {
        let path = demo.context("loading the demo data")?;
        outln!("demo data loaded (type: demo)");
        outln!("sample users' passwords written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
