//! Live session control and the emergency panel, for every front end (the API, the console):
//! watch a live session, block and unblock its input, and terminate every live session or lock
//! the instance down (each emergency action with the admin's own TOTP code and a reason).
//!
//! Every action is audited before it takes effect (fail closed). The controls are per node, like
//! kill: the registry of live sessions is in memory. The lockdown is in the database
//! (`instance_state`), so every node follows it.

use super::{App, Principal, Sessions};
use crate::error::{Error, ErrorCode, ErrorKind, Result};
use crate::session::{Control, Watching};
use cofre_core::audit::NewAuditEntry;
use cofre_core::names::check_text;
use cofre_core::role::{Action, Role};
use cofre_proto::{LockdownStatus, WatchStart};
use std::sync::{Arc, Weak};
use tokio::sync::broadcast::error::RecvError;

const MAX_REASON_CHARS: usize = 500;

/// Why the last watch event came.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// Bytes the user saw.
    Output(bytes::Bytes),
    /// A slow watcher missed this many chunks.
    Missed(u64),
    /// The session has ended; nothing follows.
    Ended,
}

/// One watch of one live session. Dropping it ends the watch (audited `session.watch` with
/// `event: end`), and for the last moderator of a moderated session, holds the session.
pub struct LiveWatch {
    pub start: WatchStart,
    watching: Option<Watching>,
    live: Arc<crate::session::live::LiveSessions>,
    app: Weak<App>,
    who: String,
    started: std::time::Instant,
}

impl LiveWatch {
    /// The next thing to show; [`WatchEvent::Ended`] once the session is over. Cancel-safe.
    pub async fn next(&mut self) -> WatchEvent {
        let Some(watching) = self.watching.as_mut() else {
            return WatchEvent::Ended;
        };
        let live = self.live.clone();
        tokio::select! {
            got = watching.output.recv() => match got {
                Ok(data) => WatchEvent::Output(data),
                Err(RecvError::Lagged(n)) => WatchEvent::Missed(n),
                Err(RecvError::Closed) => WatchEvent::Ended,
            },
            () = live.wait_gone(&self.start.session) => {
                // What the session said last is still queued: show it before the end.
                match watching.output.try_recv() {
                    Ok(data) => WatchEvent::Output(data),
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => WatchEvent::Missed(n),
                    Err(_) => {
                        self.watching = None;
                        WatchEvent::Ended
                    }
                }
            }
        }
    }
}

impl Drop for LiveWatch {
    fn drop(&mut self) {
        // The moderator leaves first (the session is held at once), then the end is audited.
        self.watching = None;
        let Some(app) = self.app.upgrade() else {
            return;
        };
        let entry = NewAuditEntry::new(
            &self.who,
            "session.watch",
            format!("session:{}", self.start.session),
        )
        .detail("event", "end")
        .detail("seconds", self.started.elapsed().as_secs());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = app.record(entry).await {
                    tracing::error!(error = %e, "cannot record the end of a watch");
                }
            });
        }
    }
}

fn check_reason(reason: &str) -> Result<&str> {
    check_text("reason", reason, MAX_REASON_CHARS)?;
    let reason = reason.trim();
    if reason.chars().count() < 3 {
        return Err(Error::invalid(
            "reason",
            "reason: say why (at least 3 characters); it is recorded and shown",
        ));
    }
    Ok(reason)
}

