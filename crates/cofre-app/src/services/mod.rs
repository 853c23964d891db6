//! The use cases: every action a user can take, independent of HTTP, so the SSH gateway and the CLI's
//! offline tools reuse the same rules. Each state change commits together with its audit entry.

pub mod accounts;
pub mod anchor;
pub mod audit;
pub mod backups;
pub mod breakglass;
pub mod diagnostics;
pub mod governance;
pub mod handover;
pub mod instance;
pub mod invites;
pub mod live;
pub mod maintenance;
pub mod network;
pub mod nodes;
pub mod notify;
pub mod offboarding;
pub mod releases;
pub mod requests;
pub mod rotation;
pub mod seal;
pub mod sessions;
pub mod siem;
pub mod snapshots;
pub mod sso;
pub mod support;
pub mod vault;

use crate::config::ServerConfig;
use crate::error::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_core::role::{Action, Mode, Role};
use cofre_crypto::{Keyring, MasterKey, UnsealProgress};
use cofre_store::{Store, WriteTx};
use std::sync::{Arc, Mutex, RwLock};
use time::OffsetDateTime;

/// What the clock says; replaceable so tests (and later the approval engine) can move time.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

pub struct App {
    /// Itself, for [`App::shared`].
    me: std::sync::Weak<App>,
    pub store: Store,
    pub config: ServerConfig,
    pub keyring: Keyring,
    master: RwLock<Option<MasterKey>>,
    unseal: Mutex<UnsealProgress>,
    clock: Clock,
    audit_queue: tokio::sync::mpsc::Sender<PendingAudit>,
    /// Wakes the notification delivery task when a change queued one.
    pub(crate) notify_wake: Arc<tokio::sync::Notify>,
    /// Wakes the SIEM forwarder when a destination is added or removed.
    pub(crate) siem_wake: Arc<tokio::sync::Notify>,
    /// The break-glass file writer's state (see [`breakglass`]).
    pub(crate) breakglass: Arc<breakglass::WriterState>,
    /// Gateway sessions running on this node.
    pub live: Arc<sessions::LiveSessions>,
    /// Backup runs in progress and the scheduler's wake-ups (see [`backups`]).
    pub(crate) backups: Arc<backups::BackupState>,
    /// Snapshot jobs of this node (see [`snapshots`]).
    pub(crate) snapshots: Arc<snapshots::SnapshotState>,
    /// Credential rotation: this node's lease identity and the scheduler (see [`rotation`]).
    pub(crate) rotation: Arc<rotation::RotationState>,
    /// Failed logins for user names that do not exist (see [`accounts::UnknownFailures`]).
    pub(crate) unknown_failures: accounts::UnknownFailures,
    /// This node's copy of the instance's type and enabled state (see [`instance`]).
    pub(crate) instance: instance::StateCache,
    /// This node's copy of the network policy and the refusals' audit rate limit (see [`network`]).
    pub(crate) network: network::NetworkState,
    /// Maintenance windows: the watchers' and the scheduler's wake-ups (see [`maintenance`]).
    pub(crate) maintenance: Arc<maintenance::MaintenanceState>,
    /// This process's part in a maintenance window's switch-over (see [`handover`]).
    pub(crate) handover: handover::HandoverState,
    /// Support users acting under a grant on this node (see [`support`]).
    pub(crate) support: support::SupportState,
    /// Identity providers' discovery and keys, cached on this node (see [`sso`]).
    pub(crate) sso: sso::SsoState,
}

/// A group of `App`'s use cases, one per domain: `app.vault().reveal(..)`, `app.accounts()
/// .create_user(..)`. A group is a view of the one `App` (its store, clock, keyring and the
/// background tasks' state), which it dereferences to, so a use case reads `self.store` and calls
/// the shared helpers (`commit`, `record`, `now`) as `App`'s own would; a use case of another
/// domain is reached through that domain's group. Method names are `verb_noun` throughout.
macro_rules! domain {
    ($(#[$doc:meta])* $group:ident, $accessor:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub struct $group<'a>(&'a App);

        impl std::ops::Deref for $group<'_> {
            type Target = App;
            fn deref(&self) -> &App {
                self.0
            }
        }

        impl App {
            $(#[$doc])*
            pub fn $accessor(&self) -> $group<'_> {
                $group(self)
            }
        }
    };
}

