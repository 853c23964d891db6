//! Access requests and grants: the core's approval machine (`cofre_core::approval`) driven by the
//! store, the clock and the users' groups; policy checks that consult grants (reveal and gateway
//! sessions both come through [`Approvals::authorise_use`]); notifications queued with each change.
//!
//! Every change reads the request inside its write transaction, after the audit head's lock is
//! taken, so concurrent decisions (and a decision racing the expiry sweep) are serialised on SQLite
//! and PostgreSQL alike: the second one sees the first one's result.

use super::invites::Invited;
use super::Approvals;
use super::{page_limit, paginate, App, Principal};
use crate::error::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use cofre_core::approval::{self, Effect, Event, Refusal, Request, State, Verdict, Vote};
use cofre_core::audit::NewAuditEntry;
use cofre_core::names::{check_account, check_identifier, check_text};
use cofre_core::policy::{
    parse_duration, rule, Access, Outcome, Ruling, TargetRef, Terms, MAX_GRANT_SECONDS,
};
use cofre_core::role::{role_may, Action, Role};
use cofre_proto::requests::{
    CreateAccessRequest, DecisionInfo, LevelInfo, RequestInfo, RequestListQuery, ReviewInfo,
};
use cofre_proto::{InviteRequest, Page};
use cofre_store::requests::{DecisionRow, RequestFilter, RequestRow};
use cofre_store::WriteTx;
use time::OffsetDateTime;

/// How far ahead a request may start.
const MAX_START_AHEAD_SECONDS: i64 = 30 * 24 * 3600;
/// The window is checked against policies' hours and days at this step (and at its last second).
const WINDOW_CHECK_STEP: i64 = 15 * 60;

/// Why a use of a credential was refused (the caller audits it in its own words).
#[derive(Debug)]
pub(crate) enum UseRefused {
    NoPolicy,
    Outside { policy: String, why: String },
    ApprovalRequired { policy: String },
}

impl UseRefused {
    pub(crate) fn audit_why(&self, access: Access) -> String {
        match self {
            UseRefused::NoPolicy => format!("no policy grants {}", access.as_str()),
            UseRefused::Outside { policy, why } => format!("outside policy {policy}: {why}"),
            UseRefused::ApprovalRequired { .. } => "approval required".into(),
        }
    }

    pub(crate) fn policy(&self) -> Option<&str> {
        match self {
            UseRefused::NoPolicy => None,
            UseRefused::Outside { policy, .. } | UseRefused::ApprovalRequired { policy } => {
                Some(policy)
            }
        }
    }

    pub(crate) fn error(&self, target: &str, account: &str, access: Access) -> Error {
        let what = match access {
            Access::Session => "sessions",
            Access::Reveal => "reveal",
            Access::Invite => "invitations",
        };
        match self {
            UseRefused::NoPolicy => Error::new(
                ErrorKind::Forbidden,
                ErrorCode::PolicyDenied,
                format!("no policy grants you {what} on {target}"),
            ),
            UseRefused::Outside { policy, why } => Error::new(
                ErrorKind::Forbidden,
                ErrorCode::OutsidePolicyHours,
                format!("policy {policy} does not grant {what} on {target} now: {why}"),
            ),
            UseRefused::ApprovalRequired { policy } => Error::new(
                ErrorKind::Forbidden,
                ErrorCode::ApprovalRequired,
                format!(
                    "policy {policy} requires an approved access request for {target}: \
                     cofre request create --target {target} --account {account} --reason \"...\""
                ),
            ),
        }
    }
}

/// A use of a credential that policy (and, for `approve`, a grant) allows.
#[derive(Debug)]
pub(crate) struct UseAllowed {
    pub policy: String,
    pub outcome: Outcome,
    /// A moderator must watch (any matching policy is `--moderated`).
    pub moderated: bool,
    /// The grant it comes through, for `approve`.
    pub grant: Option<RequestRow>,
}

