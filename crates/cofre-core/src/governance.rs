//! Dual control: which changes widen someone's access, whether such a change waits for a second
//! admin, and who may be that second admin.
//!
//! "Widens" is decided here, on plain values, so that every front end holds the same line and the
//! line is unit-tested: a change widens when, after it, someone could reach a secret or decide an
//! approval that they could not reach or decide before. Where the answer depends on facts that can
//! change later (a target's tags), the rule errs towards "widens".

use crate::approval::{Level, Request};
use crate::policy::{Policy, TargetSelector};
use crate::role::Role;
use serde::{Deserialize, Serialize};

/// `[governance] dual_control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DualControl {
    /// Every widening change waits for a second admin, even on an instance with one admin.
    Required,
    /// As `required` where a second admin exists; a lone admin's changes apply, audited
    /// `unilateral`, with an alert.
    #[default]
    WhenPossible,
    /// Changes apply at once (audited as usual).
    Off,
}

impl DualControl {
    pub fn as_str(self) -> &'static str {
        match self {
            DualControl::Required => "required",
            DualControl::WhenPossible => "when-possible",
            DualControl::Off => "off",
        }
    }

    /// How much protection the setting gives, for "is this a lowering?".
    fn strength(self) -> u8 {
        match self {
            DualControl::Off => 0,
            DualControl::WhenPossible => 1,
            DualControl::Required => 2,
        }
    }

    /// Whether moving from `self` to `to` lowers the protection.
    pub fn lowered_by(self, to: DualControl) -> bool {
        to.strength() < self.strength()
    }
}

/// What to do with a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// It widens nothing (or dual control is off): apply it.
    Apply,
    /// It widens, but no second admin exists: apply it, audited `unilateral`, and alert.
    Unilateral,
    /// It widens: store it as a change request until a second admin approves.
    Hold,
}

/// `other_admins`: admins on the instance besides the proposer.
pub fn gate(setting: DualControl, widens: bool, other_admins: usize) -> Gate {
    match (widens, setting) {
        (false, _) | (true, DualControl::Off) => Gate::Apply,
        (true, DualControl::WhenPossible) if other_admins == 0 => Gate::Unilateral,
        (true, _) => Gate::Hold,
    }
}

/// Whether `new` lets someone do what no existing policy of its group already lets them do.
/// Adding a policy where an existing one of the same group covers the same selector and access
/// from every source network the new one applies from only narrows (the most restrictive match
/// wins and every match's limits apply). A selector is covered by an equal selector or by `*`:
/// tags change, so `tag:prod` never covers `db01`. Networks matter because a policy does not
/// match at all from outside its own (`--from`): there, the new policy would be the only one.
/// Windows do not, since a matching policy outside its window refuses whatever else matches.
pub fn policy_add_widens(existing: &[Policy], new: &Policy) -> bool {
    let same_group: Vec<&Policy> = existing
        .iter()
        .filter(|p| p.group == new.group && !networks_grow(p, new))
        .collect();
    new.targets.iter().any(|selector| {
        new.access.iter().any(|access| {
            !same_group.iter().any(|p| {
                p.access.contains(access)
                    && p.targets
                        .iter()
                        .any(|s| *s == TargetSelector::All || s == selector)
            })
        })
    })
}

/// Whether `to` applies from a source network that `from` does not (no networks: anywhere).
fn networks_grow(from: &Policy, to: &Policy) -> bool {
    match (
        from.limits.networks.is_empty(),
        to.limits.networks.is_empty(),
    ) {
        (true, _) => false,
        (false, true) => true,
        (false, false) => !to
            .limits
            .networks
            .iter()
            .all(|n| from.limits.networks.iter().any(|f| f.contains(n))),
    }
}

/// Two selectors may match one target unless both name different targets.
fn may_overlap(a: &TargetSelector, b: &TargetSelector) -> bool {
    !matches!((a, b), (TargetSelector::Name(x), TargetSelector::Name(y)) if x != y)
}

/// Whether removing `removed` widens: it may have been the restrictive one (a stricter outcome,
/// tighter limits) over another policy of its group that shares an access and may share a target.
pub fn policy_remove_widens(remaining: &[Policy], removed: &Policy) -> bool {
    remaining
        .iter()
        .filter(|p| p.group == removed.group && p.name != removed.name)
        .any(|p| {
            p.access.iter().any(|a| removed.access.contains(a))
                && p.targets
                    .iter()
                    .any(|s| removed.targets.iter().any(|r| may_overlap(s, r)))
        })
}

