//! Credential rotation: per-credential settings, the lease that keeps two rotations of one
//! credential apart (across nodes), the pending version a rotation stored, and how the last went.

use crate::{bool_int, Result, Store, StoreError, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone, Default)]
pub struct RotationRow {
    pub credential_id: i64,
    pub target: String,
    pub account: String,
    pub kind: String,
    pub current_version: i64,
    pub method: Option<String>,
    pub as_account: Option<String>,
    pub every_seconds: Option<i64>,
    pub after_reveal: bool,
    pub after_session: bool,
    pub after_grant: bool,
    pub verify_every_seconds: Option<i64>,
    pub due_at: Option<i64>,
    pub due_trigger: Option<String>,
    /// The method and account a deferred `credential rotate` asked for (None: the settings').
    pub due_method: Option<String>,
    pub due_as: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub pending_version: Option<i64>,
    pub pending_method: Option<String>,
    pub pending_as: Option<String>,
    pub pending_trigger: Option<String>,
    pub last_at: Option<i64>,
    pub last_trigger: Option<String>,
    pub last_method: Option<String>,
    pub last_outcome: Option<String>,
    pub last_reason: Option<String>,
    pub last_success_at: Option<i64>,
    pub last_verify_at: Option<i64>,
    pub last_verify_outcome: Option<String>,
    pub failures: i64,
    pub retry_at: Option<i64>,
    /// The command template a `command` rotation runs with (its version in `rotation_templates`).
    pub template_version: Option<i64>,
}

const COLUMNS: &str = "r.credential_id, t.name AS target, c.account, c.kind, c.current_version, \
    r.method, r.as_account, r.every_seconds, r.after_reveal, r.after_session, r.after_grant, \
    r.verify_every_seconds, r.due_at, r.due_trigger, r.due_method, r.due_as, r.lease_owner, r.lease_until, \
    r.pending_version, r.pending_method, r.pending_as, r.pending_trigger, r.last_at, \
    r.last_trigger, r.last_method, r.last_outcome, r.last_reason, r.last_success_at, \
    r.last_verify_at, r.last_verify_outcome, r.failures, r.retry_at, r.template_version";

const FROM: &str = "credential_rotation r JOIN credentials c ON c.id = r.credential_id \
    JOIN targets t ON t.id = c.target_id";

fn from_row(row: &sqlx::any::AnyRow) -> Result<RotationRow> {
    Ok(RotationRow {
        credential_id: row.try_get("credential_id")?,
        target: row.try_get("target")?,
        account: row.try_get("account")?,
        kind: row.try_get("kind")?,
        current_version: row.try_get("current_version")?,
        method: row.try_get("method")?,
        as_account: row.try_get("as_account")?,
        every_seconds: row.try_get("every_seconds")?,
        after_reveal: row.try_get::<i64, _>("after_reveal")? != 0,
        after_session: row.try_get::<i64, _>("after_session")? != 0,
        after_grant: row.try_get::<i64, _>("after_grant")? != 0,
        verify_every_seconds: row.try_get("verify_every_seconds")?,
        due_at: row.try_get("due_at")?,
        due_trigger: row.try_get("due_trigger")?,
        due_method: row.try_get("due_method")?,
        due_as: row.try_get("due_as")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until: row.try_get("lease_until")?,
        pending_version: row.try_get("pending_version")?,
        pending_method: row.try_get("pending_method")?,
        pending_as: row.try_get("pending_as")?,
        pending_trigger: row.try_get("pending_trigger")?,
        last_at: row.try_get("last_at")?,
        last_trigger: row.try_get("last_trigger")?,
        last_method: row.try_get("last_method")?,
        last_outcome: row.try_get("last_outcome")?,
        last_reason: row.try_get("last_reason")?,
        last_success_at: row.try_get("last_success_at")?,
        last_verify_at: row.try_get("last_verify_at")?,
        last_verify_outcome: row.try_get("last_verify_outcome")?,
        failures: row.try_get("failures")?,
        retry_at: row.try_get("retry_at")?,
        template_version: row.try_get("template_version")?,
    })
}

/// What `credential set-rotation` stores.
#[derive(Debug, Clone, Default)]
pub struct RotationSettings<'a> {
    pub method: Option<&'a str>,
    pub as_account: Option<&'a str>,
    pub every_seconds: Option<i64>,
    pub after_reveal: bool,
    pub after_session: bool,
    pub after_grant: bool,
    pub verify_every_seconds: Option<i64>,
    pub template_version: Option<i64>,
    pub at: i64,
}

