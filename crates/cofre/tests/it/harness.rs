//! What every integration test stands on: a real `cofre server` process on its own data dir (and,
//! for PostgreSQL, its own database), the real `cofre` CLI with a client config per user, and a
//! small HTTPS client that pins the server's certificate by its fingerprint.
//!
//! Everything here is synchronous; the few async libraries (reqwest, sqlx) run on a private
//! current-thread runtime, so tests stay plain `#[test]` functions that nextest can run in parallel.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A debug build starting on PostgreSQL (migrations) can take a while on a busy 2-core machine.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Any single CLI invocation; argon2 in a debug build is the slow part (well under a second).
pub(crate) const CLI_TIMEOUT: Duration = Duration::from_secs(90);

pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cofre")
}

// ---------------------------------------------------------------------------------------------
// Randomness (no extra crate): unique names and secrets per test, and a deterministic PRNG.

/// Hex that differs between calls, processes and runs (sha256 of time, pid and a counter).
pub(crate) fn random_hex(n: usize) -> String {
    use sha2::{Digest, Sha256};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::new();
    while out.len() < n {
        let seed = format!(
            "{:?}-{}-{}",
            std::time::SystemTime::now(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        out.push_str(&hex::encode(Sha256::digest(seed.as_bytes())));
    }
    out.truncate(n);
    out
}

/// xorshift64*: deterministic, so a garbage body that breaks the server can be replayed.
pub(crate) struct Prng(u64);

impl Prng {
    pub(crate) fn new(seed: u64) -> Prng {
        Prng(seed.max(1))
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-enough in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    pub(crate) fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: one database per test.

pub(crate) fn pg_admin_url() -> String {
    std::env::var("COFRE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `postgres://u@h:p/db?x` with `db` replaced.
fn pg_url_for(admin_url: &str, db: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
    let host = rest.split('/').next().unwrap_or(rest);
    let prefix = format!("{scheme}://{host}");
    match query {
        Some(q) => format!("{prefix}/{db}?{q}"),
        None => format!("{prefix}/{db}"),
    }
}

pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Runs statements (no results) on a database, through sqlx's Any driver.
pub(crate) fn sql_exec(url: &str, statements: &[String]) -> Result<(), String> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    block_on(async {
        let mut conn = sqlx::AnyConnection::connect(url)
            .await
            .map_err(|e| format!("connect {url}: {e}"))?;
        for s in statements {
            sqlx::raw_sql(s)
                .execute(&mut conn)
                .await
                .map_err(|e| format!("{s}: {e}"))?;
        }
        conn.close().await.map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// One row of `audit_log`, as stored.
#[derive(Debug, Clone)]
pub(crate) struct AuditRow {
    pub seq: i64,
    pub ts: String,
    pub actor: String,
    pub action: String,
    pub object: String,
    pub outcome: String,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

pub(crate) fn audit_rows(url: &str) -> Vec<AuditRow> {
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    block_on(async {
        let mut conn = sqlx::AnyConnection::connect(url)
            .await
            .expect("connect to the database");
        let rows = sqlx::query(
            "SELECT seq, ts, actor, action, object, outcome, details, prev_hash, hash FROM audit_log ORDER BY seq",
        )
        .fetch_all(&mut conn)
        .await
        .expect("read audit_log");
        let out = rows
            .iter()
            .map(|r| AuditRow {
                seq: r.get::<i64, _>(0),
                ts: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                object: r.get(4),
                outcome: r.get(5),
                details: r.get(6),
                prev_hash: r.get(7),
                hash: r.get(8),
            })
            .collect();
        conn.close().await.ok();
        out
    })
}

/// SQL string literal.
pub(crate) fn sql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub(crate) struct PgDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl PgDb {
    pub(crate) fn create() -> PgDb {
        Self::create_from(None)
    }

    /// A new database, empty or as a copy of `template` (which must have no open connections).
    pub(crate) fn create_from(template: Option<&str>) -> PgDb {
        let admin_url = pg_admin_url();
        let name = format!("cofre_it_{}", random_hex(16));
        let stmt = match template {
            Some(t) => format!("CREATE DATABASE {name} TEMPLATE {t}"),
            None => format!("CREATE DATABASE {name}"),
        };
        sql_exec(&admin_url, &[stmt]).unwrap_or_else(|e| {
            panic!(
                "cannot create a PostgreSQL database at {admin_url} (set COFRE_TEST_PG_URL): {e}"
            )
        });
        PgDb {
            url: pg_url_for(&admin_url, &name),
            name,
            admin_url,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = sql_exec(
            &self.admin_url,
            &[format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// An instance: what survives restarts (data dir, database), and server processes on it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

pub(crate) struct Instance {
    /// Holds the data dir, the server logs and every client's home.
    pub root: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub backend: Backend,
    pub pg: Option<PgDb>,
    starts: AtomicU64,
}

impl Instance {
    pub(crate) fn new(backend: Backend) -> Instance {
        let root = tempfile::Builder::new()
            .prefix("cofre-it-")
            .tempdir()
            .expect("temp dir");
        let data_dir = root.path().join("data");
        let pg = (backend == Backend::Postgres).then(PgDb::create);
        Instance {
            root,
            data_dir,
            backend,
            pg,
            starts: AtomicU64::new(0),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.root.path()
    }

    pub(crate) fn database_url(&self) -> Option<String> {
        self.pg.as_ref().map(|p| p.url.clone())
    }

    /// A URL the test itself can open (sqlx), whatever the backend.
    pub(crate) fn db_url_for_tests(&self) -> String {
        match &self.pg {
            Some(p) => p.url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("cofre.db").display()),
        }
    }

    /// A copy of this instance (data dir and database) taken while no server runs on it.
    pub(crate) fn fork(&self) -> Instance {
        let root = tempfile::Builder::new()
            .prefix("cofre-it-fork-")
            .tempdir()
            .expect("temp dir");
        let data_dir = root.path().join("data");
        copy_dir(&self.data_dir, &data_dir);
        let pg = self.pg.as_ref().map(|p| PgDb::create_from(Some(&p.name)));
        Instance {
            root,
            data_dir,
            backend: self.backend,
            pg,
            starts: AtomicU64::new(0),
        }
    }

    fn server_command(&self, sub: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("COFRE_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(self.path())
            .env("HOME", self.path().join("server-home"))
            .args(sub)
            .arg("--data-dir")
            .arg(&self.data_dir);
        if let Some(url) = self.database_url() {
            cmd.arg("--database-url").arg(url);
        }
        cmd
    }

    pub(crate) fn start(&self) -> Server {
        self.start_with_env(&[("COFRE_LOG", "info")])
    }

    pub(crate) fn start_with_env(&self, env: &[(&str, &str)]) -> Server {
        self.start_on("127.0.0.1", env)
    }

    /// Both listeners on `ip` (port chosen by the OS): `0.0.0.0` so that test hosts in network
    /// namespaces reach the server through their veth pairs. The URL printed names `ip`.
    pub(crate) fn start_on(&self, ip: &str, env: &[(&str, &str)]) -> Server {
        let n = self.starts.fetch_add(1, Ordering::Relaxed) + 1;
        let stderr_path = self.path().join(format!("server-{n}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).expect("server stderr file");
        let listen = format!("{ip}:0");
        let mut cmd =
            self.server_command(&["server", "--listen", &listen, "--ssh-listen", &listen]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd.spawn().expect("spawn cofre server");
        let stdout = child.stdout.take().expect("server stdout");
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let mut server = Server {
            child,
            url: String::new(),
            port: 0,
            fingerprint: String::new(),
            ssh_port: 0,
            ssh_host_key: String::new(),
            admin_password_file: None,
            started_sealed: false,
            stdout_lines: lines,
            stderr_path,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("cofre listening on ") {
                        server.url = url.trim().to_owned();
                        server.port = url
                            .trim()
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.parse().ok())
                            .unwrap_or_else(|| panic!("no port in {line:?}"));
                    } else if let Some(addr) = line.strip_prefix("ssh gateway listening on ") {
                        server.ssh_port = addr
                            .trim()
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.parse().ok())
                            .unwrap_or_else(|| panic!("no port in {line:?}"));
                    } else if let Some(fp) = line.strip_prefix("ssh host key: ") {
                        server.ssh_host_key = fp.trim().to_owned();
                    } else if let Some(fp) = line.strip_prefix("tls fingerprint (sha256): ") {
                        server.fingerprint = fp.trim().to_owned();
                    } else if let Some(p) = line.strip_prefix("initial admin password written to ")
                    {
                        server.admin_password_file = Some(PathBuf::from(p.trim()));
                    } else if line.starts_with("sealed: ") {
                        server.started_sealed = true;
                    } else if line.trim() == "ready" {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = server.child.wait();
                    panic!(
                        "the server exited before `ready`\nstdout:\n{}\nstderr:\n{}",
                        server.stdout_text(),
                        server.stderr_text()
                    );
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "the server did not print `ready` within {READY_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                    server.stdout_text(),
                    server.stderr_text()
                );
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                // Give the reader a moment to collect the last lines, then report.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "the server exited ({status}) before `ready`\nstdout:\n{}\nstderr:\n{}",
                    server.stdout_text(),
                    server.stderr_text()
                );
            }
        }
        assert!(
            server.url.starts_with(&format!("https://{ip}:")) && server.port != 0,
            "no `cofre listening on https://{ip}:PORT` line before `ready`:\n{}",
            server.stdout_text()
        );
        assert!(
            server.fingerprint.len() == 64
                && server
                    .fingerprint
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
            "the fingerprint line must hold 64 lowercase hex characters:\n{}",
            server.stdout_text()
        );
        server
    }

    /// `cofre init --demo`: a new instance with the sample data.
    pub(crate) fn init_demo(&self) -> Out {
        run_command(
            self.server_command(&["init", "--demo"]),
            None,
            "cofre init --demo",
        )
    }

    /// `cofre init --unseal-shares N --unseal-threshold K`: the shares and the admin password file.
    pub(crate) fn init_shamir(&self, shares: u8, threshold: u8) -> (Vec<String>, PathBuf) {
        let mut cmd = self.server_command(&["init"]);
        cmd.args([
            "--unseal-shares",
            &shares.to_string(),
            "--unseal-threshold",
            &threshold.to_string(),
        ]);
        let out = run_command(cmd, None, "cofre init");
        out.assert_ok();
        let mut found = Vec::new();
        let mut pw_file = None;
        for line in out.stdout.lines() {
            if let Some(rest) = line.strip_prefix("unseal share ") {
                let (n, share) = rest
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("bad share line {line:?}"));
                found.push((
                    n.trim().parse::<u32>().expect("share number"),
                    share.trim().to_owned(),
                ));
            } else if let Some(p) = line.strip_prefix("initial admin password written to ") {
                pw_file = Some(PathBuf::from(p.trim()));
            }
        }
        found.sort();
        let numbers: Vec<u32> = found.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            numbers,
            (1..=u32::from(shares)).collect::<Vec<_>>(),
            "cofre init must print `unseal share N: ...` for N = 1..={shares}:\n{}",
            out.stdout
        );
        for (_, s) in &found {
            assert!(
                s.starts_with("cofre-unseal-"),
                "share {s:?} does not start with cofre-unseal-"
            );
        }
        let pw_file = pw_file.unwrap_or_else(|| {
            panic!(
                "cofre init must print `initial admin password written to PATH`:\n{}",
                out.stdout
            )
        });
        (found.into_iter().map(|(_, s)| s).collect(), pw_file)
    }
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy file");
        }
    }
    let perms = std::fs::metadata(from).expect("metadata").permissions();
    std::fs::set_permissions(to, perms).expect("set permissions");
}

/// A running `cofre server`; killed (SIGKILL) when dropped.
pub(crate) struct Server {
    child: Child,
    pub url: String,
    pub port: u16,
    pub fingerprint: String,
    /// The SSH gateway's port (`ssh gateway listening on 127.0.0.1:PORT`).
    pub ssh_port: u16,
    /// The gateway's host key fingerprint as printed (`ssh host key: SHA256:...`).
    pub ssh_host_key: String,
    pub admin_password_file: Option<PathBuf>,
    pub started_sealed: bool,
    stdout_lines: Arc<Mutex<Vec<String>>>,
    pub stderr_path: PathBuf,
}

impl Server {
    pub(crate) fn stdout_text(&self) -> String {
        self.stdout_lines.lock().unwrap().join("\n")
    }

    pub(crate) fn stdout_lines(&self) -> Vec<String> {
        self.stdout_lines.lock().unwrap().clone()
    }

    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr_path).unwrap_or_default()).into_owned()
    }

    /// The one-time admin password from the file the first start named.
    pub(crate) fn initial_admin_password(&self) -> String {
        let path = self.admin_password_file.clone().unwrap_or_else(|| {
            panic!(
                "the first start must print `initial admin password written to PATH`:\n{}",
                self.stdout_text()
            )
        });
        read_password_file(&path)
    }

    /// SIGKILL, no warning: what a power cut does to the process.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL if it has not stopped within 15 s.
    pub(crate) fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }

    /// SIGTERM, without waiting.
    pub(crate) fn sigterm(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits for the server to exit; None if it still runs after `within`.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(crate) fn api(&self) -> Api {
        Api::new(&self.url, &self.fingerprint)
    }

    /// A client whose connections come from `source` (any 127.x.y.z is this host on Linux), so a
    /// test can be several client addresses at once.
    pub(crate) fn api_from(&self, source: &str) -> Api {
        Api::with_source(
            &self.url,
            &self.fingerprint,
            Some(source.parse().expect("an IP")),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a one-time password file: checks it is 0600 and holds the password and a newline.
pub(crate) fn read_password_file(path: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "{} must be readable by its owner only",
        path.display()
    );
    let text = std::fs::read_to_string(path).expect("read the password file");
    assert!(
        text.ends_with('\n'),
        "the password file holds the password and a newline"
    );
    let pw = text.trim_end_matches('\n').to_owned();
    assert!(
        !pw.is_empty() && !pw.contains('\n'),
        "one password, one line"
    );
    pw
}

// ---------------------------------------------------------------------------------------------
// Running commands.

#[derive(Debug, Clone)]
pub(crate) struct Out {
    pub what: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    fn describe(&self) -> String {
        format!(
            "`{}` exited {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }

    pub(crate) fn assert_ok(&self) -> &Out {
        assert_eq!(self.code, Some(0), "expected success: {}", self.describe());
        self
    }

    /// The CLI's error contract: exit status 1, stderr starting with `error: `.
    pub(crate) fn assert_error(&self) -> &Out {
        assert_eq!(
            self.code,
            Some(1),
            "expected exit status 1: {}",
            self.describe()
        );
        assert!(
            self.stderr.starts_with("error: "),
            "the error message must start with `error: `: {}",
            self.describe()
        );
        self
    }

    pub(crate) fn assert_stderr_contains(&self, needle: &str) -> &Out {
        assert!(
            self.stderr.contains(needle),
            "stderr should mention {needle:?}: {}",
            self.describe()
        );
        self
    }

    pub(crate) fn assert_stdout_contains(&self, needle: &str) -> &Out {
        assert!(
            self.stdout.contains(needle),
            "stdout should mention {needle:?}: {}",
            self.describe()
        );
        self
    }

    pub(crate) fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.describe()))
    }

    /// The token after `prefix` on the first stdout line that starts with it.
    pub(crate) fn value_after(&self, prefix: &str) -> String {
        self.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?}: {}", self.describe()))
    }
}

pub(crate) fn run_command(cmd: Command, stdin: Option<&str>, what: &str) -> Out {
    run_command_within(cmd, stdin, what, CLI_TIMEOUT)
}

/// [`run_command`] with its own deadline, for a tool whose whole run is long (a fuzzer's pass).
pub(crate) fn run_command_within(
    mut cmd: Command,
    stdin: Option<&str>,
    what: &str,
    timeout: Duration,
) -> Out {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        let input = input.to_owned();
        std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = so.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = se.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    let out = Out {
        what: what.to_owned(),
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
    };
    assert!(
        status.is_some(),
        "timed out after {timeout:?}: {}",
        out.describe()
    );
    out
}

/// The CLI as one person uses it: own HOME and own client config.
#[derive(Debug, Clone)]
pub(crate) struct Cli {
    pub name: String,
    pub home: PathBuf,
    pub config: PathBuf,
    /// Passed as `--server`/`--fingerprint` when set (`login` saves them; later commands need neither).
    pub server: Option<String>,
    pub fingerprint: Option<String>,
    pub env: Vec<(String, String)>,
}

impl Cli {
    pub(crate) fn new(inst: &Instance, name: &str) -> Cli {
        let home = inst.path().join(format!("home-{name}"));
        std::fs::create_dir_all(&home).expect("client home");
        Cli {
            name: name.to_owned(),
            config: home.join("client.toml"),
            home,
            server: None,
            fingerprint: None,
            env: Vec::new(),
        }
    }

    /// Points this client at `server` explicitly on every command.
    pub(crate) fn at(mut self, server: &Server) -> Cli {
        self.server = Some(server.url.clone());
        self.fingerprint = Some(server.fingerprint.clone());
        self
    }

    /// This user's saved token, sent to `server` (a restarted server listens on a new port, and the
    /// CLI keeps a saved token for the server it was saved for) through COFRE_TOKEN.
    pub(crate) fn at_with_token(&self, server: &Server) -> Cli {
        let mut c = self.clone().at(server);
        c.env.push(("COFRE_TOKEN".into(), self.token()));
        c
    }

    pub(crate) fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let (cmd, shown) = self.command(args);
        run_command(cmd, stdin, &shown)
    }

    /// The `cofre` command this client runs for `args`, and how to show it.
    pub(crate) fn command(&self, args: &[&str]) -> (Command, String) {
        let mut cmd = Command::new(bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("COFRE_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("COFRE_CLIENT_CONFIG", &self.config)
            .current_dir(&self.home);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut shown = vec!["cofre".to_owned()];
        if let Some(s) = &self.server {
            cmd.args(["--server", s]);
            shown.push(format!("--server {s}"));
        }
        if let Some(f) = &self.fingerprint {
            cmd.args(["--fingerprint", f]);
            shown.push("--fingerprint …".to_owned());
        }
        cmd.args(args);
        shown.extend(args.iter().map(|a| (*a).to_owned()));
        (cmd, format!("[{}] {}", self.name, shown.join(" ")))
    }

    pub(crate) fn ok(&self, args: &[&str]) -> Out {
        let out = self.run(args, None);
        out.assert_ok();
        out
    }

    pub(crate) fn ok_in(&self, args: &[&str], stdin: &str) -> Out {
        let out = self.run(args, Some(stdin));
        out.assert_ok();
        out
    }

    pub(crate) fn fail(&self, args: &[&str]) -> Out {
        let out = self.run(args, None);
        out.assert_error();
        out
    }

    pub(crate) fn fail_in(&self, args: &[&str], stdin: &str) -> Out {
        let out = self.run(args, Some(stdin));
        out.assert_error();
        out
    }

    pub(crate) fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config).unwrap_or_else(|e| {
            panic!(
                "{}'s client config {}: {e}",
                self.name,
                self.config.display()
            )
        })
    }

    /// The bearer token `login` saved.
    pub(crate) fn token(&self) -> String {
        let text = self.config_text();
        let value: toml::Value = toml::from_str(&text).expect("the client config is TOML");
        fn find(v: &toml::Value) -> Option<String> {
            let t = v.as_table()?;
            if let Some(s) = t.get("token").and_then(|x| x.as_str()) {
                return Some(s.to_owned());
            }
            t.values().find_map(find)
        }
        let token =
            find(&value).unwrap_or_else(|| panic!("no `token` in {}'s client config", self.name));
        assert!(token.len() >= 16, "a bearer token should not be that short");
        token
    }

    /// `cofre login --user NAME --password-stdin` with a password that is already set.
    pub(crate) fn login(&self, user: &str, password: &str) -> Out {
        self.ok_in(
            &["login", "--user", user, "--password-stdin"],
            &format!("{password}\n"),
        )
    }

    /// First login with a one-time password: the CLI sets `new_password` and logs in again.
    pub(crate) fn first_login(&self, user: &str, one_time: &str, new_password: &str) -> Out {
        self.ok_in(
            &["login", "--user", user, "--password-stdin"],
            &format!("{one_time}\n{new_password}\n"),
        )
    }
}

/// Parses `one-time password: XXXX-...` from `user add` / `user reset-password`.
pub(crate) fn one_time_password(out: &Out) -> String {
    let otp = out.value_after("one-time password:");
    assert!(
        otp.len() >= 12,
        "a one-time password should be long: {otp:?}"
    );
    otp
}

/// A new password that passes the policy (12+ characters) and is unique to this run.
pub(crate) fn new_password(who: &str) -> String {
    format!("{who}-Pw-{}", random_hex(12))
}

/// The usual start of a test: an admin logged in through the CLI with the one-time password from
/// the file, which it replaced with a new one. Returns the admin's client and password.
pub(crate) fn admin_cli(inst: &Instance, server: &Server) -> (Cli, String) {
    let otp = server.initial_admin_password();
    admin_cli_with(inst, server, &otp)
}

pub(crate) fn admin_cli_with(inst: &Instance, server: &Server, otp: &str) -> (Cli, String) {
    let admin = Cli::new(inst, "admin").at(server);
    let pw = new_password("admin");
    let out = admin.first_login("admin", otp, &pw);
    out.assert_stdout_contains("logged in as admin (admin)");
    // Later commands rely on the saved config only.
    let admin = Cli {
        server: None,
        fingerprint: None,
        ..admin
    };
    (admin, pw)
}

/// Admin may reveal on `tag:prod` targets through group `vault` and policy `vault-prod`: admins
/// reveal only through a policy, like anyone.
pub(crate) fn grant_admin_reveal(admin: &Cli, outcome: &str) {
    admin.ok(&["group", "add", "vault"]);
    admin.ok(&["group", "add-member", "vault", "admin"]);
    admin.ok(&[
        "policy",
        "add",
        "vault-prod",
        "--group",
        "vault",
        "--targets",
        "tag:prod",
        "--allow",
        "reveal",
        "--outcome",
        outcome,
    ]);
}

/// `user add NAME --role ROLE [--group G]`, then the new user's first login through the CLI.
pub(crate) fn add_user_cli(
    inst: &Instance,
    server: &Server,
    admin: &Cli,
    name: &str,
    role: &str,
    groups: &[&str],
) -> (Cli, String, String) {
    let mut args = vec!["user", "add", name, "--role", role];
    for g in groups {
        args.push("--group");
        args.push(g);
    }
    let otp = one_time_password(&admin.ok(&args));
    let cli = Cli::new(inst, name).at(server);
    let pw = new_password(name);
    cli.first_login(name, &otp, &pw)
        .assert_stdout_contains(&format!("logged in as {name} ({role})"));
    let cli = Cli {
        server: None,
        fingerprint: None,
        ..cli
    };
    (cli, otp, pw)
}

/// The items of a list printed with `--output json`: the API's page `{items, next_cursor}`, or the
/// items alone (a CLI that follows the cursors itself prints every page's items as one array).
pub(crate) fn json_items(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => other["items"]
            .as_array()
            .unwrap_or_else(|| panic!("a list as JSON: {other}"))
            .clone(),
    }
}

/// Parses `cofre audit export --format jsonl`, checking every line's shape.
pub(crate) fn parse_export(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("export line is not JSON ({e}): {line}"));
        for key in [
            "seq",
            "ts",
            "actor",
            "action",
            "object",
            "outcome",
            "details",
            "prev_hash",
            "hash",
        ] {
            assert!(v.get(key).is_some(), "export line lacks {key:?}: {line}");
        }
        out.push(v);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// HTTPS with the certificate pinned by fingerprint.

/// A TLS client configuration that trusts exactly the certificate with this SHA-256 (as the CLI
/// pins), for clients the harness does not make itself (a WebSocket).
pub(crate) fn pinned_tls(fingerprint: &str) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert {
            fingerprint: fingerprint.to_owned(),
            provider,
        }))
        .with_no_client_auth()
}

#[derive(Debug)]
struct PinnedCert {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use sha2::{Digest, Sha256};
        if hex::encode(Sha256::digest(end_entity.as_ref())) == self.fingerprint {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate fingerprint mismatch".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A response: status and body (JSON when it parses, else `Value::Null` and the text).
#[derive(Debug, Clone)]
pub(crate) struct Resp {
    pub what: String,
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub(crate) fn code(&self) -> &str {
        self.body.get("code").and_then(Value::as_str).unwrap_or("")
    }
    pub(crate) fn field(&self) -> Option<&str> {
        self.body.get("field").and_then(Value::as_str)
    }
    pub(crate) fn assert_ok(&self) -> &Resp {
        assert!(
            (200..300).contains(&self.status),
            "{} should succeed: {} {}",
            self.what,
            self.status,
            self.text
        );
        self
    }
    /// An error in the API's shape: `{code, message, field?}` with the given status and code.
    pub(crate) fn assert_error(&self, status: u16, code: &str) -> &Resp {
        assert_eq!(self.status, status, "{}: {}", self.what, self.text);
        assert_eq!(self.code(), code, "{}: {}", self.what, self.text);
        assert!(
            self.body
                .get("message")
                .and_then(Value::as_str)
                .is_some_and(|m| !m.is_empty()),
            "{}: an error needs a human message: {}",
            self.what,
            self.text
        );
        self
    }
}

pub(crate) enum Body<'a> {
    None,
    Json(Value),
    Raw {
        content_type: &'a str,
        bytes: Vec<u8>,
    },
}

pub(crate) struct Api {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    pub base: String,
}

impl Api {
    pub(crate) fn new(base: &str, fingerprint: &str) -> Api {
        Api::with_source(base, fingerprint, None)
    }

    pub(crate) fn with_source(
        base: &str,
        fingerprint: &str,
        source: Option<std::net::IpAddr>,
    ) -> Api {
        Api::build(base, fingerprint, source, true)
    }

    /// A client that follows no redirect (the console's answers are checked as they are).
    pub(crate) fn without_redirects(base: &str, fingerprint: &str) -> Api {
        Api::build(base, fingerprint, None, false)
    }

    fn build(
        base: &str,
        fingerprint: &str,
        source: Option<std::net::IpAddr>,
        follow_redirects: bool,
    ) -> Api {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert {
                fingerprint: fingerprint.to_owned(),
                provider,
            }))
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .local_address(source)
            .redirect(if follow_redirects {
                reqwest::redirect::Policy::default()
            } else {
                reqwest::redirect::Policy::none()
            })
            .timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client");
        Api {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            client,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Body<'_>,
    ) -> Resp {
        self.call_with_headers(method, path, token, body, &[])
    }

    /// `call` with extra request headers (e.g. an SSE client's `Last-Event-ID`).
    pub(crate) fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Body<'_>,
        headers: &[(&str, &str)],
    ) -> Resp {
        self.try_call(method, path, token, body, headers)
            .unwrap_or_else(|e| panic!("{method} {path}: request failed: {e}"))
    }

    /// `call_with_headers`, where no answer (a server restarting) is the error, not a panic.
    pub(crate) fn try_call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Body<'_>,
        headers: &[(&str, &str)],
    ) -> Result<Resp, String> {
        let what = format!("{method} {path}");
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&v).expect("JSON")),
            Body::Raw {
                content_type,
                bytes,
            } => req.header("content-type", content_type).body(bytes),
        };
        self.rt.block_on(async {
            let res = req.send().await.map_err(|e| format!("{e:?}"))?;
            let status = res.status().as_u16();
            let headers = res.headers().clone();
            let text = res.text().await.unwrap_or_default();
            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
            Ok(Resp {
                what,
                status,
                body,
                text,
                headers,
            })
        })
    }

    /// A request with these headers and, if any, this body (content type, bytes).
    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Resp {
        let what = format!("{method} {path}");
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        self.rt.block_on(async {
            let res = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("{what}: request failed: {e:?}"));
            let status = res.status().as_u16();
            let headers = res.headers().clone();
            let text = res.text().await.unwrap_or_default();
            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
            Resp {
                what,
                status,
                body,
                text,
                headers,
            }
        })
    }

    pub(crate) fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.call("GET", path, token, Body::None)
    }

    pub(crate) fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.call("POST", path, token, Body::Json(body))
    }

    pub(crate) fn login(&self, user: &str, password: &str) -> Resp {
        self.post(
            "/api/v1/auth/login",
            None,
            json!({"username": user, "password": password}),
        )
    }

    /// Logs in with a one-time password, sets `new_password`, and returns a session token.
    pub(crate) fn first_login(&self, user: &str, one_time: &str, new_password: &str) -> String {
        let r = self.login(user, one_time);
        r.assert_ok();
        assert_eq!(
            r.body["password_change_required"],
            json!(true),
            "{}",
            r.text
        );
        let t = r.body["token"].as_str().expect("token").to_owned();
        let c = self.post(
            "/api/v1/auth/password",
            Some(&t),
            json!({"current_password": one_time, "new_password": new_password}),
        );
        c.assert_ok();
        let r = self.login(user, new_password);
        r.assert_ok();
        assert_eq!(
            r.body["password_change_required"],
            json!(false),
            "{}",
            r.text
        );
        r.body["token"].as_str().expect("token").to_owned()
    }

    /// Creates a user (as `admin_token`) and returns its one-time password.
    pub(crate) fn create_user(
        &self,
        admin_token: &str,
        name: &str,
        role: &str,
        groups: &[&str],
    ) -> String {
        let r = self.post(
            "/api/v1/users",
            Some(admin_token),
            json!({"username": name, "role": role, "groups": groups}),
        );
        r.assert_ok();
        r.body["one_time_password"]
            .as_str()
            .expect("one_time_password")
            .to_owned()
    }

    /// Creates, first-logs-in and returns (session token, password).
    pub(crate) fn make_user(
        &self,
        admin_token: &str,
        name: &str,
        role: &str,
        groups: &[&str],
    ) -> (String, String) {
        let otp = self.create_user(admin_token, name, role, groups);
        let pw = new_password(name);
        (self.first_login(name, &otp, &pw), pw)
    }
}

