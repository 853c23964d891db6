//! Vendor support grants: a support user asks (`request_support`), customer admins decide
//! (`decide_support`), anyone concerned revokes (`revoke_support`), and the customer reads what
//! was done under a grant (`support_activity`). The rules are `cofre_core::support`; this module
//! stores each change with its audit entry and its notification to the customer's admins (one
//! transaction).
//!
//! Enforcement is in authentication: a support principal carries the grants active at that
//! moment ([`Principal::require`] consults them), so the call after a grant's end or revocation
//! is refused. Every audit entry of a support user acting under a grant carries
//! `details.support_grant` (see [`App::tag_support_grant`]); the activity of a grant is those
//! entries. Expiry and the end of a grant are written lazily, by the next list or decision.

use super::{page_limit, paginate, rfc3339, App, Approvals, Principal};
use crate::error::{Error, ErrorCode, ErrorKind, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_core::role::{Action, Role};
use cofre_core::support::{self as s, Effect, Event, Grant, Refusal, Scope, State};
use cofre_proto::{AuditEntryInfo, Page, SupportDecisionInfo, SupportGrantInfo, SupportRequest};
use cofre_store::support::{SupportDecision, SupportGrantRow};
use cofre_store::WriteTx;
use std::collections::HashMap;
use std::sync::Mutex;

/// This node's support users acting under a grant: user name → (grant id, its end), set at
/// each authentication, so that the audit entries of what follows carry the grant's id.
#[derive(Default)]
pub struct SupportState {
    acting: Mutex<HashMap<String, (String, i64)>>,
}

fn scopes_of(row: &SupportGrantRow) -> Result<Vec<Scope>> {
    s::parse_scopes("scopes", &row.scopes)
        .map_err(|e| Error::internal("reading a support grant", e.to_string()))
}

fn machine(row: &SupportGrantRow) -> Result<Grant> {
    let state = State::parse(&row.state).ok_or_else(|| {
        Error::internal(
            "reading a support grant",
            format!("unknown state {:?}", row.state),
        )
    })?;
    Ok(Grant {
        requester: row.requester.clone(),
        scopes: scopes_of(row)?,
        state,
        required: u32::try_from(row.required_approvals).unwrap_or(u32::MAX),
        approvals: row
            .decisions
            .iter()
            .filter(|d| d.verdict == "approve")
            .map(|d| d.approver.clone())
            .collect(),
        decide_by: row.decide_by,
        duration: row.duration_seconds,
        window: row.starts_at.zip(row.ends_at),
    })
}

/// The machine's state written back into the row.
fn apply_to_row(row: &mut SupportGrantRow, g: &Grant) {
    row.state = g.state.as_str().to_owned();
    row.starts_at = g.window.map(|w| w.0);
    row.ends_at = g.window.map(|w| w.1);
}

fn refusal_error(r: &Refusal) -> Error {
    let (kind, code) = match r {
        Refusal::OwnRequest => (ErrorKind::Forbidden, ErrorCode::OwnRequest),
        Refusal::NotCustomerAdmin | Refusal::NotRevoker => {
            (ErrorKind::Forbidden, ErrorCode::Forbidden)
        }
        Refusal::AlreadyDecided => (ErrorKind::Conflict, ErrorCode::AlreadyDecided),
        Refusal::NotPending(_) => (ErrorKind::Conflict, ErrorCode::NotPending),
        Refusal::Expired | Refusal::Closed(_) => (ErrorKind::Conflict, ErrorCode::RequestClosed),
    };
    Error::new(kind, code, r.to_string())
}

fn info(row: SupportGrantRow) -> SupportGrantInfo {
    SupportGrantInfo {
        id: row.id,
        requester: row.requester,
        scopes: row
            .scopes
            .split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect(),
        reason: row.reason,
        ticket: row.ticket,
        state: row.state,
        required_approvals: u32::try_from(row.required_approvals).unwrap_or(u32::MAX),
        duration_seconds: row.duration_seconds,
        decide_by: rfc3339(row.decide_by),
        created_at: rfc3339(row.created_at),
        starts_at: row.starts_at.map(rfc3339),
        ends_at: row.ends_at.map(rfc3339),
        decisions: row
            .decisions
            .into_iter()
            .map(|d| SupportDecisionInfo {
                approver: d.approver,
                verdict: d.verdict,
                comment: d.comment,
                at: rfc3339(d.decided_at),
            })
            .collect(),
        closed_by: row.closed_by,
        close_comment: row.close_comment,
    }
}

fn role_refused(who: &Principal) -> Error {
    Error::forbidden(format!("the {} role may not do this", who.role()))
}

fn not_found(id: &str) -> Error {
    Error::not_found(format!("support grant {id}")).with_field("id")
}

impl App {
    /// The grants `username` (a support user) may use now, as a principal carries them; also
    /// remembers (or forgets) on this node which grant its next audit entries name.
    pub(crate) async fn active_support_grants(
        &self,
        username: &str,
    ) -> Result<Vec<(String, Vec<Scope>)>> {
        let now = self.now().unix_timestamp();
        let rows = self.store.active_support_grants(username, now).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push((row.id.clone(), scopes_of(row)?));
        }
        if let Ok(mut acting) = self.support.acting.lock() {
            match rows.first() {
                Some(r) => {
                    acting.insert(
                        username.to_owned(),
                        (r.id.clone(), r.ends_at.unwrap_or(now)),
                    );
                }
                None => {
                    acting.remove(username);
                }
            }
        }
        Ok(out)
    }

    /// Audits a call of a support user under a grant (`support.call`, the method and what was
    /// called: `api:PATH` or `console:PATH`; never the query or body), before it is served: no
    /// record, no call.
    pub async fn record_support_call(
        &self,
        who: &Principal,
        method: &str,
        object: &str,
    ) -> Result<()> {
        let Some(grant) = who.support_grant() else {
            return Ok(());
        };
        let entry = NewAuditEntry::new(who.username(), "support.call", object)
            .detail("method", method)
            .detail("support_grant", grant);
        self.record(entry).await
    }

    /// Adds `details.support_grant` to an entry of a support user acting under a grant.
    pub(crate) fn tag_support_grant(&self, entry: NewAuditEntry) -> NewAuditEntry {
        let now = self.now().unix_timestamp();
        let grant = self.support.acting.lock().ok().and_then(|acting| {
            acting
                .get(&entry.actor)
                .filter(|(_, end)| now < *end)
                .map(|(id, _)| id.clone())
        });
        match grant {
            Some(id) if entry.details.get("support_grant").is_none() => {
                entry.detail("support_grant", id)
            }
            _ => entry,
        }
    }

    /// Queues the notice of a grant's step to every customer admin (email, and the webhook).
    async fn notify_support(
        &self,
        tx: &mut WriteTx,
        row: &SupportGrantRow,
        event: &str,
        actor: &str,
    ) -> Result<()> {
        let now = self.now().unix_timestamp();
        let subject = format!(
            "Support grant {} {}: {} ({}) for {}",
            row.id, event, row.requester, row.scopes, row.ticket
        );
        let window = match (row.starts_at, row.ends_at) {
            (Some(a), Some(b)) => format!("from {} to {}", rfc3339(a), rfc3339(b)),
            _ => format!("undecided by {} it expires", rfc3339(row.decide_by)),
        };
        let text = format!(
            "{subject}\n\nBy: {actor}\nReason: {}\nTicket: {}\nScopes: {}\nState: {} ({window})\n\nDecide with: cofre support approve|deny {}\nSee what was done: cofre support activity {}\n",
            row.reason, row.ticket, row.scopes, row.state, row.id, row.id
        );
        let body = serde_json::json!({
            "event": format!("support.{event}"),
            "actor": actor,
            "at": rfc3339(now),
            "support_grant": info(row.clone()),
        });
        self.queue_admin_notices(tx, &subject, &text, &body).await
    }

    /// Writes what time did: requests undecided by their deadline expire, grants past their end
    /// end. Each audited (by `system`) and notified.
    pub(crate) async fn expire_due_support_grants(&self) -> Result<usize> {
        let now = self.now().unix_timestamp();
        let due = self.store.due_support_grants(now).await?;
        let mut n = 0;
        for candidate in due {
            let mut tx = self.store.write().await?;
            let Some(mut row) = tx.support_grant(&candidate.id).await? else {
                continue;
            };
            let mut g = machine(&row)?;
            let from = row.state.clone();
            let effect = g
                .apply(&Event::Tick { at: now })
                .map_err(|e| refusal_error(&e))?;
            let event = match effect {
                Effect::Expired => "expired",
                Effect::Ended => "ended",
                _ => continue,
            };
            apply_to_row(&mut row, &g);
            row.closed_at = Some(now);
            row.closed_by = Some("system".into());
            if !tx.update_support_grant(&row, &from).await? {
                continue;
            }
            self.notify_support(&mut tx, &row, event, "system").await?;
            let entry = NewAuditEntry::new(
                "system",
                &format!("support.{event}"),
                format!("support:{}", row.id),
            )
            .detail("requester", row.requester.as_str())
            .detail("state", row.state.as_str());
            self.commit(tx, entry).await?;
            self.live
                .kill_by_request(&row.id, &format!("your support grant {} has ended", row.id));
            n += 1;
        }
        if n > 0 {
            self.notifier_wake();
        }
        Ok(n)
    }
}

