//! Network policy against real networks: test hosts are network namespaces (`ip netns`), each
//! joined to this host by a veth pair on a /24 of its own (`10.77.S.2` in the namespace,
//! `10.77.S.1` here), running the real curl, OpenSSH and the CLI inside them; the server listens
//! on every address. A real HAProxy (Debian's package) relays with PROXY protocol v2 in front of
//! the API (TCP mode) and the gateway. Every namespace is removed when its guard drops, test
//! failure included. These tests need root (namespaces, sshd); in CI a missing one fails them.

use crate::gateway::{client_options, setup_on, Gw};
use crate::harness::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HAPROXY: &str = "/usr/sbin/haproxy";

/// Whether this machine can run these tests; without root, skipped locally and failed in CI.
fn unavailable() -> bool {
    let why = if !is_root() {
        Some("not running as root: network namespaces need it")
    } else if !PathBuf::from("/usr/sbin/ip").exists() && !PathBuf::from("/usr/bin/ip").exists() {
        Some("iproute2 is not installed (scripts/test installs it)")
    } else {
        None
    };
    match why {
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => panic!("{why}"),
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            true
        }
        None => false,
    }
}

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().expect("run ip")
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test host: a network namespace on 10.77.S.0/24, S taken with a lock file so that tests
/// running at once (each in its own process under nextest) never share a subnet.
struct Host {
    ns: String,
    veth: String,
    subnet: u8,
    lock: PathBuf,
}

impl Host {
    fn new() -> Host {
        for subnet in 1..=250u8 {
            let lock = PathBuf::from(format!("/tmp/cofre-it-netns-10.77.{subnet}.lock"));
            if let Ok(text) = std::fs::read_to_string(&lock) {
                // Left by a process that is gone: take it over.
                let alive = text
                    .trim()
                    .parse::<u32>()
                    .is_ok_and(|pid| PathBuf::from(format!("/proc/{pid}")).exists());
                if alive {
                    continue;
                }
                let _ = std::fs::remove_file(&lock);
            }
            let Ok(mut f) = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
            else {
                continue;
            };
            use std::io::Write;
            let _ = write!(f, "{}", std::process::id());
            let host = Host {
                ns: format!("cofre-it-{subnet}"),
                veth: format!("cofit{subnet}h"),
                subnet,
                lock,
            };
            host.create();
            return host;
        }
        panic!("no free 10.77.S.0/24 for a test host");
    }

    fn create(&self) {
        // Whatever a killed earlier run left under these names.
        let _ = ip(&["netns", "del", &self.ns]);
        let _ = ip(&["link", "del", &self.veth]);
        let inner = format!("cofit{}n", self.subnet);
        ip_ok(&["netns", "add", &self.ns]);
        ip_ok(&[
            "link", "add", &self.veth, "type", "veth", "peer", "name", &inner,
        ]);
        ip_ok(&["link", "set", &inner, "netns", &self.ns]);
        ip_ok(&[
            "addr",
            "add",
            &format!("{}/24", self.gateway()),
            "dev",
            &self.veth,
        ]);
        ip_ok(&["link", "set", &self.veth, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &self.ns, "ip"];
            all.extend_from_slice(args);
            ip_ok(&all);
        };
        inside(&["addr", "add", &format!("{}/24", self.addr()), "dev", &inner]);
        inside(&["link", "set", &inner, "up"]);
        inside(&["link", "set", "lo", "up"]);
    }

    /// The host's own address.
    fn addr(&self) -> String {
        format!("10.77.{}.2", self.subnet)
    }

    /// This machine's address on the host's link (where the server is reached from there).
    fn gateway(&self) -> String {
        format!("10.77.{}.1", self.subnet)
    }

    fn cidr(&self) -> String {
        format!("10.77.{}.0/24", self.subnet)
    }

