//! Dual control: every change that can widen someone's access goes through [`Approvals::propose_change`]. It
//! applies at once when it widens nothing; otherwise it waits as a change request until a second
//! admin approves it ([`Approvals::decide_change`]), and the change is applied, re-validated, in the
//! transaction of that approval. On an instance with one admin (and `dual_control =
//! "when-possible"`) it applies alone, audited `unilateral`, with an alert. What "widens" means is
//! decided in `cofre_core::governance`.

use super::accounts::{check_email, hash_password, parse_role, user_info};
use super::invites::{invitation_diff, InvitationDraft};
use super::network::network_change;
use super::sessions::ssh_key_fingerprint;
use super::vault::{policy_from_row, policy_info, policy_version};
use super::{page_limit, App, Principal};
use super::{Accounts, Approvals};
use crate::error::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use cofre_core::approval::{Event, Refusal, State, Verdict};
use cofre_core::audit::NewAuditEntry;
use cofre_core::governance::{
    change_decider_groups, change_request, counts_for, gate, group_is_named, policy_add_widens,
    policy_edit_widens, policy_remove_widens, role_change_widens, user_create_widens,
    user_enable_widens, AccountChange, DualControl, Gate,
};
use cofre_core::names::check_identifier;
use cofre_core::policy::Policy;
use cofre_core::role::{Action, Role};
use cofre_crypto::password;
use cofre_proto::{
    ChangeDecision, ChangeInfo, CreatePolicyRequest, InvitationInfo, InviteRequest, Page,
    PolicyInfo, SecretString, SshKeyInfo, UserInfo,
};
use cofre_store::governance::ChangeRow;
use cofre_store::policies::PolicyRow;
use cofre_store::users::NewUser;
use cofre_store::WriteTx;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A change that may widen someone's access, as proposed (and stored while it waits). It holds no
/// secret: a one-time password is made when the change is applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Change {
    #[serde(rename = "policy.create")]
    PolicyCreate { policy: CreatePolicyRequest },
    /// Every option of the policy `policy.name`, replacing what it says, made from `version`.
    #[serde(rename = "policy.update")]
    PolicyUpdate {
        policy: CreatePolicyRequest,
        version: String,
    },
    #[serde(rename = "policy.delete")]
    PolicyDelete { name: String },
    #[serde(rename = "group.add_member")]
    AddMember { group: String, username: String },
    #[serde(rename = "user.create")]
    UserCreate {
        username: String,
        role: String,
        groups: Vec<String>,
        email: Option<String>,
    },
    #[serde(rename = "user.set_role")]
    SetRole { username: String, role: String },
    #[serde(rename = "user.reset_password")]
    ResetPassword { username: String },
    #[serde(rename = "user.ssh_key_add")]
    AddKey {
        username: String,
        public_key: String,
    },
    #[serde(rename = "user.enable")]
    UserEnable { username: String },
    /// One listener's allow-list (the vendor's own list when `vendor`), and its trusted proxies
    /// when given.
    #[serde(rename = "network.set")]
    NetworkSet {
        listener: String,
        allow: Vec<String>,
        vendor: bool,
        trusted_proxies: Option<Vec<String>>,
    },
    /// A third party invited to targets and accounts (its link is made when it applies).
    #[serde(rename = "invite.create")]
    InviteCreate { invite: InviteRequest },
    /// An SSO identity provider (its client secret already sealed).
    #[serde(rename = "sso.add")]
    SsoAdd {
        provider: super::sso::SsoProviderDraft,
    },
}

impl Change {
    pub fn kind(&self) -> &'static str {
        match self {
            Change::PolicyCreate { .. } => "policy.create",
            Change::PolicyDelete { .. } => "policy.delete",
            Change::PolicyUpdate { .. } => "policy.update",
            Change::AddMember { .. } => "group.add_member",
            Change::UserCreate { .. } => "user.create",
            Change::SetRole { .. } => "user.set_role",
            Change::ResetPassword { .. } => "user.reset_password",
            Change::AddKey { .. } => "user.ssh_key_add",
            Change::UserEnable { .. } => "user.enable",
            Change::NetworkSet { .. } => "network.set",
            Change::InviteCreate { .. } => "invite.create",
            Change::SsoAdd { .. } => "sso.add",
        }
    }
}

/// What a change did or will do: applied now, or waiting for a second admin.
// Returned once per call, never stored in bulk: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Applied<T> {
    Done(T),
    Held(ChangeInfo),
}

impl<T> Applied<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> Result<U>) -> Result<Applied<U>> {
        Ok(match self {
            Applied::Done(t) => Applied::Done(f(t)?),
            Applied::Held(c) => Applied::Held(c),
        })
    }
}

