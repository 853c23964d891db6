//! Policies: which group may do what on which targets, and with what outcome.
//!
//! Where several policies match one user, target and access, the most restrictive outcome wins
//! (`approve` over `justify` over `allow`), so adding a policy can never weaken another one.

use crate::FieldError;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Session,
    Reveal,
    /// Invite a third party (an e-mail address) to sessions on the target (issue 18). Only ever
    /// on top of the inviter's own `session`: an invitation never reaches beyond its inviter.
    Invite,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Session => "session",
            Access::Reveal => "reveal",
            Access::Invite => "invite",
        }
    }
    pub fn parse(s: &str) -> Option<Access> {
        match s {
            "session" => Some(Access::Session),
            "reveal" => Some(Access::Reveal),
            "invite" => Some(Access::Invite),
            _ => None,
        }
    }
}

/// Ordered from least to most restrictive; `Ord` is what "most restrictive wins" uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Justify,
    Approve,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Justify => "justify",
            Outcome::Approve => "approve",
        }
    }
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "allow" => Some(Outcome::Allow),
            "justify" => Some(Outcome::Justify),
            "approve" => Some(Outcome::Approve),
            _ => None,
        }
    }
}

/// Which targets a policy covers: `*`, `tag:TAG`, or a target name (optionally `name:NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetSelector {
    All,
    Tag(String),
    Name(String),
}

impl TargetSelector {
    pub fn parse(field: &str, s: &str) -> Result<TargetSelector, FieldError> {
        if s == "*" {
            return Ok(TargetSelector::All);
        }
        if let Some(tag) = s.strip_prefix("tag:") {
            crate::names::check_identifier(field, tag)?;
            return Ok(TargetSelector::Tag(tag.to_owned()));
        }
        let name = s.strip_prefix("name:").unwrap_or(s);
        crate::names::check_identifier(field, name).map_err(|e| {
            FieldError::new(
                e.field,
                format!("{} (expected '*', 'tag:TAG' or a target name)", e.reason),
            )
        })?;
        Ok(TargetSelector::Name(name.to_owned()))
    }

    pub fn matches(&self, target: &TargetRef<'_>) -> bool {
        match self {
            TargetSelector::All => true,
            TargetSelector::Tag(t) => target.tags.iter().any(|x| x == t),
            TargetSelector::Name(n) => n == target.name,
        }
    }
}

impl std::fmt::Display for TargetSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetSelector::All => f.write_str("*"),
            TargetSelector::Tag(t) => write!(f, "tag:{t}"),
            TargetSelector::Name(n) => f.write_str(n),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub group: String,
    pub targets: Vec<TargetSelector>,
    pub access: Vec<Access>,
    pub outcome: Outcome,
    pub limits: Limits,
}

/// When and how long a policy grants, and (for `approve`) who must agree.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    pub window: Window,
    /// The longest grant an approved request (or emergency access) gets.
    pub max_duration_minutes: Option<u32>,
    /// Approval levels, for the `approve` outcome.
    pub levels: Vec<crate::approval::Level>,
    /// Whether emergency access (no approval, reviewed afterwards) is allowed.
    pub emergency: bool,
    /// A session waits for a moderator (an admin, or an approver of the user's groups) to watch,
    /// and is held while none does.
    pub moderated: bool,
    /// The source networks the policy applies from (`policy add --from`); empty: anywhere.
    pub networks: Vec<ipnet::IpNet>,
}

impl Policy {
    pub fn covers(&self, groups: &[String], target: &TargetRef<'_>) -> bool {
        groups.contains(&self.group) && self.targets.iter().any(|s| s.matches(target))
    }

    /// Whether the policy applies to a request from `source`: outside its networks it does not
    /// match at all, and an unknown source is outside every network.
    pub fn applies_from(&self, source: Option<IpAddr>) -> bool {
        self.limits.networks.is_empty()
            || source.is_some_and(|s| crate::network::contains(&self.limits.networks, s))
    }

