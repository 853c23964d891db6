//! Orbit's instance state: the instance's type (and the banner of contingency and demo
//! instances) and whether the application is enabled.
//!
//! While the application is disabled only Orbit answers: the HTTP front end refuses every other
//! endpoint with [`App::application_refusal`], and `start_session` refuses new gateway sessions
//! with the same reason. The state is one database row, so every node of an active-active
//! instance follows it; each node keeps a copy read at most [`STATE_MAX_AGE`] ago (a change made
//! on this node is seen at once, one made on another node within that time).

use super::Orbit;
use super::{App, Principal};
use crate::error::{Error, ErrorCode, ErrorKind, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_core::instance::InstanceType;
use cofre_core::instance::{drift, DriftInput};
use cofre_core::names::check_text;
use cofre_core::role::Action;
use cofre_crypto::{envelope, password};
use cofre_proto::{ApplicationState, DriftFinding, InstanceInfo, PromoteReport};
use cofre_store::credentials::NewVersion;
use cofre_store::policies::PolicyRow;
use cofre_store::targets::NewTarget;
use cofre_store::users::NewUser;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// How old this node's copy of the state may be before a request reads the row again.
const STATE_MAX_AGE: Duration = Duration::from_secs(2);
const MAX_REASON_CHARS: usize = 500;

/// The instance's state as this node last read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceState {
    pub instance_type: InstanceType,
    pub disabled: Option<Disabled>,
    /// The emergency lockdown (who locked it, when, why): only admins are served meanwhile.
    pub locked_down: Option<Disabled>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disabled {
    pub at: String,
    pub by: String,
    pub reason: String,
}

impl InstanceState {
    fn from_row(row: cofre_store::instance::InstanceStateRow) -> Result<InstanceState> {
        let instance_type = InstanceType::parse("instance_type", &row.instance_type)
            .map_err(|e| Error::internal("reading the instance state", e))?;
        let disabled = match (row.disabled_at, row.disabled_by, row.disabled_reason) {
            (Some(at), by, reason) => Some(Disabled {
                at,
                by: by.unwrap_or_default(),
                reason: reason.unwrap_or_default(),
            }),
            _ => None,
        };
        let locked_down = match (
            row.locked_down_at,
            row.locked_down_by,
            row.locked_down_reason,
        ) {
            (Some(at), by, reason) => Some(Disabled {
                at,
                by: by.unwrap_or_default(),
                reason: reason.unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(InstanceState {
            instance_type,
            disabled,
            locked_down,
        })
    }

    pub fn application(&self) -> ApplicationState {
        match &self.disabled {
            None => ApplicationState {
                enabled: true,
                disabled_at: None,
                disabled_by: None,
                reason: None,
            },
            Some(d) => ApplicationState {
                enabled: false,
                disabled_at: Some(d.at.clone()),
                disabled_by: Some(d.by.clone()),
                reason: Some(d.reason.clone()),
            },
        }
    }
}

/// This node's copy of the state and when it was read.
#[derive(Default)]
pub(crate) struct StateCache(RwLock<Option<(Instant, InstanceState)>>);

impl StateCache {
    fn fresh(&self) -> Option<InstanceState> {
        let guard = self.0.read().ok()?;
        match &*guard {
            Some((read_at, state)) if read_at.elapsed() < STATE_MAX_AGE => Some(state.clone()),
            _ => None,
        }
    }

    fn last(&self) -> Option<InstanceState> {
        self.0.read().ok()?.as_ref().map(|(_, s)| s.clone())
    }

    fn put(&self, state: InstanceState) {
        if let Ok(mut guard) = self.0.write() {
            *guard = Some((Instant::now(), state));
        }
    }
}

/// The refusal every non-Orbit endpoint and every new gateway session gets while disabled.
pub fn disabled_error(d: &Disabled) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        ErrorCode::ApplicationDisabled,
        format!(
            "the application is disabled: {} (by {} at {}); only Orbit (snapshots, backups, maintenance, instance) answers until `cofre instance enable`",
            d.reason, d.by, d.at
        ),
    )
}

/// The refusal everyone but admins gets while the instance is locked down.
pub fn locked_down_error(d: &Disabled) -> Error {
    Error::new(
        ErrorKind::Forbidden,
        ErrorCode::InstanceLockedDown,
        format!(
            "the instance is locked down: {} (by {} at {}); only admins are served until a second admin lifts it",
            d.reason, d.by, d.at
        ),
    )
}

impl App {
    /// The instance's state, from this node's copy if it is fresh enough.
    pub async fn instance_state(&self) -> Result<InstanceState> {
        if let Some(s) = self.instance.fresh() {
            return Ok(s);
        }
        match self.store.instance_state().await {
            Ok(row) => {
                let state = InstanceState::from_row(row)?;
                self.instance.put(state.clone());
                Ok(state)
            }
            // A database that does not answer fails everything else too; keep judging by the
            // state last read rather than opening a disabled application.
            Err(e) => match self.instance.last() {
                Some(s) => Ok(s),
                None => Err(Error::internal("reading the instance state", e)),
            },
        }
    }

    /// Why the application does not answer now, if it is disabled.
    pub async fn application_refusal(&self) -> Result<Option<Error>> {
        Ok(self
            .instance_state()
            .await?
            .disabled
            .as_ref()
            .map(disabled_error))
    }

    /// Why this role is refused now, if the instance is locked down and the role is not admin.
    /// The API (on every authenticated request) and the gateway (at a session's start) ask it.
    pub async fn lockdown_refusal(&self, role: cofre_core::role::Role) -> Result<Option<Error>> {
        if role == cofre_core::role::Role::Admin {
            return Ok(None);
        }
        Ok(self
            .instance_state()
            .await?
            .locked_down
            .as_ref()
            .map(locked_down_error))
    }

    /// The banner of a contingency or demo instance (CLI answers, SSH logins).
    pub async fn instance_banner(&self) -> Option<&'static str> {
        self.instance_state()
            .await
            .ok()
            .and_then(|s| s.instance_type.banner())
    }
}

impl Orbit<'_> {
    /// Instance facts and what needs attention. Admins and auditors read them, and whoever
    /// manages the instance in this mode (the vendor's operator in saas and private-saas).
    pub async fn get_instance(&self, who: &Principal) -> Result<InstanceInfo> {
        if who.require(Action::ViewInstance).is_err() {
            who.require(Action::ManageInstance)?;
        }
        let state = self.instance_state().await?;
        let (admins, warnings) = self.governance_facts().await?;
        Ok(InstanceInfo {
            version: crate::switch::version().to_owned(),
            mode: self.config.mode.as_str().to_owned(),
            instance_type: state.instance_type.as_str().to_owned(),
            banner: state.instance_type.banner().map(str::to_owned),
            application: state.application(),
            dual_control: self.config.governance.dual_control.as_str().to_owned(),
            cooling_off_days: self.config.governance.cooling_off_days,
            admins,
            pending_changes: self.store.pending_change_count().await?,
            warnings,
            next_window: self.next_window().await?,
        })
    }

    /// `cofre instance set-type`. Audited `instance.set_type` with the old and new type.
    pub async fn set_instance_type(&self, who: &Principal, to: &str) -> Result<InstanceInfo> {
        who.require(Action::ManageInstance)?;
        let to = InstanceType::parse("type", to)?;
        let mut tx = self.store.write().await?;
        let from = InstanceState::from_row(tx.instance_state().await?)?.instance_type;
        if let Err(why) = from.set_type_to(to) {
            return Err(
                Error::new(ErrorKind::Conflict, ErrorCode::PromoteRequired, why).with_field("type"),
            );
        }
        tx.set_instance_type(to.as_str()).await?;
        self.commit(
            tx,
            NewAuditEntry::new(who.username(), "instance.set_type", "instance")
                .detail("from", from.as_str())
                .detail("to", to.as_str()),
        )
        .await?;
        self.reload_instance_state().await?;
        self.get_instance(who).await
    }

    /// `cofre instance disable --reason`: every non-Orbit endpoint and every new gateway session
    /// is refused with the reason until `enable`. Live sessions go on (`cofre session kill` ends
    /// them); a maintenance window ends them itself.
    pub async fn disable_application(&self, who: &Principal, reason: &str) -> Result<InstanceInfo> {
        who.require(Action::ManageInstance)?;
        check_text("reason", reason, MAX_REASON_CHARS)?;
        if reason.trim().chars().count() < 3 {
            return Err(Error::invalid(
                "reason",
                "reason: say why the application is disabled (at least 3 characters); users see it",
            ));
        }
        let mut tx = self.store.write().await?;
        let before = InstanceState::from_row(tx.instance_state().await?)?;
        let now = self.now_text();
        tx.set_application_disabled(Some((&now, who.username(), reason.trim())))
            .await?;
        let mut entry = NewAuditEntry::new(who.username(), "instance.disable", "instance")
            .detail("reason", reason.trim())
            .detail("live_sessions", self.live.matching(|_| true).len());
        if let Some(d) = &before.disabled {
            entry = entry.detail("replaces_reason", d.reason.as_str());
        }
        self.commit(tx, entry).await?;
        self.reload_instance_state().await?;
        self.get_instance(who).await
    }

    /// `cofre instance enable`: the application answers again, exactly as before it was
    /// disabled (nothing about access changed meanwhile, so no second person is needed).
    pub async fn enable_application(&self, who: &Principal) -> Result<InstanceInfo> {
        who.require(Action::ManageInstance)?;
        let mut tx = self.store.write().await?;
        let before = InstanceState::from_row(tx.instance_state().await?)?;
        let Some(d) = before.disabled else {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::NotDisabled,
                "the application is not disabled",
            ));
        };
        tx.set_application_disabled(None).await?;
        self.commit(
            tx,
            NewAuditEntry::new(who.username(), "instance.enable", "instance")
                .detail("disabled_at", d.at.as_str())
                .detail("disabled_by", d.by.as_str())
                .detail("reason", d.reason.as_str()),
        )
        .await?;
        self.reload_instance_state().await?;
        self.get_instance(who).await
    }
}