/// The admin over HTTP only: one-time password from the file, replaced; returns a session token.
pub(crate) fn admin_token(server: &Server) -> (String, String) {
    let otp = server.initial_admin_password();
    let pw = new_password("admin");
    (server.api().first_login("admin", &otp, &pw), pw)
}

// ---------------------------------------------------------------------------------------------
// RFC 6238 (TOTP, SHA-1, 6 digits, 30 s), written here so the server's implementation is checked
// against an independent one.

pub(crate) fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits: u64 = 0;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in s.trim().trim_end_matches('=').bytes() {
        let c = c.to_ascii_uppercase();
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("not base32: {s:?}")) as u64;
        bits = (bits << 5) | v;
        nbits += 5;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    out
}

pub(crate) fn totp_at_step(secret: &[u8], step: u64) -> String {
    use hmac::{Mac, SimpleHmac};
    let mut mac = SimpleHmac::<sha1::Sha1>::new_from_slice(secret).expect("HMAC key");
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = (h[h.len() - 1] & 0x0f) as usize;
    let bin = (u32::from(h[off]) & 0x7f) << 24
        | u32::from(h[off + 1]) << 16
        | u32::from(h[off + 2]) << 8
        | u32::from(h[off + 3]);
    format!("{:06}", bin % 1_000_000)
}

