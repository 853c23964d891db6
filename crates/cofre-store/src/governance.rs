//! Dual control: change requests waiting for a second admin, and the account-change log that the
//! cooling-off rule reads. As with access requests, reads that lead to a decision happen inside the
//! [`WriteTx`], after the audit head's lock, so two admins deciding at once are serialised.

use crate::{Result, Store, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRow {
    pub id: String,
    pub kind: String,
    /// The proposed change as JSON (no secret).
    pub payload: String,
    pub diff: String,
    pub proposer: String,
    /// `pending`, `approved`, `denied`, `expired`.
    pub state: String,
    /// Unix seconds, as are the other moments.
    pub created_at: i64,
    pub decide_by: i64,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub comment: String,
}

const COLUMNS: &str = "id, kind, payload, diff, proposer, state, created_at, decide_by, \
    decided_by, decided_at, comment";

fn change_from_row(row: &sqlx::any::AnyRow) -> Result<ChangeRow> {
    Ok(ChangeRow {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        payload: row.try_get("payload")?,
        diff: row.try_get("diff")?,
        proposer: row.try_get("proposer")?,
        state: row.try_get("state")?,
        created_at: row.try_get("created_at")?,
        decide_by: row.try_get("decide_by")?,
        decided_by: row.try_get("decided_by")?,
        decided_at: row.try_get("decided_at")?,
        comment: row.try_get("comment")?,
    })
}

/// One entry of the account-change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChangeRow {
    pub changed_by: String,
    pub what: String,
    pub at: i64,
}

async fn changes_of(
    conn: &mut sqlx::AnyConnection,
    user_id: i64,
    since: i64,
) -> Result<Vec<AccountChangeRow>> {
    let rows = sqlx::query(
        "SELECT changed_by, what, at FROM account_changes WHERE user_id = $1 AND at > $2 ORDER BY at",
    )
    .bind(user_id)
    .bind(since)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AccountChangeRow {
                changed_by: r.try_get("changed_by")?,
                what: r.try_get("what")?,
                at: r.try_get("at")?,
            })
        })
        .collect()
}

impl Store {
    pub async fn change(&self, id: &str) -> Result<Option<ChangeRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM change_requests WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(change_from_row).transpose()
    }

    /// Newest first, before the `before` cursor (`created_at:id`), optionally only pending ones.
    pub async fn changes_page(
        &self,
        pending_only: bool,
        before: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<ChangeRow>> {
        let mut c = self.read().await?;
        let (at, id) = before.unwrap_or((i64::MAX, String::new()));
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM change_requests \
             WHERE ($1 = 0 OR state = 'pending') AND (created_at < $2 OR (created_at = $2 AND id < $3) OR $3 = '') \
             ORDER BY created_at DESC, id DESC LIMIT $4"
        ))
        .bind(i64::from(pending_only))
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(change_from_row).collect()
    }

    pub async fn pending_change_count(&self) -> Result<i64> {
        let mut c = self.read().await?;
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM change_requests WHERE state = 'pending'")
                .fetch_one(&mut *c)
                .await?,
        )
    }

    /// Usernames with the given role.
    pub async fn usernames_with_role(&self, role: &str) -> Result<Vec<String>> {
        let mut c = self.read().await?;
        Ok(
            sqlx::query_scalar("SELECT username FROM users WHERE role = $1 ORDER BY username")
                .bind(role)
                .fetch_all(&mut *c)
                .await?,
        )
    }
}

impl WriteTx {
    pub async fn insert_change(&mut self, c: &ChangeRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO change_requests (id, kind, payload, diff, proposer, state, created_at, \
             decide_by, decided_by, decided_at, comment) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&c.id)
        .bind(&c.kind)
        .bind(&c.payload)
        .bind(&c.diff)
        .bind(&c.proposer)
        .bind(&c.state)
        .bind(c.created_at)
        .bind(c.decide_by)
        .bind(&c.decided_by)
        .bind(c.decided_at)
        .bind(&c.comment)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn change(&mut self, id: &str) -> Result<Option<ChangeRow>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM change_requests WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(change_from_row).transpose()
    }

    /// Closes a pending change; false if it was no longer pending (someone else decided first).
    pub async fn close_change(
        &mut self,
        id: &str,
        state: &str,
        decided_by: &str,
        at: i64,
        comment: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE change_requests SET state = $1, decided_by = $2, decided_at = $3, comment = $4 \
             WHERE id = $5 AND state = 'pending'",
        )
        .bind(state)
        .bind(decided_by)
        .bind(at)
        .bind(comment)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn record_account_change(
        &mut self,
        user_id: i64,
        changed_by: &str,
        what: &str,
        at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO account_changes (user_id, changed_by, what, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(user_id)
        .bind(changed_by)
        .bind(what)
        .bind(at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Changes to a user's account after `since` (unix seconds).
    pub async fn account_changes(
        &mut self,
        user_id: i64,
        since: i64,
    ) -> Result<Vec<AccountChangeRow>> {
        changes_of(&mut self.tx, user_id, since).await
    }

    pub async fn set_role(&mut self, user_id: i64, role: &str) -> Result<()> {
        sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(role)
            .bind(user_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Usernames with the given role, read inside the transaction.
    pub async fn usernames_with_role(&mut self, role: &str) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT username FROM users WHERE role = $1 ORDER BY username")
                .bind(role)
                .fetch_all(&mut *self.tx)
                .await?,
        )
    }

    /// Every policy (widening is judged against all of them).
    pub async fn all_policies(&mut self) -> Result<Vec<crate::policies::PolicyRow>> {
        crate::policies::all_policies(&mut self.tx).await
    }
}