    fn matches(
        &self,
        groups: &[String],
        target: &TargetRef<'_>,
        access: Access,
        source: Option<IpAddr>,
    ) -> bool {
        self.access.contains(&access) && self.covers(groups, target) && self.applies_from(source)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct TargetRef<'a> {
    pub name: &'a str,
    pub tags: &'a [String],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No policy grants this access.
    Deny,
    /// Granted with this outcome; `policy` names the policy that decided (the most restrictive).
    Granted { outcome: Outcome, policy: String },
}

/// What a policy set says about one access at one moment (see [`rule`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ruling {
    /// No policy grants this access.
    Deny,
    /// A matching policy does not apply at this moment (its days, hours or dates).
    Outside {
        policy: String,
        why: String,
    },
    Granted(Terms),
}

/// The combined terms of every matching policy: the most restrictive of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    pub outcome: Outcome,
    /// The policy whose outcome decided.
    pub policy: String,
    /// For `approve`: the levels of the matching `approve` policy that asks the most approvals.
    pub levels: Vec<crate::approval::Level>,
    /// The smallest limit of any matching policy.
    pub max_duration_minutes: Option<u32>,
    /// Only when every matching `approve` policy allows it.
    pub emergency: bool,
    /// When any matching policy asks for a moderator.
    pub moderated: bool,
}

impl Terms {
    /// Both sets of terms at once, each part the most restrictive: the stricter outcome (and its
    /// policy), the levels asking more approvals, the smaller limit, emergency only if both
    /// allow it, moderated if either is. What an invitation needs from its inviter's `invite`
    /// and `session` terms together, so it never gets more than the inviter would.
    pub fn stricter(self, other: Terms) -> Terms {
        let asks = |t: &Terms| t.levels.iter().map(|l| l.required).sum::<u32>();
        let levels = if asks(&other) > asks(&self) {
            other.levels.clone()
        } else {
            self.levels.clone()
        };
        let (outcome, policy) = if other.outcome > self.outcome {
            (other.outcome, other.policy.clone())
        } else {
            (self.outcome, self.policy.clone())
        };
        Terms {
            outcome,
            policy,
            levels,
            max_duration_minutes: match (self.max_duration_minutes, other.max_duration_minutes) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            emergency: self.emergency && other.emergency,
            moderated: self.moderated || other.moderated,
        }
    }
}

/// Decides one access at one local moment: like [`decide`], and every matching policy's window
/// must contain `at` (so a limit on one policy is never widened by another).
pub fn rule(
    policies: &[Policy],
    groups: &[String],
    target: &TargetRef<'_>,
    access: Access,
    at: time::PrimitiveDateTime,
    source: Option<IpAddr>,
) -> Ruling {
    let matching: Vec<&Policy> = policies
        .iter()
        .filter(|p| p.matches(groups, target, access, source))
        .collect();
    for p in &matching {
        if let Err(why) = p.limits.window.check(at) {
            return Ruling::Outside {
                policy: p.name.clone(),
                why,
            };
        }
    }
    let Some(decider) = matching
        .iter()
        .max_by(|a, b| a.outcome.cmp(&b.outcome).then_with(|| b.name.cmp(&a.name)))
    else {
        return Ruling::Deny;
    };
    let approvers = |p: &Policy| p.limits.levels.iter().map(|l| l.required).sum::<u32>();
    let approve: Vec<&&Policy> = matching
        .iter()
        .filter(|p| p.outcome == Outcome::Approve)
        .collect();
    let levels = approve
        .iter()
        .max_by(|a, b| {
            approvers(a)
                .cmp(&approvers(b))
                .then_with(|| a.limits.levels.len().cmp(&b.limits.levels.len()))
                .then_with(|| b.name.cmp(&a.name))
        })
        .map(|p| p.limits.levels.clone())
        .unwrap_or_default();
    Ruling::Granted(Terms {
        outcome: decider.outcome,
        policy: decider.name.clone(),
        levels,
        max_duration_minutes: matching
            .iter()
            .filter_map(|p| p.limits.max_duration_minutes)
            .min(),
        emergency: !approve.is_empty() && approve.iter().all(|p| p.limits.emergency),
        moderated: matching.iter().any(|p| p.limits.moderated),
    })
}

/// Decides one access by one user (through its groups) to one target, from `source` (the
/// client's address; policies with networks match only from inside them).
pub fn decide(
    policies: &[Policy],
    groups: &[String],
    target: &TargetRef<'_>,
    access: Access,
    source: Option<IpAddr>,
) -> Decision {
    policies
        .iter()
        .filter(|p| p.matches(groups, target, access, source))
        // Most restrictive first; among equals the name decides, so the answer is stable.
        .max_by(|a, b| a.outcome.cmp(&b.outcome).then_with(|| b.name.cmp(&a.name)))
        .map_or(Decision::Deny, |p| Decision::Granted {
            outcome: p.outcome,
            policy: p.name.clone(),
        })
}

