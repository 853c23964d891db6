//! Vendor support grants: a support user's customer-approved access, as a pure state machine, and
//! what an active grant lets role `support` do.
//!
//! ```text
//!  request ─▶ Pending ──approve × required (distinct customer admins, never the requester)──▶ Approved
//!               │──deny (one refusal ends it)──▶ Denied                                     │
//!               │──tick(at ≥ decide_by)──▶ Expired                 tick(at ≥ ends_at) ──▶ Ended
//!               └──revoke──▶ Revoked ◀──revoke (by a customer admin, or its holder)────────┘
//! ```
//!
//! The anchors are the clouds' customer-approved access (Microsoft Customer Lockbox, Google Access
//! Approval): a reason, a ticket and a scope; the customer approves; it ends by itself. No vendor
//! role (operator, support) ever counts as an approver, whatever the configuration says. A grant's
//! clock starts at its last approval, so a request approved late still gets its whole duration.
//! Support never reads a credential, a recording or a live session, even with a grant: that needs an
//! ordinary access request ([`support_may`] never allows those actions). Every moment is an argument
//! (unix seconds): no clock, no I/O.

use crate::role::{role_may, Action, Mode, Role};
use crate::FieldError;

/// `[support] max_hours` and the default duration, as Azure Customer Lockbox.
pub const DEFAULT_HOURS: u32 = 8;
/// `[support] request_expiry_hours`, as Microsoft 365 Customer Lockbox.
pub const DEFAULT_REQUEST_EXPIRY_HOURS: u32 = 12;
/// A grant shorter than this is a typo (the next call would already be refused).
pub const MIN_SECONDS: i64 = 5;
/// Longest accepted reason and ticket reference, in characters.
pub const MAX_REASON: usize = 500;
pub const MAX_TICKET: usize = 100;

/// What a grant opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Instance facts and warnings, network, maintenance and SIEM status: read only.
    Diagnostics,
    /// Snapshots, system backups and maintenance as the mode lets the vendor: read and run
    /// (never the customer's credential backups).
    Orbit,
    /// Read, export and verify the audit trail.
    Audit,
    /// A recorded gateway session to the Cofre machine itself: a target the customer tagged
    /// [`HOST_TAG`], any of its vaulted accounts (the credential injected, never shown). Opens
    /// no API action.
    Host,
}

/// The tag by which the customer registers the Cofre machine as a target for `host` grants.
pub const HOST_TAG: &str = "support-host";

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Diagnostics, Scope::Orbit, Scope::Audit, Scope::Host];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Diagnostics => "diagnostics",
            Scope::Orbit => "orbit",
            Scope::Audit => "audit",
            Scope::Host => "host",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Parses `diagnostics,audit` into distinct scopes, in a stable order.
pub fn parse_scopes(field: &str, s: &str) -> Result<Vec<Scope>, FieldError> {
    let mut scopes = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let scope = Scope::parse(part).ok_or_else(|| {
            FieldError::new(
                field,
                format!("unknown scope {part:?} (diagnostics, orbit, audit or host)"),
            )
        })?;
        scopes.push(scope);
    }
    if scopes.is_empty() {
        return Err(FieldError::new(
            field,
            "name at least one scope (diagnostics, orbit, audit or host)",
        ));
    }
    scopes.sort_unstable();
    scopes.dedup();
    Ok(scopes)
}

/// The scopes as stored and shown: `diagnostics,audit`.
pub fn scopes_text(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Approved,
    Denied,
    /// Undecided by its deadline.
    Expired,
    /// Taken back before its end.
    Revoked,
    /// Ran its whole duration.
    Ended,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Approved,
        State::Denied,
        State::Expired,
        State::Revoked,
        State::Ended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Revoked => "revoked",
            State::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn is_closed(self) -> bool {
        !matches!(self, State::Pending | State::Approved)
    }
}

/// The `[support]` settings a request is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Distinct customer admins whose approval a grant needs (at least 1).
    pub approvals: u32,
    pub max_hours: u32,
    /// `[support] request_expiry_hours` in seconds.
    pub request_expiry_seconds: i64,
}

