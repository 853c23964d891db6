//! Failed logins per (user name, source address): the back-off's bookkeeping (migration 0009).

use crate::{Result, Store, WriteTx};
use cofre_core::lockout::SourceFailures;
use sqlx::Row;

fn rows_to_failures(rows: &[sqlx::any::AnyRow]) -> Result<Vec<(String, SourceFailures)>> {
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("source")?,
                SourceFailures {
                    failures: r.try_get("failures")?,
                    last_failure_at: r.try_get("last_failure_at")?,
                    blocked_until: r.try_get("blocked_until")?,
                },
            ))
        })
        .collect()
}

const SELECT: &str = "SELECT source, failures, last_failure_at, blocked_until FROM login_failures \
     WHERE username = $1 ORDER BY source";

impl Store {
    /// Every source's count for a user name (for the check before the password is verified).
    pub async fn login_failures(&self, username: &str) -> Result<Vec<(String, SourceFailures)>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(SELECT)
            .bind(username)
            .fetch_all(&mut *c)
            .await?;
        rows_to_failures(&rows)
    }
}

impl WriteTx {
    /// The same, read under the write lock: concurrent logins count every failure.
    pub async fn login_failures(
        &mut self,
        username: &str,
    ) -> Result<Vec<(String, SourceFailures)>> {
        let rows = sqlx::query(SELECT)
            .bind(username)
            .fetch_all(&mut *self.tx)
            .await?;
        rows_to_failures(&rows)
    }

    /// Stores one source's new count, and forgets counts idle since before `forget_before`.
    pub async fn set_login_failures(
        &mut self,
        username: &str,
        source: &str,
        row: &SourceFailures,
        forget_before: i64,
    ) -> Result<()> {
        sqlx::query("DELETE FROM login_failures WHERE last_failure_at < $1")
            .bind(forget_before)
            .execute(&mut *self.tx)
            .await?;
        sqlx::query(
            "INSERT INTO login_failures (username, source, failures, last_failure_at, blocked_until) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username, source) DO UPDATE SET \
             failures = excluded.failures, last_failure_at = excluded.last_failure_at, \
             blocked_until = excluded.blocked_until",
        )
        .bind(username)
        .bind(source)
        .bind(row.failures)
        .bind(row.last_failure_at)
        .bind(row.blocked_until)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Forgets a user's counts: from one source (a success there), or all (an admin's unlock).
    pub async fn clear_login_failures(
        &mut self,
        username: &str,
        source: Option<&str>,
    ) -> Result<()> {
        match source {
            Some(s) => {
                sqlx::query("DELETE FROM login_failures WHERE username = $1 AND source = $2")
                    .bind(username)
                    .bind(s)
                    .execute(&mut *self.tx)
                    .await?
            }
            None => {
                sqlx::query("DELETE FROM login_failures WHERE username = $1")
                    .bind(username)
                    .execute(&mut *self.tx)
                    .await?
            }
        };
        Ok(())
    }

    /// Marks a user locked (what `user show` reports) until `until`.
    pub async fn set_locked_until(&mut self, user_id: i64, until: Option<i64>) -> Result<()> {
        sqlx::query("UPDATE users SET locked_until = $1 WHERE id = $2")
            .bind(until)
            .bind(user_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
