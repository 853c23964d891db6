//! Policies: which group may do what on which targets, and with what outcome.
//!
//! Where several policies match one user, target and access, the most restrictive outcome wins
//! (`approve` over `justify` over `allow`), so adding a policy can never weaken another one.

use crate::FieldError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Session,
    Reveal,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Session => "session",
            Access::Reveal => "reveal",
        }
    }
    pub fn parse(s: &str) -> Option<Access> {
        match s {
            "session" => Some(Access::Session),
            "reveal" => Some(Access::Reveal),
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
}

impl Policy {
    pub fn covers(&self, groups: &[String], target: &TargetRef<'_>) -> bool {
        groups.contains(&self.group) && self.targets.iter().any(|s| s.matches(target))
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

/// Decides one access by one user (through its groups) to one target.
pub fn decide(
    policies: &[Policy],
    groups: &[String],
    target: &TargetRef<'_>,
    access: Access,
) -> Decision {
    policies
        .iter()
        .filter(|p| p.access.contains(&access) && p.covers(groups, target))
        // Most restrictive first; among equals the name decides, so the answer is stable.
        .max_by(|a, b| a.outcome.cmp(&b.outcome).then_with(|| b.name.cmp(&a.name)))
        .map_or(Decision::Deny, |p| Decision::Granted {
            outcome: p.outcome,
            policy: p.name.clone(),
        })
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
            decide(&[], &["ops".into()], &t, Access::Reveal),
            Decision::Deny
        );
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
            decide(&pols, &["ops".into()], &t, Access::Reveal),
            Decision::Deny
        );
        assert_eq!(
            decide(&pols, &["dev".into()], &t, Access::Session),
            Decision::Deny
        );
        let other = TargetRef {
            name: "web01",
            tags: &[],
        };
        assert_eq!(
            decide(&pols, &["ops".into()], &other, Access::Session),
            Decision::Deny
        );
        assert!(matches!(
            decide(&pols, &["ops".into()], &t, Access::Session),
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
            decide(&pols, &groups, &t, Access::Reveal),
            Decision::Granted {
                outcome: Outcome::Approve,
                policy: "strict".into()
            }
        );
        assert_eq!(
            decide(&pols, &["ops".into()], &t, Access::Reveal),
            Decision::Granted {
                outcome: Outcome::Justify,
                policy: "mid".into()
            }
        );
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
                (decide(&one, &g, &t, Access::Reveal), decide(&two, &g, &t, Access::Reveal))
            else { panic!("both must grant") };
            proptest::prop_assert!(o2 >= o1);
        }
    }
}