pub(crate) fn current_step() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 30
}

#[test]
fn totp_helper_matches_rfc6238_vectors() {
    // RFC 6238 appendix B, SHA-1 seed, truncated to 6 digits.
    let seed = b"12345678901234567890";
    assert_eq!(totp_at_step(seed, 59 / 30), "287082");
    assert_eq!(totp_at_step(seed, 1_111_111_109 / 30), "081804");
    assert_eq!(totp_at_step(seed, 1_234_567_890 / 30), "005924");
    assert_eq!(base32_decode("GEZDGNBVGY3TQOJQ"), b"1234567890");
}

#[test]
fn prng_is_deterministic() {
    let (mut a, mut b) = (Prng::new(7), Prng::new(7));
    for _ in 0..10 {
        assert_eq!(a.next_u64(), b.next_u64());
    }
}

#[test]
fn pg_url_rewrites_the_database() {
    assert_eq!(
        pg_url_for("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        pg_url_for("postgres://u@h/db?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
}

// ---------------------------------------------------------------------------------------------
// A real OpenSSH sshd on a loopback port, for the gateway's tests.

pub(crate) const SSHD: &str = "/usr/sbin/sshd";

/// Whether this process runs as root (sshd must, to log in as root and to drop privileges).
pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Why the sshd-needing tests cannot run here, if they cannot (they then print it and pass).
/// As root (CI) they always run: a missing sshd is a failure, not a skip.
pub(crate) fn sshd_unavailable() -> Option<String> {
    if !is_root() {
        return Some("not running as root: sshd cannot log in as root".into());
    }
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} is not installed: apt-get install openssh-server (scripts/test does)"
    );
    None
}

