//! The light SSH target of `cofre-bench gateway --idle`: one russh server inside the benchmark's
//! own process, so that ten thousand idle sessions cost ten thousand small tasks here instead of
//! ten thousand sshd processes (which would not fit the machine). It lets in only the key the
//! benchmark vaulted as `root`'s credential. Every command prints `ready`, so that the benchmark
//! sees the session open end to end (through the gateway, recorded) at its first output byte;
//! [`PROBE_COMMAND`] then exits 0, any other command stays open and silent, as does a shell: that
//! is what an idle session is.

use super::gateway::keygen;
use anyhow::{Context, Result};
use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Answers `ready` and exits 0.
pub(super) const PROBE_COMMAND: &str = "echo ready";
/// Answers `ready` and stays open.
pub(super) const IDLE_COMMAND: &str = "echo ready; sleep infinity";

/// A running light target; dropping it stops accepting (held sessions end with the runtime).
pub(super) struct LightTarget {
    pub port: u16,
    /// Connections refused because the process ran out of descriptors (or another accept error).
    pub accept_errors: Arc<AtomicU64>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for LightTarget {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Starts the light target on an OS-picked loopback port, admitting `DIR/root_key.pub`'s key.
pub(super) async fn start(dir: &Path) -> Result<LightTarget> {
    let host_key_path = dir.join("light_host_key");
    keygen(&host_key_path)?;
    let host_key =
        russh::keys::load_secret_key(&host_key_path, None).context("light target host key")?;
    let allowed = russh::keys::load_secret_key(dir.join("root_key"), None)
        .context("the benchmark's root key")?
        .public_key()
        .clone();
    let config = Arc::new(russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-CofreBenchLight".into()),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        keys: vec![host_key],
        // The only client is the gateway; a refused key is a bug to see at once, not to delay.
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        // Idle is the point: nothing here may end or poke a quiet session.
        inactivity_timeout: None,
        keepalive_interval: None,
        nodelay: true,
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let allowed = Arc::new(allowed);
    let accept_errors = Arc::new(AtomicU64::new(0));
    let errors = accept_errors.clone();
    let accepting = tokio::spawn(async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    // EMFILE and the like: the gateway's connect then fails and the benchmark
                    // reports it; a pause keeps this loop from spinning meanwhile.
                    errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let handler = Light {
                allowed: allowed.clone(),
                channels: Vec::new(),
            };
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok(session) = russh::server::run_stream(config, tcp, handler).await {
                    let _ = session.await;
                }
            });
        }
    });
    Ok(LightTarget {
        port,
        accept_errors,
        accepting,
    })
}

struct Light {
    allowed: Arc<PublicKey>,
    /// Kept so that the channels live as long as their connection.
    channels: Vec<Channel<Msg>>,
}

impl Light {
    fn judge(&self, key: &PublicKey) -> Auth {
        // Key material only: the vaulted key's comment is not sent on the wire.
        if key.key_data() == self.allowed.key_data() {
            Auth::Accept
        } else {
            Auth::reject()
        }
    }
}

impl russh::server::Handler for Light {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.judge(offer.public_key))
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.judge(key.public_key))
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.push(channel);
        reply.accept().await;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        command: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        session.data(channel, bytes::Bytes::from_static(b"ready\n"))?;
        if command == PROBE_COMMAND.as_bytes() {
            session.exit_status_request(channel, 0)?;
            session.eof(channel)?;
            session.close(channel)?;
        }
        Ok(())
    }
}
