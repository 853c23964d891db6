//! Offboarding: taking access back, at once.
//!
//! Each change commits with its audit entry first; then the live gateway sessions that stood on
//! what was taken away are ended. A session that registers between the commit and that sweep
//! checks again after registering (`start_session` calls [`App::still_usable`]), so none slips
//! through. Tokens need no sweep: they are deleted in the same transaction, and a disabled user's
//! token is refused by the lookup itself.

use super::vault::disabled_refusal;
use super::{Accounts, Orbit, Vault};
use super::{App, Principal};
use crate::error::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_core::names::check_text;
use cofre_core::policy::Access;
use cofre_core::role::{Action, Role};
use cofre_proto::UserInfo;

const MAX_REASON_CHARS: usize = 500;

fn last_admin(username: &str, what: &str) -> Error {
    Error::new(
        ErrorKind::Conflict,
        ErrorCode::LastAdmin,
        format!(
            "{username} is the last enabled admin: {what} would lock everyone out of the instance; give another user the admin role first"
        ),
    )
}

impl App {
    /// Whether a gateway session of `who` on `target`/`account` may still run: the user enabled,
    /// the key it logged in with registered, the target and credential there and enabled.
    pub(crate) async fn still_usable(
        &self,
        who: &Principal,
        target: &str,
        account: &str,
    ) -> Result<()> {
        self.sessions().gateway_principal_now(who).await?;
        let cred = self
            .store
            .credential(target, account)
            .await?
            .ok_or_else(|| Error::not_found(format!("credential {target}/{account}")))?;
        match disabled_refusal(&cred) {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }
}

impl App {
    /// Re-decides each live session of `username` with the groups and role it has now; one that
    /// is no longer allowed (or cannot be re-decided) ends with `why`. Called after a change
    /// that took something away has committed, so it cannot fail the change.
    pub(crate) async fn redecide_live_sessions(&self, username: &str, why: &str) {
        for (id, s) in self.live.matching(|s| s.user == username) {
            let allowed = async {
                let Some(target) = self.store.target_by_name(&s.target).await? else {
                    return Ok(false);
                };
                let principal = Principal {
                    via_key: s.key.clone(),
                    source: s.source,
                    ..self.sessions().principal_for_name(username).await?
                };
                Ok::<_, Error>(
                    self.approvals()
                        .authorise_use(
                            &principal,
                            &s.target,
                            &target.tags,
                            &s.account,
                            Access::Session,
                        )
                        .await?
                        .is_ok(),
                )
            }
            .await;
            if !matches!(allowed, Ok(true)) {
                self.live.kill_one(&id, why);
            }
        }
    }
}

impl Accounts<'_> {
    /// Disables a user: every token ends in the same transaction, live gateway sessions end right
    /// after it commits, and no key or password of theirs authenticates until `enable_user`.
    pub async fn disable_user(
        &self,
        who: &Principal,
        username: &str,
        reason: &str,
    ) -> Result<UserInfo> {
        who.require(Action::ManageUsers)?;
        check_text("reason", reason, MAX_REASON_CHARS)?;
        if reason.trim().is_empty() {
            return Err(Error::invalid(
                "reason",
                "reason: say why the user is disabled",
            ));
        }
        let mut tx = self.store.write().await?;
        let user = tx
            .user_by_name(username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {username}")))?;
        if user.disabled_at.is_none()
            && user.role == Role::Admin.as_str()
            && tx.active_admins().await? <= 1
        {
            return Err(last_admin(username, "disabling it"));
        }
        let live: Vec<String> = self
            .live
            .matching(|s| s.user == username)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        tx.set_user_disabled(user.id, Some(&self.now_text()), Some(reason))
            .await?;
        tx.delete_tokens_of(user.id).await?;
        // What the user invited (by policy) goes with them: a third party's access never
        // outlives the person who vouched for it.
        let now = self.now().unix_timestamp();
        let invitations = tx
            .revoke_invitations_of_inviter(username, &who.username, now)
            .await?;
        for (_, email, why) in &invitations {
            tx.enqueue_notification(
                "email",
                email,
                "[Cofre] your invitation was revoked",
                &format!(
                    "Hello,\n\nThe invitation from {username} ({why}) was revoked: {username}'s \
                     account was disabled. Its link, login and sessions no longer work.\n"
                ),
                now,
            )
            .await?;
        }
        let revoked: Vec<&str> = invitations.iter().map(|(id, _, _)| id.as_str()).collect();
        self.commit(
            tx,
            NewAuditEntry::new(&who.username, "user.disable", format!("user:{username}"))
                .detail("reason", reason)
                .detail("sessions", live)
                .detail("invitations_revoked", revoked.join(",")),
        )
        .await?;
        self.live.kill_where(
            |s| s.user == username,
            &format!(
                "terminated by {}: account {username} disabled",
                who.username
            ),
        );
        for id in &revoked {
            self.live.kill_by_request(
                id,
                &format!("the invitation {id} was revoked: its inviter {username} was disabled"),
            );
        }
        if !revoked.is_empty() {
            self.notifier_wake();
        }
        self.get_user(who, username).await
    }

    /// Enables a disabled user again. That gives back everything the user had (role, groups,
    /// keys, password), so it widens access: dual-controlled like the other widening changes.
    pub async fn enable_user(
        &self,
        who: &Principal,
        username: &str,
    ) -> Result<super::governance::Applied<UserInfo>> {
        who.require(Action::ManageUsers)?;
        let change = super::governance::Change::UserEnable {
            username: username.to_owned(),
        };
        match self.approvals().propose_change(who, change).await? {
            super::governance::Applied::Held(c) => Ok(super::governance::Applied::Held(c)),
            super::governance::Applied::Done(_) => Ok(super::governance::Applied::Done(
                self.get_user(who, username).await?,
            )),
        }
    }

    /// Deletes a user that never acted (no audit entry names it as actor). One with history is
    /// refused: it is disabled instead, so the trail keeps naming a row that exists.
    pub async fn delete_user(&self, who: &Principal, username: &str) -> Result<()> {
        who.require(Action::ManageUsers)?;
        let mut tx = self.store.write().await?;
        let user = tx
            .user_by_name(username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {username}")))?;
        if user.disabled_at.is_none()
            && user.role == Role::Admin.as_str()
            && tx.active_admins().await? <= 1
        {
            return Err(last_admin(username, "deleting it"));
        }
        if tx.user_has_history(username).await? {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::UserHasHistory,
                format!(
                    "user {username} has audit history and is never erased; disable it instead: `cofre user disable {username} --reason ...`"
                ),
            ));
        }
        tx.delete_user(user.id, username).await.map_err(|e| match e {
            cofre_store::StoreError::Conflict { what } => Error::new(
                ErrorKind::Conflict,
                ErrorCode::UserReferenced,
                format!("user {username} is still named by {what} (e.g. a break-glass custodianship); disable it instead"),
            ),
            other => other.into(),
        })?;
        self.commit(
            tx,
            NewAuditEntry::new(&who.username, "user.delete", format!("user:{username}"))
                .detail("role", user.role.as_str()),
        )
        .await?;
        // It never acted, so it has no session; a concurrent first login fails on the missing row.
        self.live.kill_where(
            |s| s.user == username,
            &format!("terminated by {}: account {username} deleted", who.username),
        );
        Ok(())
    }

