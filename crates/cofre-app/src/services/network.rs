//! Network policy (Orbit): which source addresses the HTTPS API and the SSH gateway accept, and
//! which peers are trusted proxies (see `cofre_core::network`).
//!
//! The policy is one database row per listener, so every node of an active-active instance
//! follows it; each node keeps a copy read at most [`POLICY_MAX_AGE`] ago (a change made on this
//! node is seen at once). If the database does not answer, the policy last read is kept, so a
//! failing read never opens a closed listener; with none read yet the connection is refused.
//!
//! A refusal is counted in `cofre_network_refused_total` every time, and audited
//! (`network.refused`) once per listener and source per minute, and at most 100 times a minute
//! in all, so a scan cannot flood the trail.

use super::governance::{Applied, Change, Output};
use super::{App, Orbit, Principal};
use crate::error::{Error, ErrorCode, ErrorKind, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_core::network::{parse_networks, to_strings, Decision, Listener, ListenerPolicy};
use cofre_core::role::{Action, Role};
use cofre_proto::{ListenerNetworkInfo, NetworkPolicyInfo, SetNetworkRequest};
use cofre_store::network::NetworkPolicyRow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How old this node's copy of the policy may be before a connection reads the rows again.
const POLICY_MAX_AGE: Duration = Duration::from_secs(2);
/// One `network.refused` entry per listener and source in this time.
const REFUSAL_AUDIT_WINDOW: Duration = Duration::from_secs(60);
/// Sources remembered for the rate limit; past this the oldest are forgotten.
const MAX_REMEMBERED_SOURCES: usize = 10_000;
/// At most this many `network.refused` entries per window, whatever the number of sources.
const MAX_AUDITED_PER_WINDOW: u32 = 100;

/// Both listeners' policies as stored.
#[derive(Debug, Clone, Default)]
pub struct NetworkPolicy {
    pub api: ListenerPolicy,
    pub gateway: ListenerPolicy,
    pub external: ListenerPolicy,
}

impl NetworkPolicy {
    pub fn listener(&self, l: Listener) -> &ListenerPolicy {
        match l {
            Listener::Api => &self.api,
            Listener::Gateway => &self.gateway,
            Listener::External => &self.external,
        }
    }

    fn from_rows(rows: &[NetworkPolicyRow]) -> Result<NetworkPolicy> {
        let mut p = NetworkPolicy::default();
        for row in rows {
            let l = Listener::parse("listener", &row.listener)
                .map_err(|e| Error::internal("reading the network policy", e))?;
            let parsed = listener_policy_of(row)
                .map_err(|e| Error::internal("reading the network policy", e))?;
            match l {
                Listener::Api => p.api = parsed,
                Listener::Gateway => p.gateway = parsed,
                Listener::External => p.external = parsed,
            }
        }
        Ok(p)
    }
}

fn split(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn listener_policy_of(row: &NetworkPolicyRow) -> std::result::Result<ListenerPolicy, String> {
    let parse =
        |field: &str, text: &str| parse_networks(field, &split(text)).map_err(|e| e.to_string());
    Ok(ListenerPolicy {
        allow: parse("allow", &row.allow)?,
        vendor_allow: parse("vendor_allow", &row.vendor_allow)?,
        trusted_proxies: parse("trusted_proxies", &row.trusted_proxies)?,
    })
}

/// This node's copy of the policy, and when each source's last refusal was audited.
#[derive(Default)]
pub(crate) struct NetworkState {
    cache: RwLock<Option<(Instant, Arc<NetworkPolicy>)>>,
    audited: Mutex<Audited>,
}

/// The refusals' audit rate limit: per listener and source, and overall.
struct Audited {
    /// When each source's last refusal was audited, and how many since were not.
    sources: HashMap<(Listener, IpAddr), (Instant, u64)>,
    window_start: Instant,
    used: u32,
    /// Refusals the overall budget left unaudited, told by the next entry.
    unaudited: u64,
}

impl Default for Audited {
    fn default() -> Self {
        Audited {
            sources: HashMap::new(),
            window_start: Instant::now(),
            used: 0,
            unaudited: 0,
        }
    }
}

impl NetworkState {
    fn fresh(&self) -> Option<Arc<NetworkPolicy>> {
        let guard = self.cache.read().ok()?;
        match &*guard {
            Some((at, p)) if at.elapsed() < POLICY_MAX_AGE => Some(p.clone()),
            _ => None,
        }
    }

    fn last(&self) -> Option<Arc<NetworkPolicy>> {
        self.cache.read().ok()?.as_ref().map(|(_, p)| p.clone())
    }

    fn put(&self, p: Arc<NetworkPolicy>) {
        if let Ok(mut guard) = self.cache.write() {
            *guard = Some((Instant::now(), p));
        }
    }

    /// Forgets the copy, so the next connection reads the rows (after a change on this node).
    pub(crate) fn invalidate(&self) {
        if let Ok(mut guard) = self.cache.write() {
            if let Some((at, _)) = guard.as_mut() {
                *at = Instant::now()
                    .checked_sub(POLICY_MAX_AGE)
                    .unwrap_or_else(Instant::now);
            }
        }
    }

    /// Whether this refusal is to be audited now: `Some((this source's refusals not audited
    /// since its last entry, other sources' refusals left unaudited by the overall budget))`.
    fn audit_now(&self, listener: Listener, source: IpAddr) -> Option<(u64, u64)> {
        let mut a = self
            .audited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let key = (listener, source);
        if let Some((at, skipped)) = a.sources.get_mut(&key) {
            if now.duration_since(*at) < REFUSAL_AUDIT_WINDOW {
                *skipped += 1;
                return None;
            }
        }
        // A scan from many sources: past the overall budget, refusals are only counted (and
        // the next entry says how many), so the trail grows by at most the budget a minute.
        if now.duration_since(a.window_start) >= REFUSAL_AUDIT_WINDOW {
            a.window_start = now;
            a.used = 0;
        }
        if a.used >= MAX_AUDITED_PER_WINDOW {
            a.unaudited += 1;
            return None;
        }
        a.used += 1;
        let elsewhere = std::mem::take(&mut a.unaudited);
        if a.sources.len() >= MAX_REMEMBERED_SOURCES {
            a.sources
                .retain(|_, (at, _)| now.duration_since(*at) < REFUSAL_AUDIT_WINDOW);
        }
        let before = a
            .sources
            .insert(key, (now, 0))
            .map_or(0, |(_, skipped)| skipped);
        Some((before, elsewhere))
    }
}

/// The refusal a client outside a listener's networks gets.
pub fn refused_error(listener: Listener, source: IpAddr) -> Error {
    Error::new(
        ErrorKind::Forbidden,
        ErrorCode::NetworkRefused,
        format!(
            "your address {source} is not in the networks this instance's {} accepts (network policy)",
            listener.as_str()
        ),
    )
}

impl App {
    /// The network policy, from this node's copy if it is fresh enough.
    pub async fn network_policy(&self) -> Result<Arc<NetworkPolicy>> {
        if let Some(p) = self.network.fresh() {
            return Ok(p);
        }
        match self.store.network_policy().await {
            Ok(rows) => {
                let p = Arc::new(NetworkPolicy::from_rows(&rows)?);
                self.network.put(p.clone());
                Ok(p)
            }
            Err(e) => match self.network.last() {
                Some(p) => Ok(p),
                None => Err(Error::internal("reading the network policy", e)),
            },
        }
    }

    /// The client of an HTTPS request on `listener`, judged: the peer, or the address its
    /// `X-Forwarded-For` values name when the peer is one of the listener's trusted proxies;
    /// then [`App::admit_source`]. Returns the judged address (what audit entries record).
    pub async fn admit_forwarded(
        &self,
        listener: Listener,
        peer: IpAddr,
        forwarded_for: &[&str],
    ) -> Result<IpAddr> {
        let policy = self.network_policy().await?;
        let client = cofre_core::network::forwarded_client(
            peer,
            forwarded_for,
            &policy.listener(listener).trusted_proxies,
        );
        self.admit_source(listener, client).await?;
        Ok(client)
    }

    /// Judges a client's address on a listener: `Err(network_refused)` outside its networks,
    /// counted and (rate-limited) audited. Called before anything else is done for the client.
    pub async fn admit_source(&self, listener: Listener, source: IpAddr) -> Result<()> {
        let source = cofre_core::network::canonical(source);
        let policy = self.network_policy().await?;
        if policy.listener(listener).decide(source) == Decision::Allowed {
            return Ok(());
        }
        metrics::counter!("cofre_network_refused_total", "listener" => listener.as_str())
            .increment(1);
        if let Some((unaudited, elsewhere)) = self.network.audit_now(listener, source) {
            let entry =
                NewAuditEntry::new("anonymous", "network.refused", format!("source:{source}"))
                    .outcome("denied")
                    .detail("listener", listener.as_str())
                    .detail("source", source.to_string())
                    .detail("refused_before_unaudited", unaudited)
                    .detail("others_unaudited", elsewhere);
            if let Err(e) = self.record(entry).await {
                tracing::error!(error = %e, %source, "cannot audit a network refusal");
            }
        }
        Err(refused_error(listener, source))
    }
}

fn info_of(rows: &[NetworkPolicyRow], your_address: &str) -> NetworkPolicyInfo {
    NetworkPolicyInfo {
        listeners: rows
            .iter()
            .map(|r| ListenerNetworkInfo {
                listener: r.listener.clone(),
                allow: split(&r.allow),
                vendor_allow: split(&r.vendor_allow),
                trusted_proxies: split(&r.trusted_proxies),
                updated_at: r.updated_at.clone(),
                updated_by: r.updated_by.clone(),
            })
            .collect(),
        your_address: your_address.to_owned(),
    }
}

/// The policy `change` makes of `rows` for its listener: the row to store, and the old and new
/// policies for judging.
pub(crate) fn network_change(
    rows: &[NetworkPolicyRow],
    listener: &str,
    allow: &[String],
    vendor: bool,
    trusted_proxies: Option<&[String]>,
) -> Result<(NetworkPolicyRow, ListenerPolicy, ListenerPolicy)> {
    let l = Listener::parse("listener", listener)?;
    let allow = parse_networks("allow", allow)?;
    let proxies = match trusted_proxies {
        Some(p) => Some(parse_networks("trusted_proxies", p)?),
        None => None,
    };
    let row = rows
        .iter()
        .find(|r| r.listener == l.as_str())
        .ok_or_else(|| {
            Error::internal("reading the network policy", "a listener's row is missing")
        })?;
    let old =
        listener_policy_of(row).map_err(|e| Error::internal("reading the network policy", e))?;
    let mut new = old.clone();
    if vendor {
        new.vendor_allow = allow;
    } else {
        new.allow = allow;
    }
    if let Some(p) = proxies {
        new.trusted_proxies = p;
    }
    let mut stored = row.clone();
    stored.allow = to_strings(&new.allow).join(",");
    stored.vendor_allow = to_strings(&new.vendor_allow).join(",");
    stored.trusted_proxies = to_strings(&new.trusted_proxies).join(",");
    Ok((stored, old, new))
}

impl Orbit<'_> {
    /// `cofre network show`.
    pub async fn get_network_policy(
        &self,
        who: &Principal,
        your_address: &str,
    ) -> Result<NetworkPolicyInfo> {
        who.require(Action::ViewNetwork)?;
        Ok(info_of(&self.store.network_policy().await?, your_address))
    }

    /// `cofre network set`: an admin sets the customer's networks, the vendor's operator (saas,
    /// private-saas) the vendor's own. Narrowing applies at once; widening (a network not
    /// inside the old ones, opening to everyone, a new trusted proxy) waits for a second admin
    /// (dual control). A change that would refuse the caller's own address on the API is refused
    /// with `network_self_lockout` unless `force`.
    pub async fn set_network_policy(
        &self,
        who: &Principal,
        source: &str,
        req: &SetNetworkRequest,
    ) -> Result<Applied<NetworkPolicyInfo>> {
        who.require(Action::ManageNetwork)?;
        let vendor = who.role() == Role::Operator;
        let rows = self.store.network_policy().await?;
        let (_, _, new) = network_change(
            &rows,
            &req.listener,
            &req.allow,
            vendor,
            req.trusted_proxies.as_deref(),
        )?;
        if req.listener == Listener::Api.as_str() && !req.force {
            if let Ok(ip) = source.parse::<IpAddr>() {
                if new.decide(ip) == Decision::Refused {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        ErrorCode::NetworkSelfLockout,
                        format!(
                            "allow: this policy refuses your own address {ip} on the API; include it, or pass --force (force) if you mean to lock yourself out"
                        ),
                    )
                    .with_field("allow"));
                }
            }
        }
        let change = Change::NetworkSet {
            listener: req.listener.clone(),
            allow: req.allow.clone(),
            vendor,
            trusted_proxies: req.trusted_proxies.clone(),
        };
        let applied = self.approvals().propose_change(who, change).await?;
        self.network.invalidate();
        applied.map(|o| match o {
            Output::Network(rows) => Ok(info_of(&rows, source)),
            _ => Err(Error::internal(
                "setting the network policy",
                "unexpected output",
            )),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_audited_once_per_source_and_within_an_overall_budget() {
        let state = NetworkState::default();
        let ip = |n: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
        assert_eq!(state.audit_now(Listener::Api, ip(1)), Some((0, 0)));
        assert_eq!(state.audit_now(Listener::Api, ip(1)), None);
        assert_eq!(state.audit_now(Listener::Api, ip(1)), None);
        // The other listener is judged on its own.
        assert_eq!(state.audit_now(Listener::Gateway, ip(1)), Some((0, 0)));
        for n in 2..=(MAX_AUDITED_PER_WINDOW - 1) {
            assert!(
                state.audit_now(Listener::Api, ip(n)).is_some(),
                "source {n}"
            );
        }
        // The budget is spent: a new source is counted, not audited.
        assert_eq!(state.audit_now(Listener::Api, ip(100_000)), None);
        assert_eq!(state.audit_now(Listener::Api, ip(100_001)), None);
    }
}