fn human_duration(secs: i64) -> String {
    let (h, m) = (secs / 3600, (secs % 3600) / 60);
    match (h, m) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

fn check_max_duration(terms: &Terms, duration: i64) -> Result<()> {
    match terms.max_duration_minutes {
        Some(max) if duration > i64::from(max) * 60 => Err(Error::invalid(
            "duration",
            format!(
                "duration: policy {} allows at most {}",
                terms.policy,
                human_duration(i64::from(max) * 60)
            ),
        )),
        _ => Ok(()),
    }
}

use super::rfc3339;

fn refusal_error(r: &Refusal) -> Error {
    let (kind, code) = match r {
        Refusal::NotPending(_) | Refusal::Expired => {
            (ErrorKind::Conflict, ErrorCode::RequestClosed)
        }
        Refusal::OwnRequest => (ErrorKind::Forbidden, ErrorCode::OwnRequest),
        Refusal::AlreadyDecided => (ErrorKind::Conflict, ErrorCode::AlreadyDecided),
        Refusal::NotInGroup { .. } => (ErrorKind::Forbidden, ErrorCode::NotAnApproverHere),
        Refusal::NotRequester => (ErrorKind::Forbidden, ErrorCode::NotRequester),
        Refusal::NotApproved(_) => (ErrorKind::Conflict, ErrorCode::NotAGrant),
    };
    Error::new(kind, code, r.to_string())
}

/// The stored row as the core's machine.
fn machine(row: &RequestRow) -> Result<Request> {
    let levels = approval::parse_levels("levels", &row.levels)
        .map_err(|e| Error::internal("reading a request", e))?;
    let state = State::parse(&row.state)
        .ok_or_else(|| Error::internal("reading a request", "unknown state"))?;
    let votes = row
        .decisions
        .iter()
        .map(|d| Vote {
            approver: d.approver.clone(),
            level: usize::try_from(d.level).unwrap_or(usize::MAX),
            verdict: Verdict::parse(&d.verdict).unwrap_or(Verdict::Deny),
            at: d.decided_at,
            comment: d.comment.clone(),
        })
        .collect();
    Ok(Request {
        requester: row.requester.clone(),
        levels,
        state,
        level: usize::try_from(row.level).unwrap_or(0),
        votes,
        decide_by: row.decide_by,
        window: (row.starts_at, row.ends_at),
        emergency: row.emergency,
        revoked_by: row.revoked_by.clone(),
    })
}

impl App {
    /// The wall-clock time in the instance's zone (`[instance] time_zone`), which policies'
    /// windows are read in.
    fn local_time(&self, unix: i64) -> time::PrimitiveDateTime {
        self.config.instance.time_zone.local(unix)
    }

    fn request_link(&self, id: &str) -> String {
        let base = self
            .config
            .notify
            .public_url
            .clone()
            .unwrap_or_else(|| format!("https://{}", self.config.listen));
        format!("{}/api/v1/requests/{id}", base.trim_end_matches('/'))
    }
}

impl Approvals<'_> {
    pub(crate) fn request_info(&self, row: &RequestRow) -> RequestInfo {
        let now = self.now().unix_timestamp();
        let m = machine(row).ok();
        let levels = approval::parse_levels("levels", &row.levels)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, l)| LevelInfo {
                approvals: m.as_ref().map_or(0, |m| m.approvals_at(i)),
                group: l.group,
                required: l.required,
            })
            .collect();
        RequestInfo {
            id: row.id.clone(),
            requester: row.requester.clone(),
            target: row.target.clone(),
            account: row.account.clone(),
            access: row.access.clone(),
            reason: row.reason.clone(),
            policy: row.policy.clone(),
            state: row.state.clone(),
            waiting_on_level: (row.state == "pending")
                .then(|| u32::try_from(row.level + 1).unwrap_or(0)),
            levels,
            decisions: row
                .decisions
                .iter()
                .map(|d| DecisionInfo {
                    approver: d.approver.clone(),
                    level: u32::try_from(d.level + 1).unwrap_or(0),
                    verdict: d.verdict.clone(),
                    comment: d.comment.clone(),
                    at: rfc3339(d.decided_at),
                })
                .collect(),
            emergency: row.emergency,
            review_pending: row.emergency && row.reviewed_by.is_none(),
            review: row.reviewed_by.as_ref().map(|by| ReviewInfo {
                by: by.clone(),
                at: rfc3339(row.reviewed_at.unwrap_or(0)),
                comment: row.review_comment.clone().unwrap_or_default(),
            }),
            created_at: rfc3339(row.created_at),
            decide_by: rfc3339(row.decide_by),
            starts_at: rfc3339(row.starts_at),
            ends_at: rfc3339(row.ends_at),
            grant_active: m.as_ref().is_some_and(|m| m.grant_active(now)),
            closed_at: row.closed_at.map(rfc3339),
            revoked_by: row.revoked_by.clone(),
            revoke_reason: row.revoke_reason.clone(),
            invitation: row
                .invitation
                .as_deref()
                .and_then(|j| serde_json::from_str::<StoredInvitation>(j).ok())
                .map(|s| s.invite),
            link: self.request_link(&row.id),
        }
    }
}

impl App {
    /// What the caller's policies say about one access to one target at one moment.
    async fn terms_at(
        &self,
        who: &Principal,
        target: &str,
        tags: &[String],
        access: Access,
        at: i64,
    ) -> Result<Ruling> {
        let policies = self.vault().policies_of_groups(&who.groups).await?;
        Ok(rule(
            &policies,
            &who.groups,
            &TargetRef { name: target, tags },
            access,
            self.local_time(at),
            who.source(),
        ))
    }
}

impl Approvals<'_> {
    /// The one check before a secret is revealed or a session opened: policy at this moment, and
    /// for `approve` an approved request whose window is open now.
    pub(crate) async fn authorise_use(
        &self,
        who: &Principal,
        target: &str,
        tags: &[String],
        account: &str,
        access: Access,
    ) -> Result<std::result::Result<UseAllowed, UseRefused>> {
        let now = self.now().unix_timestamp();
        let terms = match self.terms_at(who, target, tags, access, now).await? {
            Ruling::Deny => return Ok(Err(UseRefused::NoPolicy)),
            Ruling::Outside { policy, why } => return Ok(Err(UseRefused::Outside { policy, why })),
            Ruling::Granted(t) => t,
        };
        if terms.outcome != Outcome::Approve {
            return Ok(Ok(UseAllowed {
                policy: terms.policy,
                outcome: terms.outcome,
                moderated: terms.moderated,
                grant: None,
            }));
        }
        let grant = self
            .store
            .grants_in_force(&who.username, target, account, now)
            .await?
            .into_iter()
            .find(|g| g.access.iter().any(|a| a == access.as_str()));
        Ok(match grant {
            Some(g) => Ok(UseAllowed {
                policy: terms.policy,
                outcome: terms.outcome,
                moderated: terms.moderated,
                grant: Some(g),
            }),
            None => Err(UseRefused::ApprovalRequired {
                policy: terms.policy,
            }),
        })
    }
}

