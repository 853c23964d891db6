//! Gateway sessions: who may open one to which account, the live-session registry (list, kill),
//! pinned target host keys, users' SSH keys, and reading recordings back.

use super::accounts::LoginInput;
use super::requests::UseRefused;
use super::{page_limit, App, Principal, TokenScope};
use super::{Accounts, Sessions};
use crate::error::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_core::names::check_text;
use cofre_core::policy::{check_reason, decide, Access, Decision, Outcome, TargetRef};
use cofre_core::role::{Action, Role};
use cofre_crypto::datakey::DataKey;
use cofre_crypto::{envelope, SealedSecret};
use cofre_proto::{
    Page, RecordingFormat, RecordingStream, RecordingVerification, SessionInfo, SshKeyInfo,
};
use cofre_recording::{Export, Problem, Stream, Summary, Writer};
use cofre_store::gateway::{NewSession, SessionRow};
use tokio::sync::watch;
use zeroize::Zeroizing;

pub use crate::session::live::LiveSessions;
pub(crate) use crate::session::live::LiveWho;

/// Failed SSH authentications from one source in one window (see `cofre_gateway`'s attempts).
pub struct FailedAttempts<'a> {
    pub source: &'a str,
    pub attempts: u64,
    /// Attempts by kind (`malformed`, `password`, `publickey`).
    pub kinds: std::collections::BTreeMap<String, u64>,
    /// A bounded sample of the names tried, control characters escaped.
    pub names: Vec<String>,
    pub names_not_shown: u64,
    pub since: &'a str,
}

/// What the gateway needs to open and record one session. The secret never leaves the gateway.
pub struct SessionStart {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub account: String,
    /// `password` or `private_key`.
    pub secret_kind: String,
    pub secret: Zeroizing<String>,
    pub recording: Writer,
    /// Receives the reason when the session must end (killed by an admin).
    pub kill: watch::Receiver<Option<String>>,
    /// Watch, lock and moderation of this session.
    pub control: std::sync::Arc<crate::session::Control>,
    /// Lines for this session's user from its control.
    pub notices: tokio::sync::mpsc::UnboundedReceiver<String>,
}

pub use cofre_core::names::GatewayLogin;

/// Parses `alice+root+db01` or `alice:root@db01`; the error says what a valid login looks like,
/// with the gateway's port (`ssh_port`) so the example works as written.
pub fn parse_gateway_login(s: &str, ssh_port: u16) -> Result<GatewayLogin> {
    cofre_core::names::parse_gateway_login(s).map_err(|e| {
        Error::invalid(
            "username",
            format!(
                "{}: log in as COFRE_USER+ACCOUNT+TARGET (or COFRE_USER:ACCOUNT@TARGET), \
                 e.g. ssh -p {ssh_port} alice+root+db01@GATEWAY",
                e.reason
            ),
        )
    })
}

/// OpenSSH's fingerprint of a public key line (`SHA256:...`) and the key without its comment,
/// after russh's parser has read it (`crate::ssh_keys`).
pub fn ssh_key_fingerprint(line: &str) -> Result<(String, String)> {
    crate::ssh_keys::user_key("public_key", line)
}

/// A session's row, and its control while it is live on this node.
fn session_info(s: SessionRow, control: Option<&crate::session::Control>) -> SessionInfo {
    let control = control.filter(|_| s.ended_at.is_none());
    SessionInfo {
        live: control.is_some(),
        input_blocked: control.is_some_and(|c| c.input_blocked()),
        moderated: control.is_some_and(|c| c.moderated()),
        held: control.is_some_and(|c| c.is_held()),
        id: s.id,
        username: s.username,
        target: s.target,
        account: s.account,
        kind: s.kind,
        source: s.source,
        started_at: s.started_at,
        ended_at: s.ended_at,
        end_reason: s.end_reason,
        bytes: s.bytes,
    }
}

/// How `policies` let `who` open a session to the target `name` with `tags`, if at all.
fn session_outcome(
    policies: &[cofre_core::policy::Policy],
    who: &Principal,
    name: &str,
    tags: &[String],
) -> Option<Outcome> {
    match decide(
        policies,
        &who.groups,
        &TargetRef { name, tags },
        Access::Session,
        who.source(),
    ) {
        Decision::Deny => None,
        Decision::Granted { outcome, .. } => Some(outcome),
    }
}

/// The grant a session comes through: an approved access request, or a support user's `host`
/// grant (`support`). The session is registered under its id and ends with it.
struct Held {
    id: String,
    reason: String,
    ends_at: i64,
    support: bool,
    /// An invitee's invitation (issue 18): the session is `external`.
    invitation: bool,
}

impl App {
    async fn principal_for(
        &self,
        user: &cofre_store::users::UserRow,
        via_key: Option<&str>,
    ) -> Result<Principal> {
        let role = Role::parse(&user.role)
            .ok_or_else(|| Error::internal("reading a user", "unknown role in the database"))?;
        self.require_fresh_sso(user).await?;
        Ok(Principal {
            user_id: user.id,
            username: user.username.clone(),
            role,
            groups: self.store.user_groups(user.id).await?,
            scope: TokenScope::Session,
            token_hash: String::new(),
            mode: self.config.mode,
            via_key: via_key.map(str::to_owned),
            source: None,
            // A support user's `host` grants open a session to the Cofre machine (and only that).
            support_grants: if role == Role::Support {
                self.active_support_grants(&user.username).await?
            } else {
                Vec::new()
            },
            invitation: None,
            approved_session: None,
        })
    }
}