    /// Removes an SSH key (one's own, or anyone's as admin); the gateway refuses it at once and
    /// the live sessions it opened end.
    pub async fn remove_ssh_key(
        &self,
        who: &Principal,
        username: &str,
        fingerprint: &str,
    ) -> Result<()> {
        if who.username == username {
            who.require(Action::OwnAccount)?;
        } else {
            who.require(Action::ManageUsers)?;
        }
        let fp = fingerprint.trim();
        let fp = if fp.starts_with("SHA256:") {
            fp.to_owned()
        } else {
            format!("SHA256:{fp}")
        };
        let mut tx = self.store.write().await?;
        let user = tx
            .user_by_name(username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {username}")))?;
        if !tx.remove_ssh_key(user.id, &fp).await? {
            return Err(
                Error::not_found(format!("key {fp} of user {username}")).with_field("fingerprint")
            );
        }
        let live: Vec<String> = self
            .live
            .matching(|s| s.user == username && s.key.as_deref() == Some(fp.as_str()))
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                "user.ssh_key_remove",
                format!("user:{username}"),
            )
            .detail("fingerprint", fp.as_str())
            .detail("sessions", live),
        )
        .await?;
        self.live.kill_where(
            |s| s.user == username && s.key.as_deref() == Some(fp.as_str()),
            &format!("terminated by {}: SSH key {fp} removed", who.username),
        );
        Ok(())
    }

    /// Takes a user out of a group. The API sees it on the next request (groups are read with the
    /// token), a gateway channel on its next start; a live session that only this group's policy
    /// allowed ends now.
    pub async fn remove_group_member(
        &self,
        who: &Principal,
        group: &str,
        username: &str,
    ) -> Result<()> {
        who.require(Action::ManageUsers)?;
        let mut tx = self.store.write().await?;
        let gid = tx
            .group_id(group)
            .await?
            .ok_or_else(|| Error::not_found(format!("group {group}")))?;
        let user = tx
            .user_by_name(username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {username}")).with_field("username"))?;
        if !tx.remove_member(gid, user.id).await? {
            return Err(
                Error::not_found(format!("{username} in group {group}")).with_field("username")
            );
        }
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                "group.remove_member",
                format!("group:{group}"),
            )
            .detail("user", username),
        )
        .await?;
        self.redecide_live_sessions(
            username,
            &format!(
                "terminated by {}: {username} left group {group}, which granted this session",
                who.username
            ),
        )
        .await;
        Ok(())
    }
}