/// What applying a change gives back.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Output {
    Nothing,
    Policy(PolicyInfo),
    User {
        username: String,
        one_time_password: SecretString,
    },
    OneTimePassword(SecretString),
    /// The one-time password went to the user by email (this address), to nobody else.
    OneTimePasswordSent(String),
    Key(SshKeyInfo),
    /// The network policy's rows after the change.
    Network(Vec<cofre_store::network::NetworkPolicyRow>),
    Invitation(Box<InvitationInfo>),
}

/// The work done before the write transaction (validation, hashing), so the lock is short.
enum Prepared {
    Policy(PolicyRow),
    Password {
        otp: Zeroizing<String>,
        hash: String,
    },
    Key {
        fingerprint: String,
        key: String,
    },
    Role(Role),
    Invitation(Box<InvitationDraft>),
    Nothing,
}

/// 409 `stale_version` unless `current` is still at `version`.
fn check_policy_version(current: &PolicyRow, version: &str) -> Result<()> {
    let now = policy_version(current);
    if now == version {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Conflict,
        ErrorCode::StaleVersion,
        format!(
            "policy {} changed since version {version} was read (it is at {now} now): read it again and redo the edit",
            current.name
        ),
    )
    .with_field("version"))
}

/// What a policy says, as the audit trail keeps it (`before` and `after` of an edit).
fn policy_json(p: &PolicyRow) -> serde_json::Value {
    serde_json::json!({
        "group": p.group,
        "targets": p.targets,
        "allow": p.access,
        "outcome": p.outcome,
        "limits": serde_json::from_str::<serde_json::Value>(&p.limits).unwrap_or_default(),
    })
}