impl Sessions<'_> {
    /// A user as a gateway session's principal (for re-deciding a live session).
    pub(crate) async fn principal_for_name(&self, username: &str) -> Result<Principal> {
        let user = self
            .store
            .user_by_name(username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {username}")))?;
        self.principal_for(&user, None).await
    }

    /// The gateway principal as it stands now: a connection authenticated a while ago opens a new
    /// channel only if its user is still enabled, the key it used is still registered, and with
    /// the groups the user has now (a removed member loses what the group gave at once).
    pub(crate) async fn gateway_principal_now(&self, who: &Principal) -> Result<Principal> {
        if let Some(id) = &who.invitation {
            // An invitee has no user row: its invitation is what must still hold.
            self.invitation_usable(id).await?;
            return Ok(who.clone());
        }
        let user = match self.store.user_by_name(&who.username).await? {
            Some(u) if u.disabled_at.is_none() => u,
            _ => return Err(super::accounts::account_disabled()),
        };
        if let Some(fp) = &who.via_key {
            if !self.is_key_known(&who.username, fp).await? {
                return Err(Error::new(
                    ErrorKind::Forbidden,
                    ErrorCode::KeyRemoved,
                    format!(
                        "the SSH key {fp} is no longer registered for {}",
                        who.username
                    ),
                ));
            }
        }
        let mut now = self.principal_for(&user, who.via_key.as_deref()).await?;
        now.scope = who.scope;
        now.source = who.source;
        Ok(now)
    }

    /// Whether `username` has registered this key (for the SSH `publickey` offer, before any
    /// signature is checked: nothing is audited here).
    pub async fn is_key_known(&self, username: &str, fingerprint: &str) -> Result<bool> {
        match self.store.user_by_name(username).await? {
            Some(u) if u.disabled_at.is_none() => {}
            _ => return Ok(false),
        }
        Ok(self
            .store
            .ssh_keys_of(username)
            .await?
            .iter()
            .any(|k| k.fingerprint == fingerprint))
    }

    /// A verified public-key login at the gateway.
    pub async fn login_by_key(
        &self,
        username: &str,
        fingerprint: &str,
        source: &str,
    ) -> Result<Principal> {
        let refused = || {
            Error::new(
                ErrorKind::Unauthorized,
                ErrorCode::InvalidCredentials,
                "key not registered",
            )
        };
        let user = self
            .store
            .user_by_name(username)
            .await?
            .ok_or_else(refused)?;
        if user.disabled_at.is_some() {
            self.record(
                NewAuditEntry::new(
                    username,
                    "gateway.login_refused",
                    format!("user:{username}"),
                )
                .outcome("denied")
                .detail("why", "account disabled")
                .detail("key", fingerprint)
                .detail("source", source),
            )
            .await?;
            return Err(super::accounts::account_disabled());
        }
        if !self.is_key_known(username, fingerprint).await? {
            return Err(refused());
        }
        // No lockout check: a lock comes from wrong passwords, which anyone can type for any
        // user; refusing the key holder too would let them shut a user (or every admin) out.
        self.record(
            NewAuditEntry::new(username, "gateway.login", format!("user:{username}"))
                .detail("method", "publickey")
                .detail("key", fingerprint)
                .detail("source", source),
        )
        .await?;
        self.principal_for(&user, Some(fingerprint)).await
    }

    /// A password (+ TOTP) login at the gateway, with the same per-address back-off and audit as
    /// the API's (`source` is the SSH client's address).
    pub async fn login_by_password(
        &self,
        username: &str,
        password: &str,
        totp_code: Option<&str>,
        source: &str,
    ) -> Result<Principal> {
        let input = LoginInput {
            username,
            password,
            totp_code,
            source,
            aggregated: true,
        };
        let (user, totp_step, mut tx) = self.accounts().verify_login(&input).await?;
        if user.must_change_password {
            return Err(Error::new(
                ErrorKind::Forbidden,
                ErrorCode::PasswordChangeRequired,
                "set your own password first with `cofre login`",
            ));
        }
        tx.record_login_success(user.id, totp_step).await?;
        self.commit(
            tx,
            NewAuditEntry::new(username, "gateway.login", format!("user:{username}"))
                .detail("method", "keyboard-interactive")
                .detail("totp", user.totp_enabled)
                .detail("source", source),
        )
        .await?;
        self.principal_for(&user, None).await
    }

    /// The policy outcome for a session, without side effects (to know whether to ask a reason).
    pub async fn decide_session(&self, who: &Principal, target: &str) -> Result<Option<Outcome>> {
        let Some(t) = self.store.target_by_name(target).await? else {
            return Ok(None);
        };
        let policies = self.vault().policies_of_groups(&who.groups).await?;
        Ok(session_outcome(&policies, who, &t.name, &t.tags))
    }

    /// [`Sessions::decide_session`] for each of `targets` (as `list_targets` just gave them), with
    /// the viewer's policies read once: a page of a hundred targets costs one query, not two
    /// per row.
    pub async fn decide_sessions(
        &self,
        who: &Principal,
        targets: &[cofre_proto::TargetInfo],
    ) -> Result<Vec<Option<Outcome>>> {
        let policies = self.vault().policies_of_groups(&who.groups).await?;
        Ok(targets
            .iter()
            .map(|t| session_outcome(&policies, who, &t.name, &t.tags))
            .collect())
    }

    /// Checks policy, opens the credential, starts the recording and records the session start, in
    /// that order: if any step fails, nothing reaches the target.
    pub async fn start_session(
        &self,
        who: &Principal,
        login: &GatewayLogin,
        kind: &str,
        source: &str,
        reason: Option<&str>,
        header: serde_json::Value,
    ) -> Result<SessionStart> {
        // Support never uses credentials; under a `host` grant it may open a session to the
        // Cofre machine, which is judged below against the grant, not by policy.
        if who.role == Role::Support {
            who.require(Action::OwnAccount)?;
        } else {
            who.require(Action::UseCredentials)?;
        }
        if let Some(r) = reason {
            check_text("reason", r, 500)?;
        }
        let (target, account) = (login.target.as_str(), login.account.as_str());
        let object = format!("credential:{target}/{account}");
        if let Some(refusal) = self.application_refusal().await? {
            self.record(
                NewAuditEntry::new(&who.username, "session.refused", &*object)
                    .outcome("denied")
                    .detail("why", refusal.code.as_str())
                    .detail("source", source),
            )
            .await?;
            return Err(refusal);
        }
        if let Some(refusal) = self.maintenance_refusal().await? {
            self.record(
                NewAuditEntry::new(&who.username, "session.refused", &*object)
                    .outcome("denied")
                    .detail("why", refusal.code.as_str())
                    .detail("source", source),
            )
            .await?;
            return Err(refusal);
        }
        let current = match self.gateway_principal_now(who).await {
            Ok(p) => p,
            Err(e) => {
                self.record(
                    NewAuditEntry::new(&who.username, "session.refused", &*object)
                        .outcome("denied")
                        .detail("why", e.code.as_str())
                        .detail("source", source),
                )
                .await?;
                return Err(e);
            }
        };
        let who = &current;
        // The emergency lockdown, judged on the user's role as it is now.
        if let Some(refusal) = self.lockdown_refusal(who.role).await? {
            self.record(
                NewAuditEntry::new(&who.username, "session.refused", &*object)
                    .outcome("denied")
                    .detail("why", refusal.code.as_str())
                    .detail("source", source),
            )
            .await?;
            return Err(refusal);
        }
        let refused_unknown = |why: &'static str| {
            NewAuditEntry::new(&who.username, "session.refused", &*object)
                .outcome("denied")
                .detail("why", why)
                .detail("source", source)
        };
        let Some(target_row) = self.store.target_by_name(target).await? else {
            self.record(refused_unknown("unknown target")).await?;
            // The same answer as a target no policy grants: names cannot be probed.
            return Err(UseRefused::NoPolicy.error(target, account, Access::Session));
        };
        // What the session comes through besides a policy: an approved access grant, or for a
        // support user its `host` grant; the session ends with it.
        let (policy, held, moderated) = if let Some(invitation) = &who.invitation {
            // An invitee opens only what its invitation names, in its window; no policy.
            let row = match self.invitation_session(invitation, target, account).await? {
                Ok(row) => row,
                Err(why) => {
                    self.record(
                        refused_unknown("invitation")
                            .detail("invitation", invitation.as_str())
                            .detail("invitation_refusal", why.to_string()),
                    )
                    .await?;
                    return Err(UseRefused::NoPolicy.error(target, account, Access::Session));
                }
            };
            if !self
                .use_session_approval(who, &row, target, account)
                .await?
            {
                self.record(
                    refused_unknown("invitation")
                        .detail("invitation", invitation.as_str())
                        .detail("invitation_refusal", "the session was not approved"),
                )
                .await?;
                return Err(Error::forbidden(
                    "this invitation opens a session only once an admin or the inviter approved it",
                ));
            }
            let held = Held {
                id: row.id,
                reason: row.reason,
                ends_at: row.ends_at,
                support: false,
                invitation: true,
            };
            ("invitation".to_owned(), Some(held), false)
        } else if who.role == Role::Support {
            let scopes = who.support_scopes();
            let grant = who
                .support_grants
                .iter()
                .find(|(_, s)| cofre_core::support::host_session_may(s, &target_row.tags));
            let Some((grant_id, _)) = grant else {
                let why = if scopes.contains(&cofre_core::support::Scope::Host) {
                    "not the support host"
                } else {
                    "no host grant"
                };
                self.record(refused_unknown(why)).await?;
                return Err(UseRefused::NoPolicy.error(target, account, Access::Session));
            };
            let row =
                self.store.support_grant(grant_id).await?.ok_or_else(|| {
                    Error::internal("reading a support grant", "the grant is gone")
                })?;
            let ends_at = row.ends_at.unwrap_or_else(|| self.now().unix_timestamp());
            let held = Held {
                id: row.id,
                reason: row.reason,
                ends_at,
                support: true,
                invitation: false,
            };
            ("support-grant".to_owned(), Some(held), false)
        } else {
            let allowed = match self
                .approvals()
                .authorise_use(who, target, &target_row.tags, account, Access::Session)
                .await?
            {
                Ok(a) => a,
                Err(refused) => {
                    let mut entry = NewAuditEntry::new(&who.username, "session.refused", &*object)
                        .outcome("denied")
                        .detail("why", refused.audit_why(Access::Session))
                        .detail("source", source);
                    if let Some(p) = refused.policy() {
                        entry = entry.detail("policy", p);
                    }
                    self.record(entry).await?;
                    return Err(refused.error(target, account, Access::Session));
                }
            };
            if allowed.grant.is_none() {
                check_reason(allowed.outcome, reason)?;
            }
            let held = allowed.grant.map(|g| Held {
                id: g.id,
                reason: g.reason,
                ends_at: g.ends_at,
                support: false,
                invitation: false,
            });
            (allowed.policy, held, allowed.moderated)
        };
        let grant = held;
        let dimension = |key: &str, default: u32| {
            header[key]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(default)
        };
        let size = (dimension("width", 80), dimension("height", 24));
        let Some((cred, _, version)) = self.store.credential_secret(target, account, None).await?
        else {
            self.record(refused_unknown("no credential for this account"))
                .await?;
            return Err(Error::not_found(format!("credential {target}/{account}")));
        };
        if let Some((why, error)) = super::vault::disabled_refusal(&cred) {
            self.record(
                NewAuditEntry::new(&who.username, "session.refused", &*object)
                    .outcome("denied")
                    .detail("why", why)
                    .detail("source", source),
            )
            .await?;
            return Err(error);
        }
        let sealed = SealedSecret {
            wrapped_key: version.wrapped_key,
            ciphertext: version.ciphertext,
        };
        let aad = format!("cofre:credential:{}:v{}", cred.id, version.version);
        let plain = self
            .with_master(|mk| envelope::open(mk, &sealed, aad.as_bytes()))?
            .map_err(|e| Error::internal("opening the secret", e))?;
        let secret = Zeroizing::new(
            String::from_utf8(plain.to_vec())
                .map_err(|_| Error::internal("opening the secret", "not UTF-8"))?,
        );
        let id = uuid::Uuid::new_v4().to_string();
        let key = DataKey::generate();
        let sealed_key = self
            .with_master(|mk| key.seal(mk, format!("cofre:recording-key:{id}").as_bytes()))?
            .map_err(|e| Error::internal("sealing the recording key", e))?;
        let day = self.now().date();
        let path = self
            .config
            .data_dir
            .join("recordings")
            .join(format!(
                "{}-{:02}-{:02}",
                day.year(),
                u8::from(day.month()),
                day.day()
            ))
            .join(format!("{id}.rec"));
        // Creating the directory and the file and writing the header are file-system work that
        // can stall on a slow disk: not on an async worker.
        let created = {
            let (path, id) = (path.clone(), id.clone());
            tokio::task::spawn_blocking(move || Writer::create(&path, key, &id, &header))
                .await
                .map_err(|e| Error::internal("starting a recording", e))?
        };
        let recording = created.map_err(|e| {
            tracing::error!(error = %e, "cannot start a recording");
            Error::new(
                ErrorKind::Internal,
                ErrorCode::RecordingUnavailable,
                "the session cannot be recorded right now, so it is not opened",
            )
        })?;
        let now = self.now_text();
        let path_text = path.display().to_string();
        let mut tx = self.store.write().await?;
        tx.insert_session(NewSession {
            id: &id,
            username: &who.username,
            target,
            account,
            kind,
            source,
            started_at: &now,
            recording_path: &path_text,
            recording_wrapped_key: &sealed_key.wrapped_key,
            recording_key_ciphertext: &sealed_key.ciphertext,
            request_id: grant.as_ref().map(|g| g.id.as_str()),
        })
        .await?;
        let mut entry = NewAuditEntry::new(&who.username, "session.start", object)
            .detail("session", id.as_str())
            .detail("kind", kind)
            .detail("policy", policy)
            .detail("source", source);
        if let Some(r) = reason {
            entry = entry.detail("reason", r);
        }
        if moderated {
            entry = entry.detail("moderated", true);
        }
        match &grant {
            Some(g) if g.invitation => {
                entry = entry
                    .detail("invitation", g.id.as_str())
                    .detail("external", true)
                    .detail("invitation_reason", g.reason.as_str());
            }
            Some(g) if g.support => {
                entry = entry
                    .detail("support_grant", g.id.as_str())
                    .detail("support_reason", g.reason.as_str());
            }
            Some(g) => {
                entry = entry
                    .detail("request", g.id.as_str())
                    .detail("request_reason", g.reason.as_str());
            }
            None => {}
        }
        self.commit(tx, entry).await?;
        let registered = self.live.insert(
            &id,
            grant.as_ref().map(|g| g.id.as_str()),
            LiveWho {
                user: who.username.clone(),
                key: who.via_key.clone(),
                source: who.source,
                target: target.to_owned(),
                account: account.to_owned(),
                groups: who.groups.clone(),
            },
            moderated,
            size,
        );
        metrics::gauge!("cofre_gateway_live_sessions").increment(1.0);
        // Offboarding commits first and then ends the live sessions it finds: a session that was
        // registered after that sweep sees the committed change here and ends itself.
        if let Err(e) = self.still_usable(who, target, account).await {
            let why = e.message.clone();
            let ended = tokio::task::spawn_blocking(move || recording.end(&why))
                .await
                .ok()
                .and_then(|r| r.ok());
            self.end_session(&id, &who.username, &e.message, 0, ended.as_ref())
                .await?;
            return Err(e);
        }
        if let Some(g) = &grant {
            // The session ends with its grant, to the second.
            let left = g.ends_at - self.now().unix_timestamp();
            let ends = u64::try_from(left.max(0)).unwrap_or(0);
            let ended = if g.invitation {
                format!("your invitation {} has ended", g.id)
            } else if g.support {
                format!("your support grant {} has ended", g.id)
            } else {
                format!("your access grant {} has ended", g.id)
            };
            let (session, live) = (id.clone(), std::sync::Arc::downgrade(&self.live));
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(ends)).await;
                if let Some(live) = live.upgrade() {
                    live.kill(&session, &ended);
                }
            });
        }
        Ok(SessionStart {
            id,
            host: target_row.host,
            port: u16::try_from(target_row.port).unwrap_or(22),
            account: account.to_owned(),
            secret_kind: cred.kind,
            secret,
            recording,
            kill: registered.kill,
            control: registered.control,
            notices: registered.notices,
        })
    }

    /// Pins the target's host key on first use; afterwards refuses any other key (audited).
    pub async fn check_host_key(
        &self,
        session_id: &str,
        target: &str,
        fingerprint: &str,
    ) -> Result<()> {
        if let Some(pinned) = self.store.host_key_pin(target).await? {
            if pinned == fingerprint {
                return Ok(());
            }
            self.record(
                NewAuditEntry::new(
                    "system",
                    "session.host_key_mismatch",
                    format!("target:{target}"),
                )
                .outcome("denied")
                .detail("session", session_id)
                .detail("pinned", pinned.as_str())
                .detail("presented", fingerprint),
            )
            .await?;
            return Err(Error::new(
                ErrorKind::Forbidden,
                ErrorCode::HostKeyMismatch,
                format!("the host key of {target} changed (pinned {pinned}, presented {fingerprint}); refusing to connect"),
            ));
        }
        let mut tx = self.store.write().await?;
        let pinned = tx
            .pin_host_key(target, fingerprint, &self.now_text())
            .await?;
        self.commit(
            tx,
            NewAuditEntry::new(
                "system",
                "target.host_key_pinned",
                format!("target:{target}"),
            )
            .detail("session", session_id)
            .detail("fingerprint", pinned.as_str()),
        )
        .await?;
        if pinned != fingerprint {
            return Err(Error::new(
                ErrorKind::Forbidden,
                ErrorCode::HostKeyMismatch,
                "host key changed while pinning",
            ));
        }
        Ok(())
    }

    /// Records the end of a session (idempotent) and drops it from the live registry.
    pub async fn end_session(
        &self,
        id: &str,
        username: &str,
        reason: &str,
        bytes: u64,
        recording: Option<&Summary>,
    ) -> Result<()> {
        // Counted until the entry has committed, so that a shutdown's drain waits for it.
        let _ending = self.live.ending();
        self.live.remove(id);
        let mut tx = self.store.write().await?;
        let ended = tx
            .end_session(
                id,
                &self.now_text(),
                reason,
                i64::try_from(bytes).unwrap_or(i64::MAX),
            )
            .await?;
        if !ended {
            return Ok(());
        }
        let mut entry = NewAuditEntry::new(username, "session.end", format!("session:{id}"))
            .detail("reason", reason)
            .detail("bytes", bytes);
        // What `recording verify` holds the recording to: a cut at a frame boundary changes both.
        if let Some(r) = recording {
            entry = entry
                .detail("recording_frames", r.frames)
                .detail("recording_hash", r.hash.as_str());
        }
        self.commit(tx, entry).await?;
        metrics::gauge!("cofre_gateway_live_sessions").decrement(1.0);
        // A rotation waiting for this session may run now; one after sessions is asked for.
        if let Some(s) = self.store.session(id).await? {
            self.rotation_after_use(&s.target, &s.account, "session")
                .await;
        }
        self.rotation.wake.notify_one();
        Ok(())
    }

    /// Records a refusal that happened before a session existed (bad login name, port forwarding).
    pub async fn record_refusal(
        &self,
        actor: &str,
        object: &str,
        why: &str,
        source: &str,
    ) -> Result<()> {
        self.record(
            NewAuditEntry::new(actor, "session.refused", object)
                .outcome("denied")
                .detail("why", why)
                .detail("source", source),
        )
        .await
    }

    /// One source's failed gateway authentications over a window, as one audit entry.
    pub async fn record_failed_attempts(&self, f: FailedAttempts<'_>) -> Result<()> {
        self.record(
            NewAuditEntry::new(
                "anonymous",
                "gateway.auth_failed",
                format!("source:{}", f.source),
            )
            .outcome("denied")
            .detail("source", f.source)
            .detail("attempts", f.attempts)
            .detail("kinds", serde_json::json!(f.kinds))
            .detail("names", f.names)
            .detail("names_not_shown", f.names_not_shown)
            .detail("since", f.since)
            .detail("until", self.now_text()),
        )
        .await
    }

    /// Marks sessions left open by a previous run as ended.
    pub async fn end_orphaned_sessions(&self) -> Result<()> {
        let mut tx = self.store.write().await?;
        let ids = tx
            .end_open_sessions(&self.now_text(), "gateway restarted")
            .await?;
        if ids.is_empty() {
            return Ok(());
        }
        self.commit(
            tx,
            NewAuditEntry::new("system", "session.end", "sessions")
                .detail("reason", "gateway restarted")
                .detail("sessions", ids),
        )
        .await
    }

    pub async fn list_sessions(
        &self,
        who: &Principal,
        live_only: bool,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<SessionInfo>> {
        // An approver may list nothing but may moderate some live sessions: asked for the live
        // ones, it gets exactly those it could watch (`watch_session`'s rule), and no others.
        if live_only
            && who.role() == Role::Approver
            && who.require(Action::ListSessions).is_err()
            && who.require(Action::WatchSessions).is_ok()
        {
            page_limit(limit)?;
            return self.moderated_sessions_for(who).await;
        }
        who.require(Action::ListSessions)?;
        let limit = page_limit(limit)?;
        let before =
            match cursor {
                None => None,
                Some(c) => Some(c.split_once('|').ok_or_else(|| {
                    Error::invalid("cursor", "cursor: not a cursor from this list")
                })?),
            };
        let mut rows = self
            .store
            .sessions_page(before, live_only, limit + 1)
            .await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_cursor = if more {
            rows.last().map(|r| format!("{}|{}", r.started_at, r.id))
        } else {
            None
        };
        Ok(Page {
            items: rows
                .into_iter()
                .map(|r| {
                    let control = self.live.control(&r.id).map(|(c, _)| c);
                    session_info(r, control.as_deref())
                })
                .collect(),
            next_cursor,
        })
    }

    /// The live moderated sessions (on this node, where a watch can reach them) whose user
    /// shares one of `who`'s groups, newest first, on one page.
    async fn moderated_sessions_for(&self, who: &Principal) -> Result<Page<SessionInfo>> {
        let mine = self
            .live
            .matching(|owner| owner.groups.iter().any(|g| who.groups().contains(g)));
        let mut items = Vec::new();
        for (id, _) in mine {
            let Some((control, _)) = self.live.control(&id) else {
                continue;
            };
            if !control.moderated() {
                continue;
            }
            if let Some(row) = self.store.session(&id).await? {
                let info = session_info(row, Some(control.as_ref()));
                if info.live {
                    items.push(info);
                }
            }
        }
        items.sort_by(|a, b| (&b.started_at, &b.id).cmp(&(&a.started_at, &a.id)));
        Ok(Page {
            items,
            next_cursor: None,
        })
    }

    pub async fn kill_session(
        &self,
        who: &Principal,
        id: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        who.require(Action::KillSessions)?;
        if let Some(r) = reason {
            check_text("reason", r, 500)?;
        }
        let reason = reason.map_or_else(
            || format!("terminated by {}", who.username),
            |r| format!("terminated by {}: {r}", who.username),
        );
        if self.store.session(id).await?.is_none() {
            return Err(Error::not_found(format!("session {id}")));
        }
        let not_live = || {
            Error::new(
                ErrorKind::Conflict,
                ErrorCode::NotLive,
                format!("session {id} is not running"),
            )
        };
        // A session that has ended is not killed, so no `session.kill` entry says it was.
        if !self.live.is_live(id) {
            return Err(not_live());
        }
        // Audit first: if the entry cannot be written, the kill does not happen either.
        self.record(
            NewAuditEntry::new(&who.username, "session.kill", format!("session:{id}"))
                .detail("reason", reason.as_str()),
        )
        .await?;
        if !self.live.kill(id, &reason) {
            return Err(not_live());
        }
        Ok(())
    }

    /// The session's row and its recording's data key and path: the part that reading a
    /// recording (export, verify) always needs.
    async fn open_recording(&self, id: &str) -> Result<(SessionRow, DataKey, std::path::PathBuf)> {
        let s = self
            .store
            .session(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("session {id}")))?;
        let sealed = SealedSecret {
            wrapped_key: s.recording_wrapped_key.clone(),
            ciphertext: s.recording_key_ciphertext.clone(),
        };
        let key = self
            .with_master(|mk| {
                DataKey::open(mk, &sealed, format!("cofre:recording-key:{id}").as_bytes())
            })?
            .map_err(|e| Error::internal("opening the recording key", e))?;
        let path = crate::snapshot::recording_path(&self.config.data_dir, &s.recording_path);
        Ok((s, key, path))
    }

    /// The recording, streamed: asciicast v2 text made from the events as they are read, or the
    /// exact bytes of one stream. Frame by frame from a blocking thread through a bounded queue,
    /// so neither the whole recording nor a slow client's backlog sits in memory. Viewing is
    /// itself audited, before anything is read. A file that is missing, not a recording, or (for
    /// raw) of the previous format is an error here; a frame that does not decrypt, later, ends
    /// the stream with an error (the client sees a broken transfer, never a silently short one).
    pub async fn export_recording(
        &self,
        who: &Principal,
        id: &str,
        format: RecordingFormat,
        stream: Option<RecordingStream>,
    ) -> Result<tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>> {
        who.require(Action::ReadRecordings)?;
        let what = match (format, stream) {
            (RecordingFormat::Asciicast, None) => Export::Asciicast,
            (RecordingFormat::Asciicast, Some(_)) => {
                return Err(Error::invalid(
                    "stream",
                    "stream: only with format=raw (asciicast holds both streams)",
                ))
            }
            (RecordingFormat::Raw, None | Some(RecordingStream::Output)) => {
                Export::Raw(Stream::Output)
            }
            (RecordingFormat::Raw, Some(RecordingStream::Input)) => Export::Raw(Stream::Input),
        };
        let (_, key, path) = self.open_recording(id).await?;
        let mut entry =
            NewAuditEntry::new(&who.username, "recording.view", format!("session:{id}"));
        if let Export::Raw(stream) = what {
            let stream = match stream {
                Stream::Output => "output",
                Stream::Input => "input",
            };
            entry = entry.detail("format", "raw").detail("stream", stream);
        }
        self.record(entry).await?;
        let unreadable = |e: &dyn std::fmt::Display| {
            Error::new(
                ErrorKind::Internal,
                ErrorCode::RecordingUnreadable,
                format!("recording of session {id}: {e}"),
            )
        };
        let checked = {
            let (path, key, id) = (path.clone(), key.clone(), id.to_owned());
            tokio::task::spawn_blocking(move || cofre_recording::reader::check(&path, &key, &id))
                .await
                .map_err(|e| Error::internal("reading a recording", e))?
        };
        checked.map_err(|e| unreadable(&e))?;
        if let (Export::Raw(_), Err(e)) = (what, self.raw_export_possible(&path).await) {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::RecordingUnreadable,
                format!("recording of session {id}: {e}"),
            ));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let session_id = id.to_owned();
        tokio::task::spawn_blocking(move || {
            let result = cofre_recording::export(&path, &key, &session_id, what, |bytes| {
                tx.blocking_send(Ok(bytes::Bytes::from(bytes))).is_ok()
            });
            if let Err(e) = result {
                tracing::error!(session = %session_id, error = %e, "a recording stopped being readable during its export");
                let _ = tx.blocking_send(Err(std::io::Error::other(format!(
                    "recording of session {session_id}: {e}"
                ))));
            }
        });
        Ok(rx)
    }

    /// A raw export needs the exact bytes, which recordings of the previous format do not hold.
    async fn raw_export_possible(
        &self,
        path: &std::path::Path,
    ) -> std::result::Result<(), cofre_recording::RecordingError> {
        let path = path.to_owned();
        let magic = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut magic = [0u8; 18];
            std::fs::File::open(&path)
                .and_then(|mut f| f.read_exact(&mut magic))
                .map(|()| magic)
        })
        .await
        .map_err(|e| cofre_recording::RecordingError::Io(std::io::Error::other(e)))??;
        if magic == cofre_recording::legacy::MAGIC {
            return Err(cofre_recording::RecordingError::NoExactBytes);
        }
        Ok(())
    }

    /// Reads the whole recording and holds it to what the audit trail says: every frame
    /// authenticates in its place, nothing is cut off, and the count and final hash are those of
    /// the session's `session.end` entry. A session the gateway's restart ended has no such
    /// entry (the process was gone): its recording is intact up to where it stopped, and a torn
    /// last frame is what the stop cut off, not tampering. Audited, with what was found.
    pub async fn verify_recording(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<RecordingVerification> {
        who.require(Action::ReadRecordings)?;
        let report = self.check_recording(id).await?;
        let (status, frames, problem_frame) =
            (report.status.as_str(), report.frames, report.problem_frame);
        let mut entry =
            NewAuditEntry::new(&who.username, "recording.verify", format!("session:{id}"))
                .outcome(if status == "tampered" {
                    "failure"
                } else {
                    "success"
                })
                .detail("status", status)
                .detail("frames", frames);
        if let Some(f) = problem_frame {
            entry = entry.detail("problem_frame", f);
        }
        self.record(entry).await?;
        Ok(report)
    }

    /// Whether one recording is whole, as [`Sessions::verify_recording`] reports it, without
    /// the audit entry (the caller writes one for all it checked).
    pub(crate) async fn check_recording(&self, id: &str) -> Result<RecordingVerification> {
        let (row, key, path) = self.open_recording(id).await?;
        let scan = {
            let id = id.to_owned();
            tokio::task::spawn_blocking(move || cofre_recording::verify(&path, &key, &id))
                .await
                .map_err(|e| Error::internal("reading a recording", e))?
        };
        let scan = scan.map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                ErrorCode::RecordingUnreadable,
                format!("recording of session {id}: {e}"),
            )
        })?;
        let end = self
            .store
            .audit_latest_for("session.end", &format!("session:{id}"))
            .await?;
        let expected_frames = end
            .as_ref()
            .and_then(|e| e.details.get("recording_frames"))
            .and_then(serde_json::Value::as_u64);
        let expected_hash = end
            .as_ref()
            .and_then(|e| e.details.get("recording_hash"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let live = self.live.is_live(id) || row.ended_at.is_none();
        let (status, problem_frame, message) = judge(
            &scan,
            live,
            row.end_reason.as_deref(),
            expected_frames,
            expected_hash.as_deref(),
        );
        Ok(RecordingVerification {
            session: id.to_owned(),
            status: status.to_owned(),
            format: scan.format.to_owned(),
            frames: scan.frames,
            hash: scan.hash.clone(),
            expected_frames,
            expected_hash,
            problem_frame,
            message,
            end_reason: row.end_reason,
            output_bytes: scan.output_bytes,
            input_bytes: scan.input_bytes,
        })
    }
}

