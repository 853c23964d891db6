//! Maintenance windows (Orbit's updates): propose, decide by mode, cancel, and the scheduler that
//! runs a window's steps. The rules are `cofre_core::maintenance`; this module stores each
//! change with its audit entry and its step in `maintenance_events` (one transaction), and
//! wakes whoever watches.
//!
//! At a window's start, in order, each step audited (`maintenance.step`) and streamed: live
//! gateway sessions were warned `[maintenance] warn_minutes` ahead; new sessions are refused
//! while it runs; the remaining ones are ended; a pre-maintenance snapshot is taken and
//! verified (no snapshot, no update); the release is verified again and installed beside the
//! running binary (`DATA_DIR/releases/installed/ID/`); then the switch-over ([`super::handover`]
//! and the supervisor of `cofre server`): the new version started, checked, and committed, or
//! the old one back with the database restored where the new one migrated it.

use super::releases::release_error;
use super::snapshots::{SnapshotOptions, SnapshotReason};
use super::{page_limit, paginate, rfc3339, App, Orbit, Principal};
use crate::error::{Error, ErrorCode, ErrorKind, Result};
use crate::release;
use cofre_core::audit::NewAuditEntry;
use cofre_core::maintenance::{self as m, Effect, Event, Refusal, State, Window};
use cofre_core::role::Action;
use cofre_proto::{
    MaintenanceDecision, MaintenanceEvent, MaintenanceInfo, NextWindow, Page,
    ProposeMaintenanceRequest,
};
use cofre_store::maintenance::{WindowDecision, WindowEvent, WindowRow};
use cofre_store::WriteTx;
use std::sync::Arc;
use time::OffsetDateTime;

/// This node's part in maintenance: who is woken when a window gets a new step.
pub struct MaintenanceState {
    /// The id of a window that got a new step (watchers re-read the table: nothing is lost if
    /// they lag, and another node's steps are found by their poll).
    pub(crate) steps: tokio::sync::broadcast::Sender<String>,
    /// Wakes the scheduler (a window proposed or decided).
    pub(crate) wake: tokio::sync::Notify,
}

impl Default for MaintenanceState {
    fn default() -> Self {
        Self {
            steps: tokio::sync::broadcast::channel(256).0,
            wake: tokio::sync::Notify::new(),
        }
    }
}

fn machine(row: &WindowRow) -> Result<Window> {
    let state = State::parse(&row.state).ok_or_else(|| {
        Error::internal(
            "reading a maintenance window",
            format!("unknown state {:?}", row.state),
        )
    })?;
    Ok(Window {
        state,
        proposer: row.proposer.clone(),
        starts_at: row.starts_at,
        ends_at: row.ends_at,
        required: u32::try_from(row.required_approvals).unwrap_or(u32::MAX),
        approvals: row
            .decisions
            .iter()
            .filter(|d| d.verdict == "approve")
            .map(|d| d.approver.clone())
            .collect(),
    })
}

fn refusal_error(r: &Refusal) -> Error {
    let (kind, code) = match r {
        Refusal::Proposer => (ErrorKind::Forbidden, ErrorCode::OwnRequest),
        Refusal::NotCustomerAdmin => (ErrorKind::Forbidden, ErrorCode::Forbidden),
        Refusal::AlreadyDecided => (ErrorKind::Conflict, ErrorCode::AlreadyDecided),
        Refusal::NotProposed(_) => (ErrorKind::Conflict, ErrorCode::NotPending),
        Refusal::Closed(_) | Refusal::Started => (ErrorKind::Conflict, ErrorCode::RequestClosed),
        Refusal::NotYet(_) | Refusal::Missed | Refusal::NotRunning(_) | Refusal::BadOutcome(_) => {
            (ErrorKind::Conflict, ErrorCode::Conflict)
        }
    };
    Error::new(kind, code, r.to_string())
}

fn event_info(e: WindowEvent) -> MaintenanceEvent {
    let state = (e.step == "state").then(|| e.outcome.clone());
    MaintenanceEvent {
        seq: e.seq,
        at: rfc3339(e.at),
        step: e.step,
        outcome: e.outcome,
        detail: e.detail,
        state,
    }
}

