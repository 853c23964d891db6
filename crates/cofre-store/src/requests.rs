//! Access requests, their decisions, and the notification outbox.
//!
//! An approved request *is* its grant (same row, same id): a request cannot turn into two grants.
//! Reads that lead to a change happen inside the [`WriteTx`], after it has taken the audit head's
//! lock, so two approvers deciding at once are serialised and the second sees the first's vote.

use crate::{bool_int, Result, Store, StoreError, WriteTx};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRow {
    pub id: String,
    pub requester: String,
    pub target: String,
    pub account: String,
    /// `session` and/or `reveal`.
    pub access: Vec<String>,
    pub reason: String,
    pub policy: String,
    /// `group:n,group:n`.
    pub levels: String,
    pub state: String,
    pub level: i64,
    pub emergency: bool,
    /// Unix seconds, as are the other moments.
    pub created_at: i64,
    pub decide_by: i64,
    pub starts_at: i64,
    pub ends_at: i64,
    pub closed_at: Option<i64>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<i64>,
    pub review_comment: Option<String>,
    /// For access `invite`: the invitation asked for (the API's `InviteRequest` as JSON), kept
    /// when the request is approved.
    pub invitation: Option<String>,
    pub decisions: Vec<DecisionRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRow {
    pub approver: String,
    pub level: i64,
    pub verdict: String,
    pub comment: String,
    pub decided_at: i64,
}

const COLUMNS: &str = "id, requester, target, account, access, reason, policy, levels, state, \
    level, emergency, created_at, decide_by, starts_at, ends_at, closed_at, revoked_by, \
    revoke_reason, reviewed_by, reviewed_at, review_comment, invitation";

fn request_from_row(row: &sqlx::any::AnyRow) -> Result<RequestRow> {
    let access: String = row.try_get("access")?;
    Ok(RequestRow {
        id: row.try_get("id")?,
        requester: row.try_get("requester")?,
        target: row.try_get("target")?,
        account: row.try_get("account")?,
        access: serde_json::from_str(&access)
            .map_err(|e| StoreError::Corrupt(format!("access request: {e}")))?,
        reason: row.try_get("reason")?,
        policy: row.try_get("policy")?,
        levels: row.try_get("levels")?,
        state: row.try_get("state")?,
        level: row.try_get("level")?,
        emergency: row.try_get::<i64, _>("emergency")? != 0,
        created_at: row.try_get("created_at")?,
        decide_by: row.try_get("decide_by")?,
        starts_at: row.try_get("starts_at")?,
        ends_at: row.try_get("ends_at")?,
        closed_at: row.try_get("closed_at")?,
        revoked_by: row.try_get("revoked_by")?,
        revoke_reason: row.try_get("revoke_reason")?,
        reviewed_by: row.try_get("reviewed_by")?,
        reviewed_at: row.try_get("reviewed_at")?,
        review_comment: row.try_get("review_comment")?,
        invitation: row.try_get("invitation")?,
        decisions: Vec::new(),
    })
}

async fn decisions_of(conn: &mut sqlx::AnyConnection, id: &str) -> Result<Vec<DecisionRow>> {
    let rows = sqlx::query(
        "SELECT approver, level, verdict, comment, decided_at FROM request_decisions \
         WHERE request_id = $1 ORDER BY decided_at, approver",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DecisionRow {
                approver: r.try_get("approver")?,
                level: r.try_get("level")?,
                verdict: r.try_get("verdict")?,
                comment: r.try_get("comment")?,
                decided_at: r.try_get("decided_at")?,
            })
        })
        .collect()
}

async fn find(conn: &mut sqlx::AnyConnection, id: &str) -> Result<Option<RequestRow>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM access_requests WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut r = request_from_row(&row)?;
    r.decisions = decisions_of(conn, id).await?;
    Ok(Some(r))
}

/// Which requests a list shows.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Only this requester's.
    pub requester: Option<String>,
    /// Only in these states (any when empty).
    pub states: Vec<String>,
    /// Only approved ones whose window has not ended at this moment (grants in force or coming).
    pub grants_at: Option<i64>,
}

/// A notification waiting for delivery.
#[derive(Debug, Clone)]
pub struct NotificationRow {
    pub id: i64,
    /// `webhook` or `email`.
    pub channel: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub attempts: i64,
    /// A secret body: (seal id, wrapped data key, ciphertext); `body` is then a placeholder.
    pub sealed: Option<(String, Vec<u8>, Vec<u8>)>,
}

impl Store {
    pub async fn request(&self, id: &str) -> Result<Option<RequestRow>> {
        let mut c = self.read().await?;
        find(&mut c, id).await
    }