impl Accounts<'_> {
    pub async fn add_ssh_key(
        &self,
        who: &Principal,
        username: &str,
        public_key: &str,
    ) -> Result<super::governance::Applied<SshKeyInfo>> {
        if who.username != username {
            // Only the user adds keys to their own account without a second admin: a key added
            // for someone else is a way to log in as them.
            who.require(Action::ManageUsers)?;
            let change = super::governance::Change::AddKey {
                username: username.to_owned(),
                public_key: public_key.to_owned(),
            };
            return self
                .approvals()
                .propose_change(who, change)
                .await?
                .map(|o| match o {
                    super::governance::Output::Key(k) => Ok(k),
                    _ => Err(Error::internal("adding a key", "unexpected output")),
                });
        }
        who.require(Action::OwnAccount)?;
        let (fingerprint, key) = ssh_key_fingerprint(public_key)?;
        let now = self.now_text();
        let mut tx = self.store.write().await?;
        let user = tx
            .user_by_name(username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {username}")))?;
        tx.insert_ssh_key(user.id, &fingerprint, &key, &now).await?;
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                "user.ssh_key_add",
                format!("user:{username}"),
            )
            .detail("fingerprint", fingerprint.as_str()),
        )
        .await?;
        Ok(super::governance::Applied::Done(SshKeyInfo {
            fingerprint,
            public_key: key,
            created_at: now,
        }))
    }

    pub async fn list_ssh_keys(&self, who: &Principal, username: &str) -> Result<Vec<SshKeyInfo>> {
        if who.username == username {
            who.require(Action::OwnAccount)?;
        } else {
            who.require(Action::ManageUsers)?;
        }
        Ok(self
            .store
            .ssh_keys_of(username)
            .await?
            .into_iter()
            .map(|k| SshKeyInfo {
                fingerprint: k.fingerprint,
                public_key: k.public_key,
                created_at: k.created_at,
            })
            .collect())
    }
}

