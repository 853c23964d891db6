//! Cofre's SSH client to targets: the target's host key checked by a policy the caller gives (the
//! services pin it per target), then the vaulted password or private key. A [`Connection`] opens
//! session channels for a relay (the gateway), runs a command and answers its prompts (password
//! rotation), and [`scan_host_key`] fetches a host key without logging in (backups' keyscan).
//!
//! Below the services: this crate knows no database, no audit trail and no HTTP. The caller decides
//! what a host key means and keeps the credential; only this crate and the caller ever hold it.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)]

use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zeroize::Zeroizing;

/// How long a target has to answer and finish the key exchange.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where to connect. `name` is the target's name in Cofre, for messages.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// What logs in as `account`.
pub enum Secret {
    Password(Zeroizing<String>),
    /// An OpenSSH or PEM private key, unencrypted.
    PrivateKey(Zeroizing<String>),
}

pub struct Login {
    pub account: String,
    pub secret: Secret,
}

/// A target's host key as presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `rsa-sha2-512`...
    pub algorithm: String,
    /// OpenSSH's `SHA256:...` fingerprint.
    pub fingerprint: String,
    /// The public key as one OpenSSH line without comment (`ssh-ed25519 AAAA...`).
    pub openssh: String,
}

type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Decides whether a presented host key is the target's. `Err` carries the message for the user.
pub trait HostKeyPolicy: Send + Sync {
    fn check<'a>(&'a self, key: &'a HostKey) -> CheckFuture<'a>;
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The host-key policy refused the key; the message is the policy's.
    #[error("{0}")]
    HostKeyRefused(String),
    #[error("cannot connect to {target} ({host}:{port}): {message}")]
    Unreachable {
        target: String,
        host: String,
        port: u16,
        message: String,
    },
    #[error("{target} ({host}:{port}) did not answer in time")]
    Timeout {
        target: String,
        host: String,
        port: u16,
    },
    #[error("the vaulted key for {account}@{target} cannot be read")]
    UnreadableKey { account: String, target: String },
    #[error("{target} refused the vaulted credential for {account}; ask an admin to check it")]
    CredentialRefused { account: String, target: String },
    #[error("authentication at {target} failed: {message}")]
    Authentication { target: String, message: String },
    #[error("cannot open a session on {target}: {message}")]
    Channel { target: String, message: String },
    #[error("{target} did not finish `{command}` in time")]
    CommandTimeout { target: String, command: String },
}

fn host_key_of(key: &PublicKeyOrCertificate) -> HostKey {
    let public = match key {
        PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
        PublicKeyOrCertificate::Certificate(cert) => {
            russh::keys::PublicKey::from(cert.public_key().clone())
        }
    };
    let algorithm = match key {
        PublicKeyOrCertificate::PublicKey { key, .. } => key.algorithm().to_string(),
        PublicKeyOrCertificate::Certificate(cert) => cert.algorithm().to_string(),
    };
    let openssh = public
        .to_openssh()
        .map(|line| {
            // `to_openssh` appends the comment, which says nothing about the key.
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some(kind), Some(blob)) => format!("{kind} {blob}"),
                _ => line.clone(),
            }
        })
        .unwrap_or_default();
    HostKey {
        algorithm,
        fingerprint: public.fingerprint(HashAlg::Sha256).to_string(),
        openssh,
    }
}

/// The russh client handler: hands the host key to the policy and keeps the refusal for the error.
struct Client {
    policy: Arc<dyn HostKeyPolicy>,
    refusal: Arc<Mutex<Option<String>>>,
}

impl russh::client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = host_key_of(key);
        match self.policy.check(&key).await {
            Ok(()) => Ok(true),
            Err(message) => {
                if let Ok(mut slot) = self.refusal.lock() {
                    *slot = Some(message);
                }
                Ok(false)
            }
        }
    }
}