fn info(row: WindowRow, events: Vec<WindowEvent>) -> MaintenanceInfo {
    MaintenanceInfo {
        id: row.id,
        state: row.state,
        release: row.release_id,
        version: row.version,
        notes: row.notes,
        proposer: row.proposer,
        starts_at: rfc3339(row.starts_at),
        ends_at: rfc3339(row.ends_at),
        created_at: rfc3339(row.created_at),
        required_approvals: u32::try_from(row.required_approvals).unwrap_or(u32::MAX),
        decisions: row
            .decisions
            .into_iter()
            .map(|d| MaintenanceDecision {
                approver: d.approver,
                verdict: d.verdict,
                comment: d.comment,
                at: rfc3339(d.decided_at),
            })
            .collect(),
        closed_by: row.closed_by,
        close_comment: row.close_comment,
        events: events.into_iter().map(event_info).collect(),
    }
}

/// A step to write with a change: `(step, outcome, detail)`.
pub(crate) type Step = (&'static str, &'static str, String);

impl App {
    fn maintenance_rule(&self) -> m::Rule {
        m::rule(
            self.config.mode,
            self.config.maintenance.approvals,
            self.config.maintenance.notice_hours,
        )
    }

    /// Appends the steps to the window, commits with `entry`, and wakes the watchers.
    pub(crate) async fn commit_steps(
        &self,
        mut tx: WriteTx,
        id: &str,
        steps: &[Step],
        entry: NewAuditEntry,
    ) -> Result<()> {
        let now = self.now().unix_timestamp();
        for (step, outcome, detail) in steps {
            tx.append_maintenance_event(id, now, step, outcome, detail)
                .await?;
        }
        self.commit(tx, entry).await?;
        let _ = self.maintenance.steps.send(id.to_owned());
        self.maintenance.wake.notify_one();
        Ok(())
    }

    /// Verifies the kept release file of `release_id` again (on a blocking thread).
    async fn reverify_release(&self, release_id: &str) -> Result<release::Verified> {
        let path = self.orbit().release_path(release_id);
        let keys = release::parse_keys(&self.config.maintenance.release_public_keys)
            .map_err(|e| Error::internal("reading the release keys", e))?;
        tokio::task::spawn_blocking(move || release::verify(&path, &keys, crate::switch::version()))
            .await
            .map_err(|e| Error::internal("verifying the release", e))?
            .map_err(|e| release_error(&e))
    }

    /// Queues the announcement of a window to every customer admin (saas: they watch, they do
    /// not decide), in the transaction that schedules it.
    async fn announce_window(&self, tx: &mut WriteTx, w: &WindowRow) -> Result<()> {
        let now = self.now().unix_timestamp();
        let subject = format!(
            "Maintenance window {} scheduled: Cofre {} from {} to {}",
            w.id,
            w.version,
            rfc3339(w.starts_at),
            rfc3339(w.ends_at)
        );
        let text = format!(
            "{subject}\n\nProposed by: {}\nNotes: {}\nRelease: {}\n\nDuring the window new gateway sessions are refused and live ones are ended at its start.\nWatch it live with: cofre maintenance watch {}\n",
            w.proposer, w.notes, w.release_id, w.id
        );
        let body = serde_json::json!({
            "event": "maintenance.scheduled",
            "actor": w.proposer,
            "at": rfc3339(now),
            "maintenance": info(w.clone(), Vec::new()),
        });
        self.queue_admin_notices(tx, &subject, &text, &body).await
    }

    /// The refusal a new gateway session gets while a window runs (or should be running).
    pub(crate) async fn maintenance_refusal(&self) -> Result<Option<Error>> {
        let now = self.now().unix_timestamp();
        let open = self.store.open_maintenance_windows().await?;
        Ok(open
            .iter()
            .find(|w| {
                w.state == "running"
                    || (w.state == "scheduled" && w.starts_at <= now && now < w.ends_at)
            })
            .map(|w| {
                Error::new(
                    ErrorKind::Unavailable,
                    ErrorCode::MaintenanceWindow,
                    format!(
                        "maintenance window {} is running until {} (Cofre {}): new sessions are refused until it ends",
                        w.id,
                        rfc3339(w.ends_at),
                        w.version
                    ),
                )
            }))
    }

