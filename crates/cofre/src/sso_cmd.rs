//! `cofre sso ...`: identity providers for single sign-on, and `cofre login --sso NAME`, the
//! native client's login through one (RFC 8252: the browser sends the code to a listener on
//! this machine's loopback address).

use crate::client::path_segment;
use crate::commands::{Ctx, Maybe};
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use cofre_proto::*;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Subcommand)]
pub(crate) enum SsoCmd {
    /// Add an OpenID Connect identity provider. Example:
    ///   cofre sso add corp --issuer https://idp.corp.example --client-id cofre \
    ///     --client-secret-stdin --map-group "idp:pam-ops=ops" --default-role user
    /// Register these redirect URIs with the provider: https://THIS-SERVER/login/sso/callback
    /// (the console) and http://127.0.0.1/callback, any port (the CLI, RFC 8252).
    /// A provider that gives a role above user (by a mapping or by default), or a group a
    /// policy names, waits for a second admin.
    #[command(verbatim_doc_comment)]
    Add {
        /// A lowercase name, e.g. corp: "Log in with corp", `cofre login --sso corp`.
        name: String,
        /// The provider's issuer URL, exactly as its ID tokens say it.
        #[arg(long)]
        issuer: String,
        /// The client id Cofre is registered under at the provider.
        #[arg(long)]
        client_id: String,
        /// Read the client secret from the first line of stdin (it is sealed in the vault).
        #[arg(long, required = true)]
        client_secret_stdin: bool,
        /// The claim with the user's IdP groups.
        #[arg(long, default_value = "groups")]
        groups_claim: String,
        /// The claim the Cofre user name is taken from (it must be a valid Cofre name).
        #[arg(long, default_value = "preferred_username")]
        username_claim: String,
        /// The scopes asked for, space-separated; add the one that makes your provider send the
        /// groups claim (e.g. "openid profile email groups").
        #[arg(long, default_value = "openid profile email")]
        scopes: String,
        /// IDP_GROUP=GROUP (membership of a Cofre group) or IDP_GROUP=role:ROLE; repeat. The
        /// groups are replaced from the provider at every login.
        #[arg(long = "map-group", value_name = "MAPPING")]
        map_group: Vec<String>,
        /// The role of a user none of whose IdP groups is mapped; without it they are refused.
        #[arg(long)]
        default_role: Option<String>,
        /// Only users whose verified e-mail is in this domain; repeat.
        #[arg(long = "allowed-domain", value_name = "DOMAIN")]
        allowed_domain: Vec<String>,
    },
    /// Every identity provider.
    List,
    /// Fetch the provider's discovery document and keys now, and say what is wrong.
    Test { name: String },
    /// Remove a provider: nobody logs in through it any more (its users stay).
    Remove { name: String },
}

