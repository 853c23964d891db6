//! The SSH gateway against real OpenSSH: an `sshd` on a loopback port started by each test (the
//! target, logging in as root with a vaulted private key), and the real `ssh`, `scp` clients.
//!
//! The user alice (group ops) logs in to the gateway as `alice:root@db01` with her registered key;
//! what reaches sshd is read from its log (`LogLevel VERBOSE` logs every connection and login).
//! Each test has its own server, sshd, ports and directories, so they run in parallel.
//!
//! These tests need root (sshd) and skip with a printed reason without it; CI runs them as root.

mod clients;
mod drain;
mod exact;
mod invite;
mod live;
mod support_host;
mod terminal;

use crate::harness::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What every test starts from: a server, its admin, alice with an SSH key, and the target db01
/// (the test's sshd) with root's private key in the vault.
/// Fields drop in order: the processes stop before their directories go.
pub(crate) struct Gw {
    pub(crate) sshd: Sshd,
    pub(crate) server: Server,
    pub(crate) admin: Cli,
    pub(crate) alice: Cli,
    pub(crate) alice_password: String,
    /// alice's private key (`alice_key`, `alice_key.pub`), root's (`root_key`), askpass scripts.
    pub(crate) keys: PathBuf,
    pub(crate) inst: Instance,
}

/// None when sshd cannot run here (the reason is printed).
pub(crate) fn setup(backend: Backend, outcome: Option<&str>) -> Option<Gw> {
    setup_with_config(backend, outcome, None)
}

/// `setup` with a server configuration file of this content.
pub(crate) fn setup_with_config(
    backend: Backend,
    outcome: Option<&str>,
    config: Option<&str>,
) -> Option<Gw> {
    setup_listening(backend, outcome, config, "127.0.0.1")
}

/// `setup` with the server's listeners on `ip` (`0.0.0.0`: reachable from network namespaces).
pub(crate) fn setup_on(backend: Backend, outcome: Option<&str>, ip: &str) -> Option<Gw> {
    setup_listening(backend, outcome, None, ip)
}

fn setup_listening(
    backend: Backend,
    outcome: Option<&str>,
    config: Option<&str>,
    ip: &str,
) -> Option<Gw> {
    if let Some(why) = sshd_unavailable() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let inst = Instance::new(backend);
    let server = match config {
        Some(text) => {
            let file = inst.path().join("cofre.toml");
            std::fs::write(&file, text).expect("config file");
            inst.start_on(ip, &[("COFRE_CONFIG", file.to_str().expect("path"))])
        }
        None => inst.start_on(ip, &[("COFRE_LOG", "info")]),
    };
    assert!(
        server.ssh_port != 0 && server.ssh_host_key.starts_with("SHA256:"),
        "the server must print `ssh gateway listening on ADDR` and `ssh host key: SHA256:...`:\n{}",
        server.stdout_text()
    );
    let (admin, _) = admin_cli(&inst, &server);
    let keys = inst.path().join("keys");
    std::fs::create_dir_all(&keys).expect("keys dir");
    ssh_keygen(&keys.join("alice_key"));
    ssh_keygen(&keys.join("root_key"));
    let sshd = Sshd::start(&inst.path().join("sshd"));
    sshd.authorize(&keys.join("root_key.pub"));

    let (alice, alice_password, key_added) =
        gateway_world(&inst, &server, &admin, &keys, sshd.port);
    key_added.assert_stdout_contains(&ssh_fingerprint(&keys.join("alice_key.pub")));
    if let Some(outcome) = outcome {
        allow_sessions(&admin, outcome);
    }
    Some(Gw {
        sshd,
        server,
        admin,
        alice,
        alice_password,
        keys,
        inst,
    })
}

/// Options every OpenSSH client here gets: no user config, no agent, no known_hosts, alice's key only.
pub(crate) fn client_options(keys: &Path) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=30",
        "-i",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([keys.join("alice_key").display().to_string()])
    .collect()
}

impl Gw {
    /// `program [extra] [common options]`: for OpenSSH the first value of an option wins, so the
    /// test's own options come first.
    fn client_command(&self, program: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        let home = self.inst.path().join("ssh-home");
        std::fs::create_dir_all(&home).expect("ssh home");
        cmd.env_remove("SSH_AUTH_SOCK")
            .env_remove("SSH_ASKPASS")
            .env_remove("DISPLAY")
            .env("HOME", &home)
            .current_dir(&home)
            .args(extra)
            .args(client_options(&self.keys));
        cmd
    }

    /// `ssh [extra] -p GATEWAY LOGIN@127.0.0.1 [remote command]`.
    pub(crate) fn ssh(&self, login: &str, extra: &[&str], remote: Option<&str>) -> Command {
        let mut cmd = self.client_command("ssh", extra);
        cmd.args(self.destination(login, remote));
        cmd
    }

    fn destination(&self, login: &str, remote: Option<&str>) -> Vec<String> {
        let mut args = vec![
            "-p".to_owned(),
            self.server.ssh_port.to_string(),
            format!("{login}@127.0.0.1"),
        ];
        args.extend(remote.map(str::to_owned));
        args
    }

    pub(crate) fn run_ssh(
        &self,
        login: &str,
        extra: &[&str],
        remote: Option<&str>,
        stdin: Option<&str>,
    ) -> Out {
        run_command(
            self.ssh(login, extra, remote),
            stdin,
            &format!(
                "ssh {} {login}@gateway {}",
                extra.join(" "),
                remote.unwrap_or("")
            ),
        )
    }

    /// ssh straight to the target's sshd as root with the vaulted key (what the gateway does).
    fn direct_ssh(&self, extra: &[&str], remote: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.env_remove("SSH_AUTH_SOCK")
            .env("HOME", self.inst.path().join("ssh-home"))
            .args(extra)
            .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
            .args(["-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-i"])
            .arg(self.keys.join("root_key"))
            .args(["-p", &self.sshd.port.to_string(), "root@127.0.0.1", remote]);
        cmd
    }

    /// scp through the gateway. OpenSSH's scp splits `alice:root@db01@host:path` at the first
    /// colon (it would take `alice` for the host), so the login goes in `-o User=` instead.
    fn scp(&self, from: &str, to: &str) -> Out {
        let mut cmd = self.client_command("scp", &[]);
        cmd.args(["-q", "-P", &self.server.ssh_port.to_string()])
            .args(["-o", "User=alice:root@db01"])
            .args([from, to]);
        run_command(cmd, None, &format!("scp {from} {to}"))
    }

    pub(crate) fn audit(&self) -> Vec<Value> {
        parse_export(
            &self
                .admin
                .ok(&["audit", "export", "--format", "jsonl"])
                .stdout,
        )
    }

    pub(crate) fn sessions(&self) -> Vec<Value> {
        json_items(
            &self
                .admin
                .ok(&["--output", "json", "session", "list"])
                .json(),
        )
    }

    /// The newest session of this kind (the list is newest first).
    fn newest_session(&self, kind: &str) -> Value {
        let all = self.sessions();
        all.iter()
            .find(|s| s["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} session in the list: {all:?}"))
    }

