//! Maintenance windows: who decides a window in each mode, and its life as a pure state machine.
//!
//! ```text
//!  propose ─▶ Proposed ──approve × required (distinct customer admins, never the proposer)──▶ Scheduled
//!    │ (required = 0) │──deny (one refusal ends it)──▶ Denied                                  │
//!    └───────────────▶│──tick(at ≥ start)──▶ Expired                                           │
//!                     │──cancel(before start)──▶ Cancelled ◀──cancel(before start)─────────────┤
//!                                                                         begin(at ≥ start)    ▼
//!                                                       Done / Failed / RolledBack ◀──finish── Running
//!  Scheduled ──tick(at ≥ end, never begun: the server was down)──▶ Expired
//! ```
//!
//! By mode ([`rule`]): `private-saas` needs two customer admins; `saas` needs none but the
//! window must be announced at least `notice_hours` ahead (customer admins watch, never block);
//! `on-prem` needs `[maintenance] approvals` other admins (default 0). No vendor role ever counts
//! as an approver. Every moment is an argument (unix seconds): no clock, no I/O.

use crate::role::{Mode, Role};
use crate::FieldError;

/// No window is longer than a day: a longer outage is not maintenance.
pub const MAX_WINDOW_SECONDS: i64 = 24 * 3600;
/// Nor is one planned further ahead than this.
pub const MAX_START_AHEAD_SECONDS: i64 = 90 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for its approvals.
    Proposed,
    /// Approved (or needing none): it runs at its start.
    Scheduled,
    /// Its steps are running.
    Running,
    Done,
    Failed,
    RolledBack,
    Denied,
    Cancelled,
    /// Not approved by its start: nothing is applied.
    Expired,
}

impl State {
    pub const ALL: [State; 9] = [
        State::Proposed,
        State::Scheduled,
        State::Running,
        State::Done,
        State::Failed,
        State::RolledBack,
        State::Denied,
        State::Cancelled,
        State::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Proposed => "proposed",
            State::Scheduled => "scheduled",
            State::Running => "running",
            State::Done => "done",
            State::Failed => "failed",
            State::RolledBack => "rolled_back",
            State::Denied => "denied",
            State::Cancelled => "cancelled",
            State::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Nothing more happens to a window in this state.
    pub fn is_closed(self) -> bool {
        !matches!(self, State::Proposed | State::Scheduled | State::Running)
    }
}

/// Who decides a window: how many approvals it needs and how far ahead it must be announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub approvals: u32,
    pub min_notice_seconds: i64,
}

/// The rule of a mode. `on_prem_approvals` is `[maintenance] approvals`, `notice_hours`
/// `[maintenance] notice_hours` (only saas announces instead of asking).
pub fn rule(mode: Mode, on_prem_approvals: u32, notice_hours: u32) -> Rule {
    match mode {
        Mode::PrivateSaas => Rule {
            approvals: 2,
            min_notice_seconds: 0,
        },
        Mode::Saas => Rule {
            approvals: 0,
            min_notice_seconds: i64::from(notice_hours) * 3600,
        },
        Mode::OnPrem => Rule {
            approvals: on_prem_approvals,
            min_notice_seconds: 0,
        },
    }
}

/// A window as the machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub state: State,
    pub proposer: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub required: u32,
    /// Who approved, in order.
    pub approvals: Vec<String>,
}