domain!(
    /// Logins, tokens, passwords, TOTP, users, groups and users' SSH keys (`accounts`,
    /// and the user side of `offboarding`).
    Accounts,
    accounts
);
domain!(
    /// Targets, credentials, reveals and policies (`vault`, and the target and credential side
    /// of `offboarding`).
    Vault,
    vault
);
domain!(
    /// Gateway logins and sessions: the decision, start, end, kill and drain, host-key pinning,
    /// recordings (`sessions`, `crate::session`).
    Sessions,
    sessions
);
domain!(
    /// Access requests, grants and emergency access (`requests`), and dual control's change
    /// requests (`governance`).
    Approvals,
    approvals
);
domain!(
    /// Orbit, the operations of the instance: backups, snapshots, break-glass, the instance's
    /// facts (`backups`, `snapshots`, `breakglass`, `governance::get_instance`).
    Orbit,
    orbit
);
domain!(
    /// The audit trail: listing and verifying the chain (`audit`).
    Audit,
    audit
);

/// An event waiting for the audit writer; `done` hears back once it is committed (or not).
struct PendingAudit {
    entry: NewAuditEntry,
    done: tokio::sync::oneshot::Sender<Result<()>>,
}

/// Largest number of events committed in one transaction.
const AUDIT_BATCH: usize = 256;

/// Group commit for events that change nothing but the audit trail (reveals, refusals): while one
/// batch commits, the next queues up, so many concurrent reveals share one transaction and one
/// fsync. Callers still wait for their own entry's commit before acting: nothing is acknowledged
/// that is not on disk.
async fn audit_writer(
    store: Store,
    clock: Clock,
    mut queue: tokio::sync::mpsc::Receiver<PendingAudit>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < AUDIT_BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut waiters = Vec::with_capacity(batch.len());
        let mut entries = Vec::with_capacity(batch.len());
        for p in batch {
            waiters.push(p.done);
            entries.push(p.entry);
        }
        let result: std::result::Result<(), cofre_store::StoreError> = async {
            let mut tx = store.write().await?;
            // Stamped under the write lock, as inline commits are, so the trail's times never go
            // backwards along the chain.
            let ts = timestamp(clock());
            let entries = entries.into_iter().map(|e| (ts.clone(), e)).collect();
            tx.append_audit_batch(entries).await?;
            tx.commit().await
        }
        .await;
        let n = waiters.len() as u64;
        match result {
            Ok(()) => {
                metrics::counter!("cofre_audit_entries_total").increment(n);
                // Entries over commits is how much the group commit shares each fsync.
                metrics::counter!("cofre_audit_group_commits_total").increment(1);
                for w in waiters {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                let err = Error::internal("writing the audit entry", e);
                for w in waiters {
                    let _ = w.send(Err(err.clone()));
                }
            }
        }
    }
}

/// How a request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScope {
    Session,
    /// Issued for a one-time password: the holder may only set a new password.
    PasswordChange,
    /// An SSO login that still owes Cofre's TOTP code (`[sso] require_totp`): the holder may
    /// only give it (`Accounts::verify_sso_totp`).
    SsoTotp,
    /// An SSO login of a user who must have TOTP and has none: the holder may only enrol it,
    /// then logs in again.
    TotpEnrolment,
}

impl TokenScope {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Session => "session",
            TokenScope::PasswordChange => "password_change",
            TokenScope::SsoTotp => "sso_totp",
            TokenScope::TotpEnrolment => "totp_enrolment",
        }
    }
}

/// The authenticated caller of a use case. Its fields are private to `services`: a principal is
/// made only by authentication (`principal_from_token`, the gateway's logins, re-deciding a live
/// session from its user's row) or by [`Principal::system`], never assembled by a front end.
#[derive(Debug, Clone)]
pub struct Principal {
    user_id: i64,
    username: String,
    role: Role,
    groups: Vec<String>,
    scope: TokenScope,
    token_hash: String,
    /// The instance's mode, which decides who reaches Orbit.
    mode: Mode,
    /// The SSH key (fingerprint) a gateway login used, so that removing the key ends what it opened.
    via_key: Option<String>,
    /// The client's address, as the front end's network policy saw it (after trusted proxies):
    /// policies with networks match only from inside them; unknown matches none of them.
    source: Option<std::net::IpAddr>,
    /// Role support only: the grants active when it authenticated, as `(id, scopes)`. Read on
    /// every call, so a grant that ended or was revoked is gone by the next one.
    support_grants: Vec<(String, Vec<cofre_core::support::Scope>)>,
    /// An invitee (issue 18): the invitation it authenticated under. Such a principal is made
    /// only by the external listener's login and may do nothing but open the sessions its
    /// invitation covers (see [`Principal::require`]).
    invitation: Option<String>,
    /// An invitee of an `--approve-each-session` invitation, once a session of it was approved:
    /// the approval its next session uses (once). Set only by `Sessions::wait_session_approval`.
    approved_session: Option<String>,
}

