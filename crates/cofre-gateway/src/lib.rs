//! Cofre's SSH gateway. A user runs `ssh -p 2222 alice:root@db01@cofre`; the gateway authenticates
//! `alice` (registered public key, or password + TOTP through keyboard-interactive), asks the
//! services whether she may open a session on `root@db01`, connects upstream with the vaulted
//! credential (she never sees it), and records the session while relaying it.
//!
//! Every rule lives in `cofre_app` (its services and its session layer, which connects to the
//! target through `cofre_connect`); this crate only speaks SSH to users and moves bytes. It does
//! not depend on the HTTP stack (scripts/test checks its `cargo tree`). Each connection and each
//! channel is its own task, so one slow or broken session never stalls another.

mod attempts;
mod channel;
mod conn;
pub mod sftp;

use cofre_app::services::App;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Set once by the connection's handler when a user has logged in.
#[derive(Default)]
pub struct LoggedIn {
    flag: AtomicBool,
    notify: tokio::sync::Notify,
}

impl LoggedIn {
    fn set(&self) {
        self.flag.store(true, Ordering::Relaxed);
        self.notify.notify_one();
    }

    fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

/// Connections not yet authenticated, per source address.
#[derive(Default)]
struct Unauthenticated(Mutex<HashMap<IpAddr, usize>>);

impl Unauthenticated {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a new connection from `ip`, unless `cap` are already waiting to authenticate.
    fn enter(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<UnauthenticatedSlot> {
        let mut map = self.lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(UnauthenticatedSlot(self.clone(), ip))
    }
}

/// One connection's place in its address's count, given back once it authenticates or ends.
struct UnauthenticatedSlot(Arc<Unauthenticated>, IpAddr);

impl Drop for UnauthenticatedSlot {
    fn drop(&mut self) {
        let mut map = self.0.lock();
        if let Some(n) = map.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// Algorithms offered to users: no compression before authentication (`zlib@openssh.com` starts
/// only after it), only encrypt-then-MAC MACs, and key exchanges without small or fixed-size
/// finite-field groups, so that `ssh-audit` (run by scripts/test) finds nothing to warn about.
fn preferred() -> russh::Preferred {
    use russh::{compression, kex, mac};
    const KEX: &[kex::Name] = &[
        kex::MLKEM768X25519_SHA256,
        kex::CURVE25519,
        kex::CURVE25519_PRE_RFC_8731,
        kex::DH_G16_SHA512,
        kex::DH_G18_SHA512,
        kex::EXTENSION_SUPPORT_AS_SERVER,
        kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
    ];
    const MAC: &[mac::Name] = &[mac::HMAC_SHA512_ETM, mac::HMAC_SHA256_ETM];
    const COMPRESSION: &[compression::Name] = &[compression::NONE, compression::ZLIB_LEGACY];
    russh::Preferred {
        kex: std::borrow::Cow::Borrowed(KEX),
        mac: std::borrow::Cow::Borrowed(MAC),
        compression: std::borrow::Cow::Borrowed(COMPRESSION),
        ..Default::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("SSH host key {path}: {message}")]
    HostKey { path: String, message: String },
    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: String, message: String },
}

/// Loads DATA_DIR/ssh_host_ed25519_key, generating it at first start.
pub fn load_or_generate_host_key(data_dir: &Path) -> Result<PrivateKey, GatewayError> {
    let path = data_dir.join("ssh_host_ed25519_key");
    let err = |message: String| GatewayError::HostKey {
        path: path.display().to_string(),
        message,
    };
    if path.exists() {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?,
        );
        return PrivateKey::from_openssh(text.as_bytes()).map_err(|e| err(e.to_string()));
    }
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, seed.as_mut());
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let text = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| err(e.to_string()))?;
    cofre_crypto::files::write_private_file(&path, text.as_bytes())
        .map_err(|e| err(e.to_string()))?;
    Ok(key)
}

/// A bound gateway, ready to serve.
pub struct Gateway {
    app: Arc<App>,
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    unauthenticated: Arc<Unauthenticated>,
    /// Failed authentications, audited per source and minute.
    attempts: Arc<attempts::Attempts>,
    slots: cofre_app::fd_limit::ConnectionSlots,
    pub addr: SocketAddr,
    /// `SHA256:...` of the gateway's host key, for users' known_hosts.
    pub host_key_fingerprint: String,
}

impl Gateway {
    /// Binds the listener and closes the sessions a previous run left open, so that by the time the
    /// server reports `ready` the session list tells the truth.
    pub async fn bind(app: Arc<App>, addr: SocketAddr) -> Result<Gateway, GatewayError> {
        if let Err(e) = app.sessions().end_orphaned_sessions().await {
            tracing::error!(error = %e, "cannot close sessions left open by the previous run");
        }
        let host_key = load_or_generate_host_key(&app.config.data_dir)?;
        let host_key_fingerprint = host_key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| GatewayError::Listen {
                addr: addr.to_string(),
                message: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|e| GatewayError::Listen {
            addr: addr.to_string(),
            message: e.to_string(),
        })?;
        let config = russh::server::Config {
            server_id: russh::SshId::Standard("SSH-2.0-Cofre".into()),
            methods: russh::MethodSet::from(
                &[
                    russh::MethodKind::None,
                    russh::MethodKind::PublicKey,
                    russh::MethodKind::KeyboardInteractive,
                ][..],
            ),
            keys: vec![host_key],
            auth_rejection_time: Duration::from_millis(500),
            auth_rejection_time_initial: Some(Duration::from_millis(0)),
            // Idle shells are normal; keepalives notice dead peers instead.
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 4,
            nodelay: true,
            preferred: preferred(),
            ..Default::default()
        };
        Ok(Gateway {
            app,
            listener,
            config: Arc::new(config),
            unauthenticated: Arc::default(),
            attempts: Arc::default(),
            slots: cofre_app::fd_limit::ConnectionSlots::new(),
            addr,
            host_key_fingerprint,
        })
    }

