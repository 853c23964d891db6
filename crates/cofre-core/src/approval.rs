//! The four-eye approval engine: an access request's life as a pure state machine.
//!
//! ```text
//!                 decide(approve) by the N-th distinct approver of the last level
//!   ┌─────────┐ ───────────────────────────────────────────────────────────────▶ ┌──────────┐
//!   │ Pending │   decide(approve) completing level L < last: level L+1 (stays)     │ Approved │──revoke──▶ Revoked
//!   │ level L │ ──decide(deny)──▶ Denied                                          └──────────┘
//!   └─────────┘ ──tick(now ≥ decide_by)──▶ Expired                                 (its grant runs
//!        │      ──cancel(by requester)──▶ Cancelled                                 start..end)
//!   emergency: created Approved (no decisions), flagged for review ──review──▶ reviewed
//! ```
//!
//! Rules: the requester never decides its own request, whatever its roles; a person decides a
//! request once (one vote, counted at one level); only members of the current level's group
//! decide, in level order; one refusal ends the request; past its deadline a request only expires.
//! The machine takes every moment as an argument (unix seconds), so the server's clock and a test's
//! clock are the same thing to it. Maintenance windows and support grants reuse it.

use crate::FieldError;
use serde::{Deserialize, Serialize};

/// At most this many levels, as PRODUCT.md says.
pub const MAX_LEVELS: usize = 3;
/// More approvers than this per level is a typo, not a policy.
pub const MAX_APPROVERS_PER_LEVEL: u32 = 10;

/// One approval level: `required` distinct members of `group` must approve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    pub group: String,
    pub required: u32,
}

/// Parses `leads:1,security:2` (one to three levels, in order).
pub fn parse_levels(field: &str, s: &str) -> Result<Vec<Level>, FieldError> {
    let mut levels = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (group, n) = part.split_once(':').unwrap_or((part, "1"));
        crate::names::check_identifier(field, group)?;
        let required: u32 = n.trim().parse().map_err(|_| {
            FieldError::new(
                field,
                format!("{part:?}: expected GROUP:N with N a number of approvers, e.g. leads:1"),
            )
        })?;
        if !(1..=MAX_APPROVERS_PER_LEVEL).contains(&required) {
            return Err(FieldError::new(
                field,
                format!("{part:?}: between 1 and {MAX_APPROVERS_PER_LEVEL} approvers per level"),
            ));
        }
        levels.push(Level {
            group: group.to_owned(),
            required,
        });
    }
    if levels.is_empty() {
        return Err(FieldError::new(
            field,
            "at least one level, e.g. leads:1 or leads:1,security:1",
        ));
    }
    if levels.len() > MAX_LEVELS {
        return Err(FieldError::new(
            field,
            format!("at most {MAX_LEVELS} levels"),
        ));
    }
    Ok(levels)
}

pub fn levels_text(levels: &[Level]) -> String {
    levels
        .iter()
        .map(|l| format!("{}:{}", l.group, l.required))
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }
    pub fn parse(s: &str) -> Option<Verdict> {
        match s {
            "approve" => Some(Verdict::Approve),
            "deny" => Some(Verdict::Deny),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
    Revoked,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Approved,
        State::Denied,
        State::Expired,
        State::Cancelled,
        State::Revoked,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
            State::Revoked => "revoked",
        }
    }
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// A decision that was counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub approver: String,
    /// Zero-based level the vote was cast at.
    pub level: usize,
    pub verdict: Verdict,
    pub at: i64,
    pub comment: String,
}

/// An access request as the machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub requester: String,
    pub levels: Vec<Level>,
    pub state: State,
    /// The level waiting for decisions (meaningful while pending).
    pub level: usize,
    pub votes: Vec<Vote>,
    /// Undecided at this moment, the request expires.
    pub decide_by: i64,
    /// The grant's window, once approved.
    pub window: (i64, i64),
    pub emergency: bool,
    pub revoked_by: Option<String>,
}

