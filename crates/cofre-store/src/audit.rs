//! Audit entries: append inside a [`WriteTx`], read in `seq` order.

use crate::{Result, Store, StoreError, WriteTx};
use cofre_core::audit::{AuditRecord, NewAuditEntry};
use sqlx::Row;

/// Rows per multi-row INSERT of a batch, largest first: a batch of any size is a few statements,
/// and only these few texts go into each connection's statement cache.
const INSERT_CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// Columns an append writes per entry.
const COLUMNS: usize = 10;

/// `INSERT INTO audit_log ... VALUES (..), (..)` with `rows` rows of `$N` placeholders.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO audit_log (seq, ts, actor, action, object, outcome, details, prev_hash, hash, ts_high) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..COLUMNS {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * COLUMNS + c + 1));
        }
        sql.push(')');
    }
    sql
}

impl WriteTx {
    /// Chains `entry` after the current head and moves the head, inside this transaction.
    pub async fn append_audit(&mut self, ts: String, entry: NewAuditEntry) -> Result<AuditRecord> {
        self.append_audit_batch(vec![(ts, entry)])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("an audit append wrote nothing".into()))
    }

    /// Chains `entries` after the current head, in order, and moves the head once, inside this
    /// transaction: the head is the one [`Store::write`] read, the rows go in a few multi-row INSERTs and only the
    /// last head is MACed (the head row holds one MAC), so a batch of any size costs a handful
    /// of statements instead of three per entry.
    pub async fn append_audit_batch(
        &mut self,
        entries: Vec<(String, NewAuditEntry)>,
    ) -> Result<Vec<AuditRecord>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let (mut seq, mut hash) = self.head.clone();
        let mut high = self.head_ts_high.clone();
        let mut records = Vec::with_capacity(entries.len());
        let mut highs = Vec::with_capacity(entries.len());
        for (ts, entry) in entries {
            let record = AuditRecord::chain(seq, &hash, ts, entry);
            seq = record.seq;
            hash.clone_from(&record.hash);
            // Byte order, as the index compares (PostgreSQL's column is COLLATE "C").
            if record.ts > high {
                high.clone_from(&record.ts);
            }
            highs.push(high.clone());
            records.push(record);
        }
        let mut rest: &[AuditRecord] = &records;
        let mut rest_highs: &[String] = &highs;
        while !rest.is_empty() {
            let rows = INSERT_CHUNKS
                .into_iter()
                .find(|&n| n <= rest.len())
                .unwrap_or(1);
            let (chunk, tail) = rest.split_at(rows);
            let (chunk_highs, highs_tail) = rest_highs.split_at(rows);
            let sql = insert_sql(rows);
            let mut q = sqlx::query(&sql);
            for (record, high) in chunk.iter().zip(chunk_highs) {
                q = q
                    .bind(record.seq)
                    .bind(&record.ts)
                    .bind(&record.actor)
                    .bind(&record.action)
                    .bind(&record.object)
                    .bind(&record.outcome)
                    .bind(record.details.to_string())
                    .bind(&record.prev_hash)
                    .bind(&record.hash)
                    .bind(high);
            }
            q.execute(&mut *self.tx).await?;
            rest = tail;
            rest_highs = highs_tail;
        }
        let mac = self
            .head_signer
            .as_ref()
            .map(|sign| sign(seq, &hash))
            .unwrap_or_default();
        sqlx::query(
            "UPDATE audit_head SET seq = $1, hash = $2, mac = $3, ts_high = $4 WHERE id = 1",
        )
        .bind(seq)
        .bind(&hash)
        .bind(mac)
        .bind(&high)
        .execute(&mut *self.tx)
        .await?;
        self.head = (seq, hash);
        self.head_ts_high = high;
        self.appended = true;
        Ok(records)
    }
}

fn record_from_row(row: &sqlx::any::AnyRow) -> Result<AuditRecord> {
    let details: String = row.try_get("details")?;
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        ts: row.try_get("ts")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        object: row.try_get("object")?,
        outcome: row.try_get("outcome")?,
        // Unparseable details are kept as a string so that verify reports a hash mismatch for this
        // entry instead of failing the whole run.
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// How a text column of the trail must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Exact(String),
    /// Starts with (`auth.` for every login entry).
    Prefix(String),
}

/// The conditions of an audit search, all of which an entry meets. `since` (inclusive) and
/// `until` (exclusive) are UTC times as `YYYY-MM-DDTHH:MM:SS`, which compare as the stored RFC
/// 3339 stamps do (to the second).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<Match>,
    pub action: Option<Match>,
    pub object: Option<Match>,
    pub since: Option<String>,
    pub until: Option<String>,
}

fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