impl Principal {
    /// The instance acting on its own (schedulers, start-up jobs): an admin, or in saas mode the
    /// operator, that no token or login stands behind.
    pub fn system(mode: Mode) -> Principal {
        Principal {
            user_id: 0,
            username: "system".into(),
            role: if mode == Mode::Saas {
                Role::Operator
            } else {
                Role::Admin
            },
            groups: Vec::new(),
            scope: TokenScope::Session,
            token_hash: String::new(),
            mode,
            via_key: None,
            source: None,
            support_grants: Vec::new(),
            invitation: None,
            approved_session: None,
        }
    }

    /// A principal as the service-level tests need one, without a login. Only with the
    /// `test-support` feature, which only cofre-app's own test binary turns on.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn for_tests(
        user_id: i64,
        username: &str,
        role: Role,
        groups: &[&str],
        mode: Mode,
    ) -> Self {
        Principal {
            user_id,
            username: username.into(),
            role,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            scope: TokenScope::Session,
            token_hash: String::new(),
            mode,
            via_key: None,
            source: None,
            support_grants: Vec::new(),
            invitation: None,
            approved_session: None,
        }
    }

    pub fn user_id(&self) -> i64 {
        self.user_id
    }
    pub fn username(&self) -> &str {
        &self.username
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn groups(&self) -> &[String] {
        &self.groups
    }
    pub fn scope(&self) -> TokenScope {
        self.scope
    }
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// The client's address this principal acts from, if known.
    pub fn source(&self) -> Option<std::net::IpAddr> {
        self.source
    }
    /// The same principal acting from `source` (the front end knows where a request came from;
    /// who the caller is stays what authentication made).
    pub fn with_source(mut self, source: std::net::IpAddr) -> Principal {
        self.source = Some(cofre_core::network::canonical(source));
        self
    }
    /// Role support: the id of a grant it acts under now, if any.
    pub fn support_grant(&self) -> Option<&str> {
        self.support_grants.first().map(|(id, _)| id.as_str())
    }
    /// Role support: the scopes of every grant it acts under now.
    pub(crate) fn support_scopes(&self) -> Vec<cofre_core::support::Scope> {
        self.support_grants
            .iter()
            .flat_map(|(_, s)| s.iter().copied())
            .collect()
    }
    /// An invitee's invitation, if this principal is one.
    pub fn invitation(&self) -> Option<&str> {
        self.invitation.as_deref()
    }
    /// The SSH key a gateway login used, if any.
    pub fn via_key(&self) -> Option<&str> {
        self.via_key.as_deref()
    }

    /// Checks the role table (and that a password-change token is not used for anything else).
    /// Enrolling one's own TOTP: what `OwnAccount` allows, and also the only thing a
    /// `TotpEnrolment` token (an SSO login that must enrol first) may do.
    pub fn require_own_totp(&self) -> Result<()> {
        if self.scope == TokenScope::TotpEnrolment && self.invitation.is_none() {
            return Ok(());
        }
        self.require(Action::OwnAccount)
    }

    pub fn require(&self, action: Action) -> Result<()> {
        if self.invitation.is_some() {
            // An invitee is nobody's user: it opens the sessions its invitation covers (judged
            // in `start_session`) and nothing else, whatever the role table says.
            return if action == Action::UseCredentials {
                Ok(())
            } else {
                Err(Error::forbidden(
                    "an invitee may only open its invited sessions",
                ))
            };
        }
        match self.scope {
            TokenScope::SsoTotp => {
                return Err(Error::new(
                    ErrorKind::Forbidden,
                    ErrorCode::TotpRequired,
                    "this SSO login still needs your TOTP code (POST /api/v1/auth/sso/totp)",
                ))
            }
            TokenScope::TotpEnrolment => {
                return Err(Error::new(
                    ErrorKind::Forbidden,
                    ErrorCode::TotpNotEnrolled,
                    "this instance asks SSO users for Cofre's TOTP too: enrol it (`cofre totp enroll`), then log in again",
                ))
            }
            TokenScope::Session | TokenScope::PasswordChange => {}
        }
        if self.scope == TokenScope::PasswordChange && action != Action::ChangeOwnPassword {
            return Err(Error::new(
                ErrorKind::Forbidden,
                ErrorCode::PasswordChangeRequired,
                "you logged in with a one-time password: set a new password first (`cofre passwd`)",
            ));
        }
        if cofre_core::support::may(self.mode, self.role, &self.support_scopes(), action) {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "the {} role may not do this",
                self.role
            )))
        }
    }
}

