//! SIEM forwarding against a real rsyslog (the Debian package, started here with its own config
//! on ports the OS picked, writing each input's messages to a file): TCP with octet counting,
//! TLS (rsyslog's gtls driver, a CA made here with openssl) and UDP; an outage of the SIEM and a
//! restart of the server in the middle lose nothing, and arrive in order.

use crate::harness::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// rsyslog with one TCP, one TLS and one UDP input, each written raw to its own file.
struct Rsyslog {
    dir: PathBuf,
    child: Option<Child>,
    tcp_port: u16,
    tls_port: u16,
    udp_port: u16,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a certificate for `localhost` and 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) {
    for args in [
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=cofre test ca",
        ][..],
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=localhost",
        ][..],
    ] {
        openssl(dir, args);
    }
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Rsyslog {
    fn start(dir: &Path) -> Rsyslog {
        assert!(
            Path::new(RSYSLOGD).exists(),
            "{RSYSLOGD} is not installed: apt-get install rsyslog rsyslog-gnutls (scripts/test does)"
        );
        std::fs::create_dir_all(dir.join("work")).unwrap();
        make_certificates(dir);
        // UDP has no port file; a port that was free a moment ago.
        let udp_port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .unwrap();
        let mut r = Rsyslog {
            dir: dir.to_owned(),
            child: None,
            tcp_port: 0,
            tls_port: 0,
            udp_port,
        };
        r.launch();
        r
    }

    /// Starts rsyslogd on the ports known (0 the first time: the OS picks, rsyslog writes them
    /// to its port files) and waits until it listens.
    fn launch(&mut self) {
        let d = self.dir.display();
        let conf = format!(
            r#"global(workDirectory="{d}/work" maxMessageSize="64k"
  defaultNetstreamDriverCAFile="{d}/ca.pem"
  defaultNetstreamDriverCertFile="{d}/cert.pem"
  defaultNetstreamDriverKeyFile="{d}/key.pem")
module(load="imtcp")
module(load="imudp")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="tcp") {{ action(type="omfile" file="{d}/tcp.log" template="raw") }}
ruleset(name="tls") {{ action(type="omfile" file="{d}/tls.log" template="raw") }}
ruleset(name="udp") {{ action(type="omfile" file="{d}/udp.log" template="raw") }}
input(type="imtcp" address="127.0.0.1" port="{tcp}" listenPortFileName="{d}/tcp.port" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{tls}" listenPortFileName="{d}/tls.port" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="udp")
"#,
            tcp = self.tcp_port,
            tls = self.tls_port,
            udp = self.udp_port,
        );
        std::fs::write(self.dir.join("rsyslog.conf"), conf).unwrap();
        for f in ["tcp.port", "tls.port"] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("rsyslogd.stderr")).unwrap())
            .spawn()
            .expect("spawn rsyslogd");
        self.child = Some(child);
        // A known port is used again (the destinations name it); the OS picks only the first.
        let read_port = |f: &str, known: u16| -> Option<u16> {
            if known != 0 {
                return Some(known);
            }
            std::fs::read_to_string(self.dir.join(f))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .filter(|p| *p != 0)
        };
        let (tcp, tls) = wait_for("rsyslog's port files", Duration::from_secs(30), || {
            Some((
                read_port("tcp.port", self.tcp_port)?,
                read_port("tls.port", self.tls_port)?,
            ))
        });
        self.tcp_port = tcp;
        self.tls_port = tls;
        wait_for("rsyslog to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", tcp))
                .and_then(|_| std::net::TcpStream::connect(("127.0.0.1", tls)))
                .ok()
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    fn lines(&self, input: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(format!("{input}.log")))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// (seq, hash) of each received line, in arrival order: RFC 5424's structured data or CEF's
/// `cn1`/`cs1`.
fn received(lines: &[String]) -> Vec<(i64, String)> {
    lines
        .iter()
        .map(|l| {
            if let Some(cef) = l.split_once("CEF:0|").map(|p| p.1) {
                let field = |k: &str| {
                    cef.split(' ')
                        .find_map(|w| w.strip_prefix(&format!("{k}=")))
                        .unwrap_or_else(|| panic!("no {k} in {l}"))
                        .to_owned()
                };
                (field("cn1").parse().unwrap(), field("cs1"))
            } else {
                let attr = |k: &str| {
                    let start = l
                        .find(&format!(" {k}=\""))
                        .unwrap_or_else(|| panic!("no {k} in {l}"))
                        + k.len()
                        + 3;
                    l[start..start + l[start..].find('"').unwrap()].to_owned()
                };
                assert!(l.contains("[cofre@32473 "), "{l}");
                (attr("seq").parse().unwrap(), attr("hash"))
            }
        })
        .collect()
}

