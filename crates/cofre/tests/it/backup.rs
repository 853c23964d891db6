//! Backups to the customer's own storage, against real parts: recordings made by real SSH sessions
//! through the gateway, a real sshd + rsync as the customer's host, a real S3-compatible server
//! (`s3s-fs`) on loopback, a directory, and a small tmpfs for a full disk.
//!
//! Tests that need sshd (root) skip with a printed reason without it; CI runs them as root.

use crate::harness::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A server whose gateway can record sessions on db01 (the test's sshd, root with root_key), and
/// whose backups can go to the same sshd over rsync (root with backup_key).
struct Setup {
    sshd: Sshd,
    server: Server,
    admin: Cli,
    keys: PathBuf,
    inst: Instance,
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn setup(env: &[(&str, &str)]) -> Option<Setup> {
    if let Some(why) = sshd_unavailable() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let inst = Instance::new(Backend::Sqlite);
    let mut env: Vec<(&str, &str)> = env.to_vec();
    env.push(("COFRE_LOG", "info"));
    let server = inst.start_with_env(&env);
    let (admin, _) = admin_cli(&inst, &server);
    let keys = inst.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for k in ["alice_key", "root_key", "backup_key", "stranger_key"] {
        ssh_keygen(&keys.join(k));
    }
    let sshd = Sshd::start(&inst.path().join("sshd"));
    sshd.authorize(&keys.join("root_key.pub"));
    sshd.authorize(&keys.join("backup_key.pub"));
    gateway_world(&inst, &server, &admin, &keys, sshd.port);
    allow_sessions(&admin, "allow");
    Some(Setup {
        sshd,
        server,
        admin,
        keys,
        inst,
    })
}

impl Setup {
    /// One recorded session through the gateway that prints about `kib` KiB.
    fn record_session(&self, kib: usize) {
        let home = self.inst.path().join("ssh-home");
        std::fs::create_dir_all(&home).unwrap();
        let mut cmd = Command::new("ssh");
        cmd.env_remove("SSH_AUTH_SOCK")
            .env("HOME", &home)
            .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
            .args(["-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-i"])
            .arg(self.keys.join("alice_key"))
            .args([
                "-p",
                &self.server.ssh_port.to_string(),
                "alice:root@db01@127.0.0.1",
            ])
            .arg(format!("head -c {} /dev/urandom | base64", kib * 768));
        run_command(cmd, None, "ssh through the gateway").assert_ok();
    }

    /// Waits until every session has ended (its recording is complete).
    fn wait_sessions_ended(&self) {
        wait_until("every session ended", Duration::from_secs(30), || {
            let v = self
                .admin
                .ok(&["--output", "json", "session", "list"])
                .json();
            json_items(&v).iter().all(|s| !s["ended_at"].is_null())
        });
    }

    fn recordings_dir(&self) -> PathBuf {
        self.inst.data_dir.join("recordings")
    }

    fn add_ssh_target(&self, name: &str, dir: &Path, key: &str) -> Out {
        self.admin.run(
            &[
                "backup",
                "target",
                "add",
                name,
                "--ssh",
                &format!("root@127.0.0.1:{}", dir.display()),
                "--port",
                &self.sshd.port.to_string(),
                "--key-file",
                self.keys.join(key).to_str().unwrap(),
            ],
            None,
        )
    }
}

/// Every regular file under `dir`, relative path → bytes (names starting with `.` included, so a
/// stray temporary file shows).
fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn run_json(admin: &Cli, job: &str) -> Value {
    let out = admin.run(&["--output", "json", "backup", "run", job], None);
    out.assert_ok();
    out.json()
}

fn audit(admin: &Cli) -> Vec<Value> {
    parse_export(&admin.ok(&["audit", "export", "--format", "jsonl"]).stdout)
}

fn entries<'a>(all: &'a [Value], action: &str) -> Vec<&'a Value> {
    all.iter().filter(|e| e["action"] == action).collect()
}

/// rsync over SSH: the first run sends every recording, an incremental run after a new session
/// sends only the new recording (rsync's own count of bytes sent), and the copies are identical.
#[test]
fn rsync_over_ssh_sends_only_new_recordings() {
    let Some(s) = setup(&[]) else { return };
    for kib in [200, 300, 250] {
        s.record_session(kib);
    }
    s.wait_sessions_ended();
    let remote = s.inst.path().join("nas/srv/cofre");
    s.add_ssh_target("nas", &remote, "backup_key")
        .assert_ok()
        .assert_stdout_contains("pinned at first contact");
    // First contact pins the host key and prints it: the one sshd really has.
    let test = s.admin.ok(&["backup", "target", "test", "nas"]);
    test.assert_stdout_contains(&s.sshd.host_key_fingerprint())
        .assert_stdout_contains("write test passed");
    let listed = s.admin.ok(&["backup", "target", "list"]);
    listed
        .assert_stdout_contains(&s.sshd.host_key_fingerprint())
        .assert_stdout_contains("last worked: ");
    s.admin.ok(&[
        "backup",
        "job",
        "add",
        "--kind",
        "recordings",
        "--target",
        "nas",
        "--schedule",
        "every 1h",
        "--name",
        "rec",
    ]);

    let first = run_json(&s.admin, "rec");
    assert_eq!(first["status"], "ok", "{first}");
    assert_eq!(first["files_sent"], 3, "{first}");
    let local = tree(&s.recordings_dir());
    assert_eq!(local.len(), 3);
    assert_eq!(
        tree(&remote.join("recordings")),
        local,
        "the copies are byte-identical"
    );

    // 1 new recording: only it is sent.
    s.record_session(400);
    s.wait_sessions_ended();
    let before = tree(&s.recordings_dir());
    let new_bytes: usize = before
        .iter()
        .filter(|(k, _)| !local.contains_key(*k))
        .map(|(_, v)| v.len())
        .sum();
    assert!(
        new_bytes > 100_000,
        "the new recording has {new_bytes} bytes"
    );
    let second = run_json(&s.admin, "rec");
    assert_eq!(second["status"], "ok", "{second}");
    assert_eq!(second["files_sent"], 1, "only the new recording: {second}");
    let sent = second["bytes_sent"].as_u64().unwrap() as usize;
    let all: usize = before.values().map(Vec::len).sum();
    assert!(
        sent >= new_bytes && sent <= new_bytes + new_bytes / 10 + 8192,
        "rsync sent {sent} bytes for {new_bytes} new bytes (all recordings: {all})"
    );
    assert_eq!(tree(&remote.join("recordings")), before);

    // Nothing new: next to nothing is sent.
    let third = run_json(&s.admin, "rec");
    assert_eq!(third["files_sent"], 0, "{third}");
    assert!(third["bytes_sent"].as_u64().unwrap() < 8192, "{third}");

    let trail = audit(&s.admin);
    let runs = entries(&trail, "backup.run");
    assert_eq!(runs.len(), 3, "each run audited: {runs:?}");
    let detail = &runs[1]["details"];
    assert_eq!(detail["bytes"].as_u64().unwrap() as usize, sent, "{detail}");
    assert!(detail["duration_ms"].is_number(), "{detail}");
    assert_eq!(entries(&trail, "backup.host_key_pinned").len(), 1);
    let status = s.admin.ok(&["backup", "status"]);
    status.assert_stdout_contains("rec\trecordings to nas\tevery 1h");
    status.assert_stdout_contains(&format!("last success: run {} ok", third["id"]));
    s.admin
        .ok(&["audit", "verify"])
        .assert_stdout_contains("audit chain intact");
    // The private key went nowhere but the vault (and a 0600 file during each run).
    let key = std::fs::read_to_string(s.keys.join("backup_key")).unwrap();
    let key_line = key.lines().nth(1).unwrap();
    assert!(!s.server.stderr_text().contains(key_line));
    assert!(
        !String::from_utf8_lossy(&std::fs::read(s.inst.data_dir.join("cofre.db")).unwrap())
            .contains(key_line)
    );
    let staged = s.inst.data_dir.join(".backup-staging");
    assert!(
        staged
            .read_dir()
            .map(|mut d| d.next().is_none())
            .unwrap_or(true),
        "nothing is left in the staging directory after the runs"
    );
}