/// The fields an edit changes, `field old -> new` each, for the change request's diff.
fn policy_diff(old: &PolicyRow, new: &PolicyRow) -> String {
    let flat = |p: &PolicyRow| {
        let mut m = serde_json::Map::new();
        m.insert("group".into(), p.group.clone().into());
        m.insert("targets".into(), p.targets.join(",").into());
        m.insert("allow".into(), p.access.join(",").into());
        m.insert("outcome".into(), p.outcome.clone().into());
        if let Ok(serde_json::Value::Object(l)) = serde_json::from_str(&p.limits) {
            m.extend(l);
        }
        m
    };
    let (a, b) = (flat(old), flat(new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let show = |v: Option<&serde_json::Value>| match v {
        None => "(none)".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    let changes: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k} {} -> {}", show(a.get(k)), show(b.get(k))))
        .collect();
    if changes.is_empty() {
        "no change".to_owned()
    } else {
        changes.join("; ")
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::internal("reading a change request", e)
}

use super::rfc3339;

fn state_of(row: &ChangeRow, now: i64) -> String {
    if row.state == "pending" && now >= row.decide_by {
        "expired".into()
    } else {
        row.state.clone()
    }
}

impl App {
    fn change_info(&self, row: &ChangeRow) -> ChangeInfo {
        ChangeInfo {
            id: row.id.clone(),
            kind: row.kind.clone(),
            diff: row.diff.clone(),
            payload: serde_json::from_str(&row.payload).unwrap_or_default(),
            proposer: row.proposer.clone(),
            state: state_of(row, self.now().unix_timestamp()),
            created_at: rfc3339(row.created_at),
            decide_by: rfc3339(row.decide_by),
            decided_by: row.decided_by.clone(),
            decided_at: row.decided_at.map(rfc3339),
            comment: row.comment.clone(),
        }
    }

    async fn parsed_policies(&self) -> Result<Vec<Policy>> {
        Ok(self
            .store
            .all_policies()
            .await?
            .iter()
            .filter_map(policy_from_row)
            .collect())
    }

    /// Validates a change and does the slow part (hashing a new password) before any lock.
    async fn prepare(&self, change: &Change) -> Result<Prepared> {
        Ok(match change {
            Change::PolicyCreate { policy } | Change::PolicyUpdate { policy, .. } => {
                Prepared::Policy(self.vault().prepare_policy(policy).await?)
            }
            Change::PolicyDelete { name } => {
                check_identifier("name", name)?;
                Prepared::Nothing
            }
            Change::AddMember { group, username } => {
                check_identifier("group", group)?;
                check_identifier("username", username)?;
                Prepared::Nothing
            }
            Change::UserCreate {
                username,
                role,
                groups,
                email,
            } => {
                check_identifier("username", username)?;
                parse_role(role)?;
                for g in groups {
                    check_identifier("groups", g)?;
                }
                if let Some(e) = email {
                    check_email(e)?;
                }
                new_password().await?
            }
            Change::SetRole { username, role } => {
                check_identifier("username", username)?;
                Prepared::Role(parse_role(role)?)
            }
            Change::UserEnable { username } => {
                check_identifier("username", username)?;
                Prepared::Nothing
            }
            Change::NetworkSet {
                listener,
                allow,
                vendor,
                trusted_proxies,
            } => {
                network_change(
                    &self.store.network_policy().await?,
                    listener,
                    allow,
                    *vendor,
                    trusted_proxies.as_deref(),
                )?;
                Prepared::Nothing
            }
            Change::ResetPassword { username } => {
                check_identifier("username", username)?;
                new_password().await?
            }
            Change::AddKey {
                username,
                public_key,
            } => {
                check_identifier("username", username)?;
                let (fingerprint, key) = ssh_key_fingerprint(public_key)?;
                Prepared::Key { fingerprint, key }
            }
            Change::InviteCreate { invite } => {
                Prepared::Invitation(Box::new(self.draft_invitation(invite).await?))
            }
            Change::SsoAdd { provider } => {
                check_identifier("name", &provider.name)?;
                provider.widens(|_| false)?;
                Prepared::Nothing
            }
        })
    }

    /// Whether the change widens someone's access (`cofre_core::governance` decides), and the
    /// text that shows people what it does.
    async fn judge(&self, who: &Principal, change: &Change) -> Result<(bool, String)> {
        let policies = self.parsed_policies().await?;
        Ok(match change {
            Change::PolicyCreate { policy } => {
                let row = self.vault().prepare_policy(policy).await?;
                let parsed = policy_from_row(&row)
                    .ok_or_else(|| Error::internal("judging a policy", "does not parse"))?;
                let mut diff = format!(
                    "+ policy {}: group {} may {} on {} (outcome {})",
                    row.name,
                    row.group,
                    row.access.join(","),
                    row.targets.join(","),
                    row.outcome
                );
                if row.limits != "{}" {
                    diff.push_str(&format!(", limits {}", row.limits));
                }
                (policy_add_widens(&policies, &parsed), diff)
            }
            Change::PolicyUpdate { policy, version } => {
                let current = self
                    .store
                    .policy_by_name(&policy.name)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("policy {}", policy.name)))?;
                check_policy_version(&current, version)?;
                let row = self.vault().prepare_policy(policy).await?;
                let (Some(old), Some(new)) = (policy_from_row(&current), policy_from_row(&row))
                else {
                    return Err(Error::internal("judging a policy edit", "does not parse"));
                };
                let others: Vec<Policy> =
                    policies.into_iter().filter(|p| p.name != old.name).collect();
                let diff = format!(
                    "~ policy {}: {}",
                    row.name,
                    policy_diff(&current, &row)
                );
                (policy_edit_widens(&others, &old, &new), diff)
            }
            Change::PolicyDelete { name } => {
                let removed = policies
                    .iter()
                    .find(|p| &p.name == name)
                    .ok_or_else(|| Error::not_found(format!("policy {name}")))?;
                let diff = format!(
                    "- policy {name}: group {} on {} (outcome {})",
                    removed.group,
                    removed
                        .targets
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    removed.outcome.as_str()
                );
                (policy_remove_widens(&policies, removed), diff)
            }
            Change::AddMember { group, username } => (
                group_is_named(&policies, group),
                format!("+ {username} in group {group}"),
            ),
            Change::UserCreate {
                username,
                role,
                groups,
                ..
            } => {
                let r = parse_role(role)?;
                (
                    user_create_widens(&policies, r, groups),
                    format!(
                        "+ user {username}, role {role}, groups [{}]",
                        groups.join(",")
                    ),
                )
            }
            Change::SetRole { username, role } => {
                let to = parse_role(role)?;
                let user = self
                    .store
                    .user_by_name(username)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("user {username}")))?;
                let from = Role::parse(&user.role).unwrap_or(Role::Support);
                (
                    role_change_widens(from, to),
                    format!("user {username}: role {} -> {role}", user.role),
                )
            }
            Change::UserEnable { username } => {
                let user = self
                    .store
                    .user_by_name(username)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("user {username}")))?;
                if user.disabled_at.is_none() {
                    return Err(super::offboarding::no_change(
                        &format!("user {username}"),
                        false,
                    ));
                }
                (
                    user_enable_widens(true),
                    format!(
                        "user {username}: enabled again (role {}; its groups, SSH keys and password work again)",
                        user.role
                    ),
                )
            }
            Change::NetworkSet {
                listener,
                allow,
                vendor,
                trusted_proxies,
            } => {
                let (_, old, new) = network_change(
                    &self.store.network_policy().await?,
                    listener,
                    allow,
                    *vendor,
                    trusted_proxies.as_deref(),
                )?;
                let list = |n: &[ipnet::IpNet]| {
                    if n.is_empty() {
                        "(none)".to_owned()
                    } else {
                        cofre_core::network::to_strings(n).join(",")
                    }
                };
                let which = if *vendor { "vendor_allow" } else { "allow" };
                let (from, to) = if *vendor {
                    (&old.vendor_allow, &new.vendor_allow)
                } else {
                    (&old.allow, &new.allow)
                };
                let mut diff = format!(
                    "network {listener}: {which} {} -> {}",
                    list(from),
                    list(to)
                );
                if old.trusted_proxies != new.trusted_proxies {
                    diff.push_str(&format!(
                        ", trusted_proxies {} -> {}",
                        list(&old.trusted_proxies),
                        list(&new.trusted_proxies)
                    ));
                }
                if new.is_open() {
                    diff.push_str(" (everyone may connect)");
                }
                (old.widens(&new), diff)
            }
            Change::ResetPassword { username } => (
                *username != who.username,
                format!(
                    "user {username}: password reset (the new password goes to the user's email when mail is configured, else to the approving admin, once)"
                ),
            ),
            Change::AddKey {
                username,
                public_key,
            } => {
                let (fingerprint, _) = ssh_key_fingerprint(public_key)?;
                (
                    *username != who.username,
                    format!("+ ssh key {fingerprint} on user {username}"),
                )
            }
            // Someone without an account gets sessions on targets: always a widening.
            Change::InviteCreate { invite } => (true, invitation_diff(invite)),
            Change::SsoAdd { provider } => (
                provider.widens(|g| group_is_named(&policies, g))?,
                provider.diff(),
            ),
        })
    }

    async fn other_admins(&self, who: &str) -> Result<usize> {
        Ok(self
            .store
            .usernames_with_role(Role::Admin.as_str())
            .await?
            .iter()
            .filter(|a| a.as_str() != who)
            .count())
    }
}