/// What happens to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    Decide {
        who: &'a str,
        /// The decider's groups (its role was checked by the caller).
        groups: &'a [String],
        verdict: Verdict,
        comment: &'a str,
        at: i64,
    },
    /// Time passes: a pending request past `decide_by` expires.
    Tick { at: i64 },
    /// The requester withdraws a pending request.
    Cancel { who: &'a str },
    /// A grant is taken back (by an admin, or by its holder).
    Revoke { who: &'a str },
}

/// What an event did, for the audit trail and the notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A vote was counted; the level still needs more.
    Counted,
    /// The vote completed a level; the next one now decides.
    Advanced {
        to_level: usize,
    },
    Approved,
    Denied,
    Expired,
    Cancelled,
    Revoked,
    /// Nothing changed (a tick before the deadline).
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request is {0}, not pending")]
    NotPending(&'static str),
    #[error("the request expired before this decision")]
    Expired,
    #[error("nobody decides their own request")]
    OwnRequest,
    #[error("you already decided this request; one person counts once")]
    AlreadyDecided,
    #[error("level {level} waits for a member of group {group}")]
    NotInGroup { level: usize, group: String },
    #[error("only the requester may cancel a request")]
    NotRequester,
    #[error("only an approved request's grant can be revoked (this one is {0})")]
    NotApproved(&'static str),
}

impl Request {
    /// A new request waiting at its first level.
    pub fn pending(
        requester: &str,
        levels: Vec<Level>,
        decide_by: i64,
        window: (i64, i64),
    ) -> Self {
        Request {
            requester: requester.to_owned(),
            levels,
            state: State::Pending,
            level: 0,
            votes: Vec::new(),
            decide_by,
            window,
            emergency: false,
            revoked_by: None,
        }
    }

    /// Emergency access: approved at once, without decisions, and flagged for review.
    pub fn emergency(requester: &str, levels: Vec<Level>, at: i64, window: (i64, i64)) -> Self {
        Request {
            state: State::Approved,
            emergency: true,
            ..Request::pending(requester, levels, at, window)
        }
    }

    /// The group whose members decide now, while pending.
    pub fn waiting_on(&self) -> Option<&Level> {
        (self.state == State::Pending)
            .then(|| self.levels.get(self.level))
            .flatten()
    }

    /// Approvals counted at `level`.
    pub fn approvals_at(&self, level: usize) -> u32 {
        let n = self
            .votes
            .iter()
            .filter(|v| v.level == level && v.verdict == Verdict::Approve)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Whether the request's grant lets its holder in at `at`.
    pub fn grant_active(&self, at: i64) -> bool {
        self.state == State::Approved && self.window.0 <= at && at < self.window.1
    }

    /// Whether every level has its approvals from distinct people other than the requester (or the
    /// request is an emergency one). What a grant must never exist without.
    pub fn fully_approved(&self) -> bool {
        if self.emergency {
            return true;
        }
        self.levels.iter().enumerate().all(|(i, l)| {
            let mut who: Vec<&str> = self
                .votes
                .iter()
                .filter(|v| v.level == i && v.verdict == Verdict::Approve)
                .map(|v| v.approver.as_str())
                .filter(|a| *a != self.requester)
                .collect();
            who.sort_unstable();
            who.dedup();
            u32::try_from(who.len()).unwrap_or(u32::MAX) >= l.required
        })
    }

    /// Applies one event; the request is unchanged when the event is refused.
    pub fn apply(&mut self, event: &Event<'_>) -> Result<Effect, Refusal> {
        match *event {
            Event::Tick { at } => {
                if self.state == State::Pending && at >= self.decide_by {
                    self.state = State::Expired;
                    return Ok(Effect::Expired);
                }
                Ok(Effect::Nothing)
            }
            Event::Cancel { who } => {
                if self.state != State::Pending {
                    return Err(Refusal::NotPending(self.state.as_str()));
                }
                if who != self.requester {
                    return Err(Refusal::NotRequester);
                }
                self.state = State::Cancelled;
                Ok(Effect::Cancelled)
            }
            Event::Revoke { who } => {
                if self.state != State::Approved {
                    return Err(Refusal::NotApproved(self.state.as_str()));
                }
                self.state = State::Revoked;
                self.revoked_by = Some(who.to_owned());
                Ok(Effect::Revoked)
            }
            Event::Decide {
                who,
                groups,
                verdict,
                comment,
                at,
            } => {
                if self.state != State::Pending {
                    return Err(Refusal::NotPending(self.state.as_str()));
                }
                if at >= self.decide_by {
                    return Err(Refusal::Expired);
                }
                if who == self.requester {
                    return Err(Refusal::OwnRequest);
                }
                if self.votes.iter().any(|v| v.approver == who) {
                    return Err(Refusal::AlreadyDecided);
                }
                let Some(level) = self.levels.get(self.level) else {
                    // A pending request always has a current level; treat anything else as closed.
                    return Err(Refusal::NotPending(self.state.as_str()));
                };
                if !groups.contains(&level.group) {
                    return Err(Refusal::NotInGroup {
                        level: self.level + 1,
                        group: level.group.clone(),
                    });
                }
                let required = level.required;
                self.votes.push(Vote {
                    approver: who.to_owned(),
                    level: self.level,
                    verdict,
                    at,
                    comment: comment.to_owned(),
                });
                if verdict == Verdict::Deny {
                    self.state = State::Denied;
                    return Ok(Effect::Denied);
                }
                if self.approvals_at(self.level) < required {
                    return Ok(Effect::Counted);
                }
                if self.level + 1 < self.levels.len() {
                    self.level += 1;
                    return Ok(Effect::Advanced {
                        to_level: self.level,
                    });
                }
                self.state = State::Approved;
                Ok(Effect::Approved)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn two_levels() -> Request {
        Request::pending(
            "alice",
            parse_levels("levels", "leads:1,security:2").unwrap(),
            1000,
            (0, 7200),
        )
    }

    fn decide<'a>(who: &'a str, groups: &'a [String], verdict: Verdict, at: i64) -> Event<'a> {
        Event::Decide {
            who,
            groups,
            verdict,
            comment: "",
            at,
        }
    }

    fn g(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn levels_parse_and_refuse() {
        let l = parse_levels("levels", "leads:1, security:2").unwrap();
        assert_eq!(levels_text(&l), "leads:1,security:2");
        assert_eq!(parse_levels("levels", "leads").unwrap()[0].required, 1);
        for bad in [
            "",
            "leads:0",
            "leads:x",
            "a:1,b:1,c:1,d:1",
            "Bad Group:1",
            "leads:11",
        ] {
            let e = parse_levels("levels", bad).unwrap_err();
            assert_eq!(e.field, "levels", "{bad}");
        }
    }

    #[test]
    fn levels_in_order_with_distinct_approvers() {
        let mut r = two_levels();
        let leads = g(&["leads"]);
        let sec = g(&["security"]);
        let both = g(&["leads", "security"]);
        // Level 2 may not decide before level 1.
        assert_eq!(
            r.apply(&decide("sam", &sec, Verdict::Approve, 10)),
            Err(Refusal::NotInGroup {
                level: 1,
                group: "leads".into()
            })
        );
        assert_eq!(
            r.apply(&decide("lea", &both, Verdict::Approve, 10)),
            Ok(Effect::Advanced { to_level: 1 })
        );
        // The same person does not count again at the next level.
        assert_eq!(
            r.apply(&decide("lea", &both, Verdict::Approve, 11)),
            Err(Refusal::AlreadyDecided)
        );
        assert_eq!(
            r.apply(&decide("sam", &sec, Verdict::Approve, 12)),
            Ok(Effect::Counted)
        );
        assert_eq!(
            r.apply(&decide("sam", &sec, Verdict::Approve, 13)),
            Err(Refusal::AlreadyDecided)
        );
        assert!(!r.grant_active(100));
        assert_eq!(
            r.apply(&decide("sue", &sec, Verdict::Approve, 14)),
            Ok(Effect::Approved)
        );
        assert!(r.fully_approved());
        assert!(r.grant_active(100));
        assert!(!r.grant_active(7200));
        let _ = leads;
    }

    #[test]
    fn requester_never_decides_even_when_in_the_group() {
        let mut r = two_levels();
        let leads = g(&["leads"]);
        assert_eq!(
            r.apply(&decide("alice", &leads, Verdict::Approve, 1)),
            Err(Refusal::OwnRequest)
        );
        assert_eq!(
            r.apply(&decide("alice", &leads, Verdict::Deny, 1)),
            Err(Refusal::OwnRequest)
        );
        assert!(r.votes.is_empty());
    }

    #[test]
    fn one_refusal_ends_it() {
        let mut r = two_levels();
        let leads = g(&["leads"]);
        let sec = g(&["security"]);
        r.apply(&decide("lea", &leads, Verdict::Approve, 1))
            .unwrap();
        assert_eq!(
            r.apply(&decide("sam", &sec, Verdict::Deny, 2)),
            Ok(Effect::Denied)
        );
        assert_eq!(
            r.apply(&decide("sue", &sec, Verdict::Approve, 3)),
            Err(Refusal::NotPending("denied"))
        );
        assert!(!r.grant_active(100));
    }

    #[test]
    fn expiry_beats_a_late_decision() {
        let mut r = two_levels();
        let leads = g(&["leads"]);
        assert_eq!(
            r.apply(&decide("lea", &leads, Verdict::Approve, 1000)),
            Err(Refusal::Expired)
        );
        assert_eq!(r.apply(&Event::Tick { at: 999 }), Ok(Effect::Nothing));
        assert_eq!(r.apply(&Event::Tick { at: 1000 }), Ok(Effect::Expired));
        assert_eq!(r.state, State::Expired);
    }

    #[test]
    fn cancel_and_revoke() {
        let mut r = two_levels();
        assert_eq!(
            r.apply(&Event::Cancel { who: "bob" }),
            Err(Refusal::NotRequester)
        );
        assert_eq!(
            r.apply(&Event::Revoke { who: "admin" }),
            Err(Refusal::NotApproved("pending"))
        );
        assert_eq!(
            r.apply(&Event::Cancel { who: "alice" }),
            Ok(Effect::Cancelled)
        );
        let mut e = Request::emergency("alice", vec![], 0, (0, 3600));
        assert!(e.grant_active(10));
        assert_eq!(
            e.apply(&Event::Revoke { who: "admin" }),
            Ok(Effect::Revoked)
        );
        assert!(!e.grant_active(10));
        assert_eq!(e.revoked_by.as_deref(), Some("admin"));
    }

    #[test]
    fn states_round_trip() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        const PEOPLE: [&str; 5] = ["alice", "lea", "sam", "sue", "tom"];

        #[derive(Debug, Clone)]
        enum Step {
            Decide {
                who: usize,
                groups: u8,
                approve: bool,
                dt: i64,
            },
            Tick {
                dt: i64,
            },
            Cancel {
                who: usize,
            },
            Revoke,
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                6 => (0..PEOPLE.len(), 0u8..8, proptest::bool::weighted(0.85), 0i64..300)
                    .prop_map(|(who, groups, approve, dt)| Step::Decide { who, groups, approve, dt }),
                2 => (0i64..600).prop_map(|dt| Step::Tick { dt }),
                1 => (0..PEOPLE.len()).prop_map(|who| Step::Cancel { who }),
                1 => Just(Step::Revoke),
            ]
        }

        fn groups_of(mask: u8) -> Vec<String> {
            ["leads", "security", "ops"]
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, g)| g.to_string())
                .collect()
        }

        proptest! {
            /// For random decisions, clocks, cancels and revocations: a grant is active only with
            /// every level's approvals from distinct non-requesters; every accepted decision is in
            /// the votes and every refused one changed nothing; a closed request stays closed.
            #[test]
            fn no_grant_without_approvals_and_no_lost_decision(
                levels in proptest::sample::select(vec!["leads:1", "leads:2", "leads:1,security:1", "leads:1,security:2,ops:1"]),
                steps in proptest::collection::vec(step(), 0..40),
            ) {
                let mut r = Request::pending("alice", parse_levels("l", levels).unwrap(), 3600, (0, 100_000));
                let mut now = 0i64;
                for s in steps {
                    let before = r.clone();
                    let result = match &s {
                        Step::Decide { who, groups, approve, dt } => {
                            now += dt;
                            let gs = groups_of(*groups);
                            let verdict = if *approve { Verdict::Approve } else { Verdict::Deny };
                            let res = r.apply(&Event::Decide { who: PEOPLE[*who], groups: &gs, verdict, comment: "c", at: now });
                            if res.is_ok() {
                                prop_assert_eq!(r.votes.len(), before.votes.len() + 1);
                                let v = r.votes.last().unwrap();
                                prop_assert_eq!(v.approver.as_str(), PEOPLE[*who]);
                                prop_assert_eq!(v.verdict, verdict);
                                prop_assert!(v.approver != "alice");
                            }
                            res
                        }
                        Step::Tick { dt } => { now += dt; r.apply(&Event::Tick { at: now }) }
                        Step::Cancel { who } => r.apply(&Event::Cancel { who: PEOPLE[*who] }),
                        Step::Revoke => r.apply(&Event::Revoke { who: "admin" }),
                    };
                    match result {
                        Err(_) => prop_assert_eq!(&r, &before),
                        Ok(_) => {
                            // Votes are only ever appended.
                            prop_assert_eq!(&r.votes[..before.votes.len()], &before.votes[..]);
                        }
                    }
                    if before.state != State::Pending {
                        // Closed stays closed (an approved one may only be revoked).
                        prop_assert!(r.state == before.state || (before.state == State::Approved && r.state == State::Revoked));
                    }
                    if r.state == State::Approved || r.state == State::Revoked {
                        prop_assert!(r.fully_approved(), "approved without approvals: {:?}", r);
                    }
                    for at in [0, now, 50_000] {
                        if r.grant_active(at) {
                            prop_assert!(r.fully_approved());
                            prop_assert_eq!(r.state, State::Approved);
                        }
                    }
                    let mut voters: Vec<&str> = r.votes.iter().map(|v| v.approver.as_str()).collect();
                    voters.sort_unstable();
                    let n = voters.len();
                    voters.dedup();
                    prop_assert_eq!(voters.len(), n, "one person counts once");
                }
            }
        }
    }
}