/// How an attempt ended, for the row.
#[derive(Debug, Clone)]
pub struct RotationEnd<'a> {
    pub at: i64,
    pub trigger: &'a str,
    pub method: &'a str,
    pub outcome: &'a str,
    pub reason: Option<&'a str>,
    pub success: bool,
    /// When to try again (after a failure), if at all.
    pub retry_at: Option<i64>,
}

impl Store {
    /// The rotation row of a live (not deleted) credential, if it has one.
    pub async fn rotation(&self, credential_id: i64) -> Result<Option<RotationRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {FROM} WHERE r.credential_id = $1"
        ))
        .bind(credential_id)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// A credential's command template at `version`: its text and SHA-256.
    pub async fn rotation_template(
        &self,
        credential_id: i64,
        version: i64,
    ) -> Result<Option<(String, String)>> {
        let mut c = self.read().await?;
        let row = sqlx::query(
            "SELECT body, sha256 FROM rotation_templates WHERE credential_id = $1 AND version = $2",
        )
        .bind(credential_id)
        .bind(version)
        .fetch_optional(&mut *c)
        .await?;
        row.map(|r| Ok((r.try_get("body")?, r.try_get("sha256")?)))
            .transpose()
    }

    /// Rotation rows of live credentials ordered by (target, account), after `after` (`target/account`).
    pub async fn rotations_page(
        &self,
        after: Option<(&str, &str)>,
        failed_only: bool,
        limit: i64,
    ) -> Result<Vec<RotationRow>> {
        let mut c = self.read().await?;
        let (t, a) = after.unwrap_or(("", ""));
        let failed = if failed_only {
            " AND r.last_outcome IS NOT NULL AND r.last_outcome NOT IN ('rotated', 'recovered')"
        } else {
            ""
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {FROM} WHERE c.deleted_at IS NULL AND t.deleted_at IS NULL \
             AND (t.name > $1 OR (t.name = $1 AND c.account > $2)){failed} \
             ORDER BY t.name, c.account LIMIT $3"
        ))
        .bind(t)
        .bind(a)
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Rows with something to do at `now`: a rotation asked for, a retry, a schedule that came
    /// round, a verify due, or a pending version whose rotation's lease ran out (a crash).
    pub async fn rotations_due(&self, now: i64) -> Result<Vec<RotationRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {FROM} WHERE c.deleted_at IS NULL AND t.deleted_at IS NULL \
             AND c.disabled_at IS NULL AND t.disabled_at IS NULL AND ( \
               (r.due_at IS NOT NULL AND r.due_at <= $1) \
               OR (r.retry_at IS NOT NULL AND r.retry_at <= $1) \
               OR (r.every_seconds IS NOT NULL AND COALESCE(r.last_success_at, 0) + r.every_seconds <= $1 \
                   AND (r.retry_at IS NULL OR r.retry_at <= $1)) \
               OR (r.verify_every_seconds IS NOT NULL AND COALESCE(r.last_verify_at, 0) + r.verify_every_seconds <= $1) \
               OR (r.pending_version IS NOT NULL AND COALESCE(r.lease_until, 0) < $1 \
                   AND (r.retry_at IS NULL OR r.retry_at <= $1))) \
             ORDER BY r.credential_id"
        ))
        .bind(now)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Rows whose rotation was in flight on `owner` (this node before a restart).
    pub async fn rotations_pending_of(&self, owner: &str) -> Result<Vec<RotationRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {FROM} WHERE r.pending_version IS NOT NULL AND r.lease_owner = $1"
        ))
        .bind(owner)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Credentials set to rotate after a grant whose grant (approved request) ended, by its
    /// window or a revocation, since their last rotation attempt and since the setting was made,
    /// and that are not due already: `(credential_id, target, account)`.
    pub async fn rotations_after_grant(&self, now: i64) -> Result<Vec<(i64, String, String)>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(
            "SELECT r.credential_id, t.name AS target, c.account FROM credential_rotation r \
             JOIN credentials c ON c.id = r.credential_id JOIN targets t ON t.id = c.target_id \
             WHERE r.after_grant = 1 AND r.due_at IS NULL AND r.pending_version IS NULL \
             AND c.deleted_at IS NULL AND EXISTS (SELECT 1 FROM access_requests q \
               WHERE q.target = t.name AND q.account = c.account AND q.state IN ('approved', 'revoked') \
               AND (CASE WHEN q.state = 'revoked' THEN q.closed_at ELSE q.ends_at END) <= $1 \
               AND (CASE WHEN q.state = 'revoked' THEN q.closed_at ELSE q.ends_at END) \
                   > COALESCE(r.last_at, 0) \
               AND (CASE WHEN q.state = 'revoked' THEN q.closed_at ELSE q.ends_at END) \
                   >= COALESCE(r.settings_at, 0)) \
             ORDER BY r.credential_id",
        )
        .bind(now)
        .fetch_all(&mut *c)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("credential_id")?,
                    r.try_get("target")?,
                    r.try_get("account")?,
                ))
            })
            .collect()
    }

    /// How many gateway sessions on this credential are live (on any node).
    pub async fn live_sessions_on(&self, target: &str, account: &str) -> Result<i64> {
        let mut c = self.read().await?;
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM gateway_sessions WHERE target = $1 AND account = $2 AND ended_at IS NULL",
        )
        .bind(target)
        .bind(account)
        .fetch_one(&mut *c)
        .await?)
    }
}