    /// `cofre recording export ID -o FILE`, checked against the asciicast v2 format.
    fn export(&self, id: &str) -> (PathBuf, Cast) {
        let file = self.inst.path().join(format!("{id}.cast"));
        self.admin.ok(&[
            "recording",
            "export",
            id,
            "-o",
            file.to_str().expect("path"),
        ]);
        let text = std::fs::read_to_string(&file).expect("the exported recording");
        (file, Cast::parse(&text))
    }
}

/// An audit entry with this action whose fields match; panics listing the trail otherwise.
pub(crate) fn find_entry<'a>(
    entries: &'a [Value],
    action: &str,
    pred: impl Fn(&Value) -> bool,
) -> &'a Value {
    entries
        .iter()
        .find(|e| e["action"] == action && pred(e))
        .unwrap_or_else(|| {
            let same: Vec<&Value> = entries.iter().filter(|e| e["action"] == action).collect();
            panic!("no matching {action} audit entry; the {action} entries are: {same:#?}")
        })
}

// ---------------------------------------------------------------------------------------------
// asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/): a header object on the first
// line, then one `[time, code, data]` array per line.

struct Cast {
    header: Value,
    events: Vec<(f64, String, String)>,
}

impl Cast {
    fn parse(text: &str) -> Cast {
        let mut lines = text.lines();
        let header: Value = serde_json::from_str(lines.next().expect("a header line"))
            .unwrap_or_else(|e| panic!("the header line is not JSON ({e}):\n{text}"));
        assert_eq!(header["version"], 2, "asciicast version 2: {header}");
        for key in ["width", "height"] {
            assert!(
                header[key].as_u64().is_some_and(|n| n > 0),
                "the header's {key} is a positive integer: {header}"
            );
        }
        let mut events = Vec::new();
        let mut last = 0.0;
        for line in lines.filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("an event line is not JSON ({e}): {line}"));
            let a = v
                .as_array()
                .unwrap_or_else(|| panic!("not an array: {line}"));
            assert_eq!(a.len(), 3, "[time, code, data]: {line}");
            let t = a[0].as_f64().unwrap_or_else(|| panic!("time: {line}"));
            assert!(t >= last, "event times never go back: {line}");
            last = t;
            let code = a[1].as_str().unwrap_or_else(|| panic!("code: {line}"));
            assert!(
                ["o", "i", "r", "m"].contains(&code),
                "event code {code:?} is not one of o, i, r, m: {line}"
            );
            let data = a[2].as_str().unwrap_or_else(|| panic!("data: {line}"));
            if code == "r" {
                let (w, h) = data
                    .split_once('x')
                    .unwrap_or_else(|| panic!("COLSxROWS: {line}"));
                assert!(
                    w.parse::<u32>().is_ok() && h.parse::<u32>().is_ok(),
                    "{line}"
                );
            }
            events.push((t, code.to_owned(), data.to_owned()));
        }
        Cast { header, events }
    }

    /// All the data of one kind of event, concatenated.
    fn text(&self, code: &str) -> String {
        self.events
            .iter()
            .filter(|(_, c, _)| c == code)
            .map(|(_, _, d)| d.as_str())
            .collect()
    }

    fn markers(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|(_, c, _)| c == "m")
            .map(|(_, _, d)| d.clone())
            .collect()
    }
}