impl Approvals<'_> {
    /// Applies a change now, or holds it for a second admin (see the module's comment).
    pub(crate) async fn propose_change(
        &self,
        who: &Principal,
        change: Change,
    ) -> Result<Applied<Output>> {
        let prepared = self.prepare(&change).await?;
        let (widens, diff) = self.judge(who, &change).await?;
        let setting = self.config.governance.dual_control;
        match gate(setting, widens, self.other_admins(&who.username).await?) {
            Gate::Hold => Ok(Applied::Held(self.hold(who, &change, &diff).await?)),
            g => {
                let mut tx = self.store.write().await?;
                let (mut entry, output) = self
                    .apply_change(&mut tx, &who.username, None, &change, prepared)
                    .await?;
                if g == Gate::Unilateral {
                    entry = entry
                        .outcome("unilateral")
                        .detail("dual_control", setting.as_str())
                        .detail("diff", diff.as_str());
                }
                self.commit(tx, entry).await?;
                if g == Gate::Unilateral {
                    self.unilateral_alert(&who.username, change.kind(), &diff);
                }
                if matches!(
                    output,
                    Output::OneTimePasswordSent(_) | Output::Invitation(_)
                ) {
                    self.notifier_wake();
                }
                Ok(Applied::Done(output))
            }
        }
    }
}

impl App {
    /// A widening change made by the only admin: nobody could approve it, so say so loudly.
    fn unilateral_alert(&self, who: &str, kind: &str, diff: &str) {
        tracing::error!(
            admin = who,
            kind,
            diff,
            "ALERT: a change that widens access was applied by the only admin (no second admin exists)"
        );
        metrics::counter!("cofre_unilateral_changes_total").increment(1);
        if let Some(url) = self.config.alerts.webhook_url.clone() {
            let body = serde_json::json!({
                "event": "change.unilateral",
                "instance": self.instance_id(),
                "admin": who,
                "kind": kind,
                "diff": diff,
                "at": self.now_text(),
            });
            tokio::spawn(super::backups::send_webhook(url, body));
        }
    }

