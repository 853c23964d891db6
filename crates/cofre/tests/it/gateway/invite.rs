//! Invitations for third parties (issue 18) end to end: a real server with its external listener,
//! the real CLI, real mail (aiosmtpd), the test's sshd as the invited target, and the invitee's
//! side driven as a browser would (forms over HTTPS, the terminal's WebSocket).
//!
//! The invitee gets a one-time link by mail, sets a password and enrols TOTP, sees only what it
//! was invited to, opens a recorded `external` session to it and to nothing else; the API, the
//! console and Orbit are not on the external listener; a reused or guessed link is refused alike;
//! revocation and the invitation's end close the live session; the lockout, the rate limit and
//! the external listener's network policy hold; the link's token is in no log and no audit entry.

use super::*;
use crate::approvals::Smtp;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

fn after<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
}

fn between(text: &str, start: &str, end: &str) -> String {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in:\n{text}"))
        + start.len();
    let len = text[from..].find(end).expect("the end marker");
    text[from..from + len].to_owned()
}

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

const SAME_ORIGIN: (&str, &str) = ("sec-fetch-site", "same-origin");
const FORM: &str = "application/x-www-form-urlencoded";

/// `name=value` of the invitee's cookie in a response, if it sets one.
fn cookie_of(r: &Resp) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-cofre-invitee=") && !v.contains("Max-Age=0"))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
}

/// The server's configuration for these tests: the external listener on `ext_port` (plus
/// `external`, more lines of its section) and mail to the test's receiver.
fn external_config(ext_port: u16, smtp: &Smtp, external: &str) -> String {
    format!(
        "[external]\nlisten = \"127.0.0.1:{ext_port}\"\n{external}\
         [notify]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsmtp_tls = \"none\"\n\
         smtp_from = \"Cofre <cofre@example.test>\"\n",
        smtp.port
    )
}

/// `invite create` of `email` to root on db01 until `until`, as the CLI's arguments.
fn invite_args<'a>(email: &'a str, until: &'a str, reason: &'a str) -> Vec<&'a str> {
    vec![
        "invite",
        "create",
        "--email",
        email,
        "--targets",
        "db01",
        "--accounts",
        "root",
        "--until",
        until,
        "--reason",
        reason,
    ]
}

/// An admin invites `email` to root on db01 (with `more` options): the invitation, as JSON.
fn invite(admin: &Cli, email: &str, until: &str, reason: &str, more: &[&str]) -> Value {
    let mut args = vec!["--output", "json"];
    args.extend(invite_args(email, until, reason));
    args.extend_from_slice(more);
    admin.ok(&args).json()
}