impl App {
    /// Reads the row again (after a change on this node, so it is seen at once).
    pub(crate) async fn reload_instance_state(&self) -> Result<InstanceState> {
        let state = InstanceState::from_row(self.store.instance_state().await?)?;
        self.instance.put(state.clone());
        Ok(state)
    }
}

impl Orbit<'_> {
    /// `cofre instance promote --to production`: the drift report, and with `confirm` the
    /// promotion, audited `instance.promote` with the report. Without `confirm` nothing changes.
    pub async fn promote_instance(
        &self,
        who: &Principal,
        to: &str,
        confirm: bool,
    ) -> Result<PromoteReport> {
        who.require(Action::ManageInstance)?;
        if InstanceType::parse("to", to)? != InstanceType::Production {
            return Err(Error::invalid(
                "to",
                "to: only `production` is a promotion; use `cofre instance set-type` for the others",
            ));
        }
        let demo_admin_hash = self.store.meta_get(INITIAL_ADMIN_HASH_META).await?;
        let policies = self.store.all_policies().await?;
        let mut tx = self.store.write().await?;
        let from = InstanceState::from_row(tx.instance_state().await?)?.instance_type;
        if from == InstanceType::Production {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::Conflict,
                "the instance is production already",
            ));
        }
        let admin = tx.user_by_name(INITIAL_ADMIN).await?;
        let admin_unchanged = admin.is_some_and(|a| {
            a.must_change_password
                || demo_admin_hash.as_deref() == Some(digest(&a.password_hash).as_str())
        });
        let input = DriftInput {
            sample_users: tx.demo_items_left("user").await?,
            sample_targets: tx.demo_items_left("target").await?,
            sample_policies: tx.demo_items_left("policy").await?,
            initial_admin_password_unchanged: admin_unchanged,
            lockout_off: self.config.lockout_sources == 0,
            record_input_off: !self.config.record_input,
            dual_control_off: self.config.governance.dual_control
                == cofre_core::governance::DualControl::Off,
            allow_everywhere: policies
                .iter()
                .filter(|p| p.outcome == "allow" && p.targets.iter().any(|t| t == "*"))
                .map(|p| p.name.clone())
                .collect(),
        };
        let findings: Vec<DriftFinding> = drift(&input)
            .into_iter()
            .map(|f| DriftFinding {
                kind: f.kind.to_owned(),
                detail: f.detail,
            })
            .collect();
        let report = PromoteReport {
            promoted: confirm,
            from: from.as_str().to_owned(),
            to: InstanceType::Production.as_str().to_owned(),
            drift: findings,
        };
        if !confirm {
            // Dropping the transaction leaves everything as it was.
            return Ok(report);
        }
        tx.set_instance_type(InstanceType::Production.as_str())
            .await?;
        let drift_json: Vec<serde_json::Value> = report
            .drift
            .iter()
            .map(|f| serde_json::json!({"kind": f.kind, "detail": f.detail}))
            .collect();
        self.commit(
            tx,
            NewAuditEntry::new(who.username(), "instance.promote", "instance")
                .detail("from", from.as_str())
                .detail("to", "production")
                .detail("drift", drift_json),
        )
        .await?;
        self.reload_instance_state().await?;
        Ok(report)
    }

    /// `cofre init --demo`: sample users, a group, targets, credentials and policies, each marked
    /// as sample data (`demo_items`), and the type `demo`, in one transaction audited
    /// `instance.demo_load`. Direct writes, like the first admin's: this is initialisation, so
    /// there is nobody yet for dual control to ask. Returns the sample users' one-time passwords.
    pub async fn load_demo(&self) -> Result<Vec<(String, Zeroizing<String>)>> {
        if self.is_sealed() {
            return Err(Error::sealed());
        }
        let now = self.now_text();
        let mut passwords = Vec::new();
        let mut hashes = Vec::new();
        for (name, _, _) in DEMO_USERS {
            let otp = password::generate_password();
            hashes.push(super::accounts::hash_password(otp.to_string()).await?);
            passwords.push(((*name).to_owned(), otp));
        }
        let mut tx = self.store.write().await?;
        if tx.instance_state().await?.instance_type == InstanceType::Demo.as_str() {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::Conflict,
                "this instance has its demo data already",
            ));
        }
        // The first admin logs in with the password of `initial-admin-password` too, without
        // the one-time dance; promotion reports it for as long as it is unchanged.
        if let Some(admin) = tx.user_by_name(INITIAL_ADMIN).await? {
            tx.set_password(admin.id, &admin.password_hash, false)
                .await?;
            tx.meta_set(INITIAL_ADMIN_HASH_META, &digest(&admin.password_hash))
                .await?;
        }
        let group_id = tx.insert_group(DEMO_GROUP, &now).await?;
        for ((name, role, in_group), hash) in DEMO_USERS.iter().zip(&hashes) {
            let id = tx
                .insert_user(NewUser {
                    username: name,
                    role,
                    password_hash: hash,
                    // A demo is for trying at once: its passwords are kept, not one-time.
                    must_change_password: false,
                    created_at: &now,
                })
                .await?;
            if *in_group {
                tx.add_member(group_id, id).await?;
            }
            tx.add_demo_item("user", id).await?;
        }
        for (name, host, tags, account) in DEMO_TARGETS {
            let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
            let target_id = tx
                .insert_target(NewTarget {
                    name,
                    host,
                    port: 22,
                    protocol: "ssh",
                    tags: &tags,
                    created_at: &now,
                })
                .await?;
            tx.add_demo_item("target", target_id).await?;
            let credential_id = tx
                .insert_credential(target_id, name, account, "password", &now, "system")
                .await?;
            let secret = password::generate_password();
            let sealed = self
                .with_master(|mk| {
                    envelope::seal(
                        mk,
                        secret.as_bytes(),
                        super::vault::secret_aad(credential_id, 1).as_bytes(),
                    )
                })?
                .map_err(|e| Error::internal("sealing the secret", e))?;
            tx.add_credential_version(
                credential_id,
                1,
                NewVersion {
                    kind: "password",
                    wrapped_key: &sealed.wrapped_key,
                    ciphertext: &sealed.ciphertext,
                    created_at: &now,
                    created_by: "system",
                },
            )
            .await?;
        }
        for (name, targets, access, outcome) in DEMO_POLICIES {
            tx.insert_policy(
                &PolicyRow {
                    name: (*name).to_owned(),
                    group: DEMO_GROUP.to_owned(),
                    targets: targets.iter().map(|t| (*t).to_owned()).collect(),
                    access: access.iter().map(|a| (*a).to_owned()).collect(),
                    outcome: (*outcome).to_owned(),
                    created_at: now.clone(),
                    limits: "{}".to_owned(),
                },
                "system",
            )
            .await?;
            tx.add_demo_policy(name).await?;
        }
        tx.set_instance_type(InstanceType::Demo.as_str()).await?;
        let names =
            |it: &mut dyn Iterator<Item = &str>| -> Vec<String> { it.map(str::to_owned).collect() };
        self.commit(
            tx,
            NewAuditEntry::new("system", "instance.demo_load", "instance")
                .detail("users", names(&mut DEMO_USERS.iter().map(|u| u.0)))
                .detail("group", DEMO_GROUP)
                .detail("targets", names(&mut DEMO_TARGETS.iter().map(|t| t.0)))
                .detail("policies", names(&mut DEMO_POLICIES.iter().map(|p| p.0))),
        )
        .await?;
        self.reload_instance_state().await?;
        Ok(passwords)
    }
}