impl WriteTx {
    /// Makes sure the credential has a rotation row (settings all off).
    pub async fn ensure_rotation_row(&mut self, credential_id: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO credential_rotation (credential_id) VALUES ($1) ON CONFLICT (credential_id) DO NOTHING",
        )
        .bind(credential_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn rotation_for_update(&mut self, credential_id: i64) -> Result<Option<RotationRow>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {FROM} WHERE r.credential_id = $1"
        ))
        .bind(credential_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    pub async fn set_rotation_settings(
        &mut self,
        credential_id: i64,
        s: &RotationSettings<'_>,
    ) -> Result<()> {
        self.ensure_rotation_row(credential_id).await?;
        sqlx::query(
            "UPDATE credential_rotation SET method = $1, as_account = $2, every_seconds = $3, \
             after_reveal = $4, after_session = $5, after_grant = $6, verify_every_seconds = $7, settings_at = $9, \
             template_version = $10 WHERE credential_id = $8",
        )
        .bind(s.method)
        .bind(s.as_account)
        .bind(s.every_seconds)
        .bind(bool_int(s.after_reveal))
        .bind(bool_int(s.after_session))
        .bind(bool_int(s.after_grant))
        .bind(s.verify_every_seconds)
        .bind(credential_id)
        .bind(s.at)
        .bind(s.template_version)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Asks for a rotation (kept if one is asked for already: the earliest trigger stays). A
    /// method or account given by hand is kept for the deferred run even then: the next rotation
    /// is the one the admin asked for.
    pub async fn mark_rotation_due(
        &mut self,
        credential_id: i64,
        at: i64,
        trigger: &str,
        method: Option<&str>,
        as_account: Option<&str>,
    ) -> Result<()> {
        self.ensure_rotation_row(credential_id).await?;
        sqlx::query(
            "UPDATE credential_rotation SET due_at = $1, due_trigger = $2 \
             WHERE credential_id = $3 AND due_at IS NULL",
        )
        .bind(at)
        .bind(trigger)
        .bind(credential_id)
        .execute(&mut *self.tx)
        .await?;
        if method.is_some() || as_account.is_some() {
            sqlx::query(
                "UPDATE credential_rotation SET due_method = $1, due_as = $2 WHERE credential_id = $3",
            )
            .bind(method)
            .bind(as_account)
            .bind(credential_id)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// Takes the lease and records the pending version; false if another rotation holds a lease
    /// that has not run out.
    #[allow(clippy::too_many_arguments)]
    pub async fn begin_rotation(
        &mut self,
        credential_id: i64,
        owner: &str,
        now: i64,
        lease_until: i64,
        pending_version: i64,
        method: &str,
        as_account: Option<&str>,
        trigger: &str,
    ) -> Result<bool> {
        self.ensure_rotation_row(credential_id).await?;
        let done = sqlx::query(
            "UPDATE credential_rotation SET lease_owner = $1, lease_until = $2, pending_version = $3, \
             pending_method = $4, pending_as = $5, pending_trigger = $6, due_at = NULL, due_trigger = NULL, \
             due_method = NULL, due_as = NULL \
             WHERE credential_id = $7 AND pending_version IS NULL \
             AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until < $8)",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(pending_version)
        .bind(method)
        .bind(as_account)
        .bind(trigger)
        .bind(credential_id)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Takes over the lease of a pending rotation (to resolve it); false if someone else holds it.
    pub async fn take_pending_rotation(
        &mut self,
        credential_id: i64,
        pending_version: i64,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE credential_rotation SET lease_owner = $1, lease_until = $2 \
             WHERE credential_id = $3 AND pending_version = $4 \
             AND (lease_owner = $1 OR lease_until IS NULL OR lease_until < $5)",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(credential_id)
        .bind(pending_version)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Ends a rotation: lease and pending version cleared, the outcome kept.
    pub async fn end_rotation(&mut self, credential_id: i64, e: &RotationEnd<'_>) -> Result<()> {
        sqlx::query(
            "UPDATE credential_rotation SET lease_owner = NULL, lease_until = NULL, pending_version = NULL, \
             pending_method = NULL, pending_as = NULL, pending_trigger = NULL, \
             last_at = $1, last_trigger = $2, last_method = $3, last_outcome = $4, last_reason = $5, \
             last_success_at = CASE WHEN $6 = 1 THEN $1 ELSE last_success_at END, \
             failures = CASE WHEN $6 = 1 THEN 0 ELSE failures + 1 END, \
             retry_at = $7 WHERE credential_id = $8",
        )
        .bind(e.at)
        .bind(e.trigger)
        .bind(e.method)
        .bind(e.outcome)
        .bind(e.reason)
        .bind(bool_int(e.success))
        .bind(e.retry_at)
        .bind(credential_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Keeps the pending version (neither secret logged in) and lets the lease go, so the next
    /// attempt (scheduler, restart) resolves it.
    pub async fn leave_rotation_pending(
        &mut self,
        credential_id: i64,
        at: i64,
        reason: &str,
        retry_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE credential_rotation SET lease_owner = NULL, lease_until = NULL, last_at = $1, \
             last_outcome = 'unresolved', last_reason = $2, failures = failures + 1, retry_at = $3 \
             WHERE credential_id = $4",
        )
        .bind(at)
        .bind(reason)
        .bind(retry_at)
        .bind(credential_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn record_verify(
        &mut self,
        credential_id: i64,
        at: i64,
        outcome: &str,
    ) -> Result<()> {
        self.ensure_rotation_row(credential_id).await?;
        sqlx::query(
            "UPDATE credential_rotation SET last_verify_at = $1, last_verify_outcome = $2 WHERE credential_id = $3",
        )
        .bind(at)
        .bind(outcome)
        .bind(credential_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Stores a new version of a credential's command template; returns its version.
    pub async fn add_rotation_template(
        &mut self,
        credential_id: i64,
        body: &str,
        sha256: &str,
        by: &str,
        at: i64,
    ) -> Result<i64> {
        let max: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(version) FROM rotation_templates WHERE credential_id = $1",
        )
        .bind(credential_id)
        .fetch_one(&mut *self.tx)
        .await?;
        let version = max.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO rotation_templates (credential_id, version, body, sha256, set_by, set_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(credential_id)
        .bind(version)
        .bind(body)
        .bind(sha256)
        .bind(by)
        .bind(at)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("rotation template version {version}")))?;
        Ok(version)
    }

    /// The next version number: past every stored one, pending ones included.
    pub async fn next_credential_version(&mut self, credential_id: i64) -> Result<i64> {
        let max: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(version) FROM credential_versions WHERE credential_id = $1",
        )
        .bind(credential_id)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(max.unwrap_or(0) + 1)
    }

    /// Adds a version without making it current (a rotation's pending secret); `add_credential_version`
    /// adds one and makes it current. The primary key refuses two writers adding the same version.
    pub async fn add_pending_credential_version(
        &mut self,
        credential_id: i64,
        version: i64,
        v: crate::credentials::NewVersion<'_>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO credential_versions (credential_id, version, kind, wrapped_key, ciphertext, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(credential_id)
        .bind(version)
        .bind(v.kind)
        .bind(v.wrapped_key)
        .bind(v.ciphertext)
        .bind(v.created_at)
        .bind(v.created_by)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("credential version {version}")))?;
        Ok(())
    }

    /// Makes a stored version current.
    pub async fn make_version_current(
        &mut self,
        credential_id: i64,
        version: i64,
        at: &str,
        by: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE credentials SET current_version = $1, updated_at = $2, updated_by = $3 WHERE id = $4",
        )
        .bind(version)
        .bind(at)
        .bind(by)
        .bind(credential_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