    /// The next window not yet closed, for `instance show`.
    pub(crate) async fn next_window(&self) -> Result<Option<NextWindow>> {
        let open = self.store.open_maintenance_windows().await?;
        Ok(open.into_iter().next().map(|w| NextWindow {
            id: w.id,
            state: w.state,
            version: w.version,
            starts_at: rfc3339(w.starts_at),
            ends_at: rfc3339(w.ends_at),
        }))
    }
}

impl Orbit<'_> {
    /// `cofre maintenance propose`: the release is verified again now; the window is scheduled
    /// at once where the mode asks no one (saas, on-prem with `approvals = 0`), proposed
    /// otherwise. saas windows are announced to every customer admin.
    pub async fn propose_maintenance(
        &self,
        who: &Principal,
        req: &ProposeMaintenanceRequest,
    ) -> Result<MaintenanceInfo> {
        who.require(Action::ProposeMaintenance)?;
        let notes = req.notes.as_deref().unwrap_or("").trim().to_owned();
        cofre_core::names::check_text("notes", &notes, 1000)?;
        let now = self.now().unix_timestamp();
        let start = OffsetDateTime::parse(
            req.start.trim(),
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| {
            Error::invalid(
                "start",
                format!(
                    "start: {:?} is not an RFC 3339 time (e.g. 2026-12-10T02:00:00Z)",
                    req.start
                ),
            )
        })?
        .unix_timestamp();
        let duration = cofre_core::when::parse_duration("duration", &req.duration)?;
        let window = m::propose(self.maintenance_rule(), &who.username, now, start, duration)
            .map_err(|e| {
                let err: Error = e.clone().into();
                if e.field == "start" && e.reason.contains("notice_hours") {
                    Error::new(
                        ErrorKind::BadRequest,
                        ErrorCode::MaintenanceNotice,
                        err.message,
                    )
                    .with_field("start")
                } else {
                    err
                }
            })?;
        let release_row = self.store.release(&req.release).await?.ok_or_else(|| {
            Error::not_found(format!("release {}", req.release)).with_field("release")
        })?;
        if let Err(e) = self.reverify_release(&release_row.id).await {
            self.record(
                NewAuditEntry::new(
                    who.username(),
                    "maintenance.propose",
                    format!("release:{}", release_row.id),
                )
                .outcome("denied")
                .detail("why", e.message.as_str()),
            )
            .await?;
            return Err(e);
        }
        let mut id = uuid::Uuid::new_v4().simple().to_string();
        id.truncate(12);
        let row = WindowRow {
            id: id.clone(),
            release_id: release_row.id.clone(),
            version: release_row.version.clone(),
            notes,
            state: window.state.as_str().to_owned(),
            proposer: who.username.clone(),
            required_approvals: i64::from(window.required),
            starts_at: window.starts_at,
            ends_at: window.ends_at,
            created_at: now,
            warned_at: None,
            closed_at: None,
            closed_by: None,
            close_comment: None,
            decisions: Vec::new(),
        };
        let mut tx = self.store.write().await?;
        tx.insert_maintenance_window(&row).await?;
        let mut steps: Vec<Step> = vec![(
            "proposed",
            "info",
            format!(
                "{} proposed Cofre {} from {} to {}; {} approvals needed",
                row.proposer,
                row.version,
                rfc3339(row.starts_at),
                rfc3339(row.ends_at),
                window.required
            ),
        )];
        if window.state == State::Scheduled {
            self.announce_window(&mut tx, &row).await?;
            steps.push((
                "state",
                "scheduled",
                "no approval is asked in this mode: scheduled".into(),
            ));
        }
        let entry = NewAuditEntry::new(
            who.username(),
            "maintenance.propose",
            format!("maintenance:{id}"),
        )
        .detail("release", row.release_id.as_str())
        .detail("version", row.version.as_str())
        .detail("starts_at", rfc3339(row.starts_at))
        .detail("ends_at", rfc3339(row.ends_at))
        .detail("required_approvals", row.required_approvals)
        .detail("state", row.state.as_str());
        self.commit_steps(tx, &id, &steps, entry).await?;
        self.notifier_wake();
        self.get_maintenance(who, &id).await
    }

    pub async fn list_maintenance(
        &self,
        who: &Principal,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<MaintenanceInfo>> {
        who.require(Action::ViewMaintenance)?;
        let limit = page_limit(limit)?;
        self.expire_due_windows().await?;
        let rows = self.store.maintenance_page(cursor, limit + 1).await?;
        Ok(paginate(
            rows,
            limit,
            |r| r.id.clone(),
            |r| info(r, Vec::new()),
        ))
    }

    /// One window with every step so far.
    pub async fn get_maintenance(&self, who: &Principal, id: &str) -> Result<MaintenanceInfo> {
        who.require(Action::ViewMaintenance)?;
        self.expire_due_windows().await?;
        let row = self
            .store
            .maintenance_window(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("maintenance window {id}")))?;
        let events = self.store.maintenance_events(id, 0).await?;
        Ok(info(row, events))
    }

    /// The steps after `after` and whether the window is closed (nothing more will come).
    pub async fn maintenance_events(
        &self,
        who: &Principal,
        id: &str,
        after: i64,
    ) -> Result<(Vec<MaintenanceEvent>, bool)> {
        who.require(Action::ViewMaintenance)?;
        let row = self
            .store
            .maintenance_window(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("maintenance window {id}")))?;
        let closed = State::parse(&row.state).is_none_or(State::is_closed);
        let events = self.store.maintenance_events(id, after).await?;
        Ok((events.into_iter().map(event_info).collect(), closed))
    }

    /// A receiver that hears the id of every window that got a step on this node.
    pub fn maintenance_steps(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.maintenance.steps.subscribe()
    }

    /// Approve or deny (`approve = false`, with a comment) a proposed window: customer admins
    /// only, never the proposer, once each; one refusal ends it.
    pub async fn decide_maintenance(
        &self,
        who: &Principal,
        id: &str,
        approve: bool,
        comment: Option<&str>,
    ) -> Result<MaintenanceInfo> {
        who.require(Action::DecideMaintenance)?;
        let verdict = if approve { "approve" } else { "deny" };
        let comment = comment.unwrap_or("").trim();
        cofre_core::names::check_text("comment", comment, 500)?;
        if !approve && comment.chars().count() < 3 {
            return Err(Error::invalid(
                "comment",
                "comment: say why the window is denied (at least 3 characters)",
            ));
        }
        self.expire_due_windows().await?;
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        let row = tx
            .maintenance_window(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("maintenance window {id}")))?;
        let mut w = machine(&row)?;
        let event = if approve {
            Event::Approve {
                who: &who.username,
                role: who.role,
                at: now,
            }
        } else {
            Event::Deny {
                who: &who.username,
                role: who.role,
                at: now,
            }
        };
        let effect = match w.apply(&event) {
            Ok(e) => e,
            Err(refusal) => {
                drop(tx);
                self.record(
                    NewAuditEntry::new(
                        who.username(),
                        "maintenance.decide",
                        format!("maintenance:{id}"),
                    )
                    .outcome("denied")
                    .detail("verdict", verdict)
                    .detail("why", refusal.to_string()),
                )
                .await?;
                return Err(refusal_error(&refusal));
            }
        };
        tx.insert_maintenance_decision(
            id,
            &WindowDecision {
                approver: who.username.clone(),
                verdict: verdict.into(),
                comment: comment.to_owned(),
                decided_at: now,
            },
        )
        .await?;
        let mut steps: Vec<Step> = Vec::new();
        let by = format!("{}: {comment}", who.username);
        match effect {
            Effect::Approved { count } => steps.push((
                "approved",
                "info",
                format!("{by} ({count} of {})", w.required),
            )),
            Effect::Scheduled => {
                steps.push((
                    "approved",
                    "info",
                    format!("{by} ({} of {})", w.required, w.required),
                ));
                steps.push(("state", "scheduled", "every approval is in".into()));
            }
            Effect::Denied => steps.push(("state", "denied", by.clone())),
            _ => {}
        }
        if w.state.as_str() != row.state {
            let closed = w
                .state
                .is_closed()
                .then_some((now, who.username.as_str(), comment));
            if !tx
                .update_maintenance_state(id, &row.state, w.state.as_str(), closed)
                .await?
            {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    ErrorCode::Conflict,
                    "the window changed meanwhile; look again",
                ));
            }
        }
        let mut entry = NewAuditEntry::new(
            who.username(),
            "maintenance.decide",
            format!("maintenance:{id}"),
        )
        .detail("verdict", verdict)
        .detail("state", w.state.as_str())
        .detail("proposer", row.proposer.as_str());
        if !comment.is_empty() {
            entry = entry.detail("comment", comment);
        }
        self.commit_steps(tx, id, &steps, entry).await?;
        self.get_maintenance(who, id).await
    }

    /// Cancels a window before its start: whoever may propose one.
    pub async fn cancel_maintenance(&self, who: &Principal, id: &str) -> Result<MaintenanceInfo> {
        who.require(Action::ProposeMaintenance)?;
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        let row = tx
            .maintenance_window(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("maintenance window {id}")))?;
        let mut w = machine(&row)?;
        if let Err(refusal) = w.apply(&Event::Cancel { at: now }) {
            return Err(refusal_error(&refusal));
        }
        if !tx
            .update_maintenance_state(
                id,
                &row.state,
                State::Cancelled.as_str(),
                Some((now, who.username.as_str(), "")),
            )
            .await?
        {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::Conflict,
                "the window changed meanwhile; look again",
            ));
        }
        let steps = [(
            "state",
            "cancelled",
            format!("cancelled by {} before its start", who.username),
        )];
        let entry = NewAuditEntry::new(
            who.username(),
            "maintenance.cancel",
            format!("maintenance:{id}"),
        )
        .detail("from", row.state.as_str());
        self.commit_steps(tx, id, &steps, entry).await?;
        self.live.untell(&format!("maintenance window {id} "));
        self.get_maintenance(who, id).await
    }

    /// Proposed windows whose start has come: expired, nothing applied. Returns how many.
    pub async fn expire_due_windows(&self) -> Result<usize> {
        let now = self.now().unix_timestamp();
        let mut n = 0;
        for open in self.store.open_maintenance_windows().await? {
            let due = (open.state == "proposed" && open.starts_at <= now)
                || (open.state == "scheduled" && open.ends_at <= now);
            if !due {
                continue;
            }
            // Judged again under the write lock, with its decisions.
            let mut tx = self.store.write().await?;
            let Some(row) = tx.maintenance_window(&open.id).await? else {
                continue;
            };
            let mut w = machine(&row)?;
            if w.apply(&Event::Tick { at: now }) != Ok(Effect::Expired) {
                continue;
            }
            let why = if row.state == "proposed" {
                "not approved by its start: nothing is applied"
            } else {
                "its time ran out before it began (the server was not running): nothing is applied"
            };
            if !tx
                .update_maintenance_state(
                    &row.id,
                    &row.state,
                    "expired",
                    Some((now, "system", why)),
                )
                .await?
            {
                continue;
            }
            let approvals = row
                .decisions
                .iter()
                .filter(|d| d.verdict == "approve")
                .count();
            let entry = NewAuditEntry::new(
                "system",
                "maintenance.expire",
                format!("maintenance:{}", row.id),
            )
            .detail("from", row.state.as_str())
            .detail("approvals", approvals)
            .detail("required", row.required_approvals);
            self.commit_steps(tx, &row.id, &[("state", "expired", why.to_owned())], entry)
                .await?;
            n += 1;
        }
        Ok(n)
    }
}