pub(crate) async fn run(ctx: &Ctx, cmd: SsoCmd) -> Result<ExitCode> {
    match cmd {
        SsoCmd::Add {
            name,
            issuer,
            client_id,
            client_secret_stdin: _,
            groups_claim,
            username_claim,
            scopes,
            map_group,
            default_role,
            allowed_domain,
        } => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("--client-secret-stdin: reading stdin")?;
            let secret = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
            if secret.is_empty() {
                bail!("--client-secret-stdin: stdin is empty");
            }
            let req = SsoProviderRequest {
                name,
                issuer,
                client_id,
                client_secret: SecretString::new(secret.to_string()),
                groups_claim: Some(groups_claim),
                username_claim: Some(username_claim),
                scopes: Some(scopes),
                mappings: map_group,
                default_role,
                allowed_domains: allowed_domain,
            };
            match ctx
                .propose::<SsoProviderInfo>(reqwest::Method::POST, "/api/v1/sso", Some(&req))
                .await?
            {
                Maybe::Done(p) => ctx.print(&p, |p| {
                    outln!("identity provider {} added ({})", p.name, p.issuer);
                    outln!("  test it: cofre sso test {}", p.name);
                })?,
                Maybe::Held(h) => ctx.print_held(&h)?,
            }
        }
        SsoCmd::List => {
            let list: Vec<SsoProviderInfo> = ctx.client.get("/api/v1/sso").await?;
            ctx.print_list(&list, "identity providers", |l| {
                for p in l {
                    outln!(
                        "{}  {}  client {}  groups from {}  mappings [{}]  default role {}",
                        p.name,
                        p.issuer,
                        p.client_id,
                        p.groups_claim,
                        p.mappings.join(", "),
                        p.default_role.as_deref().unwrap_or("(none)")
                    );
                }
            })?;
        }
        SsoCmd::Test { name } => {
            let r: SsoTestReport = ctx
                .client
                .post(&format!("/api/v1/sso/{}/test", path_segment(&name)), &())
                .await?;
            ctx.print(&r, |r| {
                if let Some(u) = &r.authorization_endpoint {
                    outln!("authorization endpoint: {u}");
                }
                if let Some(u) = &r.token_endpoint {
                    outln!("token endpoint: {u}");
                }
                if let Some(u) = &r.jwks_uri {
                    outln!("keys: {u} ({})", r.key_ids.join(", "));
                }
                for p in &r.problems {
                    outln!("problem: {p}");
                }
                outln!("{}", if r.ok { "ok" } else { "NOT OK" });
            })?;
            if !r.ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        SsoCmd::Remove { name } => {
            let r: OkResponse = ctx
                .client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/sso/{}", path_segment(&name)),
                    None::<&()>,
                )
                .await?;
            ctx.print(&r, |_| outln!("removed identity provider {name}"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long the CLI waits for the browser to come back.
const CALLBACK_WAIT: Duration = Duration::from_secs(300);

/// `cofre login --sso NAME`: starts the login with a loopback redirect, opens the browser (or
/// prints the URL), waits for the provider's redirect and exchanges it for a token.
pub(crate) async fn login(ctx: &Ctx, provider: &str, open_browser: bool) -> Result<LoginResponse> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("listening on 127.0.0.1 for the provider's redirect")?;
    let port = listener.local_addr()?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let begun: SsoBeginResponse = ctx
        .client
        .post(
            &format!("/api/v1/auth/sso/{}/begin", path_segment(provider)),
            &SsoBeginRequest {
                redirect_uri: redirect_uri.clone(),
            },
        )
        .await?;
    eprintln!(
        "log in through {provider} in your browser; if it does not open, open this URL:\n{}",
        begun.authorization_url
    );
    if open_browser {
        let opener = std::env::var("BROWSER").unwrap_or_else(|_| "xdg-open".into());
        // The browser is a convenience: the URL is printed whatever happens here.
        let _ = std::process::Command::new(opener)
            .arg(&begun.authorization_url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    let (code, state) = tokio::time::timeout(CALLBACK_WAIT, wait_for_callback(&listener))
        .await
        .map_err(|_| anyhow!("the browser did not come back within 5 minutes"))??;
    if state != begun.state {
        bail!("state: the redirect does not answer this login (another login's, or forged)");
    }
    Ok(ctx
        .client
        .post(
            "/api/v1/auth/sso/finish",
            &SsoFinishRequest {
                state,
                code: SecretString::new(code.to_string()),
            },
        )
        .await?)
}

/// Answers requests on the loopback listener until one is the provider's redirect (a browser
/// may ask for /favicon.ico first): its code and state, or the provider's error.
async fn wait_for_callback(
    listener: &tokio::net::TcpListener,
) -> Result<(zeroize::Zeroizing<String>, String)> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let mut buf = vec![0u8; 8192];
        let mut n = 0;
        // One request line and headers; each connection has its own deadline.
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let m = stream.read(&mut buf[n..]).await?;
                n += m;
                if m == 0 || buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || n == buf.len() {
                    return Ok::<_, std::io::Error>(());
                }
            }
        })
        .await;
        if !matches!(read, Ok(Ok(()))) {
            continue;
        }
        let head = String::from_utf8_lossy(&buf[..n]);
        let target = head
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("GET "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or("");
        let Some(query) = target.strip_prefix("/callback?") else {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            continue;
        };
        let url = reqwest::Url::parse(&format!("http://127.0.0.1/callback?{query}"))?;
        let mut code = None;
        let mut state = None;
        let mut error = None;
        for (k, v) in url.query_pairs() {
            match &*k {
                "code" => code = Some(zeroize::Zeroizing::new(v.into_owned())),
                "state" => state = Some(v.into_owned()),
                "error" => error = Some(v.into_owned()),
                _ => {}
            }
        }
        let body: &[u8] = if error.is_some() {
            b"Cofre: the identity provider refused the login. You may close this window."
        } else {
            b"Cofre: logged in. You may close this window and return to the terminal."
        };
        let _ = stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        let _ = stream.write_all(body).await;
        if let Some(e) = error {
            let word: String = e
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            bail!("provider: the identity provider refused the login ({word})");
        }
        match (code, state) {
            (Some(c), Some(s)) => return Ok((c, s)),
            _ => bail!("the redirect carried no code and state"),
        }
    }
}