impl App {
    /// The combined terms for every requested access, or why a request cannot be made.
    async fn request_terms(
        &self,
        who: &Principal,
        target: &str,
        tags: &[String],
        access: &[Access],
        window: (i64, i64),
    ) -> Result<Terms> {
        let mut combined: Option<Terms> = None;
        for &a in access {
            // Every point of the window must be inside every matching policy's days and hours.
            let mut at = window.0;
            let mut terms: Terms;
            loop {
                match self.terms_at(who, target, tags, a, at).await? {
                    Ruling::Deny => {
                        return Err(Error::new(
                            ErrorKind::Forbidden,
                            ErrorCode::PolicyDenied,
                            format!("no policy grants you {} on {target}", a.as_str()),
                        ))
                    }
                    Ruling::Outside { policy, why } => {
                        return Err(Error::invalid(
                            "start",
                            format!(
                                "the window {} to {} is not inside policy {policy}'s limits: {why}",
                                rfc3339(window.0),
                                rfc3339(window.1),
                            ),
                        ))
                    }
                    Ruling::Granted(t) => terms = t,
                }
                if at >= window.1 - 1 {
                    break;
                }
                at = (at + WINDOW_CHECK_STEP).min(window.1 - 1);
            }
            let t = terms;
            if t.outcome != Outcome::Approve {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    ErrorCode::NoApprovalNeeded,
                    format!(
                        "policy {} grants {} on {target} without approval ({}): no request needed",
                        t.policy,
                        a.as_str(),
                        t.outcome.as_str()
                    ),
                ));
            }
            combined = Some(match combined {
                None => t,
                Some(c) => {
                    let asks = |t: &Terms| t.levels.iter().map(|l| l.required).sum::<u32>();
                    let levels = if asks(&t) > asks(&c) {
                        t.levels
                    } else {
                        c.levels
                    };
                    Terms {
                        outcome: Outcome::Approve,
                        policy: c.policy,
                        levels,
                        max_duration_minutes: match (c.max_duration_minutes, t.max_duration_minutes)
                        {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        },
                        emergency: c.emergency && t.emergency,
                        moderated: c.moderated || t.moderated,
                    }
                }
            });
        }
        let terms = combined
            .ok_or_else(|| Error::invalid("access", "access: at least one of session, reveal"))?;
        if terms.levels.is_empty() {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::PolicyWithoutLevels,
                format!(
                    "policy {} asks for approval but names no approval levels; an admin must recreate it with --levels",
                    terms.policy
                ),
            ));
        }
        Ok(terms)
    }

    fn requested_access(&self, access: Option<&Vec<String>>) -> Result<Vec<Access>> {
        let names: Vec<String> = match access {
            Some(a) if !a.is_empty() => a.clone(),
            Some(_) => {
                return Err(Error::invalid(
                    "access",
                    "access: at least one of session, reveal",
                ))
            }
            None => vec!["session".into(), "reveal".into()],
        };
        let mut out = Vec::new();
        for n in names {
            let a = Access::parse(&n)
                .filter(|a| *a != Access::Invite)
                .ok_or_else(|| {
                    Error::invalid(
                        "access",
                        format!(
                            "access: {n:?} is not one of session, reveal (an invitation is asked \
                             for with `cofre invite create`)"
                        ),
                    )
                })?;
            if !out.contains(&a) {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// The accesses a request asks for: as named, or by default whatever policy puts under
    /// approval at `at` (none: `session`, and `request_terms` then says why no request is needed).
    async fn access_of(
        &self,
        who: &Principal,
        req: &CreateAccessRequest,
        tags: &[String],
        at: i64,
    ) -> Result<Vec<Access>> {
        if req.access.is_some() {
            return self.requested_access(req.access.as_ref());
        }
        let a = self.approval_access(who, &req.target, tags, at).await?;
        Ok(if a.is_empty() {
            vec![Access::Session]
        } else {
            a
        })
    }

    /// Which of `access` the caller's policies put under approval (for the default `access`).
    async fn approval_access(
        &self,
        who: &Principal,
        target: &str,
        tags: &[String],
        at: i64,
    ) -> Result<Vec<Access>> {
        let mut out = Vec::new();
        for a in [Access::Session, Access::Reveal] {
            if let Ruling::Granted(t) = self.terms_at(who, target, tags, a, at).await? {
                if t.outcome == Outcome::Approve {
                    out.push(a);
                }
            }
        }
        Ok(out)
    }

    /// Validates the common fields of a request and returns the target's tags.
    async fn request_subject(
        &self,
        target: &str,
        account: &str,
        reason: &str,
    ) -> Result<Vec<String>> {
        check_identifier("target", target)?;
        check_account("account", account)?;
        check_text("reason", reason, 500)?;
        if reason.trim().chars().count() < 3 {
            return Err(Error::invalid(
                "reason",
                "reason: at least 3 characters, e.g. a ticket number",
            ));
        }
        let t = self
            .store
            .target_by_name(target)
            .await?
            .ok_or_else(|| Error::not_found(format!("target {target}")).with_field("target"))?;
        if self.store.credential(target, account).await?.is_none() {
            return Err(
                Error::not_found(format!("credential {target}/{account}")).with_field("account")
            );
        }
        Ok(t.tags)
    }
}

impl Approvals<'_> {
    pub async fn create_request(
        &self,
        who: &Principal,
        req: &CreateAccessRequest,
    ) -> Result<RequestInfo> {
        who.require(Action::UseCredentials)?;
        let tags = self
            .request_subject(&req.target, &req.account, &req.reason)
            .await?;
        let now = self.now().unix_timestamp();
        let start = match req.start.as_deref().map(str::trim) {
            None | Some("") | Some("now") => now,
            Some(s) => {
                let t = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        Error::invalid(
                            "start",
                            format!("start: {s:?} is neither `now` nor an RFC 3339 time"),
                        )
                    })?
                    .unix_timestamp();
                if t < now - 60 {
                    return Err(Error::invalid("start", "start: lies in the past"));
                }
                if t > now + MAX_START_AHEAD_SECONDS {
                    return Err(Error::invalid("start", "start: at most 30 days ahead"));
                }
                t.max(now)
            }
        };
        let duration = self.requested_duration(req)?;
        if duration > MAX_GRANT_SECONDS {
            return Err(Error::invalid("duration", "duration: at most 7d"));
        }
        let access = self.access_of(who, req, &tags, start).await?;
        let window = (start, start + duration);
        let terms = self
            .request_terms(who, &req.target, &tags, &access, window)
            .await?;
        check_max_duration(&terms, duration)?;
        let timeout = i64::try_from(self.config.approvals.request_timeout_seconds).unwrap_or(3600);
        let machine = Request::pending(&who.username, terms.levels.clone(), now + timeout, window);
        let row = self.new_request_row(who, req, &access, &terms, &machine, now);
        let entry = request_created_entry(&who.username, &row);
        self.insert_request(who, &row, "request.created", entry)
            .await?;
        self.notifier_wake();
        Ok(self.request_info(&row))
    }
}

