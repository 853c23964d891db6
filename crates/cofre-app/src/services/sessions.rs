//! Gateway sessions: who may open one to which account, the live-session registry (list, kill),
//! pinned target host keys, users' SSH keys, and reading recordings back.

use super::accounts::LoginInput;
use super::requests::UseRefused;
use super::{page_limit, App, Principal, TokenScope};
use crate::error::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use crate::recording::{RecordingReader, RecordingWriter};
use cofre_core::audit::NewAuditEntry;
use cofre_core::names::check_text;
use cofre_core::policy::{check_reason, decide, Access, Decision, Outcome, TargetRef};
use cofre_core::role::{Action, Role};
use cofre_crypto::datakey::DataKey;
use cofre_crypto::{envelope, SealedSecret};
use cofre_proto::{Page, SessionInfo, SshKeyInfo};
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
    pub recording: RecordingWriter,
    /// Receives the reason when the session must end (killed by an admin).
    pub kill: watch::Receiver<Option<String>>,
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

fn session_info(s: SessionRow, live: bool) -> SessionInfo {
    SessionInfo {
        live: live && s.ended_at.is_none(),
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

impl App {
    async fn principal_for(
        &self,
        user: &cofre_store::users::UserRow,
        via_key: Option<&str>,
    ) -> Result<Principal> {
        let role = Role::parse(&user.role)
            .ok_or_else(|| Error::internal("reading a user", "unknown role in the database"))?;
        Ok(Principal {
            user_id: user.id,
            username: user.username.clone(),
            role,
            groups: self.store.user_groups(user.id).await?,
            scope: TokenScope::Session,
            token_hash: String::new(),
            mode: self.config.mode,
            via_key: via_key.map(str::to_owned),
        })
    }

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
        let user = match self.store.user_by_name(&who.username).await? {
            Some(u) if u.disabled_at.is_none() => u,
            _ => return Err(super::accounts::account_disabled()),
        };
        if let Some(fp) = &who.via_key {
            if !self.gateway_key_known(&who.username, fp).await? {
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
        Ok(now)
    }

    /// Whether `username` has registered this key (for the SSH `publickey` offer, before any
    /// signature is checked: nothing is audited here).
    pub async fn gateway_key_known(&self, username: &str, fingerprint: &str) -> Result<bool> {
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
    pub async fn gateway_key_login(
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
        if !self.gateway_key_known(username, fingerprint).await? {
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
    pub async fn gateway_password_login(
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
        let (user, totp_step, mut tx) = self.verify_login(&input).await?;
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
    pub async fn session_outcome(&self, who: &Principal, target: &str) -> Result<Option<Outcome>> {
        let Some(t) = self.store.target_by_name(target).await? else {
            return Ok(None);
        };
        let policies = self.policies_of_groups(&who.groups).await?;
        Ok(
            match decide(
                &policies,
                &who.groups,
                &TargetRef {
                    name: &t.name,
                    tags: &t.tags,
                },
                Access::Session,
            ) {
                Decision::Deny => None,
                Decision::Granted { outcome, .. } => Some(outcome),
            },
        )
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
        who.require(Action::UseCredentials)?;
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
        let allowed = match self
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
        let policy = allowed.policy;
        let grant = allowed.grant;
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
            tokio::task::spawn_blocking(move || RecordingWriter::create(&path, key, &id, &header))
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
        if let Some(g) = &grant {
            entry = entry
                .detail("request", g.id.as_str())
                .detail("request_reason", g.reason.as_str());
        }
        self.commit(tx, entry).await?;
        let kill = self.live.insert(
            &id,
            grant.as_ref().map(|g| g.id.as_str()),
            LiveWho {
                user: who.username.clone(),
                key: who.via_key.clone(),
                target: target.to_owned(),
                account: account.to_owned(),
            },
        );
        metrics::gauge!("cofre_gateway_live_sessions").increment(1.0);
        // Offboarding commits first and then ends the live sessions it finds: a session that was
        // registered after that sweep sees the committed change here and ends itself.
        if let Err(e) = self.still_usable(who, target, account).await {
            self.end_session(&id, &who.username, &e.message, 0).await?;
            return Err(e);
        }
        if let Some(g) = &grant {
            // The session ends with its grant, to the second.
            let left = g.ends_at - self.now().unix_timestamp();
            let ends = u64::try_from(left.max(0)).unwrap_or(0);
            let grant_id = g.id.clone();
            let (session, live) = (id.clone(), std::sync::Arc::downgrade(&self.live));
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(ends)).await;
                if let Some(live) = live.upgrade() {
                    live.kill(&session, &format!("your access grant {grant_id} has ended"));
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
            kill,
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
        self.commit(
            tx,
            NewAuditEntry::new(username, "session.end", format!("session:{id}"))
                .detail("reason", reason)
                .detail("bytes", bytes),
        )
        .await?;
        metrics::gauge!("cofre_gateway_live_sessions").decrement(1.0);
        Ok(())
    }

    /// Records a refusal that happened before a session existed (bad login name, port forwarding).
    pub async fn gateway_refusal(
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
    pub async fn gateway_failed_attempts(&self, f: FailedAttempts<'_>) -> Result<()> {
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
                    let live = self.live.is_live(&r.id);
                    session_info(r, live)
                })
                .collect(),
            next_cursor,
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

    /// The recording as asciicast v2 text, streamed: frame by frame from a blocking thread
    /// through a bounded queue, so neither the whole recording nor a slow client's backlog sits
    /// in memory. Viewing is itself audited, before anything is read. A file that is missing or
    /// not a recording is an error here; a frame that does not decrypt, later, ends the stream
    /// with an error (the client sees a broken transfer, never a silently short one).
    pub async fn recording_stream(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>> {
        who.require(Action::ReadRecordings)?;
        let s = self
            .store
            .session(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("session {id}")))?;
        let sealed = SealedSecret {
            wrapped_key: s.recording_wrapped_key,
            ciphertext: s.recording_key_ciphertext,
        };
        let key = self
            .with_master(|mk| {
                DataKey::open(mk, &sealed, format!("cofre:recording-key:{id}").as_bytes())
            })?
            .map_err(|e| Error::internal("opening the recording key", e))?;
        self.record(NewAuditEntry::new(
            &who.username,
            "recording.view",
            format!("session:{id}"),
        ))
        .await?;
        let unreadable = |e: &dyn std::fmt::Display| {
            Error::new(
                ErrorKind::Internal,
                ErrorCode::RecordingUnreadable,
                format!("recording of session {id}: {e}"),
            )
        };
        let path = crate::snapshot::recording_path(&self.config.data_dir, &s.recording_path);
        let reader = tokio::task::spawn_blocking(move || RecordingReader::open(&path))
            .await
            .map_err(|e| Error::internal("reading a recording", e))?
            .map_err(|e| unreadable(&e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let session_id = id.to_owned();
        tokio::task::spawn_blocking(move || {
            let result = reader.for_each_frame(&key, &session_id, |plain| {
                tx.blocking_send(Ok(bytes::Bytes::from(plain))).is_ok()
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
            return self.propose(who, change).await?.map(|o| match o {
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
}