/// A port that was free a moment ago (bind to port 0, read it, release it).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `ssh-keygen -t ed25519` without a passphrase: `path` (private, 0600) and `path.pub`.
pub(crate) fn ssh_keygen(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", "cofre-it", "-f"])
        .arg(path);
    run_command(cmd, None, "ssh-keygen").assert_ok();
}

/// OpenSSH's `SHA256:...` fingerprint of a public key file.
pub(crate) fn ssh_fingerprint(pub_file: &Path) -> String {
    let mut cmd = Command::new("ssh-keygen");
    cmd.arg("-lf").arg(pub_file);
    let out = run_command(cmd, None, "ssh-keygen -lf");
    out.assert_ok();
    out.stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no fingerprint in {:?}", out.stdout))
        .to_owned()
}

/// An OpenSSH server in its own directory, on its own port, killed when dropped. Root logs in
/// with the keys in `DIR/authorized_keys`; everything sshd does goes to `DIR/sshd.log`.
pub(crate) struct Sshd {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    /// Lines appended to sshd_config (e.g. a `Match User` block); see [`Sshd::reconfigure`].
    extra: String,
    /// Users' own `~/.ssh/authorized_keys` count too (besides `DIR/authorized_keys`).
    per_user_keys: bool,
}

impl Sshd {
    /// Starts sshd in `dir` (created) with a fresh host key, on a free port.
    pub(crate) fn start(dir: &Path) -> Sshd {
        Sshd::start_with(dir, false, "")
    }

