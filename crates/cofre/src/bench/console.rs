//! `cofre-bench console`: the web console's main pages on an instance of realistic size (10,000
//! targets with a credential each, 1,000 users in groups with policies, 1,000,000 audit
//! entries), and a keystroke's echo through the web terminal next to the SSH gateway's and
//! direct OpenSSH's, to the same sshd.
//!
//! The data is seeded in-process through cofre-store in large transactions, with the same
//! sealing and the same audit chaining as the services (so `cofre audit verify` holds, which the
//! benchmark checks through the API the CLI calls); then the benchmark's own `cofre server` is
//! started on that data dir and driven over HTTPS like a browser: the console's login form, the
//! `__Host-cofre` cookie, and the pages. Every page is timed next to `/healthz` of the same
//! server in the same run, so the ratio is comparable across machines.

use super::gateway::{
    clock_ticks, cpu_seconds, free_port, keygen, open_channel, start_sshd, AnyHostKey,
};
use super::start_server_in;
use anyhow::{anyhow, bail, Context, Result};
use cofre::client::{tls_config, Client, Target};
use cofre_app::services::App;
use cofre_core::audit::NewAuditEntry;
use cofre_proto::requests::{CreateAccessRequest, DecideRequest, RequestInfo};
use cofre_proto::*;
use cofre_store::credentials::NewVersion;
use cofre_store::policies::PolicyRow;
use cofre_store::targets::NewTarget;
use cofre_store::users::NewUser;
use futures::{SinkExt, StreamExt};
use russh::ChannelMsg;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The size of the seeded instance.
pub(crate) struct Sizes {
    pub(crate) targets: usize,
    pub(crate) users: usize,
    pub(crate) audit: usize,
    pub(crate) requests: usize,
}

/// How long one request, one echo or one connection may take before the benchmark gives up
/// with a message instead of hanging.
const STEP: Duration = Duration::from_secs(60);

/// How long the seeding may take before the benchmark gives up.
const SEEDING: Duration = Duration::from_secs(3600);

/// Every seeded user's password (the hash is computed once: Argon2 a thousand times would
/// dominate the seeding).
pub(super) const PASSWORD: &str = "bench-Console-pw-4471";

const GROUPS: usize = 50;

fn target_name(i: usize) -> String {
    format!("host-{i:05}")
}

fn user_name(i: usize) -> String {
    match i {
        0 => "bench-user".into(),
        1 => "bench-approver".into(),
        2 => "bench-auditor".into(),
        _ => format!("user-{i:04}"),
    }
}

fn role_of(i: usize) -> &'static str {
    match i {
        1 => "approver",
        2 => "auditor",
        _ if i.is_multiple_of(20) => "approver",
        _ if i % 50 == 7 => "auditor",
        _ => "user",
    }
}

fn groups_of(i: usize) -> Vec<String> {
    let mut g = vec![
        format!("team-{:02}", i % GROUPS),
        format!("team-{:02}", (i * 7 + 3) % GROUPS),
    ];
    match i {
        0 => g.extend(["requesters".into(), "echoers".into()]),
        1 => g.push("approvers".into()),
        _ if role_of(i) == "approver" => g.push("approvers".into()),
        _ => {}
    }
    g.sort();
    g.dedup();
    g
}

/// What a seeded audit entry says: the mix of a busy instance's trail.
fn audit_entry(i: usize, users: usize, targets: usize) -> NewAuditEntry {
    let actor = user_name((i * 7919) % users.max(1));
    let target = target_name((i * 104_729) % targets.max(1));
    let (action, object) = match i % 8 {
        0 | 1 => ("auth.login", format!("user:{actor}")),
        2 | 3 => ("credential.reveal", format!("credential:{target}/root")),
        4 => ("session.start", format!("session:{target}/root")),
        5 => ("session.end", format!("session:{target}/root")),
        6 => ("request.create", format!("credential:{target}/root")),
        _ => ("auth.logout", format!("user:{actor}")),
    };
    NewAuditEntry {
        actor,
        action: action.into(),
        object,
        outcome: if i.is_multiple_of(37) { "denied" } else { "ok" }.into(),
        details: serde_json::json!({ "source": "10.1.2.3", "bench": i }),
    }
}

