//! `cofre breakglass ...`: the key ceremony, share delivery, status and export talk to the server;
//! `open` and `combine` are offline: they read a file and shares, and never touch the network, a
//! data dir or the client config.

use crate::client::ApiFailure;
use crate::commands::Ctx;
use crate::Output;
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use cofre_breakglass::session::{OpenLog, Session};
use cofre_breakglass::share::ShareSet;
use cofre_breakglass::Header;
use cofre_proto::*;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum BreakglassCmd {
    /// Start a key ceremony (admin; audited): a new key epoch, an age X25519 identity whose secret
    /// is split among the custodians, any THRESHOLD of whom can open its files. The server keeps
    /// only the public key and, until each custodian fetches it, that custodian's sealed share.
    Ceremony {
        /// Distinct existing users, comma-separated (2 to 16), e.g. alice,bob,carol.
        #[arg(long, value_delimiter = ',', required = true)]
        custodians: Vec<String>,
        /// How many shares open a file.
        #[arg(long, default_value_t = 2)]
        threshold: u8,
    },
    /// As a custodian, logged in as yourself: receive your share of the newest ceremony. Works
    /// exactly once; the server deletes its copy. Keep the line offline (paper, a safe).
    Share {
        /// Write the share to this new file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Key epochs, custodians and deliveries, and the last file written (admin).
    Status,
    /// Write the break-glass file of the whole vault now (admin; audited). It is also written
    /// automatically, after credential changes and daily, to DATA_DIR/breakglass/.
    Export {
        /// The file to write.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: PathBuf,
    },
    /// Open a break-glass file offline (no server, network or data dir): asks for the shares of
    /// the file's key epoch, then reads commands: `search TEXT`, `show TARGET ACCOUNT [--version
    /// N]`, `list`, `quit`. Everything shown is logged to FILE.log.
    Open {
        /// The break-glass file (`cofre-breakglass-...cofre`).
        file: PathBuf,
        /// A file holding one share (repeat for each share); without enough of them, the
        /// remaining shares are asked for on the terminal.
        #[arg(long = "share-file", value_name = "FILE")]
        share_files: Vec<PathBuf>,
        /// Where to log what was shown (default: FILE.log next to the file).
        #[arg(long, value_name = "PATH")]
        log: Option<PathBuf>,
    },
    /// Combine shares into the key epoch's age identity and print it, for the standard `age` tool:
    /// `age -d -i identity.txt FILE`. Offline.
    Combine {
        /// A file holding one share (repeat: as many as the threshold).
        #[arg(long = "share-file", value_name = "FILE", required = true)]
        share_files: Vec<PathBuf>,
        /// Check the shares against this break-glass file, and log the combination next to it.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

impl BreakglassCmd {
    /// `open` and `combine` run without a server.
    pub fn is_offline(&self) -> bool {
        matches!(
            self,
            BreakglassCmd::Open { .. } | BreakglassCmd::Combine { .. }
        )
    }
}

/// Reads a share from a file: every line that is not empty or a `#` comment, joined (a share
/// copied over two lines still reads).
fn read_share_file(path: &Path) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("--share-file {}", path.display()))?,
    );
    let mut share = Zeroizing::new(String::new());
    for line in text.lines() {
        let line = line.trim();
        if !line.is_empty() && !line.starts_with('#') {
            share.push_str(line);
        }
    }
    Ok(share)
}

fn add_share_files(set: &mut ShareSet, files: &[PathBuf]) -> Result<()> {
    for f in files {
        let text = read_share_file(f)?;
        set.add_text(&text)
            .map_err(|e| anyhow!("--share-file {}: {e}", f.display()))?;
    }
    Ok(())
}

pub fn offline(cmd: BreakglassCmd, output: Output) -> Result<ExitCode> {
    match cmd {
        BreakglassCmd::Open {
            file,
            share_files,
            log,
        } => open(&file, &share_files, log, output == Output::Json),
        BreakglassCmd::Combine { share_files, file } => combine(&share_files, file.as_deref()),
        _ => Err(anyhow!("internal: not an offline command")),
    }
}