impl Sessions<'_> {
    /// The live session's control, or why there is none: unknown (`not_found`) or over
    /// (`not_live`).
    async fn live_control(
        &self,
        id: &str,
    ) -> Result<(Arc<Control>, crate::session::live::LiveWho)> {
        if let Some(found) = self.live.control(id) {
            return Ok(found);
        }
        if self.store.session(id).await?.is_none() {
            return Err(Error::not_found(format!("session {id}")));
        }
        Err(Error::new(
            ErrorKind::Conflict,
            ErrorCode::NotLive,
            format!("session {id} is not running (on this node)"),
        ))
    }

    /// Watch a live session: what its user sees from now on. Admins and auditors watch any
    /// session; an admin's watch is its moderator, and so is an approver's of a moderated
    /// session whose user shares one of the approver's groups (which is all an approver may
    /// watch). Audited (`session.watch`, `event: start`) before anything is shown.
    pub async fn watch_session(&self, who: &Principal, id: &str) -> Result<LiveWatch> {
        who.require(Action::WatchSessions)?;
        let (control, owner) = self.live_control(id).await?;
        let shares_group = owner.groups.iter().any(|g| who.groups().contains(g));
        let moderator = match who.role() {
            Role::Admin => true,
            Role::Approver if control.moderated() && shares_group => true,
            Role::Approver => {
                return Err(Error::new(
                    ErrorKind::Forbidden,
                    ErrorCode::Forbidden,
                    format!(
                        "an approver watches only the moderated sessions of its groups; session {id} is not one"
                    ),
                ))
            }
            _ => false,
        };
        self.record(
            NewAuditEntry::new(who.username(), "session.watch", format!("session:{id}"))
                .detail("event", "start")
                .detail("moderator", moderator)
                .detail("user", owner.user.as_str()),
        )
        .await?;
        let watching = control.watch(moderator);
        let (cols, rows) = watching.size();
        Ok(LiveWatch {
            start: WatchStart {
                session: id.to_owned(),
                cols,
                rows,
                moderator,
                moderated: control.moderated(),
                input_blocked: control.input_blocked(),
            },
            watching: Some(watching),
            live: self.live.clone(),
            app: Arc::downgrade(&self.shared()?),
            who: who.username().to_owned(),
            started: std::time::Instant::now(),
        })
    }

    /// Blocks a live session's input: what its user types is dropped (not queued) until
    /// [`Sessions::unlock_session`], and the user is told why. Audited first.
    pub async fn lock_session(&self, who: &Principal, id: &str, reason: &str) -> Result<()> {
        who.require(Action::LockSessions)?;
        let reason = check_reason(reason)?;
        let (control, _) = self.live_control(id).await?;
        if control.input_blocked() {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::SessionLocked,
                format!("the input of session {id} is blocked already"),
            ));
        }
        self.record(
            NewAuditEntry::new(who.username(), "session.lock", format!("session:{id}"))
                .detail("reason", reason),
        )
        .await?;
        control.lock(who.username(), reason);
        Ok(())
    }

    /// Gives a blocked session its input back; the user is told. Audited first.
    pub async fn unlock_session(&self, who: &Principal, id: &str, reason: &str) -> Result<()> {
        who.require(Action::LockSessions)?;
        let reason = check_reason(reason)?;
        let (control, _) = self.live_control(id).await?;
        if !control.input_blocked() {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::SessionNotLocked,
                format!("the input of session {id} is not blocked"),
            ));
        }
        self.record(
            NewAuditEntry::new(who.username(), "session.unlock", format!("session:{id}"))
                .detail("reason", reason),
        )
        .await?;
        control.unlock(who.username());
        Ok(())
    }

    /// The emergency panel's first button: every live session on this node ends now (each
    /// recorded and audited as a kill is). With the admin's TOTP code and a reason, audited
    /// (`emergency.terminate_all`, with the sessions' ids) before any ends.
    pub async fn terminate_all_sessions(
        &self,
        who: &Principal,
        totp_code: &str,
        reason: &str,
    ) -> Result<Vec<String>> {
        who.require(Action::Emergency)?;
        let reason = check_reason(reason)?;
        let mut tx = self.store.write().await?;
        if let Err(e) = self.check_step_up(&mut tx, who, totp_code).await {
            drop(tx);
            self.refused_emergency(who, "emergency.terminate_all", &e)
                .await?;
            return Err(e);
        }
        let ids: Vec<String> = self
            .live
            .matching(|_| true)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        self.commit(
            tx,
            NewAuditEntry::new(who.username(), "emergency.terminate_all", "sessions")
                .detail("reason", reason)
                .detail("sessions", ids.clone()),
        )
        .await?;
        let why = format!("terminated by {} (emergency): {reason}", who.username());
        // Those that started since the list was read end too: the panel means every session.
        Ok(self
            .live
            .kill_where(|_| true, &why)
            .into_iter()
            .fold(ids, |mut all, id| {
                if !all.contains(&id) {
                    all.push(id);
                }
                all
            }))
    }

    /// Whether the instance is locked down. Admins only (everyone else is refused anyway).
    pub async fn get_lockdown(&self, who: &Principal) -> Result<LockdownStatus> {
        who.require(Action::Emergency)?;
        let state = self.reload_instance_state().await?;
        Ok(lockdown_status(state.locked_down.as_ref()))
    }

    /// The emergency panel's second button: from now on the API, the console and the gateway
    /// refuse everyone but admins (`instance_locked_down`), on every node. Live sessions of
    /// others are not ended by it (that is [`Sessions::terminate_all_sessions`]). With the
    /// admin's TOTP code and a reason, audited `emergency.lockdown`.
    pub async fn lock_down_instance(
        &self,
        who: &Principal,
        totp_code: &str,
        reason: &str,
    ) -> Result<LockdownStatus> {
        who.require(Action::Emergency)?;
        let reason = check_reason(reason)?;
        let mut tx = self.store.write().await?;
        if let Err(e) = self.check_step_up(&mut tx, who, totp_code).await {
            drop(tx);
            self.refused_emergency(who, "emergency.lockdown", &e)
                .await?;
            return Err(e);
        }
        let before = tx.instance_state().await?;
        if before.locked_down_at.is_some() {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::AlreadyLockedDown,
                format!(
                    "the instance is locked down already (by {})",
                    before.locked_down_by.unwrap_or_default()
                ),
            ));
        }
        let now = self.now_text();
        tx.set_lockdown(Some((&now, who.username(), reason)))
            .await?;
        self.commit(
            tx,
            NewAuditEntry::new(who.username(), "emergency.lockdown", "instance")
                .detail("reason", reason)
                .detail("live_sessions", self.live.count()),
        )
        .await?;
        let state = self.reload_instance_state().await?;
        Ok(lockdown_status(state.locked_down.as_ref()))
    }

    /// Lifts the lockdown. It takes a second admin: the one who locked the instance down cannot
    /// lift it (`lockdown_needs_second_admin`, audited as refused), so one stolen admin account
    /// with its TOTP cannot lock down and reopen on its own terms. Audited `emergency.lift`.
    pub async fn lift_lockdown(&self, who: &Principal, reason: &str) -> Result<LockdownStatus> {
        who.require(Action::Emergency)?;
        let reason = check_reason(reason)?;
        let mut tx = self.store.write().await?;
        let before = tx.instance_state().await?;
        let (Some(at), by) = (before.locked_down_at, before.locked_down_by) else {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::NotLockedDown,
                "the instance is not locked down",
            ));
        };
        let by = by.unwrap_or_default();
        if by == who.username() {
            drop(tx);
            let refusal = Error::new(
                ErrorKind::Forbidden,
                ErrorCode::LockdownNeedsSecondAdmin,
                format!(
                    "you locked the instance down ({at}); another admin must lift it (`cofre emergency lift`)"
                ),
            );
            self.refused_emergency(who, "emergency.lift", &refusal)
                .await?;
            return Err(refusal);
        }
        tx.set_lockdown(None).await?;
        self.commit(
            tx,
            NewAuditEntry::new(who.username(), "emergency.lift", "instance")
                .detail("reason", reason)
                .detail("locked_down_at", at.as_str())
                .detail("locked_down_by", by.as_str())
                .detail(
                    "locked_down_reason",
                    before.locked_down_reason.unwrap_or_default(),
                ),
        )
        .await?;
        let state = self.reload_instance_state().await?;
        Ok(lockdown_status(state.locked_down.as_ref()))
    }

    async fn refused_emergency(&self, who: &Principal, action: &str, why: &Error) -> Result<()> {
        self.record(
            NewAuditEntry::new(who.username(), action, "instance")
                .outcome("denied")
                .detail("why", why.code.as_str()),
        )
        .await
    }
}

fn lockdown_status(d: Option<&super::instance::Disabled>) -> LockdownStatus {
    match d {
        None => LockdownStatus {
            locked_down: false,
            since: None,
            by: None,
            reason: None,
        },
        Some(d) => LockdownStatus {
            locked_down: true,
            since: Some(d.at.clone()),
            by: Some(d.by.clone()),
            reason: Some(d.reason.clone()),
        },
    }
}