fn seed_entry(what: &str, n: usize) -> NewAuditEntry {
    NewAuditEntry {
        actor: "system".into(),
        action: "bench.seed".into(),
        object: what.into(),
        outcome: "ok".into(),
        details: serde_json::json!({ "rows": n }),
    }
}

struct Seeded {
    identities: Duration,
    audit: Duration,
    /// The time of the seeded trail's middle entry.
    middle: String,
    /// The time of the entry 1% of the trail before its end.
    recent: String,
    /// From a quarter into the trail, 1% of it: an old window that a search must not scan past.
    window: (String, String),
}

/// Users, groups, targets, credentials and policies, then the audit entries, in transactions of
/// thousands of rows (each ends with its own audit entry, as every write does).
/// `n` targets with a root password each, sealed as the vault seals them, in transactions of a
/// thousand; `of(i)` names the i-th and gives its tags.
pub(super) async fn seed_targets(
    app: &App,
    n: usize,
    of: impl Fn(usize) -> (String, Vec<String>),
) -> Result<()> {
    let now = app.now_text();
    let secret = b"bench-target-secret";
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut tx = app.store.write().await?;
        for &i in chunk {
            let (name, tags) = of(i);
            let host = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
            let id = tx
                .insert_target(NewTarget {
                    name: &name,
                    host: &host,
                    port: 22,
                    protocol: "ssh",
                    tags: &tags,
                    created_at: &now,
                })
                .await?;
            let cred = tx
                .insert_credential(id, &name, "root", "password", &now, "admin")
                .await?;
            let sealed = app.seal_credential_secret(cred, 1, secret)?;
            tx.add_credential_version(
                cred,
                1,
                NewVersion {
                    kind: "password",
                    wrapped_key: &sealed.wrapped_key,
                    ciphertext: &sealed.ciphertext,
                    created_at: &now,
                    created_by: "admin",
                },
            )
            .await?;
        }
        tx.append_audit(app.now_text(), seed_entry("targets", chunk.len()))
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// A new data dir at `data_dir` (with `config` as its server's), unsealed in this process, whose
/// initial admin's password is [`PASSWORD`] (not to be changed at first login).
pub(super) async fn scratch_app(
    data_dir: &Path,
    config: Option<&Path>,
) -> Result<std::sync::Arc<App>> {
    let config = cofre_app::config::ServerConfig::load(
        config,
        cofre_app::config::Overrides {
            data_dir: Some(data_dir.to_path_buf()),
            listen: None,
            database_url: None,
            ssh_listen: None,
            node_name: None,
        },
    )?;
    let (app, _) = cofre_app::initialise(&config, cofre_app::SealChoice::KeyFile).await?;
    app.unseal_from_key_file()?;
    let hash = cofre_app::services::accounts::hash_password(PASSWORD.into()).await?;
    let mut tx = app.store.write().await?;
    let admin = tx
        .user_by_name("admin")
        .await?
        .ok_or_else(|| anyhow!("no initial admin in the new data dir"))?;
    tx.set_password(admin.id, &hash, false).await?;
    tx.append_audit(app.now_text(), seed_entry("the admin's password", 1))
        .await?;
    tx.commit().await?;
    Ok(app)
}

async fn seed(app: &App, s: &Sizes) -> Result<Seeded> {
    let started = Instant::now();
    let now = app.now_text();
    let hash = cofre_app::services::accounts::hash_password(PASSWORD.into()).await?;

    let mut tx = app.store.write().await?;
    let mut group_ids = std::collections::HashMap::new();
    let extra = ["requesters", "approvers", "echoers"];
    for g in (0..GROUPS)
        .map(|i| format!("team-{i:02}"))
        .chain(extra.iter().map(|s| (*s).to_owned()))
    {
        let id = tx.insert_group(&g, &now).await?;
        group_ids.insert(g, id);
    }
    for i in 0..s.users {
        let name = user_name(i);
        let id = tx
            .insert_user(NewUser {
                username: &name,
                role: role_of(i),
                password_hash: &hash,
                must_change_password: false,
                created_at: &now,
            })
            .await?;
        for g in groups_of(i) {
            let gid = group_ids
                .get(&g)
                .copied()
                .ok_or_else(|| anyhow!("group {g}"))?;
            tx.add_member(gid, id).await?;
        }
    }
    let limits = |levels: Option<&str>| {
        serde_json::to_string(&PolicyLimits {
            levels: levels.map(str::to_owned),
            ..Default::default()
        })
    };
    for i in 0..GROUPS {
        tx.insert_policy(
            &PolicyRow {
                name: format!("team-{i:02}-ops"),
                group: format!("team-{i:02}"),
                targets: vec![format!("tag:team-{i:02}")],
                access: vec!["reveal".into(), "session".into()],
                outcome: if i % 2 == 0 { "allow" } else { "justify" }.into(),
                created_at: now.clone(),
                limits: limits(None)?,
            },
            "admin",
        )
        .await?;
    }
    tx.insert_policy(
        &PolicyRow {
            name: "prod-needs-approval".into(),
            group: "requesters".into(),
            targets: vec!["tag:env-prod".into()],
            access: vec!["reveal".into(), "session".into()],
            outcome: "approve".into(),
            created_at: now.clone(),
            limits: limits(Some("approvers:1"))?,
        },
        "admin",
    )
    .await?;
    tx.append_audit(app.now_text(), seed_entry("users", s.users))
        .await?;
    tx.commit().await?;

    seed_targets(app, s.targets, |i| {
        (
            target_name(i),
            vec![
                format!("team-{:02}", i % GROUPS),
                if i % 2 == 0 { "env-prod" } else { "env-dev" }.to_owned(),
            ],
        )
    })
    .await?;
    let identities = started.elapsed();

    // Stamped by the clock as they are written, after the data dir's own entries, as a real
    // trail is (a trail whose times ran backwards from its first entries would be one long clock
    // step); the time filters then select real slices of it.
    let started = Instant::now();
    let marks = [
        s.audit / 2,
        s.audit * 99 / 100,
        s.audit / 4,
        s.audit / 4 + s.audit / 100,
    ];
    let mut stamps = [String::new(), String::new(), String::new(), String::new()];
    let mut i = 0;
    while i < s.audit {
        let end = (i + 20_000).min(s.audit);
        let mut tx = app.store.write().await?;
        for k in i..end {
            let ts = app.now_text();
            for (mark, stamp) in marks.iter().zip(stamps.iter_mut()) {
                if *mark == k {
                    stamp.clone_from(&ts);
                }
            }
            tx.append_audit(ts, audit_entry(k, s.users, s.targets))
                .await?;
        }
        tx.commit().await?;
        i = end;
    }
    let [middle, recent, window_start, window_end] = stamps;
    Ok(Seeded {
        identities,
        audit: started.elapsed(),
        middle,
        recent,
        window: (window_start, window_end),
    })
}

/// A console session as a browser holds it: the `__Host-cofre` cookie the login form set.
struct Browser {
    http: reqwest::Client,
    base: String,
    token: String,
}

fn browser_http(target: &Target) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(target)?)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(STEP)
        .build()?)
}

