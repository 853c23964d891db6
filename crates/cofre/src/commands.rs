//! The client commands: each builds one or a few API calls and prints the result.

use crate::client::{missing_server, path_segment, ApiFailure, Client, ClientConfig, Target};
use crate::{Command, GlobalArgs, Output};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use cofre_proto::*;
use serde::Serialize;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use zeroize::Zeroizing;

#[derive(Args)]
pub(crate) struct LoginArgs {
    /// Your Cofre user name.
    #[arg(long, required_unless_present = "sso", conflicts_with = "sso")]
    user: Option<String>,
    /// Log in through this identity provider instead (`cofre sso list` on an admin's machine;
    /// the console's login page shows them): the browser opens, the provider's redirect comes
    /// back to a listener on 127.0.0.1.
    /// Under `[sso] require_totp` the TOTP code is asked for after the provider.
    #[arg(long, value_name = "PROVIDER", conflicts_with_all = ["password_stdin", "totp"])]
    sso: Option<String>,
    /// With --sso: do not open a browser, only print the URL (for a machine without one).
    #[arg(long, requires = "sso")]
    no_browser: bool,
    /// Read the password from the first line of stdin (and, if it was a one-time password, the new
    /// password from the second line) instead of prompting.
    #[arg(long)]
    password_stdin: bool,
    /// The 6-digit code from your authenticator, if you enrolled TOTP.
    #[arg(long)]
    totp: Option<String>,
}

#[derive(Args)]
pub(crate) struct PasswdArgs {
    /// Read the current and the new password from the first two lines of stdin.
    #[arg(long)]
    stdin: bool,
}

#[derive(Subcommand)]
pub(crate) enum TotpCmd {
    /// Start enrolment: prints the secret and an otpauth:// URI for your authenticator app.
    /// Replacing a TOTP in use needs a current code (--totp) and your password (asked, or stdin).
    Enroll {
        /// A current code of the TOTP being replaced.
        #[arg(long)]
        totp: Option<String>,
        /// With --totp: read your password from the first line of stdin.
        #[arg(long, requires = "totp")]
        password_stdin: bool,
    },
    /// Finish enrolment with a code from the app; from then on login needs --totp.
    Confirm { code: String },
}

#[derive(Subcommand)]
pub(crate) enum UserCmd {
    /// Create a user; prints a one-time password that must be changed at first login.
    Add {
        name: String,
        /// admin, approver, user, auditor, operator or support.
        #[arg(long)]
        role: String,
        /// Group to join (repeatable); created if missing.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Where notifications about access requests go.
        #[arg(long)]
        email: Option<String>,
    },
    /// Set (or with --clear remove) a user's email address for request notifications.
    SetEmail {
        name: String,
        #[arg(required_unless_present = "clear")]
        email: Option<String>,
        #[arg(long, conflicts_with = "email")]
        clear: bool,
    },
    /// Every user: role, groups, flags (locked, disabled, must change password).
    List,
    /// One user.
    Show { name: String },
    /// Lift a lock after failed logins: the account lock (failures from `lockout_sources`
    /// addresses at once) and every address's back-off wait for this user.
    Unlock { name: String },
    /// Issue a new one-time password (ends the user's sessions). For another user, held for a
    /// second admin (dual control). With mail configured and an address on the account, the
    /// password goes to the user by email, to nobody else; otherwise to the approving admin.
    ResetPassword { name: String },
    /// Change a user's role (admin, approver, user, auditor, operator, support); gaining admin or
    /// approver is held for a second admin.
    SetRole { name: String, role: String },
    /// SSH public keys for gateway logins.
    #[command(subcommand)]
    Key(crate::sessions_cmd::KeyCmd),
    /// Offboard a user at once: every token of theirs ends, their live gateway sessions are
    /// closed, and no key or password of theirs works until `cofre user enable`. The last enabled
    /// admin cannot be disabled.
    Disable {
        name: String,
        /// Why, for the audit trail (e.g. "left the company", "laptop stolen").
        #[arg(long)]
        reason: String,
    },
    /// Let a disabled user log in again (their old tokens stay ended). It gives back all the
    /// user had, so it is held for a second admin (dual control).
    Enable { name: String },
    /// Delete a user that never did anything (e.g. created by mistake). A user with audit history
    /// is never erased: disable it instead.
    Delete { name: String },
}

#[derive(Subcommand)]
pub(crate) enum GroupCmd {
    /// Create a group (policies and approval levels name groups).
    Add { name: String },
    /// Every group and its members.
    List,
    /// Add a user to a group; if a policy or an approval level names the group, held for a second admin.
    AddMember { group: String, user: String },
    /// Take a user out of a group; what the group's policies granted ends at once (live gateway
    /// sessions that only this group allowed are closed).
    RemoveMember { group: String, user: String },
}