/// The scheduler's view of what is due: expiry, the warning, the start.
impl App {
    async fn maintenance_tick(self: &Arc<Self>) -> Result<()> {
        self.orbit().expire_due_windows().await?;
        let now = self.now().unix_timestamp();
        let warn_ahead = i64::from(self.config.maintenance.warn_minutes) * 60;
        for row in self.store.open_maintenance_windows().await? {
            if row.state != "scheduled" {
                continue;
            }
            if row.warned_at.is_none() && now + warn_ahead >= row.starts_at {
                self.warn_sessions(&row).await?;
            }
            if now >= row.starts_at {
                self.run_window(&row).await?;
            }
        }
        Ok(())
    }

    async fn warn_sessions(&self, row: &WindowRow) -> Result<()> {
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        if !tx.set_maintenance_warned(&row.id, now).await? {
            return Ok(());
        }
        let text = format!(
            "maintenance window {} starts at {} (Cofre {}); this session will be ended then, and new sessions are refused until {}",
            row.id,
            rfc3339(row.starts_at),
            row.version,
            rfc3339(row.ends_at)
        );
        let live = self.live.count();
        let steps = [(
            "sessions_warned",
            "ok",
            format!("{live} live gateway sessions on this node told: {text}"),
        )];
        let entry = NewAuditEntry::new(
            "system",
            "maintenance.step",
            format!("maintenance:{}", row.id),
        )
        .detail("step", "sessions_warned")
        .detail("sessions", live);
        self.commit_steps(tx, &row.id, &steps, entry).await?;
        self.live.tell(&text);
        Ok(())
    }