impl App {
    /// The requested grant length, or the configured default.
    fn requested_duration(&self, req: &CreateAccessRequest) -> Result<i64> {
        Ok(match &req.duration {
            Some(d) => parse_duration("duration", d)?,
            None => i64::from(self.config.approvals.default_duration_minutes) * 60,
        })
    }

    /// Stores a new request with its notices and audit entry, in one transaction.
    async fn insert_request(
        &self,
        who: &Principal,
        row: &RequestRow,
        event: &str,
        entry: NewAuditEntry,
    ) -> Result<()> {
        let mut tx = self.store.write().await?;
        tx.insert_request(row).await?;
        self.queue_notices(&mut tx, row, event, &who.username)
            .await?;
        self.commit(tx, entry).await
    }

    fn new_request_row(
        &self,
        who: &Principal,
        req: &CreateAccessRequest,
        access: &[Access],
        terms: &Terms,
        m: &Request,
        now: i64,
    ) -> RequestRow {
        let mut id = uuid::Uuid::new_v4().simple().to_string();
        id.truncate(12);
        RequestRow {
            id,
            requester: who.username.clone(),
            target: req.target.clone(),
            account: req.account.clone(),
            access: access.iter().map(|a| a.as_str().to_owned()).collect(),
            reason: req.reason.trim().to_owned(),
            policy: terms.policy.clone(),
            levels: approval::levels_text(&m.levels),
            state: m.state.as_str().to_owned(),
            level: 0,
            emergency: m.emergency,
            created_at: now,
            decide_by: m.decide_by,
            starts_at: m.window.0,
            ends_at: m.window.1,
            closed_at: (m.state != State::Pending).then_some(now),
            revoked_by: None,
            revoke_reason: None,
            reviewed_by: None,
            reviewed_at: None,
            review_comment: None,
            invitation: None,
            decisions: Vec::new(),
        }
    }
}

impl Approvals<'_> {
    /// Emergency access: only where every matching policy allows it; no approval, every approver
    /// told at once, flagged for review afterwards.
    pub async fn create_emergency_request(
        &self,
        who: &Principal,
        req: &CreateAccessRequest,
    ) -> Result<RequestInfo> {
        who.require(Action::UseCredentials)?;
        if req.start.as_deref().is_some_and(|s| s.trim() != "now") {
            return Err(Error::invalid(
                "start",
                "start: emergency access starts now",
            ));
        }
        let tags = self
            .request_subject(&req.target, &req.account, &req.reason)
            .await?;
        let now = self.now().unix_timestamp();
        let access = self.access_of(who, req, &tags, now).await?;
        let duration = self.requested_duration(req)?;
        let window = (now, now + duration.min(MAX_GRANT_SECONDS));
        let terms = self
            .request_terms(who, &req.target, &tags, &access, window)
            .await?;
        let object = format!("credential:{}/{}", req.target, req.account);
        if !terms.emergency {
            self.record(
                NewAuditEntry::new(&who.username, "request.emergency", &*object)
                    .outcome("denied")
                    .detail("why", "policy does not allow emergency access")
                    .detail("policy", terms.policy.as_str()),
            )
            .await?;
            return Err(Error::new(
                ErrorKind::Forbidden,
                ErrorCode::EmergencyNotAllowed,
                format!(
                    "policy {} does not allow emergency access to {}: ask for approval with `cofre request create`",
                    terms.policy, req.target
                ),
            ));
        }
        check_max_duration(&terms, duration)?;
        let machine = Request::emergency(&who.username, terms.levels.clone(), now, window);
        let row = self.new_request_row(who, req, &access, &terms, &machine, now);
        let entry = NewAuditEntry::new(
            &who.username,
            "request.emergency",
            format!("request:{}", row.id),
        )
        .detail("target", row.target.as_str())
        .detail("account", row.account.as_str())
        .detail("access", row.access.clone())
        .detail("reason", row.reason.as_str())
        .detail("policy", row.policy.as_str())
        .detail("ends_at", rfc3339(row.ends_at))
        .detail("review", "pending");
        self.insert_request(who, &row, "request.emergency", entry)
            .await?;
        metrics::counter!("cofre_emergency_access_total").increment(1);
        self.notifier_wake();
        Ok(self.request_info(&row))
    }
}

impl App {
    /// Whether the caller may see this request: its requester, an admin or auditor, or a member
    /// of one of its approval groups who may decide requests.
    fn may_see_request(&self, who: &Principal, row: &RequestRow) -> bool {
        if row.requester == who.username
            || role_may(who.mode, who.role, Action::ManageGrants)
            || who.role == Role::Auditor
        {
            return true;
        }
        role_may(who.mode, who.role, Action::DecideRequests)
            && approval::parse_levels("levels", &row.levels)
                .unwrap_or_default()
                .iter()
                .any(|l| who.groups.contains(&l.group))
    }

    async fn visible_request(&self, who: &Principal, id: &str) -> Result<RequestRow> {
        check_text("id", id, 64)?;
        match self.store.request(id).await? {
            Some(r) if self.may_see_request(who, &r) => Ok(r),
            // Someone else's request is "not found", so ids cannot be probed.
            _ => Err(Error::not_found(format!("request {id}"))),
        }
    }
}

