//! One SSH connection: authentication, and the channel requests it may make. Session channels are
//! handed to [`crate::channel`], one task each; everything that could go around the recording
//! (port forwarding, X11, agent forwarding) is refused and audited.

use crate::channel::{self, ChannelSetup};
use cofre_app::services::sessions::{parse_gateway_login, GatewayLogin};
use cofre_app::services::{App, Principal};
use cofre_core::policy::Outcome;
use russh::keys::HashAlg;
use russh::server::{
    Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Session channels one connection may have open at once: OpenSSH's `MaxSessions` default. Each
/// opens its own connection to the target, so without a cap one client could open hundreds.
pub(crate) const MAX_CHANNELS: usize = 10;

enum Prompting {
    Nothing,
    /// Asked for the password: the same one prompt for every name, known or not, with TOTP or not.
    Password,
    /// The password was right and the account uses TOTP: asked for the code. Only a right
    /// password leads here, as only a right password gets `totp_required` from the API.
    Totp(zeroize::Zeroizing<String>),
    /// Authenticated; asked why (the policy's outcome is `justify`).
    Reason,
}

pub(crate) struct Connection {
    app: Arc<App>,
    /// The gateway's own port, for the login hint's example.
    port: u16,
    source: String,
    login: Option<GatewayLogin>,
    /// A login name that is not `user:account@target`: the connection gets in, but only to be told.
    refusal: Option<String>,
    principal: Option<Principal>,
    reason: Option<String>,
    prompting: Prompting,
    /// Reasons refused as too short or too long; after `REASON_ATTEMPTS` the login is refused.
    bad_reasons: u32,
    /// Session channels of this connection still running (their tasks hold a count each).
    channels: Arc<AtomicUsize>,
    /// Told once a user has logged in: the pre-authentication deadline and the per-address cap
    /// of unauthenticated connections stop applying.
    authenticated: Arc<crate::LoggedIn>,
    peer: std::net::IpAddr,
    /// Where failed attempts are counted (audited per source and minute, not one by one).
    attempts: Arc<crate::attempts::Attempts>,
}

/// One running channel's place in its connection's count, given back when the task ends.
pub(crate) struct ChannelSlot(Arc<AtomicUsize>);

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

const REASON_ATTEMPTS: u32 = 3;

fn methods(kinds: &[MethodKind]) -> Option<MethodSet> {
    Some(MethodSet::from(kinds))
}

impl Connection {
    pub(crate) fn new(
        app: Arc<App>,
        peer: SocketAddr,
        port: u16,
        authenticated: Arc<crate::LoggedIn>,
        attempts: Arc<crate::attempts::Attempts>,
    ) -> Connection {
        Connection {
            app,
            port,
            source: peer.ip().to_string(),
            login: None,
            refusal: None,
            principal: None,
            reason: None,
            prompting: Prompting::Nothing,
            bad_reasons: 0,
            channels: Arc::new(AtomicUsize::new(0)),
            authenticated,
            peer: peer.ip(),
            attempts,
        }
    }

    fn failed(&self, kind: &'static str, name: &str) {
        self.attempts.note(&self.app, self.peer, kind, name);
    }

    /// A user is in: the one place a connection counts as authenticated.
    fn accept(&self) -> Auth {
        self.authenticated.set();
        Auth::Accept
    }

    fn parse(&self, user: &str) -> cofre_app::error::Result<GatewayLogin> {
        parse_gateway_login(user, self.port)
    }

    fn actor(&self) -> String {
        self.principal
            .as_ref()
            .map_or("anonymous", |p| p.username())
            .to_owned()
    }

    /// Audits a refused request on an open channel (X11, agent forwarding): they would go around
    /// the recording.
    async fn refuse_request(&self, what: &str) {
        let _ = self
            .app
            .sessions()
            .record_refusal(
                &self.actor(),
                what,
                &format!("{what} is not allowed through the gateway"),
                &self.source,
            )
            .await;
    }

    fn reject() -> Auth {
        Auth::Reject {
            proceed_with_methods: methods(&[
                MethodKind::PublicKey,
                MethodKind::KeyboardInteractive,
            ]),
            partial_success: false,
        }
    }

    fn ask_reason(&self, retry: bool) -> Auth {
        let what = self
            .login
            .as_ref()
            .map(|l| format!("{}@{}", l.account, l.target))
            .unwrap_or_default();
        Auth::Partial {
            name: Cow::Borrowed("Cofre"),
            instructions: Cow::Owned(if retry {
                format!("A reason of at least 3 characters is required for {what}.")
            } else {
                format!(
                    "Access to {what} requires a reason (e.g. a ticket number); it is recorded."
                )
            }),
            prompts: Cow::Owned(vec![(Cow::Borrowed("Reason: "), true)]),
        }
    }

    /// After the user is known: accept, or first ask for a reason where policy wants one.
    async fn after_authentication(&mut self, principal: Principal) -> Auth {
        let principal = principal.with_source(self.peer);
        let outcome = match &self.login {
            Some(l) => self
                .app
                .sessions()
                .decide_session(&principal, &l.target)
                .await
                .ok()
                .flatten(),
            None => None,
        };
        self.principal = Some(principal);
        if outcome == Some(Outcome::Justify) {
            self.prompting = Prompting::Reason;
            Auth::Reject {
                proceed_with_methods: methods(&[MethodKind::KeyboardInteractive]),
                partial_success: true,
            }
        } else {
            self.accept()
        }
    }

    async fn refuse_channel(&self, kind: &str, reply: ChannelOpenHandle) {
        let _ = self
            .app
            .sessions()
            .record_refusal(
                &self.actor(),
                kind,
                &format!("{kind} is not allowed through the gateway"),
                &self.source,
            )
            .await;
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    /// A contingency or demo instance says so before anyone logs in (OpenSSH prints it on the
    /// terminal), so nobody mistakes it for production.
    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        Ok(self
            .app
            .instance_banner()
            .await
            .map(|b| format!("cofre: {b}\r\n")))
    }

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        match self.parse(user) {
            Ok(login) => {
                self.login = Some(login);
                Ok(Self::reject())
            }
            Err(e) => {
                // No SSH message can carry an explanation before authentication, so a malformed
                // name is let in to a session that can do nothing but print why.
                self.failed("malformed", user);
                self.refusal = Some(e.message);
                Ok(Auth::Accept)
            }
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.bad_reasons >= REASON_ATTEMPTS {
            return Ok(Self::reject());
        }
        // Clients need not try `none` first, so the name is parsed here too.
        let Ok(login) = self.parse(user) else {
            self.failed("malformed", user);
            return Ok(Self::reject());
        };
        let fp = offer.public_key.fingerprint(HashAlg::Sha256).to_string();
        Ok(
            match self.app.sessions().is_key_known(&login.user, &fp).await {
                Ok(true) => Auth::Accept,
                _ => {
                    self.failed("publickey", &login.user);
                    Self::reject()
                }
            },
        )
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.bad_reasons >= REASON_ATTEMPTS {
            return Ok(Self::reject());
        }
        let Ok(login) = self.parse(user) else {
            return Ok(Self::reject());
        };
        let fp = key.public_key.fingerprint(HashAlg::Sha256).to_string();
        let principal = match self
            .app
            .sessions()
            .login_by_key(&login.user, &fp, &self.source)
            .await
        {
            Ok(p) => p,
            Err(_) => {
                self.failed("publickey", &login.user);
                return Ok(Self::reject());
            }
        };
        self.login = Some(login);
        Ok(self.after_authentication(principal).await)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        if self.bad_reasons >= REASON_ATTEMPTS {
            return Ok(Self::reject());
        }
        let Ok(login) = self.parse(user) else {
            self.failed("malformed", user);
            return Ok(Self::reject());
        };
        match (&self.prompting, response) {
            (Prompting::Reason, None) => Ok(self.ask_reason(false)),
            (Prompting::Reason, Some(mut answers)) => {
                let reason = answers
                    .next()
                    .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                    .unwrap_or_default();
                if reason.chars().count() < 3 || reason.chars().count() > 500 {
                    self.bad_reasons += 1;
                    if self.bad_reasons < REASON_ATTEMPTS {
                        return Ok(self.ask_reason(true));
                    }
                    // Asking forever would keep a client that cannot answer (a script) hanging.
                    let _ = self
                        .app
                        .sessions()
                        .record_refusal(
                            &login.user,
                            &format!("credential:{}/{}", login.target, login.account),
                            "no valid reason given",
                            &self.source,
                        )
                        .await;
                    self.principal = None;
                    self.prompting = Prompting::Nothing;
                    return Ok(Self::reject());
                }
                self.reason = Some(reason);
                self.prompting = Prompting::Nothing;
                Ok(self.accept())
            }
            (_, None) | (Prompting::Nothing, Some(_)) => {
                self.login = Some(login);
                self.prompting = Prompting::Password;
                Ok(Auth::Partial {
                    name: Cow::Borrowed("Cofre"),
                    instructions: Cow::Borrowed(""),
                    prompts: Cow::Owned(vec![(Cow::Borrowed("Password: "), false)]),
                })
            }
            (Prompting::Password, Some(mut answers)) => {
                self.prompting = Prompting::Nothing;
                let password = zeroize::Zeroizing::new(
                    answers
                        .next()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default(),
                );
                match self
                    .app
                    .sessions()
                    .login_by_password(&login.user, &password, None, &self.source)
                    .await
                {
                    Ok(principal) => {
                        self.login = Some(login);
                        Ok(self.after_authentication(principal).await)
                    }
                    Err(e) if e.code == cofre_app::error::ErrorCode::TotpRequired => {
                        self.login = Some(login);
                        self.prompting = Prompting::Totp(password);
                        Ok(Auth::Partial {
                            name: Cow::Borrowed("Cofre"),
                            instructions: Cow::Borrowed(""),
                            prompts: Cow::Owned(vec![(Cow::Borrowed("TOTP code: "), true)]),
                        })
                    }
                    Err(_) => {
                        self.failed("password", &login.user);
                        Ok(Self::reject())
                    }
                }
            }
            (Prompting::Totp(_), Some(mut answers)) => {
                let Prompting::Totp(password) =
                    std::mem::replace(&mut self.prompting, Prompting::Nothing)
                else {
                    return Ok(Self::reject());
                };
                let code = answers
                    .next()
                    .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                    .unwrap_or_default();
                match self
                    .app
                    .sessions()
                    .login_by_password(&login.user, &password, Some(&code), &self.source)
                    .await
                {
                    Ok(principal) => {
                        self.login = Some(login);
                        Ok(self.after_authentication(principal).await)
                    }
                    Err(_) => {
                        self.failed("totp", &login.user);
                        Ok(Self::reject())
                    }
                }
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channels.fetch_add(1, Ordering::Relaxed) >= MAX_CHANNELS {
            self.channels.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(source = %self.source, "refused a session channel over the per-connection cap");
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        let slot = ChannelSlot(self.channels.clone());
        reply.accept().await;
        let setup = ChannelSetup {
            app: self.app.clone(),
            handle: session.handle(),
            source: self.source.clone(),
            login: self.login.clone(),
            principal: self.principal.clone(),
            refusal: self.refusal.clone(),
            reason: self.reason.clone(),
        };
        tokio::spawn(async move {
            channel::run(setup, channel).await;
            drop(slot);
        });
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel(&format!("port forwarding to {host}:{port}"), reply)
            .await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel("unix socket forwarding", reply).await;
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel("X11 forwarding", reply).await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let _ = self
            .app
            .sessions()
            .record_refusal(
                &self.actor(),
                &format!("remote forwarding {address}:{port}"),
                "remote port forwarding is not allowed",
                &self.source,
            )
            .await;
        Ok(false)
    }

    // Replies to channel requests; the channel task acts on the same requests in order.
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if channel::env_allowed(name) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
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
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_request("X11 forwarding").await;
        session.channel_failure(channel)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse_request("agent forwarding").await;
        Ok(false)
    }
}