    /// One step of a running window, written, audited and streamed before the next begins.
    pub(crate) async fn step(
        &self,
        id: &str,
        step: &'static str,
        outcome: &'static str,
        detail: String,
    ) -> Result<()> {
        let tx = self.store.write().await?;
        let entry = NewAuditEntry::new("system", "maintenance.step", format!("maintenance:{id}"))
            .outcome(if outcome == "failed" { "failed" } else { "ok" })
            .detail("step", step)
            .detail("detail", detail.as_str());
        self.commit_steps(tx, id, &[(step, outcome, detail)], entry)
            .await
    }

    /// Ends the window in `outcome` (done, failed, rolled back).
    pub(crate) async fn finish_window(&self, id: &str, outcome: State, why: &str) -> Result<()> {
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        tx.update_maintenance_state(id, "running", outcome.as_str(), Some((now, "system", why)))
            .await?;
        let entry = NewAuditEntry::new("system", "maintenance.finish", format!("maintenance:{id}"))
            .outcome(if outcome == State::Done {
                "ok"
            } else {
                "failed"
            })
            .detail("state", outcome.as_str())
            .detail("why", why);
        self.commit_steps(
            tx,
            id,
            &[("state", outcome.as_str(), why.to_owned())],
            entry,
        )
        .await?;
        // The warning is over with the window: a session that starts now is not shown it.
        self.live.untell(&format!("maintenance window {id} "));
        self.freeze(None);
        Ok(())
    }

