//! Reading and verifying the audit trail.

use super::anchor::FoundAnchor;
use super::Audit;
use super::{page_limit, paginate, Principal};
use crate::error::{Error, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_core::audit::{ChainBreak, ChainVerifier};
use cofre_core::role::Action;
use cofre_crypto::audit_mac::AuditMacKey;
use cofre_proto::{
    AuditAnchorInfo, AuditBreak, AuditEntryInfo, AuditQuery, AuditVerifyResponse, Page,
    RecordingProblem, RecordingsVerification,
};
use cofre_store::audit::{AuditFilter, AuditHead, Match};

const VERIFY_BATCH: i64 = 2000;
/// Entries read per page while the trail is exported as CSV.
const EXPORT_BATCH: i64 = 1000;
/// The columns of the CSV export, in order.
pub const CSV_COLUMNS: [&str; 9] = [
    "seq",
    "ts",
    "actor",
    "action",
    "object",
    "outcome",
    "details",
    "prev_hash",
    "hash",
];
/// Sessions read per page while their recordings are checked.
const RECORDINGS_BATCH: i64 = 500;

impl Audit<'_> {
    pub async fn list_audit(
        &self,
        who: &Principal,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<AuditEntryInfo>> {
        self.search_audit(
            who,
            &AuditQuery {
                limit,
                cursor: cursor.map(str::to_owned),
                ..AuditQuery::default()
            },
        )
        .await
    }

    /// The trail's entries that meet every condition of `q`, oldest first, a page at a time
    /// (the API's `GET /api/v1/audit`, the console's search, `cofre audit list`).
    pub async fn search_audit(
        &self,
        who: &Principal,
        q: &AuditQuery,
    ) -> Result<Page<AuditEntryInfo>> {
        who.require(Action::ReadAudit)?;
        let limit = page_limit(q.limit)?;
        let after = match q.cursor.as_deref() {
            None => 0,
            Some(c) => c
                .parse()
                .map_err(|_| Error::invalid("cursor", "cursor: not a cursor from this list"))?,
        };
        let filter = audit_filter(q)?;
        let rows = self.store.audit_search(&filter, after, limit + 1).await?;
        Ok(paginate(
            rows,
            limit,
            |r| r.seq.to_string(),
            |r| AuditEntryInfo {
                seq: r.seq,
                ts: r.ts,
                actor: r.actor,
                action: r.action,
                object: r.object,
                outcome: r.outcome,
                details: r.details,
                prev_hash: r.prev_hash,
                hash: r.hash,
            },
        ))
    }

    /// The entries that meet `q`'s conditions (its `limit` and `cursor` are not used), oldest
    /// first, as CSV (RFC 4180, CRLF, a header row; see [`csv_cell`]). The export is itself
    /// audited (`audit.export` with the conditions) before any row is read, and refused if that
    /// entry cannot be written. Rows are read a page at a time by a task that sends them through a
    /// bounded queue, so neither the trail nor a slow client's backlog sits in memory; the export
    /// ends at the head as it was once its own entry was written. A read that fails later ends
    /// the stream with an error (a broken transfer, never a silently short file).
    pub async fn export_audit_csv(
        &self,
        who: &Principal,
        q: &AuditQuery,
    ) -> Result<tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>> {
        who.require(Action::ReadAudit)?;
        let filter = audit_filter(q)?;
        let mut entry =
            NewAuditEntry::new(&who.username, "audit.export", "audit").detail("format", "csv");
        for (k, v) in [
            ("actor", &q.actor),
            ("action", &q.action),
            ("object", &q.object),
            ("since", &q.since),
            ("until", &q.until),
        ] {
            if let Some(v) = v.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                entry = entry.detail(k, v);
            }
        }
        self.record(entry).await?;
        let head = self.store.audit_head_signed().await?.seq;
        let store = self.store.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let header = csv_row(CSV_COLUMNS.iter().map(|c| (*c).to_owned()));
            if tx.send(Ok(bytes::Bytes::from(header))).await.is_err() {
                return;
            }
            let mut after = 0;
            loop {
                let batch = match store.audit_search(&filter, after, EXPORT_BATCH).await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "the audit trail stopped being readable during a CSV export");
                        let _ = tx
                            .send(Err(std::io::Error::other(
                                "the audit trail could not be read",
                            )))
                            .await;
                        return;
                    }
                };
                let full = batch.len() as i64 == EXPORT_BATCH;
                let mut chunk = String::new();
                let mut past_head = false;
                for r in batch {
                    if r.seq > head {
                        past_head = true;
                        break;
                    }
                    after = r.seq;
                    chunk.push_str(&csv_row([
                        r.seq.to_string(),
                        r.ts,
                        r.actor,
                        r.action,
                        r.object,
                        r.outcome,
                        r.details.to_string(),
                        r.prev_hash,
                        r.hash,
                    ]));
                }
                if !chunk.is_empty() && tx.send(Ok(bytes::Bytes::from(chunk))).await.is_err() {
                    return;
                }
                if !full || past_head {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// Walks the whole chain in batches and names the first entry that cannot be trusted; then
    /// checks the head's MAC and the anchors outside the database, which show a chain whose
    /// newest entries were cut off (however its head was made to look).
    pub async fn verify_audit(&self, who: &Principal) -> Result<AuditVerifyResponse> {
        who.require(Action::ReadAudit)?;
        // Read the head first: entries appended while we walk are past it and do not count.
        let head = self.store.audit_head_signed().await?;
        let (head_seq, head_hash) = (head.seq, head.hash.clone());
        let key = self.audit_mac_key()?;
        let anchors = self.audit_anchors().await;
        let newest = anchors.first().cloned();
        let mut verifier = ChainVerifier::default();
        let mut after = 0;
        let broken = 'walk: loop {
            let batch = self.store.audit_page(after, VERIFY_BATCH).await?;
            let Some(last) = batch.last() else { break None };
            after = last.seq;
            for record in batch.iter().filter(|r| r.seq <= head_seq) {
                if let Err(b) = verifier.push(record) {
                    break 'walk Some(b);
                }
                if let Some(found) = anchors.iter().find(|a| a.anchor.seq == record.seq) {
                    if found.anchor.hash != record.hash {
                        break 'walk Some(ChainBreak {
                            seq: record.seq,
                            reason: format!(
                                "differs from the entry {} recorded (written {})",
                                found.source, found.anchor.written_at
                            ),
                        });
                    }
                }
            }
            if after >= head_seq {
                break None;
            }
        };
        // The chain holds; the bounds that time searches use must too (they are not hashed).
        let broken = match broken {
            Some(b) => Some(b),
            None => self
                .store
                .audit_ts_high_break(head_seq)
                .await?
                .map(|seq| ChainBreak {
                    seq,
                    reason: "its time bound for searches (ts_high) is not the highest time up to \
                             it: a search by time could miss entries"
                        .into(),
                }),
        };
        let result = match broken {
            Some(b) => Err(b),
            None => verifier
                .finish(Some((head_seq, &head_hash)))
                .and_then(|n| check_tail(&key, &head, newest.as_ref()).map(|()| n)),
        };
        let anchor = newest.map(|f| AuditAnchorInfo {
            seq: f.anchor.seq,
            written_at: f.anchor.written_at,
            source: f.source,
        });
        Ok(match result {
            Ok(n) => AuditVerifyResponse {
                intact: true,
                entries_checked: n,
                first_broken: None,
                anchor,
            },
            Err(b) => {
                tracing::warn!(seq = b.seq, reason = %b.reason, "audit chain broken");
                AuditVerifyResponse {
                    intact: false,
                    entries_checked: u64::try_from(b.seq.saturating_sub(1)).unwrap_or(0),
                    first_broken: Some(AuditBreak {
                        seq: b.seq,
                        reason: b.reason,
                    }),
                    anchor,
                }
            }
        })
    }
}

