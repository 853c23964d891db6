//! The CLI's HTTP client: finds the server, pins its certificate, carries the token, and turns API
//! errors into messages that name the code and field.

use anyhow::{anyhow, bail, Context, Result};
use cofre_proto::ErrorBody;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `cofre login` remembers, in a 0600 TOML file.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub server: Option<String>,
    pub fingerprint: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub token: Option<String>,
}

impl ClientConfig {
    pub fn default_path() -> PathBuf {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("cofre").join("client.toml")
    }

    pub fn load(path: &Path) -> Result<ClientConfig> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("client config {} is not valid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = toml::to_string(self)?;
        let tmp = path.with_extension("toml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// Where to connect and how to trust it, after flags, environment and the config file.
#[derive(Debug, Clone)]
pub struct Target {
    pub server: String,
    pub fingerprint: Option<String>,
    pub ca_cert: Option<PathBuf>,
}

pub fn normalise_fingerprint(s: &str) -> Result<String> {
    let hex: String = s
        .trim()
        .trim_start_matches("sha256:")
        .trim_start_matches("SHA256:")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!(
            "--fingerprint: expected the 64 hex digits of the SHA-256 the server printed at start"
        );
    }
    Ok(hex)
}

/// Accepts exactly the certificate whose SHA-256 was pinned, and still checks that the server holds
/// its key (the handshake signatures), so a copied certificate alone gets nobody in.
#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = hex::encode(Sha256::digest(end_entity.as_ref()));
        if seen == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate (sha256 {seen}) is not the pinned one"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS client configuration that trusts `target` (its pinned fingerprint or CA).
pub fn tls_config(target: &Target) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = if let Some(fp) = &target.fingerprint {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                fingerprint: normalise_fingerprint(fp)?,
                provider,
            }))
            .with_no_client_auth()
    } else if let Some(ca) = &target.ca_cert {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("--ca-cert {}", ca.display()))?
        {
            roots
                .add(cert.with_context(|| format!("--ca-cert {}", ca.display()))?)
                .with_context(|| format!("--ca-cert {}", ca.display()))?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        bail!(
            "cannot trust the server yet: pass --fingerprint (the sha256 that `cofre server` prints at start) or --ca-cert FILE"
        );
    };
    Ok(config)
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(target: &Target, token: Option<String>) -> Result<Client> {
        if !target.server.starts_with("https://") {
            bail!("--server: must be an https:// URL (got {})", target.server);
        }
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(target)?)
            .timeout(std::time::Duration::from_secs(120))
            .build()?;
        Ok(Client {
            http,
            base: target.server.trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub fn with_token(&self, token: Option<String>) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            token,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request; a success comes back as its headers and bytes, an error as the API's JSON
    /// error (or a transport failure).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(reqwest::header::HeaderMap, bytes::Bytes), ApiFailure> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        self.send_request(req).await
    }

    async fn send_request(
        &self,
        mut req: reqwest::RequestBuilder,
    ) -> Result<(reqwest::header::HeaderMap, bytes::Bytes), ApiFailure> {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ApiFailure::Transport(describe_transport(&e)))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        show_banner(&headers);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ApiFailure::Transport(e.to_string()))?;
        if status.is_success() {
            return Ok((headers, bytes));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ApiFailure::Api { body }),
            Err(_) => Err(ApiFailure::Transport(format!("HTTP {status}"))),
        }
    }

    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ApiFailure> {
        let (_, bytes) = self.send(method, path, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiFailure::Transport(format!("unexpected response: {e}")))
    }

    /// A non-JSON answer (a recording), or the API's JSON error.
    pub async fn get_text(&self, path: &str) -> Result<String, ApiFailure> {
        let (_, bytes) = self.send(reqwest::Method::GET, path, None::<&()>).await?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| ApiFailure::Transport("the answer is not UTF-8 text".into()))
    }

    /// A GET whose answer (a recording) is copied to `out` as it arrives, never held whole; or
    /// the API's JSON error. The bytes written.
    pub async fn get_to(
        &self,
        path: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<u64, ApiFailure> {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| ApiFailure::Transport(describe_transport(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| ApiFailure::Transport(e.to_string()))?;
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => ApiFailure::Api { body },
                Err(_) => ApiFailure::Transport(format!("HTTP {status}")),
            });
        }
        let mut written = 0u64;
        // A transfer the server breaks off (a frame that stops decrypting) is an error here,
        // never a silently short file.
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            ApiFailure::Transport(format!(
                "the transfer broke off: {}",
                describe_transport(&e)
            ))
        })? {
            out.write_all(&chunk)
                .map_err(|e| ApiFailure::Transport(format!("writing the output: {e}")))?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    /// A GET whose answer streams for as long as the server sends it (a watch's events), each
    /// chunk handed to `each` as it arrives; or the API's JSON error. `each` returns false to
    /// stop. No overall deadline: a watch lasts as long as its session.
    pub async fn get_streaming(
        &self,
        path: &str,
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), ApiFailure> {
        let mut req = self
            .http
            .get(self.url(path))
            .timeout(std::time::Duration::from_secs(365 * 86_400));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| ApiFailure::Transport(describe_transport(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| ApiFailure::Transport(e.to_string()))?;
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => ApiFailure::Api { body },
                Err(_) => ApiFailure::Transport(format!("HTTP {status}")),
            });
        }
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            ApiFailure::Transport(format!("the stream broke off: {}", describe_transport(&e)))
        })? {
            if !each(&chunk) {
                break;
            }
        }
        Ok(())
    }

    /// POST without a body, for an answer that is not JSON (a break-glass file): the bytes and the
    /// `x-cofre-breakglass-file` header, or the API's JSON error.
    pub async fn post_bytes(&self, path: &str) -> Result<(Vec<u8>, Option<String>), ApiFailure> {
        let (headers, bytes) = self.send(reqwest::Method::POST, path, None::<&()>).await?;
        let name = headers
            .get("x-cofre-breakglass-file")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((bytes.to_vec(), name))
    }

    /// POSTs `bytes` as they are (a release file), for a JSON answer.
    pub async fn post_octets<T: DeserializeOwned>(
        &self,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<T, ApiFailure> {
        let req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/octet-stream")
            .body(bytes);
        let (_, bytes) = self.send_request(req).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiFailure::Transport(format!("unexpected response: {e}")))
    }

    /// A GET of a Server-Sent Events stream, open for as long as the server keeps it (no
    /// overall timeout), resuming after `last_event_id`; or the API's JSON error.
    pub async fn get_event_stream(
        &self,
        path: &str,
        last_event_id: Option<i64>,
    ) -> Result<reqwest::Response, ApiFailure> {
        let mut req = self
            .http
            .get(self.url(path))
            .header("accept", "text/event-stream")
            // A window lasts at most a day; the stream is open that long, not the usual 120 s.
            .timeout(std::time::Duration::from_secs(2 * 24 * 3600));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ApiFailure::Transport(describe_transport(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ApiFailure::Transport(e.to_string()))?;
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => ApiFailure::Api { body },
            Err(_) => ApiFailure::Transport(format!("HTTP {status}")),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiFailure> {
        self.call(reqwest::Method::GET, path, None::<&()>).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ApiFailure> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// A contingency or demo instance marks every answer (`x-cofre-banner`); the CLI shows it once
/// at the end of the command, on stderr, so the answer on stdout stays what scripts parse.
static BANNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn show_banner(headers: &reqwest::header::HeaderMap) {
    if let Some(banner) = headers.get("x-cofre-banner").and_then(|v| v.to_str().ok()) {
        let _ = BANNER.set(banner.to_owned());
    }
}

/// The banner the server sent during this command, if any.
pub fn banner_seen() -> Option<&'static str> {
    BANNER.get().map(String::as_str)
}

fn describe_transport(e: &reqwest::Error) -> String {
    // reqwest's Display stops at the outermost layer; the TLS reason is what the user needs.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

#[derive(Debug)]
pub enum ApiFailure {
    Transport(String),
    Api { body: ErrorBody },
}

impl ApiFailure {
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiFailure::Api { body } => Some(&body.code),
            ApiFailure::Transport(_) => None,
        }
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiFailure::Transport(m) => write!(f, "cannot reach the server: {m}"),
            ApiFailure::Api { body } => {
                write!(f, "{} (code {}", body.message, body.code)?;
                if let Some(field) = &body.field {
                    write!(f, ", field {field}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl std::error::Error for ApiFailure {}

pub fn path_segment(s: &str) -> String {
    // Names are validated server-side; encode anyway so a typo cannot change the path.
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn missing_server() -> anyhow::Error {
    anyhow!("no server: pass --server https://HOST:PORT (or set COFRE_SERVER), or run `cofre login` first")
}