/// Every entry 1..=head arrived, in order (a resent batch may repeat entries, never skip one),
/// each with the hash the chain holds. Returns how many arrived twice.
fn assert_complete_and_in_order(
    what: &str,
    got: &[(i64, String)],
    chain: &BTreeMap<i64, String>,
    head: i64,
) -> usize {
    let mut max = 0;
    let mut seen = std::collections::BTreeSet::new();
    for (seq, hash) in got {
        assert!(
            *seq <= max + 1,
            "{what}: entry {seq} arrived before {}: a gap",
            max + 1
        );
        max = max.max(*seq);
        assert_eq!(
            chain.get(seq),
            Some(hash),
            "{what}: entry {seq}'s hash differs from the chain's"
        );
        seen.insert(*seq);
    }
    for seq in 1..=head {
        assert!(seen.contains(&seq), "{what}: entry {seq} never arrived");
    }
    got.len() - seen.len()
}

fn chain(api: &Api, token: &str) -> BTreeMap<i64, String> {
    let mut out = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/audit?limit=500&cursor={c}"),
            None => "/api/v1/audit?limit=500".to_owned(),
        };
        let r = api.get(&path, Some(token));
        r.assert_ok();
        for e in r.body["items"].as_array().unwrap() {
            out.insert(
                e["seq"].as_i64().unwrap(),
                e["hash"].as_str().unwrap().to_owned(),
            );
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

fn status(api: &Api, token: &str) -> Value {
    let r = api.get("/api/v1/siem/status", Some(token));
    r.assert_ok();
    r.body.clone()
}

fn destination<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no destination {name} in {status}"))
}

/// Waits until every destination has delivered up to the head, and the files hold it.
fn wait_delivered(api: &Api, token: &str, rs: &Rsyslog, inputs: &[(&str, &str)]) -> i64 {
    wait_for("delivery up to the head", Duration::from_secs(90), || {
        let s = status(api, token);
        let head = s["audit_head_seq"].as_i64().unwrap();
        let all = inputs.iter().all(|(name, input)| {
            destination(&s, name)["last_delivered_seq"].as_i64() == Some(head)
                && received(&rs.lines(input))
                    .iter()
                    .any(|(seq, _)| *seq == head)
        });
        all.then_some(head)
    })
}

fn add_groups(api: &Api, token: &str, prefix: &str, n: usize) {
    for i in 0..n {
        api.post(
            "/api/v1/groups",
            Some(token),
            json!({"name": format!("{prefix}{i}")}),
        )
        .assert_ok();
    }
}