async fn browser_login(target: &Target, user: &str) -> Result<Browser> {
    let http = browser_http(target)?;
    let base = target.server.trim_end_matches('/').to_owned();
    let r = http
        .post(format!("{base}/login"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", user), ("password", PASSWORD)])
        .send()
        .await
        .with_context(|| format!("console login of {user}"))?;
    let to = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let token = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("__Host-cofre="))
        .and_then(|c| c.split(';').next())
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    match token {
        Some(token) if to == "/" => Ok(Browser { http, base, token }),
        _ => bail!(
            "console login of {user}: HTTP {} to {to:?}, no session cookie",
            r.status()
        ),
    }
}

impl Browser {
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .header("cookie", format!("__Host-cofre={}", self.token))
            .header("sec-fetch-site", "same-origin")
    }
}

struct PageTiming {
    status: u16,
    bytes: usize,
    rows: usize,
    next: bool,
    ttfb: (f64, f64),
    full: (f64, f64),
    server_cpu_ms: f64,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or(0.0)
}

/// `rounds` GETs of `path` one after another (after three unmeasured ones): time to the
/// response head (first byte) and to the end of the body, in ms; and the server's CPU per page.
async fn time_page(
    b: &Browser,
    path: &str,
    rounds: usize,
    server: u32,
    ticks: f64,
) -> Result<PageTiming> {
    let (mut ttfb, mut full) = (Vec::new(), Vec::new());
    let (mut status, mut body) = (0, Vec::new());
    let mut cpu_before = 0.0;
    for i in 0..rounds + 3 {
        if i == 3 {
            cpu_before = cpu_seconds(&server.to_string(), ticks)?.0;
        }
        let t = Instant::now();
        let r = b
            .get(path)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let head = t.elapsed();
        status = r.status().as_u16();
        body = r
            .bytes()
            .await
            .with_context(|| format!("GET {path}: the body"))?
            .to_vec();
        let end = t.elapsed();
        if i >= 3 {
            ttfb.push(head.as_secs_f64() * 1e3);
            full.push(end.as_secs_f64() * 1e3);
        }
    }
    let cpu = cpu_seconds(&server.to_string(), ticks)?.0 - cpu_before;
    ttfb.sort_by(f64::total_cmp);
    full.sort_by(f64::total_cmp);
    let text = String::from_utf8_lossy(&body);
    Ok(PageTiming {
        status,
        bytes: body.len(),
        rows: text.matches("<tr>").count().saturating_sub(1),
        next: text.contains("rel=\"next\""),
        ttfb: (pct(&ttfb, 0.5), pct(&ttfb, 0.99)),
        full: (pct(&full, 0.5), pct(&full, 0.99)),
        server_cpu_ms: cpu * 1e3 / rounds.max(1) as f64,
    })
}