impl App {
    pub fn new(store: Store, config: ServerConfig, keyring: Keyring, clock: Clock) -> Arc<App> {
        let unseal = keyring.unseal_progress();
        let (audit_queue, queue_rx) = tokio::sync::mpsc::channel(4 * AUDIT_BATCH);
        tokio::spawn(audit_writer(store.clone(), clock.clone(), queue_rx));
        Arc::new_cyclic(|me| App {
            me: me.clone(),
            store,
            config,
            keyring,
            master: RwLock::new(None),
            unseal: Mutex::new(unseal),
            clock,
            audit_queue,
            breakglass: Arc::default(),
            live: Arc::default(),
            notify_wake: Arc::default(),
            siem_wake: Arc::default(),
            backups: Arc::default(),
            snapshots: Arc::default(),
            rotation: Arc::default(),
            unknown_failures: accounts::UnknownFailures::default(),
            instance: instance::StateCache::default(),
            network: network::NetworkState::default(),
            maintenance: Arc::default(),
            handover: handover::HandoverState::default(),
            support: support::SupportState::default(),
            sso: sso::SsoState::default(),
        })
    }

    /// The `Arc` this `App` lives in, for use cases that hand work to a task of its own (a
    /// snapshot job). Always there while a use case runs, since the caller holds the `Arc`.
    pub(crate) fn shared(&self) -> Result<Arc<App>> {
        self.me
            .upgrade()
            .ok_or_else(|| Error::internal("starting a task", "the server is shutting down"))
    }

    pub fn now(&self) -> OffsetDateTime {
        (self.clock)()
    }

    pub fn now_text(&self) -> String {
        timestamp(self.now())
    }

    pub fn is_sealed(&self) -> bool {
        self.master.read().map(|m| m.is_none()).unwrap_or(true)
    }

    pub(crate) fn set_master(&self, key: MasterKey) {
        // From the moment the keyring is open, every append MACs the audit head.
        let mac_key = cofre_crypto::audit_mac::AuditMacKey::derive(&key);
        self.store
            .set_head_signer(Arc::new(move |seq, hash| mac_key.mac(seq, hash)));
        if let Ok(mut guard) = self.master.write() {
            *guard = Some(key);
        }
    }

    /// Runs `f` with the master key, or fails with `sealed`.
    pub(crate) fn with_master<T>(&self, f: impl FnOnce(&MasterKey) -> T) -> Result<T> {
        let guard = self
            .master
            .read()
            .map_err(|_| Error::internal("reading the keyring", "lock poisoned"))?;
        guard.as_ref().map(f).ok_or_else(Error::sealed)
    }

    /// Appends the audit entry and commits: the action and its record land together or not at all.
    pub(crate) async fn commit(&self, mut tx: WriteTx, entry: NewAuditEntry) -> Result<()> {
        let entry = self.tag_support_grant(entry);
        tx.append_audit(self.now_text(), entry)
            .await
            .map_err(|e| Error::internal("writing the audit entry", e))?;
        tx.commit()
            .await
            .map_err(|e| Error::internal("committing", e))?;
        metrics::counter!("cofre_audit_entries_total").increment(1);
        Ok(())
    }

    /// Records an event that changes nothing else (a refusal, a failed login, a reveal) and returns
    /// once it is committed.
    pub(crate) async fn record(&self, entry: NewAuditEntry) -> Result<()> {
        let (done, committed) = tokio::sync::oneshot::channel();
        let writer_gone = || Error::internal("writing the audit entry", "the audit writer stopped");
        let entry = self.tag_support_grant(entry);
        self.audit_queue
            .send(PendingAudit { entry, done })
            .await
            .map_err(|_| writer_gone())?;
        committed.await.map_err(|_| writer_gone())?
    }
}

pub fn timestamp(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// [`timestamp`] of a moment stored as Unix seconds.
pub(crate) fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .map(timestamp)
        .unwrap_or_else(|_| unix.to_string())
}

/// SHA-256 in lower-case hex: how stored texts (templates, the demo's password hash) are named.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Page size from a client's `limit`.
pub fn page_limit(limit: Option<u32>) -> Result<i64> {
    match limit {
        None => Ok(i64::from(cofre_proto::DEFAULT_PAGE_LIMIT)),
        Some(n) if (1..=cofre_proto::MAX_PAGE_LIMIT).contains(&n) => Ok(i64::from(n)),
        Some(_) => Err(Error::invalid(
            "limit",
            format!(
                "limit: must be between 1 and {}",
                cofre_proto::MAX_PAGE_LIMIT
            ),
        )),
    }
}

/// Builds a page from `limit + 1` fetched rows: the extra row only says that there is more.
pub fn paginate<R, T>(
    mut rows: Vec<R>,
    limit: i64,
    cursor_of: impl Fn(&R) -> String,
    map: impl FnMut(R) -> T,
) -> cofre_proto::Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more {
        rows.last().map(&cursor_of)
    } else {
        None
    };
    cofre_proto::Page {
        items: rows.into_iter().map(map).collect(),
        next_cursor,
    }
}
