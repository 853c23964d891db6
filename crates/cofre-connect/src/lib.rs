//! The connection from the gateway to the target: host key pinned per target, then the vaulted
//! credential. The user never sees the credential; only this module and the services hold it.

use cofre_server::error::Error;
use cofre_server::services::sessions::SessionStart;
use cofre_server::services::App;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Upstream {
    app: Arc<App>,
    session_id: String,
    target: String,
    /// Why the host key was refused, for the user's message.
    refusal: Arc<Mutex<Option<Error>>>,
}

impl russh::client::Handler for Upstream {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let fingerprint = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.fingerprint(HashAlg::Sha256).to_string()
            }
            PublicKeyOrCertificate::Certificate(cert) => {
                cert.public_key().fingerprint(HashAlg::Sha256).to_string()
            }
        };
        match self
            .app
            .check_host_key(&self.session_id, &self.target, &fingerprint)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) => {
                if let Ok(mut slot) = self.refusal.lock() {
                    *slot = Some(e);
                }
                Ok(false)
            }
        }
    }
}

/// Connects and authenticates as the session's account. The error is a message for the user.
const UPSTREAM_CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

pub async fn connect(
    app: &Arc<App>,
    start: &SessionStart,
    target: &str,
) -> Result<russh::client::Handle<Upstream>, String> {
    let refusal = Arc::new(Mutex::new(None));
    let handler = Upstream {
        app: app.clone(),
        session_id: start.id.clone(),
        target: target.to_owned(),
        refusal: refusal.clone(),
    };
    let config = Arc::new(russh::client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        // AES-GCM first: with AES-NI it costs the gateway less per relayed byte than ChaCha20,
        // and every OpenSSH target offers it; the rest of the default list stays as fallback.
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(UPSTREAM_CIPHERS),
            ..Default::default()
        },
        ..Default::default()
    });
    let addr = (start.host.clone(), start.port);
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        russh::client::connect(config, addr, handler),
    )
    .await;
    let mut handle = match connected {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            if let Some(refused) = refusal.lock().ok().and_then(|mut s| s.take()) {
                return Err(refused.message);
            }
            return Err(format!(
                "cannot connect to {target} ({}:{}): {e}",
                start.host, start.port
            ));
        }
        Err(_) => {
            return Err(format!(
                "{target} ({}:{}) did not answer in time",
                start.host, start.port
            ))
        }
    };
    let accepted = match start.secret_kind.as_str() {
        "private_key" => {
            let key = russh::keys::decode_secret_key(&start.secret, None).map_err(|_| {
                format!(
                    "the vaulted key for {}@{target} cannot be read",
                    start.account
                )
            })?;
            let hash = if key.algorithm().is_rsa() {
                handle
                    .best_supported_rsa_hash()
                    .await
                    .ok()
                    .flatten()
                    .flatten()
            } else {
                None
            };
            handle
                .authenticate_publickey(
                    start.account.clone(),
                    PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                )
                .await
        }
        _ => {
            handle
                .authenticate_password(start.account.clone(), start.secret.as_str())
                .await
        }
    };
    match accepted {
        Ok(r) if r.success() => Ok(handle),
        Ok(_) => Err(format!(
            "{target} refused the vaulted credential for {}; ask an admin to check it",
            start.account
        )),
        Err(e) => Err(format!("authentication at {target} failed: {e}")),
    }
}
