//! Failed SSH authentication attempts, aggregated: one audit entry per source address and window
//! (how many, of which kind, and a bounded sample of the names tried) rather than one per attempt,
//! so a flood of bad logins from one address cannot flood the audit trail. Wrong passwords for
//! real users are also audited one by one by the services (`auth.login_failed`): they are what
//! lockout forensics need, and the per-address back-off keeps their rate low.

use cofre_app::services::App;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// How long one entry's window lasts.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Names kept per source and window; the others are only counted.
const NAME_SAMPLE: usize = 10;
/// Characters of a name kept (names are the attacker's text: bounded, control characters escaped).
const NAME_CHARS: usize = 64;
/// Sources tracked per window; past that, attempts go to one `other` bucket.
const MAX_SOURCES: usize = 10_000;

#[derive(Default)]
struct Window {
    since: String,
    attempts: u64,
    kinds: BTreeMap<&'static str, u64>,
    names: BTreeSet<String>,
    names_not_shown: u64,
}

#[derive(Default)]
pub(crate) struct Attempts(Mutex<HashMap<Option<IpAddr>, Window>>);

impl Attempts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Option<IpAddr>, Window>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one failed attempt (`kind`: `malformed`, `password`, `publickey`) with `name`.
    pub(crate) fn note(&self, app: &App, ip: IpAddr, kind: &'static str, name: &str) {
        let mut map = self.lock();
        let key = if map.len() >= MAX_SOURCES && !map.contains_key(&Some(ip)) {
            None
        } else {
            Some(ip)
        };
        let w = map.entry(key).or_insert_with(|| Window {
            since: app.now_text(),
            ..Window::default()
        });
        w.attempts += 1;
        *w.kinds.entry(kind).or_insert(0) += 1;
        let shown: String = name
            .chars()
            .take(NAME_CHARS)
            .flat_map(char::escape_debug)
            .collect();
        if !w.names.contains(&shown) {
            if w.names.len() < NAME_SAMPLE {
                w.names.insert(shown);
            } else {
                w.names_not_shown += 1;
            }
        }
    }

    /// Writes one audit entry per source for what was noted since the last flush.
    pub(crate) async fn flush(&self, app: &App) {
        let taken: Vec<(Option<IpAddr>, Window)> = self.lock().drain().collect();
        for (ip, w) in taken {
            let source = ip.map_or_else(|| "other".to_owned(), |i| i.to_string());
            let kinds = w
                .kinds
                .into_iter()
                .map(|(k, n)| (k.to_owned(), n))
                .collect();
            let failed = cofre_app::services::sessions::FailedAttempts {
                source: &source,
                attempts: w.attempts,
                kinds,
                names: w.names.into_iter().collect(),
                names_not_shown: w.names_not_shown,
                since: &w.since,
            };
            if let Err(e) = app.sessions().record_failed_attempts(failed).await {
                tracing::error!(error = %e, %source, "cannot audit failed SSH attempts");
            }
        }
    }
}