/// Whether editing `old` into `new` widens, judged on the pair (with `others`, the group's other
/// policies, for what the old one may have restricted). It widens when the new form grants what
/// the old did not (another group, a selector or access it did not cover, a source network
/// outside its own) or loosens a limit (a less restrictive outcome, fewer or smaller approval
/// levels, a longer grant, more hours, days or dates, emergency access, no moderator). Because
/// the most restrictive match wins, matching less can widen too: when the edit drops part of the
/// old scope (selectors, access, networks) and the old policy could have restricted another of
/// its group, it counts as widening, as removing it would.
pub fn policy_edit_widens(others: &[Policy], old: &Policy, new: &Policy) -> bool {
    if old.group != new.group {
        return true;
    }
    let grows = scope_grows(old, new) || limits_loosen(old, new);
    grows || (scope_grows(new, old) && policy_remove_widens(others, old))
}

/// Whether `to` covers a selector, access or source network that `from` does not.
fn scope_grows(from: &Policy, to: &Policy) -> bool {
    let selector_covered = |s: &TargetSelector| {
        from.targets
            .iter()
            .any(|f| *f == TargetSelector::All || f == s)
    };
    !to.targets.iter().all(selector_covered)
        || !to.access.iter().all(|a| from.access.contains(a))
        || networks_grow(from, to)
}

fn limits_loosen(old: &Policy, new: &Policy) -> bool {
    let (o, n) = (&old.limits, &new.limits);
    let levels_loosen = new.outcome == crate::policy::Outcome::Approve
        && !o.levels.iter().all(|ol| {
            n.levels
                .iter()
                .any(|nl| nl.group == ol.group && nl.required >= ol.required)
        });
    let duration_longer = match (o.max_duration_minutes, n.max_duration_minutes) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(a), Some(b)) => b > a,
    };
    new.outcome < old.outcome
        || levels_loosen
        || duration_longer
        || (n.emergency && !o.emergency)
        || (o.moderated && !n.moderated)
        || window_grows(&o.window, &n.window)
}

/// Whether `to` applies at some moment `from` does not. Dates compare directly; days and hours
/// (which interact past midnight) are checked minute by minute over one week.
fn window_grows(from: &crate::policy::Window, to: &crate::policy::Window) -> bool {
    let earlier_start = match (from.from, to.from) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(a), Some(b)) => b < a,
    };
    let later_end = match (from.until, to.until) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(a), Some(b)) => b > a,
    };
    if earlier_start || later_end {
        return true;
    }
    let weekly = |w: &crate::policy::Window| crate::policy::Window {
        days: w.days,
        hours: w.hours,
        from: None,
        until: None,
    };
    let (f, t) = (weekly(from), weekly(to));
    if f == t || f.is_unlimited() {
        return false;
    }
    // 2024-01-01 is a Monday; any week will do.
    let Ok(monday) = time::Date::from_calendar_date(2024, time::Month::January, 1) else {
        return true;
    };
    let start = monday.midnight();
    (0..7 * 24 * 60).any(|m| {
        let at = start + time::Duration::minutes(m);
        t.check(at).is_ok() && f.check(at).is_err()
    })
}

/// Whether membership of `group` grants anything: a policy grants to it, or an approval level
/// draws its approvers from it.
pub fn group_is_named(policies: &[Policy], group: &str) -> bool {
    policies
        .iter()
        .any(|p| p.group == group || p.limits.levels.iter().any(|l| l.group == group))
}

/// Roles that decide approvals (access requests, and for admins, changes).
pub fn is_deciding_role(role: Role) -> bool {
    matches!(role, Role::Admin | Role::Approver)
}

/// Whether changing a user's role from `from` to `to` widens: gaining admin, or gaining approver
/// from a role that does not decide.
pub fn role_change_widens(from: Role, to: Role) -> bool {
    from != to && is_deciding_role(to) && from != Role::Admin
}

/// Whether creating a user widens: a deciding role, or membership of a named group. A user
/// created with role `user` and groups no policy names widens nothing.
pub fn user_create_widens(policies: &[Policy], role: Role, groups: &[String]) -> bool {
    is_deciding_role(role) || groups.iter().any(|g| group_is_named(policies, g))
}

/// Whether enabling a user widens: a disabled user's role, groups, keys and password all work
/// again at once, so enabling one always does (and enabling an enabled user changes nothing).
pub fn user_enable_widens(disabled: bool) -> bool {
    disabled
}