/// Days of the week, hours of the day and a date range in which a policy applies, all in the
/// instance's time zone. Each part left out means "any".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Window {
    /// Bit 0 = Monday ... bit 6 = Sunday.
    pub days: Option<u8>,
    /// Minutes after midnight, `[from, to)`; `from > to` runs past midnight (22:00-06:00).
    pub hours: Option<(u16, u16)>,
    pub from: Option<time::Date>,
    /// Inclusive.
    pub until: Option<time::Date>,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Window {
    /// `mon-fri`, `sat,sun`, `mon-wed,fri`.
    pub fn parse_days(field: &str, s: &str) -> Result<u8, FieldError> {
        let day = |d: &str| {
            DAY_NAMES
                .iter()
                .position(|n| *n == d.trim().to_ascii_lowercase())
                .ok_or_else(|| {
                    FieldError::new(
                        field,
                        format!(
                            "{d:?} is not a day (mon, tue, wed, thu, fri, sat, sun), e.g. mon-fri"
                        ),
                    )
                })
        };
        let mut mask = 0u8;
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    if a > b {
                        return Err(FieldError::new(
                            field,
                            format!("{part:?}: a range runs forward from Monday, e.g. mon-fri or sat-sun"),
                        ));
                    }
                    (a..=b).for_each(|d| mask |= 1 << d);
                }
                None => mask |= 1 << day(part)?,
            }
        }
        if mask == 0 {
            return Err(FieldError::new(field, "at least one day, e.g. mon-fri"));
        }
        Ok(mask)
    }

    pub fn days_text(mask: u8) -> String {
        DAY_NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `08:00-20:00` (or `22:00-06:00` across midnight; `24:00` ends a range at midnight).
    pub fn parse_hours(field: &str, s: &str) -> Result<(u16, u16), FieldError> {
        let (a, b) = s.split_once('-').ok_or_else(|| {
            FieldError::new(
                field,
                format!("{s:?}: expected HH:MM-HH:MM, e.g. 08:00-20:00"),
            )
        })?;
        let time = |t: &str, end: bool| {
            crate::when::parse_time_of_day(field, t, end).map_err(|e| {
                FieldError::new(
                    field,
                    format!(
                        "{s:?}: expected HH:MM-HH:MM, e.g. 08:00-20:00 ({})",
                        e.reason
                    ),
                )
            })
        };
        // `24:00` at the start too: policies stored before the one grammar may say so (it
        // behaves as 00:00 in `check`).
        let (a, b) = (time(a, true)?, time(b, true)?);
        if a == b {
            return Err(FieldError::new(
                field,
                format!("{s:?}: an empty range of hours"),
            ));
        }
        Ok((a, b))
    }

    pub fn hours_text((a, b): (u16, u16)) -> String {
        format!(
            "{}-{}",
            crate::when::time_of_day_text(a),
            crate::when::time_of_day_text(b)
        )
    }

    /// `YYYY-MM-DD`.
    pub fn parse_date(field: &str, s: &str) -> Result<time::Date, FieldError> {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(s.trim(), &format)
            .map_err(|_| FieldError::new(field, format!("{s:?}: expected a date YYYY-MM-DD")))
    }

    /// Ok, or why `at` is outside.
    pub fn check(&self, at: time::PrimitiveDateTime) -> Result<(), String> {
        if let Some(from) = self.from {
            if at.date() < from {
                return Err(format!("it applies from {from}"));
            }
        }
        if let Some(until) = self.until {
            if at.date() > until {
                return Err(format!("it applied until {until}"));
            }
        }
        if let Some((a, b)) = self.hours {
            let m = u16::from(at.hour()) * 60 + u16::from(at.minute());
            let inside = if a < b {
                a <= m && m < b
            } else {
                m >= a || m < b
            };
            if !inside {
                return Err(format!("it applies {} only", Window::hours_text((a, b))));
            }
            // Past midnight, the early hours belong to the day the range started on.
            if let Some(days) = self.days {
                let day = if a > b && m < b {
                    at.date().previous_day()
                } else {
                    Some(at.date())
                };
                if let Some(day) = day {
                    if days & (1 << day.weekday().number_days_from_monday()) == 0 {
                        return Err(format!("it applies on {} only", Window::days_text(days)));
                    }
                }
                return Ok(());
            }
        }
        if let Some(days) = self.days {
            if days & (1 << at.weekday().number_days_from_monday()) == 0 {
                return Err(format!("it applies on {} only", Window::days_text(days)));
            }
        }
        Ok(())
    }

    pub fn is_unlimited(&self) -> bool {
        self == &Window::default()
    }
}