#[derive(Subcommand)]
pub(crate) enum TargetCmd {
    /// Add a target: a host with a protocol, port and tags.
    Add {
        name: String,
        #[arg(long)]
        host: String,
        #[arg(long)]
        port: Option<u16>,
        /// Tag (repeatable), e.g. prod; policies select targets by tag.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// The targets you may see (admins and auditors: all; others: those their policies cover).
    List,
    /// One target.
    Show { name: String },
    /// No reveal and no session on the target until enabled; its live sessions end now.
    Disable { name: String },
    /// Allow reveals and sessions on a disabled target again.
    Enable { name: String },
    /// Delete the target and its credentials. Their versions, sessions and audit entries are
    /// kept; a new target of the same name shares nothing with the old one.
    Delete { name: String },
}

#[derive(Args)]
pub(crate) struct SecretSource {
    /// Read the password from the first line of stdin.
    #[arg(long, conflicts_with = "key_file")]
    password_stdin: bool,
    /// A private key file (PEM or OpenSSH format).
    #[arg(long)]
    key_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum CredentialCmd {
    /// Vault an account's password or key (version 1).
    Add {
        target: String,
        account: String,
        #[command(flatten)]
        secret: SecretSource,
    },
    /// Store a new version; the old one is kept.
    Update {
        target: String,
        account: String,
        #[command(flatten)]
        secret: SecretSource,
    },
    /// The accounts of a target, with their current version (never a secret).
    List { target: String },
    /// Print the secret, if a policy allows; always audited with the reason.
    Reveal {
        target: String,
        account: String,
        /// Why (required where policy says `justify`), e.g. a ticket number.
        #[arg(long)]
        reason: Option<String>,
        /// An older version, for recovery.
        #[arg(long)]
        version: Option<i64>,
    },
    /// Versions: when each was made and by whom (never the secrets).
    History { target: String, account: String },
    /// No reveal and no session with it until enabled; its live sessions end now.
    Disable { target: String, account: String },
    /// Allow reveals and sessions with a disabled credential again.
    Enable { target: String, account: String },
    /// Delete it. Its versions and audit entries are kept; a new credential of the same account
    /// starts at version 1 and shares nothing with the old one.
    Delete { target: String, account: String },
    /// Change it on the target now: a new secret (the password policy, or a new key pair) is
    /// stored as a pending version, applied over SSH, and verified by a fresh login before it
    /// becomes current; on failure the old one stays (exit 1, audited and alerted). Waits while
    /// a session on it is live. Prints the new version, never the secret.
    Rotate {
        target: String,
        account: String,
        #[command(flatten)]
        how: crate::rotation_cmd::MethodArgs,
    },
    /// When it rotates by itself (admin; audited): on a schedule and/or after each reveal,
    /// session or grant, and how (--method, --as, --key).
    SetRotation {
        target: String,
        account: String,
        #[command(flatten)]
        settings: crate::rotation_cmd::SettingsArgs,
    },
    /// Does the vaulted secret still log in on the target? exit 1 on drift (alerted); with
    /// --as set by set-rotation, a drifted one is reset to a new vaulted secret.
    Verify { target: String, account: String },
}

// Parsed once per process: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub(crate) enum PolicyCmd {
    /// Grant a group session and/or reveal on targets, with an outcome and limits; held for a second admin when it widens access.
    Add {
        name: String,
        #[arg(long)]
        group: String,
        /// Comma-separated selectors: `*`, `tag:TAG` or target names.
        #[arg(long, value_delimiter = ',')]
        targets: Vec<String>,
        /// Comma-separated: session, reveal, invite (third parties, with `cofre invite create`).
        #[arg(long, value_delimiter = ',')]
        allow: Vec<String>,
        /// allow, justify (a reason is required) or approve (an approved request is required).
        #[arg(long)]
        outcome: String,
        /// For approve: levels in order, GROUP:N each (N distinct approvers from GROUP), e.g.
        /// "leads:1,security:1". At most three.
        #[arg(long)]
        levels: Option<String>,
        /// Longest grant (and emergency access), e.g. 4h, 90m.
        #[arg(long)]
        max_duration: Option<String>,
        /// Hours of the day it applies, in the server's `[instance] time_zone`, e.g. 08:00-20:00.
        #[arg(long)]
        hours: Option<String>,
        /// Days of the week it applies, e.g. mon-fri or sat,sun.
        #[arg(long)]
        days: Option<String>,
        /// First day it applies (YYYY-MM-DD). (Was `--from`, which now names source networks.)
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// Last day it applies (YYYY-MM-DD).
        #[arg(long, value_name = "DATE")]
        until: Option<String>,
        /// Comma-separated source networks (CIDRs or addresses, IPv4 or IPv6) the policy applies
        /// from, e.g. 10.20.30.0/24: a request from anywhere else is not matched by this policy.
        #[arg(long, value_delimiter = ',', value_name = "CIDR,...")]
        from: Vec<String>,
        /// For approve: allow `cofre request emergency` (no approval; every approver notified;
        /// reviewed afterwards).
        #[arg(long)]
        emergency: bool,
        /// Sessions wait (up to `[server] moderator_wait_seconds`) until an admin or an approver
        /// of the user's groups watches them (`cofre session watch`), and are held, input and
        /// output, while none does.
        #[arg(long)]
        moderated: bool,
    },
    /// Change a policy: the flags given replace those options, the others keep their value. An
    /// empty value clears an optional one (`--hours ''`, `--from ''` for anywhere); `--no-emergency`
    /// and `--no-moderated` turn those off. Made from the version read just before, so an edit by
    /// someone else in between is refused (exit 1, `stale_version`) rather than overwritten. Held
    /// for a second admin when it widens access (old against new); a narrowing applies at once.
    Edit {
        name: String,
        #[arg(long)]
        group: Option<String>,
        /// Comma-separated selectors: `*`, `tag:TAG` or target names.
        #[arg(long, value_delimiter = ',')]
        targets: Option<Vec<String>>,
        /// Comma-separated: session, reveal, invite (third parties, with `cofre invite create`).
        #[arg(long, value_delimiter = ',')]
        allow: Option<Vec<String>>,
        /// allow, justify or approve.
        #[arg(long)]
        outcome: Option<String>,
        /// For approve: levels in order, GROUP:N each, e.g. "leads:1,security:1".
        #[arg(long)]
        levels: Option<String>,
        /// Longest grant, e.g. 4h ('' for none).
        #[arg(long)]
        max_duration: Option<String>,
        /// Hours of the day it applies, e.g. 08:00-20:00 ('' for any).
        #[arg(long)]
        hours: Option<String>,
        /// Days of the week it applies, e.g. mon-fri ('' for any).
        #[arg(long)]
        days: Option<String>,
        /// First day it applies, YYYY-MM-DD ('' for none).
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// Last day it applies, YYYY-MM-DD ('' for none).
        #[arg(long, value_name = "DATE")]
        until: Option<String>,
        /// Comma-separated source networks it applies from ('' for anywhere).
        #[arg(long, value_delimiter = ',', value_name = "CIDR,...")]
        from: Option<Vec<String>>,
        /// Allow emergency access (approve policies).
        #[arg(long)]
        emergency: bool,
        /// No emergency access.
        #[arg(long, conflicts_with = "emergency")]
        no_emergency: bool,
        /// Sessions wait for a moderator.
        #[arg(long)]
        moderated: bool,
        /// Sessions no longer wait for a moderator.
        #[arg(long, conflicts_with = "moderated")]
        no_moderated: bool,
    },
    /// Every policy with its outcome and limits.
    List,
    /// Remove a policy (held for a second admin when it could have restricted another).
    Remove { name: String },
}

#[derive(Subcommand)]
pub(crate) enum AuditCmd {
    /// Check the hash chain; exit 1 and name the first broken entry if it was tampered with.
    Verify {
        /// Also check every session's recording against the trail (whole, in order,
        /// untruncated, as its session.end entry says it ended); exit 1 names each that is not.
        #[arg(long)]
        recordings: bool,
    },
    /// Every entry that meets the conditions (all, without any): JSON lines, or CSV (RFC 4180,
    /// streamed by the server; a cell starting with = + - @, a tab or CR gets a leading `'` so
    /// a spreadsheet does not run it). Audited `audit.export`.
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Write to FILE (whole or not at all) instead of standard output.
        #[arg(short = 'o', long = "file", value_name = "FILE")]
        file: Option<std::path::PathBuf>,
        /// Who acted (exactly; a trailing `*` matches a prefix).
        #[arg(long)]
        actor: Option<String>,
        /// The action, e.g. `credential.reveal`, or `auth.*` for a prefix.
        #[arg(long)]
        action: Option<String>,
        /// What it acted on (exactly; a trailing `*` matches a prefix).
        #[arg(long)]
        object: Option<String>,
        /// Entries at or after this time (RFC 3339, or YYYY-MM-DD for midnight UTC).
        #[arg(long)]
        since: Option<String>,
        /// Entries before this time (RFC 3339, or YYYY-MM-DD for midnight UTC).
        #[arg(long)]
        until: Option<String>,
    },
    /// The latest entries, searched on the server by actor, action, object and time.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Who acted (exactly; a trailing `*` matches a prefix).
        #[arg(long)]
        actor: Option<String>,
        /// The action, e.g. `credential.reveal`, or `auth.*` for a prefix.
        #[arg(long)]
        action: Option<String>,
        /// What it acted on (exactly; a trailing `*` matches a prefix).
        #[arg(long)]
        object: Option<String>,
        /// Entries at or after this time (RFC 3339, or YYYY-MM-DD for midnight UTC).
        #[arg(long)]
        since: Option<String>,
        /// Entries before this time (RFC 3339, or YYYY-MM-DD for midnight UTC).
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ExportFormat {
    Jsonl,
    Csv,
}

#[derive(Subcommand)]
pub(crate) enum OperatorCmd {
    /// Sealed or not, and unseal progress.
    SealStatus,
    /// Give one unseal share (each custodian runs this once with their own share).
    Unseal {
        /// Read the share from the first line of stdin instead of prompting.
        #[arg(long)]
        share_stdin: bool,
        /// Read the share from a file.
        #[arg(long, conflicts_with = "share_stdin")]
        share_file: Option<PathBuf>,
    },
}

pub(crate) struct Ctx {
    pub client: Client,
    pub output: Output,
}

/// The answer of a command whose change may wait for a second admin (dual control).
pub(crate) enum Maybe<T> {
    Done(T),
    Held(Box<HeldResponse>),
}

impl Ctx {
    /// Calls an endpoint that answers 200 with `T`, or 202 with the held change request.
    pub(crate) async fn propose<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Maybe<T>> {
        let v: serde_json::Value = self.client.call(method, path, body).await?;
        if v.get("held").and_then(|h| h.as_bool()) == Some(true) {
            return Ok(Maybe::Held(Box::new(serde_json::from_value(v)?)));
        }
        Ok(Maybe::Done(serde_json::from_value(v)?))
    }