/// Preferred ciphers: AES-GCM first, since with AES-NI it costs less per relayed byte than
/// ChaCha20 and every OpenSSH target offers it; the rest of the default list stays as fallback.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

fn client_config() -> Arc<russh::client::Config> {
    Arc::new(russh::client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(CIPHERS),
            ..Default::default()
        },
        ..Default::default()
    })
}

async fn handshake(
    target: &Target,
    policy: Arc<dyn HostKeyPolicy>,
) -> Result<russh::client::Handle<Client>, ConnectError> {
    let refusal = Arc::new(Mutex::new(None));
    let handler = Client {
        policy,
        refusal: refusal.clone(),
    };
    let addr = (target.host.clone(), target.port);
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        russh::client::connect(client_config(), addr, handler),
    )
    .await;
    match connected {
        Ok(Ok(h)) => Ok(h),
        Ok(Err(e)) => {
            if let Some(refused) = refusal.lock().ok().and_then(|mut s| s.take()) {
                return Err(ConnectError::HostKeyRefused(refused));
            }
            Err(ConnectError::Unreachable {
                target: target.name.clone(),
                host: target.host.clone(),
                port: target.port,
                message: e.to_string(),
            })
        }
        Err(_) => Err(ConnectError::Timeout {
            target: target.name.clone(),
            host: target.host.clone(),
            port: target.port,
        }),
    }
}

/// A logged-in connection to a target.
pub struct Connection {
    handle: russh::client::Handle<Client>,
    target: String,
}

/// One answer to give when the command's output shows `expect` (e.g. `passwd`'s prompts).
pub struct Prompt {
    pub expect: String,
    pub answer: Zeroizing<String>,
}

