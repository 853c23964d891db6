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

/// How the instance is run (PRODUCT.md, "deployment modes"); it decides who reaches Orbit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The customer runs it; tenant admins have Orbit.
    OnPrem,
    /// A dedicated instance the vendor runs; tenant admins and vendor operators have Orbit.
    PrivateSaas,
    /// The vendor operates the instance; vendor operators run Orbit, except the credential
    /// backups, which stay the customer's admins' (see [`Duty`]).
    Saas,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::OnPrem => "on-prem",
            Mode::PrivateSaas => "private-saas",
            Mode::Saas => "saas",
        }
    }
}

/// Whose duty a backup is (issue 13, "Duties by mode"; the seeds: "in the SaaS model the vendor
/// manages system backups, while password backups fall to the client"). A job's duty follows
/// from its kind; a target holds backups of one duty only, so the vendor's operator never holds
/// the key to the customer's own server nor sees what goes there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Duty {
    /// `credentials` jobs: the break-glass files, to the customer's own storage.
    Credentials,
    /// `system`, `snapshots` and `recordings` jobs: the instance's own data. Recordings count
    /// here: they are sealed under the instance's master key, so a copy is of use only to whoever
    /// restores the instance (as with the snapshots, which hold them too), not to the customer
    /// on its own.
    System,
}

impl Duty {
    pub const ALL: [Duty; 2] = [Duty::Credentials, Duty::System];