/// Who changed a user's account, role, groups or password, and when (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChange {
    pub changed_by: String,
    pub at: i64,
}

/// Whether an approver counts on `requester`'s requests at `now`: not if the requester created or
/// changed the approver's account, role, groups or password in the last `cooling_off_seconds`
/// (so an admin cannot make itself a second approver to rubber-stamp its own changes).
pub fn counts_for(
    approver_changes: &[AccountChange],
    requester: &str,
    now: i64,
    cooling_off_seconds: i64,
) -> bool {
    let since = now.saturating_sub(cooling_off_seconds);
    !approver_changes
        .iter()
        .any(|c| c.changed_by == requester && c.at > since)
}

/// The pseudo-group whose members (the instance's admins) decide change requests.
pub const ADMINS: &str = "@admins";

/// A change request as the approval engine sees it: one level, one approver from the admins,
/// never the proposer.
pub fn change_request(proposer: &str, decide_by: i64) -> Request {
    Request::pending(
        proposer,
        vec![Level {
            group: ADMINS.to_owned(),
            required: 1,
        }],
        decide_by,
        (0, 0),
    )
}

/// The groups a decider of change requests has in the engine's eyes.
pub fn change_decider_groups(role: Role) -> Vec<String> {
    if role == Role::Admin {
        vec![ADMINS.to_owned()]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::{Event, Refusal, State, Verdict};
    use crate::policy::{Access, Limits, Outcome};

    fn policy(name: &str, group: &str, targets: &[&str], access: &[Access]) -> Policy {
        Policy {
            name: name.into(),
            group: group.into(),
            targets: targets
                .iter()
                .map(|t| TargetSelector::parse("targets", t).unwrap_or(TargetSelector::All))
                .collect(),
            access: access.to_vec(),
            outcome: Outcome::Allow,
            limits: Limits::default(),
        }
    }

    #[test]
    fn an_edit_is_judged_on_the_pair() {
        use crate::approval::Level;
        use crate::policy::Window;
        let mut old = policy("p", "ops", &["db01"], &[Access::Session]);
        old.outcome = Outcome::Approve;
        old.limits.levels = vec![
            Level {
                group: "leads".into(),
                required: 1,
            },
            Level {
                group: "sec".into(),
                required: 1,
            },
        ];
        old.limits.moderated = true;
        old.limits.max_duration_minutes = Some(60);
        old.limits.window.hours = Window::parse_hours("hours", "08:00-20:00").ok();
        old.limits.networks = vec!["10.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())];
        let edit = |f: &dyn Fn(&mut Policy)| {
            let mut n = old.clone();
            f(&mut n);
            policy_edit_widens(&[], &old, &n)
        };
        assert!(!edit(&|_| {}), "no change widens nothing");
        // Narrowing.
        assert!(!edit(&|n| n.limits.levels[0].required = 2));
        assert!(!edit(&|n| n.limits.max_duration_minutes = Some(30)));
        assert!(!edit(
            &|n| n.limits.window.hours = Window::parse_hours("hours", "09:00-17:00").ok()
        ));
        assert!(!edit(
            &|n| n.limits.window.days = Window::parse_days("days", "mon-fri").ok()
        ));
        assert!(!edit(
            &|n| n.limits.networks = vec!["10.1.0.0/16".parse().unwrap_or_else(|_| unreachable!())]
        ));
        assert!(!edit(&|n| n.limits.levels.push(Level {
            group: "cab".into(),
            required: 1
        })));
        // Widening.
        assert!(edit(&|n| {
            n.limits.levels.pop();
        }));
        assert!(edit(&|n| n.limits.levels[1].group = "ops".into()));
        assert!(edit(&|n| n.outcome = Outcome::Justify));
        assert!(edit(&|n| n.limits.moderated = false));
        assert!(edit(&|n| n.limits.emergency = true));
        assert!(edit(&|n| n.limits.max_duration_minutes = None));
        assert!(edit(&|n| n.limits.window.hours = None));
        assert!(edit(
            &|n| n.limits.window.hours = Window::parse_hours("hours", "22:00-06:00").ok()
        ));
        assert!(edit(&|n| n.limits.networks.clear()));
        assert!(edit(
            &|n| n.limits.networks = vec!["0.0.0.0/0".parse().unwrap_or_else(|_| unreachable!())]
        ));
        assert!(edit(&|n| n.targets.push(TargetSelector::All)));
        assert!(edit(&|n| n.access.push(Access::Reveal)));
        assert!(edit(&|n| n.group = "dev".into()));
        // Past midnight the early hours belong to the day before: Sunday night widens mon-fri.
        let mut nightly = policy("n", "ops", &["db01"], &[Access::Session]);
        nightly.limits.window.hours = Window::parse_hours("hours", "22:00-06:00").ok();
        nightly.limits.window.days = Window::parse_days("days", "mon-fri").ok();
        let mut wider = nightly.clone();
        wider.limits.window.days = Window::parse_days("days", "mon-fri,sun").ok();
        assert!(policy_edit_widens(&[], &nightly, &wider));
        assert!(!policy_edit_widens(&[], &wider, &nightly));
        // Matching less widens where the old policy restricted another of its group.
        let open = policy("open", "ops", &["*"], &[Access::Session]);
        let mut fewer = old.clone();
        fewer.targets = vec![TargetSelector::Name("db02".into())];
        assert!(policy_edit_widens(
            std::slice::from_ref(&open),
            &old,
            &fewer
        ));
        let mut fewer_nets = old.clone();
        fewer_nets.limits.networks = vec!["10.1.0.0/16".parse().unwrap_or_else(|_| unreachable!())];
        assert!(policy_edit_widens(&[open], &old, &fewer_nets));
    }

    #[test]
    fn the_gate() {
        use DualControl::*;
        assert_eq!(gate(WhenPossible, false, 0), Gate::Apply);
        assert_eq!(gate(WhenPossible, true, 0), Gate::Unilateral);
        assert_eq!(gate(WhenPossible, true, 1), Gate::Hold);
        assert_eq!(gate(Required, true, 0), Gate::Hold);
        assert_eq!(gate(Required, false, 3), Gate::Apply);
        assert_eq!(gate(Off, true, 3), Gate::Apply);
    }

    #[test]
    fn a_first_policy_widens_and_a_covered_one_narrows() {
        let new = policy("p", "ops", &["*"], &[Access::Reveal]);
        assert!(policy_add_widens(&[], &new));
        let existing = [policy(
            "q",
            "ops",
            &["*"],
            &[Access::Reveal, Access::Session],
        )];
        assert!(!policy_add_widens(&existing, &new));
        let tagged = policy("t", "ops", &["tag:prod"], &[Access::Session]);
        assert!(!policy_add_widens(&existing, &tagged));
        // Same selector, other access: widens.
        let other = [policy("q", "ops", &["tag:prod"], &[Access::Reveal])];
        assert!(policy_add_widens(&other, &tagged));
        // Another group's policy covers nothing for this one.
        let elsewhere = [policy("q", "dev", &["*"], &[Access::Session])];
        assert!(policy_add_widens(&elsewhere, &tagged));
        // A tag never covers a name, nor a name `*`.
        let by_tag = [policy("q", "ops", &["tag:prod"], &[Access::Session])];
        assert!(policy_add_widens(
            &by_tag,
            &policy("n", "ops", &["db01"], &[Access::Session])
        ));
        let by_name = [policy("q", "ops", &["db01"], &[Access::Session])];
        assert!(policy_add_widens(
            &by_name,
            &policy("n", "ops", &["*"], &[Access::Session])
        ));
    }

    #[test]
    fn a_policy_is_covered_only_from_the_networks_of_the_one_covering_it() {
        let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap_or_else(|_| unreachable!());
        let mut office = policy("office", "ops", &["db01"], &[Access::Session]);
        office.limits.networks = vec![net("10.0.0.0/8")];
        // From anywhere: outside 10/8 nothing matched before, now this one does.
        let mut anywhere = policy("any", "ops", &["db01"], &[Access::Session]);
        anywhere.outcome = Outcome::Approve;
        assert!(policy_add_widens(std::slice::from_ref(&office), &anywhere));
        // From another network: widens; from inside the covering one: only narrows.
        let mut home = anywhere.clone();
        home.limits.networks = vec![net("192.168.0.0/16")];
        assert!(policy_add_widens(std::slice::from_ref(&office), &home));
        let mut lab = anywhere.clone();
        lab.limits.networks = vec![net("10.20.0.0/16")];
        assert!(!policy_add_widens(std::slice::from_ref(&office), &lab));
        // A covering policy without networks covers every network.
        let everywhere = policy("e", "ops", &["db01"], &[Access::Session]);
        assert!(!policy_add_widens(std::slice::from_ref(&everywhere), &home));
    }

    #[test]
    fn removing_a_policy_widens_only_where_it_restricted_another() {
        let strict = policy("strict", "ops", &["tag:prod"], &[Access::Reveal]);
        assert!(!policy_remove_widens(&[], &strict));
        let broad = policy("broad", "ops", &["*"], &[Access::Reveal]);
        assert!(policy_remove_widens(
            &[broad.clone(), strict.clone()],
            &strict
        ));
        let other_access = policy("s", "ops", &["*"], &[Access::Session]);
        assert!(!policy_remove_widens(&[other_access], &strict));
        let other_group = policy("s", "dev", &["*"], &[Access::Reveal]);
        assert!(!policy_remove_widens(&[other_group], &strict));
        let a = policy("a", "ops", &["db01"], &[Access::Reveal]);
        let b = policy("b", "ops", &["db02"], &[Access::Reveal]);
        assert!(!policy_remove_widens(std::slice::from_ref(&b), &a));
        let tag = policy("c", "ops", &["tag:dev"], &[Access::Reveal]);
        assert!(policy_remove_widens(&[tag], &a), "db01 may carry tag dev");
    }

    #[test]
    fn named_groups_roles_and_new_users() {
        let mut p = policy("p", "ops", &["*"], &[Access::Reveal]);
        p.limits.levels = vec![Level {
            group: "leads".into(),
            required: 1,
        }];
        let ps = [p];
        assert!(group_is_named(&ps, "ops"));
        assert!(group_is_named(&ps, "leads"));
        assert!(!group_is_named(&ps, "lunch"));
        assert!(role_change_widens(Role::User, Role::Approver));
        assert!(role_change_widens(Role::Approver, Role::Admin));
        assert!(role_change_widens(Role::Auditor, Role::Admin));
        assert!(!role_change_widens(Role::Admin, Role::Approver));
        assert!(!role_change_widens(Role::Admin, Role::User));
        assert!(!role_change_widens(Role::Admin, Role::Admin));
        assert!(!role_change_widens(Role::User, Role::Auditor));
        assert!(!user_create_widens(&ps, Role::User, &[]));
        assert!(!user_create_widens(&ps, Role::User, &["lunch".into()]));
        assert!(user_create_widens(&ps, Role::User, &["leads".into()]));
        assert!(user_create_widens(&ps, Role::Approver, &[]));
        assert!(user_create_widens(&[], Role::Admin, &[]));
        assert!(
            user_enable_widens(true),
            "enabling a disabled user gives it all back"
        );
        assert!(!user_enable_widens(false));
    }

    #[test]
    fn cooling_off() {
        let day = 86_400;
        let made = [AccountChange {
            changed_by: "x".into(),
            at: 10 * day,
        }];
        assert!(!counts_for(&made, "x", 10 * day + 1, 7 * day));
        assert!(!counts_for(&made, "x", 17 * day - 1, 7 * day));
        assert!(counts_for(&made, "x", 17 * day, 7 * day));
        assert!(counts_for(&made, "y", 10 * day + 1, 7 * day));
        assert!(counts_for(&made, "x", 10 * day + 1, 0));
        assert!(counts_for(&[], "x", 0, 7 * day));
    }

    #[test]
    fn lowering_dual_control() {
        use DualControl::*;
        assert!(Required.lowered_by(WhenPossible));
        assert!(WhenPossible.lowered_by(Off));
        assert!(!Off.lowered_by(Required));
        assert!(!WhenPossible.lowered_by(WhenPossible));
    }

    #[test]
    fn a_change_needs_one_admin_who_is_not_the_proposer() {
        let mut r = change_request("x", 100);
        let admins = change_decider_groups(Role::Admin);
        let own = r.apply(&Event::Decide {
            who: "x",
            groups: &admins,
            verdict: Verdict::Approve,
            comment: "",
            at: 1,
        });
        assert_eq!(own, Err(Refusal::OwnRequest));
        let approver = change_decider_groups(Role::Approver);
        assert!(r
            .apply(&Event::Decide {
                who: "y",
                groups: &approver,
                verdict: Verdict::Approve,
                comment: "",
                at: 1,
            })
            .is_err());
        assert!(r
            .apply(&Event::Decide {
                who: "y",
                groups: &admins,
                verdict: Verdict::Approve,
                comment: "",
                at: 1,
            })
            .is_ok());
        assert_eq!(r.state, State::Approved);
    }
}
