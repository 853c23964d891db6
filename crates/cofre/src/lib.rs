//! `cofre`: the server and its command-line client, in one binary (`main.rs` calls [`main`]).
//! The benchmarks are a binary of their own, `cofre-bench` (`bench/main.rs`), which shares the
//! HTTP client and output from here; the `cofre` binary does not contain them.

/// `outln!` for the CLI's output (see `output`): a closed stdout ends the command quietly.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*), true)
    };
}

/// `out!` for the CLI's output (see `output`).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*), false)
    };
}

mod backup_cmd;
mod breakglass_cmd;
pub mod client;
mod commands;
mod copy_cmd;
mod diagnostics_cmd;
mod emergency_cmd;
mod governance_cmd;
mod instance_cmd;
mod invite_cmd;
mod maintenance_cmd;
mod network_cmd;
mod offboarding_cmd;
pub mod output;
mod requests_cmd;
mod rotation_cmd;
mod server_cmd;
mod sessions_cmd;
mod siem_cmd;
mod snapshot_cmd;
mod sso_cmd;
mod supervisor;
mod support_cmd;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cofre",
    version = cofre_app::switch::version(),
    about = "Cofre: privileged access management — vault, policies and a tamper-evident audit trail",
    long_about = "Cofre keeps privileged credentials encrypted, reveals them only as policy allows, and \
records every step in a hash-chained audit trail.\n\n\
Start a server with no configuration:   cofre server\n\
Then log in (the server prints its certificate fingerprint and where the admin's one-time password is):\n\
  cofre login --server https://127.0.0.1:8443 --fingerprint SHA256HEX --user admin"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Client options; they are ignored by `server` and `init`.
