//! The web console over HTTPS, as a browser without scripts sees it: every page × every role
//! (refused as the API refuses), the login with a one-time password and TOTP, the CSRF token on
//! every change, the headers (CSP without unsafe-inline, no-store, hashed assets cached), and
//! stored markup rendered as text. The browser itself (Chromium, the terminal, axe) is
//! `console_browser`.

use crate::harness::*;
use serde_json::json;
use std::collections::BTreeMap;

/// A browser session: the console's cookie and the page's CSRF token.
pub(crate) struct Browser {
    pub api: Api,
    pub cookie: Option<String>,
}

pub(crate) fn cookie_from(r: &Resp) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("__Host-cofre="))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
}

/// The value of the first hidden `csrf` field of a page.
pub(crate) fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in the page:\n{page}"));
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

pub(crate) fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

impl Browser {
    pub(crate) fn new(server: &Server) -> Browser {
        Browser {
            api: Api::without_redirects(&server.url, &server.fingerprint),
            cookie: None,
        }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![("sec-fetch-site", "same-origin".to_owned())];
        if let Some(c) = &self.cookie {
            h.push(("cookie", format!("__Host-cofre={c}")));
        }
        h
    }

    pub(crate) fn get(&self, path: &str) -> Resp {
        let h = self.headers();
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.api.send("GET", path, &h, None)
    }

    pub(crate) fn post(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        self.post_with(path, fields, &[])
    }

    pub(crate) fn post_with(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Resp {
        let h = self.headers();
        let mut h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for (k, v) in extra {
            h.retain(|(hk, _)| hk != k);
            h.push((k, v));
        }
        self.api.send(
            "POST",
            path,
            &h,
            Some(("application/x-www-form-urlencoded", form(fields))),
        )
    }

    /// The CSRF token of this session, read from its home page.
    pub(crate) fn csrf(&self) -> String {
        let r = self.get("/");
        assert_eq!(r.status, 200, "{}", r.text);
        csrf_of(&r.text)
    }

    /// Logs in through the login form; returns the answer (a redirect when it worked).
    pub(crate) fn login(&mut self, user: &str, password: &str, totp: Option<&str>) -> Resp {
        let mut fields = vec![("username", user), ("password", password)];
        if let Some(t) = totp {
            fields.push(("totp_code", t));
        }
        let r = self.post("/login", &fields);
        if let Some(c) = cookie_from(&r) {
            self.cookie = Some(c);
        }
        r
    }
}

fn ticket_of(page: &str) -> String {
    page.split("name=\"ticket\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the TOTP step carries a ticket")
        .to_owned()
}

fn location(r: &Resp) -> &str {
    r.headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Admin,
    Approver,
    User,
    Auditor,
    Operator,
    Support,
}

const ALL: &[Who] = &[
    Who::Admin,
    Who::Approver,
    Who::User,
    Who::Auditor,
    Who::Operator,
    Who::Support,
];
const LISTERS: &[Who] = &[Who::Admin, Who::Approver, Who::User];
const READERS: &[Who] = &[Who::Admin, Who::Auditor];
const ADMIN: &[Who] = &[Who::Admin];
const DECIDERS: &[Who] = &[Who::Admin, Who::Approver];
const WATCHERS: &[Who] = &[Who::Admin, Who::Approver, Who::Auditor];
/// Who the support service lets see grants: the vendor's own, the customer's admins and auditors.
const SUPPORT_VIEWERS: &[Who] = &[Who::Admin, Who::Auditor, Who::Support];
const SUPPORT_ONLY: &[Who] = &[Who::Support];
const SUPPORT_REVOKERS: &[Who] = &[Who::Admin, Who::Support];

/// One console route and who may use it. `ok`: the call succeeds for those roles (else it is
/// only not refused: a 404 for a made-up id).
struct Row {
    method: &'static str,
    path: &'static str,
    fields: Vec<(&'static str, String)>,
    may: &'static [Who],
    ok: bool,
}

fn get(path: &'static str, may: &'static [Who]) -> Row {
    Row {
        method: "GET",
        path,
        fields: Vec::new(),
        may,
        ok: true,
    }
}

fn post(path: &'static str, fields: &[(&'static str, &str)], may: &'static [Who]) -> Row {
    Row {
        method: "POST",
        path,
        fields: fields.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        may,
        ok: true,
    }
}