    /// Newest first; `before` is the cursor `created_at|id` of the last row of the previous page.
    pub async fn requests_page(
        &self,
        filter: &RequestFilter,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<RequestRow>> {
        let mut c = self.read().await?;
        let mut sql = format!("SELECT {COLUMNS} FROM access_requests WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        let requester = filter.requester.as_ref().map(|_| next());
        if let Some(p) = &requester {
            sql.push_str(&format!(" AND requester = {p}"));
        }
        let states: Vec<String> = filter.states.iter().map(|_| next()).collect();
        if !states.is_empty() {
            sql.push_str(&format!(" AND state IN ({})", states.join(", ")));
        }
        let grants = filter.grants_at.map(|_| next());
        if let Some(p) = &grants {
            // An approved invitation request is no grant of its requester's.
            sql.push_str(&format!(
                " AND state = 'approved' AND ends_at > {p} AND invitation IS NULL"
            ));
        }
        let cursor = before.map(|_| (next(), next(), next()));
        if let Some((a, b, c)) = &cursor {
            sql.push_str(&format!(
                " AND (created_at < {a} OR (created_at = {b} AND id < {c}))"
            ));
        }
        let lim = next();
        sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT {lim}"));
        let mut q = sqlx::query(&sql);
        if let Some(r) = &filter.requester {
            q = q.bind(r);
        }
        for s in &filter.states {
            q = q.bind(s);
        }
        if let Some(at) = filter.grants_at {
            q = q.bind(at);
        }
        if let Some((at, id)) = before {
            q = q.bind(at).bind(at).bind(id);
        }
        q = q.bind(limit);
        let rows = q.fetch_all(&mut *c).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut r = request_from_row(row)?;
            r.decisions = decisions_of(&mut c, &r.id).await?;
            out.push(r);
        }
        Ok(out)
    }

    /// The approved requests of `user` for `target`/`account` whose window contains `at`.
    pub async fn grants_in_force(
        &self,
        user: &str,
        target: &str,
        account: &str,
        at: i64,
    ) -> Result<Vec<RequestRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM access_requests WHERE requester = $1 AND target = $2 \
             AND account = $3 AND state = 'approved' AND starts_at <= $4 AND ends_at > $5 \
             ORDER BY ends_at DESC"
        ))
        .bind(user)
        .bind(target)
        .bind(account)
        .bind(at)
        .bind(at)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(request_from_row).collect()
    }

    /// Pending requests whose deadline has passed at `at`.
    pub async fn requests_due_to_expire(&self, at: i64) -> Result<Vec<String>> {
        let mut c = self.read().await?;
        Ok(sqlx::query_scalar(
            "SELECT id FROM access_requests WHERE state = 'pending' AND decide_by <= $1 ORDER BY id",
        )
        .bind(at)
        .fetch_all(&mut *c)
        .await?)
    }

    /// Notifications to try now.
    pub async fn due_notifications(&self, at: i64, limit: i64) -> Result<Vec<NotificationRow>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(
            "SELECT id, channel, recipient, subject, body, attempts, seal_id, sealed_key, sealed_body \
             FROM notifications \
             WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt <= $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(at)
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NotificationRow {
                    id: r.try_get("id")?,
                    channel: r.try_get("channel")?,
                    recipient: r.try_get("recipient")?,
                    subject: r.try_get("subject")?,
                    body: r.try_get("body")?,
                    attempts: r.try_get("attempts")?,
                    sealed: match (
                        r.try_get::<Option<String>, _>("seal_id")?,
                        r.try_get::<Option<Vec<u8>>, _>("sealed_key")?,
                        r.try_get::<Option<Vec<u8>>, _>("sealed_body")?,
                    ) {
                        (Some(id), Some(k), Some(b)) => Some((id, k, b)),
                        _ => None,
                    },
                })
            })
            .collect()
    }

    /// Delivery bookkeeping. Not audited: the change it reports was, when it was queued, and a
    /// notification given up on is audited by the caller.
    pub async fn notification_delivered(&self, id: i64, at: i64) -> Result<()> {
        let mut c = self.read().await?;
        sqlx::query(
            "UPDATE notifications SET delivered_at = $1, attempts = attempts + 1, \
             sealed_key = NULL, sealed_body = NULL WHERE id = $2",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *c)
        .await?;
        Ok(())
    }

    /// A failed attempt: retried at `next_attempt`, or given up (`give_up`).
    pub async fn notification_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt: i64,
        give_up_at: Option<i64>,
    ) -> Result<()> {
        let mut c = self.read().await?;
        sqlx::query(
            "UPDATE notifications SET attempts = attempts + 1, last_error = $1, next_attempt = $2, \
             failed_at = $3 WHERE id = $4",
        )
        .bind(error)
        .bind(next_attempt)
        .bind(give_up_at)
        .bind(id)
        .execute(&mut *c)
        .await?;
        if give_up_at.is_some() {
            // Given up: a sealed secret it carried is of no more use to anyone.
            sqlx::query(
                "UPDATE notifications SET sealed_key = NULL, sealed_body = NULL WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *c)
            .await?;
        }
        Ok(())
    }
}

