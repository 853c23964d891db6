//! The break-glass opener: `open` a break-glass file with k custodians' shares, or `combine` the
//! shares into the epoch's age identity for the plain `age` tool. Used by `cofre breakglass
//! open|combine` and by the `cofre-opener` binary, which is this crate alone.
//!
//! **Invariant:** no server, database driver, async runtime or network stack (its dependencies are
//! cofre-breakglass, clap, rpassword, anyhow, zeroize); it reads no client config and no data dir.
//! Held by `tests/it/opener.rs` (`cargo tree` of this package, and an open under an empty
//! environment in a network namespace without interfaces).

use anyhow::{anyhow, bail, Context, Result};
use cofre_breakglass::session::{OpenLog, Session};
use cofre_breakglass::share::ShareSet;
use cofre_breakglass::Header;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use zeroize::Zeroizing;

/// `open FILE [--share-file F]... [--log PATH]`.
#[derive(clap::Args, Debug)]
pub struct OpenArgs {
    /// The break-glass file (`cofre-breakglass-...cofre`).
    pub file: PathBuf,
    /// A file holding one share (repeat for each share); without enough of them, the
    /// remaining shares are asked for on the terminal.
    #[arg(long = "share-file", value_name = "FILE")]
    pub share_files: Vec<PathBuf>,
    /// Where to log what was shown (default: FILE.log next to the file).
    #[arg(long, value_name = "PATH")]
    pub log: Option<PathBuf>,
}

/// `combine --share-file F... [--file FILE]`.
#[derive(clap::Args, Debug)]
pub struct CombineArgs {
    /// A file holding one share (repeat: as many as the threshold).
    #[arg(long = "share-file", value_name = "FILE", required = true)]
    pub share_files: Vec<PathBuf>,
    /// Check the shares against this break-glass file, and log the combination next to it.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
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

/// Opens the file, asking on the terminal for the shares the files did not give, then runs the
/// session's commands from stdin (replies as JSON lines when `json`). A scripted session (stdin
/// not a terminal) with a failed command ends with a failure status.
pub fn open(args: OpenArgs, json: bool) -> Result<ExitCode> {
    let OpenArgs {
        file,
        share_files,
        log,
    } = args;
    let file = file.as_path();
    let data = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let header = Header::parse(&data).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let mut set = ShareSet::for_file(&header);
    add_share_files(&mut set, &share_files)?;
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

/// Combines the shares into the epoch's age identity and prints it (with a warning on stderr:
/// nothing logs what the plain `age` tool opens with it).
pub fn combine(args: CombineArgs) -> Result<ExitCode> {
    let CombineArgs { share_files, file } = args;
    let file = file.as_deref();
    let header = file
        .map(|f| Header::read_file(f).map_err(|e| anyhow!("{}: {e}", f.display())))
        .transpose()?;
    let mut set = match &header {
        Some(h) => ShareSet::for_file(h),
        None => ShareSet::new(),
    };
    add_share_files(&mut set, &share_files)?;
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

/// `error: ...` on stderr and a failure status, as every Cofre command ends on an error.
pub fn report(result: Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