/// The verdict on a recording: its status, the frame where a problem is, and what to tell people.
fn judge(
    scan: &cofre_recording::Scan,
    live: bool,
    end_reason: Option<&str>,
    expected_frames: Option<u64>,
    expected_hash: Option<&str>,
) -> (&'static str, Option<u64>, String) {
    let frames = scan.frames;
    let restarted = end_reason == Some("gateway restarted");
    // The session was ended because its recording could not be written (storage full): the
    // recording stops where writing failed, and says so in no end event.
    let failed = end_reason.is_some_and(|r| r.starts_with("recording failed"));
    let tampered = |frame: Option<u64>, why: String| ("tampered", frame, why);
    match &scan.problem {
        Some(Problem::Torn { frame, bytes }) if restarted || live => {
            let why = if live {
                format!("still being recorded: {frames} frames intact so far, frame {frame} is being written")
            } else {
                format!(
                    "ended by a restart of the gateway: {frames} frames intact up to the stop; \
                     the last frame ({frame}, {bytes} bytes written) was cut off by it"
                )
            };
            return (if live { "live" } else { "ended_by_restart" }, None, why);
        }
        Some(p) => return tampered(Some(p.frame()), p.to_string()),
        None => {}
    }
    if scan.format == "previous" {
        return (
            "intact_unchained",
            None,
            format!(
                "{frames} frames, each intact in its place; this recording predates chained \
                 frames, so a cut after a whole frame cannot be detected"
            ),
        );
    }
    if live {
        return (
            "live",
            None,
            format!("still being recorded: {frames} frames intact so far"),
        );
    }
    match (expected_frames, expected_hash) {
        (Some(n), Some(hash)) => {
            if frames < n {
                tampered(
                    Some(frames),
                    format!(
                        "cut off: the recording ends after {frames} frames, the session.end \
                         audit entry says it had {n}; frame {frames} onwards is missing"
                    ),
                )
            } else if frames > n {
                tampered(
                    Some(n),
                    format!(
                        "{} frames more than the session.end audit entry says ({n}); frame {n} \
                         onwards was added",
                        frames - n
                    ),
                )
            } else if scan.hash.as_deref() != Some(hash) {
                tampered(
                    None,
                    "the final chain hash differs from the session.end audit entry's".to_owned(),
                )
            } else if scan.ended.is_none() {
                tampered(None, "the recording has no end event".to_owned())
            } else {
                (
                    "intact",
                    None,
                    format!(
                        "intact: {frames} frames, whole, in order, and as the session.end audit \
                         entry says it ended"
                    ),
                )
            }
        }
        _ if failed => (
            "recording_failed",
            None,
            format!(
                "the recording could not be written to its end, so the session was ended: \
                 {frames} frames intact up to there"
            ),
        ),
        _ if restarted => (
            "ended_by_restart",
            None,
            format!("ended by a restart of the gateway: {frames} frames intact up to the stop"),
        ),
        _ => tampered(
            Some(frames),
            format!(
                "{frames} frames intact, but the session.end audit entry holds no frame count \
                 and hash to check them against{}",
                if scan.ended.is_none() {
                    ", and the recording has no end event: it may have been cut off"
                } else {
                    ""
                }
            ),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn gateway_login_errors_teach_the_form_with_the_real_port() {
        let e = parse_gateway_login("alice:root", 2022).unwrap_err();
        assert!(
            e.message.contains("COFRE_USER+ACCOUNT+TARGET"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("ssh -p 2022 alice+root+db01@"),
            "{}",
            e.message
        );
    }

    fn scan(frames: u64, ended: bool, problem: Option<Problem>) -> cofre_recording::Scan {
        cofre_recording::Scan {
            format: "chained",
            frames,
            hash: Some("h".repeat(64)),
            ended: ended.then(|| "ended".to_owned()),
            output_bytes: 0,
            input_bytes: 0,
            problem,
        }
    }

    #[test]
    fn a_restart_torn_frame_is_not_tampering_but_a_cut_is() {
        let hash = "h".repeat(64);
        let torn = Some(Problem::Torn {
            frame: 7,
            bytes: 10,
        });
        let ok = |s: &cofre_recording::Scan, reason| {
            judge(s, false, Some(reason), Some(7), Some(&hash)).0
        };
        // As session.end says: intact.
        assert_eq!(ok(&scan(7, true, None), "ended"), "intact");
        // The gateway restarted: no summary, a torn last frame or none.
        let restart =
            |s: &cofre_recording::Scan| judge(s, false, Some("gateway restarted"), None, None);
        assert_eq!(restart(&scan(7, false, torn.clone())).0, "ended_by_restart");
        assert_eq!(restart(&scan(7, false, None)).0, "ended_by_restart");
        // The same torn frame in a session that ended normally: cut off.
        let (status, at, _) = judge(
            &scan(7, false, torn),
            false,
            Some("ended"),
            Some(8),
            Some(&hash),
        );
        assert_eq!((status, at), ("tampered", Some(7)));
        // Whole frames missing at the end, or added.
        let (status, at, why) = judge(
            &scan(5, true, None),
            false,
            Some("ended"),
            Some(7),
            Some(&hash),
        );
        assert_eq!((status, at), ("tampered", Some(5)));
        assert!(why.contains("frame 5"), "{why}");
        assert_eq!(
            judge(
                &scan(9, true, None),
                false,
                Some("ended"),
                Some(7),
                Some(&hash)
            )
            .1,
            Some(7)
        );
        // The same count but another chain.
        assert_eq!(
            judge(
                &scan(7, true, None),
                false,
                Some("ended"),
                Some(7),
                Some("x")
            )
            .0,
            "tampered"
        );
        // A session ended because its recording failed: not tampering.
        assert_eq!(
            judge(
                &scan(3, false, None),
                false,
                Some("recording failed: disk full"),
                None,
                None
            )
            .0,
            "recording_failed"
        );
        // Still live.
        assert_eq!(
            judge(&scan(3, false, None), true, None, None, None).0,
            "live"
        );
    }
}
