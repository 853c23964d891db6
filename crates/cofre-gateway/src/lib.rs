//! Cofre's SSH gateway. A user runs `ssh -p 2222 alice:root@db01@cofre`; the gateway authenticates
//! `alice` (registered public key, or password + TOTP through keyboard-interactive), asks the
//! services whether she may open a session on `root@db01`, connects upstream with the vaulted
//! credential (she never sees it), and records the session while relaying it.
//!
//! Every rule lives in `cofre_server::services`; this crate only speaks SSH (russh server and client)
//! and moves bytes. Each connection and each channel is its own task, so one slow or broken session
//! never stalls another.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)]

mod channel;
mod conn;
mod recorder;
pub mod sftp;
mod upstream;

use cofre_server::services::App;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

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
    pub addr: SocketAddr,
    /// `SHA256:...` of the gateway's host key, for users' known_hosts.
    pub host_key_fingerprint: String,
}

impl Gateway {
    /// Binds the listener and closes the sessions a previous run left open, so that by the time the
    /// server reports `ready` the session list tells the truth.
    pub async fn bind(app: Arc<App>, addr: SocketAddr) -> Result<Gateway, GatewayError> {
        if let Err(e) = app.end_orphaned_sessions().await {
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
            ..Default::default()
        };
        Ok(Gateway {
            app,
            listener,
            config: Arc::new(config),
            addr,
            host_key_fingerprint,
        })
    }

    /// Accepts connections until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "gateway accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let handler = conn::Connection::new(self.app.clone(), peer, self.addr.port());
            let config = self.config.clone();
            tokio::spawn(async move {
                match russh::server::run_stream(config, tcp, handler).await {
                    Ok(session) => {
                        if let Err(e) = session.await {
                            tracing::debug!(%peer, error = %e, "ssh connection ended with an error");
                        }
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "ssh handshake failed"),
                }
            });
        }
    }
}
