//! The instance's type (Orbit): what kind of installation this is, the banner it shows, and the
//! one way out of `demo` and `contingency` into `production` (a promotion, which reports drift).

use crate::FieldError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceType {
    Production,
    /// A standby that takes over when production is lost; promoted to production when it does.
    Contingency,
    Testing,
    /// Sample data to try the product on; promoted to production with a drift report.
    Demo,
}

impl InstanceType {
    pub const ALL: [InstanceType; 4] = [
        InstanceType::Production,
        InstanceType::Contingency,
        InstanceType::Testing,
        InstanceType::Demo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceType::Production => "production",
            InstanceType::Contingency => "contingency",
            InstanceType::Testing => "testing",
            InstanceType::Demo => "demo",
        }
    }

    pub fn parse(field: &str, s: &str) -> Result<InstanceType, FieldError> {
        InstanceType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                FieldError::new(
                    field,
                    format!(
                        "`{s}` is not an instance type; one of production, contingency, testing, demo"
                    ),
                )
            })
    }

    /// The line every CLI answer and SSH login shows, for the types a user must not mistake for
    /// production.
    pub fn banner(self) -> Option<&'static str> {
        match self {
            InstanceType::Contingency => Some(
                "CONTINGENCY instance: a standby, not production (`cofre instance promote --to production` when it takes over)",
            ),
            InstanceType::Demo => {
                Some("DEMO instance: sample data, not for production use")
            }
            InstanceType::Production | InstanceType::Testing => None,
        }
    }

    /// Whether `set-type` may move from `self` to `to`. Leaving demo or contingency for
    /// production is a promotion: it must go through `promote`, which shows what a demo left
    /// behind before anyone relies on the instance.
    pub fn set_type_to(self, to: InstanceType) -> Result<(), String> {
        if to == InstanceType::Production
            && matches!(self, InstanceType::Demo | InstanceType::Contingency)
        {
            return Err(format!(
                "a {} instance becomes production only by `cofre instance promote --to production` (it reports what is left of the {} setup)",
                self.as_str(),
                self.as_str()
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for InstanceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a promotion to production looks at: what the demo left and which settings are relaxed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriftInput {
    pub sample_users: Vec<String>,
    pub sample_targets: Vec<String>,
    pub sample_policies: Vec<String>,
    /// The first admin still has the one-time password `init` gave it.
    pub initial_admin_password_unchanged: bool,
    /// `lockout_sources = 0`: no number of guessing addresses ever locks an account.
    pub lockout_off: bool,
    pub record_input_off: bool,
    pub dual_control_off: bool,
    /// Policies whose outcome is `allow` on every target (`*`).
    pub allow_everywhere: Vec<String>,
}

/// One thing a production instance should not have, with a kind that scripts match on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: &'static str,
    pub detail: String,
}

/// The drift report: every finding, in a fixed order (sample data, then the admin password,
/// then relaxed settings). Empty: nothing of the demo or contingency setup is left.
pub fn drift(input: &DriftInput) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |kind: &'static str, detail: String| out.push(Finding { kind, detail });
    for (kind, what, names) in [
        ("sample_users", "sample users", &input.sample_users),
        ("sample_targets", "sample targets", &input.sample_targets),
        ("sample_policies", "sample policies", &input.sample_policies),
    ] {
        if !names.is_empty() {
            add(kind, format!("{what} still present: {}", names.join(", ")));
        }
    }
    if input.initial_admin_password_unchanged {
        add(
            "initial_admin_password",
            "the initial admin password was never changed (its one-time password is still valid)"
                .to_owned(),
        );
    }
    if input.lockout_off {
        add(
            "relaxed_setting",
            "lockout_sources = 0: accounts never lock, however many addresses guess passwords"
                .to_owned(),
        );
    }
    if input.record_input_off {
        add(
            "relaxed_setting",
            "record_input = false: what users type in sessions is not recorded".to_owned(),
        );
    }
    if input.dual_control_off {
        add(
            "relaxed_setting",
            "[governance] dual_control = \"off\": one admin alone can widen access".to_owned(),
        );
    }
    if !input.allow_everywhere.is_empty() {
        add(
            "allow_everywhere",
            format!(
                "policies that allow on every target (`*`, outcome allow): {}",
                input.allow_everywhere.join(", ")
            ),
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused_with_the_field() {
        for t in InstanceType::ALL {
            assert_eq!(InstanceType::parse("type", t.as_str()), Ok(t));
        }
        let e = InstanceType::parse("type", "staging").unwrap_err();
        assert_eq!(e.field, "type");
        assert!(e.reason.contains("production, contingency"), "{e}");
    }

    #[test]
    fn only_contingency_and_demo_show_a_banner() {
        let with: Vec<_> = InstanceType::ALL
            .into_iter()
            .filter(|t| t.banner().is_some())
            .collect();
        assert_eq!(with, vec![InstanceType::Contingency, InstanceType::Demo]);
    }

    #[test]
    fn demo_and_contingency_reach_production_only_by_promotion() {
        for from in InstanceType::ALL {
            for to in InstanceType::ALL {
                let promotion = to == InstanceType::Production
                    && matches!(from, InstanceType::Demo | InstanceType::Contingency);
                assert_eq!(from.set_type_to(to).is_err(), promotion, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn a_clean_instance_has_no_drift_and_each_leftover_is_named() {
        assert!(drift(&DriftInput::default()).is_empty());
        let report = drift(&DriftInput {
            sample_users: vec!["demo-alice".into()],
            sample_targets: vec![],
            sample_policies: vec!["demo-ops".into()],
            initial_admin_password_unchanged: true,
            lockout_off: true,
            record_input_off: true,
            dual_control_off: false,
            allow_everywhere: vec!["demo-ops".into()],
        });
        let kinds: Vec<_> = report.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            vec![
                "sample_users",
                "sample_policies",
                "initial_admin_password",
                "relaxed_setting",
                "relaxed_setting",
                "allow_everywhere"
            ]
        );
        assert!(report[0].detail.contains("demo-alice"));
        assert!(report[4].detail.contains("record_input"));
    }
}