    async fn hold(&self, who: &Principal, change: &Change, diff: &str) -> Result<ChangeInfo> {
        let now = self.now().unix_timestamp();
        let payload = serde_json::to_string(change).map_err(internal)?;
        let row = ChangeRow {
            id: uuid::Uuid::new_v4().simple().to_string(),
            kind: change.kind().to_owned(),
            payload,
            diff: diff.to_owned(),
            proposer: who.username.clone(),
            state: "pending".into(),
            created_at: now,
            decide_by: now + i64::from(self.config.governance.change_timeout_hours) * 3600,
            decided_by: None,
            decided_at: None,
            comment: String::new(),
        };
        let mut tx = self.store.write().await?;
        tx.insert_change(&row).await?;
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                "change.propose",
                format!("change:{}", row.id),
            )
            .detail("kind", row.kind.as_str())
            .detail("diff", diff),
        )
        .await?;
        Ok(self.change_info(&row))
    }

    /// Applies `change` inside `tx` as `actor` proposed it (and `approver` approved it, if held).
    /// Returns the change's own audit entry and what it produced.
    async fn apply_change(
        &self,
        tx: &mut WriteTx,
        actor: &str,
        approver: Option<&str>,
        change: &Change,
        prepared: Prepared,
    ) -> Result<(NewAuditEntry, Output)> {
        let now = self.now().unix_timestamp();
        let now_text = self.now_text();
        let mut touched = None;
        let (entry, output) = match (change, prepared) {
            (Change::PolicyCreate { .. }, Prepared::Policy(row)) => {
                if tx.group_id(&row.group).await?.is_none() {
                    return Err(Error::invalid(
                        "group",
                        format!("group: {} does not exist", row.group),
                    ));
                }
                tx.insert_policy(&row, actor).await?;
                let entry =
                    NewAuditEntry::new(actor, "policy.create", format!("policy:{}", row.name))
                        .detail("group", row.group.as_str())
                        .detail("targets", row.targets.clone())
                        .detail("allow", row.access.clone())
                        .detail("outcome", row.outcome.as_str())
                        .detail(
                            "limits",
                            serde_json::from_str::<serde_json::Value>(&row.limits)
                                .unwrap_or_default(),
                        );
                (entry, Output::Policy(policy_info(row)))
            }
            (Change::PolicyUpdate { version, .. }, Prepared::Policy(row)) => {
                // Read again inside the write: an edit approved after another one landed was
                // made from a version that is gone.
                let before = tx
                    .policy_by_name(&row.name)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("policy {}", row.name)))?;
                check_policy_version(&before, version)?;
                if tx.group_id(&row.group).await?.is_none() {
                    return Err(Error::invalid(
                        "group",
                        format!("group: {} does not exist", row.group),
                    ));
                }
                let after = PolicyRow {
                    created_at: before.created_at.clone(),
                    ..row
                };
                tx.update_policy(&after).await?;
                let entry =
                    NewAuditEntry::new(actor, "policy.update", format!("policy:{}", after.name))
                        .detail("before", policy_json(&before))
                        .detail("after", policy_json(&after))
                        .detail("version", policy_version(&after));
                (entry, Output::Policy(policy_info(after)))
            }
            (Change::PolicyDelete { name }, _) => {
                if !tx.delete_policy(name).await? {
                    return Err(Error::not_found(format!("policy {name}")));
                }
                (
                    NewAuditEntry::new(actor, "policy.delete", format!("policy:{name}")),
                    Output::Nothing,
                )
            }
            (Change::AddMember { group, username }, _) => {
                let gid = tx
                    .group_id(group)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("group {group}")))?;
                let user = tx.user_by_name(username).await?.ok_or_else(|| {
                    Error::not_found(format!("user {username}")).with_field("username")
                })?;
                tx.add_member(gid, user.id).await?;
                touched = Some((user.id, "groups"));
                (
                    NewAuditEntry::new(actor, "group.add_member", format!("group:{group}"))
                        .detail("user", username.as_str()),
                    Output::Nothing,
                )
            }
            (
                Change::UserCreate {
                    username,
                    role,
                    groups,
                    email,
                },
                Prepared::Password { otp, hash },
            ) => {
                let user_id = tx
                    .insert_user(NewUser {
                        username,
                        role,
                        password_hash: &hash,
                        must_change_password: true,
                        created_at: &now_text,
                    })
                    .await?;
                for g in groups {
                    let gid = tx.ensure_group(g, &now_text).await?;
                    tx.add_member(gid, user_id).await?;
                }
                if let Some(e) = email {
                    tx.set_email(user_id, Some(e)).await?;
                }
                touched = Some((user_id, "created"));
                (
                    NewAuditEntry::new(actor, "user.create", format!("user:{username}"))
                        .detail("role", role.as_str())
                        .detail("groups", groups.clone())
                        .detail("email", email.clone().unwrap_or_default()),
                    Output::User {
                        username: username.clone(),
                        one_time_password: SecretString::new(otp.to_string()),
                    },
                )
            }
            (Change::SetRole { username, .. }, Prepared::Role(role)) => {
                let user = tx
                    .user_by_name(username)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("user {username}")))?;
                tx.set_role(user.id, role.as_str()).await?;
                // A new role is a new footing: the user logs in again rather than carry on a
                // session begun under the old one. The role it already had is no new footing.
                if user.role != role.as_str() {
                    tx.delete_tokens_of(user.id).await?;
                }
                touched = Some((user.id, "role"));
                (
                    NewAuditEntry::new(actor, "user.set_role", format!("user:{username}"))
                        .detail("from", user.role.as_str())
                        .detail("to", role.as_str()),
                    Output::Nothing,
                )
            }
            (Change::ResetPassword { username }, Prepared::Password { otp, hash }) => {
                let user = tx
                    .user_by_name(username)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("user {username}")))?;
                tx.set_password(user.id, &hash, true).await?;
                tx.delete_tokens_of(user.id).await?;
                touched = Some((user.id, "password"));
                let entry =
                    NewAuditEntry::new(actor, "user.reset_password", format!("user:{username}"));
                match (&user.email, &self.config.notify.smtp_host) {
                    // With mail configured, the password goes to the user alone: no admin
                    // sees it, so none can log in as the user with it.
                    (Some(email), Some(_)) => {
                        let body = Zeroizing::new(format!(
                            "Hello {username},\n\nYour Cofre password was reset. Your one-time password:\n\n    {}\n\n\
                             It works once: log in with `cofre login --user {username}` and choose \
                             your own password at once. If you did not expect this, tell your Cofre admins.\n",
                            otp.as_str()
                        ));
                        self.queue_secret_email(tx, email, "[Cofre] your one-time password", &body)
                            .await?;
                        (
                            entry.detail("sent_to", email.as_str()),
                            Output::OneTimePasswordSent(email.clone()),
                        )
                    }
                    _ => (
                        entry,
                        Output::OneTimePassword(SecretString::new(otp.to_string())),
                    ),
                }
            }
            (Change::UserEnable { username }, _) => {
                let user = tx
                    .user_by_name(username)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("user {username}")))?;
                if user.disabled_at.is_none() {
                    return Err(super::offboarding::no_change(
                        &format!("user {username}"),
                        false,
                    ));
                }
                tx.set_user_disabled(user.id, None, None).await?;
                touched = Some((user.id, "enabled"));
                (
                    NewAuditEntry::new(actor, "user.enable", format!("user:{username}")),
                    Output::Nothing,
                )
            }
            (
                Change::NetworkSet {
                    listener,
                    allow,
                    vendor,
                    trusted_proxies,
                },
                _,
            ) => {
                let rows = tx.network_policy().await?;
                let (mut row, old, new) =
                    network_change(&rows, listener, allow, *vendor, trusted_proxies.as_deref())?;
                row.updated_at = Some(now_text.clone());
                row.updated_by = Some(actor.to_owned());
                tx.set_network_policy(&row).await?;
                let strings = cofre_core::network::to_strings;
                let entry = NewAuditEntry::new(actor, "network.set", format!("network:{listener}"))
                    .detail("listener", listener.as_str())
                    .detail("list", if *vendor { "vendor_allow" } else { "allow" })
                    .detail("allow_from", strings(&old.allow))
                    .detail("allow", strings(&new.allow))
                    .detail("vendor_allow_from", strings(&old.vendor_allow))
                    .detail("vendor_allow", strings(&new.vendor_allow))
                    .detail("trusted_proxies_from", strings(&old.trusted_proxies))
                    .detail("trusted_proxies", strings(&new.trusted_proxies));
                (entry, Output::Network(tx.network_policy().await?))
            }
            (Change::AddKey { username, .. }, Prepared::Key { fingerprint, key }) => {
                let user = tx
                    .user_by_name(username)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("user {username}")))?;
                tx.insert_ssh_key(user.id, &fingerprint, &key, &now_text)
                    .await?;
                touched = Some((user.id, "ssh_key"));
                (
                    NewAuditEntry::new(actor, "user.ssh_key_add", format!("user:{username}"))
                        .detail("fingerprint", fingerprint.as_str()),
                    Output::Key(SshKeyInfo {
                        fingerprint,
                        public_key: key,
                        created_at: now_text.clone(),
                    }),
                )
            }
            (Change::SsoAdd { provider }, _) => {
                for m in &provider.mappings {
                    if let Some((_, group)) = m.rsplit_once('=') {
                        if !group.starts_with("role:") && tx.group_id(group).await?.is_none() {
                            return Err(Error::invalid(
                                "mappings",
                                format!("mappings: {m:?}: group {group} does not exist"),
                            ));
                        }
                    }
                }
                tx.insert_sso_provider(&provider.row(actor, &now_text)?)
                    .await?;
                (
                    NewAuditEntry::new(actor, "sso.add", format!("sso:{}", provider.name))
                        .detail("issuer", provider.issuer.as_str())
                        .detail("client_id", provider.client_id.as_str())
                        .detail("mappings", provider.mappings.join(","))
                        .detail(
                            "default_role",
                            provider.default_role.as_deref().unwrap_or(""),
                        ),
                    Output::Nothing,
                )
            }
            (Change::InviteCreate { .. }, Prepared::Invitation(draft)) => {
                let (entry, info) = self.keep_invitation(tx, actor, *draft).await?;
                (entry, Output::Invitation(Box::new(info)))
            }
            _ => {
                return Err(Error::internal(
                    "applying a change",
                    "prepared work does not match the change",
                ))
            }
        };
        if let Some((user_id, what)) = touched {
            tx.record_account_change(user_id, actor, what, now).await?;
            // Whoever is handed a one-time password could log in as that user: for the cooling-off
            // rule the approving admin who receives it has changed the account too.
            let hands_out_password =
                matches!(output, Output::User { .. } | Output::OneTimePassword(_));
            if let (Some(a), true) = (approver, hands_out_password) {
                tx.record_account_change(user_id, a, "password", now)
                    .await?;
            }
        }
        Ok((entry, output))
    }
}