    /// Says that a change waits (exit 0: the proposal itself succeeded).
    pub(crate) fn print_held(&self, h: &HeldResponse) -> Result<()> {
        self.print(h, |h| {
            outln!("held for a second admin's approval: change {}", h.change.id);
            outln!("  {}", h.change.diff);
        })
    }

    pub(crate) fn print<T: Serialize>(&self, value: &T, text: impl FnOnce(&T)) -> Result<()> {
        match self.output {
            Output::Json => outln!("{}", serde_json::to_string_pretty(value)?),
            Output::Text => text(value),
        }
        Ok(())
    }

    /// A list: as JSON, or a line per item, or (on stderr, so that counting lines still gives
    /// 0) a note that there is none.
    pub(crate) fn print_list<T: Serialize>(
        &self,
        items: &[T],
        noun: &str,
        text: impl FnOnce(&[T]),
    ) -> Result<()> {
        match self.output {
            Output::Json => outln!("{}", serde_json::to_string_pretty(items)?),
            Output::Text if items.is_empty() => eprintln!("no {noun}"),
            Output::Text => text(items),
        }
        Ok(())
    }

    /// Walks every page of a list.
    pub(crate) async fn all<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Vec<T>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit=500&cursor={}", path_segment(c)),
                None => format!("{path}{sep}limit=500"),
            };
            let page: Page<T> = self.client.get(&url).await?;
            items.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(items),
            }
        }
    }
}

fn stdin_lines(n: usize) -> Result<Vec<Zeroizing<String>>> {
    let stdin = std::io::stdin();
    let mut out = Vec::new();
    for line in stdin.lock().lines().take(n) {
        let line = Zeroizing::new(line.context("reading stdin")?);
        out.push(Zeroizing::new(line.trim_end_matches('\r').to_owned()));
    }
    Ok(out)
}

fn prompt_secret(prompt: &str) -> Result<Zeroizing<String>> {
    if !std::io::stdin().is_terminal() {
        bail!("{prompt}: no terminal to ask on; use the --*-stdin option");
    }
    Ok(Zeroizing::new(rpassword::prompt_password(format!(
        "{prompt}: "
    ))?))
}

fn client_config_path(g: &GlobalArgs) -> PathBuf {
    g.client_config
        .clone()
        .unwrap_or_else(ClientConfig::default_path)
}

fn target_of(g: &GlobalArgs, saved: &ClientConfig) -> Result<Target> {
    let server = g
        .server
        .clone()
        .or_else(|| saved.server.clone())
        .ok_or_else(missing_server)?;
    // A fingerprint saved for another server must not be applied to this one.
    let same_server = saved.server.as_deref() == Some(server.as_str());
    Ok(Target {
        server,
        fingerprint: g
            .fingerprint
            .clone()
            .or_else(|| same_server.then(|| saved.fingerprint.clone()).flatten()),
        ca_cert: g
            .ca_cert
            .clone()
            .or_else(|| same_server.then(|| saved.ca_cert.clone()).flatten()),
    })
}