#[derive(Args, Clone)]
pub struct GlobalArgs {
    /// Server URL, e.g. https://cofre.example:8443 (saved by `login`).
    #[arg(long, global = true, env = "COFRE_SERVER")]
    pub server: Option<String>,
    /// SHA-256 fingerprint of the server's certificate, as `cofre server` prints it at start.
    #[arg(long, global = true, env = "COFRE_FINGERPRINT")]
    pub fingerprint: Option<String>,
    /// Trust the server through this CA certificate (PEM) instead of a pinned fingerprint.
    #[arg(long, global = true, env = "COFRE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Where `login` keeps the server, its fingerprint and the token (mode 0600).
    #[arg(long, global = true, env = "COFRE_CLIENT_CONFIG")]
    pub client_config: Option<PathBuf>,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: HTTPS API and SSH gateway. First start creates the data dir, keyring, TLS
    /// certificate, SSH host key and admin. SIGTERM drains: live sessions are told and get
    /// `[server] drain_seconds` (30) to end before the rest are ended. Runs as a supervisor of
    /// the serving process, which a maintenance window's switch-over to a new version (and its
    /// rollback) needs; `--no-supervisor` serves in this process.
    Server(server_cmd::ServerArgs),
    /// Initialise a data dir without starting, e.g. sealed with Shamir unseal shares.
    Init(server_cmd::InitArgs),
    /// Copy the whole database into an empty PostgreSQL database (growing from embedded),
    /// checked there: the same rows per table, the audit chain whole. Offline.
    CopyDatabase(copy_cmd::CopyDatabaseArgs),
    /// Log in and remember the server and token.
    Login(commands::LoginArgs),
    /// Forget the token (and end it on the server).
    Logout,
    /// Who the saved token belongs to.
    Whoami,
    /// Change your password.
    Passwd(commands::PasswdArgs),
    /// Time-based one-time passwords (RFC 6238) for your account.
    #[command(subcommand)]
    Totp(commands::TotpCmd),
    /// Users (admin).
    #[command(subcommand)]
    User(commands::UserCmd),
    /// Groups, which policies grant access to (admin).
    #[command(subcommand)]
    Group(commands::GroupCmd),
    /// Targets: hosts that credentials belong to.
    #[command(subcommand)]
    Target(commands::TargetCmd),
    /// Credentials: accounts on targets, with every version kept.
    #[command(subcommand)]
    Credential(commands::CredentialCmd),
    /// Policies: which group may reveal or open sessions on which targets, and how.
    #[command(subcommand)]
    Policy(commands::PolicyCmd),
    /// Dual control: changes that widen access, held for a second admin (list, show, approve, deny).
    #[command(subcommand)]
    Change(governance_cmd::ChangeCmd),
    /// The instance (Orbit): facts and warnings, its type, disabling and enabling the application.
    #[command(subcommand)]
    Instance(instance_cmd::InstanceCmd),
    /// The nodes on this database (several servers on one PostgreSQL): list.
    #[command(subcommand)]
    Node(instance_cmd::NodeCmd),
    /// Release files for updates (Orbit): upload (verified by the server), list.
    #[command(subcommand)]
    Release(instance_cmd::ReleaseCmd),
    /// Maintenance windows for updates (Orbit): propose, decide by mode, cancel, watch live.
    #[command(subcommand)]
    Maintenance(maintenance_cmd::MaintenanceCmd),
    /// Vendor support grants: request (support), approve or deny (customer admins), revoke,
    /// and what was done under a grant.
    #[command(subcommand)]
    Support(support_cmd::SupportCmd),
    /// Invitations for third parties without a Cofre account: a one-time link by e-mail to a
    /// recorded web terminal on the external listener, scoped to targets and accounts, for a
    /// window; create (admins), list, show, revoke (live sessions end).
    #[command(subcommand)]
    Invite(invite_cmd::InviteCmd),
    /// Diagnostics (admins; support under a `diagnostics` grant): the configuration with its
    /// secrets taken out, and the tail of the server's log.
    #[command(subcommand)]
    Diagnostics(diagnostics_cmd::DiagnosticsCmd),
    /// Access requests: ask for approval, decide (approvers), emergency access, review.
    #[command(subcommand)]
    Request(requests_cmd::RequestCmd),
    /// Grants (approved requests in force): list, revoke.
    #[command(subcommand)]
    Grant(requests_cmd::GrantCmd),
    /// The tamper-evident audit trail.
    #[command(subcommand)]
    Audit(commands::AuditCmd),
    /// Seal status and unsealing with Shamir shares.
    #[command(subcommand)]
    Operator(commands::OperatorCmd),
    /// SSH gateway sessions: list live ones; watch, block the input of, or terminate one.
    #[command(subcommand)]
    Session(sessions_cmd::SessionCmd),
    /// The emergency panel (admin): terminate every live session, lock the instance down (each
    /// with your TOTP code and a reason), lift the lockdown (a second admin), status.
    #[command(subcommand)]
    Emergency(emergency_cmd::EmergencyCmd),
    /// Session recordings: export (asciicast v2, or the exact bytes), verify, play.
    #[command(subcommand)]
    Recording(sessions_cmd::RecordingCmd),
    /// Break the glass: key ceremony, custodians' shares, the credential backup file, and the
    /// offline opener (`open`, `combine`: no server, network or data dir needed).
    #[command(subcommand)]
    Breakglass(breakglass_cmd::BreakglassCmd),
    /// Backups to your own storage: targets (directory, rsync over SSH, S3), jobs, runs, status.
    #[command(subcommand)]
    Backup(backup_cmd::BackupCmd),
    /// Credential rotation: status of every credential that rotates (`credential rotate`,
    /// `set-rotation` and `verify` act on one).
    #[command(subcommand)]
    Rotation(rotation_cmd::RotationCmd),
    /// The policy for passwords Cofre generates when it rotates credentials (admin).
    #[command(subcommand, name = "password-policy")]
    PasswordPolicy(rotation_cmd::PasswordPolicyCmd),
    /// Snapshots of the whole instance (Orbit): create, list, verify, prune, and the offline
    /// restore into a new data dir.
    #[command(subcommand)]
    Snapshot(snapshot_cmd::SnapshotCmd),
    /// Forward the audit trail to SIEMs (syslog RFC 5424 or CEF over TCP, TLS or UDP): add,
    /// list, remove, status.
    #[command(subcommand)]
    Siem(siem_cmd::SiemCmd),
    /// Single sign-on with OpenID Connect: add, list, test, remove identity providers.
    #[command(subcommand)]
    Sso(sso_cmd::SsoCmd),
    /// Which networks the API and the SSH gateway accept (Orbit): show, set.
    #[command(subcommand)]
    Network(network_cmd::NetworkCmd),
}

/// The `cofre` command: parses the arguments and runs them.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let cli = match cli.command {
        // Offline: no async runtime, server, network, data dir or client config.
        Command::Breakglass(cmd) if cmd.is_offline() => {
            return report(breakglass_cmd::offline(cmd, cli.global.output));
        }
        command => Cli {
            command,
            global: cli.global,
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => server_cmd::server(args).await,
            Command::Init(args) => server_cmd::init(args).await,
            Command::CopyDatabase(args) => copy_cmd::run(args, cli.global.output).await,
            // Offline: no server, client config or login.
            Command::Snapshot(cmd) if cmd.is_offline() => {
                snapshot_cmd::offline(cmd, cli.global.output).await
            }
            other => commands::run(&cli.global, other).await,
        }
    });
    report(result)
}

fn report(result: anyhow::Result<std::process::ExitCode>) -> std::process::ExitCode {
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    // Last, so that an error is still the first thing on stderr.
    if let Some(banner) = client::banner_seen() {
        eprintln!("cofre: {banner}");
    }
    code
}