impl Audit<'_> {
    /// Every session's recording, newest first, checked as `recording verify` checks one: whole,
    /// in order, untruncated, and as its `session.end` entry says it ended. A recording that
    /// cannot be read (a missing file, a key that does not open) is a problem too: evidence that
    /// is gone is not intact. One audit entry for the whole check.
    pub async fn verify_recordings(&self, who: &Principal) -> Result<RecordingsVerification> {
        who.require(Action::ReadAudit)?;
        who.require(Action::ReadRecordings)?;
        let mut report = RecordingsVerification {
            checked: 0,
            intact: 0,
            live: 0,
            problems: Vec::new(),
        };
        let mut before: Option<(String, String)> = None;
        loop {
            let page = self
                .store
                .sessions_page(
                    before.as_ref().map(|(t, i)| (t.as_str(), i.as_str())),
                    false,
                    RECORDINGS_BATCH,
                )
                .await?;
            let Some(last) = page.last() else { break };
            before = Some((last.started_at.clone(), last.id.clone()));
            for row in &page {
                report.checked += 1;
                match self.sessions().check_recording(&row.id).await {
                    Ok(r) if r.status == "tampered" => report.problems.push(RecordingProblem {
                        session: r.session,
                        status: r.status,
                        message: r.message,
                    }),
                    Ok(r) if r.status == "live" => report.live += 1,
                    Ok(_) => report.intact += 1,
                    Err(e) => report.problems.push(RecordingProblem {
                        session: row.id.clone(),
                        status: "unreadable".into(),
                        message: e.message,
                    }),
                }
            }
        }
        let mut entry = NewAuditEntry::new(&who.username, "recording.verify_all", "recordings")
            .outcome(if report.problems.is_empty() {
                "success"
            } else {
                "failure"
            })
            .detail("checked", report.checked)
            .detail("problems", report.problems.len());
        if let Some(first) = report.problems.first() {
            entry = entry.detail("first_problem", format!("session:{}", first.session));
        }
        self.record(entry).await?;
        Ok(report)
    }
}

