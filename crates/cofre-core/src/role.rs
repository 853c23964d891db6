//! Roles and what each may do: the table of PRODUCT.md ("Roles") as code.
//!
//! A role grants *kinds* of action. Whether a user may use a given credential is a second, separate
//! question answered by [`crate::policy`]: even an admin needs a policy to reveal a secret.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Approver,
    User,
    Auditor,
    Operator,
    Support,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Approver,
        Role::User,
        Role::Auditor,
        Role::Operator,
        Role::Support,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Approver => "approver",
            Role::User => "user",
            Role::Auditor => "auditor",
            Role::Operator => "operator",
            Role::Support => "support",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Vendor-side roles never see customer secrets or recordings, whatever policy says.
    pub fn is_vendor(self) -> bool {
        matches!(self, Role::Operator | Role::Support)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kinds of action that an endpoint or command performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// whoami, enrol own TOTP.
    OwnAccount,
    /// set a new password for oneself (the only thing a one-time-password login may do).
    ChangeOwnPassword,
    /// create/list/show users, reset passwords, unlock; manage groups.
    ManageUsers,
    /// create and remove targets; add and change credentials (write-only: never reads a secret).
    ManageTargets,
    /// list targets and credential metadata; non-admins see only what their policies cover.
    ListTargets,
    /// reveal a secret or open a session, always subject to policy.
    UseCredentials,
    /// credential version history (metadata only, never the secrets).
    ViewCredentialHistory,
    ManagePolicies,
    ViewPolicies,
    /// read, export and verify the audit trail.
    ReadAudit,
    /// list gateway sessions, live and past.
    ListSessions,
    /// terminate a live gateway session.
    KillSessions,
    /// export or play a session recording.
    ReadRecordings,
    /// break-glass key ceremonies, status and on-demand export of the (encrypted) backup file.
    /// Fetching one's own share as a custodian is `OwnAccount`.
    ManageBreakGlass,
}

impl Action {
    pub const ALL: [Action; 14] = [
        Action::OwnAccount,
        Action::ChangeOwnPassword,
        Action::ManageUsers,
        Action::ManageTargets,
        Action::ListTargets,
        Action::UseCredentials,
        Action::ViewCredentialHistory,
        Action::ManagePolicies,
        Action::ViewPolicies,
        Action::ReadAudit,
        Action::ListSessions,
        Action::KillSessions,
        Action::ReadRecordings,
        Action::ManageBreakGlass,
    ];
}

/// The role table. Deny by default: a pair not listed is refused.
pub fn role_may(role: Role, action: Action) -> bool {
    use Action::*;
    use Role::*;
    match action {
        OwnAccount | ChangeOwnPassword => true,
        ManageUsers | ManageTargets | ManagePolicies | KillSessions | ManageBreakGlass => {
            role == Admin
        }
        ListTargets | UseCredentials => matches!(role, Admin | Approver | User),
        ViewCredentialHistory | ViewPolicies | ReadAudit | ListSessions | ReadRecordings => {
            matches!(role, Admin | Auditor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_names() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn vendor_roles_never_use_credentials_or_read_audit() {
        for r in [Role::Operator, Role::Support] {
            assert!(!role_may(r, Action::UseCredentials));
            assert!(!role_may(r, Action::ReadAudit));
            assert!(!role_may(r, Action::ListTargets));
            assert!(!role_may(r, Action::ReadRecordings));
        }
    }

    #[test]
    fn support_has_nothing_but_its_own_account() {
        for a in Action::ALL {
            let own = matches!(a, Action::OwnAccount | Action::ChangeOwnPassword);
            assert_eq!(role_may(Role::Support, a), own, "{a:?}");
        }
    }

    #[test]
    fn auditor_reads_only() {
        assert!(role_may(Role::Auditor, Action::ReadAudit));
        assert!(!role_may(Role::Auditor, Action::UseCredentials));
        assert!(!role_may(Role::Auditor, Action::ManageTargets));
    }
}
