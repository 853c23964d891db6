//! The offline opener's commands, over any input and output so that tests (and people) can drive it
//! from a pipe: `search TEXT`, `show TARGET ACCOUNT [--version N]`, `list`, `help`, `quit`.
//!
//! Everything shown is first appended to the local log (`FILE.log` next to the backup unless told
//! otherwise): when, what, and by which shares. If the log cannot be written, nothing is shown:
//! opening the glass leaves a trace or does not happen.

use crate::file::{Contents, CredentialEntry, TargetEntry, VersionEntry};
use crate::{Error, Result};
use serde_json::json;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The append-only local log of what an opener showed.
pub struct OpenLog {
    path: PathBuf,
    file: std::fs::File,
    shares: String,
    who: String,
}

impl OpenLog {
    /// Opens (creates, mode 0600) the log for appending. `shares` are the share numbers used.
    pub fn open(path: &Path, shares: &[u8]) -> Result<OpenLog> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io_path("cannot open the log", path, e))?;
        let shares = shares
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(",");
        Ok(OpenLog {
            path: path.to_owned(),
            file,
            shares,
            who: who_am_i(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line: `TIME<tab>EVENT<tab>shares=1,3<tab>by=USER@HOST`, synced to disk.
    pub fn record(&mut self, event: &str) -> Result<()> {
        let event = event.replace(['\n', '\t'], " ");
        let line = format!(
            "{}\t{event}\tshares={}\tby={}\n",
            crate::now_rfc3339(),
            self.shares,
            self.who
        );
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io_path("cannot write the log", &self.path, e))
    }
}

/// `user@host` from the environment and the kernel, for the log; never fails.
fn who_am_i() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            // No login variables (a service, a bare shell): the real uid from the kernel.
            let status = std::fs::read_to_string("/proc/self/status").ok()?;
            let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            Some(format!("uid{}", uid.split_whitespace().next()?))
        })
        .unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{host}")
}

/// What one command produced.
enum Reply {
    Text(String),
    Json(serde_json::Value),
    Quit,
}

/// An error in one command: reported, and the session goes on.
struct CommandError(String);

impl From<Error> for CommandError {
    fn from(e: Error) -> Self {
        CommandError(e.to_string())
    }
}

pub const HELP: &str = "commands:
  search TEXT                        credentials whose target, host, tag or account contains TEXT (all versions, no secrets)
  show TARGET ACCOUNT [--version N]  print a secret (the current version unless --version)
  list                               every target and its credentials (no secrets)
  help                               this text
  quit                               leave (end of input does too)";

/// The interactive part of `cofre breakglass open`, over an opened file.
pub struct Session<'a> {
    contents: &'a Contents,
    json: bool,
}