    /// Runs a scheduled window whose start has come. Only the node that moves it from
    /// `scheduled` to `running` runs it (the state change is the lease).
    async fn run_window(self: &Arc<Self>, row: &WindowRow) -> Result<()> {
        let id = row.id.as_str();
        let now = self.now().unix_timestamp();
        {
            let mut w = machine(row)?;
            if w.apply(&Event::Begin { at: now }).is_err() {
                return Ok(());
            }
            let mut tx = self.store.write().await?;
            if !tx
                .update_maintenance_state(id, "scheduled", "running", None)
                .await?
            {
                return Ok(());
            }
            let entry =
                NewAuditEntry::new("system", "maintenance.begin", format!("maintenance:{id}"))
                    .detail("release", row.release_id.as_str());
            let steps = [("state", "running", format!("window {id} begins"))];
            self.commit_steps(tx, id, &steps, entry).await?;
            self.freeze(Some((id, row.ends_at)));
        }
        match self.window_steps(row).await {
            Ok(()) => Ok(()),
            Err(e) => self.finish_window(id, State::Failed, &e.message).await,
        }
    }

    async fn window_steps(self: &Arc<Self>, row: &WindowRow) -> Result<()> {
        let id = row.id.as_str();
        self.step(
            id,
            "sessions_refused",
            "ok",
            format!(
                "new gateway sessions are refused until {}",
                rfc3339(row.ends_at)
            ),
        )
        .await?;
        let ended = self
            .live
            .kill_where(|_| true, &format!("maintenance window {id} begins"));
        self.step(
            id,
            "sessions_ended",
            "ok",
            format!("{} live gateway sessions on this node ended", ended.len()),
        )
        .await?;
        // Every entry after this one is carried over if a rollback restores the database.
        let (audit_after, _) = self.store.audit_head().await?;
        // No snapshot, no update.
        let snapshot = self
            .orbit()
            .create_snapshot(SnapshotOptions {
                reason: SnapshotReason::PreMaintenance,
                include_recordings: true,
            })
            .await;
        let snapshot = match snapshot {
            Ok(s) => s,
            Err(e) => {
                let why = format!("the pre-maintenance snapshot failed: {}", e.message);
                self.step(id, "snapshot", "failed", why.clone()).await?;
                return self.finish_window(id, State::Failed, &why).await;
            }
        };
        let system = Principal::system(self.config.mode);
        let verified = self.orbit().verify_snapshot(&system, &snapshot.id).await;
        match verified {
            Ok(v) if v.ok => {
                self.step(
                    id,
                    "snapshot",
                    "ok",
                    format!(
                        "pre-maintenance snapshot {} taken and verified ({} bytes, sha256 {})",
                        snapshot.id, snapshot.size, snapshot.sha256
                    ),
                )
                .await?;
            }
            other => {
                let why = match other {
                    Ok(v) => format!(
                        "the pre-maintenance snapshot {} does not verify: {}",
                        snapshot.id,
                        v.error.unwrap_or_default()
                    ),
                    Err(e) => format!(
                        "the pre-maintenance snapshot {} could not be verified: {}",
                        snapshot.id, e.message
                    ),
                };
                self.step(id, "snapshot", "failed", why.clone()).await?;
                return self.finish_window(id, State::Failed, &why).await;
            }
        }
        let verified = match self.reverify_release(&row.release_id).await {
            Ok(v) => v,
            Err(e) => {
                let why = format!("the release {} is refused: {}", row.release_id, e.message);
                self.step(id, "release_verified", "failed", why.clone())
                    .await?;
                return self.finish_window(id, State::Failed, &why).await;
            }
        };
        self.step(
            id,
            "release_verified",
            "ok",
            format!(
                "release {} verified again (Cofre {}, binary sha256 {})",
                row.release_id, verified.manifest.version, verified.manifest.binary_sha256
            ),
        )
        .await?;
        let file = self.orbit().release_path(&row.release_id);
        let dir = self
            .config
            .data_dir
            .join("releases")
            .join("installed")
            .join(&row.release_id);
        let manifest = verified.manifest.clone();
        let target = dir.clone();
        let installed =
            tokio::task::spawn_blocking(move || release::install(&file, &manifest, &target))
                .await
                .map_err(|e| Error::internal("installing the release", e))?;
        let binary = match installed {
            Ok(binary) => {
                let current = std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                self.step(
                    id,
                    "installed",
                    "ok",
                    format!(
                        "Cofre {} installed at {} beside the running binary {current} (both kept)",
                        verified.manifest.version,
                        binary.display()
                    ),
                )
                .await?;
                binary
            }
            Err(e) => {
                let why = format!("installing the release failed: {e}");
                self.step(id, "installed", "failed", why.clone()).await?;
                return self.finish_window(id, State::Failed, &why).await;
            }
        };
        let snapshot_path =
            crate::snapshot::snapshot_path(&self.orbit().snapshot_dir(), &snapshot.id);
        self.hand_over(
            row,
            (&snapshot.id, snapshot_path),
            audit_after,
            binary,
            &verified.manifest.version,
        )
        .await
    }
}