#[test]
fn siem_forwards_every_entry_over_tcp_tls_and_udp() {
    let inst = Instance::new(Backend::Sqlite);
    let rs = Rsyslog::start(&inst.path().join("rsyslog"));
    let server = inst.start();
    let api = server.api();
    let (admin, _) = admin_cli(&inst, &server);
    let token = admin.token();
    let ca = rs.dir.join("ca.pem");

    // Bad input names the field.
    for (args, field) in [
        (
            vec!["siem", "add", "x", "--syslog", "http://127.0.0.1:1"],
            "syslog",
        ),
        (
            vec!["siem", "add", "x", "--syslog", "tcp://127.0.0.1"],
            "syslog",
        ),
        (
            vec![
                "siem",
                "add",
                "x",
                "--syslog",
                "tcp://127.0.0.1:1",
                "--format",
                "json",
            ],
            "format",
        ),
        (
            vec![
                "siem",
                "add",
                "x",
                "--syslog",
                "tcp://127.0.0.1:1",
                "--ca-cert",
                ca.to_str().unwrap(),
            ],
            "ca_cert",
        ),
        (
            vec!["siem", "add", "Bad Name", "--syslog", "tcp://127.0.0.1:1"],
            "name",
        ),
    ] {
        let out = admin.fail(&args);
        assert!(
            out.all().contains(&format!("field {field}")),
            "{args:?}: {}",
            out.all()
        );
    }
    let not_pem = inst.path().join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let out = admin.fail(&[
        "siem",
        "add",
        "x",
        "--syslog",
        "tls://localhost:1",
        "--ca-cert",
        not_pem.to_str().unwrap(),
    ]);
    assert!(out.all().contains("field ca_cert"), "{}", out.all());

    admin.ok(&[
        "siem",
        "add",
        "plain",
        "--syslog",
        &format!("tcp://127.0.0.1:{}", rs.tcp_port),
        "--format",
        "rfc5424",
    ]);
    admin.ok(&[
        "siem",
        "add",
        "secure",
        "--syslog",
        &format!("tls://localhost:{}", rs.tls_port),
        "--format",
        "cef",
        "--ca-cert",
        ca.to_str().unwrap(),
    ]);
    admin.ok(&[
        "siem",
        "add",
        "datagrams",
        "--syslog",
        &format!("udp://127.0.0.1:{}", rs.udp_port),
        "--format",
        "rfc5424",
    ]);
    let dup = admin.fail(&["siem", "add", "plain", "--syslog", "udp://127.0.0.1:9"]);
    assert!(dup.all().contains("conflict"), "{}", dup.all());

    add_groups(&api, &token, "g", 30);
    let inputs = [("plain", "tcp"), ("secure", "tls"), ("datagrams", "udp")];
    let head = wait_delivered(&api, &token, &rs, &inputs);
    let chain = chain(&api, &token);
    for (name, input) in inputs {
        let lines = rs.lines(input);
        let dups = assert_complete_and_in_order(name, &received(&lines), &chain, head);
        assert_eq!(dups, 0, "{name}: nothing was resent on a healthy path");
    }
    // What the SIEM gets: the whole entry (RFC 5424: JSON after the BOM; CEF: its fields).
    let first = &rs.lines("tcp")[0];
    assert!(first.starts_with("<109>1 "), "{first}");
    let entry: Value = serde_json::from_str(first.split_once('\u{feff}').unwrap().1).unwrap();
    assert_eq!(entry["seq"], 1);
    assert_eq!(entry["prev_hash"], "0".repeat(64));
    let cef = rs
        .lines("tls")
        .into_iter()
        .find(|l| l.contains("act=group.create"))
        .unwrap();
    assert!(cef.contains("CEF:0|Cofre|Cofre|"), "{cef}");
    assert!(cef.contains("|group.create|group.create|3|"), "{cef}");
    assert!(cef.contains("suser=admin "), "{cef}");

    // status, list and remove, as a user sees them.
    let out = admin.ok(&["siem", "status"]);
    for name in ["plain", "secure", "datagrams"] {
        assert!(out.all().contains(name), "{}", out.all());
    }
    assert!(
        out.all().contains("lag 0") || out.all().contains("lag 1"),
        "{}",
        out.all()
    );
    let list = admin.ok(&["--output", "json", "siem", "list"]).json();
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert_eq!(list[1]["name"], "plain");
    assert_eq!(list[2]["ca_cert"], true);
    admin.ok(&["siem", "remove", "datagrams"]);
    let missing = admin.fail(&["siem", "remove", "datagrams"]);
    assert!(missing.all().contains("not_found"), "{}", missing.all());
    let metrics = api.get("/metrics", None).text;
    assert!(
        metrics.contains("cofre_siem_lag_entries{destination=\"plain\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("cofre_siem_messages_total{destination=\"secure\"}"));
    // Adding and removing are audited (and forwarded like everything else).
    let actions: Vec<String> = chain_actions(&api, &token);
    assert_eq!(actions.iter().filter(|a| *a == "siem.add").count(), 3);
    assert_eq!(actions.iter().filter(|a| *a == "siem.remove").count(), 1);
    // An auditor reads the status; a user may not.
    let (auditor, _, _) = add_user_cli(&inst, &server, &admin, "aud", "auditor", &[]);
    auditor.ok(&["siem", "status"]);
    auditor.fail(&["siem", "remove", "plain"]);
    let (user, _, _) = add_user_cli(&inst, &server, &admin, "usr", "user", &[]);
    assert!(user.fail(&["siem", "list"]).all().contains("may not"));
}

fn chain_actions(api: &Api, token: &str) -> Vec<String> {
    let r = api.get("/api/v1/audit?limit=500", Some(token));
    r.assert_ok();
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

/// The SIEM stops; 500 audited changes, with a server restart in the middle; the SIEM starts
/// again: every entry arrives, in order, over TCP and TLS.
fn siem_outage_and_restart_lose_nothing(backend: Backend) {
    let inst = Instance::new(backend);
    let mut rs = Rsyslog::start(&inst.path().join("rsyslog"));
    let mut server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    let token = admin.token();
    let ca = rs.dir.join("ca.pem");
    admin.ok(&[
        "siem",
        "add",
        "plain",
        "--syslog",
        &format!("tcp://127.0.0.1:{}", rs.tcp_port),
    ]);
    admin.ok(&[
        "siem",
        "add",
        "secure",
        "--syslog",
        &format!("tls://localhost:{}", rs.tls_port),
        "--format",
        "cef",
        "--ca-cert",
        ca.to_str().unwrap(),
    ]);
    let inputs = [("plain", "tcp"), ("secure", "tls")];
    wait_delivered(&server.api(), &token, &rs, &inputs);

    rs.stop();
    add_groups(&server.api(), &token, "before", 250);
    // The outage shows in the status: an error, and a lag.
    wait_for("the outage in siem status", Duration::from_secs(60), || {
        let s = status(&server.api(), &token);
        let d = destination(&s, "plain");
        (d["last_error"].is_string()
            && d["lag"].as_i64() > Some(0)
            && d["failing_since"].is_string())
        .then_some(())
    });
    let out = admin.at_with_token(&server).ok(&["siem", "status"]);
    assert!(out.all().contains("FAILING since"), "{}", out.all());

    server.stop();
    server = inst.start();
    let api = server.api();
    add_groups(&api, &token, "after", 250);

    rs.launch();
    let head = wait_delivered(&api, &token, &rs, &inputs);
    let chain = chain(&api, &token);
    assert!(head > 500, "{head}");
    for (name, input) in inputs {
        let dups = assert_complete_and_in_order(name, &received(&rs.lines(input)), &chain, head);
        eprintln!("{name}: {dups} entries arrived twice");
    }
    let s = status(&api, &token);
    assert!(destination(&s, "plain")["failing_since"].is_null(), "{s}");
}

#[test]
fn siem_outage_and_restart_lose_nothing_sqlite() {
    siem_outage_and_restart_lose_nothing(Backend::Sqlite);
}

#[test]
fn siem_outage_and_restart_lose_nothing_postgres() {
    siem_outage_and_restart_lose_nothing(Backend::Postgres);
}