impl<'a> Session<'a> {
    pub fn new(contents: &'a Contents, json: bool) -> Session<'a> {
        Session { contents, json }
    }

    /// Reads commands until `quit` or the end of input. Results go to `out`, errors (one line each,
    /// `error: ...`) to `err`, the prompt (if `prompt`) to `err`. Returns how many commands failed.
    pub fn run(
        &self,
        input: impl BufRead,
        out: &mut impl Write,
        err: &mut impl Write,
        log: &mut OpenLog,
        prompt: bool,
    ) -> Result<usize> {
        let io = |e| Error::io("cannot write the output", e);
        let mut failed = 0;
        if prompt {
            write!(err, "cofre-breakglass> ").map_err(io)?;
            err.flush().map_err(io)?;
        }
        for line in input.lines() {
            let line = line.map_err(|e| Error::io("cannot read the input", e))?;
            match self.execute(&line, log) {
                Ok(Reply::Quit) => return Ok(failed),
                Ok(Reply::Text(t)) => {
                    out.write_all(t.as_bytes()).map_err(io)?;
                }
                Ok(Reply::Json(v)) => {
                    writeln!(out, "{v}").map_err(io)?;
                }
                Err(CommandError(m)) => {
                    failed += 1;
                    if self.json {
                        writeln!(out, "{}", json!({"error": m})).map_err(io)?;
                    }
                    writeln!(err, "error: {m}").map_err(io)?;
                }
            }
            out.flush().map_err(io)?;
            if prompt {
                write!(err, "cofre-breakglass> ").map_err(io)?;
                err.flush().map_err(io)?;
            }
        }
        Ok(failed)
    }

    fn execute(&self, line: &str, log: &mut OpenLog) -> Result<Reply, CommandError> {
        let line = line.trim();
        let (command, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match command {
            "" => Ok(Reply::Text(String::new())),
            "quit" | "exit" | "q" => Ok(Reply::Quit),
            "help" | "?" => Ok(if self.json {
                Reply::Json(json!({"command": "help", "help": HELP}))
            } else {
                Reply::Text(format!("{HELP}\n"))
            }),
            "search" | "find" => {
                if rest.is_empty() {
                    return Err(CommandError("usage: search TEXT".into()));
                }
                self.search(rest, log)
            }
            "show" => self.show(rest, log),
            "list" | "ls" => self.list(log),
            other => Err(CommandError(format!(
                "unknown command {other:?}; try `help`"
            ))),
        }
    }

    /// Credentials matching `query` (case-insensitive substring of target, host, tag or account).
    pub fn matches(&self, query: &str) -> Vec<(&'a TargetEntry, &'a CredentialEntry)> {
        let q = query.to_lowercase();
        let has = |s: &str| s.to_lowercase().contains(&q);
        let mut out = Vec::new();
        for t in &self.contents.targets {
            let target_matches = has(&t.name) || has(&t.host) || t.tags.iter().any(|g| has(g));
            for c in &t.credentials {
                if target_matches || has(&c.account) {
                    out.push((t, c));
                }
            }
        }
        out
    }

    fn search(&self, query: &str, log: &mut OpenLog) -> Result<Reply, CommandError> {
        let found = self.matches(query);
        log.record(&format!(
            "search {query:?}: {} credentials listed (no secrets)",
            found.len()
        ))?;
        if self.json {
            let results: Vec<_> = found
                .iter()
                .map(|(t, c)| {
                    json!({
                        "target": t.name, "host": t.host, "port": t.port, "tags": t.tags,
                        "account": c.account, "kind": c.kind, "current_version": c.current_version,
                        "versions": c.versions.iter().map(|v| json!({
                            "version": v.version, "kind": v.kind,
                            "created_at": v.created_at, "created_by": v.created_by,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            return Ok(Reply::Json(
                json!({"command": "search", "query": query, "results": results}),
            ));
        }
        let mut text = String::new();
        for (t, c) in &found {
            text.push_str(&format!(
                "{}/{}\t{}:{}\n",
                t.name, c.account, t.host, t.port
            ));
            // Newest first, like `cofre credential history`.
            for v in c.versions.iter().rev() {
                text.push_str(&format!(
                    "  v{}\t{}\t{}\tby {}{}\n",
                    v.version,
                    v.kind,
                    v.created_at,
                    v.created_by,
                    if v.version == c.current_version {
                        "\tcurrent"
                    } else {
                        ""
                    }
                ));
            }
        }
        text.push_str(&match found.len() {
            0 => format!("no credential matches {query:?}\n"),
            1 => format!("1 credential matches {query:?}\n"),
            n => format!("{n} credentials match {query:?}\n"),
        });
        Ok(Reply::Text(text))
    }

    fn show(&self, args: &str, log: &mut OpenLog) -> Result<Reply, CommandError> {
        let usage = || CommandError("usage: show TARGET ACCOUNT [--version N]".into());
        let words: Vec<&str> = args.split_whitespace().collect();
        let (target, account, version) = match words.as_slice() {
            [t, a] => (*t, *a, None),
            [t, a, "--version" | "-v", n] => (*t, *a, Some(*n)),
            [t, a, flag] if flag.starts_with("--version=") => {
                (*t, *a, flag.strip_prefix("--version="))
            }
            _ => return Err(usage()),
        };
        let version = version
            .map(|n| {
                n.parse::<i64>()
                    .map_err(|_| CommandError(format!("--version: {n:?} is not a number")))
            })
            .transpose()?;
        let t = self
            .contents
            .targets
            .iter()
            .find(|t| t.name == target)
            .ok_or_else(|| CommandError(format!("no target {target} in this file")))?;
        let c = t
            .credentials
            .iter()
            .find(|c| c.account == account)
            .ok_or_else(|| {
                CommandError(format!(
                    "no credential {target}/{account} in this file (accounts on {target}: {})",
                    t.credentials
                        .iter()
                        .map(|c| c.account.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let wanted = version.unwrap_or(c.current_version);
        let v: &VersionEntry =
            c.versions
                .iter()
                .find(|v| v.version == wanted)
                .ok_or_else(|| {
                    CommandError(format!(
                        "{target}/{account} has no version {wanted} (versions {})",
                        c.versions
                            .iter()
                            .map(|v| v.version.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
        // The record first: nothing is shown that is not logged.
        log.record(&format!("show {target}/{account} version {}", v.version))?;
        let current = v.version == c.current_version;
        if self.json {
            return Ok(Reply::Json(json!({
                "command": "show", "target": target, "account": account, "version": v.version,
                "kind": v.kind, "current": current, "created_at": v.created_at,
                "created_by": v.created_by, "secret": v.secret.expose(),
            })));
        }
        let mut text = format!(
            "{target}/{account} version {} of {} ({}{}, {} by {}; host {}:{})\n",
            v.version,
            c.versions.len(),
            v.kind,
            if current { ", current" } else { "" },
            v.created_at,
            v.created_by,
            t.host,
            t.port
        );
        text.push_str(v.secret.expose());
        if !text.ends_with('\n') {
            text.push('\n');
        }
        Ok(Reply::Text(text))
    }

    fn list(&self, log: &mut OpenLog) -> Result<Reply, CommandError> {
        let c = self.contents.actual_counts();
        log.record(&format!(
            "list: {} targets, {} credentials listed (no secrets)",
            c.targets, c.credentials
        ))?;
        if self.json {
            let targets: Vec<_> = self
                .contents
                .targets
                .iter()
                .map(|t| {
                    json!({
                        "name": t.name, "host": t.host, "port": t.port, "tags": t.tags,
                        "credentials": t.credentials.iter().map(|c| json!({
                            "account": c.account, "kind": c.kind,
                            "current_version": c.current_version, "versions": c.versions.len(),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            return Ok(Reply::Json(json!({"command": "list", "targets": targets})));
        }
        let mut text = String::new();
        for t in &self.contents.targets {
            text.push_str(&format!(
                "{}\t{}:{}\ttags={}\n",
                t.name,
                t.host,
                t.port,
                t.tags.join(",")
            ));
            for c in &t.credentials {
                text.push_str(&format!(
                    "  {}\t{}\tv{}\t{} versions\n",
                    c.account,
                    c.kind,
                    c.current_version,
                    c.versions.len()
                ));
            }
        }
        Ok(Reply::Text(text))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::file::tests::write_sample;
    use crate::share::ceremony;

    fn run(input: &str, json: bool) -> (String, String, usize, String) {
        let c = ceremony("0123456789abcdef", 4, 2, 3).unwrap();
        let (_, bytes) = write_sample(&c.recipient);
        let secret = crate::combine(&[c.shares[2].clone(), c.shares[0].clone()]).unwrap();
        let (_, contents) = crate::file::open(&bytes, &secret).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("bg.cofre.log");
        let mut log = OpenLog::open(&log_path, &[1, 3]).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let failed = Session::new(&contents, json)
            .run(input.as_bytes(), &mut out, &mut err, &mut log, false)
            .unwrap();
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
            failed,
            std::fs::read_to_string(&log_path).unwrap(),
        )
    }

    #[test]
    fn search_show_list_and_log() {
        let (out, err, failed, log) = run(
            "search DB01\nshow db01 root\nshow db01 root --version 1\nlist\nshow db01 nobody\nquit\nshow db01 root\n",
            false,
        );
        assert_eq!(failed, 1, "{err}");
        assert!(
            out.contains("db01/root\t10.0.0.5:22\n  v2\tpassword"),
            "{out}"
        );
        assert!(out.contains("2 credentials match \"DB01\""), "{out}");
        assert!(
            out.contains("db01/root version 2 of 2 (password, current,"),
            "{out}"
        );
        assert!(out.contains("\nnew-root-pw\n"), "{out}");
        assert!(out.contains("\nold \"root\" pw\n"), "{out}");
        assert!(out.contains("web01\tweb01.example:2222"), "{out}");
        assert!(err.contains("error: no credential db01/nobody"), "{err}");
        // After quit, nothing more runs.
        assert_eq!(out.matches("new-root-pw").count(), 1);
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 4, "{log}");
        assert!(
            lines[1].contains("\tshow db01/root version 2\tshares=1,3\tby="),
            "{log}"
        );
        assert!(lines[2].contains("show db01/root version 1"), "{log}");
        assert!(!log.contains("new-root-pw"));
    }

    #[test]
    fn json_lines() {
        let (out, _, failed, _) = run("show db01 deploy\nsearch prod\nbogus\n", true);
        assert_eq!(failed, 1);
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["kind"], "private_key");
        assert!(lines[0]["secret"].as_str().unwrap().contains("\nabc\n"));
        assert_eq!(lines[1]["results"].as_array().unwrap().len(), 2);
        assert!(lines[2]["error"]
            .as_str()
            .unwrap()
            .contains("unknown command"));
    }

    #[test]
    fn nothing_is_shown_without_a_log() {
        let c = ceremony("0123456789abcdef", 4, 2, 2).unwrap();
        let (_, bytes) = write_sample(&c.recipient);
        let (_, contents) = crate::file::open(&bytes, &crate::combine(&c.shares).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("x.log");
        let mut log = OpenLog::open(&log_path, &[1, 2]).unwrap();
        // Replace the log's file with a read-only handle: every write fails.
        log.file = std::fs::File::open(&log_path).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let failed = Session::new(&contents, false)
            .run(
                &b"show db01 root\n"[..],
                &mut out,
                &mut err,
                &mut log,
                false,
            )
            .unwrap();
        assert_eq!(failed, 1);
        assert!(!String::from_utf8(out).unwrap().contains("new-root-pw"));
        assert!(String::from_utf8(err)
            .unwrap()
            .contains("cannot write the log"));
    }
}