impl Approvals<'_> {
    /// A support user asks for a grant; customer admins are told.
    pub async fn request_support(
        &self,
        who: &Principal,
        req: &SupportRequest,
    ) -> Result<SupportGrantInfo> {
        who.require(Action::OwnAccount)?;
        let now = self.now().unix_timestamp();
        let scopes = s::parse_scopes("scope", &req.scope)?;
        let duration = match req.duration.as_deref() {
            None => None,
            Some(d) => Some(cofre_core::when::parse_duration("duration", d)?),
        };
        let ask = s::Ask {
            scopes,
            reason: &req.reason,
            ticket: &req.ticket,
            duration,
        };
        let grant = match s::request(
            self.config.support.rule(),
            who.username(),
            who.role(),
            ask,
            now,
        ) {
            Ok(g) => g,
            Err(e) if e.field == "role" => {
                return Err(Error::forbidden(
                    "only a support user asks for a support grant",
                ))
            }
            Err(e) => return Err(e.into()),
        };
        let mut id = uuid::Uuid::new_v4().simple().to_string();
        id.truncate(12);
        let row = SupportGrantRow {
            id: id.clone(),
            requester: who.username().to_owned(),
            scopes: s::scopes_text(&grant.scopes),
            reason: req.reason.trim().to_owned(),
            ticket: req.ticket.trim().to_owned(),
            state: grant.state.as_str().to_owned(),
            required_approvals: i64::from(grant.required),
            duration_seconds: grant.duration,
            decide_by: grant.decide_by,
            created_at: now,
            starts_at: None,
            ends_at: None,
            closed_at: None,
            closed_by: None,
            close_comment: None,
            decisions: Vec::new(),
        };
        let mut tx = self.store.write().await?;
        tx.insert_support_grant(&row).await?;
        self.notify_support(&mut tx, &row, "requested", who.username())
            .await?;
        let entry = NewAuditEntry::new(who.username(), "support.request", format!("support:{id}"))
            .detail("scopes", row.scopes.as_str())
            .detail("reason", row.reason.as_str())
            .detail("ticket", row.ticket.as_str())
            .detail("duration_seconds", row.duration_seconds)
            .detail("required_approvals", row.required_approvals);
        self.commit(tx, entry).await?;
        self.notifier_wake();
        Ok(info(row))
    }

    /// A support user's own grants; a customer admin's (or auditor's) every grant.
    pub async fn list_support(
        &self,
        who: &Principal,
        pending: bool,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<SupportGrantInfo>> {
        who.require(Action::OwnAccount)?;
        let limit = page_limit(limit)?;
        self.expire_due_support_grants().await?;
        let requester = match who.role() {
            Role::Support => Some(who.username()),
            Role::Admin | Role::Auditor => None,
            _ => return Err(role_refused(who)),
        };
        let state = pending.then_some("pending");
        let rows = self
            .store
            .support_grant_page(requester, state, cursor, limit + 1)
            .await?;
        Ok(paginate(rows, limit, |r| r.id.clone(), info))
    }

    /// One grant: its requester, or a customer admin or auditor.
    pub async fn get_support(&self, who: &Principal, id: &str) -> Result<SupportGrantInfo> {
        let row = self.visible_grant(who, id).await?;
        Ok(info(row))
    }

    async fn visible_grant(&self, who: &Principal, id: &str) -> Result<SupportGrantRow> {
        who.require(Action::OwnAccount)?;
        if !matches!(who.role(), Role::Support | Role::Admin | Role::Auditor) {
            return Err(role_refused(who));
        }
        let row = self
            .store
            .support_grant(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        if who.role() == Role::Support && row.requester != who.username() {
            // Another vendor's grant is not this one's business, nor is its existence.
            return Err(not_found(id));
        }
        Ok(row)
    }

    /// A customer admin approves or denies; the vendor never does, nor the requester.
    pub async fn decide_support(
        &self,
        who: &Principal,
        id: &str,
        approve: bool,
        comment: Option<&str>,
    ) -> Result<SupportGrantInfo> {
        who.require(Action::OwnAccount)?;
        let verdict = if approve { "approve" } else { "deny" };
        let comment = comment.unwrap_or("").trim();
        cofre_core::names::check_text("comment", comment, 500)?;
        if !approve && comment.chars().count() < 3 {
            return Err(Error::invalid(
                "comment",
                "comment: say why the request is denied (at least 3 characters)",
            ));
        }
        if who.role() != Role::Admin {
            // The vendor (operator, support) never decides: refused and audited before the
            // request is even looked at.
            self.record(
                NewAuditEntry::new(who.username(), "support.decide", format!("support:{id}"))
                    .outcome("denied")
                    .detail("verdict", verdict)
                    .detail("why", Refusal::NotCustomerAdmin.to_string()),
            )
            .await?;
            return Err(refusal_error(&Refusal::NotCustomerAdmin));
        }
        self.expire_due_support_grants().await?;
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        let mut row = tx.support_grant(id).await?.ok_or_else(|| not_found(id))?;
        let mut g = machine(&row)?;
        let event = if approve {
            Event::Approve {
                who: who.username(),
                role: who.role(),
                at: now,
            }
        } else {
            Event::Deny {
                who: who.username(),
                role: who.role(),
                at: now,
            }
        };
        let effect = match g.apply(&event) {
            Ok(e) => e,
            Err(refusal) => {
                drop(tx);
                self.record(
                    NewAuditEntry::new(who.username(), "support.decide", format!("support:{id}"))
                        .outcome("denied")
                        .detail("verdict", verdict)
                        .detail("why", refusal.to_string()),
                )
                .await?;
                return Err(refusal_error(&refusal));
            }
        };
        tx.insert_support_decision(
            id,
            &SupportDecision {
                approver: who.username().to_owned(),
                verdict: verdict.into(),
                comment: comment.to_owned(),
                decided_at: now,
            },
        )
        .await?;
        let from = row.state.clone();
        apply_to_row(&mut row, &g);
        if g.state.is_closed() {
            row.closed_at = Some(now);
            row.closed_by = Some(who.username().to_owned());
            row.close_comment = Some(comment.to_owned());
        }
        if row.state != from && !tx.update_support_grant(&row, &from).await? {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::Conflict,
                "the support request changed meanwhile; look again",
            ));
        }
        match effect {
            Effect::Approved => {
                self.notify_support(&mut tx, &row, "approved", who.username())
                    .await?
            }
            Effect::Denied => {
                self.notify_support(&mut tx, &row, "denied", who.username())
                    .await?
            }
            _ => {}
        }
        let mut entry =
            NewAuditEntry::new(who.username(), "support.decide", format!("support:{id}"))
                .detail("verdict", verdict)
                .detail("state", row.state.as_str())
                .detail("requester", row.requester.as_str());
        if !comment.is_empty() {
            entry = entry.detail("comment", comment);
        }
        self.commit(tx, entry).await?;
        self.notifier_wake();
        self.get_support(who, id).await
    }

    /// Ends a pending request or a running grant now: a customer admin, or its holder.
    pub async fn revoke_support(&self, who: &Principal, id: &str) -> Result<SupportGrantInfo> {
        who.require(Action::OwnAccount)?;
        if !matches!(who.role(), Role::Support | Role::Admin) {
            return Err(role_refused(who));
        }
        self.expire_due_support_grants().await?;
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        let mut row = tx.support_grant(id).await?.ok_or_else(|| not_found(id))?;
        if who.role() == Role::Support && row.requester != who.username() {
            return Err(not_found(id));
        }
        let mut g = machine(&row)?;
        if let Err(refusal) = g.apply(&Event::Revoke {
            who: who.username(),
            role: who.role(),
        }) {
            drop(tx);
            self.record(
                NewAuditEntry::new(who.username(), "support.revoke", format!("support:{id}"))
                    .outcome("denied")
                    .detail("why", refusal.to_string()),
            )
            .await?;
            return Err(refusal_error(&refusal));
        }
        let from = row.state.clone();
        apply_to_row(&mut row, &g);
        row.closed_at = Some(now);
        row.closed_by = Some(who.username().to_owned());
        if !tx.update_support_grant(&row, &from).await? {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::Conflict,
                "the support grant changed meanwhile; look again",
            ));
        }
        self.notify_support(&mut tx, &row, "revoked", who.username())
            .await?;
        let entry = NewAuditEntry::new(who.username(), "support.revoke", format!("support:{id}"))
            .detail("requester", row.requester.as_str());
        self.commit(tx, entry).await?;
        // A `host` session under the grant ends with it (on this node, like `session kill`).
        self.live.kill_by_request(
            id,
            &format!("support grant {id} was revoked by {}", who.username()),
        );
        if let Ok(mut acting) = self.support.acting.lock() {
            if acting.get(&row.requester).is_some_and(|(g, _)| g == id) {
                acting.remove(&row.requester);
            }
        }
        self.notifier_wake();
        Ok(info(row))
    }

    /// Every audit entry made under the grant, oldest first: for its requester, a customer
    /// admin or an auditor.
    pub async fn support_activity(
        &self,
        who: &Principal,
        id: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<AuditEntryInfo>> {
        let row = self.visible_grant(who, id).await?;
        let limit = page_limit(limit)?;
        let mut after = match cursor {
            None => 0,
            Some(c) => c
                .parse()
                .map_err(|_| Error::invalid("cursor", "cursor: not a cursor from this list"))?,
        };
        // The requester's entries, filtered to this grant's: scan in batches until a page fills.
        let mut found = Vec::new();
        loop {
            let batch = self
                .store
                .audit_page_by_actor(&row.requester, after, 1000)
                .await?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            let full = batch.len() < 1000;
            found.extend(
                batch.into_iter().filter(|r| {
                    r.details.get("support_grant").and_then(|v| v.as_str()) == Some(id)
                }),
            );
            if full || i64::try_from(found.len()).unwrap_or(i64::MAX) > limit {
                break;
            }
        }
        Ok(paginate(
            found,
            limit,
            |r| r.seq.to_string(),
            |r| AuditEntryInfo {
                seq: r.seq,
                ts: r.ts,
                actor: r.actor,
                action: r.action,
                object: r.object,
                outcome: r.outcome,
                details: r.details,
                prev_hash: r.prev_hash,
                hash: r.hash,
            },
        ))
    }
}

/// Closes expired requests and ended grants every `[support] tick_seconds`, so that the
/// customer's admins hear of the end when it happens (the refusal itself needs no tick: a
/// principal only carries grants active when it authenticated).
pub fn start(app: &std::sync::Arc<App>) {
    let weak = std::sync::Arc::downgrade(app);
    let tick = std::time::Duration::from_secs(app.config.support.tick_seconds);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(tick).await;
            let Some(app) = weak.upgrade() else { return };
            if !app.is_sealed() {
                if let Err(e) = app.expire_due_support_grants().await {
                    tracing::warn!(error = %e, "closing support grants failed; retrying");
                }
            }
        }
    });
}