impl Approvals<'_> {
    /// Whether `approver` (a user id) counts on `requester`'s requests now: not during the
    /// cooling-off period after the requester created or changed the approver's account.
    pub(crate) async fn approver_counts(
        &self,
        tx: &mut WriteTx,
        approver_id: i64,
        requester: &str,
    ) -> Result<bool> {
        let now = self.now().unix_timestamp();
        let cooling = self.config.governance.cooling_off_seconds();
        let changes: Vec<AccountChange> = tx
            .account_changes(approver_id, now.saturating_sub(cooling))
            .await?
            .into_iter()
            .map(|c| AccountChange {
                changed_by: c.changed_by,
                at: c.at,
            })
            .collect();
        Ok(counts_for(&changes, requester, now, cooling))
    }

    pub async fn list_changes(
        &self,
        who: &Principal,
        pending_only: bool,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<ChangeInfo>> {
        who.require(Action::ViewInstance)?;
        let limit = page_limit(limit)?;
        let before = match cursor {
            None => None,
            Some(c) => {
                let bad = || Error::invalid("cursor", "cursor: not a cursor of this list");
                let (at, id) = c.split_once(':').ok_or_else(bad)?;
                Some((at.parse::<i64>().map_err(|_| bad())?, id.to_owned()))
            }
        };
        let rows = self
            .store
            .changes_page(pending_only, before, limit + 1)
            .await?;
        Ok(super::paginate(
            rows,
            limit,
            |r| format!("{}:{}", r.created_at, r.id),
            |r| self.change_info(&r),
        ))
    }

    pub async fn get_change(&self, who: &Principal, id: &str) -> Result<ChangeInfo> {
        who.require(Action::ViewInstance)?;
        let row = self
            .store
            .change(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("change {id}")))?;
        Ok(self.change_info(&row))
    }
}