    pub fn as_str(self) -> &'static str {
        match self {
            Duty::Credentials => "credentials",
            Duty::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Duty> {
        Duty::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// The duty of a backup job's kind (`None` for an unknown kind).
    pub fn of_kind(kind: &str) -> Option<Duty> {
        match kind {
            "credentials" => Some(Duty::Credentials),
            "system" | "snapshots" | "recordings" => Some(Duty::System),
            _ => None,
        }
    }

    /// The action that configures, runs and reads backups of this duty.
    pub fn action(self) -> Action {
        match self {
            Duty::Credentials => Action::CredentialBackups,
            Duty::System => Action::SystemBackups,
        }
    }

    /// Words for messages: "credential backups", "system backups".
    pub fn label(self) -> &'static str {
        match self {
            Duty::Credentials => "credential backups",
            Duty::System => "system backups",
        }
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
    /// decide (approve or deny) access requests waiting on one of one's groups.
    DecideRequests,
    /// list every access request and grant, not only one's own; revoke anyone's grant.
    ManageGrants,
    /// mark an emergency access as reviewed after the fact.
    ReviewEmergency,
    /// take, verify and prune snapshots (the operator's duty where the vendor runs the
    /// instance; the customer's admins also in private-saas and on-prem).
    ManageSnapshots,
    /// list snapshots, follow a snapshot job, read the snapshot schedule and retention: whoever
    /// manages them, and the customer's admins in every mode (in saas they see, not change).
    ViewSnapshots,
    /// backup targets, jobs and runs of the `system` duty (kinds `system`, `snapshots`,
    /// `recordings`): as [`Action::ManageSnapshots`].
    SystemBackups,
    /// backup targets, jobs and runs of the `credentials` duty (break-glass files to the
    /// customer's own server): the customer's admins in every mode, never a vendor role.
    CredentialBackups,
    /// the instance's type, disabling and enabling the application, promotion (Orbit: who
    /// depends on the mode); they may also read the instance facts.
    ManageInstance,
    /// instance facts and warnings; list and show change requests (dual control).
    ViewInstance,
    /// approve or deny a change request of another admin (dual control).
    DecideChanges,
    /// add and remove SIEM destinations (where the audit trail is forwarded): the customer's
    /// admin in every mode, since the trail is the customer's.
    ManageSiem,
    /// list SIEM destinations and their delivery status.
    ViewSiem,
    /// watch a live session's output as it happens (approvers: only as the moderator of a
    /// moderated session of one of their groups, which the service checks).
    WatchSessions,
    /// block and unblock a live session's input.
    LockSessions,
    /// the emergency panel: terminate every live session, lock the instance down, lift it.
    Emergency,
    /// set a listener's network policy: the customer's admin in every mode (the customer's
    /// networks), the vendor's operator where the vendor runs the instance (its own networks).
    ManageNetwork,
    /// read the network policy.
    ViewNetwork,
    /// read the redacted configuration and the server's log tail (diagnostics): the customer's
    /// admin, and where the vendor runs the instance its operator; support under a
    /// `diagnostics` grant.
    ReadDiagnostics,
    /// propose (or, where none is asked, schedule) and cancel maintenance windows: the admin
    /// on-prem, the vendor's operator in private-saas and saas.
    ProposeMaintenance,
    /// approve or deny a proposed maintenance window: only customer admins, and never in saas
    /// (where windows are announced, not asked).
    DecideMaintenance,
    /// list, show and watch maintenance windows: customer admins and auditors everywhere, and
    /// the vendor's operator where it runs them.
    ViewMaintenance,
    /// invite a third party (issue 18): create and revoke invitations to a recorded web terminal.
    ManageInvitations,
    /// list and show invitations.
    ViewInvitations,
}

impl Action {
    pub const ALL: [Action; 37] = [
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
        Action::DecideRequests,
        Action::ManageGrants,
        Action::ReviewEmergency,
        Action::ManageSnapshots,
        Action::ViewSnapshots,
        Action::SystemBackups,
        Action::CredentialBackups,
        Action::ManageInstance,
        Action::ViewInstance,
        Action::DecideChanges,
        Action::ManageSiem,
        Action::ViewSiem,
        Action::WatchSessions,
        Action::LockSessions,
        Action::Emergency,
        Action::ManageNetwork,
        Action::ViewNetwork,
        Action::ReadDiagnostics,
        Action::ProposeMaintenance,
        Action::DecideMaintenance,
        Action::ViewMaintenance,
        Action::ManageInvitations,
        Action::ViewInvitations,
    ];
}

/// The role table. Deny by default: a pair not listed is refused.
pub fn role_may(mode: Mode, role: Role, action: Action) -> bool {
    use Action::*;
    use Role::*;
    match action {
        OwnAccount | ChangeOwnPassword => true,
        ManageSnapshots | SystemBackups | ManageInstance => match mode {
            Mode::OnPrem => role == Admin,
            Mode::PrivateSaas => matches!(role, Admin | Operator),
            Mode::Saas => role == Operator,
        },
        ViewSnapshots => match mode {
            Mode::OnPrem => role == Admin,
            Mode::PrivateSaas | Mode::Saas => matches!(role, Admin | Operator),
        },
        // The break-glass file is encrypted to the customer's custodians and goes to the
        // customer's own server: the one part of Orbit the customer keeps in saas.
        CredentialBackups => role == Admin,
        ManageNetwork | ReadDiagnostics => match mode {
            Mode::OnPrem => role == Admin,
            Mode::PrivateSaas | Mode::Saas => matches!(role, Admin | Operator),
        },
        ProposeMaintenance => match mode {
            Mode::OnPrem => role == Admin,
            Mode::PrivateSaas | Mode::Saas => role == Operator,
        },
        DecideMaintenance => mode != Mode::Saas && role == Admin,
        ViewNetwork | ViewMaintenance => match mode {
            Mode::OnPrem => matches!(role, Admin | Auditor),
            Mode::PrivateSaas | Mode::Saas => matches!(role, Admin | Auditor | Operator),
        },
        DecideRequests => matches!(role, Admin | Approver),
        ManageGrants | DecideChanges | ManageInvitations => role == Admin,
        ViewInstance | ViewInvitations => matches!(role, Admin | Auditor),
        ReviewEmergency => matches!(role, Admin | Approver),
        ManageUsers | ManageTargets | ManagePolicies | KillSessions | ManageBreakGlass
        | ManageSiem | LockSessions | Emergency => role == Admin,
        WatchSessions => matches!(role, Admin | Auditor | Approver),
        ListTargets | UseCredentials => matches!(role, Admin | Approver | User),
        ViewCredentialHistory
        | ViewPolicies
        | ReadAudit
        | ListSessions
        | ReadRecordings
        | ViewSiem => matches!(role, Admin | Auditor),
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
            assert!(!role_may(Mode::OnPrem, r, Action::UseCredentials));
            assert!(!role_may(Mode::OnPrem, r, Action::ReadAudit));
            assert!(!role_may(Mode::OnPrem, r, Action::ListTargets));
            assert!(!role_may(Mode::OnPrem, r, Action::ReadRecordings));
        }
    }

    #[test]
    fn support_has_nothing_but_its_own_account() {
        for a in Action::ALL {
            let own = matches!(a, Action::OwnAccount | Action::ChangeOwnPassword);
            assert_eq!(role_may(Mode::OnPrem, Role::Support, a), own, "{a:?}");
        }
    }

    #[test]
    fn orbit_follows_the_mode() {
        let who = |mode, action| {
            Role::ALL
                .into_iter()
                .filter(|r| role_may(mode, *r, action))
                .collect::<Vec<_>>()
        };
        use Action::ManageSnapshots;
        assert_eq!(who(Mode::OnPrem, ManageSnapshots), vec![Role::Admin]);
        assert_eq!(
            who(Mode::PrivateSaas, ManageSnapshots),
            vec![Role::Admin, Role::Operator]
        );
        assert_eq!(who(Mode::Saas, ManageSnapshots), vec![Role::Operator]);
        for mode in [Mode::OnPrem, Mode::PrivateSaas, Mode::Saas] {
            for r in Role::ALL {
                assert_eq!(
                    role_may(mode, r, Action::ManageInstance),
                    role_may(mode, r, ManageSnapshots),
                    "{mode:?} {r:?}"
                );
            }
        }
    }

    /// The table of README "Who does what in each mode", cell by cell.
    #[test]
    fn duties_follow_the_mode() {
        use Action::{CredentialBackups, ManageSnapshots, SystemBackups, ViewSnapshots};
        let who = |mode, action| {
            Role::ALL
                .into_iter()
                .filter(|r| role_may(mode, *r, action))
                .collect::<Vec<_>>()
        };
        let admin = vec![Role::Admin];
        let both = vec![Role::Admin, Role::Operator];
        let operator = vec![Role::Operator];
        for (mode, manage, view, system, credentials) in [
            (Mode::OnPrem, &admin, &admin, &admin, &admin),
            (Mode::PrivateSaas, &both, &both, &both, &admin),
            (Mode::Saas, &operator, &both, &operator, &admin),
        ] {
            assert_eq!(&who(mode, ManageSnapshots), manage, "{mode:?}");
            assert_eq!(&who(mode, ViewSnapshots), view, "{mode:?}");
            assert_eq!(&who(mode, SystemBackups), system, "{mode:?}");
            assert_eq!(&who(mode, CredentialBackups), credentials, "{mode:?}");
        }
        // Whoever manages snapshots sees them.
        for mode in [Mode::OnPrem, Mode::PrivateSaas, Mode::Saas] {
            for r in Role::ALL {
                if role_may(mode, r, ManageSnapshots) {
                    assert!(role_may(mode, r, ViewSnapshots), "{mode:?} {r:?}");
                }
            }
        }
    }

    #[test]
    fn every_kind_has_a_duty() {
        assert_eq!(Duty::of_kind("credentials"), Some(Duty::Credentials));
        for kind in ["system", "snapshots", "recordings"] {
            assert_eq!(Duty::of_kind(kind), Some(Duty::System), "{kind}");
        }
        assert_eq!(Duty::of_kind("other"), None);
        for d in Duty::ALL {
            assert_eq!(Duty::parse(d.as_str()), Some(d));
        }
    }

    #[test]
    fn maintenance_follows_the_mode() {
        let who = |mode, action| {
            Role::ALL
                .into_iter()
                .filter(|r| role_may(mode, *r, action))
                .collect::<Vec<_>>()
        };
        use Action::{DecideMaintenance, ProposeMaintenance, ViewMaintenance};
        assert_eq!(who(Mode::OnPrem, ProposeMaintenance), vec![Role::Admin]);
        assert_eq!(
            who(Mode::PrivateSaas, ProposeMaintenance),
            vec![Role::Operator]
        );
        assert_eq!(who(Mode::Saas, ProposeMaintenance), vec![Role::Operator]);
        assert_eq!(who(Mode::OnPrem, DecideMaintenance), vec![Role::Admin]);
        assert_eq!(who(Mode::PrivateSaas, DecideMaintenance), vec![Role::Admin]);
        assert!(who(Mode::Saas, DecideMaintenance).is_empty());
        assert_eq!(
            who(Mode::Saas, ViewMaintenance),
            vec![Role::Admin, Role::Auditor, Role::Operator]
        );
        assert_eq!(
            who(Mode::OnPrem, ViewMaintenance),
            vec![Role::Admin, Role::Auditor]
        );
    }

    #[test]
    fn operators_never_decide_or_use() {
        for mode in [Mode::OnPrem, Mode::PrivateSaas, Mode::Saas] {
            for a in [
                Action::DecideRequests,
                Action::DecideMaintenance,
                Action::UseCredentials,
                Action::ReadRecordings,
                Action::CredentialBackups,
            ] {
                assert!(!role_may(mode, Role::Operator, a), "{mode:?} {a:?}");
            }
        }
    }

    #[test]
    fn live_control_and_the_emergency_panel() {
        let who = |a| {
            Role::ALL
                .into_iter()
                .filter(|r| role_may(Mode::OnPrem, *r, a))
                .collect::<Vec<_>>()
        };
        assert_eq!(who(Action::LockSessions), vec![Role::Admin]);
        assert_eq!(who(Action::Emergency), vec![Role::Admin]);
        // Approvers only as a moderated session's moderator, which the service checks.
        assert_eq!(
            who(Action::WatchSessions),
            vec![Role::Admin, Role::Approver, Role::Auditor]
        );
    }

    #[test]
    fn auditor_reads_only() {
        assert!(role_may(Mode::OnPrem, Role::Auditor, Action::ReadAudit));
        assert!(!role_may(
            Mode::OnPrem,
            Role::Auditor,
            Action::UseCredentials
        ));
        assert!(!role_may(
            Mode::OnPrem,
            Role::Auditor,
            Action::ManageTargets
        ));
    }
}
