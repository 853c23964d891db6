//! A customer host reached with the real `rsync` over the real `ssh`.
//!
//! The private key is opened from the vault for one operation and written to a 0600 file in a
//! private temporary directory, which is removed when the operation ends. Host keys are checked
//! strictly against the pinned ones (`StrictHostKeyChecking=yes` with our own known_hosts file);
//! nothing else on the machine (agent, user config, global known_hosts) takes part.
//! rsync runs with `--delay-updates`: files are written under `.cofre-partial-JOB/` and renamed
//! into place together at the end, so a killed run leaves the previous copies untouched. The
//! partial dir is the job's own: two jobs sending the same files to one target at once would
//! otherwise move each other's files out of a shared one (rsync exit 23), while the next run of
//! the same job (never two at once) picks up what a killed one left there.

use super::{probe_name, Progress, Source, SyncStats, TargetError};
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

/// How long to wait for the host to answer before calling it unreachable.
const CONNECT_TIMEOUT_SECS: u64 = 10;

pub struct SshTarget {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub private_key: Zeroizing<String>,
    pub known_hosts: String,
    /// A private (0700) directory for the key file of each operation: inside the data dir, so
    /// that one left behind by a killed process is removed at the next start.
    pub scratch: PathBuf,
}

/// `user@host:/path`, split and checked.
pub fn parse_location(text: &str) -> Result<(String, String, String), String> {
    let shape = "must look like user@host:/absolute/path";
    let (user, rest) = text.split_once('@').ok_or_else(|| shape.to_owned())?;
    let (host, path) = rest.split_once(':').ok_or_else(|| shape.to_owned())?;
    let user_ok = !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !user.starts_with('-');
    if !user_ok {
        return Err(format!(
            "the user `{user}` is not a valid login name; {shape}"
        ));
    }
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
        && !host.starts_with('-');
    if !host_ok {
        return Err(format!(
            "the host `{host}` is not a host name or IPv4 address; {shape}"
        ));
    }
    if !path.starts_with('/') {
        return Err(format!("the path `{path}` is not absolute; {shape}"));
    }
    if path
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "'\"\\$`".contains(c))
    {
        return Err(format!(
            "the path `{path}` has spaces, quotes or control characters; choose a plain path"
        ));
    }
    Ok((user.to_owned(), host.to_owned(), path.to_owned()))
}