impl App {
    /// A refused decision: audited, then reported.
    async fn change_refused(
        &self,
        who: &Principal,
        id: &str,
        verdict: Verdict,
        why: &str,
        err: Error,
    ) -> Result<ChangeDecision> {
        self.record(
            NewAuditEntry::new(&who.username, "change.decide", format!("change:{id}"))
                .outcome("denied")
                .detail("verdict", verdict.as_str())
                .detail("why", why),
        )
        .await?;
        Err(err)
    }
}

impl Approvals<'_> {
    /// The second admin's decision. On approval the change is re-validated and applied in the
    /// same transaction as the decision, so the decision and the change land together or not at all.
    pub async fn decide_change(
        &self,
        who: &Principal,
        id: &str,
        verdict: Verdict,
        comment: Option<&str>,
    ) -> Result<ChangeDecision> {
        who.require(Action::DecideChanges)?;
        let comment = comment.unwrap_or("").trim();
        cofre_core::names::check_text("comment", comment, 500)?;
        if verdict == Verdict::Deny && comment.chars().count() < 3 {
            return Err(Error::invalid(
                "comment",
                "comment: say why the change is denied (at least 3 characters)",
            ));
        }
        let row = self
            .store
            .change(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("change {id}")))?;
        let change: Change = serde_json::from_str(&row.payload).map_err(internal)?;
        // Re-validated now: what was valid when proposed may no longer be (a group removed).
        let prepared = if verdict == Verdict::Approve {
            Some(self.prepare(&change).await?)
        } else {
            None
        };
        let now = self.now().unix_timestamp();
        let mut tx = self.store.write().await?;
        let row = tx
            .change(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("change {id}")))?;
        let mut machine = change_request(&row.proposer, row.decide_by);
        machine.state = State::parse(&row.state).unwrap_or(State::Denied);
        let groups = change_decider_groups(who.role);
        let event = Event::Decide {
            who: &who.username,
            groups: &groups,
            verdict,
            comment,
            at: now,
        };
        if let Err(refusal) = machine.apply(&event) {
            if refusal == Refusal::Expired {
                tx.close_change(id, "expired", "system", now, "").await?;
                self.commit(
                    tx,
                    NewAuditEntry::new("system", "change.expire", format!("change:{id}"))
                        .detail("kind", row.kind.as_str()),
                )
                .await?;
            } else {
                drop(tx);
            }
            let (kind, code) = match refusal {
                Refusal::OwnRequest => (ErrorKind::Forbidden, ErrorCode::OwnChange),
                Refusal::NotPending(_) | Refusal::Expired => {
                    (ErrorKind::Conflict, ErrorCode::NotPending)
                }
                _ => (ErrorKind::Forbidden, ErrorCode::NotAllowed),
            };
            let why = match refusal {
                Refusal::OwnRequest => "nobody approves their own change".to_owned(),
                other => other.to_string(),
            };
            let err = Error::new(kind, code, why.clone());
            return self.change_refused(who, id, verdict, &why, err).await;
        }
        if verdict == Verdict::Approve
            && !self
                .approver_counts(&mut tx, who.user_id, &row.proposer)
                .await?
        {
            drop(tx);
            let why = format!(
                "{} created or changed your account in the last {} days: you do not count on their changes yet",
                row.proposer, self.config.governance.cooling_off_days
            );
            let err = Error::new(ErrorKind::Forbidden, ErrorCode::CoolingOff, why.clone());
            return self.change_refused(who, id, verdict, &why, err).await;
        }
        let mut one_time_password = None;
        let mut sent_to = None;
        let mut invited = false;
        if let Some(prepared) = prepared {
            let proposer = tx.user_by_name(&row.proposer).await?;
            // The vendor's operator proposes changes of the vendor's own networks.
            let proposer_may = match proposer.map(|p| p.role) {
                Some(r) if r == Role::Admin.as_str() => true,
                Some(r) if r == Role::Operator.as_str() => {
                    matches!(change, Change::NetworkSet { vendor: true, .. })
                }
                _ => false,
            };
            if !proposer_may {
                drop(tx);
                let why = format!("{} is no longer an admin", row.proposer);
                let err = Error::new(
                    ErrorKind::Conflict,
                    ErrorCode::ProposerNotAdmin,
                    why.clone(),
                );
                return self.change_refused(who, id, verdict, &why, err).await;
            }
            let (entry, output) = self
                .apply_change(
                    &mut tx,
                    &row.proposer,
                    Some(&who.username),
                    &change,
                    prepared,
                )
                .await?;
            tx.append_audit(
                self.now_text(),
                entry
                    .detail("change", id)
                    .detail("approved_by", who.username.as_str()),
            )
            .await
            .map_err(|e| Error::internal("writing the audit entry", e))?;
            match output {
                Output::User {
                    one_time_password: p,
                    ..
                }
                | Output::OneTimePassword(p) => one_time_password = Some(p),
                Output::OneTimePasswordSent(to) => sent_to = Some(to),
                Output::Invitation(_) => invited = true,
                _ => {}
            }
        }
        let state = if verdict == Verdict::Approve {
            "approved"
        } else {
            "denied"
        };
        if !tx
            .close_change(id, state, &who.username, now, comment)
            .await?
        {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::NotPending,
                "the change was decided by someone else first",
            ));
        }
        let mut entry = NewAuditEntry::new(&who.username, "change.decide", format!("change:{id}"))
            .detail("verdict", verdict.as_str())
            .detail("kind", row.kind.as_str())
            .detail("diff", row.diff.as_str())
            .detail("proposer", row.proposer.as_str())
            .detail("approver", who.username.as_str());
        if !comment.is_empty() {
            entry = entry.detail("comment", comment);
        }
        self.commit(tx, entry).await?;
        if row.kind == "network.set" {
            self.network.invalidate();
        }
        let row = self
            .store
            .change(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("change {id}")))?;
        if sent_to.is_some() || invited {
            self.notifier_wake();
        }
        Ok(ChangeDecision {
            change: self.change_info(&row),
            one_time_password,
            sent_to,
        })
    }
}