impl Store {
    /// Entries with `seq > after`, oldest first.
    pub async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(
            "SELECT seq, ts, actor, action, object, outcome, details, prev_hash, hash \
             FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Entries with `seq > after` that match every condition of `f`, oldest first: the audit
    /// trail's search, in the database so a page of matches costs one query, however rare.
    pub async fn audit_search(
        &self,
        f: &AuditFilter,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>> {
        let mut sql = String::from(
            "SELECT seq, ts, actor, action, object, outcome, details, prev_hash, hash \
             FROM audit_log WHERE seq > $1",
        );
        let mut binds: Vec<String> = Vec::new();
        let mut cond = |sql: &mut String, text: &str, value: String| {
            binds.push(value);
            sql.push_str(&text.replace('?', &format!("${}", binds.len() + 1)));
        };
        for (column, want) in [
            ("actor", &f.actor),
            ("action", &f.action),
            ("object", &f.object),
        ] {
            match want {
                None => {}
                Some(Match::Exact(v)) => cond(&mut sql, &format!(" AND {column} = ?"), v.clone()),
                Some(Match::Prefix(v)) => cond(
                    &mut sql,
                    &format!(" AND {column} LIKE ? ESCAPE '\\'"),
                    format!("{}%", like_escape(v)),
                ),
            }
        }
        if let Some(s) = &f.since {
            cond(&mut sql, " AND ts >= ?", s.clone());
        }
        if let Some(u) = &f.until {
            cond(&mut sql, " AND ts < ?", u.clone());
        }
        let limit_at = binds.len() + 2;
        let mut c = self.read().await?;
        let mut after = after;
        if let Some(s) = &f.since {
            // Where the first match can be (migration 0029): the scan in seq order starts there
            // and not at the start of the trail. Asked apart, so that the database's range scan
            // starts at this bound, whichever of the two it would have picked.
            match first_reaching(&mut c, s).await? {
                Some(first) => after = after.max(first - 1),
                None => return Ok(Vec::new()),
            }
        }
        if let Some(u) = &f.until {
            // From the first entry whose running highest time reaches `until` on, an entry
            // stamped before `until` was written after the clock was set back, so its `ts` is
            // below its `ts_high`: those few come from their own index, and the scan in seq
            // order stops at that entry instead of running to the end of the trail.
            if let Some(end) = first_reaching(&mut c, u).await? {
                let tail = sql.replacen(
                    " WHERE seq > $1",
                    &format!(" WHERE seq > $1 AND seq >= {end} AND ts < ts_high"),
                    1,
                );
                sql = format!("{sql} AND seq < {end} UNION ALL {tail}");
            }
        }
        sql.push_str(&format!(" ORDER BY seq LIMIT ${limit_at}"));
        let mut q = sqlx::query(&sql).bind(after);
        for b in &binds {
            q = q.bind(b.as_str());
        }
        let rows = q.bind(limit).fetch_all(&mut *c).await?;
        rows.iter().map(record_from_row).collect()
    }

    /// `actor`'s entries with `seq > after`, oldest first (a support grant's activity).
    pub async fn audit_page_by_actor(
        &self,
        actor: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(
            "SELECT seq, ts, actor, action, object, outcome, details, prev_hash, hash \
             FROM audit_log WHERE actor = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(actor)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    pub async fn audit_head(&self) -> Result<(i64, String)> {
        let head = self.audit_head_signed().await?;
        Ok((head.seq, head.hash))
    }

    /// The head with its MAC (empty if it was written while sealed, or never signed).
    pub async fn audit_head_signed(&self) -> Result<AuditHead> {
        let mut c = self.read().await?;
        let row = sqlx::query("SELECT seq, hash, mac FROM audit_head WHERE id = 1")
            .fetch_optional(&mut *c)
            .await?
            .ok_or_else(|| StoreError::Corrupt("the audit chain head is missing".into()))?;
        Ok(AuditHead {
            seq: row.try_get("seq")?,
            hash: row.try_get("hash")?,
            mac: row.try_get("mac")?,
        })
    }

    /// The newest entry with this action on this object (e.g. a session's `session.end`).
    pub async fn audit_latest_for(
        &self,
        action: &str,
        object: &str,
    ) -> Result<Option<AuditRecord>> {
        let mut c = self.read().await?;
        let row = sqlx::query(
            "SELECT seq, ts, actor, action, object, outcome, details, prev_hash, hash \
             FROM audit_log WHERE object = $1 AND action = $2 ORDER BY seq DESC LIMIT 1",
        )
        .bind(object)
        .bind(action)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(record_from_row).transpose()
    }

    /// The first entry up to `head` whose `ts_high` is not the highest `ts` up to it (someone
    /// wrote it other than the append did): a search by time could miss entries there. The
    /// running maximum in SQL, in byte order on both databases, as the append computes it.
    pub async fn audit_ts_high_break(&self, head: i64) -> Result<Option<i64>> {
        let mut c = self.read().await?;
        Ok(sqlx::query_scalar(
            "SELECT seq FROM (SELECT seq, ts_high, \
             MAX(ts) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) AS running \
             FROM audit_log WHERE seq <= $1) AS w \
             WHERE ts_high <> running ORDER BY seq LIMIT 1",
        )
        .bind(head)
        .fetch_optional(&mut *c)
        .await?)
    }

    /// The entry at `seq`, if there is one.
    pub async fn audit_entry(&self, seq: i64) -> Result<Option<AuditRecord>> {
        let mut c = self.read().await?;
        let row = sqlx::query(
            "SELECT seq, ts, actor, action, object, outcome, details, prev_hash, hash \
             FROM audit_log WHERE seq = $1",
        )
        .bind(seq)
        .fetch_optional(&mut *c)
        .await?;
        row.as_ref().map(record_from_row).transpose()
    }
}

/// The first entry (lowest `seq`) whose running highest time `ts_high` is at or after `t`: no
/// entry before it has a `ts` at or after `t`. One lookup in the `(ts_high, seq)` index, since
/// `ts_high` never decreases along `seq`.
async fn first_reaching(c: &mut sqlx::AnyConnection, t: &str) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT seq FROM audit_log WHERE ts_high >= $1 ORDER BY ts_high, seq LIMIT 1",
    )
    .bind(t)
    .fetch_optional(c)
    .await?)
}

/// The audit chain's head row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
    pub mac: String,
}