/// Asks the host for its keys (`ssh-keyscan`), to pin them at first contact.
pub async fn keyscan(host: &str, port: u16) -> Result<String, TargetError> {
    reachable(host, port).await?;
    let out = tokio::process::Command::new("ssh-keyscan")
        .args([
            "-T",
            &CONNECT_TIMEOUT_SECS.to_string(),
            "-p",
            &port.to_string(),
            "--",
            host,
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| TargetError::new(format!("cannot run ssh-keyscan: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if crate::ssh_keys::known_hosts_fingerprints(&text).is_empty() {
        return Err(TargetError::new(format!(
            "{host}:{port} sent no SSH host key: is it an SSH server?"
        )));
    }
    Ok(text)
}

/// A TCP connection first, so that "unreachable" is told apart from SSH's own failures.
async fn reachable(host: &str, port: u16) -> Result<(), TargetError> {
    let connect = tokio::net::TcpStream::connect((host, port));
    match tokio::time::timeout(Duration::from_secs(CONNECT_TIMEOUT_SECS), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(TargetError::new(format!(
            "cannot reach {host}:{port}: {e} (unreachable host)"
        ))),
        Err(_) => Err(TargetError::new(format!(
            "cannot reach {host}:{port}: no answer within {CONNECT_TIMEOUT_SECS} s (unreachable host)"
        ))),
    }
}

/// The key and known_hosts files of one operation, removed with the directory when dropped.
struct Material {
    dir: tempfile::TempDir,
}

impl Material {
    fn key(&self) -> PathBuf {
        self.dir.path().join("key")
    }
    fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }
}

/// Single-quotes a word for the remote shell (paths are checked to hold no quotes).
fn sh_quote(s: &str) -> String {
    format!("'{s}'")
}

impl SshTarget {
    fn material(&self) -> Result<Material, TargetError> {
        let err = |e: std::io::Error| TargetError::new(format!("cannot prepare the SSH key: {e}"));
        cofre_crypto::files::ensure_private_dir(&self.scratch)
            .map_err(|e| TargetError::new(format!("cannot prepare the SSH key: {e}")))?;
        // tempfile makes the directory 0700.
        let dir = tempfile::Builder::new()
            .prefix("ssh-")
            .tempdir_in(&self.scratch)
            .map_err(err)?;
        let m = Material { dir };
        let mut key = Zeroizing::new(self.private_key.as_bytes().to_vec());
        if !key.ends_with(b"\n") {
            key.push(b'\n');
        }
        cofre_crypto::files::write_private_file(&m.key(), &key)
            .map_err(|e| TargetError::new(format!("cannot prepare the SSH key: {e}")))?;
        let mut kh = std::fs::File::create(m.known_hosts()).map_err(err)?;
        kh.write_all(self.known_hosts.as_bytes()).map_err(err)?;
        Ok(m)
    }

    fn ssh_args(&self, m: &Material) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            m.key().display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "IdentityAgent=none".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", m.known_hosts().display()),
            "-o".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "-o".into(),
            format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"),
            "-o".into(),
            "ServerAliveInterval=15".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
            "-p".into(),
            self.port.to_string(),
        ]
    }

    fn who(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// Turns ssh's or rsync's complaint into an error naming the target.
    fn failed(&self, what: &str, stderr: &str, code: Option<i32>) -> TargetError {
        let lines: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let tail = lines
            .iter()
            .rev()
            .take(3)
            .rev()
            .copied()
            .collect::<Vec<_>>()
            .join("; ");
        let hint = if stderr.contains("Permission denied (publickey") {
            " (the host refused the key: is its public key in the account's authorized_keys?)"
        } else if stderr.contains("Host key verification failed")
            || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        {
            " (the host's key is not the pinned one: if the host was really re-keyed, remove and add the target again)"
        } else if stderr.contains("No space left on device") {
            " (the target's disk is full)"
        } else if stderr.contains("Permission denied") || stderr.contains("Read-only file system") {
            " (no write permission on the target)"
        } else {
            ""
        };
        let code = code.map_or_else(|| "killed".to_owned(), |c| format!("exit {c}"));
        TargetError::new(format!(
            "{what} on {} failed ({code}): {tail}{hint}",
            self.who()
        ))
    }

    pub async fn probe(&self) -> Result<(), TargetError> {
        reachable(&self.host, self.port).await?;
        let m = self.material()?;
        let probe = format!("{}/{}", self.path, probe_name());
        let remote = format!(
            "mkdir -p -- {root} && cat > {p} && cat -- {p} && rm -f -- {p}",
            root = sh_quote(&self.path),
            p = sh_quote(&probe)
        );
        let content = format!("cofre write test {}\n", uuid::Uuid::new_v4());
        let mut child = tokio::process::Command::new("ssh")
            .args(self.ssh_args(&m))
            .arg(format!("{}@{}", self.user, self.host))
            .arg(remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TargetError::new(format!("cannot run ssh: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A host that refuses us closes early; the exit status tells why.
            let _ = stdin.write_all(content.as_bytes()).await;
        }
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .map_err(|_| {
                TargetError::new(format!(
                    "write test on {}: no answer within 120 s",
                    self.who()
                ))
            })?
            .map_err(|e| TargetError::new(format!("ssh: {e}")))?;
        drop(m);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(self.failed("write test", &stderr, out.status.code()));
        }
        if out.stdout != content.as_bytes() {
            return Err(TargetError::new(format!(
                "write test on {}: the probe file read back different bytes",
                self.who()
            )));
        }
        Ok(())
    }

    pub async fn sync(
        &self,
        source: &Source,
        progress: &Progress,
    ) -> Result<SyncStats, TargetError> {
        let m = self.material()?;
        let list_path = m.dir.path().join("files");
        let mut list = String::new();
        for f in &source.files {
            list.push_str(&f.rel);
            list.push('\n');
        }
        std::fs::write(&list_path, list)
            .map_err(|e| TargetError::new(format!("cannot write the file list: {e}")))?;
        let ssh_cmd = std::iter::once("ssh".to_owned())
            .chain(self.ssh_args(&m))
            .collect::<Vec<_>>()
            .join(" ");
        let dest = format!("{}@{}:{}/{}/", self.user, self.host, self.path, source.kind);
        let mut child = tokio::process::Command::new("rsync")
            .args([
                "--archive",
                "--no-owner",
                "--no-group",
                "--delay-updates",
                "--stats",
                "--out-format=cofre-file %l %n",
            ])
            .arg(format!("--partial-dir=.cofre-partial-{}", source.owner))
            .arg(format!("--files-from={}", list_path.display()))
            .arg("-e")
            .arg(ssh_cmd)
            .arg(format!("{}/", source.base.display()))
            .arg(dest)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TargetError::new(format!("cannot run rsync: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| TargetError::new("rsync: no stdout"))?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| TargetError::new("rsync: no stderr"))?;
        let err_task = tokio::spawn(async move {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s).await;
            s
        });
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut stats = SyncStats::default();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("cofre-file ") {
                let (size, name) = rest.split_once(' ').unwrap_or(("0", rest));
                if !name.ends_with('/') {
                    let size: u64 = size.replace(',', "").parse().unwrap_or(0);
                    progress.update(|p| {
                        p.files_done += 1;
                        p.bytes_done += size;
                    });
                }
            } else if let Some(v) = line.strip_prefix("Total bytes sent: ") {
                stats.bytes_sent = parse_number(v);
            } else if let Some(v) = line.strip_prefix("Number of regular files transferred: ") {
                stats.files_sent = parse_number(v);
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|e| TargetError::new(format!("rsync: {e}")))?;
        let stderr = err_task.await.unwrap_or_default();
        drop(m);
        // 24: some source files vanished while being sent (a snapshot pruned meanwhile); the rest
        // arrived, and the next run catches up.
        match status.code() {
            Some(0) | Some(24) => {
                progress.update(|p| {
                    p.files_done = p.files_total;
                    p.bytes_done = p.bytes_total;
                });
                Ok(stats)
            }
            code => Err(self.failed("rsync", &stderr, code)),
        }
    }
}

fn parse_number(text: &str) -> u64 {
    text.trim().replace([',', '.'], "").parse().unwrap_or(0)
}

/// Whether `text` looks like a private key the ssh client will take.
pub fn check_private_key(text: &str) -> Result<(), String> {
    if text.trim_start().starts_with("-----BEGIN ") && text.contains("PRIVATE KEY-----") {
        Ok(())
    } else {
        Err(
            "is not a private key in OpenSSH or PEM format (-----BEGIN ... PRIVATE KEY-----)"
                .into(),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            parse_location("backup@nas.corp:/srv/cofre").unwrap(),
            ("backup".into(), "nas.corp".into(), "/srv/cofre".into())
        );
        for bad in [
            "nas.corp:/srv",
            "backup@nas.corp",
            "backup@nas.corp:srv",
            "@nas:/srv",
            "b@-oProxyCommand=x:/srv",
            "b@nas:/srv/it's",
            "b@nas:/srv/a b",
        ] {
            assert!(parse_location(bad).is_err(), "{bad}");
        }
    }
}