/// A local directory target, `system` and `credentials` kinds: `system` is an encrypted snapshot
/// without recordings that restores into a working instance; the break-glass file is copied as it
/// is (age, already encrypted).
#[test]
fn directory_target_system_and_credentials() {
    let inst = Instance::new(Backend::Sqlite);
    let config = inst.path().join("cofre.toml");
    std::fs::write(&config, "[breakglass]\nmin_interval_seconds = 1\n").unwrap();
    let server = inst.start_with_env(&[
        ("COFRE_CONFIG", config.to_str().unwrap()),
        ("COFRE_LOG", "info"),
    ]);
    let (admin, _) = admin_cli(&inst, &server);
    let dest = inst.path().join("usb-disk");
    admin.ok(&[
        "backup",
        "target",
        "add",
        "usb",
        "--dir",
        dest.to_str().unwrap(),
    ]);
    admin.ok(&[
        "backup",
        "job",
        "add",
        "--kind",
        "system",
        "--target",
        "usb",
        "--schedule",
        "daily 03:00",
    ]);
    admin.ok(&["target", "add", "db9", "--host", "10.0.0.9"]);
    admin.ok_in(
        &["credential", "add", "db9", "root", "--password-stdin"],
        "very-secret-password-9\n",
    );

    let run = run_json(&admin, "system-usb");
    assert_eq!(run["status"], "ok", "{run}");
    // Copies are owner-only, like the originals: a backup disk is often shared.
    {
        use std::os::unix::fs::PermissionsExt;
        let mut files = 0;
        let mut stack = vec![dest.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let meta = e.metadata().unwrap();
                if meta.is_dir() {
                    stack.push(e.path());
                } else {
                    files += 1;
                    assert_eq!(
                        meta.permissions().mode() & 0o777,
                        0o600,
                        "{} is owner-only",
                        e.path().display()
                    );
                }
            }
        }
        assert!(files > 0, "the system backup wrote files");
    }
    let copied = tree(&dest.join("system"));
    let names: Vec<&String> = copied.keys().collect();
    assert_eq!(
        copied.len(),
        2,
        "a snapshot file and its listing: {names:?}"
    );
    let (snap_name, snap) = copied
        .iter()
        .find(|(k, _)| k.ends_with(".cofresnap"))
        .unwrap_or_else(|| panic!("a .cofresnap among {names:?}"));
    let text = String::from_utf8_lossy(snap);
    for plain in [
        "SQLite format",
        "min_interval_seconds",
        "very-secret-password-9",
        "db9",
    ] {
        assert!(!text.contains(plain), "{snap_name} shows {plain:?}");
    }
    assert!(
        !copied.keys().any(|k| k.contains("/.")),
        "no temporary files: {names:?}"
    );

    // The system backup alone (with the instance's key file) gives the instance back.
    let file = dest.join("system").join(snap_name);
    let restored = inst.empty_like();
    Cli::new(&inst, "restorer").ok(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        restored.data_dir.to_str().unwrap(),
        "--key-file",
        inst.data_dir.join("master.key").to_str().unwrap(),
    ]);
    assert!(
        !restored.data_dir.join("recordings").exists()
            || std::fs::read_dir(restored.data_dir.join("recordings"))
                .unwrap()
                .next()
                .is_none(),
        "a system backup holds no recordings"
    );
    let server2 = restored.start();
    let admin2 = admin.at_with_token(&server2);
    admin2.ok(&["target", "list"]).assert_stdout_contains("db9");
    admin2
        .ok(&["audit", "verify"])
        .assert_stdout_contains("audit chain intact");
    drop(server2);

    // credentials: not on the system backups' target (a target holds one duty) ...
    let refused = admin.fail(&[
        "backup",
        "job",
        "add",
        "--kind",
        "credentials",
        "--target",
        "usb",
        "--schedule",
        "daily 04:00",
    ]);
    assert!(
        refused
            .all()
            .contains("target: backup target usb holds system backups"),
        "{}",
        refused.all()
    );
    // ... but on one of its own; after a break-glass file is written, the job runs by itself.
    let dest = inst.path().join("usb-keys");
    admin
        .ok(&[
            "backup",
            "target",
            "add",
            "usb-keys",
            "--duty",
            "credentials",
            "--dir",
            dest.to_str().unwrap(),
        ])
        .assert_stdout_contains("duty: credentials");
    admin.ok(&[
        "backup",
        "job",
        "add",
        "--kind",
        "credentials",
        "--target",
        "usb-keys",
        "--schedule",
        "daily 04:00",
    ]);
    let (alice, _, _) = add_user_cli(&inst, &server, &admin, "alice", "user", &[]);
    let (bob, _, _) = add_user_cli(&inst, &server, &admin, "bob", "user", &[]);
    admin.ok(&[
        "breakglass",
        "ceremony",
        "--custodians",
        "alice,bob",
        "--threshold",
        "2",
    ]);
    alice.ok(&["breakglass", "share"]);
    bob.ok(&["breakglass", "share"]);
    let bg_dir = inst.data_dir.join("breakglass");
    wait_until(
        "a break-glass file copied to the target",
        Duration::from_secs(60),
        || {
            let local = tree(&bg_dir);
            !local.is_empty() && tree(&dest.join("credentials")) == local
        },
    );
    let trail = audit(&admin);
    assert!(
        trail
            .iter()
            .any(|e| e["action"] == "backup.run_start" && e["details"]["reason"] == "breakglass"),
        "the credentials run was started by the new break-glass file"
    );
    admin
        .ok(&["audit", "verify"])
        .assert_stdout_contains("audit chain intact");
}

/// An S3-compatible server (s3s-fs) on loopback.
struct S3Server {
    child: Child,
    pub root: PathBuf,
    pub url: String,
}