/// Every page and change of the console, per role, refused as the role table says; the same
/// changes without their CSRF token, or sent from another site, refused for everyone; nobody
/// logged in is sent to the login page; a one-time-password session only to the password form.
#[test]
fn console_pages_per_role() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let api = server.api();
    let (admin, admin_pw) = admin_token(&server);
    api.post(
        "/api/v1/targets",
        Some(&admin),
        json!({"name": "db01", "host": "10.0.0.5", "tags": ["prod"]}),
    )
    .assert_ok();
    api.post(
        "/api/v1/targets/db01/credentials",
        Some(&admin),
        json!({"account": "root", "password": "pw-console-1"}),
    )
    .assert_ok();
    api.post("/api/v1/groups", Some(&admin), json!({"name": "ops"}))
        .assert_ok();
    api.post(
        "/api/v1/policies",
        Some(&admin),
        json!({"name": "ops-prod", "group": "ops", "targets": ["tag:prod"], "allow": ["session", "reveal"], "outcome": "allow"}),
    )
    .assert_ok();
    let mut browsers: BTreeMap<Who, Browser> = BTreeMap::new();
    let mut admin_b = Browser::new(&server);
    let r = admin_b.login("admin", &admin_pw, None);
    assert_eq!((r.status, location(&r)), (303, "/"), "{}", r.text);
    browsers.insert(Who::Admin, admin_b);
    for (who, name, role, groups) in [
        (Who::Approver, "approver1", "approver", vec!["ops"]),
        (Who::User, "user1", "user", vec!["ops"]),
        (Who::Auditor, "auditor1", "auditor", vec![]),
        (Who::Operator, "operator1", "operator", vec![]),
        (Who::Support, "support1", "support", vec![]),
    ] {
        let (_, pw) = api.make_user(&admin, name, role, &groups);
        let mut b = Browser::new(&server);
        let r = b.login(name, &pw, None);
        assert_eq!((r.status, location(&r)), (303, "/"), "{name}: {}", r.text);
        browsers.insert(who, b);
    }

    let mut failures = Vec::new();
    for (&who, b) in &browsers {
        let tag = format!("{who:?}").to_lowercase();
        let rows = vec![
            get("/", ALL),
            get("/password", ALL),
            get("/totp", ALL),
            get("/requests", ALL),
            get("/targets", LISTERS),
            get("/targets/db01", LISTERS),
            get("/terminal/db01/root", LISTERS),
            get("/inbox", DECIDERS),
            get("/grants", READERS),
            get("/users", ADMIN),
            get("/groups", ADMIN),
            get("/policies", READERS),
            get("/audit", READERS),
            // Approvers see the moderated live sessions they may watch (none here).
            get("/sessions", WATCHERS),
            get("/policies/ops-prod/edit", ADMIN),
            get("/audit/export.csv", READERS),
            get("/recordings", READERS),
            Row {
                ok: false,
                ..get("/recordings/no-such-session", READERS)
            },
            get("/orbit", ADMIN),
            // The watch page is a shell; the watch is its events', refused as the API's is.
            get("/sessions/no-such-session/watch", WATCHERS),
            Row {
                ok: false,
                ..get("/sessions/no-such-session/watch/events", WATCHERS)
            },
            get("/emergency", ADMIN),
            get("/support", SUPPORT_VIEWERS),
            Row {
                ok: false,
                ..get("/support/no-such-grant", SUPPORT_VIEWERS)
            },
            Row {
                ok: false,
                ..get("/support/no-such-grant/activity", SUPPORT_VIEWERS)
            },
            post(
                "/support",
                &[
                    ("scope", "diagnostics"),
                    ("reason", "matrix <b>reason</b>"),
                    ("ticket", "T-1"),
                    ("duration", "1h"),
                ],
                SUPPORT_ONLY,
            ),
            Row {
                ok: false,
                ..post(
                    "/support/no-such-grant/decide",
                    &[("verdict", "approve"), ("comment", "ok")],
                    ADMIN,
                )
            },
            Row {
                ok: false,
                ..post("/support/no-such-grant/revoke", &[], SUPPORT_REVOKERS)
            },
            Row {
                method: "POST",
                path: "/sessions/no-such-session/lock",
                fields: vec![("reason", "matrix lock".into())],
                may: ADMIN,
                ok: false,
            },
            Row {
                method: "POST",
                path: "/sessions/no-such-session/unlock",
                fields: vec![("reason", "matrix unlock".into())],
                may: ADMIN,
                ok: false,
            },
            // Not locked down: the admin is told so (409), everyone else refused.
            Row {
                method: "POST",
                path: "/emergency/lift",
                fields: vec![("reason", "matrix lift".into())],
                may: ADMIN,
                ok: false,
            },
            Row {
                method: "POST",
                path: "/audit/verify",
                fields: vec![],
                may: READERS,
                ok: true,
            },
            Row {
                method: "POST",
                path: "/groups",
                fields: vec![("name", format!("g-{tag}"))],
                may: ADMIN,
                ok: true,
            },
            Row {
                method: "POST",
                path: "/users",
                fields: vec![
                    ("username", format!("u-{tag}")),
                    ("role", "user".into()),
                    ("groups", String::new()),
                ],
                may: ADMIN,
                ok: true,
            },
            Row {
                method: "POST",
                path: "/targets",
                fields: vec![("name", format!("t-{tag}")), ("host", "10.0.0.9".into())],
                may: ADMIN,
                ok: true,
            },
            Row {
                ok: false,
                ..Row {
                    method: "POST",
                    path: "/sessions/no-such-session/terminate",
                    fields: vec![("reason", "test".into())],
                    may: ADMIN,
                    ok: false,
                }
            },
            // The admin's user, group and policy changes, on names that do not exist: refused
            // to every other role, a 404 (not a refusal) for the admin.
            Row {
                ok: false,
                ..post("/users/no-such-user/role", &[("role", "user")], ADMIN)
            },
            Row {
                ok: false,
                ..post("/users/no-such-user/reset", &[], ADMIN)
            },
            Row {
                ok: false,
                ..post(
                    "/users/no-such-user/disable",
                    &[("reason", "matrix")],
                    ADMIN,
                )
            },
            Row {
                ok: false,
                ..post("/users/no-such-user/enable", &[], ADMIN)
            },
            Row {
                ok: false,
                ..post(
                    "/groups/members/remove",
                    &[("group", "no-such-group"), ("username", "user1")],
                    ADMIN,
                )
            },
            Row {
                ok: false,
                ..post("/policies/no-such-policy/remove", &[], ADMIN)
            },
            // An edit from a version that is not the policy's: 409 for the admin.
            Row {
                ok: false,
                ..post(
                    "/policies/ops-prod/edit",
                    &[
                        ("version", "0000000000000000"),
                        ("name", "ops-prod"),
                        ("group", "ops"),
                        ("targets", "tag:prod"),
                        ("allow_session", "true"),
                        ("outcome", "allow"),
                    ],
                    ADMIN,
                )
            },
            Row {
                ok: false,
                ..post(
                    "/policies",
                    &[
                        ("name", "p-matrix"),
                        ("group", "no-such-group"),
                        ("targets", "db01"),
                        ("allow_session", "true"),
                        ("outcome", "allow"),
                    ],
                    ADMIN,
                )
            },
            Row {
                ok: false,
                ..get("/orbit/snapshots/jobs/no-such-job", ADMIN)
            },
            Row {
                ok: false,
                ..post("/orbit/snapshots/no-such-snapshot/verify", &[], ADMIN)
            },
            Row {
                ok: false,
                ..post("/orbit/backups/no-such-job/run", &[], ADMIN)
            },
            Row {
                ok: false,
                ..get("/orbit/backups/runs/999999", ADMIN)
            },
            // Policy grants user1 and approver1 (ops) a reveal; the admin has no policy of its
            // own, so its refusal is the policy's (a 403 all the same).
            Row {
                method: "POST",
                path: "/targets/db01/credentials/root/reveal",
                fields: vec![("reason", "console matrix".into())],
                may: &[Who::Approver, Who::User],
                ok: true,
            },
        ];
        let csrf = b.csrf();
        for row in &rows {
            let mut fields: Vec<(&str, &str)> =
                row.fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            if row.method == "POST" {
                // Without the token first: refused whoever asks, and nothing happens.
                let r = b.post(row.path, &fields);
                if r.status != 403 || !r.text.contains("csrf_failed") {
                    failures.push(format!(
                        "{who:?} POST {} without CSRF: {} {}",
                        row.path, r.status, r.text
                    ));
                }
                let r = b.post_with(row.path, &[("csrf", "0000")], &[]);
                if r.status != 403 || !r.text.contains("csrf_failed") {
                    failures.push(format!(
                        "{who:?} POST {} with a wrong CSRF token: {}",
                        row.path, r.status
                    ));
                }
                // With the token but from another site.
                let mut with = fields.clone();
                with.push(("csrf", csrf.as_str()));
                let r = b.post_with(row.path, &with, &[("sec-fetch-site", "cross-site")]);
                if r.status != 403 || !r.text.contains("csrf_failed") {
                    failures.push(format!(
                        "{who:?} POST {} cross-site: {}",
                        row.path, r.status
                    ));
                }
                fields.push(("csrf", csrf.as_str()));
            }
            let r = if row.method == "POST" {
                b.post(row.path, &fields)
            } else {
                b.get(row.path)
            };
            let allowed = row.may.contains(&who);
            let good = if allowed {
                if row.ok {
                    (200..400).contains(&r.status)
                } else {
                    ![401, 403].contains(&r.status) && r.status < 500
                }
            } else {
                r.status == 403
            };
            if !good {
                failures.push(format!(
                    "{who:?} {} {}: allowed={allowed}, got {} {}",
                    row.method,
                    row.path,
                    r.status,
                    &r.text[..r.text.len().min(400)]
                ));
            }
            if r.status == 200 {
                let csp = r
                    .headers
                    .get("content-security-policy")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !csp.contains("script-src 'self'") || csp.contains("unsafe") {
                    failures.push(format!("{who:?} {}: CSP {csp:?}", row.path));
                }
                if r.headers.get("cache-control").and_then(|v| v.to_str().ok()) != Some("no-store")
                {
                    failures.push(format!("{who:?} {}: not no-store", row.path));
                }
            }
        }
        // The emergency actions with their step-up: an admin (this one has no TOTP) gets past the
        // role to the TOTP check, everyone else is refused by role; without CSRF, no one.
        for path in ["/emergency/terminate-all", "/emergency/lockdown"] {
            let form = [("totp_code", "000000"), ("reason", "matrix emergency")];
            let r = b.post(path, &form);
            if r.status != 403 || !r.text.contains("csrf_failed") {
                failures.push(format!("{who:?} POST {path} without CSRF: {}", r.status));
            }
            let mut with = form.to_vec();
            with.push(("csrf", csrf.as_str()));
            let r = b.post(path, &with);
            let code = if who == Who::Admin {
                "totp_not_enrolled"
            } else {
                "data-code=\"forbidden\""
            };
            if r.status != 403 || !r.text.contains(code) {
                failures.push(format!(
                    "{who:?} POST {path}: want 403 {code}, got {} {}",
                    r.status,
                    &r.text[..r.text.len().min(400)]
                ));
            }
        }
    }
    // Nobody logged in: a page sends to the login form, a change is refused.
    let anon = Browser::new(&server);
    for path in ["/", "/targets", "/audit", "/users", "/sessions"] {
        let r = anon.get(path);
        assert_eq!((r.status, location(&r)), (303, "/login"), "GET {path}");
    }
    let r = anon.post("/groups", &[("name", "anon"), ("csrf", "x")]);
    assert_eq!(r.status, 401, "{}", r.text);
    // The single sign-on pages belong to the login: anyone reaches them, with or without a
    // session, and each refuses what it cannot use (sso.rs drives them through a provider).
    for b in [&anon, &browsers[&Who::Admin]] {
        let r = b.get("/login/sso/nope");
        assert_eq!(r.status, 404, "{}", r.text);
        let r = b.get("/login/sso/callback?state=x&code=y");
        assert_eq!(r.status, 401, "{}", r.text);
        assert!(
            r.text.contains("state: this login is unknown"),
            "{}",
            r.text
        );
    }
    // A bogus cookie is no session either (and is cleared).
    let mut bogus = Browser::new(&server);
    bogus.cookie = Some(format!("cofre_{}", random_hex(40)));
    let r = bogus.get("/");
    assert_eq!((r.status, location(&r)), (303, "/login"));
    assert!(
        cookie_from(&r).is_some_and(|c| c.is_empty()),
        "{:?}",
        r.headers
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The login form with a one-time password (forced change), TOTP enrolment with a QR code, the
/// second step asking for the code, logout; the same lockout as the API; and the login form
/// refused when sent from another site.
#[test]
fn console_login_password_change_and_totp() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let api = server.api();
    let (admin, _) = admin_token(&server);
    let otp = api.create_user(&admin, "carol", "user", &[]);
    let mut b = Browser::new(&server);
    let r = b.login("carol", &otp, None);
    assert_eq!((r.status, location(&r)), (303, "/password"), "{}", r.text);
    // Only the password form until it is changed.
    let r = b.get("/targets");
    assert_eq!((r.status, location(&r)), (303, "/password"));
    let page = b.get("/password");
    assert_eq!(page.status, 200);
    assert!(page.text.contains("one-time password"), "{}", page.text);
    let csrf = csrf_of(&page.text);
    let pw = new_password("carol");
    let r = b.post(
        "/password",
        &[
            ("current_password", &otp),
            ("new_password", &pw),
            ("csrf", &csrf),
        ],
    );
    assert_eq!((r.status, location(&r)), (303, "/"), "{}", r.text);
    b.cookie = cookie_from(&r);
    let home = b.get("/");
    assert_eq!(home.status, 200);
    assert!(home.text.contains("carol"));

    // TOTP: enrol (a QR code as an image), confirm with a code of the secret shown.
    let csrf = csrf_of(&home.text);
    let r = b.post("/totp/enroll", &[("csrf", &csrf)]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.text.contains("<img src=\"data:image/svg+xml;base64,"),
        "{}",
        r.text
    );
    let secret = r
        .text
        .split("<code class=\"secret\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("the secret is shown")
        .to_owned();
    let seed = base32_decode(&secret);
    let step = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30;
    let r = b.post(
        "/totp/confirm",
        &[
            ("code", &totp_at_step(&seed, step)),
            ("csrf", &csrf_of(&r.text)),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("TOTP is enabled"));
    let r = b.post("/logout", &[("csrf", &csrf)]);
    assert_eq!((r.status, location(&r)), (303, "/login"));
    let r = b.get("/");
    assert_eq!(location(&r), "/login", "the session ended with the logout");

    // Password, then the code: the first step answers with the second form.
    let mut b = Browser::new(&server);
    let r = b.login("carol", &pw, None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("name=\"totp_code\""), "{}", r.text);
    assert!(b.cookie.is_none(), "no session before the code");
    // The second step carries a one-use ticket, never the password.
    assert!(!r.text.contains(&pw), "the password is not in the page");
    assert!(!r.text.contains("name=\"password\""), "{}", r.text);
    let ticket = ticket_of(&r.text);
    let second = |b: &mut Browser, user: &str, ticket: &str, code: &str| {
        let r = b.post(
            "/login",
            &[("username", user), ("ticket", ticket), ("totp_code", code)],
        );
        if let Some(c) = cookie_from(&r) {
            b.cookie = Some(c);
        }
        r
    };
    let r = second(&mut b, "carol", &ticket, "000000");
    assert_eq!(r.status, 401, "a wrong code: {}", r.text);
    assert!(!r.text.contains(&pw), "{}", r.text);
    let retry = ticket_of(&r.text);
    assert_ne!(retry, ticket, "a retry gets a new ticket");
    let code = totp_at_step(&seed, step + 1);
    let r = second(&mut b, "carol", &ticket, &code);
    assert_eq!(r.status, 401, "a used ticket: {}", r.text);
    // The retry's ticket went with that refused try; a fresh one, then someone else's name.
    let r = b.login("carol", &pw, None);
    let ticket = ticket_of(&r.text);
    let r = second(&mut b, "admin", &ticket, &code);
    assert_eq!(r.status, 401, "a ticket is bound to its user: {}", r.text);
    assert!(b.cookie.is_none());
    let r = b.login("carol", &pw, None);
    let ticket = ticket_of(&r.text);
    let r = second(&mut b, "carol", &ticket, &code);
    assert_eq!((r.status, location(&r)), (303, "/"), "{}", r.text);
    assert!(b.get("/").text.contains("TOTP enabled"));

    // Audited as the API's logins are.
    let audit = api.get("/api/v1/audit?limit=500", Some(&admin));
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "carol")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in [
        "auth.login",
        "auth.logout",
        "auth.totp_enabled",
        "auth.login_failed",
    ] {
        assert!(actions.contains(&want), "{want} in {actions:?}");
    }

    // The same lockout: wrong passwords from here earn the API's back-off (429) or lock (423).
    let mut b = Browser::new(&server);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(b.login("carol", "wrong-password-x", None).status);
    }
    assert!(
        statuses.iter().any(|s| *s == 429 || *s == 423),
        "{statuses:?}"
    );

    // A login form posted from another site is refused before any check.
    let r = Browser::new(&server).post_with(
        "/login",
        &[("username", "carol"), ("password", &pw)],
        &[("sec-fetch-site", "cross-site")],
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let r = Browser::new(&server).api.send(
        "POST",
        "/login",
        &[("origin", "https://evil.example")],
        Some((
            "application/x-www-form-urlencoded",
            form(&[("username", "carol"), ("password", &pw)]),
        )),
    );
    assert_eq!(r.status, 403, "{}", r.text);
}

/// Markup in stored strings renders as text; the CSP has no unsafe-inline or unsafe-eval; the
/// assets are hashed and cached for a year; a revealed secret comes from a POST and carries its
/// hide timer; nothing of a secret is in a URL.
#[test]
fn console_escapes_markup_and_sets_headers() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let api = server.api();
    let (admin, _) = admin_token(&server);
    const XSS: &str = "<img src=x onerror=alert(1)>";
    // Names are identifiers: the API refuses markup in a target's name, naming the field.
    let r = api.post(
        "/api/v1/targets",
        Some(&admin),
        json!({"name": XSS, "host": "10.0.0.5"}),
    );
    r.assert_error(400, "invalid_field");
    api.post(
        "/api/v1/targets",
        Some(&admin),
        json!({"name": "db01", "host": "10.0.0.5", "tags": ["prod"]}),
    )
    .assert_ok();
    api.post(
        "/api/v1/targets/db01/credentials",
        Some(&admin),
        json!({"account": "root", "password": "pw-xss-1"}),
    )
    .assert_ok();
    api.post("/api/v1/groups", Some(&admin), json!({"name": "ops"}))
        .assert_ok();
    api.post("/api/v1/groups", Some(&admin), json!({"name": "leads"}))
        .assert_ok();
    api.post(
        "/api/v1/policies",
        Some(&admin),
        json!({"name": "ops-approve", "group": "ops", "targets": ["db01"], "allow": ["session", "reveal"], "outcome": "approve", "levels": "leads:1"}),
    )
    .assert_ok();
    api.make_user(&admin, "lead1", "approver", &["leads"]);
    let (user_t, user_pw) = api.make_user(&admin, "dave", "user", &["ops"]);
    // Free text holds markup: a request's reason shows in pages of three roles.
    let r = api.post(
        "/api/v1/requests",
        Some(&user_t),
        json!({"target": "db01", "account": "root", "reason": XSS}),
    );
    r.assert_ok();
    let mut b = Browser::new(&server);
    b.login("dave", &user_pw, None);
    let pages = [
        "/requests".to_owned(),
        format!("/requests/{}", r.body["id"].as_str().unwrap()),
    ];
    let (_, auditor_pw) = api.make_user(&admin, "erin", "auditor", &[]);
    let mut auditor = Browser::new(&server);
    auditor.login("erin", &auditor_pw, None);
    for p in &pages {
        let r = b.get(p);
        assert_eq!(r.status, 200, "{p}: {}", r.text);
        assert!(!r.text.contains(XSS), "{p} renders the markup raw");
        if r.text.contains("onerror") {
            assert!(r.text.contains("&lt;img src=x onerror=alert(1)&gt;"), "{p}");
        }
    }
    let r = auditor.get("/audit?action=request.*");
    assert_eq!(r.status, 200);
    assert!(r.text.contains("<td>request."), "{}", r.text);
    assert!(
        !r.text.contains(XSS),
        "the audit trail renders the markup raw"
    );

    // Headers: the CSP and friends.
    let r = b.get("/");
    let h = |k: &str| {
        r.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let csp = h("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h("cache-control"), "no-store");
    assert_eq!(h("x-frame-options"), "DENY");
    assert!(!r.text.contains("<script>"), "no inline script");
    assert!(!r.text.contains(" style="), "no inline style");
    // The assets: hashed names, a year in caches.
    let css = r
        .text
        .split("href=\"/assets/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a style sheet");
    assert!(
        css.starts_with("console.") && css.ends_with(".css"),
        "{css}"
    );
    let a = b.get(&format!("/assets/{css}"));
    assert_eq!(a.status, 200);
    assert_eq!(
        a.headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        b.get("/assets/console.css").status,
        404,
        "only hashed names"
    );
}

/// The admin's user actions from the console, through the accounts service: a role set, a
/// disable (the user's login refused) and enable, a group member removed, a policy removed, and
/// a password reset held for a second admin (who alone would see the one-time password).
#[test]
fn console_admin_user_actions() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let api = server.api();
    let (admin, admin_pw) = admin_token(&server);
    api.post("/api/v1/groups", Some(&admin), json!({"name": "ops"}))
        .assert_ok();
    let (_, carol_pw) = api.make_user(&admin, "carol", "user", &["ops"]);
    api.post(
        "/api/v1/targets",
        Some(&admin),
        json!({"name": "db01", "host": "10.0.0.5"}),
    )
    .assert_ok();
    api.post(
        "/api/v1/policies",
        Some(&admin),
        json!({"name": "spare", "group": "ops", "targets": ["db01"], "allow": ["session"], "outcome": "allow"}),
    )
    .assert_ok();
    let mut b = Browser::new(&server);
    let r = b.login("admin", &admin_pw, None);
    assert_eq!((r.status, location(&r)), (303, "/"), "{}", r.text);
    let page = b.get("/users");
    assert!(page.text.contains("Set the role of carol"), "{}", page.text);
    assert!(page.text.contains("Reset the password of carol"));
    let csrf = csrf_of(&page.text);
    let user = |name: &str| api.get(&format!("/api/v1/users/{name}"), Some(&admin)).body;

    let r = b.post("/users/carol/role", &[("role", "auditor"), ("csrf", &csrf)]);
    assert_eq!((r.status, location(&r)), (303, "/users"), "{}", r.text);
    assert_eq!(user("carol")["role"], "auditor");
    let r = b.post("/users/carol/role", &[("role", "user"), ("csrf", &csrf)]);
    assert_eq!(r.status, 303, "{}", r.text);

    let r = b.post(
        "/users/carol/disable",
        &[("reason", "left"), ("csrf", &csrf)],
    );
    assert_eq!((r.status, location(&r)), (303, "/users"), "{}", r.text);
    assert_eq!(user("carol")["disabled"], true);
    assert!(b.get("/users").text.contains("Enable carol"));
    assert_eq!(api.login("carol", &carol_pw).status, 403);
    let r = b.post("/users/carol/disable", &[("reason", ""), ("csrf", &csrf)]);
    assert_eq!(r.status, 400, "an empty reason: {}", r.text);
    let r = b.post("/users/carol/enable", &[("csrf", &csrf)]);
    assert_eq!((r.status, location(&r)), (303, "/users"), "{}", r.text);
    assert_eq!(user("carol")["disabled"], false);

    let r = b.post(
        "/groups/members/remove",
        &[("group", "ops"), ("username", "carol"), ("csrf", &csrf)],
    );
    assert_eq!((r.status, location(&r)), (303, "/groups"), "{}", r.text);
    assert_eq!(user("carol")["groups"], json!([]));

    let r = b.post(
        "/policies",
        &[
            ("name", "web-made"),
            ("group", "ops"),
            ("targets", "db01, tag:prod"),
            ("allow_reveal", "true"),
            ("outcome", "justify"),
            ("max_duration", "2h"),
            ("days", "mon-fri"),
            ("moderated", "true"),
            ("csrf", &csrf),
        ],
    );
    assert_eq!((r.status, location(&r)), (303, "/policies"), "{}", r.text);
    let policies = api.get("/api/v1/policies", Some(&admin)).body;
    let made = policies["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "web-made")
        .cloned()
        .unwrap_or_else(|| panic!("{policies}"));
    assert_eq!(made["outcome"], "justify", "{made}");
    assert_eq!(made["allow"], json!(["reveal"]), "{made}");
    let r = b.post(
        "/policies",
        &[
            ("name", "bad"),
            ("group", "ops"),
            ("targets", ""),
            ("outcome", "allow"),
            ("csrf", &csrf),
        ],
    );
    assert_eq!(r.status, 400, "no targets: {}", r.text);
    let r = b.post("/policies/spare/remove", &[("csrf", &csrf)]);
    assert!(
        r.status == 303 || r.text.contains("held for approval"),
        "{} {}",
        r.status,
        r.text
    );

    // With a second admin, another user's reset is dual-controlled: the asker never sees it.
    api.create_user(&admin, "admin2", "admin", &[]);
    let r = b.post("/users/carol/reset", &[("csrf", &csrf)]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("Held for a second admin"), "{}", r.text);
    assert!(!r.text.contains("class=\"secret\""), "{}", r.text);
    let audit = api.get("/api/v1/audit?actor=admin&object=user:carol", Some(&admin));
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"user.disable"), "{actions:?}");
}

