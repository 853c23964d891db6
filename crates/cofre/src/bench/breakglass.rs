//! `cofre-bench breakglass`: builds a break-glass file of N credentials × V versions with the real
//! writer, then measures what a custodian waits for: `cofre breakglass open FILE` (the cofre binary,
//! k share files) until the first line of a search result, next to a plain `age -d` of the same
//! file when the `age` tool is installed.

use anyhow::{anyhow, bail, Context, Result};
use cofre_breakglass::{CredentialEntry, Header, Secret, TargetEntry, VersionEntry};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

const INSTANCE: &str = "be4c4b3e4c4b3e00";
const ACCOUNTS_PER_TARGET: usize = 10;
const RUNS: usize = 3;

/// Cheap deterministic bytes for secrets (xorshift): the benchmark measures the file, not a RNG.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn secret(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_.";
        (0..24)
            .map(|_| char::from(ALPHABET[(self.next() % ALPHABET.len() as u64) as usize]))
            .collect()
    }
}

fn target_name(i: usize) -> String {
    format!("srv{i:06}")
}

fn build_file(path: &Path, recipient: &str, credentials: usize, versions: usize) -> Result<Header> {
    let targets = credentials.div_ceil(ACCOUNTS_PER_TARGET);
    let header = Header {
        instance: INSTANCE.into(),
        epoch: 1,
        threshold: 2,
        written_at: cofre_breakglass::now_rfc3339(),
        targets: targets as u64,
        credentials: credentials as u64,
        versions: (credentials * versions) as u64,
        recipient: recipient.into(),
        audit_head: None,
    };
    let file = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
    let mut writer = cofre_breakglass::Writer::new(std::io::BufWriter::new(file), header.clone())?;
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut left = credentials;
    for t in 0..targets {
        let n = left.min(ACCOUNTS_PER_TARGET);
        left -= n;
        let target = TargetEntry {
            name: target_name(t),
            host: format!("10.{}.{}.{}", t / 65536 % 256, t / 256 % 256, t % 256),
            port: 22,
            protocol: "ssh".into(),
            tags: vec![if t % 2 == 0 { "prod" } else { "dev" }.into()],
            credentials: (0..n)
                .map(|a| CredentialEntry {
                    account: format!("acct{a:02}"),
                    kind: "password".into(),
                    current_version: versions as i64,
                    versions: (1..=versions)
                        .map(|v| VersionEntry {
                            version: v as i64,
                            kind: "password".into(),
                            secret: Secret::new(rng.secret()),
                            created_at: format!("2024-0{}-01T00:00:00Z", v.min(9)),
                            created_by: "admin".into(),
                        })
                        .collect(),
                })
                .collect(),
        };
        writer.target(&target)?;
    }
    let mut out = writer.finish()?;
    out.flush()?;
    out.into_inner().map_err(|e| anyhow!("{e}"))?.sync_all()?;
    Ok(header)
}

/// Spawns `cofre breakglass open` with the share files and `search QUERY`, and returns the time
/// until the first result line (a line starting with the target's name) is on its stdout.
fn open_until_first_result(file: &Path, shares: &[PathBuf], query: &str) -> Result<Duration> {
    let mut cmd = std::process::Command::new(super::cofre_bin()?);
    cmd.args(["breakglass", "open"]).arg(file);
    for s in shares {
        cmd.arg("--share-file").arg(s);
    }
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting cofre breakglass open")?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
    stdin.write_all(format!("search {query}\nquit\n").as_bytes())?;
    drop(stdin);
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut elapsed = None;
    for line in BufReader::new(stdout).lines() {
        if line?.starts_with(query) {
            elapsed = Some(start.elapsed());
            break;
        }
    }
    let status = child.wait()?;
    match elapsed {
        Some(e) if status.success() => Ok(e),
        _ => bail!("cofre breakglass open found no result for {query} ({status})"),
    }
}

fn plain_age(file: &Path, identity: &Path) -> Option<Result<Duration>> {
    let probe = std::process::Command::new("age")
        .arg("--version")
        .output()
        .ok()?;
    if !probe.status.success() {
        return None;
    }
    Some((|| {
        let start = Instant::now();
        let out = std::process::Command::new("age")
            .args(["-d", "-i"])
            .arg(identity)
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        if !out.status.success() {
            bail!("age -d: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(start.elapsed())
    })())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub(crate) fn run(credentials: usize, versions: usize, dir: Option<PathBuf>) -> Result<ExitCode> {
    if credentials == 0 || versions == 0 {
        bail!("--credentials and --versions must be at least 1");
    }
    let scratch = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| scratch.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("bench.cofre");

    let ceremony = cofre_breakglass::ceremony(INSTANCE, 1, 2, 3)?;
    let t = Instant::now();
    let header = build_file(&file, &ceremony.recipient, credentials, versions)?;
    let write_time = t.elapsed();
    let size = std::fs::metadata(&file)?.len();
    outln!(
        "file: {} credentials x {} versions on {} targets: {:.1} MB, written in {:.2} s by the real writer",
        header.credentials,
        versions,
        header.targets,
        size as f64 / 1e6,
        write_time.as_secs_f64()
    );

    let shares: Vec<PathBuf> = [2usize, 0]
        .iter()
        .map(|&i| {
            let p = dir.join(format!("share-{}.txt", i + 1));
            std::fs::write(&p, format!("{}\n", ceremony.shares[i])).map(|()| p)
        })
        .collect::<std::io::Result<_>>()?;
    // The last target: the search walks the whole vault before it finds it.
    let query = target_name(header.targets as usize - 1);
    let mut opens = Vec::new();
    for _ in 0..RUNS {
        opens.push(open_until_first_result(&file, &shares, &query)?);
    }
    let open = median(opens.clone());
    outln!(
        "cofre breakglass open + first search result (2 shares; median of {RUNS}): {:.3} s (runs: {})",
        open.as_secs_f64(),
        opens
            .iter()
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // In-process, the same steps without process start-up, to show where the time goes.
    let set = {
        let mut s = cofre_breakglass::share::ShareSet::new();
        s.add(ceremony.shares[0].clone())?;
        s.add(ceremony.shares[1].clone())?;
        s
    };
    let secret = set.combine()?;
    let t = Instant::now();
    let (_, contents) = cofre_breakglass::file::open_file(&file, &secret)?;
    let decrypt_parse = t.elapsed();
    let t = Instant::now();
    let found = cofre_breakglass::session::Session::new(&contents, false)
        .matches(&query)
        .len();
    let search = t.elapsed();
    outln!(
        "  in-process: read + decrypt + parse {:.3} s, search ({found} found) {:.4} s",
        decrypt_parse.as_secs_f64(),
        search.as_secs_f64()
    );
    drop(contents);

    let identity = dir.join("identity.txt");
    std::fs::write(
        &identity,
        format!("{}\n", secret.identity_string()?.as_str()),
    )?;
    match plain_age(&file, &identity) {
        None => outln!("plain age -d: the `age` tool is not installed; no comparison"),
        Some(first) => {
            let mut runs = vec![first?];
            for _ in 1..RUNS {
                if let Some(r) = plain_age(&file, &identity) {
                    runs.push(r?);
                }
            }
            let age = median(runs);
            outln!(
                "plain age -d of the same file (median of {RUNS}): {:.3} s; ratio open+search / age -d: {:.2}",
                age.as_secs_f64(),
                open.as_secs_f64() / age.as_secs_f64()
            );
        }
    }
    std::fs::remove_file(&identity)?;
    Ok(ExitCode::SUCCESS)
}