/// What a command run with [`Connection::exec`] left behind.
#[derive(Debug, Default)]
pub struct ExecOutput {
    /// None when the target closed the channel without one (or sent a signal instead).
    pub exit_status: Option<u32>,
    pub exit_signal: Option<String>,
    /// Standard output (with a terminal, standard error too).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Connection {
    /// Connects, has the host key checked by `host_keys`, and logs in as `login.account`.
    pub async fn open(
        target: &Target,
        login: &Login,
        host_keys: Arc<dyn HostKeyPolicy>,
    ) -> Result<Connection, ConnectError> {
        let mut handle = handshake(target, host_keys).await?;
        let accepted = match &login.secret {
            Secret::PrivateKey(pem) => {
                let key = russh::keys::decode_secret_key(pem, None).map_err(|_| {
                    ConnectError::UnreadableKey {
                        account: login.account.clone(),
                        target: target.name.clone(),
                    }
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
                        login.account.clone(),
                        PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                    )
                    .await
            }
            Secret::Password(password) => {
                handle
                    .authenticate_password(login.account.clone(), password.as_str())
                    .await
            }
        };
        match accepted {
            Ok(r) if r.success() => Ok(Connection {
                handle,
                target: target.name.clone(),
            }),
            Ok(_) => Err(ConnectError::CredentialRefused {
                account: login.account.clone(),
                target: target.name.clone(),
            }),
            Err(e) => Err(ConnectError::Authentication {
                target: target.name.clone(),
                message: e.to_string(),
            }),
        }
    }

    /// A fresh session channel, for a shell, a command or a subsystem the caller relays.
    pub async fn session_channel(
        &self,
    ) -> Result<russh::Channel<russh::client::Msg>, ConnectError> {
        self.handle
            .channel_open_session()
            .await
            .map_err(|e| ConnectError::Channel {
                target: self.target.clone(),
                message: e.to_string(),
            })
    }

    /// Runs `command` and waits for it to end, answering `prompts` in order as their text shows up
    /// in the output. With prompts the command gets a terminal (tools like `passwd` read from
    /// one), so its standard error comes with standard output. An answer is sent once, followed
    /// by a newline, and never kept in the output.
    pub async fn exec(
        &self,
        command: &str,
        prompts: &[Prompt],
        timeout: Duration,
    ) -> Result<ExecOutput, ConnectError> {
        self.exec_with_input(command, prompts, None, timeout).await
    }

    /// As [`Connection::exec`], and first writes `input` to the command's standard input and
    /// closes it (what `chpasswd` reads). The input is never kept in the output.
    pub async fn exec_with_input(
        &self,
        command: &str,
        prompts: &[Prompt],
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<ExecOutput, ConnectError> {
        let channel_err = |e: russh::Error| ConnectError::Channel {
            target: self.target.clone(),
            message: e.to_string(),
        };
        let mut channel = self.session_channel().await?;
        if !prompts.is_empty() {
            channel
                .request_pty(false, "dumb", 200, 24, 0, 0, &[])
                .await
                .map_err(channel_err)?;
        }
        channel.exec(true, command).await.map_err(channel_err)?;
        if let Some(input) = input {
            channel.data(input).await.map_err(channel_err)?;
            channel.eof().await.map_err(channel_err)?;
        }
        let run = async {
            let mut out = ExecOutput::default();
            let mut next = 0usize;
            // Output since the last answer, where the next prompt is looked for.
            let mut since_answer: Vec<u8> = Vec::new();
            while let Some(msg) = channel.wait().await {
                match msg {
                    russh::ChannelMsg::Data { data } => {
                        out.stdout.extend_from_slice(&data);
                        since_answer.extend_from_slice(&data);
                        if let Some(prompt) = prompts.get(next) {
                            if contains(&since_answer, prompt.expect.as_bytes()) {
                                let mut line = Zeroizing::new(prompt.answer.as_bytes().to_vec());
                                line.push(b'\n');
                                channel.data(&line[..]).await.map_err(channel_err)?;
                                since_answer.clear();
                                next += 1;
                            }
                        }
                    }
                    russh::ChannelMsg::ExtendedData { data, .. } => {
                        out.stderr.extend_from_slice(&data)
                    }
                    russh::ChannelMsg::ExitStatus { exit_status } => {
                        out.exit_status = Some(exit_status)
                    }
                    russh::ChannelMsg::ExitSignal { signal_name, .. } => {
                        out.exit_signal = Some(format!("{signal_name:?}"))
                    }
                    russh::ChannelMsg::Close => break,
                    _ => {}
                }
            }
            Ok(out)
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => {
                let _ = channel.close().await;
                Err(ConnectError::CommandTimeout {
                    target: self.target.clone(),
                    command: command.to_owned(),
                })
            }
        }
    }

    pub async fn disconnect(&self, why: &str) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, why, "en")
            .await;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asks the target for its host key and goes no further (no login): what `ssh-keyscan` does.
pub async fn scan_host_key(target: &Target) -> Result<HostKey, ConnectError> {
    struct Keep(Mutex<Option<HostKey>>);
    impl HostKeyPolicy for Keep {
        fn check<'a>(&'a self, key: &'a HostKey) -> CheckFuture<'a> {
            if let Ok(mut slot) = self.0.lock() {
                *slot = Some(key.clone());
            }
            Box::pin(async { Err("scanned".to_owned()) })
        }
    }
    let keep = Arc::new(Keep(Mutex::new(None)));
    let result = handshake(target, keep.clone()).await;
    let seen = keep.0.lock().ok().and_then(|mut s| s.take());
    match (result, seen) {
        (_, Some(key)) => Ok(key),
        (Err(e), None) => Err(e),
        (Ok(_), None) => Err(ConnectError::Unreachable {
            target: target.name.clone(),
            host: target.host.clone(),
            port: target.port,
            message: "the target presented no host key".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::contains;

    #[test]
    fn prompts_are_found_anywhere_in_the_output() {
        assert!(contains(
            b"Changing password.\r\nCurrent password: ",
            b"password:"
        ));
        assert!(!contains(b"Current passw", b"password:"));
        assert!(contains(b"", b""));
    }
}