/// `asciinema cat FILE` (the asciinema project's own reader) accepts the file; returns its output.
fn asciinema_cat(file: &Path) -> String {
    let mut cmd = Command::new("asciinema");
    cmd.arg("cat").arg(file);
    let spawned = cmd.stdin(Stdio::null()).output();
    let out = spawned.unwrap_or_else(|e| {
        panic!("cannot run asciinema ({e}); install it: python3 -m pip install asciinema")
    });
    assert!(
        out.status.success(),
        "asciinema cat rejects {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// A client process watched while it runs.

pub(crate) struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    what: String,
}

impl Running {
    pub(crate) fn spawn(mut cmd: Command, what: &str) -> Running {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let collect = |mut r: Box<dyn Read + Send>| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let b = buf.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = r.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    b.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
            buf
        };
        let stdout = collect(Box::new(child.stdout.take().expect("stdout")));
        let stderr = collect(Box::new(child.stderr.take().expect("stderr")));
        Running {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            what: what.to_owned(),
        }
    }

    pub(crate) fn send(&mut self, text: &str) {
        let pipe = self.stdin.as_mut().expect("stdin still open");
        pipe.write_all(text.as_bytes())
            .expect("write to the client");
        pipe.flush().expect("flush");
    }

    pub(crate) fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// The command and the last 2000 characters of each stream.
    pub(crate) fn describe(&self) -> String {
        let tail = |s: String| {
            let cut = s.len().saturating_sub(2000);
            let cut = (cut..s.len())
                .find(|&i| s.is_char_boundary(i))
                .unwrap_or(s.len());
            s[cut..].to_owned()
        };
        format!(
            "{}\n--- stdout (end) ---\n{}\n--- stderr (end) ---\n{}",
            self.what,
            tail(self.stdout()),
            tail(self.stderr())
        )
    }

    pub(crate) fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stdout().contains(needle) {
            if let Ok(Some(st)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                if self.stdout().contains(needle) {
                    return;
                }
                panic!(
                    "exited ({st}) before printing {needle:?}: {}",
                    self.describe()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {timeout:?}: {}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit; None if it is still running after `timeout`.
    pub(crate) fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                // Let the readers take the last bytes.
                std::thread::sleep(Duration::from_millis(100));
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The numbers N of `line-N` lines in a text (the typed loop shows `line-$i`, never a digit).
fn line_numbers(text: &str, prefix: &str) -> Vec<u32> {
    text.split(prefix)
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

pub(crate) fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// sshd logs `Connection from ...` for every TCP connection it accepts.
pub(crate) fn assert_nothing_reached_sshd(sshd: &Sshd, log_before: usize, what: &str) {
    // sshd's children write the log; give a connection that did happen time to show.
    std::thread::sleep(Duration::from_millis(300));
    let log = sshd.log();
    let new = &log[log_before.min(log.len())..];
    assert!(
        !new.contains("Connection from") && !new.contains("Accepted"),
        "{what}: something reached sshd:\n{new}"
    );
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// A shell with a pty: the user types a command and sees its output; the recording holds both the
/// output and what was typed, and asciinema reads it.
#[test]
fn shell_with_pty_is_recorded() {
    let Some(gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    // The gateway presents the host key it printed at start.
    let mut scan = Command::new("sh");
    scan.arg("-c").arg(format!(
        "ssh-keyscan -t ed25519 -p {} 127.0.0.1 2>/dev/null | ssh-keygen -lf -",
        gw.server.ssh_port
    ));
    run_command(scan, None, "ssh-keyscan | ssh-keygen -lf -")
        .assert_ok()
        .assert_stdout_contains(&gw.server.ssh_host_key);

    // The shell computes 42; the typed text only holds the arithmetic, so seeing `marker-42`
    // means the command ran on the target.
    let out = gw.run_ssh(
        "alice:root@db01",
        &["-tt"],
        None,
        Some("echo marker-$((6*7)); exit\n"),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("marker-42"), "{out:?}");
    assert!(
        gw.sshd.log().contains("Accepted publickey for root"),
        "the gateway logged in to sshd as root with the vaulted key:\n{}",
        gw.sshd.log()
    );

    let session = gw.newest_session("shell");
    let id = session["id"].as_str().expect("session id").to_owned();
    assert_eq!(session["username"], "alice");
    assert_eq!(session["account"], "root");
    assert_eq!(session["target"], "db01");
    assert_eq!(session["source"], "127.0.0.1");
    assert_eq!(session["live"], false);
    assert!(session["ended_at"].is_string(), "{session}");
    assert!(session["bytes"].as_i64().unwrap_or(0) > 0, "{session}");

    let (file, cast) = gw.export(&id);
    // ssh without a terminal asks for a 0x0 pty; RFC 4254 says to ignore zero sizes, and a
    // player needs a real one.
    assert_eq!(
        (&cast.header["width"], &cast.header["height"]),
        (&Value::from(80), &Value::from(24)),
        "header: {}",
        cast.header
    );
    assert!(
        cast.text("o").contains("marker-42"),
        "the recording's output shows what the user saw: {:?}",
        cast.events
    );
    assert!(
        cast.text("i").contains("echo marker-$((6*7)); exit"),
        "the recording's input shows what the user typed: {:?}",
        cast.events
    );
    assert!(
        cast.markers().iter().any(|m| m.starts_with("end: ")),
        "the recording says how the session ended: {:?}",
        cast.markers()
    );
    assert_eq!(
        cast.header["title"], "alice:root@db01",
        "header: {}",
        cast.header
    );
    assert!(
        asciinema_cat(&file).contains("marker-42"),
        "asciinema plays the output back"
    );

    let audit = gw.audit();
    let login = find_entry(&audit, "gateway.login", |e| e["actor"] == "alice");
    assert_eq!(login["details"]["method"], "publickey");
    let start = find_entry(&audit, "session.start", |e| e["details"]["session"] == id);
    assert_eq!(start["actor"], "alice");
    assert_eq!(start["object"], "credential:db01/root");
    assert_eq!(start["details"]["kind"], "shell");
    find_entry(&audit, "session.end", |e| {
        e["object"] == format!("session:{id}")
    });
    find_entry(&audit, "target.host_key_pinned", |e| {
        e["object"] == "target:db01"
            && e["details"]["fingerprint"] == gw.sshd.host_key_fingerprint()
    });
    find_entry(&audit, "recording.view", |e| {
        e["actor"] == "admin" && e["object"] == format!("session:{id}")
    });
}

/// Single quotes for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// ssh in a real terminal (util-linux `script`): the target's pty gets the terminal's size, a
/// resize reaches the target, and the recording has both.
#[test]
fn terminal_size_and_resize() {
    let Some(gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    // The target (this machine) touches `started` once it has printed its first size; only then is
    // the local terminal resized, and the target waits to see the new size.
    let started = gw.inst.path().join("started");
    let remote = format!(
        "stty size; touch {started}; for i in $(seq 1 200); do [ \"$(stty size)\" = '40 120' ] && break; sleep 0.05; done; stty size",
        started = started.display()
    );
    let mut ssh_args = vec!["ssh".to_owned(), "-tt".to_owned()];
    ssh_args.extend(client_options(&gw.keys));
    ssh_args.extend(gw.destination("alice:root@db01", Some(&remote)));
    let ssh_line: Vec<String> = ssh_args.iter().map(|a| sh_quote(a)).collect();
    let inner = format!(
        "stty cols 100 rows 30; (while [ ! -e {started} ]; do sleep 0.05; done; stty cols 120 rows 40 </dev/tty) & {ssh}; wait",
        started = sh_quote(&started.display().to_string()),
        ssh = ssh_line.join(" ")
    );
    let mut script = Command::new("script");
    script
        .args(["-qfec", &inner, "/dev/null"])
        .env_remove("SSH_AUTH_SOCK")
        .env("HOME", gw.inst.path().join("ssh-home"))
        .env("TERM", "xterm");
    let out = run_command(script, None, "script -c 'ssh -tt ...'");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("30 100") && out.stdout.contains("40 120"),
        "the target saw 100x30, then 120x40: {out:?}"
    );

    let session = gw.newest_session("exec");
    let (_, cast) = gw.export(session["id"].as_str().expect("id"));
    assert_eq!(cast.header["width"], 100, "{}", cast.header);
    assert_eq!(cast.header["height"], 30, "{}", cast.header);
    assert_eq!(cast.header["env"]["TERM"], "xterm", "{}", cast.header);
    assert!(
        cast.events
            .iter()
            .any(|(_, code, data)| code == "r" && data == "120x40"),
        "the resize is recorded: {:?}",
        cast.events
    );
}

/// exec passes the remote exit status back, 0 and otherwise, and keeps stdout and stderr apart.
fn exec_exit_status(backend: Backend) {
    let Some(gw) = setup(backend, Some("allow")) else {
        return;
    };
    let out = gw.run_ssh(
        "alice:root@db01",
        &[],
        Some("echo out-$((2+3)); echo err-line >&2"),
        None,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "out-5\n", "{out:?}");
    assert!(out.stderr.contains("err-line"), "{out:?}");
    let first = gw.newest_session("exec");

    let out = gw.run_ssh(
        "alice:root@db01",
        &[],
        Some("echo before-exit; exit 3"),
        None,
    );
    assert_eq!(
        out.code,
        Some(3),
        "ssh exits with the remote status: {out:?}"
    );
    assert_eq!(out.stdout, "before-exit\n", "{out:?}");
    let second = gw.newest_session("exec");
    assert_ne!(first["id"], second["id"]);

    // A command killed by a signal: ssh reports it as directly (255), never as a success.
    let killed = "echo before-signal; kill -TERM $$";
    let direct = run_command(gw.direct_ssh(&[], killed), None, "ssh straight to sshd");
    assert_eq!(direct.stdout, "before-signal\n", "{direct:?}");
    let out = gw.run_ssh("alice:root@db01", &[], Some(killed), None);
    assert_eq!(out.stdout, "before-signal\n", "{out:?}");
    assert_eq!(
        out.code, direct.code,
        "as without the gateway: {out:?} {direct:?}"
    );
    assert_ne!(out.code, Some(0), "{out:?}");
    let third = gw.newest_session("exec");
    let (_, cast) = gw.export(third["id"].as_str().expect("id"));
    assert!(
        cast.markers().contains(&"exit signal TERM".to_owned()),
        "{:?}",
        cast.markers()
    );

    let (_, cast) = gw.export(first["id"].as_str().expect("id"));
    assert!(
        cast.markers()
            .contains(&"exec echo out-$((2+3)); echo err-line >&2".to_owned()),
        "the command is recorded: {:?}",
        cast.markers()
    );
    assert!(cast.text("o").contains("out-5"), "{:?}", cast.events);
    assert!(
        cast.markers().contains(&"exit status 0".to_owned()),
        "{:?}",
        cast.markers()
    );
    let (file, cast) = gw.export(second["id"].as_str().expect("id"));
    assert!(
        cast.markers()
            .contains(&"exec echo before-exit; exit 3".to_owned()),
        "{:?}",
        cast.markers()
    );
    assert!(
        cast.markers().contains(&"exit status 3".to_owned()),
        "{:?}",
        cast.markers()
    );
    asciinema_cat(&file);
}

#[test]
fn exec_exit_status_sqlite() {
    exec_exit_status(Backend::Sqlite);
}

#[test]
fn exec_exit_status_postgres() {
    exec_exit_status(Backend::Postgres);
}

/// Environment variables: the allow-list (LANG, LC_*, TERM, ...) reaches the target, others are
/// dropped even though the target's sshd would accept them.
#[test]
fn environment_allow_list() {
    let Some(gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    let send = [
        "-o",
        "SendEnv=LANG",
        "-o",
        "SendEnv=LC_TIME",
        "-o",
        "SendEnv=COFRE_IT_SMUGGLED",
    ];
    let show = "echo \"lang=$LANG lc_time=$LC_TIME smuggled=$COFRE_IT_SMUGGLED\"";
    let env = [
        ("LANG", "C.UTF-8"),
        ("LC_TIME", "C"),
        ("COFRE_IT_SMUGGLED", "yes"),
    ];
    let mut direct = gw.direct_ssh(&send, show);
    direct.envs(env);
    let direct = run_command(direct, None, "ssh straight to sshd");
    assert_eq!(
        direct.stdout, "lang=C.UTF-8 lc_time=C smuggled=yes\n",
        "sshd accepts all three: {direct:?}"
    );
    let mut cmd = gw.ssh("alice:root@db01", &send, Some(show));
    cmd.envs(env);
    let out = run_command(cmd, None, "ssh with SendEnv");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "lang=C.UTF-8 lc_time=C smuggled=\n", "{out:?}");
}

/// 50 MB up and down with scp (the sftp subsystem): byte-identical, and the recording names the
/// file and its size.
#[test]
fn scp_50mb_up_and_down() {
    let Some(gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    const SIZE: usize = 50 * 1024 * 1024;
    let local = gw.inst.path().join("local");
    let remote = gw.inst.path().join("remote");
    std::fs::create_dir_all(&local).expect("dir");
    std::fs::create_dir_all(&remote).expect("dir");
    let original = local.join("original.bin");
    {
        let mut prng = Prng::new(0x5eed);
        let mut data = Vec::with_capacity(SIZE);
        while data.len() < SIZE {
            data.extend_from_slice(&prng.next_u64().to_le_bytes());
        }
        std::fs::write(&original, &data).expect("write the test file");
    }
    let uploaded = remote.join("up.bin");
    let downloaded = local.join("down.bin");
    let cmp = |a: &Path, b: &Path| {
        let mut cmd = Command::new("cmp");
        cmd.arg(a).arg(b);
        run_command(cmd, None, "cmp").assert_ok();
    };

    let started = Instant::now();
    gw.scp(
        original.to_str().expect("path"),
        &format!("127.0.0.1:{}", uploaded.display()),
    )
    .assert_ok();
    cmp(&original, &uploaded);
    gw.scp(
        &format!("127.0.0.1:{}", uploaded.display()),
        downloaded.to_str().expect("path"),
    )
    .assert_ok();
    cmp(&original, &downloaded);
    eprintln!("100 MB through the gateway in {:?}", started.elapsed());

    let sessions: Vec<Value> = gw
        .sessions()
        .into_iter()
        .filter(|s| s["kind"] == "sftp")
        .collect();
    assert_eq!(sessions.len(), 2, "one sftp session per scp: {sessions:?}");
    let mut markers = Vec::new();
    for s in &sessions {
        let (_, cast) = gw.export(s["id"].as_str().expect("id"));
        markers.extend(cast.markers());
    }
    for expected in [
        format!("sftp write {} ({SIZE} bytes)", uploaded.display()),
        format!("sftp read {} ({SIZE} bytes)", uploaded.display()),
    ] {
        assert!(
            markers.contains(&expected),
            "the recordings hold {expected:?}: {markers:?}"
        );
    }
}

/// Without a policy the session is refused with a message that says why, before anything
/// reaches the target; with one, the same command gets through.
#[test]
fn no_policy_no_connection() {
    let Some(gw) = setup(Backend::Sqlite, None) else {
        return;
    };
    let before = gw.sshd.log().len();
    let out = gw.run_ssh("alice:root@db01", &[], Some("echo should-not-run"), None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("cofre: no policy grants you sessions on db01"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("should-not-run"), "{out:?}");
    let shell = gw.run_ssh("alice:root@db01", &["-tt"], None, Some("echo hi; exit\n"));
    assert_ne!(shell.code, Some(0), "{shell:?}");
    assert!(
        shell
            .all()
            .contains("no policy grants you sessions on db01"),
        "{shell:?}"
    );
    assert_nothing_reached_sshd(&gw.sshd, before, "refused by policy");
    let audit = gw.audit();
    let refused = find_entry(&audit, "session.refused", |e| e["actor"] == "alice");
    assert_eq!(refused["object"], "credential:db01/root");
    assert_eq!(refused["outcome"], "denied");
    assert!(
        gw.sessions().is_empty(),
        "a refused session is not a session"
    );

    // The same command once a policy allows it: it reaches sshd (the check above can see that).
    allow_sessions(&gw.admin, "allow");
    let out = gw.run_ssh("alice:root@db01", &[], Some("echo should-run"), None);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "should-run\n");
    assert!(gw.sshd.log()[before..].contains("Accepted publickey for root"));
}

/// The target's host key is pinned at the first session; a different key later is refused with a
/// message naming the change, and audited.
#[test]
fn changed_host_key_is_refused() {
    let Some(mut gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    let first_key = gw.sshd.host_key_fingerprint();
    let out = gw.run_ssh("alice:root@db01", &[], Some("echo first"), None);
    assert_eq!(out.code, Some(0), "{out:?}");
    find_entry(&gw.audit(), "target.host_key_pinned", |e| {
        e["details"]["fingerprint"] == first_key
    });

    gw.sshd.restart_with_new_host_key();
    let second_key = gw.sshd.host_key_fingerprint();
    assert_ne!(first_key, second_key);
    let before = gw.sshd.log().len();
    let out = gw.run_ssh("alice:root@db01", &[], Some("echo second"), None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("the host key of db01 changed"),
        "the user is told why: {out:?}"
    );
    assert!(out.stderr.contains(&second_key), "{out:?}");
    assert!(!out.stdout.contains("second"), "{out:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !gw.sshd.log()[before..].contains("Accepted"),
        "no login on the target with the changed key:\n{}",
        gw.sshd.log()
    );
    let audit = gw.audit();
    let mismatch = find_entry(&audit, "session.host_key_mismatch", |e| {
        e["object"] == "target:db01"
    });
    assert_eq!(mismatch["outcome"], "denied");
    assert_eq!(mismatch["details"]["pinned"], first_key);
    assert_eq!(mismatch["details"]["presented"], second_key);
    let session = gw.newest_session("exec");
    assert!(
        session["end_reason"]
            .as_str()
            .is_some_and(|r| r.contains("host key")),
        "{session}"
    );
}

/// `cofre session kill` ends a live shell within a second; the user sees why; audited.
#[test]
fn kill_ends_a_live_session() {
    let Some(gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    let mut ssh = Running::spawn(gw.ssh("alice:root@db01", &["-tt"], None), "ssh -tt (shell)");
    ssh.send("echo ready-$((40+2))\n");
    ssh.wait_for_stdout("ready-42", Duration::from_secs(30));

    let listed = gw.admin.ok(&["session", "list", "--live"]).stdout;
    let line = listed
        .lines()
        .find(|l| l.contains("alice:root@db01"))
        .unwrap_or_else(|| panic!("the live session is listed:\n{listed}"));
    for field in ["shell", "from 127.0.0.1", "live"] {
        assert!(line.contains(field), "{field:?} in {line:?}");
    }
    let id = line.split('\t').next().expect("id").to_owned();

    gw.admin
        .ok(&["session", "kill", &id, "--reason", "maintenance window"])
        .assert_stdout_contains("terminated");
    let killed = Instant::now();
    let status = ssh.wait(Duration::from_secs(10));
    let took = killed.elapsed();
    assert!(
        status.is_some(),
        "the killed session's ssh still runs: {}",
        ssh.describe()
    );
    assert!(
        took < Duration::from_secs(1),
        "the session should end within a second of the kill, took {took:?}"
    );
    let seen = format!("{}{}", ssh.stdout(), ssh.stderr());
    assert!(
        seen.contains("session terminated by admin: maintenance window"),
        "the user sees why: {}",
        ssh.describe()
    );
    assert_ne!(status.and_then(|s| s.code()), Some(0));

    let live = gw.admin.ok(&["session", "list", "--live"]).stdout;
    assert!(!live.contains(&id), "no longer live:\n{live}");
    gw.admin
        .fail(&["session", "kill", &id])
        .assert_stderr_contains("not running");
    let audit = gw.audit();
    let kills: Vec<&Value> = audit
        .iter()
        .filter(|e| e["action"] == "session.kill" && e["object"] == format!("session:{id}"))
        .collect();
    assert_eq!(
        kills.len(),
        1,
        "one kill, one entry (the refused second kill killed nothing): {kills:?}"
    );
    assert_eq!(kills[0]["actor"], "admin");
    assert_eq!(
        kills[0]["details"]["reason"],
        "terminated by admin: maintenance window"
    );
    let end = find_entry(&audit, "session.end", |e| {
        e["object"] == format!("session:{id}")
    });
    assert_eq!(
        end["details"]["reason"],
        "terminated by admin: maintenance window"
    );
    let (_, cast) = gw.export(&id);
    assert!(cast.text("o").contains("ready-42"), "{:?}", cast.events);
    assert!(
        cast.markers()
            .contains(&"end: terminated by admin: maintenance window".to_owned()),
        "{:?}",
        cast.markers()
    );
}

/// kill -9 of the server while a shell prints a line every 100 ms: after a restart the recording
/// holds everything up to about a second before the kill, and the session is marked ended.
#[test]
fn server_crash_keeps_the_recording() {
    let Some(mut gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    let mut ssh = Running::spawn(gw.ssh("alice:root@db01", &["-tt"], None), "ssh -tt (shell)");
    ssh.send("for i in $(seq 1 100); do echo line-$i; sleep 0.1; done; exit\n");
    ssh.wait_for_stdout("line-25\r\n", Duration::from_secs(60));
    let id = gw.newest_session("shell")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let host_key = gw.server.ssh_host_key.clone();
    gw.server.kill9();
    let status = ssh.wait(Duration::from_secs(30));
    assert!(
        status.is_some(),
        "ssh notices the gateway is gone: {}",
        ssh.describe()
    );
    // The highest line the user saw (the typed loop reads `line-$i`: no digits).
    let last_seen = line_numbers(&ssh.stdout(), "line-")
        .into_iter()
        .max()
        .expect("lines");
    assert!(
        (25..100).contains(&last_seen),
        "the kill came mid-loop: {}",
        ssh.describe()
    );

    let server = gw.inst.start();
    assert_eq!(
        server.ssh_host_key, host_key,
        "the gateway's host key is kept in the data dir"
    );
    // The admin's saved token, sent to the restarted server (new port).
    let admin = gw.admin.at_with_token(&server);
    let listed = json_items(&admin.ok(&["--output", "json", "session", "list"]).json());
    let session = listed
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap_or_else(|| panic!("session {id} is listed after the restart: {listed:?}"));
    assert_eq!(session["live"], false, "{session}");
    assert_eq!(session["end_reason"], "gateway restarted", "{session}");
    assert!(session["ended_at"].is_string(), "{session}");

    let file = gw.inst.path().join("crashed.cast");
    admin.ok(&[
        "recording",
        "export",
        &id,
        "-o",
        file.to_str().expect("path"),
    ]);
    let cast = Cast::parse(&std::fs::read_to_string(&file).expect("export"));
    asciinema_cat(&file);
    let recorded = line_numbers(&cast.text("o"), "line-");
    // Flushed at least every second (10 lines); 15 leaves room for a busy machine.
    let must_have = last_seen.saturating_sub(15).max(1);
    for n in 1..=must_have {
        assert!(
            recorded.contains(&n),
            "line-{n} is missing from the recording (the user saw up to line-{last_seen}; \
             recorded: {recorded:?})"
        );
    }
    eprintln!(
        "the user saw line-{last_seen}; the recording holds up to line-{:?}",
        recorded.iter().max()
    );
    // Not tampering: every frame up to the kill is intact, and a torn last one is the kill's.
    let verified = admin.run(&["--output", "json", "recording", "verify", &id], None);
    let report: Value = serde_json::from_str(&verified.stdout)
        .unwrap_or_else(|e| panic!("recording verify prints JSON ({e}): {verified:?}"));
    assert_eq!(verified.code, Some(0), "{report}");
    assert_eq!(report["status"], "ended_by_restart", "{report}");
    assert!(
        report["message"]
            .as_str()
            .is_some_and(|m| m.contains("ended by a restart")),
        "{report}"
    );

    let audit = parse_export(&admin.ok(&["audit", "export", "--format", "jsonl"]).stdout);
    let end = find_entry(&audit, "session.end", |e| {
        e["details"]["reason"] == "gateway restarted"
    });
    assert!(
        end["details"]["sessions"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|i| i == id.as_str())),
        "{end}"
    );
    admin
        .ok(&["audit", "verify"])
        .assert_stdout_contains("audit chain intact");
}

/// The recording storage fills up mid-session: the session ends with a message instead of running
/// unrecorded, and the end is audited with the reason.
#[test]
fn full_recording_storage_ends_the_session() {
    let Some(gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    let recordings = gw.inst.data_dir.join("recordings");
    let _tmpfs = match Tmpfs::mount(&recordings, "size=2m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs over {}: {why}",
                recordings.display()
            );
            return;
        }
    };
    // Incompressible output (~8 KB/s), so the recording needs new blocks every second.
    let mut ssh = Running::spawn(
        gw.ssh(
            "alice:root@db01",
            &[],
            Some("for i in $(seq 1 600); do head -c 600 /dev/urandom | base64 -w0; echo \" chunk-$i\"; sleep 0.1; done"),
        ),
        "ssh (output loop)",
    );
    // 1.5 s in: at least one flush has written output to the recording.
    ssh.wait_for_stdout(" chunk-15\n", Duration::from_secs(60));
    let id = gw.newest_session("exec")["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // Fill the storage.
    let filler = recordings.join("filler");
    {
        let mut f = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 64 * 1024];
        let err = loop {
            if let Err(e) = f.write_all(&block) {
                break e;
            }
        };
        assert_eq!(err.raw_os_error(), Some(28), "ENOSPC: {err}");
    }
    let full = Instant::now();
    let status = ssh.wait(Duration::from_secs(20));
    assert!(
        status.is_some(),
        "the session keeps running with nowhere to record it: {}",
        ssh.describe()
    );
    eprintln!(
        "the session ended {:?} after the storage filled",
        full.elapsed()
    );
    assert!(
        ssh.stderr().contains("recording can no longer be written"),
        "the user is told why: {}",
        ssh.describe()
    );
    assert_ne!(status.and_then(|s| s.code()), Some(0), "{}", ssh.describe());
    let seen = line_numbers(&ssh.stdout(), " chunk-");
    assert!(
        seen.iter().max().is_some_and(|&n| n < 600),
        "ended before the loop did: {}",
        ssh.describe()
    );

    let audit = gw.audit();
    let end = find_entry(&audit, "session.end", |e| {
        e["object"] == format!("session:{id}")
    });
    assert!(
        end["details"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("recording failed")),
        "{end}"
    );
    let session = gw.newest_session("exec");
    assert_eq!(session["id"], id.as_str());
    assert_eq!(session["live"], false);

    // With room again, what was recorded before the failure is still readable.
    std::fs::remove_file(&filler).expect("remove the filler");
    let (_, cast) = gw.export(&id);
    assert!(
        line_numbers(&cast.text("o"), " chunk-").contains(&1),
        "{:?}",
        cast.markers()
    );
}

/// `ssh -L` opens a direct-tcpip channel per connection: refused, so nothing can tunnel around
/// the recording to the target's own sshd; `ssh -R` is refused too. Both audited.
#[test]
fn port_forwarding_is_refused() {
    let Some(gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    let before = gw.sshd.log().len();
    let local = free_port();
    let forward = format!("127.0.0.1:{local}:127.0.0.1:{}", gw.sshd.port);
    let mut ssh = Running::spawn(
        gw.ssh(
            "alice:root@db01",
            // INFO: ssh reports a refused channel at that level.
            &["-o", "LogLevel=INFO", "-N", "-L", &forward],
            None,
        ),
        "ssh -N -L",
    );
    let mut conn = None;
    wait_until("ssh -L listens", Duration::from_secs(30), || {
        conn = std::net::TcpStream::connect(("127.0.0.1", local)).ok();
        conn.is_some()
    });
    let mut conn = conn.expect("connected");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("SSH-"),
        "the tunnel reached sshd: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(got.is_empty(), "{got:?}");
    std::thread::sleep(Duration::from_millis(300));
    drop(ssh.stdin.take());
    let _ = ssh.child.kill();
    ssh.wait(Duration::from_secs(5));
    assert!(
        ssh.stderr().contains("administratively prohibited"),
        "ssh says the channel was refused: {}",
        ssh.describe()
    );

    let remote_port = free_port();
    let reverse = format!("127.0.0.1:{remote_port}:127.0.0.1:{}", gw.sshd.port);
    let out = gw.run_ssh(
        "alice:root@db01",
        &["-N", "-o", "ExitOnForwardFailure=yes", "-R", &reverse],
        None,
        None,
    );
    assert_eq!(out.code, Some(255), "{out:?}");
    assert!(
        out.stderr.contains("remote port forwarding failed"),
        "{out:?}"
    );

    assert_nothing_reached_sshd(&gw.sshd, before, "port forwarding");
    let audit = gw.audit();
    let refused = find_entry(&audit, "session.refused", |e| {
        e["object"] == format!("port forwarding to 127.0.0.1:{}", gw.sshd.port)
    });
    assert_eq!(refused["actor"], "alice");
    assert_eq!(refused["outcome"], "denied");
    find_entry(&audit, "session.refused", |e| {
        e["object"]
            .as_str()
            .is_some_and(|o| o.starts_with("remote forwarding"))
    });

    // The check above would have seen sshd: a direct connection gets its banner.
    let mut direct = std::net::TcpStream::connect(("127.0.0.1", gw.sshd.port)).expect("sshd");
    direct
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut banner = [0u8; 8];
    direct.read_exact(&mut banner).expect("banner");
    assert_eq!(&banner, b"SSH-2.0-");
}

/// Login names that are not `user:account@target`, an unknown target, account or user: a clear
/// refusal and a non-zero exit, and nothing reaches sshd.
#[test]
fn bad_usernames_are_refused() {
    let Some(mut gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    let before = gw.sshd.log().len();
    let long_300 = format!("alice:root@{}", "d".repeat(300 - "alice:root@".len()));
    let long_1000 = format!("alice:{}@db01", "r".repeat(1000));
    for name in [
        "alice",
        "alice:",
        ":root@db01",
        "alice:root",
        long_300.as_str(),
        long_1000.as_str(),
    ] {
        let out = gw.run_ssh(name, &[], Some("echo should-not-run"), None);
        assert_eq!(out.code, Some(255), "{name:?}: {out:?}");
        assert!(
            out.stderr.starts_with("cofre: ")
                && out.stderr.contains("log in as COFRE_USER+ACCOUNT+TARGET")
                && out
                    .stderr
                    .contains(&format!("ssh -p {} alice+root+db01@", gw.server.ssh_port)),
            "the hint shows the form and this gateway's port: {name:?}: {out:?}"
        );
        assert!(out.stdout.is_empty(), "{name:?}: {out:?}");
    }
    let out = gw.run_ssh("alice:root@nope", &[], Some("echo should-not-run"), None);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.starts_with("cofre: ") && out.stderr.contains("nope"),
        "{out:?}"
    );
    // A target that exists but that no policy grants answers the same: names cannot be probed.
    gw.admin.ok(&[
        "target",
        "add",
        "db02",
        "--host",
        "127.0.0.1",
        "--port",
        "22",
    ]);
    let hidden = gw.run_ssh("alice+root+db02", &[], Some("echo should-not-run"), None);
    assert_eq!(hidden.code, out.code, "{hidden:?} {out:?}");
    assert_eq!(
        hidden.stderr.replace("db02", "TARGET"),
        out.stderr.replace("nope", "TARGET"),
        "an unknown target and one without a grant get the same answer"
    );
    let out = gw.run_ssh(
        "alice:postgres@db01",
        &[],
        Some("echo should-not-run"),
        None,
    );
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.starts_with("cofre: ") && out.stderr.contains("postgres"),
        "{out:?}"
    );
    // An unknown Cofre user has no key registered: plain SSH refusal.
    let out = gw.run_ssh("mallory:root@db01", &[], Some("echo should-not-run"), None);
    assert_eq!(out.code, Some(255), "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    assert_nothing_reached_sshd(&gw.sshd, before, "bad login names");

    let audit = gw.audit();
    for (object, why) in [
        ("credential:nope/root", "unknown target"),
        ("credential:db01/postgres", "no credential for this account"),
    ] {
        let e = find_entry(&audit, "session.refused", |e| e["object"] == object);
        assert_eq!(e["actor"], "alice");
        assert_eq!(e["details"]["why"], why);
    }
    // Failed attempts before authentication are not audited one by one: one entry per source
    // and minute with a count, the kinds and a bounded sample of the names (long names cut),
    // written at the latest when the server stops.
    assert!(
        !audit
            .iter()
            .any(|e| e["action"] == "session.refused"
                && e["details"]["why"] == "malformed login name"),
        "no entry per malformed name"
    );
    gw.server.stop();
    let rows: Vec<Value> = audit_rows(&gw.inst.db_url_for_tests())
        .into_iter()
        .filter(|r| r.action == "gateway.auth_failed")
        .map(|r| serde_json::from_str(&r.details).expect("details"))
        .collect();
    assert!(
        (1..=2).contains(&rows.len()),
        "one entry per source and minute: {rows:#?}"
    );
    let sum = |kind: &str| -> u64 {
        rows.iter()
            .map(|d| d["kinds"][kind].as_u64().unwrap_or(0))
            .sum()
    };
    assert!(
        sum("malformed") >= 6,
        "every malformed name counted: {rows:#?}"
    );
    assert!(sum("publickey") >= 1, "mallory's key counted: {rows:#?}");
    let names: Vec<String> = rows
        .iter()
        .flat_map(|d| d["names"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    for name in ["alice", "alice:", ":root@db01", "alice:root", "mallory"] {
        assert!(
            names.iter().any(|n| n == name),
            "{name:?} in the sample: {names:?}"
        );
    }
    assert!(names.iter().all(|n| n.chars().count() <= 64), "{names:?}");
    assert!(rows.iter().all(|d| d["source"] == "127.0.0.1"), "{rows:#?}");
}

/// Writes an SSH_ASKPASS script that answers each keyboard-interactive prompt from `answers`
/// (prompt substring, answer) and logs the prompts it was shown.
pub(crate) fn askpass(dir: &Path, answers: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("askpass.sh");
    let log = dir.join("askpass.log");
    let mut text = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\ncase \"$1\" in\n",
        log.display()
    );
    for (prompt, answer) in answers {
        text.push_str(&format!("  *'{prompt}'*) printf '%s\\n' '{answer}' ;;\n"));
    }
    text.push_str("esac\n");
    std::fs::write(&script, text).expect("askpass script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    script
}

/// The prompts askpass was shown, one a line, without the `(user@host) ` OpenSSH puts first.
pub(crate) fn prompts_shown(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("askpass.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| format!("{}\n", l.rsplit_once(") ").map_or(l, |(_, p)| p)))
        .collect()
}

/// ssh asks `script` instead of a terminal (ssh's stdin is no terminal here).
pub(crate) fn with_askpass(cmd: &mut Command, script: &Path) {
    cmd.env("SSH_ASKPASS", script)
        .env("SSH_ASKPASS_REQUIRE", "force");
}

/// ssh options for a key login followed by keyboard-interactive prompts answered through askpass.
pub(crate) const KEY_THEN_PROMPTS: [&str; 6] = [
    "-o",
    "PreferredAuthentications=publickey,keyboard-interactive",
    "-o",
    "BatchMode=no",
    "-o",
    "KbdInteractiveAuthentication=yes",
];

/// A `justify` policy: the gateway asks for a reason in a keyboard-interactive prompt (answered
/// here through SSH_ASKPASS) and audits it with the session start.
#[test]
fn justify_asks_for_a_reason() {
    let Some(gw) = setup(Backend::Sqlite, Some("justify")) else {
        return;
    };
    let script = askpass(&gw.keys, &[("Reason", "ticket CHG-1234")]);
    let mut cmd = gw.ssh("alice:root@db01", &KEY_THEN_PROMPTS, Some("echo justified"));
    with_askpass(&mut cmd, &script);
    let out = run_command(cmd, None, "ssh with a reason");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "justified\n");
    let prompts = std::fs::read_to_string(gw.keys.join("askpass.log")).unwrap_or_default();
    assert!(prompts.contains("Reason: "), "prompts: {prompts:?}");
    let audit = gw.audit();
    let start = find_entry(&audit, "session.start", |e| e["actor"] == "alice");
    assert_eq!(start["details"]["reason"], "ticket CHG-1234");

    // A reason too short to count: asked three times, then refused (a script that cannot answer
    // is not kept waiting), audited; nothing reaches sshd.
    let before = gw.sshd.log().len();
    let _ = std::fs::remove_file(gw.keys.join("askpass.log"));
    let script = askpass(&gw.keys, &[("Reason", "")]);
    let mut cmd = gw.ssh(
        "alice:root@db01",
        &KEY_THEN_PROMPTS,
        Some("echo should-not-run"),
    );
    with_askpass(&mut cmd, &script);
    let out = run_command(cmd, None, "ssh with an empty reason");
    assert_eq!(out.code, Some(255), "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    let prompts = std::fs::read_to_string(gw.keys.join("askpass.log")).unwrap_or_default();
    assert_eq!(
        prompts.matches("Reason: ").count(),
        3,
        "asked three times: {prompts:?}"
    );
    find_entry(&gw.audit(), "session.refused", |e| {
        e["actor"] == "alice" && e["details"]["why"] == "no valid reason given"
    });
    assert_nothing_reached_sshd(&gw.sshd, before, "no valid reason");

    // Without a way to answer (BatchMode), no session.
    let before = gw.sshd.log().len();
    let out = gw.run_ssh("alice:root@db01", &[], Some("echo should-not-run"), None);
    assert_eq!(out.code, Some(255), "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    assert_nothing_reached_sshd(&gw.sshd, before, "no reason given");
}

/// Password + TOTP through keyboard-interactive (answered through SSH_ASKPASS), no key.
#[test]
fn password_and_totp_login() {
    let Some(gw) = setup(Backend::Sqlite, Some("allow")) else {
        return;
    };
    let enroll = gw.alice.ok(&["totp", "enroll"]);
    let seed = base32_decode(&enroll.value_after("secret:"));
    let confirm_step = current_step();
    gw.alice
        .ok(&["totp", "confirm", &totp_at_step(&seed, confirm_step)]);
    let no_key = [
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PreferredAuthentications=keyboard-interactive",
        "-o",
        "BatchMode=no",
        "-o",
        "KbdInteractiveAuthentication=yes",
    ];

    // A wrong password: refused. The prompts shown for alice (TOTP), admin (no TOTP) and a name
    // that does not exist are the same, in the same order: they tell nobody apart.
    let mut seen = Vec::new();
    for user in ["alice", "admin", "nobody"] {
        let _ = std::fs::remove_file(gw.keys.join("askpass.log"));
        let script = askpass(
            &gw.keys,
            &[("Password", "not-the-password"), ("TOTP", "000000")],
        );
        let mut cmd = gw.ssh(
            &format!("{user}:root@db01"),
            &no_key,
            Some("echo should-not-run"),
        );
        with_askpass(&mut cmd, &script);
        let out = run_command(cmd, None, "ssh with a wrong password");
        assert_eq!(out.code, Some(255), "{out:?}");
        assert!(out.stderr.contains("Permission denied"), "{out:?}");
        seen.push(prompts_shown(&gw.keys));
    }
    assert!(
        seen[0].contains("Password: ") && !seen[0].contains("TOTP"),
        "{seen:?}"
    );
    assert_eq!(
        seen[0], seen[1],
        "alice (TOTP) and admin (no TOTP) see the same prompts"
    );
    assert_eq!(seen[0], seen[2], "an unknown user sees the same prompts");
    let _ = std::fs::remove_file(gw.keys.join("askpass.log"));

    // The next step's code: in the accepted window and never used.
    let code = totp_at_step(&seed, current_step().max(confirm_step) + 1);
    let script = askpass(
        &gw.keys,
        &[("Password", &gw.alice_password), ("TOTP", &code)],
    );
    let mut cmd = gw.ssh("alice:root@db01", &no_key, Some("echo with-password"));
    with_askpass(&mut cmd, &script);
    let out = run_command(cmd, None, "ssh with password and TOTP");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "with-password\n");
    let prompts = prompts_shown(&gw.keys);
    assert_eq!(
        prompts, "Password: \nTOTP code: \n",
        "the code is asked only after the right password"
    );
    let audit = gw.audit();
    let login = find_entry(&audit, "gateway.login", |e| {
        e["details"]["method"] == "keyboard-interactive"
    });
    assert_eq!(login["actor"], "alice");
    assert_eq!(login["details"]["totp"], true);
    assert!(
        !audit
            .iter()
            .any(|e| e.to_string().contains(&gw.alice_password)),
        "the password is never in the audit trail"
    );
}

/// An `approve` policy on db01 for ops with two levels (leads, then security), and one approver
/// in each.
fn two_level_policy(gw: &Gw) -> (Cli, Cli) {
    for g in ["leads", "security"] {
        gw.admin.ok(&["group", "add", g]);
    }
    let (lea, _, _) = add_user_cli(
        &gw.inst,
        &gw.server,
        &gw.admin,
        "lea",
        "approver",
        &["leads"],
    );
    let (sam, _, _) = add_user_cli(
        &gw.inst,
        &gw.server,
        &gw.admin,
        "sam",
        "approver",
        &["security"],
    );
    gw.admin.ok(&[
        "policy",
        "add",
        "prod-root",
        "--group",
        "ops",
        "--targets",
        "tag:prod",
        "--allow",
        "session,reveal",
        "--outcome",
        "approve",
        "--levels",
        "leads:1,security:1",
        "--max-duration",
        "4h",
    ]);
    (lea, sam)
}

/// alice asks for root@db01 for `duration`; returns the request id.
fn request_access(gw: &Gw, duration: &str) -> String {
    let created = gw.alice.ok(&[
        "--output",
        "json",
        "request",
        "create",
        "--target",
        "db01",
        "--account",
        "root",
        "--reason",
        "CHG-1234 patching",
        "--duration",
        duration,
    ]);
    created.json()["id"].as_str().expect("id").to_owned()
}

/// A session opened under a grant ends when the grant's window does, with a message.
#[test]
fn a_session_ends_with_its_grant() {
    let Some(gw) = setup(Backend::Sqlite, None) else {
        return;
    };
    let (lea, sam) = two_level_policy(&gw);
    let id = request_access(&gw, "6s");
    lea.ok(&["request", "approve", &id]);
    sam.ok(&["request", "approve", &id]);
    let shown = gw
        .alice
        .ok(&["--output", "json", "request", "show", &id])
        .json();
    let ends = time::OffsetDateTime::parse(
        shown["ends_at"].as_str().expect("ends_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    let mut ssh = Running::spawn(gw.ssh("alice:root@db01", &["-tt"], None), "ssh -tt (shell)");
    ssh.send("echo ready-$((40+2))\n");
    ssh.wait_for_stdout("ready-42", Duration::from_secs(30));
    let status = ssh.wait(Duration::from_secs(40));
    let ended = time::OffsetDateTime::now_utc();
    assert!(
        status.is_some(),
        "the session outlived its grant: {}",
        ssh.describe()
    );
    assert!(
        ended >= ends,
        "the session ended at {ended}, before its grant did ({ends}): {}",
        ssh.describe()
    );
    assert!(
        format!("{}{}", ssh.stdout(), ssh.stderr()).contains(&format!("grant {id} has ended")),
        "the user sees why: {}",
        ssh.describe()
    );
    let out = gw.run_ssh("alice:root@db01", &[], Some("echo after"), None);
    assert_ne!(out.code, Some(0), "no new session after the grant: {out:?}");
}

/// Four eyes at the gateway: under an `approve` policy the session is refused until two people
/// (one per level) have approved alice's request; then it opens, and revoking the grant closes it
/// within a second, with a message.
#[test]
fn an_approved_request_opens_the_gateway_and_revoking_closes_it() {
    let Some(gw) = setup(Backend::Sqlite, None) else {
        return;
    };
    let (lea, sam) = two_level_policy(&gw);
    let before = gw.sshd.log().len();
    let out = gw.run_ssh("alice:root@db01", &[], Some("echo should-not-run"), None);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("requires an approved access request"),
        "{out:?}"
    );
    assert_nothing_reached_sshd(&gw.sshd, before, "refused until approved");

    let id = request_access(&gw, "2h");
    lea.ok(&["request", "approve", &id, "--comment", "ok"])
        .assert_stdout_contains("now waits on level 2");
    let out = gw.run_ssh("alice:root@db01", &[], Some("echo still-not"), None);
    assert_ne!(out.code, Some(0), "one level is not enough: {out:?}");
    sam.ok(&["request", "approve", &id])
        .assert_stdout_contains("approved");
    let shown = gw.alice.ok(&["request", "show", &id]).stdout;
    for needle in [
        "state:     approved (grant in force)",
        "by lea: ok",
        "by sam",
    ] {
        assert!(shown.contains(needle), "{needle:?} in:\n{shown}");
    }

    let mut ssh = Running::spawn(gw.ssh("alice:root@db01", &["-tt"], None), "ssh -tt (shell)");
    ssh.send("echo ready-$((40+2))\n");
    ssh.wait_for_stdout("ready-42", Duration::from_secs(30));
    gw.admin
        .ok(&["grant", "revoke", &id, "--reason", "change done"])
        .assert_stdout_contains("revoked");
    let revoked = Instant::now();
    let status = ssh.wait(Duration::from_secs(10));
    let took = revoked.elapsed();
    assert!(
        status.is_some(),
        "the session outlived its grant: {}",
        ssh.describe()
    );
    assert!(
        took < Duration::from_secs(1),
        "the session should end within a second of the revocation, took {took:?}"
    );
    assert!(
        format!("{}{}", ssh.stdout(), ssh.stderr()).contains(&format!("grant {id} was revoked")),
        "the user sees why: {}",
        ssh.describe()
    );
    let out = gw.run_ssh("alice:root@db01", &[], Some("echo after"), None);
    assert_ne!(
        out.code,
        Some(0),
        "no new session after the revocation: {out:?}"
    );
    let audit = gw.audit();
    let start = find_entry(&audit, "session.start", |e| e["actor"] == "alice");
    assert_eq!(start["details"]["request"], id.as_str());
    let revoke = find_entry(&audit, "grant.revoke", |e| e["actor"] == "admin");
    assert_eq!(revoke["details"]["reason"], "change done");
    assert_eq!(
        audit
            .iter()
            .filter(|e| e["action"] == "request.decide" && e["outcome"] == "ok")
            .count(),
        2
    );
}