/// Orbit from the console: a snapshot taken (its job page refreshes itself until done), then
/// verified; a backup job run now (its run's page likewise); the ceremony and export are not
/// offered, and the page says why.
#[test]
fn console_orbit_snapshot_and_backup_with_progress() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let api = server.api();
    let (admin, admin_pw) = admin_token(&server);
    let dir = inst.path().join("console-backups");
    api.post(
        "/api/v1/backup/targets",
        Some(&admin),
        json!({"name": "dir1", "dir": dir.to_str().unwrap()}),
    )
    .assert_ok();
    api.post(
        "/api/v1/backup/jobs",
        Some(&admin),
        json!({"name": "rec", "kind": "recordings", "target": "dir1", "schedule": "manual"}),
    )
    .assert_ok();
    let mut b = Browser::new(&server);
    b.login("admin", &admin_pw, None);
    let page = b.get("/orbit");
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("must never pass through a web page"));
    let csrf = csrf_of(&page.text);

    // Follows a job page until it stops asking to be refreshed.
    let follow = |b: &Browser, path: &str| -> Resp {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let r = b.get(path);
            assert_eq!(r.status, 200, "{path}: {}", r.text);
            if r.headers.get("refresh").is_none() {
                return r;
            }
            assert!(std::time::Instant::now() < deadline, "{path} never ended");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };

    let r = b.post(
        "/orbit/snapshots",
        &[("include_recordings", "true"), ("csrf", &csrf)],
    );
    assert_eq!(r.status, 303, "{}", r.text);
    let job = location(&r).to_owned();
    assert!(job.starts_with("/orbit/snapshots/jobs/"), "{job}");
    let done = follow(&b, &job);
    assert!(done.text.contains("done"), "{}", done.text);
    let list = api.get("/api/v1/snapshots", Some(&admin));
    let id = list.body["snapshots"][0]["id"].as_str().unwrap().to_owned();
    let page = b.get("/orbit");
    assert!(
        page.text.contains(&format!("Verify snapshot {id}")),
        "{}",
        page.text
    );
    let r = b.post(&format!("/orbit/snapshots/{id}/verify"), &[("csrf", &csrf)]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("verified"), "{}", r.text);

    assert!(page.text.contains("Run backup job rec now"));
    let r = b.post("/orbit/backups/rec/run", &[("csrf", &csrf)]);
    assert_eq!(r.status, 303, "{}", r.text);
    let run = location(&r).to_owned();
    assert!(run.starts_with("/orbit/backups/runs/"), "{run}");
    let done = follow(&b, &run);
    assert!(done.text.contains("<strong>ok</strong>"), "{}", done.text);
    // The last run shows on the Orbit page.
    assert!(b.get("/orbit").text.contains("last_success"));
}