pub(crate) async fn run(g: &GlobalArgs, command: Command) -> Result<ExitCode> {
    let config_path = client_config_path(g);
    let saved = ClientConfig::load(&config_path)?;
    let target = target_of(g, &saved)?;
    let token = std::env::var("COFRE_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| {
            (saved.server.as_deref() == Some(target.server.as_str()))
                .then(|| saved.token.clone())
                .flatten()
        });
    // A token saved for another URL is not sent (it could be a different server); say so if the
    // server then asks for one.
    let stale_token_hint = (token.is_none() && saved.token.is_some()).then(|| {
        format!(
            "the saved login is for {}, not {}: run `cofre login` for this server or set COFRE_TOKEN",
            saved.server.as_deref().unwrap_or("another server"),
            target.server
        )
    });
    let ctx = Ctx {
        client: Client::new(&target, token)?,
        output: g.output,
    };
    let result = dispatch(&ctx, command, &target, &config_path, saved).await;
    match (result, stale_token_hint) {
        (Err(e), Some(hint))
            if e.downcast_ref::<ApiFailure>().and_then(ApiFailure::code)
                == Some("unauthenticated") =>
        {
            Err(e.context(hint))
        }
        (result, _) => result,
    }
}

async fn dispatch(
    ctx: &Ctx,
    command: Command,
    target: &Target,
    config_path: &std::path::Path,
    saved: ClientConfig,
) -> Result<ExitCode> {
    let config_path = config_path.to_path_buf();
    match command {
        Command::Login(args) => login(ctx, args, target, &config_path).await,
        Command::Logout => {
            let _: OkResponse = ctx.client.post("/api/v1/auth/logout", &()).await?;
            let mut saved = saved;
            saved.token = None;
            saved.save(&config_path)?;
            outln!("logged out");
            Ok(ExitCode::SUCCESS)
        }
        Command::Whoami => {
            let me: UserInfo = ctx.client.get("/api/v1/auth/whoami").await?;
            ctx.print(&me, |u| {
                outln!(
                    "{} ({}), groups: {}",
                    u.username,
                    u.role,
                    u.groups.join(", ")
                );
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Passwd(args) => {
            let (current, new) = if args.stdin {
                let mut lines = stdin_lines(2)?.into_iter();
                match (lines.next(), lines.next()) {
                    (Some(c), Some(n)) => (c, n),
                    _ => bail!("--stdin: expected two lines, the current and the new password"),
                }
            } else {
                (prompt_secret("current password")?, new_password_prompt()?)
            };
            let resp: ChangePasswordResponse = ctx
                .client
                .post(
                    "/api/v1/auth/password",
                    &ChangePasswordRequest {
                        current_password: SecretString::new(current.to_string()),
                        new_password: SecretString::new(new.to_string()),
                    },
                )
                .await?;
            let mut saved = saved;
            saved.token = resp.token.map(|t| t.expose().to_owned());
            saved.save(&config_path)?;
            outln!("password changed; other sessions of yours were ended");
            Ok(ExitCode::SUCCESS)
        }
        Command::Totp(TotpCmd::Enroll {
            totp,
            password_stdin,
        }) => {
            let mut req = TotpEnrollRequest::default();
            if let Some(code) = totp {
                let password = if password_stdin {
                    stdin_lines(1)?
                        .into_iter()
                        .next()
                        .ok_or_else(|| anyhow!("--password-stdin: stdin is empty"))?
                } else {
                    prompt_secret("Password")?
                };
                req.password = Some(SecretString::new(password.to_string()));
                req.totp_code = Some(code);
            }
            let r: TotpEnrollResponse = ctx.client.post("/api/v1/auth/totp/enroll", &req).await?;
            outln!("secret: {}", r.secret_base32.expose());
            outln!("uri: {}", r.otpauth_uri.expose());
            outln!("add it to your authenticator app, then run `cofre totp confirm CODE`");
            Ok(ExitCode::SUCCESS)
        }
        Command::Totp(TotpCmd::Confirm { code }) => {
            let _: OkResponse = ctx
                .client
                .post("/api/v1/auth/totp/confirm", &TotpConfirmRequest { code })
                .await?;
            outln!("TOTP enabled: log in with --totp CODE from now on");
            Ok(ExitCode::SUCCESS)
        }
        Command::User(cmd) => user(ctx, cmd).await,
        Command::Group(cmd) => group(ctx, cmd).await,
        Command::Target(cmd) => target_cmd(ctx, cmd).await,
        Command::Credential(cmd) => credential(ctx, cmd).await,
        Command::Policy(cmd) => policy(ctx, cmd).await,
        Command::Change(cmd) => crate::governance_cmd::change(ctx, cmd).await,
        Command::Instance(cmd) => crate::instance_cmd::instance(ctx, cmd).await,
        Command::Node(cmd) => crate::instance_cmd::node(ctx, cmd).await,
        Command::Release(cmd) => crate::instance_cmd::release(ctx, cmd).await,
        Command::Maintenance(cmd) => crate::maintenance_cmd::run(ctx, cmd).await,
        Command::Support(cmd) => crate::support_cmd::run(ctx, cmd).await,
        Command::Invite(cmd) => crate::invite_cmd::run(ctx, cmd).await,
        Command::Diagnostics(cmd) => crate::diagnostics_cmd::run(ctx, cmd).await,
        Command::Audit(cmd) => audit(ctx, cmd).await,
        Command::Operator(cmd) => operator(ctx, cmd).await,
        Command::Session(cmd) => crate::sessions_cmd::session(ctx, cmd).await,
        Command::Emergency(cmd) => crate::emergency_cmd::run(ctx, cmd).await,
        Command::Request(cmd) => crate::requests_cmd::request(ctx, cmd).await,
        Command::Grant(cmd) => crate::requests_cmd::grant(ctx, cmd).await,
        Command::Recording(cmd) => crate::sessions_cmd::recording(ctx, cmd).await,
        Command::Breakglass(cmd) => crate::breakglass_cmd::online(ctx, cmd).await,
        Command::Backup(cmd) => crate::backup_cmd::run(ctx, cmd).await,
        Command::Snapshot(cmd) => crate::snapshot_cmd::online(ctx, cmd).await,
        Command::Rotation(cmd) => crate::rotation_cmd::rotation(ctx, cmd).await,
        Command::PasswordPolicy(cmd) => crate::rotation_cmd::password_policy(ctx, cmd).await,
        Command::Siem(cmd) => crate::siem_cmd::run(ctx, cmd).await,
        Command::Sso(cmd) => crate::sso_cmd::run(ctx, cmd).await,
        Command::Network(cmd) => crate::network_cmd::run(ctx, cmd).await,
        Command::Server(_) | Command::Init(_) | Command::CopyDatabase(_) => {
            Err(anyhow!("internal: not a client command"))
        }
    }
}

fn new_password_prompt() -> Result<Zeroizing<String>> {
    let a = prompt_secret("new password (12 characters or more)")?;
    let b = prompt_secret("repeat the new password")?;
    if *a != *b {
        bail!("the two new passwords differ");
    }
    Ok(a)
}

async fn login(
    ctx: &Ctx,
    args: LoginArgs,
    target: &Target,
    config_path: &std::path::Path,
) -> Result<ExitCode> {
    let save = |token: String| {
        ClientConfig {
            server: Some(target.server.clone()),
            fingerprint: target.fingerprint.clone(),
            ca_cert: target.ca_cert.clone(),
            token: Some(token),
        }
        .save(config_path)
    };
    let user = match (&args.sso, &args.user) {
        (Some(provider), _) => {
            let mut resp = crate::sso_cmd::login(ctx, provider, !args.no_browser).await?;
            match resp.next_step.as_deref() {
                Some("totp") => {
                    let code = prompt_secret("TOTP code")?;
                    let pending = ctx.client.with_token(Some(resp.token.expose().to_owned()));
                    resp = pending
                        .post(
                            "/api/v1/auth/sso/totp",
                            &SsoTotpRequest {
                                totp_code: code.to_string(),
                            },
                        )
                        .await?;
                }
                Some("totp_enrolment") => {
                    save(resp.token.expose().to_owned())?;
                    outln!(
                        "this instance asks for Cofre's TOTP after single sign-on: enrol it now with \
                         `cofre totp enroll` and `cofre totp confirm CODE` (this login may do nothing \
                         else, for 15 minutes), then log in again with --sso {provider}"
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                _ => {}
            }
            save(resp.token.expose().to_owned())?;
            outln!(
                "logged in as {} ({}) through {provider}, groups [{}]",
                resp.user.username,
                resp.user.role,
                resp.user.groups.join(",")
            );
            return Ok(ExitCode::SUCCESS);
        }
        (None, Some(u)) => u.clone(),
        (None, None) => bail!("--user: required (or --sso PROVIDER)"),
    };
    let mut lines = if args.password_stdin {
        stdin_lines(2)?
    } else {
        Vec::new()
    }
    .into_iter();
    let password = match lines.next() {
        Some(p) => p,
        None if args.password_stdin => bail!("--password-stdin: stdin is empty"),
        None => prompt_secret(&format!("password for {user}"))?,
    };
    let request = LoginRequest {
        username: user.clone(),
        password: SecretString::new(password.to_string()),
        totp_code: args.totp.clone(),
    };
    let resp: LoginResponse = match ctx.client.post("/api/v1/auth/login", &request).await {
        Err(e) if e.code() == Some("totp_required") && std::io::stdin().is_terminal() => {
            let code = prompt_secret("TOTP code")?;
            let request = LoginRequest {
                totp_code: Some(code.to_string()),
                ..request
            };
            ctx.client.post("/api/v1/auth/login", &request).await?
        }
        other => other?,
    };
    let mut token = resp.token.expose().to_owned();
    if resp.password_change_required {
        eprintln!("this was a one-time password: choose your own now");
        let new = match lines.next() {
            Some(n) => n,
            None if args.password_stdin => bail!(
                "--password-stdin: the password was a one-time password; give the new password on the second line"
            ),
            None => new_password_prompt()?,
        };
        let authed = ctx.client.with_token(Some(token.clone()));
        let changed: ChangePasswordResponse = authed
            .post(
                "/api/v1/auth/password",
                &ChangePasswordRequest {
                    current_password: SecretString::new(password.to_string()),
                    new_password: SecretString::new(new.to_string()),
                },
            )
            .await?;
        token = changed
            .token
            .map(|t| t.expose().to_owned())
            .ok_or_else(|| {
                anyhow!("the server did not issue a session after the password change")
            })?;
    }
    save(token)?;
    outln!("logged in as {} ({})", resp.user.username, resp.user.role);
    Ok(ExitCode::SUCCESS)
}

fn print_user(u: &UserInfo) {
    let mut flags = Vec::new();
    if u.locked {
        flags.push("locked");
    }
    if u.totp_enabled {
        flags.push("totp");
    }
    if u.must_change_password {
        flags.push("must-change-password");
    }
    if u.disabled {
        flags.push("disabled");
    }
    outln!(
        "{}\t{}\tgroups={}\t{}",
        u.username,
        u.role,
        u.groups.join(","),
        flags.join(",")
    );
}

async fn user(ctx: &Ctx, cmd: UserCmd) -> Result<ExitCode> {
    match cmd {
        UserCmd::Add {
            name,
            role,
            groups,
            email,
        } => {
            let r: CreateUserResponse = match ctx
                .propose(
                    reqwest::Method::POST,
                    "/api/v1/users",
                    Some(&CreateUserRequest {
                        username: name,
                        role,
                        groups,
                        email,
                    }),
                )
                .await?
            {
                Maybe::Done(r) => r,
                Maybe::Held(h) => {
                    ctx.print_held(&h)?;
                    return Ok(ExitCode::SUCCESS);
                }
            };
            ctx.print(&r, |r| {
                outln!("created user {} ({})", r.user.username, r.user.role);
                outln!("one-time password: {}", r.one_time_password.expose());
            })?;
        }
        UserCmd::SetEmail { name, email, clear } => {
            let u: UserInfo = ctx
                .client
                .call(
                    reqwest::Method::PUT,
                    &format!("/api/v1/users/{}/email", path_segment(&name)),
                    Some(&SetEmailRequest {
                        email: if clear { None } else { email },
                    }),
                )
                .await?;
            ctx.print(&u, |u| match &u.email {
                Some(e) => outln!("{}: email {e}", u.username),
                None => outln!("{}: no email", u.username),
            })?;
        }
        UserCmd::List => {
            let users: Vec<UserInfo> = ctx.all("/api/v1/users").await?;
            ctx.print_list(&users, "users", |us| us.iter().for_each(print_user))?;
        }
        UserCmd::Show { name } => {
            let u: UserInfo = ctx
                .client
                .get(&format!("/api/v1/users/{}", path_segment(&name)))
                .await?;
            ctx.print(&u, print_user)?;
        }
        UserCmd::Unlock { name } => {
            let _: OkResponse = ctx
                .client
                .post(
                    &format!("/api/v1/users/{}/unlock", path_segment(&name)),
                    &(),
                )
                .await?;
            outln!("unlocked {name}");
        }
        UserCmd::Key(cmd) => return crate::sessions_cmd::key(ctx, cmd).await,
        UserCmd::Disable { name, reason } => {
            return crate::offboarding_cmd::user_disable(ctx, &name, reason).await
        }
        UserCmd::Enable { name } => return crate::offboarding_cmd::user_enable(ctx, &name).await,
        UserCmd::Delete { name } => return crate::offboarding_cmd::user_delete(ctx, &name).await,
        UserCmd::SetRole { name, role } => {
            let u: UserInfo = match ctx
                .propose(
                    reqwest::Method::PUT,
                    &format!("/api/v1/users/{}/role", path_segment(&name)),
                    Some(&SetRoleRequest { role }),
                )
                .await?
            {
                Maybe::Done(u) => u,
                Maybe::Held(h) => {
                    ctx.print_held(&h)?;
                    return Ok(ExitCode::SUCCESS);
                }
            };
            ctx.print(&u, |u| outln!("{}: role {}", u.username, u.role))?;
        }
        UserCmd::ResetPassword { name } => {
            let r: serde_json::Value = match ctx
                .propose(
                    reqwest::Method::POST,
                    &format!("/api/v1/users/{}/reset-password", path_segment(&name)),
                    Some(&()),
                )
                .await?
            {
                Maybe::Done(r) => r,
                Maybe::Held(h) => {
                    ctx.print_held(&h)?;
                    return Ok(ExitCode::SUCCESS);
                }
            };
            ctx.print(&r, |r| {
                match (
                    r.get("one_time_password").and_then(|v| v.as_str()),
                    r.get("sent_to").and_then(|v| v.as_str()),
                ) {
                    (Some(p), _) => outln!("one-time password: {p}"),
                    (None, Some(to)) => outln!(
                        "the one-time password was sent to {name} by email ({to}); nobody else sees it"
                    ),
                    (None, None) => outln!("password reset"),
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn group(ctx: &Ctx, cmd: GroupCmd) -> Result<ExitCode> {
    match cmd {
        GroupCmd::Add { name } => {
            let g: GroupInfo = ctx
                .client
                .post("/api/v1/groups", &CreateGroupRequest { name })
                .await?;
            ctx.print(&g, |g| outln!("created group {}", g.name))?;
        }
        GroupCmd::List => {
            let groups: Vec<GroupInfo> = ctx.all("/api/v1/groups").await?;
            ctx.print_list(&groups, "groups", |gs| {
                for g in gs {
                    outln!("{}\t{}", g.name, g.members.join(","));
                }
            })?;
        }
        GroupCmd::AddMember { group, user } => {
            let held = ctx
                .propose::<OkResponse>(
                    reqwest::Method::POST,
                    &format!("/api/v1/groups/{}/members", path_segment(&group)),
                    Some(&GroupMemberRequest {
                        username: user.clone(),
                    }),
                )
                .await?;
            match held {
                Maybe::Done(_) => outln!("added {user} to {group}"),
                Maybe::Held(h) => ctx.print_held(&h)?,
            }
        }
        GroupCmd::RemoveMember { group, user } => {
            return crate::offboarding_cmd::group_remove_member(ctx, &group, &user).await
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_target(t: &TargetInfo) {
    outln!(
        "{}\t{}:{}\t{}\ttags={}{}",
        t.name,
        t.host,
        t.port,
        t.protocol,
        t.tags.join(","),
        if t.disabled { "\tdisabled" } else { "" }
    );
}

async fn target_cmd(ctx: &Ctx, cmd: TargetCmd) -> Result<ExitCode> {
    match cmd {
        TargetCmd::Add {
            name,
            host,
            port,
            tags,
        } => {
            let t: TargetInfo = ctx
                .client
                .post(
                    "/api/v1/targets",
                    &CreateTargetRequest {
                        name,
                        host,
                        port,
                        protocol: None,
                        tags,
                    },
                )
                .await?;
            ctx.print(&t, |t| outln!("created target {}", t.name))?;
        }
        TargetCmd::List => {
            let ts: Vec<TargetInfo> = ctx.all("/api/v1/targets").await?;
            ctx.print_list(&ts, "targets", |ts| ts.iter().for_each(print_target))?;
        }
        TargetCmd::Show { name } => {
            let t: TargetInfo = ctx
                .client
                .get(&format!("/api/v1/targets/{}", path_segment(&name)))
                .await?;
            ctx.print(&t, print_target)?;
        }
        TargetCmd::Disable { name } => {
            return crate::offboarding_cmd::target(ctx, "disable", &name).await
        }
        TargetCmd::Enable { name } => {
            return crate::offboarding_cmd::target(ctx, "enable", &name).await
        }
        TargetCmd::Delete { name } => {
            return crate::offboarding_cmd::target(ctx, "delete", &name).await
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_secret(src: &SecretSource) -> Result<(Option<SecretString>, Option<SecretString>)> {
    if src.password_stdin {
        let line = stdin_lines(1)?
            .into_iter()
            .next()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| anyhow!("--password-stdin: stdin is empty"))?;
        return Ok((Some(SecretString::new(line.to_string())), None));
    }
    if let Some(path) = &src.key_file {
        let key = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("--key-file {}", path.display()))?,
        );
        return Ok((None, Some(SecretString::new(key.to_string()))));
    }
    let pw = prompt_secret("password")?;
    Ok((Some(SecretString::new(pw.to_string())), None))
}

async fn credential(ctx: &Ctx, cmd: CredentialCmd) -> Result<ExitCode> {
    let cred_path = |t: &str, a: &str| {
        format!(
            "/api/v1/targets/{}/credentials/{}",
            path_segment(t),
            path_segment(a)
        )
    };
    match cmd {
        CredentialCmd::Add {
            target,
            account,
            secret,
        } => {
            let (password, private_key) = read_secret(&secret)?;
            let c: CredentialInfo = ctx
                .client
                .post(
                    &format!("/api/v1/targets/{}/credentials", path_segment(&target)),
                    &CreateCredentialRequest {
                        account,
                        password,
                        private_key,
                    },
                )
                .await?;
            ctx.print(&c, |c| {
                outln!("stored {}/{} version {}", c.target, c.account, c.version)
            })?;
        }
        CredentialCmd::Update {
            target,
            account,
            secret,
        } => {
            let (password, private_key) = read_secret(&secret)?;
            let c: CredentialInfo = ctx
                .client
                .call(
                    reqwest::Method::PUT,
                    &cred_path(&target, &account),
                    Some(&UpdateCredentialRequest {
                        password,
                        private_key,
                    }),
                )
                .await?;
            ctx.print(&c, |c| {
                outln!("stored {}/{} version {}", c.target, c.account, c.version)
            })?;
        }
        CredentialCmd::List { target } => {
            let cs: Vec<CredentialInfo> = ctx
                .all(&format!(
                    "/api/v1/targets/{}/credentials",
                    path_segment(&target)
                ))
                .await?;
            ctx.print_list(&cs, "credentials", |cs| {
                for c in cs {
                    outln!(
                        "{}/{}\t{}\tv{}\t{} by {}",
                        c.target,
                        c.account,
                        c.kind,
                        c.version,
                        c.updated_at,
                        c.updated_by
                    );
                }
            })?;
        }
        CredentialCmd::Reveal {
            target,
            account,
            reason,
            version,
        } => {
            let r: RevealResponse = ctx
                .client
                .post(
                    &format!("{}/reveal", cred_path(&target, &account)),
                    &RevealRequest { reason, version },
                )
                .await?;
            // Only the secret on stdout, so `$(cofre credential reveal ...)` works.
            ctx.print(&r, |r| outln!("{}", r.secret.expose()))?;
        }
        CredentialCmd::Disable { target, account } => {
            return crate::offboarding_cmd::credential(ctx, "disable", &target, &account).await
        }
        CredentialCmd::Enable { target, account } => {
            return crate::offboarding_cmd::credential(ctx, "enable", &target, &account).await
        }
        CredentialCmd::Delete { target, account } => {
            return crate::offboarding_cmd::credential(ctx, "delete", &target, &account).await
        }
        CredentialCmd::Rotate {
            target,
            account,
            how,
        } => return crate::rotation_cmd::rotate(ctx, &target, &account, &how).await,
        CredentialCmd::SetRotation {
            target,
            account,
            settings,
        } => return crate::rotation_cmd::set_rotation(ctx, &target, &account, &settings).await,
        CredentialCmd::Verify { target, account } => {
            return crate::rotation_cmd::verify(ctx, &target, &account).await
        }
        CredentialCmd::History { target, account } => {
            let vs: Vec<CredentialVersionInfo> = ctx
                .all(&format!("{}/history", cred_path(&target, &account)))
                .await?;
            ctx.print(&vs, |vs| {
                for v in vs {
                    outln!(
                        "v{}\t{}\t{}\t{}{}",
                        v.version,
                        v.kind,
                        v.created_at,
                        v.created_by,
                        if v.current { "\tcurrent" } else { "" }
                    );
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn policy(ctx: &Ctx, cmd: PolicyCmd) -> Result<ExitCode> {
    match cmd {
        PolicyCmd::Add {
            name,
            group,
            targets,
            allow,
            outcome,
            levels,
            max_duration,
            hours,
            days,
            since,
            until,
            from,
            emergency,
            moderated,
        } => {
            let p: PolicyInfo = match ctx
                .propose(
                    reqwest::Method::POST,
                    "/api/v1/policies",
                    Some(&CreatePolicyRequest {
                        name,
                        group,
                        targets,
                        allow,
                        outcome,
                        levels,
                        max_duration,
                        hours,
                        days,
                        from: since,
                        until,
                        emergency,
                        moderated,
                        networks: from,
                    }),
                )
                .await?
            {
                Maybe::Done(p) => p,
                Maybe::Held(h) => {
                    ctx.print_held(&h)?;
                    return Ok(ExitCode::SUCCESS);
                }
            };
            ctx.print(&p, |p| outln!("created policy {}", p.name))?;
        }
        PolicyCmd::List => {
            let ps: Vec<PolicyInfo> = ctx.all("/api/v1/policies").await?;
            ctx.print_list(&ps, "policies", |ps| {
                for p in ps {
                    let l = &p.limits;
                    let mut extra = String::new();
                    for (k, v) in [
                        ("levels", &l.levels),
                        ("max_duration", &l.max_duration),
                        ("days", &l.days),
                        ("hours", &l.hours),
                        ("from", &l.from),
                        ("until", &l.until),
                    ] {
                        if let Some(v) = v {
                            extra.push_str(&format!("\t{k}={v}"));
                        }
                    }
                    if l.emergency {
                        extra.push_str("\temergency");
                    }
                    if l.moderated {
                        extra.push_str("\tmoderated");
                    }
                    if let Some(n) = &l.networks {
                        extra.push_str(&format!("\tnetworks={}", n.join(",")));
                    }
                    outln!(
                        "{}\tgroup={}\ttargets={}\tallow={}\toutcome={}{extra}",
                        p.name,
                        p.group,
                        p.targets.join(","),
                        p.allow.join(","),
                        p.outcome
                    );
                }
            })?;
        }
        PolicyCmd::Edit {
            name,
            group,
            targets,
            allow,
            outcome,
            levels,
            max_duration,
            hours,
            days,
            since,
            until,
            from,
            emergency,
            no_emergency,
            moderated,
            no_moderated,
        } => {
            let path = format!("/api/v1/policies/{}", path_segment(&name));
            let now: PolicyInfo = ctx.client.get(&path).await?;
            let l = now.limits;
            // Given: replaces; given empty: clears; not given: keeps.
            let opt = |given: Option<String>, current: Option<String>| match given {
                Some(v) if v.trim().is_empty() => None,
                Some(v) => Some(v),
                None => current,
            };
            let items = |v: Vec<String>| -> Vec<String> {
                v.into_iter().filter(|s| !s.trim().is_empty()).collect()
            };
            let req = CreatePolicyRequest {
                name: now.name,
                group: group.unwrap_or(now.group),
                targets: targets.map(items).unwrap_or(now.targets),
                allow: allow.map(items).unwrap_or(now.allow),
                outcome: outcome.unwrap_or(now.outcome),
                levels: opt(levels, l.levels),
                max_duration: opt(max_duration, l.max_duration),
                hours: opt(hours, l.hours),
                days: opt(days, l.days),
                from: opt(since, l.from),
                until: opt(until, l.until),
                emergency: (l.emergency || emergency) && !no_emergency,
                moderated: (l.moderated || moderated) && !no_moderated,
                networks: from.map(items).unwrap_or(l.networks.unwrap_or_default()),
            };
            let p: PolicyInfo = match ctx
                .propose(
                    reqwest::Method::PUT,
                    &format!("{path}?version={}", path_segment(&now.version)),
                    Some(&req),
                )
                .await?
            {
                Maybe::Done(p) => p,
                Maybe::Held(h) => {
                    ctx.print_held(&h)?;
                    return Ok(ExitCode::SUCCESS);
                }
            };
            ctx.print(&p, |p| {
                outln!("changed policy {} (version {})", p.name, p.version)
            })?;
        }
        PolicyCmd::Remove { name } => {
            let held = ctx
                .propose::<OkResponse>(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/policies/{}", path_segment(&name)),
                    None::<&()>,
                )
                .await?;
            match held {
                Maybe::Done(_) => outln!("removed policy {name}"),
                Maybe::Held(h) => ctx.print_held(&h)?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn audit(ctx: &Ctx, cmd: AuditCmd) -> Result<ExitCode> {
    match cmd {
        AuditCmd::Verify { recordings } => {
            let r: AuditVerifyResponse = ctx.client.get("/api/v1/audit/verify").await?;
            let checked: Option<RecordingsVerification> = if recordings {
                Some(ctx.client.get("/api/v1/audit/verify/recordings").await?)
            } else {
                None
            };
            let whole = r.intact && checked.as_ref().is_none_or(|c| c.problems.is_empty());
            // The chain's answer as before, with the recordings' beside it when asked for.
            let mut report = serde_json::to_value(&r)?;
            if let Some(c) = &checked {
                report["recordings"] = serde_json::to_value(c)?;
            }
            ctx.print(&report, |_| {
                match &r.first_broken {
                    None => outln!("audit chain intact: {} entries", r.entries_checked),
                    Some(b) => outln!("audit chain broken at entry {}: {}", b.seq, b.reason),
                }
                if let Some(a) = &r.anchor {
                    outln!(
                        "checked against entry {} as {} recorded it at {}",
                        a.seq,
                        a.source,
                        a.written_at
                    );
                }
                if let Some(c) = &checked {
                    outln!(
                        "recordings: {} checked, {} intact, {} live, {} not intact",
                        c.checked,
                        c.intact,
                        c.live,
                        c.problems.len()
                    );
                    for p in &c.problems {
                        outln!("  session {}: {}: {}", p.session, p.status, p.message);
                    }
                }
            })?;
            Ok(if whole {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AuditCmd::Export {
            format,
            file: output,
            actor,
            action,
            object,
            since,
            until,
        } => {
            let conditions: String = [
                ("actor", actor),
                ("action", action),
                ("object", object),
                ("since", since),
                ("until", until),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("&{k}={}", path_segment(&v))))
            .collect();
            // Into a temporary file beside FILE, renamed once complete: a broken transfer
            // leaves no partial export behind.
            let mut tmp = match &output {
                Some(file) => {
                    let dir = file
                        .parent()
                        .filter(|d| !d.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new("."));
                    Some(
                        tempfile::NamedTempFile::new_in(dir)
                            .with_context(|| format!("-o {}", file.display()))?,
                    )
                }
                None => None,
            };
            let mut stdout = std::io::stdout().lock();
            let out: &mut dyn std::io::Write = match tmp.as_mut() {
                Some(t) => t.as_file_mut(),
                None => &mut stdout,
            };
            match format {
                ExportFormat::Csv => {
                    let path = format!(
                        "/api/v1/audit/export.csv?{}",
                        conditions.trim_start_matches('&')
                    );
                    ctx.client.get_to(&path, out).await?;
                }
                ExportFormat::Jsonl => {
                    // Page by page, writing as it goes, so a long trail streams in constant memory.
                    let mut cursor: Option<String> = None;
                    loop {
                        let url = match &cursor {
                            Some(c) => format!("/api/v1/audit?limit=1000&cursor={c}{conditions}"),
                            None => format!("/api/v1/audit?limit=1000{conditions}"),
                        };
                        let page: Page<AuditEntryInfo> = ctx.client.get(&url).await?;
                        for e in &page.items {
                            writeln!(out, "{}", serde_json::to_string(e)?)?;
                        }
                        match page.next_cursor {
                            Some(c) => cursor = Some(c),
                            None => break,
                        }
                    }
                }
            }
            out.flush()?;
            if let (Some(tmp), Some(file)) = (tmp, &output) {
                tmp.as_file().sync_all()?;
                tmp.persist(file)
                    .with_context(|| format!("-o {}", file.display()))?;
                eprintln!("wrote {}", file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::List {
            limit,
            actor,
            action,
            object,
            since,
            until,
        } => {
            let query: Vec<String> = [
                ("actor", actor),
                ("action", action),
                ("object", object),
                ("since", since),
                ("until", until),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={}", path_segment(&v))))
            .collect();
            let path = if query.is_empty() {
                "/api/v1/audit".to_owned()
            } else {
                format!("/api/v1/audit?{}", query.join("&"))
            };
            let entries: Vec<AuditEntryInfo> = ctx.all(&path).await?;
            let skip = entries.len().saturating_sub(limit as usize);
            let tail = &entries[skip..];
            ctx.print_list(tail, "audit entries", |es| {
                for e in es {
                    outln!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        e.seq,
                        e.ts,
                        e.actor,
                        e.action,
                        e.object,
                        e.outcome,
                        e.details
                    );
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn operator(ctx: &Ctx, cmd: OperatorCmd) -> Result<ExitCode> {
    let print_status = |s: &SealStatus| {
        if s.sealed {
            outln!(
                "sealed ({}): unseal progress: {}/{}",
                s.seal_kind,
                s.progress,
                s.threshold.unwrap_or(0)
            );
        } else {
            outln!("unsealed ({}, keyring {})", s.seal_kind, s.keyring_id);
        }
    };
    match cmd {
        OperatorCmd::SealStatus => {
            let s: SealStatus = ctx.client.get("/api/v1/sys/seal-status").await?;
            ctx.print(&s, print_status)?;
        }
        OperatorCmd::Unseal {
            share_stdin,
            share_file,
        } => {
            let share = if share_stdin {
                stdin_lines(1)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| anyhow!("--share-stdin: stdin is empty"))?
            } else if let Some(f) = share_file {
                Zeroizing::new(
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("--share-file {}", f.display()))?
                        .trim()
                        .to_owned(),
                )
            } else {
                prompt_secret("unseal share")?
            };
            let s: SealStatus = ctx
                .client
                .post(
                    "/api/v1/sys/unseal",
                    &UnsealRequest {
                        share: SecretString::new(share.to_string()),
                    },
                )
                .await
                .map_err(|e: ApiFailure| anyhow!("{e}"))?;
            ctx.print(&s, |s| {
                if s.sealed {
                    outln!(
                        "unseal progress: {}/{}",
                        s.progress,
                        s.threshold.unwrap_or(0)
                    );
                } else {
                    outln!("unsealed");
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
