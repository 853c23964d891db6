//! Taking access back: disabling and deleting users, removing keys and group members, disabling
//! and deleting targets, credentials, backup targets and jobs.
//!
//! Whatever has history is never erased: a deleted target, credential, backup target or job keeps
//! its row (versions, sessions, runs and audit entries point at it) under the name
//! `NAME~deleted~ID`. `~` is in no valid name, so a lookup by name never finds a deleted row and
//! a new row of the same name starts afresh (an old secret cannot come back with the name).

use crate::{Result, StoreError, WriteTx};
use sqlx::Row;

/// A target or credential as offboarding needs it: its id, and whether it is disabled.
#[derive(Debug, Clone)]
pub struct Toggle {
    pub id: i64,
    pub disabled: bool,
}

fn foreign_key_or(err: sqlx::Error, what: impl Into<String>) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        if db.is_foreign_key_violation() {
            return StoreError::Conflict { what: what.into() };
        }
    }
    StoreError::Database(err)
}

impl WriteTx {
    pub async fn set_user_disabled(
        &mut self,
        user_id: i64,
        at: Option<&str>,
        reason: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE users SET disabled_at = $1, disabled_reason = $2 WHERE id = $3")
            .bind(at)
            .bind(reason)
            .bind(user_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Admins that are not disabled (read under the write lock, so two admins disabling each
    /// other at the same moment cannot both succeed).
    pub async fn active_admins(&mut self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL",
        )
        .fetch_one(&mut *self.tx)
        .await?)
    }

    /// Whether the user ever did anything on record: every action is audited under its actor, so
    /// no entry means nothing (session, request, decision, login) names the user as who acted.
    pub async fn user_has_history(&mut self, username: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE actor = $1")
            .bind(username)
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(n > 0)
    }

    /// Deletes a user without history with its memberships, tokens and keys. A row that something
    /// else still references (a break-glass custodianship) is a `Conflict`.
    pub async fn delete_user(&mut self, user_id: i64, username: &str) -> Result<()> {
        for table in [
            "access_group_members",
            "api_tokens",
            "user_ssh_keys",
            "sso_identities",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
                .bind(user_id)
                .execute(&mut *self.tx)
                .await?;
        }
        sqlx::query("DELETE FROM login_failures WHERE username = $1")
            .bind(username)
            .execute(&mut *self.tx)
            .await?;
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user_id)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| foreign_key_or(e, format!("a record that names user {username}")))?;
        Ok(())
    }

    /// Removes one SSH key of a user; false if the user has no such key.
    pub async fn remove_ssh_key(&mut self, user_id: i64, fingerprint: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM user_ssh_keys WHERE user_id = $1 AND fingerprint = $2")
            .bind(user_id)
            .bind(fingerprint)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes a member from a group; false if the user was not in it.
    pub async fn remove_member(&mut self, group_id: i64, user_id: i64) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM access_group_members WHERE group_id = $1 AND user_id = $2")
                .bind(group_id)
                .bind(user_id)
                .execute(&mut *self.tx)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn target_toggle(&mut self, name: &str) -> Result<Option<Toggle>> {
        let row = sqlx::query(
            "SELECT id, disabled_at FROM targets WHERE name = $1 AND deleted_at IS NULL",
        )
        .bind(name)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| {
            Ok(Toggle {
                id: r.try_get("id")?,
                disabled: r.try_get::<Option<String>, _>("disabled_at")?.is_some(),
            })
        })
        .transpose()
    }

    pub async fn set_target_disabled(&mut self, id: i64, at: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE targets SET disabled_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Marks the target and its credentials deleted and frees the target's name. Returns the
    /// accounts of the credentials it had.
    pub async fn delete_target(&mut self, id: i64, at: &str) -> Result<Vec<String>> {
        let accounts: Vec<String> = sqlx::query_scalar(
            "SELECT account FROM credentials WHERE target_id = $1 AND deleted_at IS NULL ORDER BY account",
        )
        .bind(id)
        .fetch_all(&mut *self.tx)
        .await?;
        sqlx::query(
            "UPDATE credentials SET deleted_at = $1 WHERE target_id = $2 AND deleted_at IS NULL",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query(
            "UPDATE targets SET deleted_at = $1, name = name || '~deleted~' || CAST(id AS TEXT) \
             WHERE id = $2",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(accounts)
    }

    pub async fn credential_toggle(
        &mut self,
        target: &str,
        account: &str,
    ) -> Result<Option<Toggle>> {
        let row = sqlx::query(
            "SELECT c.id, c.disabled_at FROM credentials c JOIN targets t ON t.id = c.target_id \
             WHERE t.name = $1 AND c.account = $2 AND c.deleted_at IS NULL AND t.deleted_at IS NULL",
        )
        .bind(target)
        .bind(account)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| {
            Ok(Toggle {
                id: r.try_get("id")?,
                disabled: r.try_get::<Option<String>, _>("disabled_at")?.is_some(),
            })
        })
        .transpose()
    }

    pub async fn set_credential_disabled(&mut self, id: i64, at: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE credentials SET disabled_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Marks the credential deleted (its versions stay) and frees the account name.
    pub async fn delete_credential(&mut self, id: i64, at: &str) -> Result<()> {
        sqlx::query(
            "UPDATE credentials SET deleted_at = $1, account = account || '~deleted~' || CAST(id AS TEXT) \
             WHERE id = $2",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The id of a backup target that is not deleted, and the jobs (not deleted) that use it.
    pub async fn backup_target_users(&mut self, name: &str) -> Result<Option<(i64, Vec<String>)>> {
        let Some(id) = sqlx::query_scalar::<_, i64>(
            "SELECT id FROM backup_targets WHERE name = $1 AND deleted_at IS NULL",
        )
        .bind(name)
        .fetch_optional(&mut *self.tx)
        .await?
        else {
            return Ok(None);
        };
        let jobs = sqlx::query_scalar(
            "SELECT name FROM backup_jobs WHERE target_id = $1 AND deleted_at IS NULL ORDER BY name",
        )
        .bind(id)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(Some((id, jobs)))
    }

    /// Marks a backup target deleted, frees its name and drops its sealed secret (the key or
    /// access key to the customer's storage is of no use once the target is gone).
    pub async fn delete_backup_target(&mut self, id: i64, at: &str) -> Result<()> {
        sqlx::query(
            "UPDATE backup_targets SET deleted_at = $1, name = name || '~deleted~' || CAST(id AS TEXT), \
             secret_wrapped_key = NULL, secret_ciphertext = NULL WHERE id = $2",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The id of a backup job that is not deleted, and whether a run of it is in progress.
    pub async fn backup_job_busy(&mut self, name: &str) -> Result<Option<(i64, bool)>> {
        let Some(id) = sqlx::query_scalar::<_, i64>(
            "SELECT id FROM backup_jobs WHERE name = $1 AND deleted_at IS NULL",
        )
        .bind(name)
        .fetch_optional(&mut *self.tx)
        .await?
        else {
            return Ok(None);
        };
        let running: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM backup_runs WHERE job_id = $1 AND status = 'running'",
        )
        .bind(id)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(Some((id, running > 0)))
    }

    /// Marks a backup job deleted (its runs stay) and frees its name.
    pub async fn delete_backup_job(&mut self, id: i64, at: &str) -> Result<()> {
        sqlx::query(
            "UPDATE backup_jobs SET deleted_at = $1, name = name || '~deleted~' || CAST(id AS TEXT) \
             WHERE id = $2",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