/// A new window: checks the times against the rule and starts it `Scheduled` when it needs no
/// approval, `Proposed` otherwise.
pub fn propose(
    rule: Rule,
    proposer: &str,
    now: i64,
    starts_at: i64,
    duration: i64,
) -> Result<Window, FieldError> {
    if starts_at <= now {
        return Err(FieldError::new("start", "lies in the past"));
    }
    if starts_at - now > MAX_START_AHEAD_SECONDS {
        return Err(FieldError::new("start", "at most 90 days ahead"));
    }
    if starts_at - now < rule.min_notice_seconds {
        return Err(FieldError::new(
            "start",
            format!(
                "must be announced at least {} hours ahead ([maintenance] notice_hours)",
                rule.min_notice_seconds / 3600
            ),
        ));
    }
    if duration <= 0 || duration > MAX_WINDOW_SECONDS {
        return Err(FieldError::new(
            "duration",
            "must be more than 0 and at most 24h",
        ));
    }
    Ok(Window {
        state: if rule.approvals == 0 {
            State::Scheduled
        } else {
            State::Proposed
        },
        proposer: proposer.to_owned(),
        starts_at,
        ends_at: starts_at + duration,
        required: rule.approvals,
        approvals: Vec::new(),
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
    Cancel {
        at: i64,
    },
    /// Time passes: an undecided window expires at its start, a scheduled one that never began
    /// (the server was down) at its end.
    Tick {
        at: i64,
    },
    /// The scheduler starts the steps.
    Begin {
        at: i64,
    },
    /// The steps ended in `Done`, `Failed` or `RolledBack`.
    Finish {
        outcome: State,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// An approval counted; more are needed.
    Approved {
        count: u32,
    },
    /// The last approval counted.
    Scheduled,
    Denied,
    Cancelled,
    Expired,
    Began,
    Finished(State),
    /// A tick with nothing to do.
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the window is {} already", .0.as_str())]
    Closed(State),
    #[error("the window is {}: only a proposed window is decided", .0.as_str())]
    NotProposed(State),
    #[error("the proposer never approves its own window")]
    Proposer,
    #[error("only a customer admin decides a maintenance window")]
    NotCustomerAdmin,
    #[error("you decided this window already")]
    AlreadyDecided,
    #[error("the window's start has passed: it can no longer be decided or cancelled")]
    Started,
    #[error("the window's time ran out before it began")]
    Missed,
    #[error("the window does not start before {0}")]
    NotYet(i64),
    #[error("the window is {}: it is not running", .0.as_str())]
    NotRunning(State),
    #[error("a window ends done, failed or rolled back, not {}", .0.as_str())]
    BadOutcome(State),
}

impl Window {
    /// Applies `event`; a refusal leaves the window as it was.
    pub fn apply(&mut self, event: &Event<'_>) -> Result<Effect, Refusal> {
        match *event {
            Event::Approve { who, role, at } => {
                self.check_decider(who, role, at)?;
                self.approvals.push(who.to_owned());
                let count = u32::try_from(self.approvals.len()).unwrap_or(u32::MAX);
                if count >= self.required {
                    self.state = State::Scheduled;
                    Ok(Effect::Scheduled)
                } else {
                    Ok(Effect::Approved { count })
                }
            }
            Event::Deny { who, role, at } => {
                self.check_decider(who, role, at)?;
                self.state = State::Denied;
                Ok(Effect::Denied)
            }
            Event::Cancel { at } => {
                if self.state.is_closed() {
                    return Err(Refusal::Closed(self.state));
                }
                if self.state == State::Running || at >= self.starts_at {
                    return Err(Refusal::Started);
                }
                self.state = State::Cancelled;
                Ok(Effect::Cancelled)
            }
            Event::Tick { at } => {
                let missed = self.state == State::Scheduled && at >= self.ends_at;
                if (self.state == State::Proposed && at >= self.starts_at) || missed {
                    self.state = State::Expired;
                    Ok(Effect::Expired)
                } else {
                    Ok(Effect::Nothing)
                }
            }
            Event::Begin { at } => {
                if self.state != State::Scheduled {
                    return Err(Refusal::NotProposed(self.state));
                }
                if at < self.starts_at {
                    return Err(Refusal::NotYet(self.starts_at));
                }
                if at >= self.ends_at {
                    return Err(Refusal::Missed);
                }
                self.state = State::Running;
                Ok(Effect::Began)
            }
            Event::Finish { outcome } => {
                if self.state != State::Running {
                    return Err(Refusal::NotRunning(self.state));
                }
                if !matches!(outcome, State::Done | State::Failed | State::RolledBack) {
                    return Err(Refusal::BadOutcome(outcome));
                }
                self.state = outcome;
                Ok(Effect::Finished(outcome))
            }
        }
    }

    fn check_decider(&self, who: &str, role: Role, at: i64) -> Result<(), Refusal> {
        if self.state.is_closed() {
            return Err(Refusal::Closed(self.state));
        }
        if self.state != State::Proposed {
            return Err(Refusal::NotProposed(self.state));
        }
        if at >= self.starts_at {
            return Err(Refusal::Started);
        }
        if role != Role::Admin || role.is_vendor() {
            return Err(Refusal::NotCustomerAdmin);
        }
        if who == self.proposer {
            return Err(Refusal::Proposer);
        }
        if self.approvals.iter().any(|a| a == who) {
            return Err(Refusal::AlreadyDecided);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const H: i64 = 3600;

    fn private_saas() -> Window {
        propose(rule(Mode::PrivateSaas, 0, 72), "op1", 0, 10 * H, 2 * H).unwrap()
    }

    fn approve<'a>(who: &'a str, at: i64) -> Event<'a> {
        Event::Approve {
            who,
            role: Role::Admin,
            at,
        }
    }

    #[test]
    fn private_saas_needs_two_distinct_customer_admins() {
        let mut w = private_saas();
        assert_eq!(w.state, State::Proposed);
        assert_eq!(
            w.apply(&approve("alice", H)),
            Ok(Effect::Approved { count: 1 })
        );
        assert_eq!(w.apply(&approve("alice", H)), Err(Refusal::AlreadyDecided));
        assert_eq!(w.state, State::Proposed);
        assert_eq!(w.apply(&approve("bob", H)), Ok(Effect::Scheduled));
        assert_eq!(w.state, State::Scheduled);
        assert_eq!(w.approvals, vec!["alice", "bob"]);
    }

    #[test]
    fn the_proposer_and_vendor_roles_never_count() {
        let mut w = private_saas();
        for role in [
            Role::Operator,
            Role::Support,
            Role::Approver,
            Role::Auditor,
            Role::User,
        ] {
            let e = Event::Approve {
                who: "x",
                role,
                at: H,
            };
            assert_eq!(w.apply(&e), Err(Refusal::NotCustomerAdmin), "{role:?}");
        }
        // An admin account named as the proposer is the proposer.
        assert_eq!(w.apply(&approve("op1", H)), Err(Refusal::Proposer));
        assert!(w.approvals.is_empty());
    }

    #[test]
    fn one_refusal_ends_it_and_closed_stays_closed() {
        let mut w = private_saas();
        w.apply(&approve("alice", H)).unwrap();
        let deny = Event::Deny {
            who: "bob",
            role: Role::Admin,
            at: H,
        };
        assert_eq!(w.apply(&deny), Ok(Effect::Denied));
        assert_eq!(
            w.apply(&approve("carol", H)),
            Err(Refusal::Closed(State::Denied))
        );
        assert_eq!(
            w.apply(&Event::Cancel { at: H }),
            Err(Refusal::Closed(State::Denied))
        );
        assert_eq!(
            w.apply(&Event::Begin { at: 10 * H }),
            Err(Refusal::NotProposed(State::Denied))
        );
    }

    #[test]
    fn undecided_by_its_start_it_expires_and_never_runs() {
        let mut w = private_saas();
        w.apply(&approve("alice", H)).unwrap();
        assert_eq!(
            w.apply(&Event::Tick { at: 10 * H - 1 }),
            Ok(Effect::Nothing)
        );
        assert_eq!(w.apply(&approve("bob", 10 * H)), Err(Refusal::Started));
        assert_eq!(w.apply(&Event::Tick { at: 10 * H }), Ok(Effect::Expired));
        assert_eq!(
            w.apply(&Event::Begin { at: 10 * H }),
            Err(Refusal::NotProposed(State::Expired))
        );
    }

    #[test]
    fn a_scheduled_window_never_begun_by_its_end_expires() {
        let mut w = propose(rule(Mode::OnPrem, 0, 72), "admin", 0, H, H).unwrap();
        assert_eq!(
            w.clone().apply(&Event::Begin { at: 2 * H }),
            Err(Refusal::Missed)
        );
        assert_eq!(w.apply(&Event::Tick { at: 2 * H - 1 }), Ok(Effect::Nothing));
        assert_eq!(w.apply(&Event::Tick { at: 2 * H }), Ok(Effect::Expired));
        assert_eq!(
            w.apply(&Event::Begin { at: 2 * H }),
            Err(Refusal::NotProposed(State::Expired))
        );
    }

    #[test]
    fn saas_is_announced_ahead_and_needs_no_approval() {
        let r = rule(Mode::Saas, 5, 72);
        assert_eq!(r.approvals, 0);
        let e = propose(r, "op1", 0, 71 * H, H).unwrap_err();
        assert_eq!(e.field, "start");
        assert!(e.reason.contains("72 hours"), "{e}");
        let mut w = propose(r, "op1", 0, 72 * H, H).unwrap();
        assert_eq!(w.state, State::Scheduled);
        // Customer admins cannot block it.
        let deny = Event::Deny {
            who: "alice",
            role: Role::Admin,
            at: H,
        };
        assert_eq!(w.apply(&deny), Err(Refusal::NotProposed(State::Scheduled)));
    }

    #[test]
    fn on_prem_asks_for_the_configured_number_of_other_admins() {
        let w = propose(rule(Mode::OnPrem, 0, 72), "admin", 0, H, H).unwrap();
        assert_eq!(w.state, State::Scheduled);
        let mut w = propose(rule(Mode::OnPrem, 1, 72), "admin", 0, H, H).unwrap();
        assert_eq!(w.apply(&approve("admin", 1)), Err(Refusal::Proposer));
        assert_eq!(w.apply(&approve("admin2", 1)), Ok(Effect::Scheduled));
    }

    #[test]
    fn cancel_only_before_the_start_and_running_ends_once() {
        let mut w = propose(rule(Mode::OnPrem, 0, 72), "admin", 0, H, H).unwrap();
        assert_eq!(
            w.apply(&Event::Begin { at: H - 1 }),
            Err(Refusal::NotYet(H))
        );
        let mut c = w.clone();
        assert_eq!(c.apply(&Event::Cancel { at: H - 1 }), Ok(Effect::Cancelled));
        assert_eq!(w.apply(&Event::Cancel { at: H }), Err(Refusal::Started));
        assert_eq!(w.apply(&Event::Begin { at: H }), Ok(Effect::Began));
        assert_eq!(w.apply(&Event::Cancel { at: H }), Err(Refusal::Started));
        assert_eq!(
            w.apply(&Event::Finish {
                outcome: State::Scheduled
            }),
            Err(Refusal::BadOutcome(State::Scheduled))
        );
        assert_eq!(
            w.apply(&Event::Finish {
                outcome: State::Failed
            }),
            Ok(Effect::Finished(State::Failed))
        );
        assert_eq!(
            w.apply(&Event::Finish {
                outcome: State::Done
            }),
            Err(Refusal::NotRunning(State::Failed))
        );
    }

    #[test]
    fn times_are_checked() {
        let r = rule(Mode::OnPrem, 0, 72);
        assert_eq!(propose(r, "a", 10, 10, H).unwrap_err().field, "start");
        assert_eq!(propose(r, "a", 0, H, 0).unwrap_err().field, "duration");
        assert_eq!(propose(r, "a", 0, H, 25 * H).unwrap_err().field, "duration");
        assert_eq!(
            propose(r, "a", 0, MAX_START_AHEAD_SECONDS + 1, H)
                .unwrap_err()
                .field,
            "start"
        );
    }
}