    /// Accepts connections until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut flush = tokio::time::interval(attempts::WINDOW);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush.tick().await;
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                _ = flush.tick() => {
                    // Flushed off the accept loop, so a slow audit write never delays accepting.
                    let (attempts, app) = (self.attempts.clone(), self.app.clone());
                    tokio::spawn(async move { attempts.flush(&app).await });
                    continue;
                }
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "gateway accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Some(fd_slot) = self.slots.take() else {
                tracing::warn!(%peer, "refused a connection: the gateway is at its connection cap");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (app, unauthenticated, attempts, config) = (
                self.app.clone(),
                self.unauthenticated.clone(),
                self.attempts.clone(),
                self.config.clone(),
            );
            let port = self.addr.port();
            tokio::spawn(async move {
                let mut tcp = tcp;
                // The network policy judges the client before anything of SSH is said.
                let Some(peer) = admitted_peer(&app, &mut tcp, peer).await else {
                    return;
                };
                let limits = &app.config.limits;
                let Some(slot) =
                    unauthenticated.enter(peer.ip(), limits.ssh_unauthenticated_per_source)
                else {
                    tracing::warn!(%peer, "refused: too many unauthenticated SSH connections from this address");
                    say_and_close(&mut tcp, "cofre: too many connections from your address are waiting to log in; try again later").await;
                    return;
                };
                let logged_in = Arc::new(LoggedIn::default());
                let handler =
                    conn::Connection::new(app.clone(), peer, port, logged_in.clone(), attempts);
                let grace = Duration::from_secs(limits.ssh_login_grace_seconds);
                serve_connection(config, tcp, peer, handler, logged_in, slot, grace).await;
                drop(fd_slot);
            });
        }
        // What this window noted is audited before the server goes.
        self.attempts.flush(&self.app).await;
    }
}

/// RFC 4253 4.2: lines before the version string are for the user to read (OpenSSH prints
/// them), so a refusal before the handshake is one line, then the close.
async fn say_and_close(tcp: &mut tokio::net::TcpStream, line: &str) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = tcp.write_all(format!("{line}\r\n").as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

/// The client's address if the network policy lets it in: a trusted proxy's PROXY protocol v2
/// header names it (a trusted proxy must send one, since an SSH client may wait for the server
/// to speak first and the header could not be told from silence), anyone else is its own TCP
/// peer. A refused client is told in one line and closed, before authentication.
async fn admitted_peer(
    app: &App,
    tcp: &mut tokio::net::TcpStream,
    peer: SocketAddr,
) -> Option<SocketAddr> {
    use cofre_app::proxy_protocol;
    let policy = match app.network_policy().await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the network policy; refusing the connection");
            return None;
        }
    };
    let mut client = peer;
    if policy.gateway.is_trusted_proxy(peer.ip()) {
        match proxy_protocol::starts_with_header(tcp, proxy_protocol::HEADER_TIMEOUT).await {
            Ok(true) => match proxy_protocol::read_header(tcp).await {
                Ok(Some(c)) => client = c,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "refused a connection from a trusted proxy");
                    return None;
                }
            },
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(%peer, error = %e, "a trusted proxy sent no PROXY header");
                return None;
            }
        }
    }
    match app
        .admit_source(cofre_core::network::Listener::Gateway, client.ip())
        .await
    {
        Ok(()) => Some(client),
        Err(e) => {
            tracing::info!(%client, "refused by the network policy");
            say_and_close(tcp, &format!("cofre: {}", e.message)).await;
            None
        }
    }
}

/// One connection: until a user logs in it counts against its address and has `grace` to do so
/// (OpenSSH's `LoginGraceTime`); a client that connects and says nothing is dropped then.
async fn serve_connection(
    config: Arc<russh::server::Config>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    handler: conn::Connection,
    logged_in: Arc<LoggedIn>,
    slot: UnauthenticatedSlot,
    grace: Duration,
) {
    let connection = async move {
        match russh::server::run_stream(config, tcp, handler).await {
            Ok(session) => {
                if let Err(e) = session.await {
                    tracing::debug!(%peer, error = %e, "ssh connection ended with an error");
                }
            }
            Err(e) => tracing::debug!(%peer, error = %e, "ssh handshake failed"),
        }
    };
    tokio::pin!(connection);
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    let mut slot = Some(slot);
    loop {
        tokio::select! {
            () = &mut connection => return,
            () = logged_in.notify.notified(), if slot.is_some() => slot = None,
            () = &mut deadline, if slot.is_some() => {
                if logged_in.is_set() {
                    slot = None;
                } else {
                    tracing::info!(%peer, "ssh connection closed: no login within the grace time");
                    // Dropping the connection's future closes its socket.
                    return;
                }
            }
        }
    }
}