impl Vault<'_> {
    pub async fn set_target_disabled(
        &self,
        who: &Principal,
        name: &str,
        disabled: bool,
    ) -> Result<()> {
        who.require(Action::ManageTargets)?;
        let mut tx = self.store.write().await?;
        let t = tx
            .target_toggle(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("target {name}")))?;
        if t.disabled == disabled {
            return Err(no_change(&format!("target {name}"), disabled));
        }
        let now = self.now_text();
        tx.set_target_disabled(t.id, disabled.then_some(now.as_str()))
            .await?;
        let action = if disabled {
            "target.disable"
        } else {
            "target.enable"
        };
        self.commit(
            tx,
            NewAuditEntry::new(&who.username, action, format!("target:{name}")),
        )
        .await?;
        if disabled {
            self.live.kill_where(
                |s| s.target == name,
                &format!("terminated by {}: target {name} disabled", who.username),
            );
        }
        Ok(())
    }

    /// Deletes a target and its credentials; their versions, sessions and audit entries stay.
    pub async fn delete_target(&self, who: &Principal, name: &str) -> Result<()> {
        who.require(Action::ManageTargets)?;
        let mut tx = self.store.write().await?;
        let t = tx
            .target_toggle(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("target {name}")))?;
        let accounts = tx.delete_target(t.id, &self.now_text()).await?;
        self.commit(
            tx,
            NewAuditEntry::new(&who.username, "target.delete", format!("target:{name}"))
                .detail("credentials", accounts)
                .detail("kept_as", format!("{name}~deleted~{}", t.id)),
        )
        .await?;
        self.live.kill_where(
            |s| s.target == name,
            &format!("terminated by {}: target {name} deleted", who.username),
        );
        self.breakglass_changed();
        Ok(())
    }

    pub async fn set_credential_disabled(
        &self,
        who: &Principal,
        target: &str,
        account: &str,
        disabled: bool,
    ) -> Result<()> {
        who.require(Action::ManageTargets)?;
        let mut tx = self.store.write().await?;
        let c = tx
            .credential_toggle(target, account)
            .await?
            .ok_or_else(|| Error::not_found(format!("credential {target}/{account}")))?;
        if c.disabled == disabled {
            return Err(no_change(
                &format!("credential {target}/{account}"),
                disabled,
            ));
        }
        let now = self.now_text();
        tx.set_credential_disabled(c.id, disabled.then_some(now.as_str()))
            .await?;
        let action = if disabled {
            "credential.disable"
        } else {
            "credential.enable"
        };
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                action,
                format!("credential:{target}/{account}"),
            ),
        )
        .await?;
        if disabled {
            self.live.kill_where(
                |s| s.target == target && s.account == account,
                &format!(
                    "terminated by {}: credential {target}/{account} disabled",
                    who.username
                ),
            );
        }
        Ok(())
    }

    /// Deletes a credential; its versions and audit entries stay, and a new credential of the same
    /// account starts at version 1 with nothing of the old one.
    pub async fn delete_credential(
        &self,
        who: &Principal,
        target: &str,
        account: &str,
    ) -> Result<()> {
        who.require(Action::ManageTargets)?;
        let mut tx = self.store.write().await?;
        let c = tx
            .credential_toggle(target, account)
            .await?
            .ok_or_else(|| Error::not_found(format!("credential {target}/{account}")))?;
        tx.delete_credential(c.id, &self.now_text()).await?;
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                "credential.delete",
                format!("credential:{target}/{account}"),
            )
            .detail("kept_as", format!("{account}~deleted~{}", c.id)),
        )
        .await?;
        self.live.kill_where(
            |s| s.target == target && s.account == account,
            &format!(
                "terminated by {}: credential {target}/{account} deleted",
                who.username
            ),
        );
        self.breakglass_changed();
        Ok(())
    }
}