/// The user `initialise` creates first (`bootstrap_admin`).
const INITIAL_ADMIN: &str = "admin";
/// `meta` key: the SHA-256 of the first admin's password hash as a demo left it (not the hash
/// itself: the database need not hold a second copy of it).
const INITIAL_ADMIN_HASH_META: &str = "demo_initial_admin_hash";

fn digest(text: &str) -> String {
    super::sha256_hex(text.as_bytes())
}

/// The sample data of `cofre init --demo`: every name starts with `demo-`, so nobody mistakes
/// it for real data. Users: name, role, member of [`DEMO_GROUP`].
const DEMO_USERS: &[(&str, &str, bool)] = &[
    ("demo-alice", "user", true),
    ("demo-bob", "approver", true),
    ("demo-carol", "auditor", false),
];
const DEMO_GROUP: &str = "demo-ops";
/// Name, host (`.invalid`: never a real machine), tags, the account of its sample credential.
const DEMO_TARGETS: &[(&str, &str, &[&str], &str)] = &[
    (
        "demo-web01",
        "web01.demo.invalid",
        &["demo", "web"],
        "deploy",
    ),
    ("demo-db01", "db01.demo.invalid", &["demo", "db"], "root"),
];
/// Name, targets, access, outcome: one relaxed (allow everywhere), one as production would have.
const DEMO_POLICIES: &[(&str, &[&str], &[&str], &str)] = &[
    (
        "demo-ops-everywhere",
        &["*"],
        &["session", "reveal"],
        "allow",
    ),
    ("demo-db-justify", &["tag:db"], &["reveal"], "justify"),
];