fn rfc3339_in(seconds: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

struct Ext {
    api: Api,
    port: u16,
    fingerprint: String,
}

impl Ext {
    /// The one-time link's path in the invitation mail to `to`.
    fn link(&self, smtp: &Smtp, to: &str) -> String {
        let mail = smtp.wait_for(to, "invited");
        // Quoted-printable soft line breaks, if the mail was wrapped.
        let mail = mail.replace("=\r\n", "").replace("=\n", "");
        let base = format!("https://127.0.0.1:{}", self.port);
        let at = mail
            .find(&format!("{base}/invite/"))
            .unwrap_or_else(|| panic!("no link in the mail:\n{mail}"));
        mail[at + base.len()..]
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect()
    }

    /// Enrols through the link's page: the password, and a code of the seed the page shows.
    /// Returns the response of the form and the seed.
    fn enrol(&self, link: &str, password: &str) -> (Resp, Vec<u8>) {
        let page = self.api.get(link, None);
        assert_eq!(page.status, 200, "{}", page.text);
        let secret = base32_decode(&between(&page.text, "id=\"totp-secret\">", "<"));
        let seed = between(&page.text, "name=\"seed\" value=\"", "\"");
        let code = totp_at_step(&secret, current_step());
        let r = self.api.send(
            "POST",
            link,
            &[SAME_ORIGIN],
            Some((
                FORM,
                form(&[("seed", &seed), ("password", password), ("code", &code)]),
            )),
        );
        (r, secret)
    }

    fn login(&self, email: &str, password: &str, code: &str) -> Resp {
        self.api.send(
            "POST",
            "/login",
            &[SAME_ORIGIN],
            Some((
                FORM,
                form(&[("email", email), ("password", password), ("code", code)]),
            )),
        )
    }

    fn get(&self, path: &str, cookie: &str) -> Resp {
        self.api.send("GET", path, &[("cookie", cookie)], None)
    }

    async fn terminal(&self, target: &str, account: &str, cookie: &str) -> Ws {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::HeaderValue;
        let authority = format!("127.0.0.1:{}", self.port);
        let tcp = tokio::net::TcpStream::connect(&authority).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(pinned_tls(&self.fingerprint)))
            .connect(
                rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let mut req = format!("wss://{authority}/terminal/{target}/{account}/ws?cols=80&rows=24")
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("cookie", HeaderValue::from_str(cookie).unwrap());
        req.headers_mut()
            .insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        tokio_tungstenite::client_async(req, tls).await.unwrap().0
    }
}

/// The next text frame (`started`, `notice`, `ended`) as JSON, with the output seen before it.
async fn next_event(ws: &mut Ws, within: Duration) -> (Value, String) {
    let mut output = String::new();
    loop {
        let msg = tokio::time::timeout(within, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no terminal event within {within:?}; output: {output}"));
        match msg {
            Some(Ok(Message::Text(t))) => {
                return (serde_json::from_str(t.as_str()).unwrap(), output);
            }
            Some(Ok(Message::Binary(b))) => output.push_str(&String::from_utf8_lossy(&b)),
            Some(Ok(_)) => {}
            other => panic!("the terminal closed without an event: {other:?}; output: {output}"),
        }
    }
}

/// Output until `needle` shows.
async fn wait_output(ws: &mut Ws, needle: &str) -> String {
    let mut output = String::new();
    while !output.contains(needle) {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => output.push_str(&String::from_utf8_lossy(&b)),
            Ok(Some(Ok(Message::Text(t)))) => panic!("{} while waiting for {needle:?}", t.as_str()),
            Ok(Some(Ok(_))) => {}
            other => panic!("no {needle:?} in the output ({other:?}): {output}"),
        }
    }
    output
}

#[test]
fn an_invitee_enrols_opens_only_its_terminal_and_loses_it_on_revoke_and_expiry() {
    let smtp_dir = tempfile::tempdir().unwrap();
    let Some(smtp) = Smtp::start(smtp_dir.path()) else {
        assert!(
            std::env::var("CI").is_err(),
            "aiosmtpd is missing in CI (scripts/test installs it)"
        );
        return;
    };
    let ext_port = free_port();
    let config = external_config(ext_port, &smtp, "requests_per_minute = 400\n");
    let Some(gw) = setup_with_config(Backend::Sqlite, None, Some(&config)) else {
        return;
    };
    let stdout = gw.server.stdout_text();
    assert_eq!(
        after(&stdout, "external listener (invitations) on "),
        Some(format!("https://127.0.0.1:{ext_port}").as_str()),
        "{stdout}"
    );
    let mut ext = Ext {
        api: Api::without_redirects(
            &format!("https://127.0.0.1:{ext_port}"),
            after(&stdout, "external tls fingerprint (sha256): ").expect("its fingerprint"),
        ),
        port: ext_port,
        fingerprint: after(&stdout, "external tls fingerprint (sha256): ")
            .unwrap()
            .to_owned(),
    };
    // A second target on the same sshd, which the invitation does not name.
    let port = gw.sshd.port.to_string();
    let root_key = gw.keys.join("root_key");
    gw.admin.ok(&[
        "target",
        "add",
        "db02",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ]);
    gw.admin.ok(&[
        "credential",
        "add",
        "db02",
        "root",
        "--key-file",
        root_key.to_str().unwrap(),
    ]);

    // Bad input names the field; nothing is sent.
    let bad = gw.admin.fail(&[
        "invite",
        "create",
        "--email",
        "ana",
        "--targets",
        "db01",
        "--accounts",
        "root",
        "--until",
        &rfc3339_in(3600),
        "--reason",
        "CHG-77 vendor patch",
    ]);
    bad.assert_stderr_contains("email");
    gw.admin
        .fail(&[
            "invite",
            "create",
            "--email",
            "ana@vendor.example",
            "--targets",
            "nosuch",
            "--accounts",
            "root",
            "--until",
            &rfc3339_in(3600),
            "--reason",
            "CHG-77",
        ])
        .assert_stderr_contains("targets");

    let created = invite(
        &gw.admin,
        "ana@vendor.example",
        &rfc3339_in(3600),
        "CHG-77 vendor patch",
        &[],
    );
    assert_eq!(created["status"], "sent", "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let link = ext.link(&smtp, "ana@vendor.example");
    let token = link.strip_prefix("/invite/").unwrap().to_owned();
    assert!(token.len() > 40, "{link}");

    // A weak password is refused naming it, and the page comes back with a new seed.
    let (weak, _) = ext.enrol(&link, "password1");
    assert_eq!(weak.status, 400, "{}", weak.text);
    assert!(weak.text.contains("new_password"), "{}", weak.text);
    assert!(cookie_of(&weak).is_none());

    let password = "vendor-patch-afternoon-4417";
    let (enrolled, secret) = ext.enrol(&link, password);
    assert_eq!(enrolled.status, 303, "{}", enrolled.text);
    let cookie = cookie_of(&enrolled).expect("the invitee's cookie");
    let listed = gw
        .admin
        .ok(&["--output", "json", "invite", "show", &id])
        .json();
    assert_eq!(listed["status"], "open", "{listed}");

    // The link works once; a used link and a guessed one get the same answer.
    let reused = ext.api.get(&link, None);
    let guessed = ext.api.get(
        "/invite/cofre_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        None,
    );
    assert_eq!(reused.status, 401, "{}", reused.text);
    assert_eq!(
        (guessed.status, guessed.text.len()),
        (401, reused.text.len())
    );

    // What the invitee sees: the invited pair only.
    let home = ext.get("/", &cookie);
    assert_eq!(home.status, 200, "{}", home.text);
    assert!(home.text.contains("root@db01"), "{}", home.text);
    assert!(!home.text.contains("db02"), "{}", home.text);

    // Nothing but the invitation pages on the external listener, with any credential.
    let admin_token = gw.admin.token();
    for path in [
        "/api/v1/healthz",
        "/api/v1/openapi.json",
        "/api/v1/targets",
        "/api/v1/invitations",
        "/api/v1/orbit/backups",
        "/api/v1/snapshots",
        "/targets",
        "/users",
        "/audit",
        "/sessions",
        "/recordings",
        "/orbit",
        "/metrics",
    ] {
        for auth in [
            ("authorization", format!("Bearer {admin_token}")),
            ("cookie", cookie.clone()),
        ] {
            let r = ext
                .api
                .send("GET", path, &[(auth.0, auth.1.as_str())], None);
            assert_eq!(
                r.status, 404,
                "{path} through the external listener: {}",
                r.text
            );
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Another target and another account are refused before anything reaches sshd.
    let before = gw.sshd.log().len();
    for (target, account) in [("db02", "root"), ("db01", "admin")] {
        let (ended, _) = rt.block_on(async {
            let mut ws = ext.terminal(target, account, &cookie).await;
            next_event(&mut ws, Duration::from_secs(30)).await
        });
        assert_eq!(ended["type"], "ended", "{target}/{account}: {ended}");
    }
    assert_nothing_reached_sshd(&gw.sshd, before, "an invitee on what it was not invited to");

    // The invited terminal: a recorded session marked external.
    let mut ws = rt.block_on(ext.terminal("db01", "root", &cookie));
    let (started, _) = rt.block_on(next_event(&mut ws, Duration::from_secs(60)));
    assert_eq!(started["type"], "started", "{started}");
    let session = started["session"].as_str().unwrap().to_owned();
    rt.block_on(async {
        ws.send(Message::Binary(b"echo inv-$((6*7))\r".to_vec().into()))
            .await
            .unwrap();
        wait_output(&mut ws, "inv-42").await;
    });
    let live = json_items(
        &gw.admin
            .ok(&["--output", "json", "session", "list", "--live"])
            .json(),
    );
    let mine = live
        .iter()
        .find(|s| s["id"] == session.as_str())
        .unwrap_or_else(|| panic!("{live:?}"));
    assert_eq!(mine["kind"], "external");
    assert_eq!(mine["username"], format!("invitee:{id}"));
    let audit = gw.audit();
    let start = find_entry(&audit, "session.start", |e| {
        e["details"]["session"] == session.as_str()
    });
    assert_eq!(start["details"]["invitation"], id.as_str());
    assert_eq!(start["details"]["external"], true);
    assert_eq!(start["details"]["policy"], "invitation");

    // Revoked: the live session ends at once, the cookie and the login stop working.
    gw.admin
        .ok(&["invite", "revoke", &id])
        .assert_stdout_contains("revoked");
    let (ended, _) = rt.block_on(next_event(&mut ws, Duration::from_secs(10)));
    assert_eq!(ended["type"], "ended", "{ended}");
    assert!(
        ended["reason"].as_str().unwrap().contains("revoked"),
        "{ended}"
    );
    assert_eq!(ext.get("/", &cookie).status, 303);
    let code = totp_at_step(&secret, current_step() + 1);
    assert_eq!(ext.login("ana@vendor.example", password, &code).status, 401);
    let (_, cast) = gw.export(&session);
    assert!(cast.text("o").contains("inv-42"), "{}", cast.text("o"));

    // A second invitation that ends in 40 s: login, lockout, and the end closes the session.
    let created = invite(
        &gw.admin,
        "bo@vendor.example",
        &rfc3339_in(40),
        "CHG-78 short visit",
        &[],
    );
    let id2 = created["id"].as_str().unwrap().to_owned();
    let link2 = ext.link(&smtp, "bo@vendor.example");
    let (enrolled, secret2) = ext.enrol(&link2, password);
    assert_eq!(enrolled.status, 303, "{}", enrolled.text);
    let step = current_step();
    let logged_out = ext.api.send("POST", "/logout", &[SAME_ORIGIN], None);
    assert_eq!(logged_out.status, 303);
    // A code is used once: the enrolment's step is spent, the next one logs in.
    let in_again = ext.login(
        "bo@vendor.example",
        password,
        &totp_at_step(&secret2, step + 1),
    );
    assert_eq!(in_again.status, 303, "{}", in_again.text);
    let cookie2 = cookie_of(&in_again).expect("a cookie");
    let mut ws2 = rt.block_on(ext.terminal("db01", "root", &cookie2));
    let (started, _) = rt.block_on(next_event(&mut ws2, Duration::from_secs(60)));
    assert_eq!(started["type"], "started", "{started}");
    // Unknown address and wrong password: the same answer.
    let unknown = ext.login("nobody@vendor.example", password, "123456");
    let wrong = ext.login("bo@vendor.example", "not-the-password-9931", "123456");
    assert_eq!((unknown.status, wrong.status), (401, 401));
    assert_eq!(
        between(&unknown.text, "role=\"alert\">", "<"),
        between(&wrong.text, "role=\"alert\">", "<")
    );
    for _ in 0..5 {
        ext.login("bo@vendor.example", "not-the-password-9931", "123456");
    }
    // Locked out: the right password and a fresh code are refused too, for now.
    let locked = ext.login(
        "bo@vendor.example",
        password,
        &totp_at_step(&secret2, step + 2),
    );
    assert_eq!(locked.status, 401, "{}", locked.text);
    let (ended, _) = rt.block_on(next_event(&mut ws2, Duration::from_secs(60)));
    assert_eq!(ended["type"], "ended", "{ended}");
    assert!(
        ended["reason"].as_str().unwrap().contains("has ended"),
        "{ended}"
    );
    let shown = gw
        .admin
        .ok(&["--output", "json", "invite", "show", &id2])
        .json();
    assert_eq!(shown["status"], "expired", "{shown}");
    // A new client: the server may have closed the old one's idle connection meanwhile.
    ext.api = Api::without_redirects(&format!("https://127.0.0.1:{ext_port}"), &ext.fingerprint);
    assert_eq!(ext.get("/", &cookie2).status, 303);

    // --approve-each-session: nothing opens until approved; a denial ends the wait.
    let created = invite(
        &gw.admin,
        "cy@vendor.example",
        &rfc3339_in(3600),
        "CHG-79 supervised",
        &["--approve-each-session"],
    );
    assert_eq!(created["approve_each_session"], true, "{created}");
    let id3 = created["id"].as_str().unwrap().to_owned();
    let link3 = ext.link(&smtp, "cy@vendor.example");
    let (enrolled, _) = ext.enrol(&link3, password);
    assert_eq!(enrolled.status, 303, "{}", enrolled.text);
    let cookie3 = cookie_of(&enrolled).expect("a cookie");
    let waiting = |ws: &mut Ws| {
        let (notice, _) = rt.block_on(next_event(ws, Duration::from_secs(30)));
        assert_eq!(notice["type"], "notice", "{notice}");
        let ask = notice["approval"].as_str().unwrap().to_owned();
        let shown = gw
            .admin
            .ok(&["--output", "json", "invite", "show", &id3])
            .json();
        assert_eq!(shown["pending_sessions"][0]["id"], ask.as_str(), "{shown}");
        ask
    };
    let before = gw.sshd.log().len();
    let mut ws3 = rt.block_on(ext.terminal("db01", "root", &cookie3));
    let ask = waiting(&mut ws3);
    assert_nothing_reached_sshd(&gw.sshd, before, "a session waiting for its approval");
    gw.admin
        .fail(&["invite", "deny-session", &id3, &ask, "--comment", ""])
        .assert_stderr_contains("comment");
    gw.admin
        .ok(&[
            "invite",
            "deny-session",
            &id3,
            &ask,
            "--comment",
            "not during the freeze",
        ])
        .assert_stdout_contains("denied");
    let (ended, _) = rt.block_on(next_event(&mut ws3, Duration::from_secs(10)));
    assert_eq!(ended["type"], "ended", "{ended}");
    assert!(
        ended["reason"]
            .as_str()
            .unwrap()
            .contains("not during the freeze"),
        "{ended}"
    );
    assert_nothing_reached_sshd(&gw.sshd, before, "a denied session");
    let mut ws3 = rt.block_on(ext.terminal("db01", "root", &cookie3));
    let ask = waiting(&mut ws3);
    gw.admin
        .ok(&["invite", "approve-session", &id3, &ask])
        .assert_stdout_contains("approved");
    let (started, _) = rt.block_on(next_event(&mut ws3, Duration::from_secs(60)));
    assert_eq!(started["type"], "started", "{started}");
    // The approval opened that one session: deciding it again is refused.
    gw.admin
        .fail(&["invite", "approve-session", &id3, &ask])
        .assert_stderr_contains("already");
    drop(ws3);

    // Rate limit per address: past `requests_per_minute`, 429.
    let limited = (0..450).any(|_| ext.api.get("/login", None).status == 429);
    assert!(limited, "no 429 after 450 requests in a minute");

    // The external listener's own network policy: outside it, refused.
    gw.admin.ok(&[
        "network",
        "set",
        "--listener",
        "external",
        "--allow",
        "10.99.0.0/16",
    ]);
    let refused = ext.api.get("/login", None);
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(refused.text.contains("network_refused"), "{}", refused.text);

    // The link's token is in no log and no audit entry.
    let audit = gw
        .admin
        .ok(&["audit", "export", "--format", "jsonl"])
        .stdout;
    for (what, text) in [
        ("stdout", gw.server.stdout_text()),
        ("stderr", gw.server.stderr_text()),
        ("audit", audit.clone()),
    ] {
        assert!(
            !text.contains(&token),
            "the link's token is in the server's {what}"
        );
    }
    for action in [
        "invite.session_asked",
        "invite.session_decide",
        "invite.session_used",
        "invite.create",
        "invite.redeem",
        "invite.login",
        "invite.login_failed",
        "invite.revoke",
        "invite.link_refused",
    ] {
        assert!(
            audit.contains(&format!("\"{action}\"")),
            "no {action} in the audit trail"
        );
    }
}

/// The whole flow in Chromium (crates/cofre/tests/browser/invite.mjs), with the real mail: the
/// link, enrolment, the terminal to the invited target, the recording; another target, the
/// API, the console and Orbit tried through the external listener and refused; a reused link
/// refused; revocation ends the terminal on the page.
/// An invitation gives someone without an account sessions on the targets, so with a second
/// admin it waits for that admin (dual control): nothing is kept and no link exists or is sent
/// until the approval, the proposer cannot approve it, and the approved invitation is the
/// proposer's, its `invite.create` entry naming the approver.
#[test]
fn an_invitation_waits_for_a_second_admin() {
    let smtp_dir = tempfile::tempdir().unwrap();
    let Some(smtp) = Smtp::start(smtp_dir.path()) else {
        assert!(std::env::var("CI").is_err(), "aiosmtpd is missing in CI");
        return;
    };
    let ext_port = free_port();
    // No cooling off: the second admin counts as soon as it exists.
    let config = format!(
        "{}[governance]\ncooling_off_days = 0\n",
        external_config(ext_port, &smtp, "")
    );
    let Some(gw) = setup_with_config(Backend::Sqlite, None, Some(&config)) else {
        return;
    };
    let (boss, _, _) = add_user_cli(&gw.inst, &gw.server, &gw.admin, "boss", "admin", &[]);
    let until = rfc3339_in(3600);
    let held = gw.admin.ok(&invite_args(
        "ana@vendor.example",
        &until,
        "CHG-78 vendor patch",
    ));
    held.assert_stdout_contains("invitation for ana@vendor.example: targets db01 as root");
    let listed = gw.admin.ok(&["--output", "json", "invite", "list"]).json();
    assert_eq!(listed, json!([]), "a held invitation is not kept");
    let id = held_change(&held);
    gw.admin
        .fail(&["change", "approve", &id])
        .assert_stderr_contains("nobody approves their own change");
    assert!(
        smtp.messages().is_empty(),
        "nothing is sent before the approval"
    );

    approve_held(&boss, &held);
    let mail = smtp.wait_for("ana@vendor.example", "invited");
    assert!(mail.contains("/invite/"), "{mail}");
    let listed = gw.admin.ok(&["--output", "json", "invite", "list"]).json();
    assert_eq!(listed[0]["status"], "sent", "{listed}");
    let invitation = listed[0]["id"].as_str().unwrap().to_owned();
    let audit = gw.audit();
    let created = find_entry(&audit, "invite.create", |e| {
        e["object"] == format!("invite:{invitation}")
    });
    assert_eq!(created["details"]["approved_by"], "boss", "{created}");
    assert_eq!(created["details"]["change"], id.as_str(), "{created}");
    assert_eq!(created["actor"], listed[0]["inviter"], "{created}");
}

#[test]
fn an_invitee_works_in_a_real_browser() {
    use crate::console_browser::{browser_dir, browser_unavailable, screenshot_dir, CHROMIUM};
    if let Some(why) = browser_unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let smtp_dir = tempfile::tempdir().unwrap();
    let Some(smtp) = Smtp::start(smtp_dir.path()) else {
        assert!(std::env::var("CI").is_err(), "aiosmtpd is missing in CI");
        return;
    };
    let ext_port = free_port();
    let config = external_config(ext_port, &smtp, "");
    let Some(gw) = setup_with_config(Backend::Sqlite, None, Some(&config)) else {
        return;
    };
    let port = gw.sshd.port.to_string();
    gw.admin.ok(&[
        "target",
        "add",
        "db02",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ]);
    let stdout = gw.server.stdout_text();
    let fingerprint = after(&stdout, "external tls fingerprint (sha256): ")
        .unwrap()
        .to_owned();
    let ext = Ext {
        api: Api::without_redirects(&format!("https://127.0.0.1:{ext_port}"), &fingerprint),
        port: ext_port,
        fingerprint,
    };
    let created = invite(
        &gw.admin,
        "ana@vendor.example",
        &rfc3339_in(3600),
        "CHG-77 vendor patch",
        &[],
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let link = ext.link(&smtp, "ana@vendor.example");
    let sync = gw.inst.path().join("invite-sync");
    std::fs::create_dir_all(&sync).unwrap();
    let base = format!("https://127.0.0.1:{ext_port}");
    let cfg = json!({
        "base": base,
        "link": format!("{base}{link}"),
        "password": "vendor-patch-afternoon-4417",
        "chromium": CHROMIUM,
        "screenshots": screenshot_dir(),
        "sync": sync,
    });
    let file = gw.inst.path().join("invite-browser.json");
    std::fs::write(&file, cfg.to_string()).unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir().join("invite.mjs"))
        .arg(&file)
        .current_dir(browser_dir());
    let mut node = Running::spawn(cmd, "node invite.mjs");
    wait_until(
        "the browser worked in the terminal and tried every other place",
        Duration::from_secs(180),
        || sync.join("checked").exists(),
    );
    gw.admin.ok(&["invite", "revoke", &id]);
    std::fs::write(sync.join("revoked"), "").unwrap();
    let status = node.wait(Duration::from_secs(120));
    assert!(status.is_some_and(|s| s.success()), "{}", node.describe());
    let out = node.stdout();
    let results: Value = serde_json::from_str(out.trim().lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("results: {e}: {out}"));
    assert_eq!(results["cspViolations"], json!([]), "{results}");
    assert_eq!(results["links"], json!(["root@db01"]), "{results}");
    assert!(
        results["screen"].as_str().unwrap().contains("browser-42"),
        "{results}"
    );
    for p in [
        "/api/v1/targets",
        "/api/v1/openapi.json",
        "/targets",
        "/users",
        "/orbit",
        "/audit",
    ] {
        assert_eq!(results["refused"][p], 404, "{p}: {results}");
    }
    assert!(
        results["refused"]["/terminal/db02/root"].is_string(),
        "{results}"
    );
    assert_eq!(results["reusedLink"], 401, "{results}");
    assert!(
        results["ended"].as_str().unwrap().contains("revoked"),
        "{results}"
    );
    let session = results["session"].as_str().unwrap();
    let (_, cast) = gw.export(session);
    assert!(cast.text("o").contains("browser-42"), "{}", cast.text("o"));
}

/// The external listener's client, from the server's start-up lines.
fn ext_of(gw: &Gw, ext_port: u16) -> Ext {
    let stdout = gw.server.stdout_text();
    let fingerprint = after(&stdout, "external tls fingerprint (sha256): ")
        .expect("the external listener's fingerprint")
        .to_owned();
    Ext {
        api: Api::without_redirects(&format!("https://127.0.0.1:{ext_port}"), &fingerprint),
        port: ext_port,
        fingerprint,
    }
}

/// Mails to `to` whose text contains `needle`.
fn mails_to(smtp: &Smtp, to: &str, needle: &str) -> Vec<String> {
    smtp.messages()
        .into_iter()
        .filter(|m| m.lines().any(|l| l.starts_with("To:") && l.contains(to)) && m.contains(needle))
        .collect()
}

/// A user (not an admin) invites where a policy gives it `invite`: refused without the policy
/// and outside it (403, naming the target and why); with an `approve` policy the invitation is
/// an access request and nothing is kept or mailed; its requester cannot approve it; an
/// approver's approval keeps it and mails the link, which the invitee redeems; a denial ends
/// another such request with nothing sent. An `allow` policy keeps it at once.
#[test]
fn a_user_invites_by_policy_and_its_approval_sends_the_link_sqlite() {
    a_user_invites_by_policy_and_its_approval_sends_the_link(Backend::Sqlite);
}

#[test]
fn a_user_invites_by_policy_and_its_approval_sends_the_link_postgres() {
    a_user_invites_by_policy_and_its_approval_sends_the_link(Backend::Postgres);
}

fn a_user_invites_by_policy_and_its_approval_sends_the_link(backend: Backend) {
    let smtp_dir = tempfile::tempdir().unwrap();
    let Some(smtp) = Smtp::start(smtp_dir.path()) else {
        assert!(std::env::var("CI").is_err(), "aiosmtpd is missing in CI");
        return;
    };
    let ext_port = free_port();
    let config = external_config(ext_port, &smtp, "");
    // `p`: ops may open sessions on tag:prod (db01) at once.
    let Some(gw) = setup_with_config(backend, Some("allow"), Some(&config)) else {
        return;
    };
    let ext = ext_of(&gw, ext_port);
    let port = gw.sshd.port.to_string();
    let root_key = gw.keys.join("root_key");
    // db02 (not prod): ops has no sessions there.
    gw.admin.ok(&[
        "target",
        "add",
        "db02",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ]);
    gw.admin.ok(&[
        "credential",
        "add",
        "db02",
        "root",
        "--key-file",
        root_key.to_str().unwrap(),
    ]);
    let until = rfc3339_in(3600);

    // Without an `invite` policy, a user is refused naming why.
    let refused = gw
        .alice
        .fail(&invite_args("ana@vendor.example", &until, "CHG-90 vendor"));
    refused.assert_stderr_contains("no policy grants you invite on db01");

    // lea (an approver, in ops and leads) may invite to ops' targets with leads' approval.
    gw.admin.ok(&["group", "add", "leads"]);
    let (lea, _, _) = add_user_cli(
        &gw.inst,
        &gw.server,
        &gw.admin,
        "lea",
        "approver",
        &["ops", "leads"],
    );
    let (max, _, _) = add_user_cli(
        &gw.inst,
        &gw.server,
        &gw.admin,
        "max",
        "approver",
        &["leads"],
    );
    gw.admin.ok(&[
        "policy",
        "add",
        "vendors",
        "--group",
        "ops",
        "--targets",
        "*",
        "--allow",
        "invite",
        "--outcome",
        "approve",
        "--levels",
        "leads:1",
    ]);
    // `invite` on db02, but no session of lea's own there: the invitation would reach beyond her.
    let mut beyond = invite_args("ana@vendor.example", &until, "CHG-90 vendor");
    beyond[5] = "db02";
    let r = lea.fail(&beyond);
    r.assert_stderr_contains("no policy grants you sessions on db02");
    r.assert_stderr_contains("never reaches beyond its inviter");
    // A target that does not exist reads like one without the policy.
    beyond[5] = "nosuch";
    lea.fail(&beyond)
        .assert_stderr_contains("no policy grants you invite on nosuch");

    // Inside the policy: an access request of access `invite`, nothing kept, nothing mailed.
    let mut args = vec!["--output", "json"];
    args.extend(invite_args("ana@vendor.example", &until, "CHG-90 vendor"));
    let asked = lea.ok(&args).json();
    assert_eq!(asked["requested"], true, "{asked}");
    let request = asked["request"]["id"].as_str().unwrap().to_owned();
    assert_eq!(asked["request"]["access"], json!(["invite"]), "{asked}");
    assert_eq!(asked["request"]["state"], "pending", "{asked}");
    assert_eq!(asked["request"]["policy"], "vendors", "{asked}");
    assert_eq!(
        asked["request"]["invitation"]["email"], "ana@vendor.example",
        "{asked}"
    );
    let text = lea.ok(&invite_args("bo@vendor.example", &until, "CHG-91 vendor"));
    text.assert_stdout_contains("waiting for approval: request");
    let second = text.value_after("waiting for approval: request");
    let second = second.split_whitespace().next().unwrap().to_owned();
    assert_eq!(
        gw.admin.ok(&["--output", "json", "invite", "list"]).json(),
        json!([]),
        "nothing is kept before the approval"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        mails_to(&smtp, "ana@vendor.example", "invite").is_empty(),
        "nothing is mailed to the invitee before the approval"
    );

    // The requester never approves its own; an approver of leads does.
    lea.fail(&["request", "approve", &request])
        .assert_stderr_contains("nobody decides their own request");
    max.ok(&[
        "request",
        "approve",
        &request,
        "--comment",
        "vendor is expected",
    ])
    .assert_stdout_contains("approved");
    let link = ext.link(&smtp, "ana@vendor.example");
    let listed = gw.admin.ok(&["--output", "json", "invite", "list"]).json();
    assert_eq!(listed[0]["inviter"], "lea", "{listed}");
    assert_eq!(listed[0]["email"], "ana@vendor.example", "{listed}");
    let invitation = listed[0]["id"].as_str().unwrap().to_owned();
    let audit = gw.audit();
    let created = find_entry(&audit, "invite.create", |e| {
        e["object"] == format!("invite:{invitation}")
    });
    assert_eq!(created["actor"], "lea", "{created}");
    assert_eq!(created["details"]["request"], request.as_str(), "{created}");
    assert_eq!(created["details"]["approved_by"], "max", "{created}");
    // An approved invitation request is not a grant of lea's.
    let grants = lea.ok(&["--output", "json", "grant", "list"]).json();
    assert!(
        json_items(&grants)
            .iter()
            .all(|g| g["id"] != request.as_str()),
        "{grants}"
    );

    // The invitee redeems the link and sees the invited pair.
    let (enrolled, _) = ext.enrol(&link, "vendor-patch-afternoon-4417");
    assert_eq!(enrolled.status, 303, "{}", enrolled.text);
    let cookie = cookie_of(&enrolled).expect("the invitee's cookie");
    let home = ext.get("/", &cookie);
    assert!(home.text.contains("root@db01"), "{}", home.text);

    // One refusal ends the other request: nothing is kept or sent.
    max.ok(&["request", "deny", &second, "--comment", "not this week"])
        .assert_stdout_contains("denied");
    let listed = gw.admin.ok(&["--output", "json", "invite", "list"]).json();
    assert_eq!(json_items(&listed).len(), 1, "{listed}");
    assert!(mails_to(&smtp, "bo@vendor.example", "/invite/").is_empty());

    // The approval judges the requester's policies again: without `vendors` now, refused.
    let asked = lea.ok(&args).json();
    let third = asked["request"]["id"].as_str().unwrap().to_owned();
    gw.admin.ok(&["policy", "remove", "vendors"]);
    max.fail(&["request", "approve", &third])
        .assert_stderr_contains("the invitation lea asked for no longer holds");
    let shown = max
        .ok(&["--output", "json", "request", "show", &third])
        .json();
    assert_eq!(shown["state"], "pending", "{shown}");

    // An `allow` policy keeps it at once, audited with its policy.
    gw.admin.ok(&[
        "policy",
        "add",
        "open-invites",
        "--group",
        "leads",
        "--targets",
        "tag:prod",
        "--allow",
        "invite,session",
        "--outcome",
        "allow",
    ]);
    let kept = invite(&max, "cy@vendor.example", &until, "CHG-92 vendor", &[]);
    assert_eq!(kept["status"], "sent", "{kept}");
    assert_eq!(kept["inviter"], "max", "{kept}");
    ext.link(&smtp, "cy@vendor.example");
    let audit = gw.audit();
    let created = find_entry(&audit, "invite.create", |e| {
        e["object"] == format!("invite:{}", kept["id"].as_str().unwrap())
    });
    assert_eq!(created["details"]["policy"], "open-invites", "{created}");

    // --approve-each-session on an invitation by policy: its inviter decides each session (as
    // an admin may); anyone else who is not an admin is refused.
    let supervised = invite(
        &max,
        "dee@vendor.example",
        &until,
        "CHG-93 supervised",
        &["--approve-each-session"],
    );
    let id = supervised["id"].as_str().unwrap().to_owned();
    let link = ext.link(&smtp, "dee@vendor.example");
    let (enrolled, _) = ext.enrol(&link, "vendor-watched-evening-5521");
    let cookie = cookie_of(&enrolled).expect("the invitee's cookie");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let before = gw.sshd.log().len();
    let mut ws = rt.block_on(ext.terminal("db01", "root", &cookie));
    let (notice, _) = rt.block_on(next_event(&mut ws, Duration::from_secs(30)));
    assert_eq!(notice["type"], "notice", "{notice}");
    let ask = notice["approval"].as_str().unwrap().to_owned();
    assert_nothing_reached_sshd(&gw.sshd, before, "a session waiting for its inviter");
    lea.fail(&["invite", "approve-session", &id, &ask])
        .assert_stderr_contains("forbidden");
    max.ok(&["invite", "approve-session", &id, &ask])
        .assert_stdout_contains("approved");
    let (started, _) = rt.block_on(next_event(&mut ws, Duration::from_secs(60)));
    assert_eq!(started["type"], "started", "{started}");
    let audit = gw.audit();
    let decided = find_entry(&audit, "invite.session_decide", |e| {
        e["object"] == format!("invite:{id}")
    });
    assert_eq!(decided["actor"], "max", "{decided}");

    // The inviter leaves: what they invited goes with them, live session included.
    gw.admin
        .ok(&["user", "disable", "max", "--reason", "left the company"]);
    let (ended, _) = rt.block_on(next_event(&mut ws, Duration::from_secs(30)));
    assert_eq!(ended["type"], "ended", "{ended}");
    assert!(
        ended["reason"]
            .as_str()
            .unwrap()
            .contains("its inviter max was disabled"),
        "{ended}"
    );
    let shown = gw
        .admin
        .ok(&["--output", "json", "invite", "show", &id])
        .json();
    assert_eq!(shown["status"], "revoked", "{shown}");
    let relogin = ext.get("/", &cookie);
    assert_ne!(
        relogin.status, 200,
        "the invitee's cookie still works: {}",
        relogin.text
    );
}

/// `[external] second_factor = "email"`: the link's page shows no TOTP; after the password a
/// code goes to the invitation's address through the outbox (read here from the real SMTP
/// receiver). A wrong code is refused, the right one logs in once (reused: refused), a code
/// left past `code_seconds` is refused, three wrong tries void it; the code is in no log.
#[test]
fn an_invitee_logs_in_with_a_code_sent_by_mail_sqlite() {
    an_invitee_logs_in_with_a_code_sent_by_mail(Backend::Sqlite);
}

#[test]
fn an_invitee_logs_in_with_a_code_sent_by_mail_postgres() {
    an_invitee_logs_in_with_a_code_sent_by_mail(Backend::Postgres);
}

fn an_invitee_logs_in_with_a_code_sent_by_mail(backend: Backend) {
    let smtp_dir = tempfile::tempdir().unwrap();
    let Some(smtp) = Smtp::start(smtp_dir.path()) else {
        assert!(std::env::var("CI").is_err(), "aiosmtpd is missing in CI");
        return;
    };
    let ext_port = free_port();
    let config = external_config(
        ext_port,
        &smtp,
        "second_factor = \"email\"\ncode_seconds = 30\n",
    );
    let Some(gw) = setup_with_config(backend, None, Some(&config)) else {
        return;
    };
    let ext = ext_of(&gw, ext_port);
    let email = "dee@vendor.example";
    let password = "mailed-codes-afternoon-5521";
    invite(
        &gw.admin,
        email,
        &rfc3339_in(3600),
        "CHG-80 mailed codes",
        &[],
    );
    let link = ext.link(&smtp, email);
    // Quoted-printable: soft line breaks out, lines joined.
    let invited = smtp
        .wait_for(email, "invited")
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("\r\n", " ")
        .replace('\n', " ");
    assert!(
        invited.contains("each login then sends a code"),
        "{invited}"
    );

    // First use: a password only, no TOTP key on the page.
    let page = ext.api.get(&link, None);
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(!page.text.contains("totp-secret"), "{}", page.text);
    let post = |path: &str, pairs: &[(&str, &str)]| {
        ext.api
            .send("POST", path, &[SAME_ORIGIN], Some((FORM, form(pairs))))
    };
    let codes_seen = std::cell::RefCell::new(Vec::<String>::new());
    // The next code mailed to the invitee: one no earlier mail had.
    let next_code = || {
        let code_of = |m: &str| {
            m.lines()
                .map(str::trim)
                .find(|l| l.len() == 8 && l.bytes().all(|b| b.is_ascii_digit()))
                .unwrap_or_else(|| panic!("no code in:\n{m}"))
                .to_owned()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let fresh = mails_to(&smtp, email, "login code")
                .iter()
                .map(|m| code_of(m))
                .find(|c| !codes_seen.borrow().contains(c));
            if let Some(code) = fresh {
                codes_seen.borrow_mut().push(code.clone());
                return code;
            }
            assert!(std::time::Instant::now() < deadline, "no new code by mail");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let ticket_of = |r: &Resp| {
        assert_eq!(r.status, 200, "{}", r.text);
        between(&r.text, "name=\"ticket\" value=\"", "\"")
    };
    let redeemed = post(&link, &[("password", password)]);
    let ticket = ticket_of(&redeemed);
    let code = next_code();
    // A wrong code is refused (the same page, to try again); the right one logs in, once.
    let wrong = if code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    let r = post("/login/code", &[("ticket", &ticket), ("code", wrong)]);
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(cookie_of(&r).is_none());
    let r = post("/login/code", &[("ticket", &ticket), ("code", &code)]);
    assert_eq!(r.status, 303, "{}", r.text);
    let cookie = cookie_of(&r).expect("the invitee's cookie");
    assert!(ext.get("/", &cookie).text.contains("root@db01"));
    let reused = post("/login/code", &[("ticket", &ticket), ("code", &code)]);
    assert_eq!(reused.status, 401, "{}", reused.text);

    // A later login: no code field, the password sends a new code.
    let login_page = ext.api.get("/login", None);
    assert!(
        !login_page.text.contains("name=\"code\""),
        "{}",
        login_page.text
    );
    let r = post("/login", &[("email", email), ("password", password)]);
    let ticket = ticket_of(&r);
    let code = next_code();
    // A wrong password looks the same and sends nothing; its ticket takes no code.
    let bad = post(
        "/login",
        &[("email", email), ("password", "not-the-password-0000")],
    );
    let bad_ticket = ticket_of(&bad);
    // The same page but for the ticket (and the page's CSP nonce).
    let main = |r: &Resp, ticket: &str| {
        let at = r.text.find("<main").expect("a main element");
        r.text[at..].replace(ticket, "")
    };
    assert_eq!(
        main(&bad, &bad_ticket),
        main(&r, &ticket),
        "a wrong password gets the same page"
    );
    let r2 = post("/login/code", &[("ticket", &bad_ticket), ("code", &code)]);
    assert_eq!(r2.status, 401, "{}", r2.text);
    let r = post("/login/code", &[("ticket", &ticket), ("code", &code)]);
    assert_eq!(r.status, 303, "{}", r.text);

    // Three wrong tries void a code: the right one no longer works.
    let r = post("/login", &[("email", email), ("password", password)]);
    let ticket = ticket_of(&r);
    let code = next_code();
    let wrong = if code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    for _ in 0..3 {
        let r = post("/login/code", &[("ticket", &ticket), ("code", wrong)]);
        assert_eq!(r.status, 401, "{}", r.text);
    }
    let r = post("/login/code", &[("ticket", &ticket), ("code", &code)]);
    assert_eq!(r.status, 401, "a voided code: {}", r.text);

    // Past `code_seconds`, a code is refused.
    let r = post("/login", &[("email", email), ("password", password)]);
    let ticket = ticket_of(&r);
    let code = next_code();
    std::thread::sleep(Duration::from_secs(31));
    // A new client: the server may have closed the old one's idle connection meanwhile.
    let fresh = ext_of(&gw, ext_port);
    let r = fresh.api.send(
        "POST",
        "/login/code",
        &[SAME_ORIGIN],
        Some((FORM, form(&[("ticket", &ticket), ("code", &code)]))),
    );
    assert_eq!(r.status, 401, "an expired code: {}", r.text);

    let audit = gw
        .admin
        .ok(&["audit", "export", "--format", "jsonl"])
        .stdout;
    for (what, text) in [
        ("stdout", gw.server.stdout_text()),
        ("stderr", gw.server.stderr_text()),
        ("audit", audit.clone()),
    ] {
        assert!(
            !text.contains(&code),
            "the mailed code is in the server's {what}"
        );
        assert!(
            !text.contains(&ticket),
            "the code's ticket is in the server's {what}"
        );
    }
    for why in [
        "wrong mailed code",
        "the code expired",
        "\"invite.code_sent\"",
    ] {
        assert!(audit.contains(why), "no {why} in the audit trail");
    }
}

/// Mailed codes in Chromium (crates/cofre/tests/browser/invite-email.mjs): the link's page
/// without a TOTP key, the code page (a wrong code refused on it), the code from the real mail,
/// the home page and the login page, each passing axe-core with no serious or critical
/// violation, and no CSP violation.
#[test]
fn an_invitee_with_mailed_codes_works_in_a_real_browser() {
    use crate::console_browser::{browser_dir, browser_unavailable, screenshot_dir, CHROMIUM};
    if let Some(why) = browser_unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let smtp_dir = tempfile::tempdir().unwrap();
    let Some(smtp) = Smtp::start(smtp_dir.path()) else {
        assert!(std::env::var("CI").is_err(), "aiosmtpd is missing in CI");
        return;
    };
    let ext_port = free_port();
    let config = external_config(ext_port, &smtp, "second_factor = \"email\"\n");
    let Some(gw) = setup_with_config(Backend::Sqlite, None, Some(&config)) else {
        return;
    };
    let ext = ext_of(&gw, ext_port);
    let email = "eve@vendor.example";
    invite(
        &gw.admin,
        email,
        &rfc3339_in(3600),
        "CHG-81 mailed codes",
        &[],
    );
    let link = ext.link(&smtp, email);
    let sync = gw.inst.path().join("invite-email-sync");
    std::fs::create_dir_all(&sync).unwrap();
    let base = format!("https://127.0.0.1:{ext_port}");
    let cfg = json!({
        "base": base,
        "link": format!("{base}{link}"),
        "password": "mailed-codes-browser-7781",
        "chromium": CHROMIUM,
        "screenshots": screenshot_dir(),
        "sync": sync,
    });
    let file = gw.inst.path().join("invite-email-browser.json");
    std::fs::write(&file, cfg.to_string()).unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir().join("invite-email.mjs"))
        .arg(&file)
        .current_dir(browser_dir());
    let mut node = Running::spawn(cmd, "node invite-email.mjs");
    wait_until(
        "the browser reached the code page",
        Duration::from_secs(120),
        || sync.join("code-wanted").exists(),
    );
    let mail = smtp.wait_for(email, "login code");
    let code = mail
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 8 && l.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no code in:\n{mail}"))
        .to_owned();
    std::fs::write(sync.join("code"), &code).unwrap();
    let status = node.wait(Duration::from_secs(120));
    assert!(status.is_some_and(|s| s.success()), "{}", node.describe());
    let out = node.stdout();
    let results: Value = serde_json::from_str(out.trim().lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("results: {e}: {out}"));
    assert_eq!(results["cspViolations"], json!([]), "{results}");
    assert_eq!(results["totpShown"], false, "{results}");
    assert_eq!(results["loginAsksCode"], false, "{results}");
    assert_eq!(results["links"], json!(["root@db01"]), "{results}");
    assert!(
        results["wrongCode"].as_str().unwrap().contains("wrong"),
        "{results}"
    );
    for page in ["enrol", "code", "code-refused", "home", "login"] {
        assert!(results["axe"][page].is_array(), "axe on {page}: {results}");
    }
}