    /// `program` run inside the host's namespace.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, program]);
        cmd
    }

    /// `curl` from this host: (HTTP status, body). `-k`: the certificate is the server's
    /// self-signed one; what is tested here is who gets an answer.
    fn curl(&self, url: &str, extra: &[&str]) -> (u16, String) {
        let mut cmd = self.command("curl");
        cmd.args(["-sk", "--max-time", "20", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(url);
        let out = run_command(cmd, None, &format!("curl {url} from {}", self.ns));
        let (body, status) = out.stdout.rsplit_once('\n').unwrap_or(("", ""));
        (status.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// What a raw TCP client from this host reads from `addr:port` before the server closes.
    fn read_banner(&self, addr: &str, port: u16) -> String {
        let mut cmd = self.command("timeout");
        cmd.args([
            "10",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{addr}/{port}; cat <&3"),
        ]);
        run_command(cmd, None, "read the gateway's first bytes").stdout
    }

    /// `ssh` from this host through the gateway at `addr:port` as alice, running `remote`.
    fn ssh(&self, gw: &Gw, addr: &str, port: u16, remote: &str) -> Out {
        let home = gw.inst.path().join(format!("ssh-home-{}", self.subnet));
        std::fs::create_dir_all(&home).expect("ssh home");
        let mut cmd = self.command("ssh");
        cmd.env_remove("SSH_AUTH_SOCK")
            .env("HOME", &home)
            .args(["-v"])
            .args(client_options(&gw.keys))
            .args([
                "-p",
                &port.to_string(),
                &format!("alice:root@db01@{addr}"),
                remote,
            ]);
        run_command(
            cmd,
            None,
            &format!("ssh via {addr}:{port} from {}", self.ns),
        )
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // The namespace takes its end of the veth pair with it, and that ends the pair.
        let _ = ip(&["netns", "del", &self.ns]);
        let _ = ip(&["link", "del", &self.veth]);
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// HAProxy (the Debian package) relaying the API (TCP mode, TLS passes through) and the gateway
/// with `send-proxy-v2`, listening on `bind` and connecting from it.
struct Haproxy {
    child: Child,
    api_port: u16,
    ssh_port: u16,
    dir: PathBuf,
}

impl Haproxy {
    fn start(dir: PathBuf, bind: &str, api: u16, ssh: u16) -> Haproxy {
        assert!(
            PathBuf::from(HAPROXY).exists(),
            "{HAPROXY} is not installed: apt-get install haproxy (scripts/test does)"
        );
        std::fs::create_dir_all(&dir).expect("haproxy dir");
        let (api_port, ssh_port) = (free_port(), free_port());
        let config = format!(
            "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
             frontend api\n  bind {bind}:{api_port}\n  default_backend cofre_api\n\
             backend cofre_api\n  source {bind}\n  server cofre {bind}:{api} send-proxy-v2\n\
             frontend gateway\n  bind {bind}:{ssh_port}\n  default_backend cofre_gateway\n\
             backend cofre_gateway\n  source {bind}\n  server cofre {bind}:{ssh} send-proxy-v2\n"
        );
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, config).expect("haproxy config");
        let child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).expect("log"))
            .spawn()
            .expect("start haproxy");
        let hp = Haproxy {
            child,
            api_port,
            ssh_port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [api_port, ssh_port] {
            while std::net::TcpStream::connect((bind, port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "haproxy did not listen on {bind}:{port}: {}",
                    std::fs::read_to_string(hp.dir.join("haproxy.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        hp
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn audit(admin: &Cli) -> Vec<Value> {
    parse_export(&admin.ok(&["audit", "export", "--format", "jsonl"]).stdout)
}

fn entries<'a>(all: &'a [Value], action: &str) -> Vec<&'a Value> {
    all.iter().filter(|e| e["action"] == action).collect()
}

fn refused_from(all: &[Value], listener: &str, source: &str) -> usize {
    entries(all, "network.refused")
        .iter()
        .filter(|e| e["details"]["listener"] == listener && e["details"]["source"] == source)
        .count()
}

fn metric(server: &Server, name: &str) -> f64 {
    let text = server.api().get("/metrics", None).text;
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An allowed host gets in on the API and the gateway; a host of another network is refused on
/// both (403 `network_refused`; the SSH message before authentication), audited once a minute
/// per source however often it tries, and counted every time.
#[test]
fn allowed_and_refused_hosts_on_the_api_and_the_gateway() {
    if unavailable() {
        return;
    }
    let Some(gw) = setup_on(Backend::Sqlite, Some("allow"), "0.0.0.0") else {
        return;
    };
    let (office, elsewhere) = (Host::new(), Host::new());
    let (api, ssh) = (gw.server.port, gw.server.ssh_port);
    // Before any policy, everyone gets in.
    let (status, _) = office.curl(&format!("https://{}:{api}/healthz", office.gateway()), &[]);
    assert_eq!(status, 200);

    let allow = format!("{},127.0.0.0/8", office.cidr());
    for listener in ["api", "gateway"] {
        gw.admin
            .ok(&["network", "set", "--listener", listener, "--allow", &allow])
            .assert_stdout_contains(&format!("{listener}: allow {allow}"));
    }
    let shown = gw.admin.ok(&["network", "show"]);
    shown.assert_stdout_contains("your address: 127.0.0.1");

    // The office host: the API answers it (here: who it is not yet), the gateway runs its command.
    let (status, body) = office.curl(
        &format!("https://{}:{api}/api/v1/auth/whoami", office.gateway()),
        &[],
    );
    assert_eq!(status, 401, "{body}");
    let out = office.ssh(&gw, &office.gateway(), ssh, "echo in-from-the-office");
    out.assert_ok();
    assert!(out.stdout.contains("in-from-the-office"), "{}", out.stdout);

    // The other network: refused on both, three times each.
    for _ in 0..3 {
        let (status, body) = elsewhere.curl(
            &format!("https://{}:{api}/api/v1/auth/whoami", elsewhere.gateway()),
            &[],
        );
        assert_eq!(status, 403, "{body}");
        let v: Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(v["code"], "network_refused", "{body}");
        assert!(
            v["message"]
                .as_str()
                .unwrap_or("")
                .contains(&elsewhere.addr()),
            "{body}"
        );
    }
    let told = elsewhere.read_banner(&elsewhere.gateway(), ssh);
    assert!(
        told.starts_with("cofre: your address ")
            && told.contains(&elsewhere.addr())
            && told.contains("network policy")
            && !told.contains("SSH-2.0"),
        "one line before any SSH, then the close: {told:?}"
    );
    let out = elsewhere.ssh(&gw, &elsewhere.gateway(), ssh, "echo should-not-run");
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(!out.stdout.contains("should-not-run"));
    assert!(
        out.stderr.contains("network policy"),
        "OpenSSH shows the line it got before the version: {}",
        out.stderr
    );

    let all = audit(&gw.admin);
    assert_eq!(
        refused_from(&all, "api", &elsewhere.addr()),
        1,
        "rate-limited"
    );
    assert_eq!(
        refused_from(&all, "gateway", &elsewhere.addr()),
        1,
        "rate-limited"
    );
    assert_eq!(refused_from(&all, "api", &office.addr()), 0);
    let set = entries(&all, "network.set");
    assert_eq!(set.len(), 2);
    assert_eq!(set[0]["actor"], "admin");
    // The gateway login of the office host carries its own address.
    assert!(entries(&all, "gateway.login")
        .iter()
        .any(|e| e["details"]["source"] == office.addr()));
    assert!(metric(&gw.server, "cofre_network_refused_total") >= 5.0);
}

/// A real HAProxy in front of both listeners with PROXY protocol v2: once it is a trusted proxy,
/// the allow-list and the audit trail see the client behind it, not the proxy. A forged
/// X-Forwarded-For from an address that is no trusted proxy is ignored, and a PROXY header from
/// one closes the connection.
#[test]
fn haproxy_with_proxy_protocol_shows_the_real_client() {
    if unavailable() {
        return;
    }
    let Some(gw) = setup_on(Backend::Sqlite, Some("allow"), "0.0.0.0") else {
        return;
    };
    let client = Host::new();
    let proxy_addr = client.gateway();
    let hp = Haproxy::start(
        gw.inst.path().join("haproxy"),
        &proxy_addr,
        gw.server.port,
        gw.server.ssh_port,
    );
    // The client itself and the admin here; not the proxy's own address.
    let allow = format!("{}/32,127.0.0.0/8", client.addr());
    for listener in ["api", "gateway"] {
        gw.admin.ok(&[
            "network",
            "set",
            "--listener",
            listener,
            "--allow",
            &allow,
            "--trusted-proxies",
            &proxy_addr,
        ]);
    }
    let via_proxy = format!("https://{proxy_addr}:{}", hp.api_port);
    let (status, body) = client.curl(
        &format!("{via_proxy}/api/v1/auth/login"),
        &[
            "-H",
            "content-type: application/json",
            "-d",
            &serde_json::json!({"username": "alice", "password": gw.alice_password}).to_string(),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let out = client.ssh(&gw, &proxy_addr, hp.ssh_port, "echo through-haproxy");
    out.assert_ok();
    assert!(out.stdout.contains("through-haproxy"));
    let all = audit(&gw.admin);
    let login = entries(&all, "auth.login");
    assert_eq!(
        login.last().expect("alice's login")["details"]["source"],
        client.addr(),
        "the API's audit names the client behind the proxy"
    );
    assert_eq!(
        entries(&all, "gateway.login")
            .last()
            .expect("gateway login")["details"]["source"],
        client.addr(),
        "the gateway's audit names the client behind the proxy"
    );

    // Straight to the server, the proxy's address is the client's: refused, and a forged
    // X-Forwarded-For naming an allowed address changes nothing (it is not a trusted proxy).
    let direct = format!("https://{proxy_addr}:{}", gw.server.port);
    let (status, _) = client.curl(&format!("{direct}/api/v1/auth/whoami"), &[]);
    assert_eq!(status, 401, "the client itself is allowed directly too");
    gw.admin.ok(&[
        "network",
        "set",
        "--listener",
        "api",
        "--allow",
        "127.0.0.0/8",
    ]);
    let (status, body) = client.curl(
        &format!("{direct}/api/v1/auth/whoami"),
        &["-H", "X-Forwarded-For: 127.0.0.1"],
    );
    assert_eq!(status, 403, "a forged X-Forwarded-For is ignored: {body}");
    assert!(body.contains("network_refused"));
    // Through the proxy, the refusal names the client, not the proxy.
    let (status, body) = client.curl(&format!("{via_proxy}/api/v1/auth/whoami"), &[]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(&client.addr()), "{body}");
    // A PROXY v2 header from a host that is no trusted proxy: closed before TLS (a reset is a
    // close too: the server does not read what it refuses).
    let mut cmd = client.command("python3");
    cmd.args([
        "-c",
        &format!(
            "import socket,struct\n\
             s=socket.create_connection(('{proxy_addr}',{port}),timeout=10)\n\
             h=b'\\r\\n\\r\\n\\x00\\r\\nQUIT\\n'+bytes([0x21,0x11])+struct.pack('!H',12)\n\
             h+=socket.inet_aton('127.0.0.1')+socket.inet_aton('{proxy_addr}')+struct.pack('!HH',1,443)\n\
             s.sendall(h+b'\\x16\\x03\\x01\\x00\\x05hello')\n\
             try:\n  got=s.recv(100)\n\
             except ConnectionResetError:\n  got=b''\n\
             print('closed' if got==b'' else 'answered')\n",
            port = gw.server.port
        ),
    ]);
    let out = run_command(cmd, None, "a forged PROXY header");
    assert_eq!(out.stdout.trim(), "closed", "{}", out.stderr);
    let all = audit(&gw.admin);
    assert!(refused_from(&all, "api", &client.addr()) >= 1);
    assert_eq!(
        refused_from(&all, "api", &proxy_addr),
        0,
        "the proxy never stands for its clients in the trail"
    );
}

/// `policy add --from`: outside its networks a policy does not match, so the gateway session it
/// would allow is refused there (the network policy itself lets everyone in).
#[test]
fn a_policy_with_from_applies_only_from_its_networks() {
    if unavailable() {
        return;
    }
    let Some(gw) = setup_on(Backend::Sqlite, None, "0.0.0.0") else {
        return;
    };
    let (office, elsewhere) = (Host::new(), Host::new());
    gw.admin.ok(&[
        "policy",
        "add",
        "office-only",
        "--group",
        "ops",
        "--targets",
        "*",
        "--allow",
        "session",
        "--outcome",
        "allow",
        "--from",
        &office.cidr(),
    ]);
    gw.admin
        .ok(&["policy", "list"])
        .assert_stdout_contains(&format!("networks={}", office.cidr()));
    let ssh = gw.server.ssh_port;
    let out = office.ssh(&gw, &office.gateway(), ssh, "echo from-the-office");
    out.assert_ok();
    assert!(out.stdout.contains("from-the-office"));
    let out = elsewhere.ssh(&gw, &elsewhere.gateway(), ssh, "echo from-elsewhere");
    assert_ne!(out.code, Some(0));
    assert!(!out.stdout.contains("from-elsewhere"));
    // And from here (127.0.0.1), no other policy either.
    let out = gw.run_ssh("alice:root@db01", &[], Some("echo from-here"), None);
    assert_ne!(out.code, Some(0));
    // A bad network names the field.
    gw.admin
        .fail(&[
            "policy",
            "add",
            "bad",
            "--group",
            "ops",
            "--targets",
            "*",
            "--allow",
            "session",
            "--outcome",
            "allow",
            "--from",
            "10.0.0.1/8",
        ])
        .assert_stderr_contains("networks");
}

/// A list that refuses the calling admin's own address is refused without `--force`; with it,
/// it applies (and locks the admin out). A change that lets more in waits for a second admin;
/// narrowing applies at once. Bad input names the field.
#[test]
fn self_lockout_needs_force_and_widening_waits_for_a_second_admin() {
    let inst = Instance::new(Backend::Sqlite);
    let server = start_with_config(&inst, "[governance]\ncooling_off_days = 0\n");
    let (admin, _) = admin_cli(&inst, &server);
    let (bob, _, _) = add_user_cli(&inst, &server, &admin, "bob", "admin", &[]);

    admin
        .ok(&[
            "network",
            "set",
            "--listener",
            "gateway",
            "--allow",
            "10.1.0.0/16",
        ])
        .assert_stdout_contains("gateway: allow 10.1.0.0/16");
    // Wider: held; nothing changes until bob approves.
    let held = admin.ok(&[
        "network",
        "set",
        "--listener",
        "gateway",
        "--allow",
        "10.1.0.0/16,10.2.0.0/16",
    ]);
    let change = held_change(&held);
    held.assert_stdout_contains("10.1.0.0/16 -> 10.1.0.0/16,10.2.0.0/16");
    admin
        .ok(&["network", "show"])
        .assert_stdout_contains("gateway: allow 10.1.0.0/16\n");
    admin.fail(&["change", "approve", &change]);
    bob.ok(&["change", "approve", &change]);
    admin
        .ok(&["network", "show"])
        .assert_stdout_contains("gateway: allow 10.1.0.0/16,10.2.0.0/16");
    // Everyone again is wider too.
    let held = admin.ok(&["network", "set", "--listener", "gateway", "--allow", ""]);
    held_change(&held);

    // Bad input names the field.
    admin
        .fail(&[
            "network",
            "set",
            "--listener",
            "web",
            "--allow",
            "10.0.0.0/8",
        ])
        .assert_stderr_contains("listener");
    admin
        .fail(&[
            "network",
            "set",
            "--listener",
            "api",
            "--allow",
            "10.0.0.300/8",
        ])
        .assert_stderr_contains("allow");

    // The admin's own address (127.0.0.1) outside the list: refused, then forced.
    let out = admin.fail(&[
        "network",
        "set",
        "--listener",
        "api",
        "--allow",
        "10.99.0.0/16",
    ]);
    out.assert_stderr_contains("network_self_lockout");
    admin
        .ok(&["network", "show"])
        .assert_stdout_contains("api: allow everyone");
    admin.ok(&[
        "network",
        "set",
        "--listener",
        "api",
        "--allow",
        "10.99.0.0/16",
        "--force",
    ]);
    admin
        .fail(&["whoami"])
        .assert_stderr_contains("network_refused");
    let rows = audit_rows(&inst.db_url_for_tests());
    let set: Vec<_> = rows.iter().filter(|r| r.action == "network.set").collect();
    assert_eq!(set.len(), 3, "two direct changes, one approved");
}

/// Two nodes on one PostgreSQL database: a policy set through one is enforced by the other
/// within seconds (each node's copy is at most 2 s old).
#[test]
fn every_node_follows_the_network_policy_postgres() {
    let inst = Instance::new(Backend::Postgres);
    let node_a = inst.start();
    let (admin, _) = admin_cli(&inst, &node_a);
    let node_b = inst.start();
    let other = node_b.api_from("127.0.0.2");
    other.get("/healthz", None).assert_ok();
    admin.ok(&[
        "network",
        "set",
        "--listener",
        "api",
        "--allow",
        "127.0.0.1/32",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = other.get("/api/v1/auth/whoami", None);
        if r.status == 403 {
            r.assert_error(403, "network_refused");
            assert!(r.text.contains("127.0.0.2"), "{}", r.text);
            break;
        }
        assert_eq!(r.status, 401, "{}", r.text);
        assert!(
            Instant::now() < deadline,
            "node b still lets 127.0.0.2 in 10 s after node a closed the API to it"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The admin, inside the list, still works on both nodes.
    node_b
        .api()
        .get("/api/v1/network", Some(&admin.token()))
        .assert_ok();
}

/// In saas the vendor's operator keeps its own networks beside the customer's: its `set`
/// changes the vendor list, the admin's the customer's, and both let their networks in.
#[test]
fn the_vendor_keeps_its_own_networks_in_saas() {
    let inst = Instance::new(Backend::Sqlite);
    let server = start_with_config(&inst, "mode = \"saas\"\n");
    let (admin, _) = admin_cli(&inst, &server);
    let (operator, _, _) = add_user_cli(&inst, &server, &admin, "op1", "operator", &[]);
    operator.ok(&[
        "network",
        "set",
        "--listener",
        "api",
        "--allow",
        "127.0.0.0/8",
    ]);
    let shown = admin.ok(&["network", "show"]);
    shown.assert_stdout_contains("api: allow -");
    shown.assert_stdout_contains("vendor networks: 127.0.0.0/8");
    admin.ok(&[
        "network",
        "set",
        "--listener",
        "api",
        "--allow",
        "127.0.0.1/32",
    ]);
    let shown = operator.ok(&["network", "show"]);
    shown.assert_stdout_contains("api: allow 127.0.0.1/32");
    shown.assert_stdout_contains("vendor networks: 127.0.0.0/8");
    // 127.0.0.9 is in the vendor's networks only: let in.
    let api = server.api_from("127.0.0.9");
    assert_eq!(api.get("/api/v1/auth/whoami", None).status, 401);
    // The vendor widening its own list waits for the customer's admin.
    let held = operator.ok(&[
        "network",
        "set",
        "--listener",
        "api",
        "--allow",
        "127.0.0.0/8,10.0.0.0/8",
    ]);
    let change = held_change(&held);
    admin
        .ok(&["network", "show"])
        .assert_stdout_contains("vendor networks: 127.0.0.0/8\n");
    admin.ok(&["change", "approve", &change]);
    admin
        .ok(&["network", "show"])
        .assert_stdout_contains("vendor networks: 127.0.0.0/8,10.0.0.0/8");
    let rows = audit_rows(&inst.db_url_for_tests());
    let lists: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r.action == "network.set")
        .map(|r| {
            let d: Value = serde_json::from_str(&r.details).expect("details");
            (r.actor.clone(), d["list"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    assert_eq!(
        lists,
        vec![
            ("op1".to_owned(), "vendor_allow".to_owned()),
            ("admin".to_owned(), "allow".to_owned()),
            ("op1".to_owned(), "vendor_allow".to_owned())
        ]
    );
}

/// X-Forwarded-For is believed from a trusted proxy only: its rightmost untrusted hop is the
/// client the allow-list judges (curl bound to a loopback address as the proxy).
#[test]
fn forwarded_for_is_read_from_a_trusted_proxy_only() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    admin.ok(&[
        "network",
        "set",
        "--listener",
        "api",
        "--allow",
        "127.0.0.1/32,127.0.0.3/32",
        "--trusted-proxies",
        "127.0.0.3",
    ]);
    let url = format!("{}/api/v1/auth/whoami", server.url);
    let curl = |from: &str, xff: &str| {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sk",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args([
            "--interface",
            from,
            "-H",
            &format!("X-Forwarded-For: {xff}"),
        ])
        .arg(&url);
        run_command(cmd, None, "curl with X-Forwarded-For")
            .stdout
            .trim()
            .to_owned()
    };
    // From the proxy: the header names the client.
    assert_eq!(
        curl("127.0.0.3", "10.9.9.9"),
        "403",
        "an outside client behind the proxy"
    );
    assert_eq!(
        curl("127.0.0.3", "10.9.9.9, 127.0.0.1"),
        "401",
        "an allowed one"
    );
    // From anyone else the header is ignored: 127.0.0.4 stays itself, 127.0.0.1 too.
    assert_eq!(curl("127.0.0.4", "127.0.0.1"), "403");
    assert_eq!(curl("127.0.0.1", "10.9.9.9"), "401");
    let rows = audit_rows(&inst.db_url_for_tests());
    let refused: Vec<Value> = rows
        .iter()
        .filter(|r| r.action == "network.refused")
        .map(|r| serde_json::from_str(&r.details).expect("details"))
        .collect();
    assert!(refused.iter().any(|d| d["source"] == "10.9.9.9"));
    assert!(refused.iter().any(|d| d["source"] == "127.0.0.4"));
    assert!(!refused.iter().any(|d| d["source"] == "127.0.0.3"));
}