/// A support user asks for a grant through the console (two scopes, a reason with markup), an
/// admin sees it pending and approves it there, then revokes it; the API agrees at each step.
#[test]
fn console_support_grant_request_approve_revoke() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let api = server.api();
    let (admin, admin_pw) = admin_token(&server);
    let (sup_token, sup_pw) = api.make_user(&admin, "sup1", "support", &[]);
    let mut sup = Browser::new(&server);
    let r = sup.login("sup1", &sup_pw, None);
    assert_eq!(r.status, 303, "{}", r.text);
    let page = sup.get("/");
    assert!(page.text.contains("href=\"/support\""), "{}", page.text);
    let page = sup.get("/support");
    assert_eq!(page.status, 200, "{}", page.text);
    let csrf = csrf_of(&page.text);
    let r = sup.post(
        "/support",
        &[
            ("scope", "diagnostics"),
            ("scope", "audit"),
            ("reason", "<script>x</script> slow"),
            ("ticket", "TICKET-9"),
            ("duration", "1h"),
            ("csrf", &csrf),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.text);
    let id = location(&r).trim_start_matches("/support/").to_owned();
    let shown = api.get(&format!("/api/v1/support/{id}"), Some(&admin));
    shown.assert_ok();
    let v = shown.body.clone();
    assert_eq!(v["state"], "pending", "{v}");
    assert_eq!(v["scopes"], json!(["diagnostics", "audit"]), "{v}");
    let page = sup.get(&format!("/support/{id}"));
    assert!(
        page.text.contains("&lt;script&gt;x&lt;/script&gt;"),
        "{}",
        page.text
    );
    assert!(!page.text.contains("<script>x"), "{}", page.text);
    assert!(
        !page.text.contains("name=\"verdict\""),
        "the vendor gets no decision form"
    );

    let mut adm = Browser::new(&server);
    let r = adm.login("admin", &admin_pw, None);
    assert_eq!(r.status, 303, "{}", r.text);
    let page = adm.get("/support");
    assert!(page.text.contains("Waiting on a decision") && page.text.contains(&id));
    let page = adm.get(&format!("/support/{id}"));
    let csrf = csrf_of(&page.text);
    // Deny needs a comment.
    let r = adm.post(
        &format!("/support/{id}/decide"),
        &[("verdict", "deny"), ("comment", ""), ("csrf", &csrf)],
    );
    assert_eq!(r.status, 400, "{}", r.text);
    let r = adm.post(
        &format!("/support/{id}/decide"),
        &[("verdict", "approve"), ("comment", "ok"), ("csrf", &csrf)],
    );
    assert_eq!(r.status, 303, "{}", r.text);
    let v = api.get(&format!("/api/v1/support/{id}"), Some(&admin)).body;
    assert_eq!(v["state"], "approved", "{v}");
    assert_eq!(api.get("/api/v1/instance", Some(&sup_token)).status, 200);
    // Its console pages under the grant are audited like its API calls, with the grant's id.
    assert_eq!(sup.get("/audit").status, 200);
    let act = api.get(&format!("/api/v1/support/{id}/activity"), Some(&admin));
    act.assert_ok();
    assert!(
        json_items(&act.body)
            .iter()
            .any(|e| e["action"] == "support.call"
                && e["object"] == "console:/audit"
                && e["details"]["support_grant"] == id.as_str()),
        "{}",
        act.text
    );
    let r = adm.post(&format!("/support/{id}/revoke"), &[("csrf", &csrf)]);
    assert_eq!(r.status, 303, "{}", r.text);
    let v = api.get(&format!("/api/v1/support/{id}"), Some(&admin)).body;
    assert_eq!(v["state"], "revoked", "{v}");
    assert_eq!(api.get("/api/v1/instance", Some(&sup_token)).status, 403);
    let page = adm.get(&format!("/support/{id}/activity"));
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("support.call"), "{}", page.text);
}