/// At start, a switch-over in progress is carried on ([`App::resume_handover`]: the candidate
/// checks itself, a committed update or a rollback is recorded); any other window left
/// `running` by a crash is ended `failed`. Then the scheduler runs every
/// `[maintenance] tick_seconds` or when a window is proposed or decided.
pub async fn start(app: &Arc<App>) {
    if !app.is_sealed() {
        let handing_over = app.resume_handover().await;
        match app.store.open_maintenance_windows().await {
            Ok(rows) => {
                for row in rows
                    .into_iter()
                    .filter(|r| r.state == "running" && Some(&r.id) != handing_over.as_ref())
                {
                    if let Err(e) = app
                        .finish_window(
                            &row.id,
                            State::Failed,
                            "interrupted by a restart of the server",
                        )
                        .await
                    {
                        tracing::warn!(error = %e, window = %row.id, "cannot end an interrupted maintenance window");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the maintenance windows"),
        }
    }
    let weak = Arc::downgrade(app);
    let tick = std::time::Duration::from_secs(app.config.maintenance.tick_seconds);
    tokio::spawn(async move {
        loop {
            let Some(app) = weak.upgrade() else { return };
            if !app.is_sealed() {
                if let Err(e) = app.maintenance_tick().await {
                    tracing::warn!(error = %e, "the maintenance scheduler failed; retrying");
                }
            }
            let state = app.maintenance.clone();
            drop(app);
            let _ = tokio::time::timeout(tick, state.wake.notified()).await;
        }
    });
}