impl WriteTx {
    /// The request as it is now, read under the write lock.
    pub async fn request(&mut self, id: &str) -> Result<Option<RequestRow>> {
        find(&mut self.tx, id).await
    }

    pub async fn insert_request(&mut self, r: &RequestRow) -> Result<()> {
        let access = serde_json::to_string(&r.access)
            .map_err(|e| StoreError::Corrupt(format!("access request: {e}")))?;
        sqlx::query(
            "INSERT INTO access_requests (id, requester, target, account, access, reason, policy, \
             levels, state, level, emergency, created_at, decide_by, starts_at, ends_at, closed_at, \
             invitation) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(&r.id)
        .bind(&r.requester)
        .bind(&r.target)
        .bind(&r.account)
        .bind(access)
        .bind(&r.reason)
        .bind(&r.policy)
        .bind(&r.levels)
        .bind(&r.state)
        .bind(r.level)
        .bind(bool_int(r.emergency))
        .bind(r.created_at)
        .bind(r.decide_by)
        .bind(r.starts_at)
        .bind(r.ends_at)
        .bind(r.closed_at)
        .bind(&r.invitation)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("request {}", r.id)))?;
        Ok(())
    }

    pub async fn insert_decision(&mut self, request_id: &str, d: &DecisionRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO request_decisions (request_id, approver, level, verdict, comment, decided_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(request_id)
        .bind(&d.approver)
        .bind(d.level)
        .bind(&d.verdict)
        .bind(&d.comment)
        .bind(d.decided_at)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("a decision by {}", d.approver)))?;
        Ok(())
    }

    /// Moves a request from `from` to its new state. Fails with `Conflict` if someone else moved
    /// it first (cannot happen under the write lock; kept so a mistake there is loud, not silent).
    #[allow(clippy::too_many_arguments)]
    pub async fn update_request_state(
        &mut self,
        id: &str,
        from: &str,
        to: &str,
        level: i64,
        closed_at: Option<i64>,
        revoked_by: Option<&str>,
        revoke_reason: Option<&str>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE access_requests SET state = $1, level = $2, closed_at = $3, \
             revoked_by = COALESCE($4, revoked_by), revoke_reason = COALESCE($5, revoke_reason) \
             WHERE id = $6 AND state = $7",
        )
        .bind(to)
        .bind(level)
        .bind(closed_at)
        .bind(revoked_by)
        .bind(revoke_reason)
        .bind(id)
        .bind(from)
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict {
                what: format!("a change to request {id}"),
            });
        }
        Ok(())
    }

    pub async fn set_review(&mut self, id: &str, by: &str, at: i64, comment: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE access_requests SET reviewed_by = $1, reviewed_at = $2, review_comment = $3 \
             WHERE id = $4 AND emergency = 1 AND reviewed_by IS NULL",
        )
        .bind(by)
        .bind(at)
        .bind(comment)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn enqueue_notification(
        &mut self,
        channel: &str,
        recipient: &str,
        subject: &str,
        body: &str,
        at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO notifications (channel, recipient, subject, body, created_at, next_attempt) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(channel)
        .bind(recipient)
        .bind(subject)
        .bind(body)
        .bind(at)
        .bind(at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Queues a notification whose body is a secret, sealed by the caller under associated data
    /// that names `seal_id`; the stored `body` is only a placeholder.
    #[allow(clippy::too_many_arguments)]
    pub async fn enqueue_sealed_notification(
        &mut self,
        channel: &str,
        recipient: &str,
        subject: &str,
        seal_id: &str,
        sealed_key: &[u8],
        sealed_body: &[u8],
        at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO notifications (channel, recipient, subject, body, created_at, next_attempt, \
             seal_id, sealed_key, sealed_body) VALUES ($1, $2, $3, '(sealed)', $4, $5, $6, $7, $8)",
        )
        .bind(channel)
        .bind(recipient)
        .bind(subject)
        .bind(at)
        .bind(at)
        .bind(seal_id)
        .bind(sealed_key)
        .bind(sealed_body)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