    /// [`Sshd::start`], where users' own `~/.ssh/authorized_keys` count too (if `per_user_keys`)
    /// and `extra` ends the config.
    pub(crate) fn start_with(dir: &Path, per_user_keys: bool, extra: &str) -> Sshd {
        std::fs::create_dir_all(dir).expect("sshd dir");
        // Privilege separation wants this directory (systemd makes it; a container may not).
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        std::fs::write(dir.join("authorized_keys"), "").expect("authorized_keys");
        let mut sshd = Sshd {
            dir: dir.to_owned(),
            port: 0,
            child: None,
            extra: extra.to_owned(),
            per_user_keys,
        };
        ssh_keygen(&sshd.host_key_path());
        // Another test may take the port between free_port() and sshd's bind: try a few.
        for _ in 0..5 {
            sshd.port = free_port();
            if sshd.spawn() {
                return sshd;
            }
        }
        panic!("sshd did not start:\n{}", sshd.log());
    }

    pub(crate) fn host_key_path(&self) -> PathBuf {
        self.dir.join("host_key")
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }

    /// Everything every start of this sshd logged.
    pub(crate) fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// The host key's `SHA256:...` fingerprint.
    pub(crate) fn host_key_fingerprint(&self) -> String {
        ssh_fingerprint(&self.host_key_path().with_extension("pub"))
    }

