//! What the SSH gateway keeps: users' public keys, pinned target host keys, and the session index
//! (the recordings themselves live in files; here only their path and sealed key).

use crate::{Result, Store, StoreError, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct SshKeyRow {
    pub fingerprint: String,
    pub public_key: String,
    pub created_at: String,
}

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub username: String,
    pub target: String,
    pub account: String,
    pub kind: String,
    pub source: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    pub recording_path: String,
    pub recording_wrapped_key: Vec<u8>,
    pub recording_key_ciphertext: Vec<u8>,
    pub bytes: i64,
}

const SESSION_COLUMNS: &str = "id, username, target, account, kind, source, started_at, ended_at, \
    end_reason, recording_path, recording_wrapped_key, recording_key_ciphertext, bytes";

fn session_from_row(row: &sqlx::any::AnyRow) -> Result<SessionRow> {
    Ok(SessionRow {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        target: row.try_get("target")?,
        account: row.try_get("account")?,
        kind: row.try_get("kind")?,
        source: row.try_get("source")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        end_reason: row.try_get("end_reason")?,
        recording_path: row.try_get("recording_path")?,
        recording_wrapped_key: row.try_get("recording_wrapped_key")?,
        recording_key_ciphertext: row.try_get("recording_key_ciphertext")?,
        bytes: row.try_get("bytes")?,
    })
}

impl Store {
    pub async fn ssh_keys_of(&self, username: &str) -> Result<Vec<SshKeyRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(
            "SELECT k.fingerprint, k.public_key, k.created_at FROM user_ssh_keys k \
             JOIN users u ON u.id = k.user_id WHERE u.username = $1 ORDER BY k.id",
        )
        .bind(username)
        .fetch_all(&mut *c)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SshKeyRow {
                    fingerprint: r.try_get("fingerprint")?,
                    public_key: r.try_get("public_key")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    pub async fn host_key_pin(&self, target: &str) -> Result<Option<String>> {
        let mut c = self.read().await?;
        Ok(sqlx::query_scalar(
            "SELECT h.fingerprint FROM target_host_keys h JOIN targets t ON t.id = h.target_id \
             WHERE t.name = $1",
        )
        .bind(target)
        .fetch_optional(&mut *c)
        .await?)
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM gateway_sessions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// Sessions newest first, started before `before` (a `started_at|id` cursor), optionally only
    /// those not ended.
    pub async fn sessions_page(
        &self,
        before: Option<(&str, &str)>,
        live_only: bool,
        limit: i64,
    ) -> Result<Vec<SessionRow>> {
        let mut c = self.read().await?;
        let (ts, id) = before.unwrap_or(("~", "~"));
        let live = if live_only {
            "AND ended_at IS NULL"
        } else {
            ""
        };
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM gateway_sessions \
             WHERE (started_at < $1 OR (started_at = $1 AND id < $2)) {live} \
             ORDER BY started_at DESC, id DESC LIMIT $3"
        ))
        .bind(ts)
        .bind(id)
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(session_from_row).collect()
    }
}

pub struct NewSession<'a> {
    pub id: &'a str,
    pub username: &'a str,
    pub target: &'a str,
    pub account: &'a str,
    pub kind: &'a str,
    pub source: &'a str,
    pub started_at: &'a str,
    pub recording_path: &'a str,
    pub recording_wrapped_key: &'a [u8],
    pub recording_key_ciphertext: &'a [u8],
    /// The access request (grant) the session was opened under, if any.
    pub request_id: Option<&'a str>,
}

impl WriteTx {
    pub async fn insert_ssh_key(
        &mut self,
        user_id: i64,
        fingerprint: &str,
        public_key: &str,
        created_at: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO user_ssh_keys (user_id, fingerprint, public_key, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(user_id)
        .bind(fingerprint)
        .bind(public_key)
        .bind(created_at)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("key {fingerprint}")))?;
        Ok(())
    }

    /// Pins a target's host key unless one is pinned already; returns the pinned fingerprint.
    pub async fn pin_host_key(
        &mut self,
        target: &str,
        fingerprint: &str,
        at: &str,
    ) -> Result<String> {
        sqlx::query(
            "INSERT INTO target_host_keys (target_id, fingerprint, pinned_at) \
             SELECT id, $2, $3 FROM targets WHERE name = $1 ON CONFLICT (target_id) DO NOTHING",
        )
        .bind(target)
        .bind(fingerprint)
        .bind(at)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query_scalar(
            "SELECT h.fingerprint FROM target_host_keys h JOIN targets t ON t.id = h.target_id WHERE t.name = $1",
        )
        .bind(target)
        .fetch_optional(&mut *self.tx)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: format!("target {target}"),
        })
    }

    pub async fn insert_session(&mut self, s: NewSession<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO gateway_sessions (id, username, target, account, kind, source, started_at, \
             recording_path, recording_wrapped_key, recording_key_ciphertext, request_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(s.id)
        .bind(s.username)
        .bind(s.target)
        .bind(s.account)
        .bind(s.kind)
        .bind(s.source)
        .bind(s.started_at)
        .bind(s.recording_path)
        .bind(s.recording_wrapped_key)
        .bind(s.recording_key_ciphertext)
        .bind(s.request_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Marks a session ended; returns false if it was already.
    pub async fn end_session(
        &mut self,
        id: &str,
        at: &str,
        reason: &str,
        bytes: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE gateway_sessions SET ended_at = $1, end_reason = $2, bytes = $3 \
             WHERE id = $4 AND ended_at IS NULL",
        )
        .bind(at)
        .bind(reason)
        .bind(bytes)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Ends every session still marked live (after a restart of a single-node gateway, none is).
    pub async fn end_open_sessions(&mut self, at: &str, reason: &str) -> Result<Vec<String>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM gateway_sessions WHERE ended_at IS NULL ORDER BY id",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        sqlx::query(
            "UPDATE gateway_sessions SET ended_at = $1, end_reason = $2 WHERE ended_at IS NULL",
        )
        .bind(at)
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        Ok(ids)
    }
}