impl App {
    /// Dual control's part of the instance facts (`services::instance`): the admins, and the
    /// warnings about how dual control applies with them.
    pub(crate) async fn governance_facts(&self) -> Result<(Vec<String>, Vec<String>)> {
        let admins = self.store.usernames_with_role(Role::Admin.as_str()).await?;
        let setting = self.config.governance.dual_control;
        let mut warnings = Vec::new();
        if admins.len() < 2 && setting == DualControl::WhenPossible {
            warnings.push(format!(
                "only one admin ({}): dual control cannot apply; every change that widens access is applied alone, audited `unilateral`, and alerted, until a second admin exists",
                admins.join(",")
            ));
        }
        if admins.len() < 2 && setting == DualControl::Required {
            warnings.push(format!(
                "only one admin ({}): with dual_control = \"required\", changes that widen access wait until a second admin exists to approve them",
                admins.join(",")
            ));
        }
        if setting == DualControl::Off {
            warnings.push(
                "dual control is off ([governance] dual_control = \"off\"): one admin alone can widen access"
                    .to_owned(),
            );
        }
        Ok((admins, warnings))
    }
}

impl Accounts<'_> {
    /// The user as the API shows it, after a change.
    pub(crate) async fn user_info_of(&self, username: &str) -> Result<UserInfo> {
        let user = self
            .store
            .user_by_name(username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {username}")))?;
        let groups = self.store.user_groups(user.id).await?;
        Ok(user_info(&user, groups, self.now().unix_timestamp()))
    }
}

async fn new_password() -> Result<Prepared> {
    let otp = password::generate_password();
    let hash = hash_password(otp.to_string()).await?;
    Ok(Prepared::Password { otp, hash })
}
