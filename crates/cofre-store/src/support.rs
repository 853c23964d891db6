//! Vendor support grants and their decisions. Changes read the grant inside the [`WriteTx`],
//! after the audit head's lock, so two admins deciding at once, or a decision racing the expiry,
//! are judged one after the other.

use crate::{Result, Store, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportGrantRow {
    pub id: String,
    pub requester: String,
    pub scopes: String,
    pub reason: String,
    pub ticket: String,
    pub state: String,
    pub required_approvals: i64,
    pub duration_seconds: i64,
    /// Unix seconds, as are the other moments.
    pub decide_by: i64,
    pub created_at: i64,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
    pub closed_at: Option<i64>,
    pub closed_by: Option<String>,
    pub close_comment: Option<String>,
    pub decisions: Vec<SupportDecision>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportDecision {
    pub approver: String,
    pub verdict: String,
    pub comment: String,
    pub decided_at: i64,
}

const COLUMNS: &str = "id, requester, scopes, reason, ticket, state, required_approvals, \
    duration_seconds, decide_by, created_at, starts_at, ends_at, closed_at, closed_by, close_comment";

fn grant_of(row: &sqlx::any::AnyRow) -> Result<SupportGrantRow> {
    Ok(SupportGrantRow {
        id: row.try_get(0)?,
        requester: row.try_get(1)?,
        scopes: row.try_get(2)?,
        reason: row.try_get(3)?,
        ticket: row.try_get(4)?,
        state: row.try_get(5)?,
        required_approvals: row.try_get(6)?,
        duration_seconds: row.try_get(7)?,
        decide_by: row.try_get(8)?,
        created_at: row.try_get(9)?,
        starts_at: row.try_get(10)?,
        ends_at: row.try_get(11)?,
        closed_at: row.try_get(12)?,
        closed_by: row.try_get(13)?,
        close_comment: row.try_get(14)?,
        decisions: Vec::new(),
    })
}

async fn decisions_of(c: &mut sqlx::AnyConnection, id: &str) -> Result<Vec<SupportDecision>> {
    let rows = sqlx::query(
        "SELECT approver, verdict, comment, decided_at FROM support_decisions \
         WHERE grant_id = $1 ORDER BY decided_at, approver",
    )
    .bind(id)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SupportDecision {
                approver: r.try_get(0)?,
                verdict: r.try_get(1)?,
                comment: r.try_get(2)?,
                decided_at: r.try_get(3)?,
            })
        })
        .collect()
}

async fn grant_in(c: &mut sqlx::AnyConnection, id: &str) -> Result<Option<SupportGrantRow>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM support_grants WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *c)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut g = grant_of(&row)?;
    g.decisions = decisions_of(c, id).await?;
    Ok(Some(g))
}

async fn with_decisions(
    c: &mut sqlx::AnyConnection,
    rows: Vec<sqlx::any::AnyRow>,
) -> Result<Vec<SupportGrantRow>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut g = grant_of(r)?;
        g.decisions = decisions_of(c, &g.id).await?;
        out.push(g);
    }
    Ok(out)
}

impl Store {
    pub async fn support_grant(&self, id: &str) -> Result<Option<SupportGrantRow>> {
        let mut c = self.read().await?;
        grant_in(&mut c, id).await
    }

    /// Grants by id after `after`: all of them, or only `requester`'s, or only those in `state`.
    pub async fn support_grant_page(
        &self,
        requester: Option<&str>,
        state: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SupportGrantRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM support_grants WHERE id > $1 \
             AND ($2 = '' OR requester = $2) AND ($3 = '' OR state = $3) ORDER BY id LIMIT $4"
        ))
        .bind(after.unwrap_or(""))
        .bind(requester.unwrap_or(""))
        .bind(state.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        with_decisions(&mut c, rows).await
    }

    /// `requester`'s approved grants whose window holds `at`: what its principal may use now.
    pub async fn active_support_grants(
        &self,
        requester: &str,
        at: i64,
    ) -> Result<Vec<SupportGrantRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM support_grants WHERE requester = $1 AND state = 'approved' \
             AND starts_at <= $2 AND ends_at > $2 ORDER BY id"
        ))
        .bind(requester)
        .bind(at)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(grant_of).collect()
    }

    /// Pending requests past their deadline and approved grants past their end, for the tick.
    pub async fn due_support_grants(&self, at: i64) -> Result<Vec<SupportGrantRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM support_grants WHERE (state = 'pending' AND decide_by <= $1) \
             OR (state = 'approved' AND ends_at <= $1) ORDER BY id"
        ))
        .bind(at)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(grant_of).collect()
    }
}

impl WriteTx {
    pub async fn support_grant(&mut self, id: &str) -> Result<Option<SupportGrantRow>> {
        grant_in(&mut self.tx, id).await
    }

    pub async fn insert_support_grant(&mut self, g: &SupportGrantRow) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO support_grants ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        ))
        .bind(&g.id)
        .bind(&g.requester)
        .bind(&g.scopes)
        .bind(&g.reason)
        .bind(&g.ticket)
        .bind(&g.state)
        .bind(g.required_approvals)
        .bind(g.duration_seconds)
        .bind(g.decide_by)
        .bind(g.created_at)
        .bind(g.starts_at)
        .bind(g.ends_at)
        .bind(g.closed_at)
        .bind(g.closed_by.as_deref())
        .bind(g.close_comment.as_deref())
        .execute(&mut *self.tx)
        .await
        .map_err(|e| crate::StoreError::conflict_or(e, format!("support grant {}", g.id)))?;
        Ok(())
    }

    pub async fn insert_support_decision(&mut self, id: &str, d: &SupportDecision) -> Result<()> {
        sqlx::query(
            "INSERT INTO support_decisions (grant_id, approver, verdict, comment, decided_at) \
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

    /// Writes the grant's state, window and closing facts, if it is still in `from` (false if
    /// another change got there first).
    pub async fn update_support_grant(&mut self, g: &SupportGrantRow, from: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE support_grants SET state = $1, starts_at = $2, ends_at = $3, closed_at = $4, \
             closed_by = $5, close_comment = $6 WHERE id = $7 AND state = $8",
        )
        .bind(&g.state)
        .bind(g.starts_at)
        .bind(g.ends_at)
        .bind(g.closed_at)
        .bind(g.closed_by.as_deref())
        .bind(g.close_comment.as_deref())
        .bind(&g.id)
        .bind(from)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
