//! Access requests through the real binary: the CLI's request/approve/deny/grant flow, the
//! notifications it sends to a real local HTTP receiver (signature checked) and a real SMTP server
//! (Python's aiosmtpd, writing a Maildir), and the request expiring on its own.
//! The rules themselves are tested with an injectable clock in cofre-app's `approvals` tests;
//! the gateway end to end is in `gateway::an_approved_request_opens_the_gateway_and_revoking_closes_it`.

use crate::harness::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One received webhook POST.
#[derive(Debug, Clone)]
struct Hook {
    timestamp: String,
    signature: String,
    body: String,
}

/// A plain HTTP receiver on loopback that answers 200 to every POST and keeps what it got.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Hook>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/cofre", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    headers.push(line.trim_end().to_owned());
                }
                let header = |name: &str| {
                    headers
                        .iter()
                        .find_map(|h| {
                            let (k, v) = h.split_once(':')?;
                            k.trim()
                                .eq_ignore_ascii_case(name)
                                .then(|| v.trim().to_owned())
                        })
                        .unwrap_or_default()
                };
                let len: usize = header("content-length").parse().unwrap_or(0);
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                sink.lock().unwrap().push(Hook {
                    timestamp: header("x-cofre-timestamp"),
                    signature: header("x-cofre-signature"),
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Receiver { url, got }
    }

    fn events(&self) -> Vec<(Hook, Value)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|h| (h.clone(), serde_json::from_str(&h.body).unwrap()))
            .collect()
    }

    fn wait_for(&self, event: &str, request: &str) -> (Hook, Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = self
                .events()
                .into_iter()
                .find(|(_, v)| v["event"] == event && v["request"]["id"] == request)
            {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {event} webhook for {request}; got {:?}",
                self.events()
                    .iter()
                    .map(|(_, v)| v["event"].clone())
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// aiosmtpd writing every message it accepts to a Maildir.
pub(crate) struct Smtp {
    child: Child,
    pub(crate) port: u16,
    maildir: PathBuf,
}

impl Smtp {
    pub(crate) fn start(dir: &Path) -> Option<Smtp> {
        let ok = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: aiosmtpd is not installed (scripts/test installs it)");
            return None;
        }
        let port = free_port();
        let maildir = dir.join("maildir");
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Smtp {
            child,
            port,
            maildir,
        })
    }

    pub(crate) fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in entries.flatten() {
                    out.push(std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    /// The message to `to` whose subject contains `needle`.
    pub(crate) fn wait_for(&self, to: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(m) = self.messages().into_iter().find(|m| {
                m.lines().any(|l| l.starts_with("To:") && l.contains(to)) && m.contains(needle)
            }) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "no mail to {to} with {needle:?}; got {:#?}",
                self.messages()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// A server with notifications on, leads and security approvers with email addresses, alice in
/// ops, a credential on db01 and an approve policy with two levels.
struct World {
    smtp: Smtp,
    hooks: Receiver,
    key: Vec<u8>,
    admin: Cli,
    alice: Cli,
    lea: Cli,
    sam: Cli,
    _server: Server,
    _inst: Instance,
}

fn world(backend: Backend, extra_config: &str) -> Option<World> {
    let inst = Instance::new(backend);
    let smtp = Smtp::start(inst.path())?;
    let hooks = Receiver::start();
    let key = random_hex(64).into_bytes();
    let key_file = inst.path().join("webhook.key");
    std::fs::write(&key_file, &key).unwrap();
    let config = inst.path().join("cofre.toml");
    std::fs::write(
        &config,
        format!(
            "[notify]\nwebhook_url = \"{}\"\nwebhook_secret_file = \"{}\"\nsmtp_host = \"127.0.0.1\"\n\
             smtp_port = {}\nsmtp_tls = \"none\"\nsmtp_from = \"Cofre <cofre@example.test>\"\n\
             public_url = \"https://cofre.example.test:8443\"\n{extra_config}",
            hooks.url,
            key_file.display(),
            smtp.port
        ),
    )
    .unwrap();
    let server = inst.start_with_env(&[("COFRE_CONFIG", config.to_str().unwrap())]);
    let (admin, _) = admin_cli(&inst, &server);
    for g in ["ops", "leads", "security"] {
        admin.ok(&["group", "add", g]);
    }
    let mut users = Vec::new();
    for (name, role, group) in [
        ("alice", "user", "ops"),
        ("lea", "approver", "leads"),
        ("sam", "approver", "security"),
    ] {
        let (cli, _, _) = add_user_cli(&inst, &server, &admin, name, role, &[group]);
        admin.ok(&["user", "set-email", name, &format!("{name}@example.test")]);
        users.push(cli);
    }
    admin.ok(&[
        "target", "add", "db01", "--host", "10.0.0.5", "--tag", "prod",
    ]);
    admin.ok_in(
        &["credential", "add", "db01", "root", "--password-stdin"],
        "root-pw-7781\n",
    );
    admin.ok(&[
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
        "--emergency",
    ]);
    let mut users = users.into_iter();
    let (alice, lea, sam) = (
        users.next().unwrap(),
        users.next().unwrap(),
        users.next().unwrap(),
    );
    Some(World {
        smtp,
        hooks,
        key,
        admin,
        alice,
        lea,
        sam,
        _server: server,
        _inst: inst,
    })
}

fn create_request(w: &World) -> String {
    let out = w.alice.ok(&[
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
        "2h",
    ]);
    out.json()["id"].as_str().unwrap().to_owned()
}

/// Every state change reaches the approvers and the requester: a signed webhook and email with
/// the request's link; reveal works only once both levels approved.
#[test]
fn notifications_follow_a_request_to_its_grant() {
    let Some(w) = world(Backend::Sqlite, "") else {
        return;
    };
    w.alice
        .fail(&["credential", "reveal", "db01", "root", "--reason", "x-1"])
        .assert_stderr_contains("requires an approved access request");
    let id = create_request(&w);

    let (hook, created) = w.hooks.wait_for("request.created", &id);
    // The receiver recomputes the signature over TIMESTAMP "." BODY with the shared key.
    let expected = format!(
        "sha256={}",
        hmac_sha256(
            &w.key,
            format!("{}.{}", hook.timestamp, hook.body).as_bytes()
        )
    );
    assert_eq!(hook.signature, expected, "the webhook is signed");
    assert_ne!(
        hook.signature,
        format!(
            "sha256={}",
            hmac_sha256(b"another key", hook.body.as_bytes())
        )
    );
    assert_eq!(created["request"]["requester"], "alice");
    assert_eq!(created["request"]["state"], "pending");
    assert!(
        !hook.body.contains("root-pw-7781"),
        "no secret in a webhook"
    );

    let link = format!("https://cofre.example.test:8443/api/v1/requests/{id}");
    let to_lea = w
        .smtp
        .wait_for("lea@example.test", &format!("request {id}"));
    assert!(
        to_lea.contains(&link),
        "the email carries the link:\n{to_lea}"
    );
    assert!(to_lea.contains("CHG-1234 patching"), "{to_lea}");
    assert!(
        to_lea.contains(&format!("cofre request approve {id}")),
        "the approver is told how to decide:\n{to_lea}"
    );
    assert!(!to_lea.contains("root-pw-7781"));

    w.lea.ok(&["request", "approve", &id, "--comment", "ok"]);
    w.hooks.wait_for("request.advanced", &id);
    w.alice
        .fail(&["credential", "reveal", "db01", "root"])
        .assert_stderr_contains("requires an approved access request");
    w.sam.ok(&["request", "approve", &id]);
    let (_, approved) = w.hooks.wait_for("request.approved", &id);
    assert_eq!(approved["request"]["state"], "approved");
    assert_eq!(approved["actor"], "sam");
    let to_alice = w.smtp.wait_for("alice@example.test", "approved");
    assert!(to_alice.contains(&link), "{to_alice}");
    let revealed = w
        .alice
        .ok(&["--output", "json", "credential", "reveal", "db01", "root"]);
    assert_eq!(revealed.json()["secret"], "root-pw-7781");

    let grants = w.alice.ok(&["grant", "list"]).stdout;
    assert!(
        grants.contains(&id) && grants.contains("in force"),
        "{grants}"
    );
    w.alice.ok(&["grant", "revoke", &id, "--reason", "done"]);
    w.hooks.wait_for("grant.revoked", &id);
    w.alice
        .fail(&["credential", "reveal", "db01", "root"])
        .assert_stderr_contains("requires an approved access request");
}

/// A denial ends the request and tells the requester; an emergency access notifies every approver
/// at once and waits for review; the requester never approves its own request.
#[test]
fn deny_emergency_and_self_approval() {
    let Some(w) = world(Backend::Postgres, "") else {
        return;
    };
    let id = create_request(&w);
    w.alice
        .fail(&["request", "approve", &id])
        .assert_stderr_contains("forbidden");
    w.lea
        .fail(&["request", "deny", &id, "--comment", "no"])
        .assert_stderr_contains("comment");
    w.lea
        .ok(&["request", "deny", &id, "--comment", "not during the freeze"])
        .assert_stdout_contains("denied");
    w.sam
        .fail(&["request", "approve", &id])
        .assert_stderr_contains("not pending");
    let denied = w.smtp.wait_for("alice@example.test", "denied");
    assert!(denied.contains("not during the freeze"), "{denied}");

    let out = w.alice.ok(&[
        "--output",
        "json",
        "request",
        "emergency",
        "--target",
        "db01",
        "--account",
        "root",
        "--reason",
        "outage INC-77",
    ]);
    let eid = out.json()["id"].as_str().unwrap().to_owned();
    for approver in ["lea@example.test", "sam@example.test"] {
        let m = w.smtp.wait_for(approver, "EMERGENCY");
        assert!(m.contains(&format!("cofre request review {eid}")), "{m}");
    }
    w.hooks.wait_for("request.emergency", &eid);
    w.alice.ok(&["credential", "reveal", "db01", "root"]);
    let listed = w.admin.ok(&["request", "list", "--all"]).stdout;
    assert!(listed.contains("review pending"), "{listed}");
    w.sam
        .ok(&["request", "review", &eid, "--comment", "outage confirmed"])
        .assert_stdout_contains("reviewed");
    let shown = w.admin.ok(&["request", "show", &eid]).stdout;
    assert!(shown.contains("reviewed by sam"), "{shown}");
}

/// Nobody decides in time: the server expires the request by itself and says so.
#[test]
fn an_undecided_request_expires() {
    let Some(w) = world(
        Backend::Sqlite,
        "[approvals]\nrequest_timeout_seconds = 2\n",
    ) else {
        return;
    };
    let id = create_request(&w);
    let (_, expired) = w.hooks.wait_for("request.expired", &id);
    assert_eq!(expired["request"]["state"], "expired");
    w.lea
        .fail(&["request", "approve", &id])
        .assert_stderr_contains("not pending");
    let audit = parse_export(&w.admin.ok(&["audit", "export"]).stdout);
    assert!(audit
        .iter()
        .any(|e| e["action"] == "request.expire" && e["object"] == format!("request:{id}")));
}

/// With mail configured, a reset's one-time password goes to the user by email and to nobody
/// else: not in the admin's answer, and never in the database in plaintext (the outbox row is
/// sealed until delivery and erased after it).
fn a_reset_password_goes_to_the_users_email(backend: Backend) {
    let Some(w) = world(backend, "") else {
        return;
    };
    let out = w.admin.ok(&["user", "reset-password", "alice"]);
    out.assert_stdout_contains("sent to alice by email (alice@example.test)");
    assert!(
        !out.all().contains("one-time password:"),
        "the admin never sees it: {}",
        out.all()
    );
    let mail = w
        .smtp
        .wait_for("alice@example.test", "your one-time password");
    let otp = mail
        .lines()
        .skip_while(|l| !l.contains("Your one-time password:"))
        .skip(1)
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_else(|| panic!("a one-time password in the mail:\n{mail}"))
        .to_owned();
    assert!(otp.len() >= 12, "{otp:?} in\n{mail}");
    let r = w._server.api().login("alice", &otp);
    r.assert_ok();
    assert_eq!(r.body["password_change_required"], true);
    // The outbox row: a placeholder body, its sealed copy erased once delivered.
    // (The delivery is marked just after the SMTP server took the mail: wait for it.)
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let rows = outbox_rows(&w._inst.db_url_for_tests(), "alice@example.test");
        let erased = rows
            .iter()
            .any(|(subject, _, erased)| subject.contains("one-time password") && *erased == 1);
        if erased || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mail_row = rows
        .iter()
        .find(|(subject, _, _)| subject.contains("one-time password"))
        .unwrap_or_else(|| panic!("the outbox row: {rows:?}"));
    assert_eq!(mail_row.1, "(sealed)", "{rows:?}");
    assert_eq!(mail_row.2, 1, "erased after delivery: {rows:?}");
    assert!(!rows
        .iter()
        .any(|(s, b, _)| s.contains(&otp) || b.contains(&otp)));
    // Nowhere in SQLite's files either (the main file and its write-ahead log).
    for name in ["cofre.db", "cofre.db-wal"] {
        let bytes = std::fs::read(w._inst.data_dir.join(name)).unwrap_or_default();
        assert!(
            !bytes.windows(otp.len()).any(|win| win == otp.as_bytes()),
            "the one-time password is in {name} in plaintext"
        );
    }
    let audit = parse_export(&w.admin.ok(&["audit", "export", "--format", "jsonl"]).stdout);
    assert!(audit
        .iter()
        .any(|e| e["action"] == "user.reset_password"
            && e["details"]["sent_to"] == "alice@example.test"));
    assert!(!audit.iter().any(|e| e.to_string().contains(&otp)));
}

#[test]
fn a_reset_password_goes_to_the_users_email_sqlite() {
    a_reset_password_goes_to_the_users_email(Backend::Sqlite);
}

#[test]
fn a_reset_password_goes_to_the_users_email_postgres() {
    a_reset_password_goes_to_the_users_email(Backend::Postgres);
}

/// (subject, body, sealed copy erased 1/0) of the outbox rows to `to`, read from the database.
fn outbox_rows(url: &str, to: &str) -> Vec<(String, String, i64)> {
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    block_on(async {
        let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
        let rows = sqlx::query(
            "SELECT subject, body, CAST(CASE WHEN sealed_body IS NULL AND sealed_key IS NULL \
             THEN 1 ELSE 0 END AS BIGINT) AS erased FROM notifications WHERE recipient = $1 ORDER BY id",
        )
        .bind(to)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let out = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<i64, _>(2)))
            .collect();
        conn.close().await.ok();
        out
    })
}