impl Approvals<'_> {
    pub async fn get_request(&self, who: &Principal, id: &str) -> Result<RequestInfo> {
        who.require(Action::OwnAccount)?;
        let row = self.visible_request(who, id).await?;
        Ok(self.request_info(&row))
    }

    pub async fn list_requests(
        &self,
        who: &Principal,
        q: &RequestListQuery,
        grants_only: bool,
    ) -> Result<Page<RequestInfo>> {
        who.require(Action::OwnAccount)?;
        let limit = page_limit(q.limit)?;
        let all = q.all.unwrap_or(false);
        if all && !(role_may(who.mode, who.role, Action::ManageGrants) || who.role == Role::Auditor)
        {
            return Err(Error::forbidden(format!(
                "the {} role may not list everyone's requests",
                who.role
            ))
            .with_field("all"));
        }
        let pending = q.pending.unwrap_or(false);
        let now = self.now().unix_timestamp();
        let filter = RequestFilter {
            requester: (!all && !pending).then(|| who.username.clone()),
            states: if pending {
                vec!["pending".into()]
            } else {
                Vec::new()
            },
            grants_at: grants_only.then_some(now),
        };
        let before = match q.cursor.as_deref() {
            None => None,
            Some(c) => {
                let (at, id) = c
                    .split_once('|')
                    .and_then(|(a, id)| Some((a.parse::<i64>().ok()?, id)))
                    .ok_or_else(|| {
                        Error::invalid("cursor", "cursor: not a cursor from this list")
                    })?;
                Some((at, id))
            }
        };
        let rows = self.store.requests_page(&filter, before, limit + 1).await?;
        // The cursor follows the rows read, so a page may hold fewer items than the limit.
        let page = paginate(rows, limit, |r| format!("{}|{}", r.created_at, r.id), |r| r);
        let items = page
            .items
            .iter()
            .filter(|r| {
                if pending {
                    // Waiting on the caller: its level's group, not its own, not yet decided.
                    machine(r).is_ok_and(|m| {
                        m.decide_by > now
                            && m.waiting_on()
                                .is_some_and(|l| who.groups.contains(&l.group))
                            && m.requester != who.username
                            && !m.votes.iter().any(|v| v.approver == who.username)
                            && (all || role_may(who.mode, who.role, Action::DecideRequests))
                    })
                } else {
                    self.may_see_request(who, r)
                }
            })
            .map(|r| self.request_info(r))
            .collect();
        Ok(Page {
            items,
            next_cursor: page.next_cursor,
        })
    }
}

impl App {
    /// Applies one event to a request inside a write transaction and persists what changed.
    async fn apply_event(
        &self,
        tx: &mut WriteTx,
        row: &RequestRow,
        event: &Event<'_>,
        now: i64,
    ) -> Result<std::result::Result<(Effect, RequestRow), Refusal>> {
        let mut m = machine(row)?;
        let votes_before = m.votes.len();
        let effect = match m.apply(event) {
            Ok(e) => e,
            Err(r) => return Ok(Err(r)),
        };
        let mut next = row.clone();
        for v in &m.votes[votes_before..] {
            let d = DecisionRow {
                approver: v.approver.clone(),
                level: i64::try_from(v.level).unwrap_or(0),
                verdict: v.verdict.as_str().to_owned(),
                comment: v.comment.clone(),
                decided_at: v.at,
            };
            tx.insert_decision(&row.id, &d).await?;
            next.decisions.push(d);
        }
        next.state = m.state.as_str().to_owned();
        next.level = i64::try_from(m.level).unwrap_or(0);
        if next.state != row.state || next.level != row.level {
            if next.state != row.state {
                next.closed_at = Some(now);
            }
            let revoke_reason = match event {
                Event::Revoke { .. } => next.revoke_reason.clone(),
                _ => None,
            };
            next.revoked_by = m.revoked_by.clone();
            tx.update_request_state(
                &row.id,
                &row.state,
                &next.state,
                next.level,
                next.closed_at,
                m.revoked_by.as_deref(),
                revoke_reason.as_deref(),
            )
            .await?;
        }
        Ok(Ok((effect, next)))
    }