fn open(
    file: &Path,
    share_files: &[PathBuf],
    log: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode> {
    let data = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let header = Header::parse(&data).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let mut set = ShareSet::for_file(&header);
    add_share_files(&mut set, share_files)?;
    let terminal = std::io::stdin().is_terminal();
    // Errors alone start stderr (`error: ...`, the CLI's contract), so the description comes after
    // the share files were accepted, or before asking on the terminal.
    if terminal || set.is_complete() {
        eprintln!("{}: {}", file.display(), header.describe());
    }
    while !set.is_complete() {
        if !terminal {
            bail!(
                "{} shares of key epoch {} are needed to open {}, only {} given: add --share-file (or run on a terminal to be asked)",
                header.threshold,
                header.epoch,
                file.display(),
                set.have()
            );
        }
        let prompt = format!(
            "share {} of {} (instance {}, epoch {}): ",
            set.have() + 1,
            header.threshold,
            header.instance,
            header.epoch
        );
        let text = Zeroizing::new(
            rpassword::prompt_password(prompt).context("reading a share from the terminal")?,
        );
        if text.trim().is_empty() {
            bail!("no share given; nothing was opened");
        }
        match set.add_text(&text) {
            Ok(s) => eprintln!("share {} accepted", s.index()),
            Err(e) => eprintln!("refused: {e}"),
        }
    }
    let secret = set.combine()?;
    let (header, contents) = cofre_breakglass::file::open(&data, &secret)
        .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    drop(secret);
    drop(data);
    let log_path = log.unwrap_or_else(|| cofre_breakglass::default_log_path(file));
    let mut log = OpenLog::open(&log_path, &set.indexes()).map_err(|e| {
        anyhow!("{e}; nothing is shown without a log (choose another with --log PATH)")
    })?;
    log.record(&format!(
        "open {} (instance {}, epoch {}, written {}, {} credentials)",
        file.display(),
        header.instance,
        header.epoch,
        header.written_at,
        header.credentials
    ))?;
    eprintln!(
        "opened with shares {}; what is shown is logged to {}. Type `help` for the commands.",
        set.indexes()
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(","),
        log_path.display()
    );
    let stdin = std::io::stdin();
    let failed = Session::new(&contents, json).run(
        stdin.lock(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
        &mut log,
        terminal,
    )?;
    log.record("close")?;
    if terminal {
        eprintln!();
    }
    Ok(if failed > 0 && !terminal {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn combine(share_files: &[PathBuf], file: Option<&Path>) -> Result<ExitCode> {
    let header = file
        .map(|f| Header::read_file(f).map_err(|e| anyhow!("{}: {e}", f.display())))
        .transpose()?;
    let mut set = match &header {
        Some(h) => ShareSet::for_file(h),
        None => ShareSet::new(),
    };
    add_share_files(&mut set, share_files)?;
    let secret = set.combine()?;
    let expect = set
        .expect()
        .ok_or_else(|| anyhow!("no share given"))?
        .clone();
    if let (Some(f), Some(_)) = (file, &header) {
        let mut log = OpenLog::open(&cofre_breakglass::default_log_path(f), &set.indexes())?;
        log.record(&format!(
            "combine: the age identity of epoch {} was printed",
            expect.epoch
        ))?;
    }
    let identity = secret.identity_string()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "# cofre break-glass identity: instance {}, key epoch {}",
        expect.instance, expect.epoch
    )?;
    writeln!(out, "# public key: {}", secret.recipient()?)?;
    writeln!(out, "{}", identity.as_str())?;
    eprintln!(
        "this identity opens every break-glass file of epoch {} with the plain age tool, and nothing logs what it opens: keep it as safe as the shares and destroy it after use",
        expect.epoch
    );
    Ok(ExitCode::SUCCESS)
}

/// Creates a new file (never overwrites), mode 0600, and syncs it.
fn write_new_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

fn print_epoch(e: &EpochInfo) {
    let state = match (&e.closed_at, &e.abandoned_at) {
        (Some(at), _) => format!("closed {at}"),
        (None, Some(at)) => format!("abandoned {at}"),
        (None, None) => "waiting for custodians".to_owned(),
    };
    outln!(
        "epoch {}\t{} of {}\t{}\tcreated {} by {}\t{}",
        e.epoch,
        e.threshold,
        e.shares,
        state,
        e.created_at,
        e.created_by,
        e.recipient
    );
    for c in &e.custodians {
        outln!(
            "  share {}\t{}\t{}",
            c.share_index,
            c.username,
            c.delivered_at.as_deref().map_or_else(
                || "not fetched yet".to_owned(),
                |at| format!("fetched {at}")
            )
        );
    }
}

pub async fn online(ctx: &Ctx, cmd: BreakglassCmd) -> Result<ExitCode> {
    match cmd {
        BreakglassCmd::Ceremony {
            custodians,
            threshold,
        } => {
            let r: CeremonyResponse = ctx
                .client
                .post(
                    "/api/v1/breakglass/ceremony",
                    &CeremonyRequest {
                        custodians,
                        threshold,
                    },
                )
                .await?;
            ctx.print(&r, |r| {
                outln!(
                    "key ceremony started: epoch {} of instance {}; {} of {} shares open its files",
                    r.epoch.epoch, r.instance, r.epoch.threshold, r.epoch.shares
                );
                outln!("each custodian now runs `cofre breakglass share` once, logged in as themselves:");
                for c in &r.epoch.custodians {
                    outln!("  share {}\t{}", c.share_index, c.username);
                }
                for a in &r.abandoned {
                    outln!("epoch {a} had not closed and was abandoned");
                }
                outln!(
                    "files are written under epoch {} once every custodian has fetched their share",
                    r.epoch.epoch
                );
            })?;
        }
        BreakglassCmd::Share { out } => {
            let r: ShareResponse = ctx.client.post("/api/v1/breakglass/share", &()).await?;
            if let Some(path) = &out {
                if let Err(e) = write_new_private(path, &format!("{}\n", r.share.expose())) {
                    // The server no longer has the share: never lose it to a file error.
                    outln!("{}", r.share.expose());
                    bail!(
                        "--out {}: {e}; your share was printed above instead (the server no longer has it)",
                        path.display()
                    );
                }
            }
            eprintln!(
                "your break-glass share: instance {}, key epoch {}, share {} of {} ({} open a file).",
                r.instance, r.epoch, r.share_index, r.shares, r.threshold
            );
            eprintln!("The server no longer has it: keep it offline (on paper, in a safe), never next to the files.");
            if r.ceremony_closed {
                eprintln!("You were the last custodian: the ceremony is closed, files are now written under epoch {}.", r.epoch);
            }
            match (&out, ctx.output) {
                (Some(p), _) => eprintln!("written to {}", p.display()),
                (None, Output::Json) => outln!("{}", serde_json::to_string_pretty(&r)?),
                (None, Output::Text) => outln!("{}", r.share.expose()),
            }
        }
        BreakglassCmd::Status => {
            let s: BreakGlassStatus = ctx.client.get("/api/v1/breakglass").await?;
            ctx.print(&s, |s| {
                outln!("instance {}", s.instance);
                match s.active_epoch {
                    Some(e) => outln!("files are written under epoch {e}"),
                    None => outln!("no complete key epoch yet: no file is written (run `cofre breakglass ceremony`)"),
                }
                outln!("directories: {}", s.directories.join(", "));
                if let Some(f) = &s.last_file {
                    outln!(
                        "last file: {} (epoch {}, {}, {} credentials, {} versions, after a {})",
                        f.path, f.epoch, f.written_at, f.credentials, f.versions, f.reason
                    );
                }
                if let Some(e) = &s.last_error {
                    outln!("LAST WRITE FAILED: {e}");
                }
                s.epochs.iter().for_each(print_epoch);
            })?;
        }
        BreakglassCmd::Export { out } => {
            let (bytes, _) = ctx
                .client
                .post_bytes("/api/v1/breakglass/export")
                .await
                .map_err(|e: ApiFailure| anyhow!("{e}"))?;
            let header = Header::parse(&bytes)
                .map_err(|e| anyhow!("the server sent something unexpected: {e}"))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| format!("-o {}", out.display()))?;
            f.write_all(&bytes)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("-o {}", out.display()))?;
            match ctx.output {
                Output::Json => outln!("{}", serde_json::to_string_pretty(&header)?),
                Output::Text => outln!("wrote {}: {}", out.display(), header.describe()),
            }
        }
        BreakglassCmd::Open { .. } | BreakglassCmd::Combine { .. } => {
            return Err(anyhow!("internal: an offline command"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