impl Orbit<'_> {
    /// Removes a backup target no job uses (their names are given otherwise). Its sealed secret is
    /// dropped; the row stays for the runs' history.
    pub async fn remove_backup_target(&self, who: &Principal, name: &str) -> Result<()> {
        super::backups::require_some_duty(who)?;
        let row = self
            .store
            .backup_target(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("backup target {name}")))?;
        self.require_backup_target(who, &row)?;
        let mut tx = self.store.write().await?;
        let (id, jobs) = tx
            .backup_target_users(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("backup target {name}")))?;
        if !jobs.is_empty() {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::BackupTargetInUse,
                format!(
                    "backup target {name} is used by job(s) {}; remove them first (`cofre backup job remove NAME`)",
                    jobs.join(", ")
                ),
            ));
        }
        tx.delete_backup_target(id, &self.now_text()).await?;
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                "backup.target_remove",
                format!("backup-target:{name}"),
            ),
        )
        .await
    }

    /// Removes a backup job that is not running; its runs stay listed in the audit trail and in
    /// `backup/runs`. Nothing already on the target is deleted.
    pub async fn remove_backup_job(&self, who: &Principal, name: &str) -> Result<()> {
        super::backups::require_some_duty(who)?;
        let job = self
            .store
            .backup_job(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("backup job {name}")))?;
        self.require_backup_job(who, &job)?;
        let mut tx = self.store.write().await?;
        let (id, running) = tx
            .backup_job_busy(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("backup job {name}")))?;
        if running {
            return Err(Error::new(
                ErrorKind::Conflict,
                ErrorCode::BackupRunning,
                format!(
                    "job {name} is running; remove it once the run has ended (`cofre backup status` shows its progress)"
                ),
            ));
        }
        tx.delete_backup_job(id, &self.now_text()).await?;
        self.commit(
            tx,
            NewAuditEntry::new(
                &who.username,
                "backup.job_remove",
                format!("backup-job:{name}"),
            ),
        )
        .await
    }
}

/// The answer to disabling what is already disabled, or enabling what is not disabled.
pub(crate) fn no_change(what: &str, disabled: bool) -> Error {
    let (code, state) = if disabled {
        (ErrorCode::AlreadyDisabled, "already")
    } else {
        (ErrorCode::NotDisabled, "not")
    };
    Error::new(
        ErrorKind::Conflict,
        code,
        format!("{what} is {state} disabled"),
    )
}