    /// Expires the request if its deadline passed; returns whether it did (and committed that).
    async fn expire_if_due(&self, id: &str) -> Result<bool> {
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        let Some(row) = tx.request(id).await? else {
            return Ok(false);
        };
        match self
            .apply_event(&mut tx, &row, &Event::Tick { at: now }, now)
            .await?
        {
            Ok((Effect::Expired, next)) => {
                self.queue_notices(&mut tx, &next, "request.expired", "system")
                    .await?;
                self.commit(
                    tx,
                    NewAuditEntry::new("system", "request.expire", format!("request:{id}"))
                        .detail("requester", next.requester.as_str()),
                )
                .await?;
                self.notifier_wake();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

impl Approvals<'_> {
    /// Expires every pending request past its deadline (the sweeper calls this every second).
    pub async fn expire_due_requests(&self) -> Result<usize> {
        let now = self.now().unix_timestamp();
        let mut n = 0;
        for id in self.store.requests_due_to_expire(now).await? {
            if self.expire_if_due(&id).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    pub async fn decide_request(
        &self,
        who: &Principal,
        id: &str,
        verdict: Verdict,
        comment: Option<&str>,
    ) -> Result<RequestInfo> {
        who.require(Action::DecideRequests)?;
        let comment = comment.unwrap_or("").trim();
        check_text("comment", comment, 500)?;
        if verdict == Verdict::Deny && comment.chars().count() < 3 {
            return Err(Error::invalid(
                "comment",
                "comment: say why the request is denied (at least 3 characters)",
            ));
        }
        // Not visible is not found; visible but closed or not one's level is a clear refusal.
        let seen = self.visible_request(who, id).await?;
        // An invitation asked for by policy is checked again now (its `from` left out starts
        // at the approval), with its requester's policies as they are now, and kept in the
        // transaction that approves it, if this vote does.
        let invitation = match (&seen.invitation, verdict) {
            (Some(json), Verdict::Approve) => {
                let stored: StoredInvitation = serde_json::from_str(json)
                    .map_err(|e| Error::internal("reading an invitation request", e))?;
                let draft = self.draft_invitation(&stored.invite).await?;
                let enabled = self
                    .store
                    .user_by_name(&seen.requester)
                    .await?
                    .is_some_and(|u| u.disabled_at.is_none());
                if !enabled {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        ErrorCode::Conflict,
                        format!(
                            "{} is disabled or gone: the invitation it asked for is not kept \
                             (deny the request)",
                            seen.requester
                        ),
                    ));
                }
                let mut inviter = self.sessions().principal_for_name(&seen.requester).await?;
                if let Some(ip) = stored.source {
                    inviter = inviter.with_source(ip);
                }
                self.invitation_terms(&inviter, &draft)
                    .await
                    .map_err(|e| Error {
                        message: format!(
                            "the invitation {} asked for no longer holds: {}",
                            seen.requester, e.message
                        ),
                        ..e
                    })?;
                Some(draft)
            }
            _ => None,
        };
        self.expire_if_due(id).await?;
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        let row = tx
            .request(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("request {id}")))?;
        if verdict == Verdict::Approve
            && row.requester != who.username
            && !self
                .approver_counts(&mut tx, who.user_id, &row.requester)
                .await?
        {
            // An approver the requester made (or changed) recently is the requester's creature:
            // it does not count, so an admin cannot approve its own request through new accounts.
            drop(tx);
            let why = format!(
                "{} created or changed your account in the last {} days: you do not count on their requests yet",
                row.requester, self.config.governance.cooling_off_days
            );
            self.record(
                NewAuditEntry::new(&who.username, "request.decide", format!("request:{id}"))
                    .outcome("denied")
                    .detail("verdict", verdict.as_str())
                    .detail("why", why.as_str()),
            )
            .await?;
            return Err(Error::new(ErrorKind::Forbidden, ErrorCode::CoolingOff, why));
        }
        let event = Event::Decide {
            who: &who.username,
            groups: &who.groups,
            verdict,
            comment,
            at: now,
        };
        let (effect, next) = match self.apply_event(&mut tx, &row, &event, now).await? {
            Ok(done) => done,
            Err(refusal) => {
                drop(tx);
                if refusal == Refusal::Expired {
                    // The deadline passed between the check above and this transaction: record
                    // the expiry now rather than leave it to the next sweep.
                    self.expire_if_due(id).await?;
                }
                self.record(
                    NewAuditEntry::new(&who.username, "request.decide", format!("request:{id}"))
                        .outcome("denied")
                        .detail("verdict", verdict.as_str())
                        .detail("why", refusal.to_string()),
                )
                .await?;
                return Err(refusal_error(&refusal));
            }
        };
        let event_name = match effect {
            Effect::Approved => "request.approved",
            Effect::Denied => "request.denied",
            Effect::Advanced { .. } => "request.advanced",
            _ => "request.decided",
        };
        self.queue_notices(&mut tx, &next, event_name, &who.username)
            .await?;
        if let (Effect::Approved, Some(_), Some(draft)) =
            (effect, next.invitation.as_ref(), invitation)
        {
            let (created, _) = self
                .keep_invitation(&mut tx, &next.requester, draft)
                .await?;
            let created = created
                .detail("request", id)
                .detail("approved_by", who.username.as_str())
                .detail("policy", next.policy.as_str());
            tx.append_audit(self.now_text(), created)
                .await
                .map_err(|e| Error::internal("writing the audit entry", e))?;
        }
        let mut entry =
            NewAuditEntry::new(&who.username, "request.decide", format!("request:{id}"))
                .detail("verdict", verdict.as_str())
                .detail("level", row.level + 1)
                .detail("state", next.state.as_str())
                .detail("requester", next.requester.as_str());
        if !comment.is_empty() {
            entry = entry.detail("comment", comment);
        }
        self.commit(tx, entry).await?;
        if effect == Effect::Approved {
            metrics::counter!("cofre_grants_total").increment(1);
        }
        self.notifier_wake();
        Ok(self.request_info(&next))
    }

    pub async fn cancel_request(&self, who: &Principal, id: &str) -> Result<RequestInfo> {
        who.require(Action::OwnAccount)?;
        self.visible_request(who, id).await?;
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        let row = tx
            .request(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("request {id}")))?;
        let next = match self
            .apply_event(&mut tx, &row, &Event::Cancel { who: &who.username }, now)
            .await?
        {
            Ok((_, next)) => next,
            Err(r) => return Err(refusal_error(&r)),
        };
        self.queue_notices(&mut tx, &next, "request.cancelled", &who.username)
            .await?;
        self.commit(
            tx,
            NewAuditEntry::new(&who.username, "request.cancel", format!("request:{id}")),
        )
        .await?;
        self.notifier_wake();
        Ok(self.request_info(&next))
    }

    /// Ends a grant now: an admin for anyone's, a holder for its own. Its live sessions on this
    /// node are closed with a message, and reveals through it stop.
    pub async fn revoke_grant(
        &self,
        who: &Principal,
        id: &str,
        reason: Option<&str>,
    ) -> Result<RequestInfo> {
        who.require(Action::OwnAccount)?;
        let reason = reason.unwrap_or("").trim();
        check_text("reason", reason, 500)?;
        let row = self.visible_request(who, id).await?;
        if row.invitation.is_some() {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::NotAGrant,
                format!(
                    "request {id} asked for an invitation, not a grant: end the invitation with \
                     `cofre invite revoke`"
                ),
            ));
        }
        if row.requester != who.username && !role_may(who.mode, who.role, Action::ManageGrants) {
            return Err(Error::forbidden(format!(
                "the {} role may not revoke someone else's grant",
                who.role
            )));
        }
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        let mut row = tx
            .request(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("request {id}")))?;
        if !reason.is_empty() {
            row.revoke_reason = Some(reason.to_owned());
        }
        let next = match self
            .apply_event(&mut tx, &row, &Event::Revoke { who: &who.username }, now)
            .await?
        {
            Ok((_, next)) => next,
            Err(r) => return Err(refusal_error(&r)),
        };
        self.queue_notices(&mut tx, &next, "grant.revoked", &who.username)
            .await?;
        let mut entry = NewAuditEntry::new(&who.username, "grant.revoke", format!("request:{id}"))
            .detail("requester", next.requester.as_str());
        if !reason.is_empty() {
            entry = entry.detail("reason", reason);
        }
        self.commit(tx, entry).await?;
        // A credential set to rotate after a grant is due now (services::rotation). Marked here
        // rather than left to the scheduler's query, which compares whole seconds: a revoke in
        // the second the last rotation ended would never count as after it.
        self.rotation_after_use(&next.target, &next.account, "grant")
            .await;
        self.rotation.wake.notify_one();
        let closed = self.live.kill_by_request(
            id,
            &format!("access grant {id} was revoked by {}", who.username),
        );
        if closed > 0 {
            tracing::info!(
                request = id,
                sessions = closed,
                "closed sessions of a revoked grant"
            );
        }
        self.notifier_wake();
        Ok(self.request_info(&next))
    }

    /// Marks an emergency access as reviewed (not by the one who used it).
    pub async fn review_request(
        &self,
        who: &Principal,
        id: &str,
        comment: Option<&str>,
    ) -> Result<RequestInfo> {
        who.require(Action::ReviewEmergency)?;
        let comment = comment.unwrap_or("").trim();
        check_text("comment", comment, 500)?;
        if comment.chars().count() < 3 {
            return Err(Error::invalid(
                "comment",
                "comment: say what the review found (at least 3 characters)",
            ));
        }
        let row = self.visible_request(who, id).await?;
        if !row.emergency {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::NotEmergency,
                format!("request {id} was not an emergency access; only those are reviewed"),
            ));
        }
        if row.requester == who.username {
            return Err(Error::new(
                ErrorKind::Forbidden,
                ErrorCode::OwnRequest,
                "nobody reviews their own emergency access",
            ));
        }
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        if !tx.set_review(id, &who.username, now, comment).await? {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::AlreadyReviewed,
                format!("request {id} was already reviewed"),
            ));
        }
        let next = tx
            .request(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("request {id}")))?;
        self.queue_notices(&mut tx, &next, "request.reviewed", &who.username)
            .await?;
        self.commit(
            tx,
            NewAuditEntry::new(&who.username, "request.review", format!("request:{id}"))
                .detail("comment", comment)
                .detail("requester", next.requester.as_str()),
        )
        .await?;
        self.notifier_wake();
        Ok(self.request_info(&next))
    }
}