/// An interactive pty on one of the three paths, read and written a byte at a time.
enum Pipe {
    Ssh(
        russh::client::Handle<AnyHostKey>,
        russh::Channel<russh::client::Msg>,
    ),
    Web(
        Box<
            tokio_tungstenite::WebSocketStream<
                tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
            >,
        >,
    ),
}

impl Pipe {
    async fn ssh(port: u16, user: &str, key: &Path) -> Result<Pipe> {
        let (handle, ch) = open_channel(port, user, key).await?;
        ch.request_pty(false, "xterm-256color", 80, 24, 0, 0, &[])
            .await?;
        ch.request_shell(false).await?;
        Ok(Pipe::Ssh(handle, ch))
    }

    async fn web(target: &Target, b: &Browser, path: &str) -> Result<Pipe> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::HeaderValue;
        let authority = target
            .server
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("the server's URL is not https"))?
            .trim_end_matches('/')
            .to_owned();
        let host = authority
            .rsplit_once(':')
            .map(|(h, _)| h.to_owned())
            .unwrap_or_else(|| authority.clone());
        let tcp = tokio::net::TcpStream::connect(&authority).await?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config(target)?))
            .connect(rustls::pki_types::ServerName::try_from(host)?, tcp)
            .await?;
        let mut req = format!("wss://{authority}{path}").into_client_request()?;
        req.headers_mut().insert(
            "cookie",
            HeaderValue::from_str(&format!("__Host-cofre={}", b.token))?,
        );
        req.headers_mut()
            .insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        let (ws, _) = tokio_tungstenite::client_async(req, tls)
            .await
            .context("the web terminal's WebSocket")?;
        Ok(Pipe::Web(Box::new(ws)))
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Pipe::Ssh(_, ch) => ch.data(bytes).await?,
            Pipe::Web(ws) => {
                ws.send(tokio_tungstenite::tungstenite::Message::Binary(
                    bytes.to_vec().into(),
                ))
                .await?
            }
        }
        Ok(())
    }

    /// The next terminal output (never empty).
    async fn recv(&mut self) -> Result<Vec<u8>> {
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match self {
                Pipe::Ssh(_, ch) => match ch.wait().await {
                    Some(ChannelMsg::Data { data }) if !data.is_empty() => return Ok(data.to_vec()),
                    Some(ChannelMsg::Data { .. })
                    | Some(ChannelMsg::WindowAdjusted { .. })
                    | Some(ChannelMsg::Success)
                    | Some(ChannelMsg::ExtendedData { .. }) => {}
                    other => bail!("the ssh session ended: {other:?}"),
                },
                Pipe::Web(ws) => match ws.next().await {
                    Some(Ok(Message::Binary(b))) if !b.is_empty() => return Ok(b.to_vec()),
                    Some(Ok(Message::Text(t))) if t.as_str().contains("\"ended\"") => {
                        bail!("the web terminal ended: {}", t.as_str())
                    }
                    Some(Ok(Message::Close(_))) | None => bail!("the web terminal closed"),
                    Some(Err(e)) => bail!("the web terminal: {e}"),
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// Turns the shell into a 1-byte echo: `cat` on a raw, non-echoing tty, so every byte sent
    /// comes back once, written by a process, as an editor's keystroke would.
    async fn into_echo(mut self) -> Result<Pipe> {
        // The quotes keep the echoed command line from containing the marker itself.
        self.send(b"stty raw -echo; echo RE''ADY; exec cat\r")
            .await?;
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("READY") {
            let got = tokio::time::timeout(STEP, self.recv())
                .await
                .map_err(|_| anyhow!("no shell prompt within {STEP:?}"))??;
            seen.extend(got);
        }
        // What follows the marker (its line end) is not an echo.
        while let Ok(r) = tokio::time::timeout(Duration::from_millis(300), self.recv()).await {
            r?;
        }
        Ok(self)
    }

    async fn close(self) {
        match self {
            Pipe::Ssh(h, ch) => {
                let _ = ch.eof().await;
                let _ = h
                    .disconnect(russh::Disconnect::ByApplication, "", "en")
                    .await;
            }
            Pipe::Web(mut ws) => {
                let _ = SinkExt::close(ws.as_mut()).await;
            }
        }
    }
}

/// `n` 1-byte round trips after 50 unmeasured ones: (p50, p99) in ms.
async fn echo(pipe: &mut Pipe, n: usize) -> Result<(f64, f64)> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 50 {
        let t = Instant::now();
        pipe.send(b"x").await?;
        let got = tokio::time::timeout(STEP, pipe.recv())
            .await
            .map_err(|_| anyhow!("no echo within {STEP:?}"))??;
        if got != b"x" {
            bail!("echo: expected x, got {:?}", String::from_utf8_lossy(&got));
        }
        if i >= 50 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((pct(&times, 0.5), pct(&times, 0.99)))
}

async fn terminal_echo(
    target: &Target,
    admin: &Client,
    user: &Browser,
    gw_port: u16,
    echoes: usize,
) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path();
    keygen(&dir.join("root_key"))?;
    keygen(&dir.join("user_key"))?;
    let sshd_port = free_port()?;
    let _sshd = start_sshd(dir, sshd_port)?;
    super::add_target(
        admin,
        "echo-target",
        sshd_port,
        "echo",
        &super::root_key_credential(dir)?,
    )
    .await?;
    let _: PolicyInfo = admin
        .post(
            "/api/v1/policies",
            &CreatePolicyRequest {
                name: "echo".into(),
                group: "echoers".into(),
                targets: vec!["tag:echo".into()],
                allow: vec!["session".into()],
                outcome: "allow".into(),
                ..Default::default()
            },
        )
        .await?;
    let _: SshKeyInfo = admin
        .post(
            "/api/v1/users/bench-user/keys",
            &AddSshKeyRequest {
                public_key: std::fs::read_to_string(dir.join("user_key.pub"))?
                    .trim()
                    .to_owned(),
            },
        )
        .await?;
    let bounded = |what: &'static str| {
        move |_: tokio::time::error::Elapsed| anyhow!("{what}: not connected within {STEP:?}")
    };
    let direct = tokio::time::timeout(STEP, Pipe::ssh(sshd_port, "root", &dir.join("root_key")))
        .await
        .map_err(bounded("direct ssh"))??
        .into_echo()
        .await?;
    let gateway = tokio::time::timeout(
        STEP,
        Pipe::ssh(
            gw_port,
            "bench-user:root@echo-target",
            &dir.join("user_key"),
        ),
    )
    .await
    .map_err(bounded("gateway"))??
    .into_echo()
    .await?;
    let web = tokio::time::timeout(
        STEP,
        Pipe::web(
            target,
            user,
            "/terminal/echo-target/root/ws?cols=80&rows=24",
        ),
    )
    .await
    .map_err(bounded("web terminal"))??
    .into_echo()
    .await?;
    let mut pipes = [direct, gateway, web];
    let mut results = Vec::new();
    for p in &mut pipes {
        results.push(echo(p, echoes).await?);
    }
    for p in pipes {
        p.close().await;
    }
    let [(d50, d99), (g50, g99), (w50, w99)] = results[..] else {
        bail!("three echo paths");
    };
    outln!(
        "keystroke echo (`cat` on a raw pty), {echoes} 1-byte round trips each, one after another:"
    );
    outln!("path\tp50 ms\tp99 ms\tp50 over direct ms");
    outln!("direct OpenSSH\t{d50:.3}\t{d99:.3}\t-");
    outln!(
        "SSH gateway (recorded)\t{g50:.3}\t{g99:.3}\t{:.3}",
        g50 - d50
    );
    outln!(
        "web terminal (WebSocket, recorded)\t{w50:.3}\t{w99:.3}\t{:.3}",
        w50 - d50
    );
    outln!(
        "web terminal over the gateway: p50 {:+.3} ms, p99 {:+.3} ms (aim: under 1 ms p50)",
        w50 - g50,
        w99 - g99
    );
    Ok(())
}