impl Default for Rule {
    fn default() -> Self {
        Rule {
            approvals: 1,
            max_hours: DEFAULT_HOURS,
            request_expiry_seconds: i64::from(DEFAULT_REQUEST_EXPIRY_HOURS) * 3600,
        }
    }
}

/// A grant as the machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub requester: String,
    pub scopes: Vec<Scope>,
    pub state: State,
    pub required: u32,
    /// Who approved, in order.
    pub approvals: Vec<String>,
    /// Undecided at this moment, the request expires.
    pub decide_by: i64,
    /// Seconds the grant runs once approved.
    pub duration: i64,
    /// Set at the last approval: `[starts_at, ends_at)`.
    pub window: Option<(i64, i64)>,
}

/// What a support user asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask<'a> {
    pub scopes: Vec<Scope>,
    pub reason: &'a str,
    pub ticket: &'a str,
    /// Seconds; `None` for the default (8 h, capped at `max_hours`).
    pub duration: Option<i64>,
}

/// A new request of `requester` (who must have role support), checked against the rule.
pub fn request(
    rule: Rule,
    requester: &str,
    requester_role: Role,
    ask: Ask<'_>,
    now: i64,
) -> Result<Grant, FieldError> {
    let Ask {
        scopes,
        reason,
        ticket,
        duration,
    } = ask;
    if requester_role != Role::Support {
        return Err(FieldError::new(
            "role",
            "only a support user asks for a support grant",
        ));
    }
    if scopes.is_empty() {
        return Err(FieldError::new("scope", "name at least one scope"));
    }
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON {
        return Err(FieldError::new(
            "reason",
            format!("must be 1 to {MAX_REASON} characters"),
        ));
    }
    let ticket = ticket.trim();
    if ticket.is_empty() || ticket.chars().count() > MAX_TICKET {
        return Err(FieldError::new(
            "ticket",
            format!("must be 1 to {MAX_TICKET} characters"),
        ));
    }
    let max = i64::from(rule.max_hours) * 3600;
    let duration = duration.unwrap_or_else(|| max.min(i64::from(DEFAULT_HOURS) * 3600));
    if duration < MIN_SECONDS || duration > max {
        return Err(FieldError::new(
            "duration",
            format!(
                "must be at least 5s and at most {}h ([support] max_hours)",
                rule.max_hours
            ),
        ));
    }
    Ok(Grant {
        requester: requester.to_owned(),
        scopes,
        state: State::Pending,
        // Zero approvals would let the vendor grant itself access: never.
        required: rule.approvals.max(1),
        approvals: Vec::new(),
        decide_by: now + rule.request_expiry_seconds.max(1),
        duration,
        window: None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    Approve {
        who: &'a str,
        role: Role,
        at: i64,
    },
    Deny {
        who: &'a str,
        role: Role,
        at: i64,
    },
    /// A customer admin, or the grant's holder, ends it now.
    Revoke {
        who: &'a str,
        role: Role,
    },
    /// Time passes: an undecided request expires, a grant past its end ends.
    Tick {
        at: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// An approval counted; more are needed.
    Counted {
        count: u32,
    },
    /// The last approval counted: the grant runs from now.
    Approved,
    Denied,
    Revoked,
    Expired,
    Ended,
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request is {}: only a pending request is decided", .0.as_str())]
    NotPending(State),
    #[error("the request expired before this decision")]
    Expired,
    #[error("only a customer admin decides a support request (never the vendor)")]
    NotCustomerAdmin,
    #[error("nobody decides their own request")]
    OwnRequest,
    #[error("you decided this request already; one person counts once")]
    AlreadyDecided,
    #[error("the grant is {} already", .0.as_str())]
    Closed(State),
    #[error("only a customer admin or the grant's holder revokes it")]
    NotRevoker,
}

impl Grant {
    /// Whether the grant lets its holder act at `at`.
    pub fn active(&self, at: i64) -> bool {
        self.state == State::Approved
            && self
                .window
                .is_some_and(|(start, end)| start <= at && at < end)
    }

    /// Applies `event`; a refusal leaves the grant as it was.
    pub fn apply(&mut self, event: &Event<'_>) -> Result<Effect, Refusal> {
        match *event {
            Event::Approve { who, role, at } => {
                self.check_decider(who, role, at)?;
                self.approvals.push(who.to_owned());
                let count = u32::try_from(self.approvals.len()).unwrap_or(u32::MAX);
                if count >= self.required {
                    self.state = State::Approved;
                    self.window = Some((at, at.saturating_add(self.duration)));
                    Ok(Effect::Approved)
                } else {
                    Ok(Effect::Counted { count })
                }
            }
            Event::Deny { who, role, at } => {
                self.check_decider(who, role, at)?;
                self.state = State::Denied;
                Ok(Effect::Denied)
            }
            Event::Revoke { who, role } => {
                if self.state.is_closed() {
                    return Err(Refusal::Closed(self.state));
                }
                if !(is_customer_admin(role) || who == self.requester) {
                    return Err(Refusal::NotRevoker);
                }
                self.state = State::Revoked;
                Ok(Effect::Revoked)
            }
            Event::Tick { at } => match self.state {
                State::Pending if at >= self.decide_by => {
                    self.state = State::Expired;
                    Ok(Effect::Expired)
                }
                State::Approved if self.window.is_some_and(|(_, end)| at >= end) => {
                    self.state = State::Ended;
                    Ok(Effect::Ended)
                }
                _ => Ok(Effect::Nothing),
            },
        }
    }

    fn check_decider(&self, who: &str, role: Role, at: i64) -> Result<(), Refusal> {
        if self.state != State::Pending {
            return Err(Refusal::NotPending(self.state));
        }
        if at >= self.decide_by {
            return Err(Refusal::Expired);
        }
        if !is_customer_admin(role) {
            return Err(Refusal::NotCustomerAdmin);
        }
        if who == self.requester {
            return Err(Refusal::OwnRequest);
        }
        if self.approvals.iter().any(|a| a == who) {
            return Err(Refusal::AlreadyDecided);
        }
        Ok(())
    }
}

fn is_customer_admin(role: Role) -> bool {
    role == Role::Admin && !role.is_vendor()
}

/// What role `support` may do under active grants of `scopes` (besides its own account, which
/// the role table gives it). Deny by default; credentials, recordings, live sessions, break-glass
/// and every change to users, targets or policies are never here.
pub fn support_may(mode: Mode, scopes: &[Scope], action: Action) -> bool {
    use Action::*;
    scopes.iter().any(|scope| match scope {
        Scope::Diagnostics => matches!(
            action,
            ViewInstance | ViewNetwork | ViewMaintenance | ViewSiem | ReadDiagnostics
        ),
        Scope::Orbit => match action {
            // Never the credential backups: the customer's own server, the customer's duty.
            ManageSnapshots | ViewSnapshots | SystemBackups | ViewMaintenance => true,
            // Maintenance as the mode lets the vendor run it (not on-prem, where the admin does).
            ProposeMaintenance => role_may(mode, Role::Operator, ProposeMaintenance),
            _ => false,
        },
        Scope::Audit => action == ReadAudit,
        // Checked where a gateway session starts, against the target's tag, not here.
        Scope::Host => false,
    })
}

/// Whether a support user holding grants of `scopes` may open a gateway session to a target
/// with `tags`: only under a `host` grant, only to the target the customer tagged [`HOST_TAG`].
pub fn host_session_may(scopes: &[Scope], tags: &[String]) -> bool {
    scopes.contains(&Scope::Host) && tags.iter().any(|t| t == HOST_TAG)
}

/// The whole decision for a principal: the role table, and for role support its active grants.
pub fn may(mode: Mode, role: Role, active_scopes: &[Scope], action: Action) -> bool {
    role_may(mode, role, action)
        || (role == Role::Support && support_may(mode, active_scopes, action))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const H: i64 = 3600;

    fn pending(rule: Rule) -> Grant {
        let ask = Ask {
            scopes: vec![Scope::Diagnostics],
            reason: "slow backups",
            ticket: "TICKET-881",
            duration: Some(2 * H),
        };
        request(rule, "sup1", Role::Support, ask, 0).unwrap()
    }

    #[test]
    fn scopes_parse_and_refuse() {
        let s = parse_scopes("scope", "audit, diagnostics,audit").unwrap();
        assert_eq!(scopes_text(&s), "diagnostics,audit");
        for bad in ["", "shell", "diagnostics,root", " , "] {
            assert_eq!(parse_scopes("scope", bad).unwrap_err().field, "scope");
        }
    }

    #[test]
    fn request_is_checked() {
        let r = Rule::default();
        let ask = |role, reason, ticket, duration| {
            let ask = Ask {
                scopes: vec![Scope::Audit],
                reason,
                ticket,
                duration,
            };
            request(r, "sup1", role, ask, 0)
        };
        assert_eq!(
            ask(Role::Operator, "x", "T", None).unwrap_err().field,
            "role"
        );
        assert_eq!(
            ask(Role::Support, " ", "T", None).unwrap_err().field,
            "reason"
        );
        assert_eq!(
            ask(Role::Support, "x", "", None).unwrap_err().field,
            "ticket"
        );
        assert_eq!(
            ask(Role::Support, "x", "T", Some(9 * H)).unwrap_err().field,
            "duration"
        );
        assert_eq!(
            ask(Role::Support, "x", "T", Some(4)).unwrap_err().field,
            "duration"
        );
        let g = ask(Role::Support, "x", "T", None).unwrap();
        assert_eq!(g.duration, 8 * H);
        assert_eq!(g.decide_by, 12 * H);
        // A configured zero still needs one customer admin.
        let zero = Rule {
            approvals: 0,
            ..Rule::default()
        };
        assert_eq!(pending(zero).required, 1);
    }

    #[test]
    fn vendors_and_the_requester_never_approve() {
        let mut g = pending(Rule::default());
        for role in [
            Role::Operator,
            Role::Support,
            Role::Approver,
            Role::Auditor,
            Role::User,
        ] {
            assert_eq!(
                g.apply(&Event::Approve {
                    who: "other",
                    role,
                    at: 1
                }),
                Err(Refusal::NotCustomerAdmin),
                "{role:?}"
            );
        }
        assert_eq!(
            g.apply(&Event::Approve {
                who: "sup1",
                role: Role::Admin,
                at: 1
            }),
            Err(Refusal::OwnRequest)
        );
        assert_eq!(g.state, State::Pending);
        assert!(!g.active(1));
    }

    #[test]
    fn approval_starts_the_clock_and_time_ends_it() {
        let mut g = pending(Rule {
            approvals: 2,
            ..Rule::default()
        });
        let approve = |who| Event::Approve {
            who,
            role: Role::Admin,
            at: 100,
        };
        assert_eq!(g.apply(&approve("ada")), Ok(Effect::Counted { count: 1 }));
        assert_eq!(g.apply(&approve("ada")), Err(Refusal::AlreadyDecided));
        assert!(!g.active(100));
        assert_eq!(g.apply(&approve("bob")), Ok(Effect::Approved));
        assert_eq!(g.window, Some((100, 100 + 2 * H)));
        assert!(g.active(100) && g.active(100 + 2 * H - 1));
        assert!(!g.active(100 + 2 * H));
        assert_eq!(g.apply(&Event::Tick { at: 101 }), Ok(Effect::Nothing));
        assert_eq!(g.apply(&Event::Tick { at: 100 + 2 * H }), Ok(Effect::Ended));
        assert_eq!(g.state, State::Ended);
        assert!(!g.active(101));
    }

    #[test]
    fn undecided_expires_denied_and_revoked_close() {
        let mut g = pending(Rule::default());
        assert_eq!(
            g.apply(&Event::Tick { at: 12 * H - 1 }),
            Ok(Effect::Nothing)
        );
        assert_eq!(
            g.apply(&Event::Approve {
                who: "ada",
                role: Role::Admin,
                at: 12 * H
            }),
            Err(Refusal::Expired)
        );
        assert_eq!(g.apply(&Event::Tick { at: 12 * H }), Ok(Effect::Expired));

        let mut d = pending(Rule::default());
        assert_eq!(
            d.apply(&Event::Deny {
                who: "ada",
                role: Role::Admin,
                at: 5
            }),
            Ok(Effect::Denied)
        );
        assert_eq!(
            d.apply(&Event::Revoke {
                who: "ada",
                role: Role::Admin
            }),
            Err(Refusal::Closed(State::Denied))
        );

        let mut r = pending(Rule::default());
        r.apply(&Event::Approve {
            who: "ada",
            role: Role::Admin,
            at: 5,
        })
        .unwrap();
        assert_eq!(
            r.apply(&Event::Revoke {
                who: "op1",
                role: Role::Operator
            }),
            Err(Refusal::NotRevoker)
        );
        assert_eq!(
            r.apply(&Event::Revoke {
                who: "sup1",
                role: Role::Support
            }),
            Ok(Effect::Revoked)
        );
        assert!(!r.active(6));
    }

    #[test]
    fn scopes_open_only_their_actions() {
        for mode in [Mode::OnPrem, Mode::PrivateSaas, Mode::Saas] {
            for a in Action::ALL {
                let own = matches!(a, Action::OwnAccount | Action::ChangeOwnPassword);
                assert_eq!(may(mode, Role::Support, &[], a), own, "{mode:?} {a:?}");
            }
            let diag = [Scope::Diagnostics];
            assert!(may(mode, Role::Support, &diag, Action::ViewInstance));
            assert!(may(mode, Role::Support, &diag, Action::ReadDiagnostics));
            assert!(!may(
                mode,
                Role::Support,
                &[Scope::Audit],
                Action::ReadDiagnostics
            ));
            assert!(!may(mode, Role::Support, &diag, Action::ReadAudit));
            assert!(may(mode, Role::Support, &[Scope::Audit], Action::ReadAudit));
            assert!(may(
                mode,
                Role::Support,
                &[Scope::Orbit],
                Action::ManageSnapshots
            ));
            assert!(!may(
                mode,
                Role::Support,
                &[Scope::Orbit],
                Action::CredentialBackups
            ));
            assert_eq!(
                may(
                    mode,
                    Role::Support,
                    &[Scope::Orbit],
                    Action::ProposeMaintenance
                ),
                mode != Mode::OnPrem
            );
            // Grants only ever apply to role support.
            assert!(!may(mode, Role::User, &[Scope::Audit], Action::ReadAudit));
        }
    }

    #[test]
    fn a_host_grant_opens_sessions_only_to_the_tagged_target() {
        let host = vec![HOST_TAG.to_owned()];
        let other = vec!["prod".to_owned()];
        assert!(host_session_may(&[Scope::Host], &host));
        assert!(!host_session_may(&[Scope::Host], &other));
        assert!(!host_session_may(&[Scope::Host], &[]));
        assert!(!host_session_may(
            &[Scope::Diagnostics, Scope::Orbit, Scope::Audit],
            &host
        ));
    }

    #[test]
    fn never_credentials_recordings_or_sessions_whatever_the_scopes() {
        for mode in [Mode::OnPrem, Mode::PrivateSaas, Mode::Saas] {
            for a in [
                Action::UseCredentials,
                Action::ReadRecordings,
                Action::WatchSessions,
                Action::ListSessions,
                Action::KillSessions,
                Action::LockSessions,
                Action::ListTargets,
                Action::ViewCredentialHistory,
                Action::ManageBreakGlass,
                Action::ManageUsers,
                Action::ManageTargets,
                Action::ManagePolicies,
                Action::DecideRequests,
                Action::DecideChanges,
                Action::DecideMaintenance,
                Action::ManageGrants,
                Action::ManageInstance,
                Action::Emergency,
            ] {
                assert!(!may(mode, Role::Support, &Scope::ALL, a), "{mode:?} {a:?}");
            }
        }
    }
}