/// What an invitation request keeps (`access_requests.invitation`): the invitation asked for
/// and where its requester asked from (policies' `--from` are judged again at the approval).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredInvitation {
    invite: InviteRequest,
    #[serde(default)]
    source: Option<std::net::IpAddr>,
}

/// Why an inviter may not invite to `target`: no `invite`, or no `session` of its own there.
fn invite_denied(target: &str, access: Access) -> Error {
    let why = match access {
        Access::Invite => format!("no policy grants you invite on {target}"),
        _ => format!(
            "no policy grants you sessions on {target}, so you may not invite anyone to it \
             (an invitation never reaches beyond its inviter)"
        ),
    };
    Error::new(ErrorKind::Forbidden, ErrorCode::PolicyDenied, why).with_field("targets")
}

impl Approvals<'_> {
    /// The terms an invitation by `who` gets, or why it may not be (see `invite_by_policy`):
    /// every target needs `invite` and `session`, every pair a credential, every moment of the
    /// window inside every matching policy, the window within their maximum duration.
    async fn invitation_terms(
        &self,
        who: &Principal,
        draft: &super::invites::InvitationDraft,
    ) -> Result<Terms> {
        let mut subjects = Vec::new();
        for t in &draft.targets {
            let Some(row) = self.store.target_by_name(t).await? else {
                return Err(invite_denied(t, Access::Invite));
            };
            subjects.push((t.clone(), row.tags));
        }
        let accounts = &draft.accounts;
        for (t, _) in &subjects {
            for a in accounts {
                if self.store.credential(t, a).await?.is_none() {
                    return Err(Error::invalid(
                        "accounts",
                        format!("accounts: no credential {t}/{a} to invite to"),
                    ));
                }
            }
        }
        let window = (draft.starts_at, draft.ends_at);
        let mut combined: Option<Terms> = None;
        for (t, tags) in &subjects {
            for a in [Access::Invite, Access::Session] {
                let mut at = window.0;
                loop {
                    let terms = match self.terms_at(who, t, tags, a, at).await? {
                        Ruling::Deny => return Err(invite_denied(t, a)),
                        Ruling::Outside { policy, why } => {
                            return Err(Error::new(
                                ErrorKind::Forbidden,
                                ErrorCode::OutsidePolicyHours,
                                format!(
                                    "policy {policy} does not grant {} on {t} for the whole \
                                     window {} to {}: {why}",
                                    a.as_str(),
                                    rfc3339(window.0),
                                    rfc3339(window.1)
                                ),
                            ))
                        }
                        Ruling::Granted(terms) => terms,
                    };
                    combined = Some(match combined {
                        None => terms,
                        Some(c) => c.stricter(terms),
                    });
                    if at >= window.1 - 1 {
                        break;
                    }
                    at = (at + WINDOW_CHECK_STEP).min(window.1 - 1);
                }
            }
        }
        let terms = combined.ok_or_else(|| Error::invalid("targets", "targets: at least one"))?;
        if let Some(max) = terms.max_duration_minutes {
            if window.1 - window.0 > i64::from(max) * 60 {
                return Err(Error::invalid(
                    "until",
                    format!(
                        "until: policy {} allows at most {} from `from`",
                        terms.policy,
                        human_duration(i64::from(max) * 60)
                    ),
                ));
            }
        }
        if terms.moderated && !draft.approve_each_session {
            return Err(Error::invalid(
                "approve_each_session",
                format!(
                    "approve_each_session: policy {} wants sessions there watched, so each of \
                     the invitee's sessions must be approved: add --approve-each-session",
                    terms.policy
                ),
            ));
        }
        Ok(terms)
    }

    /// A user (not an admin) invites a third party where its policies say so. Each target
    /// needs `invite` *and* `session` for the inviter, every moment of the invitation's window
    /// inside every matching policy's limits, the window no longer than their maximum
    /// duration, and each `target × account` pair a credential: so the invitation never
    /// reaches beyond its inviter. The terms are the most restrictive of all of them: `allow`
    /// or `justify` keep it at once (audited with the policy); `approve` makes it an access
    /// request of access `invite` through the approval engine, whose approval keeps it and
    /// sends the link. An invitee's principal never invites.
    pub(crate) async fn invite_by_policy(
        &self,
        who: &Principal,
        req: &InviteRequest,
    ) -> Result<Invited> {
        who.require(Action::UseCredentials)?;
        if who.invitation().is_some() {
            return Err(Error::forbidden("an invitee may not invite"));
        }
        let targets = cofre_core::invite::parse_names("targets", &req.targets, check_identifier)?;
        cofre_core::invite::parse_names("accounts", &req.accounts, check_account)?;
        // First who may invite to what, at this moment: without the policy, nothing else is
        // judged (an unknown target reads as one without the policy: names are not probed).
        let now = self.now().unix_timestamp();
        for t in &targets {
            let Some(row) = self.store.target_by_name(t).await? else {
                return Err(invite_denied(t, Access::Invite));
            };
            for a in [Access::Invite, Access::Session] {
                if self.terms_at(who, t, &row.tags, a, now).await? == Ruling::Deny {
                    return Err(invite_denied(t, a));
                }
            }
        }
        let draft = self.draft_invitation(req).await?;
        let terms = self.invitation_terms(who, &draft).await?;
        if terms.outcome != Outcome::Approve {
            let mut tx = self.store.write().await?;
            let (entry, info) = self.keep_invitation(&mut tx, &who.username, draft).await?;
            let entry = entry
                .detail("policy", terms.policy.as_str())
                .detail("outcome", terms.outcome.as_str());
            self.commit(tx, entry).await?;
            self.notifier_wake();
            return Ok(Invited::Done(info));
        }
        if terms.levels.is_empty() {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::PolicyWithoutLevels,
                format!(
                    "policy {} asks for approval but names no approval levels; an admin must recreate it with --levels",
                    terms.policy
                ),
            ));
        }
        let timeout = i64::try_from(self.config.approvals.request_timeout_seconds).unwrap_or(3600);
        let machine = Request::pending(
            &who.username,
            terms.levels.clone(),
            now + timeout,
            (draft.starts_at, draft.ends_at),
        );
        let asked = CreateAccessRequest {
            target: draft.targets.join(","),
            account: draft.accounts.join(","),
            reason: req.reason.clone(),
            access: None,
            start: None,
            duration: None,
        };
        let mut row = self.new_request_row(who, &asked, &[Access::Invite], &terms, &machine, now);
        let kept = StoredInvitation {
            invite: InviteRequest {
                email: draft.email.clone(),
                ..req.clone()
            },
            source: who.source(),
        };
        row.invitation = Some(
            serde_json::to_string(&kept)
                .map_err(|e| Error::internal("keeping an invitation request", e))?,
        );
        let entry = request_created_entry(&who.username, &row)
            .detail("invitation_email", draft.email.as_str());
        self.insert_request(who, &row, "request.created", entry)
            .await?;
        self.notifier_wake();
        Ok(Invited::Requested(self.request_info(&row)))
    }
}

/// Runs the expiry sweep every second for as long as the app lives.
pub fn spawn_expiry_sweeper(app: &std::sync::Arc<App>) {
    let weak = std::sync::Arc::downgrade(app);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(app) = weak.upgrade() else { return };
            if app.is_sealed() {
                continue;
            }
            if let Err(e) = app.approvals().expire_due_requests().await {
                tracing::warn!(error = %e, "expiring access requests failed; retrying");
            }
        }
    });
}

/// The `request.create` entry of a new request (an invitation's adds its address).
fn request_created_entry(actor: &str, row: &RequestRow) -> NewAuditEntry {
    NewAuditEntry::new(actor, "request.create", format!("request:{}", row.id))
        .detail("target", row.target.as_str())
        .detail("account", row.account.as_str())
        .detail("access", row.access.clone())
        .detail("reason", row.reason.as_str())
        .detail("policy", row.policy.as_str())
        .detail("levels", row.levels.as_str())
        .detail("starts_at", rfc3339(row.starts_at))
        .detail("ends_at", rfc3339(row.ends_at))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_back() {
        assert_eq!(human_duration(5400), "1h30m");
        assert_eq!(human_duration(7200), "2h");
    }
}