/// A grant never lasts longer than this, whatever a policy says.
pub const MAX_GRANT_SECONDS: i64 = 7 * 24 * 3600;

pub use crate::when::parse_duration;

/// A policy's maximum duration: whole minutes, at most [`MAX_GRANT_SECONDS`].
pub fn parse_duration_minutes(field: &str, s: &str) -> Result<u32, FieldError> {
    let secs = parse_duration(field, s)?;
    if secs % 60 != 0 || secs > MAX_GRANT_SECONDS {
        return Err(FieldError::new(field, "whole minutes, at most 7d"));
    }
    u32::try_from(secs / 60).map_err(|_| FieldError::new(field, "too long"))
}

/// What a justified access needs from the user: a reason that says something.
pub fn check_reason(outcome: Outcome, reason: Option<&str>) -> Result<(), FieldError> {
    let reason = reason.map(str::trim).unwrap_or("");
    if outcome >= Outcome::Justify && reason.chars().count() < 3 {
        return Err(FieldError::new(
            "reason",
            "this access requires a reason (at least 3 characters), e.g. a ticket number",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn p(name: &str, group: &str, sel: &str, access: &[Access], outcome: Outcome) -> Policy {
        Policy {
            name: name.into(),
            group: group.into(),
            targets: vec![TargetSelector::parse("targets", sel).unwrap()],
            access: access.to_vec(),
            outcome,
            limits: Limits::default(),
        }
    }

    #[test]
    fn selectors_parse() {
        assert_eq!(
            TargetSelector::parse("t", "*").unwrap(),
            TargetSelector::All
        );
        assert_eq!(
            TargetSelector::parse("t", "tag:prod").unwrap(),
            TargetSelector::Tag("prod".into())
        );
        assert_eq!(
            TargetSelector::parse("t", "name:db01").unwrap(),
            TargetSelector::Name("db01".into())
        );
        assert!(TargetSelector::parse("t", "tag:").is_err());
        assert!(TargetSelector::parse("t", "DB 01").is_err());
    }

    #[test]
    fn no_policy_denies() {
        let tags = vec!["prod".to_string()];
        let t = TargetRef {
            name: "db01",
            tags: &tags,
        };
        assert_eq!(
            decide(&[], &["ops".into()], &t, Access::Reveal, None),
            Decision::Deny
        );
    }

    #[test]
    fn a_policy_with_networks_matches_only_from_them() {
        let t = TargetRef {
            name: "db01",
            tags: &[],
        };
        let mut only_office = p("office", "ops", "*", &[Access::Session], Outcome::Allow);
        only_office.limits.networks = vec!["10.20.30.0/24".parse().unwrap()];
        let pols = vec![only_office];
        let g = ["ops".to_string()];
        let from = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(matches!(
            decide(&pols, &g, &t, Access::Session, from("10.20.30.7")),
            Decision::Granted { .. }
        ));
        assert!(matches!(
            decide(&pols, &g, &t, Access::Session, from("::ffff:10.20.30.7")),
            Decision::Granted { .. }
        ));
        assert_eq!(
            decide(&pols, &g, &t, Access::Session, from("10.20.31.7")),
            Decision::Deny
        );
        assert_eq!(decide(&pols, &g, &t, Access::Session, None), Decision::Deny);
    }

    #[test]
    fn group_target_and_access_must_all_match() {
        let tags = vec!["prod".to_string()];
        let t = TargetRef {
            name: "db01",
            tags: &tags,
        };
        let pols = vec![p(
            "a",
            "ops",
            "tag:prod",
            &[Access::Session],
            Outcome::Allow,
        )];
        assert_eq!(
            decide(&pols, &["ops".into()], &t, Access::Reveal, None),
            Decision::Deny
        );
        assert_eq!(
            decide(&pols, &["dev".into()], &t, Access::Session, None),
            Decision::Deny
        );
        let other = TargetRef {
            name: "web01",
            tags: &[],
        };
        assert_eq!(
            decide(&pols, &["ops".into()], &other, Access::Session, None),
            Decision::Deny
        );
        assert!(matches!(
            decide(&pols, &["ops".into()], &t, Access::Session, None),
            Decision::Granted {
                outcome: Outcome::Allow,
                ..
            }
        ));
    }

    #[test]
    fn most_restrictive_wins() {
        let tags = vec!["prod".to_string()];
        let t = TargetRef {
            name: "db01",
            tags: &tags,
        };
        let pols = vec![
            p("loose", "ops", "*", &[Access::Reveal], Outcome::Allow),
            p(
                "strict",
                "leads",
                "db01",
                &[Access::Reveal],
                Outcome::Approve,
            ),
            p(
                "mid",
                "ops",
                "tag:prod",
                &[Access::Reveal],
                Outcome::Justify,
            ),
        ];
        let groups = vec!["ops".to_string(), "leads".to_string()];
        assert_eq!(
            decide(&pols, &groups, &t, Access::Reveal, None),
            Decision::Granted {
                outcome: Outcome::Approve,
                policy: "strict".into()
            }
        );
        assert_eq!(
            decide(&pols, &["ops".into()], &t, Access::Reveal, None),
            Decision::Granted {
                outcome: Outcome::Justify,
                policy: "mid".into()
            }
        );
    }

    fn at(s: &str) -> time::PrimitiveDateTime {
        let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
        time::PrimitiveDateTime::parse(s, &f).unwrap()
    }

    /// The instance's zone decides which hour it is: across Lisbon's change to summer time
    /// (2026-03-29, 01:00 UTC) the same UTC moment falls on either side of an 08:00 start, and
    /// back in winter time (2026-10-25) a 20:00 end is 20:00 UTC again.
    #[test]
    fn a_window_across_daylight_saving_follows_the_zone() {
        use crate::when::Zone;
        let unix = |s: &str| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .unwrap()
                .unix_timestamp()
        };
        let w = Window {
            hours: Some(Window::parse_hours("hours", "08:00-20:00").unwrap()),
            ..Window::default()
        };
        let lisbon = Zone::parse("time_zone", "Europe/Lisbon").unwrap();
        let utc = Zone::utc();
        // Saturday, winter time: 07:30 UTC is 07:30 in Lisbon, outside.
        assert!(w.check(lisbon.local(unix("2026-03-28T07:30:00Z"))).is_err());
        // Sunday, summer time: 07:30 UTC is 08:30 in Lisbon, inside (in UTC it would not be).
        assert!(w.check(lisbon.local(unix("2026-03-29T07:30:00Z"))).is_ok());
        assert!(w.check(utc.local(unix("2026-03-29T07:30:00Z"))).is_err());
        // 19:30 UTC is 20:30 in summer: outside; it is 19:30 again after the change back.
        assert!(w.check(lisbon.local(unix("2026-10-24T19:30:00Z"))).is_err());
        assert!(w.check(lisbon.local(unix("2026-10-25T19:30:00Z"))).is_ok());
        // The hour that happens twice on 2026-10-25 (01:00-02:00) is in a 01:00-02:00 window both times.
        let night = Window {
            hours: Some(Window::parse_hours("hours", "01:00-02:00").unwrap()),
            ..Window::default()
        };
        assert!(night
            .check(lisbon.local(unix("2026-10-25T00:30:00Z")))
            .is_ok());
        assert!(night
            .check(lisbon.local(unix("2026-10-25T01:30:00Z")))
            .is_ok());
        assert!(night
            .check(lisbon.local(unix("2026-10-25T02:30:00Z")))
            .is_err());
    }

    #[test]
    fn windows_days_hours_dates() {
        let w = Window {
            days: Some(Window::parse_days("days", "mon-fri").unwrap()),
            hours: Some(Window::parse_hours("hours", "08:00-20:00").unwrap()),
            ..Window::default()
        };
        // 2026-11-23 is a Monday.
        assert!(w.check(at("2026-11-23 08:00")).is_ok());
        assert!(w.check(at("2026-11-23 19:59")).is_ok());
        assert!(w
            .check(at("2026-11-23 20:00"))
            .unwrap_err()
            .contains("08:00-20:00"));
        assert!(w.check(at("2026-11-23 07:59")).is_err());
        assert!(w
            .check(at("2026-11-28 10:00"))
            .unwrap_err()
            .contains("mon,tue,wed,thu,fri"));
        let night = Window {
            days: Some(Window::parse_days("days", "fri").unwrap()),
            hours: Some(Window::parse_hours("hours", "22:00-06:00").unwrap()),
            ..Window::default()
        };
        assert!(night.check(at("2026-11-27 23:00")).is_ok(), "friday night");
        assert!(
            night.check(at("2026-11-28 05:00")).is_ok(),
            "friday's night, into saturday"
        );
        assert!(
            night.check(at("2026-11-28 23:00")).is_err(),
            "saturday night"
        );
        assert!(night.check(at("2026-11-27 12:00")).is_err());
        let dates = Window {
            from: Some(Window::parse_date("from", "2026-12-01").unwrap()),
            until: Some(Window::parse_date("until", "2026-12-31").unwrap()),
            ..Window::default()
        };
        assert!(dates.check(at("2026-11-30 23:59")).is_err());
        assert!(dates.check(at("2026-12-31 23:59")).is_ok());
        assert!(dates.check(at("2027-01-01 00:00")).is_err());
        for bad in ["", "funday", "fri-mon", "mon-"] {
            assert_eq!(
                Window::parse_days("days", bad).unwrap_err().field,
                "days",
                "{bad}"
            );
        }
        for bad in [
            "8-20",
            "08:00",
            "25:00-26:00",
            "08:00-08:00",
            "08:60-09:00",
            "24:01-06:00",
            "8:00-20:00",
        ] {
            assert_eq!(
                Window::parse_hours("hours", bad).unwrap_err().field,
                "hours",
                "{bad}"
            );
        }
        assert_eq!(
            Window::days_text(Window::parse_days("d", "sat-sun,mon").unwrap()),
            "mon,sat,sun"
        );
        assert_eq!(Window::hours_text((480, 1200)), "08:00-20:00");
    }

    #[test]
    fn rule_takes_the_most_restrictive_of_everything() {
        let tags = vec!["prod".to_string()];
        let t = TargetRef {
            name: "db01",
            tags: &tags,
        };
        let mut loose = p("loose", "ops", "*", &[Access::Session], Outcome::Allow);
        loose.limits.max_duration_minutes = Some(240);
        let mut strict = p(
            "strict",
            "ops",
            "tag:prod",
            &[Access::Session],
            Outcome::Approve,
        );
        strict.limits.levels = crate::approval::parse_levels("l", "leads:1,security:1").unwrap();
        strict.limits.max_duration_minutes = Some(60);
        strict.limits.emergency = true;
        strict.limits.window.hours = Some((480, 1200));
        let mut other = p("other", "ops", "db01", &[Access::Session], Outcome::Approve);
        other.limits.levels = crate::approval::parse_levels("l", "leads:1").unwrap();
        let g = vec!["ops".to_string()];
        let pols = vec![loose.clone(), strict.clone(), other.clone()];
        let Ruling::Granted(terms) =
            rule(&pols, &g, &t, Access::Session, at("2026-11-23 10:00"), None)
        else {
            panic!("granted")
        };
        assert_eq!(terms.outcome, Outcome::Approve);
        assert_eq!(
            terms.levels.len(),
            2,
            "the policy asking the most approvals"
        );
        assert_eq!(terms.max_duration_minutes, Some(60));
        assert!(!terms.emergency, "`other` does not allow emergency access");
        // Out of `strict`'s hours, `loose` does not widen it.
        assert!(matches!(
            rule(&pols, &g, &t, Access::Session, at("2026-11-23 21:00"), None),
            Ruling::Outside { policy, .. } if policy == "strict"
        ));
        let Ruling::Granted(terms) = rule(
            &[strict],
            &g,
            &t,
            Access::Session,
            at("2026-11-23 10:00"),
            None,
        ) else {
            panic!("granted")
        };
        assert!(terms.emergency);
        assert_eq!(
            rule(
                &pols,
                &["dev".into()],
                &t,
                Access::Session,
                at("2026-11-23 10:00"),
                None
            ),
            Ruling::Deny
        );
    }

    #[test]
    fn stricter_terms_take_the_most_restrictive_of_each_part() {
        let t = |outcome, policy: &str, levels: &str, max, moderated| Terms {
            outcome,
            policy: policy.into(),
            levels: if levels.is_empty() {
                Vec::new()
            } else {
                crate::approval::parse_levels("l", levels).unwrap()
            },
            max_duration_minutes: max,
            emergency: true,
            moderated,
        };
        let invite = t(Outcome::Approve, "vendors", "leads:1", Some(240), false);
        let session = t(Outcome::Allow, "ops", "", Some(60), true);
        let both = invite.clone().stricter(session.clone());
        assert_eq!(both.outcome, Outcome::Approve);
        assert_eq!(both.policy, "vendors");
        assert_eq!(both.levels.len(), 1);
        assert_eq!(both.max_duration_minutes, Some(60));
        assert!(both.moderated && both.emergency);
        // The other way round gives the same terms.
        assert_eq!(session.stricter(invite), both);
        let a = t(Outcome::Approve, "a", "leads:1", None, false);
        let b = t(Outcome::Approve, "b", "leads:1,security:2", None, false);
        assert_eq!(a.stricter(b).levels.len(), 2);
    }

    #[test]
    fn the_invite_access_parses_and_matches_only_itself() {
        assert_eq!(Access::parse("invite"), Some(Access::Invite));
        assert_eq!(Access::Invite.as_str(), "invite");
        let t = TargetRef {
            name: "db01",
            tags: &[],
        };
        let pols = vec![p(
            "vendors",
            "ops",
            "db01",
            &[Access::Invite],
            Outcome::Approve,
        )];
        let g = ["ops".to_string()];
        assert!(matches!(
            decide(&pols, &g, &t, Access::Invite, None),
            Decision::Granted {
                outcome: Outcome::Approve,
                ..
            }
        ));
        assert_eq!(decide(&pols, &g, &t, Access::Session, None), Decision::Deny);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("d", "2h").unwrap(), 7200);
        assert_eq!(parse_duration("d", "1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("d", "90m").unwrap(), 5400);
        assert_eq!(parse_duration("d", "1d").unwrap(), 86400);
        for bad in ["", "2", "h", "-1h", "2x", "0m", "99999999999999999999h"] {
            assert_eq!(
                parse_duration("duration", bad).unwrap_err().field,
                "duration",
                "{bad}"
            );
        }
        assert_eq!(parse_duration_minutes("max_duration", "4h").unwrap(), 240);
        let e = parse_duration_minutes("max_duration", "30s").unwrap_err();
        assert_eq!(e.to_string(), "max_duration: whole minutes, at most 7d");
        assert!(parse_duration_minutes("max_duration", "8d").is_err());
    }

    #[test]
    fn justify_needs_a_reason() {
        assert!(check_reason(Outcome::Allow, None).is_ok());
        assert_eq!(
            check_reason(Outcome::Justify, Some("  "))
                .unwrap_err()
                .field,
            "reason"
        );
        assert!(check_reason(Outcome::Justify, Some("INC-42")).is_ok());
    }

    proptest::proptest! {
        /// Adding a policy never makes an outcome less restrictive.
        #[test]
        fn adding_a_policy_never_weakens(extra in 0u8..3, base in 0u8..3) {
            let o = |n: u8| [Outcome::Allow, Outcome::Justify, Outcome::Approve][n as usize];
            let tags: Vec<String> = vec![];
            let t = TargetRef { name: "db01", tags: &tags };
            let g = vec!["ops".to_string()];
            let one = vec![p("a", "ops", "*", &[Access::Reveal], o(base))];
            let mut two = one.clone();
            two.push(p("b", "ops", "db01", &[Access::Reveal], o(extra)));
            let (Decision::Granted { outcome: o1, .. }, Decision::Granted { outcome: o2, .. }) =
                (decide(&one, &g, &t, Access::Reveal, None), decide(&two, &g, &t, Access::Reveal, None))
            else { panic!("both must grant") };
            proptest::prop_assert!(o2 >= o1);
        }
    }
}