impl S3Server {
    fn start(root: &Path, access: &str, secret: &str) -> S3Server {
        std::fs::create_dir_all(root.join("cofre-backups")).unwrap();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("s3s-fs")
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", access, "--secret-key", secret])
                .arg(root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("s3s-fs is not installed: scripts/test installs it (cargo install s3s-fs@0.14.1 --features binary)");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return S3Server {
                        child,
                        root: root.to_owned(),
                        url: format!("http://127.0.0.1:{port}"),
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("s3s-fs did not start");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Snapshot files as the snapshot feature leaves them (a dot-name or `.tmp` is still being written
/// and must not be copied).
fn write_snapshot(data_dir: &Path, name: &str, bytes: usize, seed: u64) {
    let dir = data_dir.join("snapshots");
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Prng::new(seed);
    let mut buf = Vec::with_capacity(bytes);
    while buf.len() < bytes {
        buf.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    buf.truncate(bytes);
    std::fs::write(dir.join(name), buf).unwrap();
}

#[test]
fn s3_target_snapshots_and_system() {
    let inst = Instance::new(Backend::Sqlite);
    let s3 = S3Server::start(&inst.path().join("s3"), "cofre-ak", "cofre-secret-key-1");
    let server = inst.start_with_env(&[("COFRE_LOG", "debug")]);
    let (mut admin, _) = admin_cli(&inst, &server);
    write_snapshot(&inst.data_dir, "snap-1.cofre-snapshot", 3 << 20, 1);
    write_snapshot(&inst.data_dir, "snap-2.cofre-snapshot", 12 << 20, 2);
    write_snapshot(&inst.data_dir, ".snap-3.partial", 1000, 3);
    write_snapshot(&inst.data_dir, "snap-4.cofre-snapshot.tmp", 1000, 4);
    admin
        .env
        .push(("AWS_ACCESS_KEY_ID".into(), "cofre-ak".into()));
    admin
        .env
        .push(("AWS_SECRET_ACCESS_KEY".into(), "cofre-secret-key-1".into()));
    admin.ok(&[
        "backup",
        "target",
        "add",
        "bucket",
        "--s3",
        "s3://cofre-backups/prod",
        "--endpoint",
        &s3.url,
    ]);
    admin
        .ok(&["backup", "target", "test", "bucket"])
        .assert_stdout_contains("write test passed");
    admin.ok(&[
        "backup",
        "job",
        "add",
        "--kind",
        "snapshots",
        "--target",
        "bucket",
        "--schedule",
        "every 1d",
    ]);
    admin.ok(&[
        "backup",
        "job",
        "add",
        "--kind",
        "system",
        "--target",
        "bucket",
        "--schedule",
        "manual",
    ]);

    let run = run_json(&admin, "snapshots-bucket");
    assert_eq!(run["files_sent"], 2, "{run}");
    let stored = s3.root.join("cofre-backups/prod/snapshots");
    let copied = tree(&stored);
    let local: std::collections::BTreeMap<_, _> = tree(&inst.data_dir.join("snapshots"))
        .into_iter()
        .filter(|(k, _)| !k.starts_with('.') && !k.ends_with(".tmp"))
        .collect();
    assert_eq!(
        copied.keys().collect::<Vec<_>>(),
        local.keys().collect::<Vec<_>>()
    );
    assert!(
        copied == local,
        "the objects are byte-identical to the snapshot files"
    );
    // Incremental: nothing new, nothing sent; a new snapshot, only it.
    assert_eq!(run_json(&admin, "snapshots-bucket")["files_sent"], 0);
    write_snapshot(&inst.data_dir, "snap-5.cofre-snapshot", 1 << 20, 5);
    let again = run_json(&admin, "snapshots-bucket");
    assert_eq!(again["files_sent"], 1, "{again}");
    assert_eq!(again["bytes_sent"], 1 << 20, "{again}");

    let sys = run_json(&admin, "system-bucket");
    assert_eq!(sys["status"], "ok", "{sys}");
    let system = tree(&s3.root.join("cofre-backups/prod/system"));
    assert!(
        system.keys().any(|k| k.ends_with(".cofresnap")),
        "{:?}",
        system.keys()
    );
    for (k, v) in &system {
        assert!(
            !String::from_utf8_lossy(v).contains("SQLite format"),
            "{k} is plain"
        );
    }
    // The secret is sealed in the vault: not in the database file.
    let db = std::fs::read(inst.data_dir.join("cofre.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains("cofre-secret-key-1"));
    // No probe object left behind.
    assert!(!tree(&s3.root).keys().any(|k| k.contains(".cofre-probe")));
    // The secret is in no log line, even at debug level, and in no API answer.
    assert!(!server.stderr_text().contains("cofre-secret-key-1"));
    assert!(!server.stdout_text().contains("cofre-secret-key-1"));
    let listed = admin.ok(&["--output", "json", "backup", "target", "list"]);
    assert!(!listed.stdout.contains("cofre-secret-key-1"));
}

/// A webhook receiver: every request body it gets.
pub(crate) struct Webhook {
    pub(crate) url: String,
    pub(crate) bodies: Arc<Mutex<Vec<String>>>,
}

pub(crate) fn webhook() -> Webhook {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then Content-Length bytes of body.
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&data).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if data.len() >= end + 4 + len {
                        b.lock().unwrap().push(text[end + 4..].to_owned());
                        break;
                    }
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    Webhook { url, bodies }
}

fn metric(server: &Server, name: &str) -> f64 {
    let text = server.api().get("/metrics", None).text;
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Each bad target: a clear error naming the cause, an alert (audit entry, metric, webhook), and
/// nothing lost on the target.
#[test]
fn bad_targets_fail_clearly_and_alert() {
    let hook = webhook();
    let cfg_dir = tempfile::tempdir().unwrap();
    let config = cfg_dir.path().join("cofre.toml");
    std::fs::write(
        &config,
        format!("[alerts]\nwebhook_url = \"{}\"\n", hook.url),
    )
    .unwrap();
    let Some(s) = setup(&[("COFRE_CONFIG", config.to_str().unwrap())]) else {
        return;
    };
    write_snapshot(&s.inst.data_dir, "snap-1.cofre-snapshot", 1 << 20, 1);

    let check_failure = |job: &str, needle: &str, alerts_before: f64| {
        let out = s.admin.run(&["backup", "run", job], None);
        out.assert_error().assert_stderr_contains(needle);
        let trail = audit(&s.admin);
        let failed = entries(&trail, "backup.failed");
        assert!(
            failed
                .iter()
                .any(|e| e["object"] == format!("backup-job:{job}")
                    && e["details"]["error"]
                        .as_str()
                        .unwrap_or("")
                        .contains(needle)),
            "a backup.failed entry for {job} naming {needle:?}: {failed:?}"
        );
        assert!(
            metric(&s.server, "cofre_backup_failures_total") > alerts_before,
            "the failure metric rose"
        );
        wait_until(
            &format!("a webhook call for {job}"),
            Duration::from_secs(20),
            || {
                hook.bodies.lock().unwrap().iter().any(|b| {
                    let v: Value = serde_json::from_str(b).unwrap_or_default();
                    v["event"] == "backup.failed" && v["job"] == job
                })
            },
        );
        let status = s.admin.ok(&["backup", "status"]);
        assert!(
            status.stdout.contains("last failure: run"),
            "{}",
            status.stdout
        );
    };

    // Unreachable: nothing listens on the port.
    let dead_port = free_port().to_string();
    s.admin.ok(&[
        "backup",
        "target",
        "add",
        "gone",
        "--ssh",
        "root@127.0.0.1:/srv/x",
        "--port",
        &dead_port,
        "--key-file",
        s.keys.join("backup_key").to_str().unwrap(),
    ]);
    s.admin
        .fail(&["backup", "target", "test", "gone"])
        .assert_stderr_contains("gone: write test failed: cannot reach 127.0.0.1")
        .assert_stderr_contains("unreachable host");
    s.admin.ok(&[
        "backup",
        "job",
        "add",
        "--kind",
        "snapshots",
        "--target",
        "gone",
        "--schedule",
        "manual",
        "--name",
        "to-gone",
    ]);
    check_failure("to-gone", "unreachable host", 0.0);
    s.admin
        .ok(&["backup", "target", "list"])
        .assert_stdout_contains("last failed: ")
        .assert_stdout_contains("unreachable host");

    // Wrong key: the host's key is given (no first-contact pinning), the client key is not authorized.
    let remote = s.inst.path().join("nas");
    let known = s.inst.path().join("known_hosts");
    let host_pub = std::fs::read_to_string(s.sshd.host_key_path().with_extension("pub")).unwrap();
    std::fs::write(&known, format!("[127.0.0.1]:{} {}", s.sshd.port, host_pub)).unwrap();
    s.admin.ok(&[
        "backup",
        "target",
        "add",
        "wrongkey",
        "--ssh",
        &format!("root@127.0.0.1:{}", remote.display()),
        "--port",
        &s.sshd.port.to_string(),
        "--key-file",
        s.keys.join("stranger_key").to_str().unwrap(),
        "--known-hosts",
        known.to_str().unwrap(),
    ]);
    s.admin.ok(&[
        "backup",
        "job",
        "add",
        "--kind",
        "snapshots",
        "--target",
        "wrongkey",
        "--schedule",
        "manual",
        "--name",
        "to-wrongkey",
    ]);
    let m = metric(&s.server, "cofre_backup_failures_total");
    check_failure("to-wrongkey", "Permission denied (publickey", m);
    assert!(!remote.exists(), "nothing was written with a refused key");

    // A host key that is not the pinned one: refused, never accepted silently.
    let other = s.inst.path().join("other_host");
    ssh_keygen(&other);
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let bad_known = s.inst.path().join("bad_known_hosts");
    std::fs::write(
        &bad_known,
        format!("[127.0.0.1]:{} {}", s.sshd.port, other_pub),
    )
    .unwrap();
    s.admin.ok(&[
        "backup",
        "target",
        "add",
        "spoofed",
        "--ssh",
        &format!("root@127.0.0.1:{}", remote.display()),
        "--port",
        &s.sshd.port.to_string(),
        "--key-file",
        s.keys.join("backup_key").to_str().unwrap(),
        "--known-hosts",
        bad_known.to_str().unwrap(),
    ]);
    s.admin
        .fail(&["backup", "target", "test", "spoofed"])
        .assert_stderr_contains("Host key verification failed")
        .assert_stderr_contains("is not the pinned one");
    assert!(!remote.exists());

    // No write permission / full disk: directories on small tmpfs mounts (root only).
    if !is_root() {
        eprintln!("SKIPPED (read-only and full-disk cases): need root for tmpfs mounts");
        return;
    }
    let ro = s.inst.path().join("ro");
    let _ro = Tmpfs::mount(&ro, "size=1m,ro").expect("read-only tmpfs");
    s.admin.ok(&[
        "backup",
        "target",
        "add",
        "readonly",
        "--dir",
        ro.join("cofre").to_str().unwrap(),
    ]);
    s.admin.ok(&[
        "backup",
        "job",
        "add",
        "--kind",
        "snapshots",
        "--target",
        "readonly",
        "--schedule",
        "manual",
        "--name",
        "to-readonly",
    ]);
    let m = metric(&s.server, "cofre_backup_failures_total");
    check_failure("to-readonly", "Read-only file system", m);
    // The same over ssh: root on the host may not write there either.
    s.add_ssh_target("ro-nas", &ro.join("cofre"), "backup_key")
        .assert_ok();
    s.admin.ok(&[
        "backup",
        "job",
        "add",
        "--kind",
        "snapshots",
        "--target",
        "ro-nas",
        "--schedule",
        "manual",
        "--name",
        "to-ro-nas",
    ]);
    let m = metric(&s.server, "cofre_backup_failures_total");
    check_failure("to-ro-nas", "no write permission on the target", m);

    let small = s.inst.path().join("small");
    let _small = Tmpfs::mount(&small, "size=2m").expect("tmpfs");
    s.admin.ok(&[
        "backup",
        "target",
        "add",
        "small",
        "--dir",
        small.to_str().unwrap(),
    ]);
    s.admin.ok(&[
        "backup",
        "job",
        "add",
        "--kind",
        "snapshots",
        "--target",
        "small",
        "--schedule",
        "manual",
        "--name",
        "to-small",
    ]);
    // A first good copy fits; the next snapshot does not.
    let ok = run_json(&s.admin, "to-small");
    assert_eq!(ok["files_sent"], 1);
    let good = tree(&small.join("snapshots"));
    write_snapshot(&s.inst.data_dir, "snap-2.cofre-snapshot", 3 << 20, 2);
    let m = metric(&s.server, "cofre_backup_failures_total");
    check_failure("to-small", "No space left on device", m);
    assert_eq!(
        tree(&small.join("snapshots")),
        good,
        "the last good copy is intact, and no partial file is left"
    );
    assert!(
        s.inst
            .data_dir
            .join("snapshots/snap-2.cofre-snapshot")
            .exists(),
        "nothing lost at the source"
    );
}

/// kill -9 of the server during a run: the target keeps its last good copy, no partial file is
/// under a final name, the run is marked failed at the next start, and the next run succeeds.
#[test]
fn kill_during_a_run_loses_nothing() {
    let inst = Instance::new(Backend::Sqlite);
    let mut server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    write_snapshot(&inst.data_dir, "snap-1.cofre-snapshot", 1 << 20, 1);
    let dest = inst.path().join("nas");
    admin.ok(&[
        "backup",
        "target",
        "add",
        "nas",
        "--dir",
        dest.to_str().unwrap(),
    ]);
    admin.ok(&[
        "backup",
        "job",
        "add",
        "--kind",
        "snapshots",
        "--target",
        "nas",
        "--schedule",
        "manual",
    ]);
    run_json(&admin, "snapshots-nas");
    let good = tree(&dest.join("snapshots"));
    assert_eq!(good.len(), 1);
    for i in 2..8 {
        write_snapshot(
            &inst.data_dir,
            &format!("snap-{i}.cofre-snapshot"),
            96 << 20,
            i,
        );
    }
    let started = admin
        .ok(&[
            "--output",
            "json",
            "backup",
            "run",
            "snapshots-nas",
            "--no-wait",
        ])
        .json();
    let id = started["id"].as_i64().unwrap();
    let api = server.api();
    let token = admin.token();
    wait_until("the run sending", Duration::from_secs(60), || {
        let r = api.get(&format!("/api/v1/backup/runs/{id}"), Some(&token));
        r.body["progress"]["bytes_done"].as_u64().unwrap_or(0) > 0 || r.body["status"] != "running"
    });
    let r = api.get(&format!("/api/v1/backup/runs/{id}"), Some(&token));
    assert_eq!(
        r.body["status"], "running",
        "the run ended before it could be killed: {}",
        r.text
    );
    server.kill9();

    // Every file under a final name is whole; the first copy is untouched.
    let after = tree(&dest.join("snapshots"));
    let source = tree(&inst.data_dir.join("snapshots"));
    for (name, bytes) in &after {
        if name.starts_with('.') {
            continue; // a temporary name, never listed or used
        }
        assert!(
            source.get(name) == Some(bytes),
            "{name} under its final name differs from its source"
        );
    }
    assert_eq!(
        after.get("snap-1.cofre-snapshot"),
        good.get("snap-1.cofre-snapshot")
    );

    let server = inst.start();
    let admin = admin.at_with_token(&server);
    let r = admin.ok(&["--output", "json", "backup", "status"]).json();
    let job = &r["jobs"][0];
    assert_eq!(job["last_failure"]["id"], id, "{job}");
    assert!(
        job["last_failure"]["error"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{job}"
    );
    assert!(job["running"].is_null(), "{job}");
    let next = run_json(&admin, "snapshots-nas");
    assert_eq!(next["status"], "ok");
    let final_copy: std::collections::BTreeMap<_, _> = tree(&dest.join("snapshots"))
        .into_iter()
        .filter(|(k, _)| !k.starts_with('.'))
        .collect();
    assert!(
        final_copy == source,
        "after the next run the target holds every snapshot"
    );
    assert!(
        !tree(&dest.join("snapshots"))
            .keys()
            .any(|k| k.starts_with('.')),
        "the killed run's temporary file is gone or ignored"
    );
}

/// Bad input is refused naming the field.
#[test]
fn bad_backup_input_names_the_field() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    admin
        .fail(&["backup", "target", "add", "x", "--dir", "relative/path"])
        .assert_stderr_contains("dir: must be an absolute path");
    // Never into the system's directories or the data dir (nor one that contains it).
    let data_dir = inst.path().join("data");
    let inside = data_dir.join("backups");
    for (dir, why) in [
        ("/", "is a system directory"),
        ("/etc/cofre", "inside a system directory"),
        ("/usr/local/backup", "inside a system directory"),
        ("/tmp/../etc", "'.' or '..'"),
        (inside.to_str().unwrap(), "outside the data dir"),
        (inst.path().to_str().unwrap(), "outside the data dir"),
    ] {
        admin
            .fail(&["backup", "target", "add", "x", "--dir", dir])
            .assert_stderr_contains(why);
    }
    let key = inst.path().join("k");
    std::fs::write(&key, "not a key").unwrap();
    admin
        .fail(&[
            "backup",
            "target",
            "add",
            "x",
            "--ssh",
            "nas.corp:/srv",
            "--key-file",
            key.to_str().unwrap(),
        ])
        .assert_stderr_contains("ssh: must look like user@host:/absolute/path");
    admin
        .fail(&[
            "backup",
            "target",
            "add",
            "x",
            "--ssh",
            "b@nas.corp:/srv",
            "--key-file",
            key.to_str().unwrap(),
        ])
        .assert_stderr_contains("ssh_private_key: is not a private key");
    admin.ok(&[
        "backup",
        "target",
        "add",
        "d",
        "--dir",
        inst.path().join("d").to_str().unwrap(),
    ]);
    admin
        .fail(&[
            "backup",
            "job",
            "add",
            "--kind",
            "everything",
            "--target",
            "d",
            "--schedule",
            "every 1h",
        ])
        .assert_stderr_contains("kind: must be one of");
    admin
        .fail(&[
            "backup",
            "job",
            "add",
            "--kind",
            "system",
            "--target",
            "d",
            "--schedule",
            "hourly",
        ])
        .assert_stderr_contains("schedule: `hourly` is not a schedule");
    admin
        .fail(&[
            "backup",
            "job",
            "add",
            "--kind",
            "system",
            "--target",
            "d",
            "--schedule",
            "every 5y",
        ])
        .assert_stderr_contains("\"5y\" is not a duration (e.g. 30s, 15m, 2h, 1h30m, 7d)");
    admin
        .fail(&[
            "backup",
            "job",
            "add",
            "--kind",
            "system",
            "--target",
            "nope",
            "--schedule",
            "every 1h",
        ])
        .assert_stderr_contains("there is no backup target nope");
    admin
        .fail(&["backup", "run", "nope"])
        .assert_stderr_contains("backup job nope not found");
}

/// PostgreSQL: the `system` kind ships an encrypted snapshot (the one-transaction dump) that
/// restores into an empty database; a real snapshot is copied by a `snapshots` job.
#[test]
fn postgres_system_and_snapshot_backups() {
    let inst = Instance::new(Backend::Postgres);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    let dest = inst.path().join("d");
    admin.ok(&[
        "backup",
        "target",
        "add",
        "d",
        "--dir",
        dest.to_str().unwrap(),
    ]);
    admin.ok(&[
        "backup",
        "job",
        "add",
        "--kind",
        "system",
        "--target",
        "d",
        "--schedule",
        "manual",
    ]);
    let run = run_json(&admin, "system-d");
    assert_eq!(
        run["files_sent"], 2,
        "a snapshot file and its listing: {run}"
    );
    let sent: Vec<PathBuf> = std::fs::read_dir(dest.join("system"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let snap = sent
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".cofresnap"))
        .unwrap_or_else(|| panic!("a system snapshot among {sent:?}"));
    let text = String::from_utf8_lossy(&std::fs::read(snap).unwrap()).into_owned();
    assert!(
        !text.contains("audit_log") && !text.contains("password_hash"),
        "the dump leaves encrypted"
    );
    // It restores into an empty PostgreSQL database.
    let restored = inst.empty_like();
    let mut args = vec![
        "snapshot".to_owned(),
        "restore".into(),
        snap.display().to_string(),
        "--data-dir".into(),
        restored.data_dir.display().to_string(),
        "--key-file".into(),
        inst.data_dir.join("master.key").display().to_string(),
    ];
    if let Some(url) = restored.database_url() {
        args.push("--database-url".into());
        args.push(url);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Cli::new(&inst, "restorer").ok(&args);
    let server2 = restored.start();
    admin
        .at_with_token(&server2)
        .ok(&["audit", "verify"])
        .assert_stdout_contains("audit chain intact");
    drop(server2);
    admin.ok(&["snapshot", "create"]);
    admin.ok(&[
        "backup",
        "job",
        "add",
        "--kind",
        "snapshots",
        "--target",
        "d",
        "--schedule",
        "manual",
    ]);
    assert_eq!(
        run_json(&admin, "snapshots-d")["files_sent"],
        2,
        "the snapshot and its listing"
    );
    let snaps = inst.data_dir.join("snapshots");
    for e in std::fs::read_dir(&snaps).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        let copy = std::fs::read_dir(&dest)
            .unwrap()
            .map(|d| d.unwrap().path())
            .flat_map(|d| {
                if d.is_dir() {
                    std::fs::read_dir(&d)
                        .unwrap()
                        .map(|x| x.unwrap().path())
                        .collect()
                } else {
                    vec![d]
                }
            })
            .find(|c| c.file_name() == Some(name.as_os_str()))
            .unwrap_or_else(|| panic!("{name:?} copied"));
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(copy).unwrap());
    }
}

/// A session still running when a backup runs: its recording is sent as far as it got, and sent
/// again once it has grown; in the end the copy is the whole recording.
#[test]
fn a_recording_being_written_is_sent_again_when_grown() {
    let Some(s) = setup(&[]) else { return };
    let remote = s.inst.path().join("nas");
    s.add_ssh_target("nas", &remote, "backup_key").assert_ok();
    s.admin.ok(&[
        "backup",
        "job",
        "add",
        "--kind",
        "recordings",
        "--target",
        "nas",
        "--schedule",
        "manual",
        "--name",
        "rec",
    ]);
    let home = s.inst.path().join("ssh-home");
    std::fs::create_dir_all(&home).unwrap();
    // Output now, more output in 4 s.
    let mut live = Command::new("ssh")
        .env_remove("SSH_AUTH_SOCK")
        .env("HOME", &home)
        .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
        .args(["-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-i"])
        .arg(s.keys.join("alice_key"))
        .args([
            "-p",
            &s.server.ssh_port.to_string(),
            "alice:root@db01@127.0.0.1",
        ])
        .arg("head -c 150000 /dev/urandom | base64; sleep 4; head -c 150000 /dev/urandom | base64")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "a live recording with its first output",
        Duration::from_secs(30),
        || {
            tree(&s.recordings_dir())
                .values()
                .any(|v| v.len() > 100_000)
        },
    );
    let first = run_json(&s.admin, "rec");
    assert_eq!(first["files_sent"], 1, "{first}");
    let partial = tree(&remote.join("recordings"));
    assert!(
        live.try_wait().unwrap().is_none(),
        "the session was still running during the backup"
    );
    assert!(live.wait().unwrap().success());
    s.wait_sessions_ended();
    let whole = tree(&s.recordings_dir());
    assert_ne!(partial, whole, "the recording grew after the first backup");
    let second = run_json(&s.admin, "rec");
    assert_eq!(second["files_sent"], 1, "{second}");
    assert_eq!(
        tree(&remote.join("recordings")),
        whole,
        "the copy is the whole recording"
    );
}

/// Processes whose command line contains `needle` (the killed server's rsync, until it is gone).
fn processes_with(needle: &str) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) {
                n += 1;
            }
        }
    }
    n
}

/// kill -9 of the server while rsync sends: files under their final names on the host are whole
/// (rsync's --delay-updates), the last good copy is intact, and the next run succeeds.
#[test]
fn kill_during_an_rsync_run_loses_nothing() {
    let Some(mut s) = setup(&[]) else { return };
    write_snapshot(&s.inst.data_dir, "snap-1.cofre-snapshot", 1 << 20, 1);
    let remote = s.inst.path().join(format!("nas-{}", random_hex(6)));
    s.add_ssh_target("nas", &remote, "backup_key").assert_ok();
    s.admin.ok(&[
        "backup",
        "job",
        "add",
        "--kind",
        "snapshots",
        "--target",
        "nas",
        "--schedule",
        "manual",
    ]);
    run_json(&s.admin, "snapshots-nas");
    let good = tree(&remote.join("snapshots"));
    assert_eq!(good.len(), 1);
    for i in 2..6 {
        write_snapshot(
            &s.inst.data_dir,
            &format!("snap-{i}.cofre-snapshot"),
            128 << 20,
            i,
        );
    }
    let started = s
        .admin
        .ok(&[
            "--output",
            "json",
            "backup",
            "run",
            "snapshots-nas",
            "--no-wait",
        ])
        .json();
    let id = started["id"].as_i64().unwrap();
    let api = s.server.api();
    let token = s.admin.token();
    wait_until("rsync sending", Duration::from_secs(60), || {
        let r = api.get(&format!("/api/v1/backup/runs/{id}"), Some(&token));
        r.body["status"] != "running" || r.body["progress"]["phase"] == "sending"
    });
    std::thread::sleep(Duration::from_millis(300));
    let r = api.get(&format!("/api/v1/backup/runs/{id}"), Some(&token));
    assert_eq!(
        r.body["status"], "running",
        "the run ended before it could be killed: {}",
        r.text
    );
    s.server.kill9();
    let needle = remote.display().to_string();
    wait_until("the orphaned rsync gone", Duration::from_secs(120), || {
        processes_with(&needle) == 0
    });

    let source = tree(&s.inst.data_dir.join("snapshots"));
    let after = tree(&remote.join("snapshots"));
    for (name, bytes) in &after {
        if name.starts_with('.') {
            continue; // rsync's partial dir, never a final name
        }
        assert!(
            source.get(name) == Some(bytes),
            "{name} under its final name differs from its source"
        );
    }
    assert_eq!(
        after.get("snap-1.cofre-snapshot"),
        good.get("snap-1.cofre-snapshot")
    );

    let server = s.inst.start();
    let admin = s.admin.at_with_token(&server);
    let status = admin.ok(&["--output", "json", "backup", "status"]).json();
    assert_eq!(status["jobs"][0]["last_failure"]["id"], id, "{status}");
    assert_eq!(run_json(&admin, "snapshots-nas")["status"], "ok");
    let copy: std::collections::BTreeMap<_, _> = tree(&remote.join("snapshots"))
        .into_iter()
        .filter(|(k, _)| !k.starts_with('.'))
        .collect();
    assert!(
        copy == source,
        "after the next run the host holds every snapshot"
    );
    assert!(
        !s.inst
            .data_dir
            .join(".backup-staging")
            .read_dir()
            .map(|mut d| d.any(|e| e.unwrap().file_name().to_string_lossy().starts_with("ssh-")))
            .unwrap_or(false),
        "no SSH key file is left in the staging directory"
    );
}

/// Random and mangled bodies to the backup endpoints: refused with a JSON error naming what is
/// wrong, never a server error.
#[test]
fn garbage_never_breaks_the_backup_endpoints() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let api = server.api();
    let (admin, _) = admin_token(&server);
    let dir = inst.path().join("d");
    api.post(
        "/api/v1/backup/targets",
        Some(&admin),
        serde_json::json!({"name": "d", "dir": dir.to_str().unwrap()}),
    )
    .assert_ok();
    let samples: Vec<(&str, String)> = vec![
        ("/api/v1/backup/targets", format!(r#"{{"name":"x1","dir":"{}"}}"#, dir.display())),
        (
            "/api/v1/backup/targets",
            r#"{"name":"x2","ssh":"b@nas.corp:/srv","port":22,"ssh_private_key":"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"}"#.into(),
        ),
        (
            "/api/v1/backup/targets",
            r#"{"name":"x3","s3":"s3://bucket-1/p","endpoint":"http://127.0.0.1:1","access_key_id":"a","secret_access_key":"s"}"#.into(),
        ),
        ("/api/v1/backup/jobs", r#"{"kind":"system","target":"d","schedule":"daily 03:00"}"#.into()),
    ];
    let mut rng = Prng::new(0x0BAC_2026);
    let mut problems = Vec::new();
    for i in 0..300 {
        let (path, sample) = rng.pick(&samples);
        let mut bytes = sample.clone().into_bytes();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[at] = rng.next_u64() as u8,
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, *rng.pick(b"\"{}[],:0a/\\.\x00\xff@-")),
            }
        }
        let shown = String::from_utf8_lossy(&bytes).into_owned();
        let r = api.call(
            "POST",
            path,
            Some(&admin),
            Body::Raw {
                content_type: "application/json",
                bytes,
            },
        );
        if r.status >= 500
            || (r.status >= 400 && (r.code().is_empty() || !r.body["message"].is_string()))
        {
            problems.push(format!(
                "#{i} POST {path} {shown:?} -> {} {}",
                r.status, r.text
            ));
        }
    }
    for path in [
        "/api/v1/backup/runs/abc",
        "/api/v1/backup/runs/-1",
        "/api/v1/backup/runs/99999999999999999999",
    ] {
        let r = api.get(path, Some(&admin));
        if !(r.status == 400 || r.status == 404) {
            problems.push(format!("GET {path} -> {} {}", r.status, r.text));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Starts a run of `job` through the API; returns its id.
fn start_run(api: &Api, token: &str, job: &str) -> i64 {
    let r = api.post(
        &format!("/api/v1/backup/jobs/{job}/run"),
        Some(token),
        serde_json::json!({}),
    );
    r.assert_ok();
    r.body["id"].as_i64().unwrap()
}

fn run_info(api: &Api, token: &str, id: i64) -> Value {
    let r = api.get(&format!("/api/v1/backup/runs/{id}"), Some(token));
    r.assert_ok();
    r.body
}

fn wait_run(api: &Api, token: &str, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let run = run_info(api, token, id);
        if run["status"] != "running" {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} did not end: {run}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two jobs sending the same files to one target, the second started while the first is in the
/// middle of a file, and a third job of another kind beside them, on each kind of target
/// (directory, rsync over ssh, S3): every run succeeds, the copies are whole and byte-identical,
/// no temporary name is left, and then one after the other they find everything there and
/// delete or overwrite nothing of each other's.
#[test]
fn two_jobs_on_one_target_do_not_collide() {
    if let Some(why) = sshd_unavailable() {
        panic!("{why}");
    }
    let inst = Instance::new(Backend::Sqlite);
    let s3 = S3Server::start(&inst.path().join("s3"), "cofre-ak", "cofre-secret-key-2");
    let server = inst.start();
    let (mut admin, _) = admin_cli(&inst, &server);
    admin
        .env
        .push(("AWS_ACCESS_KEY_ID".into(), "cofre-ak".into()));
    admin
        .env
        .push(("AWS_SECRET_ACCESS_KEY".into(), "cofre-secret-key-2".into()));
    let keys = inst.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    ssh_keygen(&keys.join("backup_key"));
    let sshd = Sshd::start(&inst.path().join("sshd"));
    sshd.authorize(&keys.join("backup_key.pub"));
    // Large enough that the first job is still copying when the second starts.
    for i in 0..4 {
        write_snapshot(
            &inst.data_dir,
            &format!("snap-{i}.cofre-snapshot"),
            32 << 20,
            40 + i,
        );
    }
    let local = tree(&inst.data_dir.join("snapshots"));

    let disk = inst.path().join("disk");
    let nas = inst.path().join("nas/srv/cofre");
    admin.ok(&[
        "backup",
        "target",
        "add",
        "disk",
        "--dir",
        disk.to_str().unwrap(),
    ]);
    admin.ok(&[
        "backup",
        "target",
        "add",
        "nas",
        "--ssh",
        &format!("root@127.0.0.1:{}", nas.display()),
        "--port",
        &sshd.port.to_string(),
        "--key-file",
        keys.join("backup_key").to_str().unwrap(),
    ]);
    admin.ok(&[
        "backup",
        "target",
        "add",
        "bucket",
        "--s3",
        "s3://cofre-backups/prod",
        "--endpoint",
        &s3.url,
    ]);
    let token = admin.token();
    let api = server.api();
    for (target, root) in [
        ("disk", disk.clone()),
        ("nas", nas.clone()),
        ("bucket", s3.root.join("cofre-backups/prod")),
    ] {
        for (job, kind) in [("a", "snapshots"), ("b", "snapshots"), ("sys", "system")] {
            admin.ok(&[
                "backup",
                "job",
                "add",
                "--kind",
                kind,
                "--target",
                target,
                "--schedule",
                "manual",
                "--name",
                &format!("{target}-{job}"),
            ]);
        }
        let a = start_run(&api, &token, &format!("{target}-a"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let run = run_info(&api, &token, a);
            assert_eq!(
                run["status"], "running",
                "{target}: finished too fast: {run}"
            );
            let p = &run["progress"];
            let done = p["bytes_done"].as_u64().unwrap_or(0);
            if p["phase"] == "sending" && done > 0 {
                assert!(done < p["bytes_total"].as_u64().unwrap(), "{run}");
                break;
            }
            assert!(Instant::now() < deadline, "{target}: {run}");
            std::thread::sleep(Duration::from_millis(2));
        }
        let b = start_run(&api, &token, &format!("{target}-b"));
        let sys = start_run(&api, &token, &format!("{target}-sys"));
        for id in [a, b, sys] {
            let run = wait_run(&api, &token, id);
            assert_eq!(run["status"], "ok", "{target}: {run}");
        }
        let copies = tree(&root.join("snapshots"));
        assert_eq!(
            copies.keys().collect::<Vec<_>>(),
            local.keys().collect::<Vec<_>>(),
            "{target}: exactly the snapshot files, no temporary name"
        );
        assert!(copies == local, "{target}: the copies differ");
        let system = tree(&root.join("system"));
        assert!(
            system.keys().any(|k| k.ends_with(".cofresnap")) && system.len() == 2,
            "{target}: {:?}",
            system.keys()
        );
        // One after the other: everything is there already, nothing of the other's goes.
        for job in ["a", "b"] {
            let run = run_json(&admin, &format!("{target}-{job}"));
            assert_eq!(run["status"], "ok", "{target}-{job}: {run}");
            assert_eq!(run["files_sent"], 0, "{target}-{job}: {run}");
        }
        assert!(tree(&root.join("snapshots")) == local, "{target}");
        assert_eq!(tree(&root.join("system")), system, "{target}");
        let hidden: Vec<String> = walk_names(&root)
            .into_iter()
            .filter(|n| n.contains(".cofre-partial") || n.contains(".cofre-probe"))
            .collect();
        assert!(
            hidden.is_empty(),
            "{target}: temporary names left: {hidden:?}"
        );
    }
}

/// Every file and directory name under `dir`, hidden ones included.
fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Duties in saas (issue 13): the customer's admin adds an SSH (rsync) target for its credential
/// backups and runs a credentials job end to end; the vendor's operator neither sees nor touches
/// that target, its job or its run (403); the admin may not take, prune or back up snapshots nor
/// add system jobs, but sees the snapshots the operator takes and their schedule.
#[test]
fn saas_credential_backups_are_the_customers() {
    if let Some(why) = sshd_unavailable() {
        assert!(std::env::var("CI").is_err(), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    let inst = Instance::new(Backend::Sqlite);
    let config = inst.path().join("cofre.toml");
    std::fs::write(&config, "mode = \"saas\"\n").unwrap();
    let server = inst.start_with_env(&[
        ("COFRE_CONFIG", config.to_str().unwrap()),
        ("COFRE_LOG", "info"),
    ]);
    let (admin, _) = admin_cli(&inst, &server);
    let (operator, _, _) = add_user_cli(&inst, &server, &admin, "op1", "operator", &[]);
    let keys = inst.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    ssh_keygen(&keys.join("backup_key"));
    let sshd = Sshd::start(&inst.path().join("sshd"));
    sshd.authorize(&keys.join("backup_key.pub"));

    // A break-glass file to back up.
    let (alice, _, _) = add_user_cli(&inst, &server, &admin, "alice", "user", &[]);
    let (bob, _, _) = add_user_cli(&inst, &server, &admin, "bob", "user", &[]);
    admin.ok(&[
        "breakglass",
        "ceremony",
        "--custodians",
        "alice,bob",
        "--threshold",
        "2",
    ]);
    alice.ok(&["breakglass", "share"]);
    bob.ok(&["breakglass", "share"]);
    // The writer runs after the ceremony completes, on its own task.
    // Without the writer's temporary files (`.NAME.tmp-…`, renamed when whole), which a backup
    // never sends: a read of the directory can catch one mid-write.
    let written = || {
        let mut t = tree(&inst.data_dir.join("breakglass"));
        t.retain(|name, _| !name.rsplit('/').next().unwrap_or(name).starts_with('.'));
        t
    };
    let mut local = Default::default();
    wait_until(
        "a break-glass file is written",
        Duration::from_secs(30),
        || {
            local = written();
            !local.is_empty()
        },
    );

    // The admin's target: credentials by default, the only duty its role keeps in saas.
    let remote = inst.path().join("customer/srv/cofre");
    admin
        .ok(&[
            "backup",
            "target",
            "add",
            "vault-copy",
            "--ssh",
            &format!("root@127.0.0.1:{}", remote.display()),
            "--port",
            &sshd.port.to_string(),
            "--key-file",
            keys.join("backup_key").to_str().unwrap(),
        ])
        .assert_stdout_contains("duty: credentials");
    admin
        .ok(&["backup", "target", "test", "vault-copy"])
        .assert_stdout_contains(&sshd.host_key_fingerprint());
    admin.ok(&[
        "backup",
        "job",
        "add",
        "--kind",
        "credentials",
        "--target",
        "vault-copy",
        "--schedule",
        "manual",
        "--name",
        "keys",
    ]);
    let run = run_json(&admin, "keys");
    assert_eq!(run["status"], "ok", "{run}");
    assert!(run["files_sent"].as_u64().unwrap() > 0, "{run}");
    // The writer may add a file after the one waited for (its own schedule): every file there
    // before the run is sent, and everything sent is byte for byte what the instance has.
    let sent = tree(&remote.join("credentials"));
    let now_local = written();
    assert!(
        local
            .iter()
            .all(|(name, bytes)| sent.get(name) == Some(bytes)),
        "the customer's server has the break-glass files, byte for byte: {:?} vs {:?}",
        local.keys().collect::<Vec<_>>(),
        sent.keys().collect::<Vec<_>>()
    );
    assert!(
        sent.iter()
            .all(|(name, bytes)| now_local.get(name) == Some(bytes)),
        "nothing sent that the instance does not have: {:?}",
        sent.keys().collect::<Vec<_>>()
    );
    let run_id = run["id"].as_i64().unwrap();

    // The operator: none of it shows, and every call on it is refused.
    let api = server.api();
    let op = operator.token();
    let status = api.get("/api/v1/backup/status", Some(&op));
    status.assert_ok();
    assert!(
        !status.text.contains("vault-copy") && !status.text.contains("\"keys\""),
        "the operator sees the customer's credential backups: {}",
        status.text
    );
    let targets = api.get("/api/v1/backup/targets", Some(&op));
    targets.assert_ok();
    assert_eq!(targets.body, serde_json::json!([]), "{}", targets.text);
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/backup/targets/vault-copy/test".to_owned(),
            None,
        ),
        ("POST", "/api/v1/backup/jobs/keys/run".to_owned(), None),
        ("GET", format!("/api/v1/backup/runs/{run_id}"), None),
        ("DELETE", "/api/v1/backup/jobs/keys".to_owned(), None),
        (
            "DELETE",
            "/api/v1/backup/targets/vault-copy".to_owned(),
            None,
        ),
        (
            "POST",
            "/api/v1/backup/jobs".to_owned(),
            Some(
                serde_json::json!({"kind": "system", "target": "vault-copy", "schedule": "manual"}),
            ),
        ),
        (
            "POST",
            "/api/v1/backup/jobs".to_owned(),
            Some(
                serde_json::json!({"kind": "credentials", "target": "vault-copy", "schedule": "manual"}),
            ),
        ),
        (
            "POST",
            "/api/v1/backup/targets".to_owned(),
            Some(
                serde_json::json!({"name": "mine", "duty": "credentials", "dir": inst.path().join("op").to_str().unwrap()}),
            ),
        ),
    ] {
        let body = match body {
            Some(v) => Body::Json(v),
            None => Body::None,
        };
        let r = api.call(method, &path, Some(&op), body);
        r.assert_error(403, "forbidden");
        assert!(r.text.contains("may not"), "{method} {path}: {}", r.text);
    }
    assert!(operator
        .fail(&["backup", "run", "keys"])
        .all()
        .contains("credential backups are kept by the customer's admins in saas mode"));

    // The operator's side: snapshots (and system backups on its own targets).
    let snap = api.post(
        "/api/v1/snapshots",
        Some(&op),
        serde_json::json!({"include_recordings": false}),
    );
    snap.assert_ok();
    let job = snap.body["id"].as_str().unwrap().to_owned();
    let token = admin.token();
    // The admin follows it and sees the result in the list, with the schedule ...
    wait_until("the snapshot taken", Duration::from_secs(60), || {
        let j = api.get(&format!("/api/v1/snapshots/jobs/{job}"), Some(&token));
        j.assert_ok();
        !j.body["finished_at"].is_null()
    });
    let list = api.get("/api/v1/snapshots", Some(&token));
    list.assert_ok();
    assert_eq!(
        list.body["snapshots"].as_array().unwrap().len(),
        1,
        "{}",
        list.text
    );
    assert_eq!(list.body["schedule"]["time"], "03:00", "{}", list.text);
    assert!(
        list.body["schedule"]["next_at"].is_string(),
        "{}",
        list.text
    );
    admin
        .ok(&["snapshot", "list"])
        .assert_stdout_contains("schedule: daily at 03:00");
    // ... but changes nothing on that side.
    let id = list.body["snapshots"][0]["id"].as_str().unwrap().to_owned();
    for (path, body) in [
        (
            "/api/v1/snapshots".to_owned(),
            serde_json::json!({"include_recordings": false}),
        ),
        (
            "/api/v1/snapshots/prune".to_owned(),
            serde_json::json!({"dry_run": false}),
        ),
        (
            format!("/api/v1/snapshots/{id}/verify"),
            serde_json::json!({}),
        ),
        (
            "/api/v1/backup/jobs".to_owned(),
            serde_json::json!({"kind": "system", "target": "vault-copy", "schedule": "manual"}),
        ),
        (
            "/api/v1/backup/jobs".to_owned(),
            serde_json::json!({"kind": "snapshots", "target": "vault-copy", "schedule": "manual"}),
        ),
        (
            "/api/v1/backup/targets".to_owned(),
            serde_json::json!({"name": "sys", "duty": "system", "dir": inst.path().join("sys").to_str().unwrap()}),
        ),
    ] {
        let r = api.post(&path, Some(&token), body);
        r.assert_error(403, "forbidden");
    }
    assert!(admin
        .fail(&[
            "backup",
            "job",
            "add",
            "--kind",
            "system",
            "--target",
            "vault-copy",
            "--schedule",
            "manual"
        ])
        .all()
        .contains("system backups are kept by the vendor's operator in saas mode"));

    // Audited as the others, with the duty.
    let trail = audit(&admin);
    let added = entries(&trail, "backup.target_add");
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0]["details"]["duty"], "credentials");
    assert_eq!(
        entries(&trail, "backup.job_add")[0]["details"]["duty"],
        "credentials"
    );
    assert_eq!(entries(&trail, "backup.run").len(), 1);
    admin
        .ok(&["audit", "verify"])
        .assert_stdout_contains("audit chain intact");
}
