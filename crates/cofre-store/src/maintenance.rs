//! Maintenance windows, their decisions and their steps (`maintenance_events`, the watch stream's
//! source). Changes read the window inside the [`WriteTx`], after the audit head's lock, so two
//! admins approving at once, or an approval racing the expiry, are judged one after the other.

use crate::{Result, Store, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRow {
    pub id: String,
    pub release_id: String,
    pub version: String,
    pub notes: String,
    pub state: String,
    pub proposer: String,
    pub required_approvals: i64,
    /// Unix seconds, as are the other moments.
    pub starts_at: i64,
    pub ends_at: i64,
    pub created_at: i64,
    pub warned_at: Option<i64>,
    pub closed_at: Option<i64>,
    pub closed_by: Option<String>,
    pub close_comment: Option<String>,
    pub decisions: Vec<WindowDecision>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowDecision {
    pub approver: String,
    pub verdict: String,
    pub comment: String,
    pub decided_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowEvent {
    pub seq: i64,
    pub at: i64,
    pub step: String,
    pub outcome: String,
    pub detail: String,
}

const COLUMNS: &str = "id, release_id, version, notes, state, proposer, required_approvals, \
    starts_at, ends_at, created_at, warned_at, closed_at, closed_by, close_comment";

fn window_of(row: &sqlx::any::AnyRow) -> Result<WindowRow> {
    Ok(WindowRow {
        id: row.try_get(0)?,
        release_id: row.try_get(1)?,
        version: row.try_get(2)?,
        notes: row.try_get(3)?,
        state: row.try_get(4)?,
        proposer: row.try_get(5)?,
        required_approvals: row.try_get(6)?,
        starts_at: row.try_get(7)?,
        ends_at: row.try_get(8)?,
        created_at: row.try_get(9)?,
        warned_at: row.try_get(10)?,
        closed_at: row.try_get(11)?,
        closed_by: row.try_get(12)?,
        close_comment: row.try_get(13)?,
        decisions: Vec::new(),
    })
}

fn event_of(row: &sqlx::any::AnyRow) -> Result<WindowEvent> {
    Ok(WindowEvent {
        seq: row.try_get(0)?,
        at: row.try_get(1)?,
        step: row.try_get(2)?,
        outcome: row.try_get(3)?,
        detail: row.try_get(4)?,
    })
}

async fn decisions_of(c: &mut sqlx::AnyConnection, id: &str) -> Result<Vec<WindowDecision>> {
    let rows = sqlx::query(
        "SELECT approver, verdict, comment, decided_at FROM maintenance_decisions \
         WHERE window_id = $1 ORDER BY decided_at, approver",
    )
    .bind(id)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(WindowDecision {
                approver: r.try_get(0)?,
                verdict: r.try_get(1)?,
                comment: r.try_get(2)?,
                decided_at: r.try_get(3)?,
            })
        })
        .collect()
}

async fn window_in(c: &mut sqlx::AnyConnection, id: &str) -> Result<Option<WindowRow>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM maintenance_windows WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *c)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut w = window_of(&row)?;
    w.decisions = decisions_of(c, id).await?;
    Ok(Some(w))
}

impl Store {
    pub async fn maintenance_window(&self, id: &str) -> Result<Option<WindowRow>> {
        let mut c = self.read().await?;
        window_in(&mut c, id).await
    }

    /// Windows by id, after `after`.
    pub async fn maintenance_page(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<WindowRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM maintenance_windows WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut w = window_of(r)?;
            w.decisions = decisions_of(&mut c, &w.id).await?;
            out.push(w);
        }
        Ok(out)
    }

    /// The open windows (proposed, scheduled, running), earliest start first.
    pub async fn open_maintenance_windows(&self) -> Result<Vec<WindowRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM maintenance_windows \
             WHERE state IN ('proposed', 'scheduled', 'running') ORDER BY starts_at, id"
        ))
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(window_of).collect()
    }

    /// The window's steps after `after_seq`, in order.
    pub async fn maintenance_events(&self, id: &str, after_seq: i64) -> Result<Vec<WindowEvent>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(
            "SELECT seq, at, step, outcome, detail FROM maintenance_events \
             WHERE window_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(id)
        .bind(after_seq)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(event_of).collect()
    }
}

impl WriteTx {
    pub async fn maintenance_window(&mut self, id: &str) -> Result<Option<WindowRow>> {
        window_in(&mut self.tx, id).await
    }

    pub async fn insert_maintenance_window(&mut self, w: &WindowRow) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO maintenance_windows ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(&w.id)
        .bind(&w.release_id)
        .bind(&w.version)
        .bind(&w.notes)
        .bind(&w.state)
        .bind(&w.proposer)
        .bind(w.required_approvals)
        .bind(w.starts_at)
        .bind(w.ends_at)
        .bind(w.created_at)
        .bind(w.warned_at)
        .bind(w.closed_at)
        .bind(w.closed_by.as_deref())
        .bind(w.close_comment.as_deref())
        .execute(&mut *self.tx)
        .await
        .map_err(|e| crate::StoreError::conflict_or(e, format!("maintenance window {}", w.id)))?;
        Ok(())
    }

    pub async fn insert_maintenance_decision(
        &mut self,
        id: &str,
        d: &WindowDecision,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO maintenance_decisions (window_id, approver, verdict, comment, decided_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(&d.approver)
        .bind(&d.verdict)
        .bind(&d.comment)
        .bind(d.decided_at)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| crate::StoreError::conflict_or(e, format!("{}'s decision", d.approver)))?;
        Ok(())
    }

    /// Moves the window from `from` to `to` (false if it was no longer in `from`); a closing
    /// state also records when, by whom and why.
    pub async fn update_maintenance_state(
        &mut self,
        id: &str,
        from: &str,
        to: &str,
        closed: Option<(i64, &str, &str)>,
    ) -> Result<bool> {
        let (at, by, comment) = match closed {
            Some((at, by, c)) => (Some(at), Some(by), Some(c)),
            None => (None, None, None),
        };
        let done = sqlx::query(
            "UPDATE maintenance_windows SET state = $1, closed_at = COALESCE($2, closed_at), \
             closed_by = COALESCE($3, closed_by), close_comment = COALESCE($4, close_comment) \
             WHERE id = $5 AND state = $6",
        )
        .bind(to)
        .bind(at)
        .bind(by)
        .bind(comment)
        .bind(id)
        .bind(from)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks the window's sessions as warned (false if they were already).
    pub async fn set_maintenance_warned(&mut self, id: &str, at: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE maintenance_windows SET warned_at = $1 WHERE id = $2 AND warned_at IS NULL",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Appends a step; its `seq` is the next in the window (the write lock serialises appends).
    pub async fn append_maintenance_event(
        &mut self,
        id: &str,
        at: i64,
        step: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<i64> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM maintenance_events WHERE window_id = $1")
                .bind(id)
                .fetch_one(&mut *self.tx)
                .await?;
        let seq = last.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO maintenance_events (window_id, seq, at, step, outcome, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(seq)
        .bind(at)
        .bind(step)
        .bind(outcome)
        .bind(detail)
        .execute(&mut *self.tx)
        .await?;
        Ok(seq)
    }
}