/// Why the browser part cannot run here, if it cannot.
fn browser_missing(modules: &Path) -> Option<String> {
    if !Path::new(CHROMIUM).is_file() {
        Some(format!("no {CHROMIUM} (apt-get install chromium)"))
    } else if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        Some("node is not installed".into())
    } else if !modules.join("playwright-core").is_dir() {
        Some(format!(
            "no playwright-core in {} (npm ci in crates/cofre/tests/browser, or pass --browser-modules)",
            modules.display()
        ))
    } else {
        None
    }
}

const CHROMIUM: &str = "/usr/bin/chromium";

/// A usable page in real Chromium: the Navigation Timing API's DOMContentLoaded and load, the
/// median of `rounds` loads of each page (console_timing.mjs).
async fn browser_timing(
    target: &Target,
    pages: &[(&str, String)],
    rounds: usize,
    modules: &Path,
) -> Result<()> {
    if let Some(why) = browser_missing(modules) {
        outln!("Chromium: skipped, {why}");
        return Ok(());
    }
    let scratch = tempfile::tempdir()?;
    let script = scratch.path().join("console_timing.mjs");
    std::fs::write(&script, include_str!("console_timing.mjs"))?;
    let config = scratch.path().join("config.json");
    let modules = std::fs::canonicalize(modules)?;
    std::fs::write(
        &config,
        serde_json::to_vec(&serde_json::json!({
            "chromium": CHROMIUM,
            "modules": modules,
            "base": target.server.trim_end_matches('/'),
            "password": PASSWORD,
            "rounds": rounds,
            "pages": pages.iter().map(|(role, path)| serde_json::json!({"role": role, "path": path})).collect::<Vec<_>>(),
        }))?,
    )?;
    let child = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("node console_timing.mjs")?;
    let limit = STEP * (pages.len() as u32 + 1);
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("Chromium: not done within {limit:?}"))??;
    if !out.status.success() {
        bail!(
            "Chromium: node console_timing.mjs failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).context("Chromium: the timing script's output")?;
    outln!("Chromium (headless, {rounds} loads per page, median; ms from the navigation's start):");
    outln!("role\tpage\tstatus\tfirst byte\tDOMContentLoaded\tload");
    for r in rows {
        outln!(
            "{}\t{}\t{}\t{:.1}\t{:.1}\t{:.1}",
            r["role"].as_str().unwrap_or(""),
            r["path"].as_str().unwrap_or(""),
            r["status"],
            r["ttfb"].as_f64().unwrap_or(f64::NAN),
            r["dcl"].as_f64().unwrap_or(f64::NAN),
            r["load"].as_f64().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

/// What the browser part needs to find.
pub(crate) struct BrowserOptions {
    pub(crate) modules: std::path::PathBuf,
    pub(crate) rounds: usize,
}

pub(crate) async fn run(
    sizes: Sizes,
    rounds: usize,
    echoes: usize,
    terminal: bool,
    browser: Option<BrowserOptions>,
) -> Result<ExitCode> {
    if sizes.users < 3 || sizes.targets < GROUPS {
        bail!("--users: at least 3; --targets: at least {GROUPS}");
    }
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let app = scratch_app(&data_dir, None).await?;
    outln!(
        "seeding {} targets (a credential each), {} users in {} groups, {} policies, {} audit entries (SQLite in a scratch dir)",
        sizes.targets,
        sizes.users,
        GROUPS + 3,
        GROUPS + 1,
        sizes.audit
    );
    let seeded = tokio::time::timeout(SEEDING, seed(&app, &sizes))
        .await
        .map_err(|_| anyhow!("seeding did not finish within {SEEDING:?}"))??;
    app.store.close().await;
    drop(app);
    outln!(
        "seeded: users, groups, policies, targets and credentials in {:.1} s; {} audit entries in {:.1} s ({:.0} entries/s)",
        seeded.identities.as_secs_f64(),
        sizes.audit,
        seeded.audit.as_secs_f64(),
        sizes.audit as f64 / seeded.audit.as_secs_f64().max(1e-9)
    );

    let (server, target, _, gw_port) = start_server_in(dir, None, None).await?;
    let pid = server.pid();
    let ticks = clock_ticks();
    let api = Client::new(&target, None)?;
    let api_login = |user: &'static str| super::password_login(&api, user, PASSWORD);
    let admin_api = api_login("admin").await?;

    let t = Instant::now();
    let v: AuditVerifyResponse = admin_api.get("/api/v1/audit/verify").await?;
    outln!(
        "audit verify (GET /api/v1/audit/verify, as `cofre audit verify`): {} , {} entries checked in {:.1} s",
        if v.intact { "intact" } else { "BROKEN" },
        v.entries_checked,
        t.elapsed().as_secs_f64()
    );
    if !v.intact {
        bail!(
            "the seeded audit trail does not verify: {:?}",
            v.first_broken
        );
    }

    // Requests for the approver's inbox, half of them approved (the grants page).
    let t = Instant::now();
    let user_api = api_login("bench-user").await?;
    let approver_api = api_login("bench-approver").await?;
    let mut made = Vec::new();
    // bench-user is in team-00 and requesters: team-00's targets tagged env-prod need approval.
    for k in 0..sizes.requests {
        let i = k * GROUPS * 2;
        if i >= sizes.targets {
            break;
        }
        let r: RequestInfo = user_api
            .post(
                "/api/v1/requests",
                &CreateAccessRequest {
                    target: target_name(i),
                    account: "root".into(),
                    access: None,
                    reason: format!("change ticket {k}"),
                    start: None,
                    duration: Some("1h".into()),
                },
            )
            .await
            .with_context(|| format!("request {k} for {}", target_name(i)))?;
        made.push(r.id);
    }
    for id in made.iter().step_by(2) {
        let _: RequestInfo = approver_api
            .post(
                &format!("/api/v1/requests/{id}/approve"),
                &DecideRequest {
                    comment: Some("ok".into()),
                },
            )
            .await?;
    }
    outln!(
        "requests: {} made, {} approved, through the API, in {:.1} s",
        made.len(),
        made.len().div_ceil(2),
        t.elapsed().as_secs_f64()
    );

    let mut browsers = std::collections::HashMap::new();
    for who in ["admin", "bench-user", "bench-approver", "bench-auditor"] {
        browsers.insert(who, browser_login(&target, who).await?);
    }
    let middle = &seeded.middle;
    let pages: Vec<(&str, String)> = vec![
        ("admin", "/".into()),
        ("admin", "/targets".into()),
        (
            "admin",
            format!("/targets?cursor={}", target_name(sizes.targets / 2)),
        ),
        ("admin", format!("/targets/{}", target_name(100))),
        ("admin", "/users".into()),
        ("admin", "/groups".into()),
        ("admin", "/policies".into()),
        ("admin", "/requests".into()),
        ("admin", "/grants".into()),
        ("admin", "/audit".into()),
        ("admin", "/audit?actor=user-0042".into()),
        (
            "admin",
            format!("/audit?object=credential:{}/root", target_name(1234)),
        ),
        ("admin", format!("/audit?since={middle}")),
        ("admin", format!("/audit?since={}", seeded.recent)),
        (
            "admin",
            format!("/audit?since={}&until={}", seeded.window.0, seeded.window.1),
        ),
        (
            "admin",
            format!("/audit?action=credential.reveal&since={middle}"),
        ),
        ("admin", "/audit?action=auth.*".into()),
        ("admin", "/recordings".into()),
        ("admin", "/sessions".into()),
        ("admin", "/orbit".into()),
        ("admin", "/emergency".into()),
        ("bench-user", "/targets".into()),
        ("bench-user", format!("/targets/{}", target_name(0))),
        ("bench-user", "/requests".into()),
        ("bench-approver", "/inbox".into()),
        ("bench-auditor", "/audit".into()),
        ("bench-auditor", "/audit?actor=bench-user".into()),
        ("bench-auditor", "/recordings".into()),
    ];
    let health = browser_http(&target)?;
    let healthz = format!("{}/healthz", target.server.trim_end_matches('/'));
    let mut h = Vec::new();
    for i in 0..rounds + 3 {
        let t = Instant::now();
        let r = health.get(&healthz).send().await?;
        r.bytes().await?;
        if i >= 3 {
            h.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    h.sort_by(f64::total_cmp);
    let (h50, h99) = (pct(&h, 0.5), pct(&h, 0.99));
    outln!(
        "pages: {rounds} GETs each, one after another, over HTTPS (HTTP/1.1, kept alive) on loopback; /healthz p50 {h50:.2} ms p99 {h99:.2} ms"
    );
    outln!("role\tpage\tstatus\tbytes\trows\tnext\tfirst byte p50/p99 ms\tfull p50/p99 ms\tserver CPU ms/page\tp50/healthz");
    let mut slow = 0;
    for (who, path) in &pages {
        let b = browsers
            .get(who)
            .ok_or_else(|| anyhow!("no browser for {who}"))?;
        let p = time_page(b, path, rounds, pid, ticks).await?;
        if p.full.0 > 100.0 || p.status != 200 {
            slow += 1;
        }
        outln!(
            "{who}\t{path}\t{}\t{}\t{}\t{}\t{:.2}/{:.2}\t{:.2}/{:.2}\t{:.2}\t{:.1}",
            p.status,
            p.bytes,
            p.rows,
            if p.next { "yes" } else { "-" },
            p.ttfb.0,
            p.ttfb.1,
            p.full.0,
            p.full.1,
            p.server_cpu_ms,
            p.full.0 / h50.max(1e-6)
        );
    }
    outln!(
        "{slow} of {} pages over 100 ms p50 (or not 200)",
        pages.len()
    );

    if let Some(b) = &browser {
        let main: Vec<(&str, String)> = [
            ("admin", "/targets"),
            ("admin", "/users"),
            ("admin", "/audit"),
            ("bench-user", "/targets"),
            ("bench-approver", "/inbox"),
            ("bench-auditor", "/recordings"),
        ]
        .into_iter()
        .map(|(r, p)| (r, p.to_owned()))
        .collect();
        browser_timing(&target, &main, b.rounds, &b.modules).await?;
    }

    if terminal {
        let user = browsers
            .get("bench-user")
            .ok_or_else(|| anyhow!("no browser for bench-user"))?;
        terminal_echo(&target, &admin_api, user, gw_port, echoes).await?;
    }
    drop(server);
    Ok(ExitCode::SUCCESS)
}