    pub(crate) fn authorize(&self, pub_key_file: &Path) {
        let key = std::fs::read_to_string(pub_key_file).expect("public key");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("authorized_keys"))
            .expect("authorized_keys");
        f.write_all(key.as_bytes()).expect("authorized_keys");
    }

    /// Stops sshd and starts it again on the same port with a new host key.
    pub(crate) fn restart_with_new_host_key(&mut self) {
        self.stop();
        ssh_keygen(&self.host_key_path());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start again on port {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Restarts sshd on the same port and host key with `extra` ending its config instead.
    pub(crate) fn reconfigure(&mut self, extra: &str) {
        self.stop();
        self.extra = extra.to_owned();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start again on port {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts sshd on `self.port`; false if it exited (port taken) instead of listening.
    ///
    /// `SetEnv SHLVL=1`: bash run by sshd for a command reads the account's `~/.bashrc` only
    /// when SHLVL starts below 2. The machine's root profile (pyenv's `init`, which rehashes
    /// and can complain on stderr when commands run at once) would otherwise change what the
    /// tests compare byte for byte, and differ from machine to machine.
    fn spawn(&mut self) -> bool {
        let config = self.dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host_key}\n\
                 PidFile {dir}/sshd.pid\n\
                 AuthorizedKeysFile {dir}/authorized_keys{own_keys}\n\
                 StrictModes no\n\
                 PermitRootLogin yes\n\
                 PasswordAuthentication yes\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 Subsystem sftp internal-sftp\n\
                 AcceptEnv LANG LC_* COFRE_IT_*\n\
                 SetEnv SHLVL=1\n\
                 LogLevel VERBOSE\n\
                 {extra}\n",
                own_keys = if self.per_user_keys {
                    " .ssh/authorized_keys"
                } else {
                    ""
                },
                extra = self.extra,
                port = self.port,
                host_key = self.host_key_path().display(),
                dir = self.dir.display(),
            ),
        )
        .expect("sshd_config");
        let mut cmd = Command::new(SSHD);
        cmd.arg("-D")
            .arg("-f")
            .arg(&config)
            .arg("-E")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let listening = format!("Server listening on 127.0.0.1 port {}.", self.port);
        let before = self.log().matches(&listening).count();
        let mut child = cmd.spawn().expect("spawn sshd");
        // Not probed with a connection: the tests read "nothing reached sshd" from its log.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if self.log().matches(&listening).count() > before {
                self.child = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sshd did not listen on {} within 20 s:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots: a place to restore an instance into.

impl Instance {
    /// A new instance of the same backend whose data dir does not exist yet and, for PostgreSQL,
    /// whose database is empty: what `cofre snapshot restore` fills.
    pub(crate) fn empty_like(&self) -> Instance {
        let root = tempfile::Builder::new()
            .prefix("cofre-it-restored-")
            .tempdir()
            .expect("temp dir");
        let data_dir = root.path().join("data");
        let pg = (self.backend == Backend::Postgres).then(PgDb::create);
        Instance {
            root,
            data_dir,
            backend: self.backend,
            pg,
            starts: AtomicU64::new(0),
        }
    }
}

/// A tmpfs mounted with `options` (e.g. `size=64k`, `size=2m,ro`); lazily unmounted when dropped,
/// since a server may still hold a file open on it. Needs root.
pub(crate) struct Tmpfs(PathBuf);

impl Tmpfs {
    pub(crate) fn mount(dir: &Path, options: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// What the gateway tests stand on: alice (user, group ops) with the SSH key `keys/alice_key`, and
/// the target db01 (tag prod) at `sshd_port` with root's private key `keys/root_key` in the vault.
/// Returns alice's CLI, her password, and what `user key add` printed.
pub(crate) fn gateway_world(
    inst: &Instance,
    server: &Server,
    admin: &Cli,
    keys: &Path,
    sshd_port: u16,
) -> (Cli, String, Out) {
    admin.ok(&["group", "add", "ops"]);
    let (alice, _, alice_password) = add_user_cli(inst, server, admin, "alice", "user", &["ops"]);
    let key_added = admin.ok(&[
        "user",
        "key",
        "add",
        "alice",
        keys.join("alice_key.pub").to_str().expect("path"),
    ]);
    admin.ok(&[
        "target",
        "add",
        "db01",
        "--host",
        "127.0.0.1",
        "--port",
        &sshd_port.to_string(),
        "--tag",
        "prod",
    ]);
    admin.ok(&[
        "credential",
        "add",
        "db01",
        "root",
        "--key-file",
        keys.join("root_key").to_str().expect("path"),
    ]);
    (alice, alice_password, key_added)
}

/// A policy `p` granting ops sessions on tag:prod with this outcome.
pub(crate) fn allow_sessions(admin: &Cli, outcome: &str) {
    admin.ok(&[
        "policy",
        "add",
        "p",
        "--group",
        "ops",
        "--targets",
        "tag:prod",
        "--allow",
        "session",
        "--outcome",
        outcome,
    ]);
}

// ---------------------------------------------------------------------------------------------
// Dual control.

/// Starts the server with `config` (TOML) as its config file.
pub(crate) fn start_with_config(inst: &Instance, config: &str) -> Server {
    let path = inst.path().join("cofre.toml");
    std::fs::write(&path, config).expect("config file");
    inst.start_with_env(&[
        ("COFRE_LOG", "info"),
        ("COFRE_CONFIG", path.to_str().expect("utf-8 path")),
    ])
}

/// The change id from a proposing command's `held for a second admin's approval: change ID`.
pub(crate) fn held_change(out: &Out) -> String {
    out.value_after("held for a second admin's approval: change")
}

/// The second admin approves the change `out` was held as; returns the approval's output (which
/// holds the one-time password of a reset or a new user).
pub(crate) fn approve_held(second_admin: &Cli, out: &Out) -> Out {
    let id = held_change(out);
    second_admin.ok(&["change", "approve", &id, "--comment", "second pair of eyes"])
}