/// The end of the chain: a head this instance signed, and no anchor that saw further.
fn check_tail(
    key: &AuditMacKey,
    head: &AuditHead,
    newest: Option<&FoundAnchor>,
) -> std::result::Result<(), ChainBreak> {
    if let Some(found) = newest {
        let a = &found.anchor;
        if !key.verify(a.seq, &a.hash, &a.mac) {
            return Err(ChainBreak {
                seq: a.seq,
                reason: format!("{} is not authentic (its MAC does not match)", found.source),
            });
        }
        if a.seq > head.seq {
            return Err(ChainBreak {
                seq: head.seq + 1,
                reason: format!(
                    "missing: the trail ends at entry {} but {} saw entry {} (written {}); the \
                     newest entries were removed and the head moved back",
                    head.seq, found.source, a.seq, a.written_at
                ),
            });
        }
    }
    if !key.verify(head.seq, &head.hash, &head.mac) {
        return Err(ChainBreak {
            seq: head.seq,
            reason: "the head of the chain is not authenticated (its MAC does not match): the \
                     newest entries may have been removed and the head moved back"
                .into(),
        });
    }
    Ok(())
}

/// The store's filter of a search, each field checked: blank conditions are none, a trailing
/// `*` is a prefix, times become UTC seconds that compare as the stored stamps do.
fn audit_filter(q: &AuditQuery) -> Result<AuditFilter> {
    fn text(field: &str, v: Option<&String>) -> Result<Option<Match>> {
        let Some(v) = v.map(|v| v.trim()).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        if v.len() > 256 || v.chars().any(char::is_control) {
            return Err(Error::invalid(
                field,
                format!("{field}: at most 256 characters, none of them control characters"),
            ));
        }
        Ok(Some(match v.strip_suffix('*') {
            Some(p) => Match::Prefix(p.to_owned()),
            None => Match::Exact(v.to_owned()),
        }))
    }
    fn moment(field: &str, v: Option<&String>) -> Result<Option<String>> {
        let Some(v) = v.map(|v| v.trim()).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let bad = || {
            Error::invalid(
                field,
                format!("{field}: not a time; give RFC 3339 (2026-01-31T09:00:00Z) or a date (2026-01-31)"),
            )
        };
        let t = match time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        {
            Ok(t) => t.to_offset(time::UtcOffset::UTC),
            Err(_) => {
                let mut parts = v.splitn(3, '-').map(str::parse::<u16>);
                let (Some(Ok(y)), Some(Ok(m)), Some(Ok(d))) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad());
                };
                let month = u8::try_from(m)
                    .ok()
                    .and_then(|m| time::Month::try_from(m).ok())
                    .ok_or_else(bad)?;
                let day = u8::try_from(d).map_err(|_| bad())?;
                time::Date::from_calendar_date(i32::from(y), month, day)
                    .map_err(|_| bad())?
                    .midnight()
                    .assume_utc()
            }
        };
        Ok(Some(format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )))
    }
    Ok(AuditFilter {
        actor: text("actor", q.actor.as_ref())?,
        action: text("action", q.action.as_ref())?,
        object: text("object", q.object.as_ref())?,
        since: moment("since", q.since.as_ref())?,
        until: moment("until", q.until.as_ref())?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod search_tests {
    use super::*;

    #[test]
    fn an_audit_search_checks_and_normalises_its_conditions() {
        let q = AuditQuery {
            actor: Some(" carol ".into()),
            action: Some("auth.*".into()),
            object: Some("".into()),
            since: Some("2026-01-31".into()),
            until: Some("2026-02-01T10:00:00+01:00".into()),
            ..AuditQuery::default()
        };
        let f = audit_filter(&q).unwrap();
        assert_eq!(f.actor, Some(Match::Exact("carol".into())));
        assert_eq!(f.action, Some(Match::Prefix("auth.".into())));
        assert_eq!(f.object, None);
        assert_eq!(f.since.as_deref(), Some("2026-01-31T00:00:00"));
        assert_eq!(f.until.as_deref(), Some("2026-02-01T09:00:00"));
        for bad in ["yesterday", "2026-13-01", "2026-02-30"] {
            let q = AuditQuery {
                since: Some(bad.into()),
                ..AuditQuery::default()
            };
            let e = audit_filter(&q).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("since"), "{bad}");
        }
    }
}

/// One CSV cell (RFC 4180): quoted when it holds a comma, a quote, CR or LF, quotes doubled.
/// A cell that a spreadsheet would read as a formula (starting with `=`, `+`, `-`, `@`, a tab or
/// CR) gets a leading apostrophe first, so opening the export never runs what an actor typed.
pub fn csv_cell(value: &str) -> String {
    let neutral = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if neutral.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", neutral.replace('"', "\"\""))
    } else {
        neutral
    }
}

fn csv_row(cells: impl IntoIterator<Item = String>) -> String {
    let mut line = cells
        .into_iter()
        .map(|c| csv_cell(&c))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

#[cfg(test)]
mod csv_tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_cell("=1+1"), "'=1+1");
        assert_eq!(csv_cell("+1"), "'+1");
        assert_eq!(csv_cell("-1"), "'-1");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("\tx"), "'\tx");
        assert_eq!(csv_cell("\rx"), "\"'\rx\"");
        assert_eq!(
            csv_cell("=HYPERLINK(\"x\",\"y\")"),
            "\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\""
        );
        assert_eq!(csv_cell(""), "");
        assert_eq!(csv_row(["a".to_owned(), "b,c".to_owned()]), "a,\"b,c\"\r\n");
    }
}
