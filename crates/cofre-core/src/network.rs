//! Network policy: which source addresses each listener (the HTTPS API and the SSH gateway)
//! accepts, and which peers are trusted proxies whose `X-Forwarded-For` and PROXY protocol
//! headers name the real client.
//!
//! A listener's allow-list is the customer's networks and, in saas mode, the vendor's own
//! networks (set only by the vendor's operator, so that its support and operators can reach an
//! instance the customer has closed to everyone else). Both empty means everyone: the default,
//! for the embedded start. Addresses are compared after unmapping IPv4-mapped IPv6
//! (`::ffff:10.0.0.1` is `10.0.0.1`), since a dual-stack socket reports IPv4 clients that way.

use crate::FieldError;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// At most this many networks in one list: a policy is read on every connection.
pub const MAX_NETWORKS: usize = 256;

/// The listeners a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Listener {
    /// The HTTPS API and web console.
    Api,
    /// The SSH gateway.
    Gateway,
    /// The external listener for invitees (issue 18), when `[external] listen` is set.
    External,
}

impl Listener {
    pub const ALL: [Listener; 3] = [Listener::Api, Listener::Gateway, Listener::External];

    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Api => "api",
            Listener::Gateway => "gateway",
            Listener::External => "external",
        }
    }

    pub fn parse(field: &str, s: &str) -> Result<Listener, FieldError> {
        Listener::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                FieldError::new(
                    field,
                    format!("`{s}` is not a listener (api, gateway or external)"),
                )
            })
    }
}

/// One listener's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerPolicy {
    /// The customer's networks.
    pub allow: Vec<IpNet>,
    /// The vendor's own networks (saas: set by the vendor's operator only).
    pub vendor_allow: Vec<IpNet>,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// What a listener does with a source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Refused,
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; everything else as it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Whether any of `nets` holds `ip` (IPv4-mapped IPv6 is matched as IPv4).
pub fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// Parses one network: a CIDR (`10.20.0.0/16`, `2001:db8::/32`) or a bare address (one host).
/// Host bits set under the prefix are refused: `10.20.1.0/16` is most likely a typo.
pub fn parse_network(field: &str, s: &str) -> Result<IpNet, FieldError> {
    let s = s.trim();
    let bad = |why: &str| FieldError::new(field, format!("`{s}` {why}"));
    if s.contains('/') {
        let net: IpNet = s
            .parse()
            .map_err(|_| bad("is not a network (CIDR such as 10.20.0.0/16 or 2001:db8::/32)"))?;
        if net.trunc() != net {
            return Err(bad(&format!(
                "has host bits set under its prefix; did you mean {}?",
                net.trunc()
            )));
        }
        Ok(match net {
            // A mapped IPv4 network is stored as the IPv4 network it means.
            IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
                Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                    .map(IpNet::V4)
                    .unwrap_or(IpNet::V6(v6)),
                None => IpNet::V6(v6),
            },
            n => n,
        })
    } else {
        let ip: IpAddr = s
            .parse()
            .map_err(|_| bad("is not an address or a network (CIDR)"))?;
        Ok(IpNet::from(canonical(ip)))
    }
}

/// Parses a list of networks, each as [`parse_network`]; duplicates are dropped.
pub fn parse_networks(field: &str, items: &[String]) -> Result<Vec<IpNet>, FieldError> {
    if items.len() > MAX_NETWORKS {
        return Err(FieldError::new(
            field,
            format!("at most {MAX_NETWORKS} networks"),
        ));
    }
    let mut out: Vec<IpNet> = Vec::with_capacity(items.len());
    for item in items {
        if item.trim().is_empty() {
            return Err(FieldError::new(field, "an empty network"));
        }
        let net = parse_network(field, item)?;
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

/// Networks as text, the way they are stored and shown.
pub fn to_strings(nets: &[IpNet]) -> Vec<String> {
    nets.iter().map(|n| n.to_string()).collect()
}

impl ListenerPolicy {
    /// Everyone may connect when neither list names a network.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.vendor_allow.is_empty()
    }

    pub fn decide(&self, source: IpAddr) -> Decision {
        if self.is_open() || contains(&self.allow, source) || contains(&self.vendor_allow, source) {
            Decision::Allowed
        } else {
            Decision::Refused
        }
    }

    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        contains(&self.trusted_proxies, peer)
    }

    /// Whether `new` lets in some source that `self` refuses, or trusts a proxy that `self`
    /// does not (a trusted proxy may name any client address). A list is judged by whether each
    /// of the new networks lies inside one old network, which may call widening a change that
    /// only regroups several old networks into one: that errs towards asking a second admin.
    pub fn widens(&self, new: &ListenerPolicy) -> bool {
        let covered = |net: &IpNet, by: &[IpNet]| by.iter().any(|o| o.contains(net));
        let old_allow: Vec<IpNet> = self
            .allow
            .iter()
            .chain(&self.vendor_allow)
            .copied()
            .collect();
        let new_allow: Vec<IpNet> = new.allow.iter().chain(&new.vendor_allow).copied().collect();
        let allow_widens = if self.is_open() {
            false
        } else if new.is_open() {
            true
        } else {
            new_allow.iter().any(|n| !covered(n, &old_allow))
        };
        allow_widens
            || new
                .trusted_proxies
                .iter()
                .any(|n| !covered(n, &self.trusted_proxies))
    }
}

/// The client an `X-Forwarded-For` chain names, as seen from `peer`: each proxy appends the
/// address it received the request from, so the chain is read from the right, skipping trusted
/// proxies, and the first address that is not one is the client. Anything left of it could be
/// made up by the client and is never read. A malformed entry stops the walk there: the last
/// trusted hop is then the client. `values` are the header's values in the order received.
pub fn forwarded_client(peer: IpAddr, values: &[&str], trusted: &[IpNet]) -> IpAddr {
    let mut client = canonical(peer);
    if !contains(trusted, client) {
        return client;
    }
    let hops = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) => {
                client = ip;
                if !contains(trusted, ip) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly `[v6]:port` or `v4:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn nets(items: &[&str]) -> Vec<IpNet> {
        parse_networks(
            "allow",
            &items.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_cidr_matching() {
        let n = nets(&["10.20.0.0/16", "192.168.7.0/24", "172.16.0.9"]);
        assert!(contains(&n, ip("10.20.0.1")));
        assert!(contains(&n, ip("10.20.255.255")));
        assert!(!contains(&n, ip("10.21.0.1")));
        assert!(contains(&n, ip("192.168.7.200")));
        assert!(!contains(&n, ip("192.168.8.1")));
        assert!(contains(&n, ip("172.16.0.9")));
        assert!(!contains(&n, ip("172.16.0.10")));
    }

    #[test]
    fn ipv6_cidr_matching() {
        let n = nets(&["2001:db8:1::/48", "fd00::5"]);
        assert!(contains(&n, ip("2001:db8:1:ffff::1")));
        assert!(!contains(&n, ip("2001:db8:2::1")));
        assert!(contains(&n, ip("fd00::5")));
        assert!(!contains(&n, ip("fd00::6")));
        // An IPv4 network never holds an IPv6 address that is not mapped IPv4, and back.
        assert!(!contains(&nets(&["0.0.0.0/0"]), ip("2001:db8::1")));
        assert!(!contains(&nets(&["2001:db8::/32"]), ip("10.0.0.1")));
    }

    #[test]
    fn ipv4_mapped_ipv6_matches_as_ipv4() {
        let n = nets(&["10.20.0.0/16"]);
        assert!(contains(&n, ip("::ffff:10.20.3.4")));
        assert!(!contains(&n, ip("::ffff:10.21.3.4")));
        // A mapped network is the IPv4 network it means.
        let mapped = nets(&["::ffff:10.20.0.0/112"]);
        assert_eq!(mapped, nets(&["10.20.0.0/16"]));
        assert!(contains(&mapped, ip("10.20.9.9")));
        assert_eq!(canonical(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
    }

    #[test]
    fn bad_networks_name_the_field_and_why() {
        let e = parse_networks("allow", &["10.20.1.0/16".into()]).unwrap_err();
        assert_eq!(e.field, "allow");
        assert!(e.reason.contains("10.20.0.0/16"), "{}", e.reason);
        let e = parse_networks("trusted_proxies", &["example.com".into()]).unwrap_err();
        assert_eq!(e.field, "trusted_proxies");
        assert!(parse_networks("allow", &["10.0.0.0/33".into()]).is_err());
        assert!(parse_networks("allow", &["".into()]).is_err());
        assert_eq!(nets(&["10.0.0.1", "10.0.0.1/32"]).len(), 1);
    }

    #[test]
    fn empty_lists_let_everyone_in() {
        let p = ListenerPolicy::default();
        assert_eq!(p.decide(ip("203.0.113.9")), Decision::Allowed);
        assert_eq!(p.decide(ip("2001:db8::9")), Decision::Allowed);
        let p = ListenerPolicy {
            allow: nets(&["10.20.0.0/16"]),
            vendor_allow: nets(&["198.51.100.0/24"]),
            ..Default::default()
        };
        assert_eq!(p.decide(ip("10.20.1.1")), Decision::Allowed);
        assert_eq!(p.decide(ip("198.51.100.7")), Decision::Allowed);
        assert_eq!(p.decide(ip("203.0.113.9")), Decision::Refused);
    }

    #[test]
    fn what_widens() {
        let open = ListenerPolicy::default();
        let closed = ListenerPolicy {
            allow: nets(&["10.20.0.0/16"]),
            ..Default::default()
        };
        let narrower = ListenerPolicy {
            allow: nets(&["10.20.30.0/24"]),
            ..Default::default()
        };
        let other = ListenerPolicy {
            allow: nets(&["10.20.30.0/24", "10.99.0.0/16"]),
            ..Default::default()
        };
        assert!(!open.widens(&closed), "closing an open listener narrows");
        assert!(closed.widens(&open), "opening to everyone widens");
        assert!(!closed.widens(&narrower));
        assert!(narrower.widens(&closed));
        assert!(closed.widens(&other));
        let with_proxy = ListenerPolicy {
            trusted_proxies: nets(&["10.20.0.5"]),
            ..closed.clone()
        };
        assert!(closed.widens(&with_proxy), "a new trusted proxy widens");
        assert!(!with_proxy.widens(&closed));
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_and_only_from_trusted_proxies() {
        let trusted = nets(&["10.20.0.5", "10.20.0.6"]);
        // From an untrusted peer the header is ignored.
        assert_eq!(
            forwarded_client(ip("10.30.0.1"), &["10.20.1.1"], &trusted),
            ip("10.30.0.1")
        );
        // The rightmost untrusted hop is the client; what the client wrote left of it is not read.
        assert_eq!(
            forwarded_client(ip("10.20.0.5"), &["10.20.1.1, 203.0.113.7"], &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(
            forwarded_client(
                ip("10.20.0.5"),
                &["10.20.1.1", "203.0.113.7, 10.20.0.6"],
                &trusted
            ),
            ip("203.0.113.7")
        );
        // No header: the proxy itself.
        assert_eq!(
            forwarded_client(ip("10.20.0.5"), &[], &trusted),
            ip("10.20.0.5")
        );
        // A malformed hop stops the walk at the last trusted one.
        assert_eq!(
            forwarded_client(ip("10.20.0.5"), &["10.20.1.1, nonsense"], &trusted),
            ip("10.20.0.5")
        );
        assert_eq!(
            forwarded_client(ip("10.20.0.5"), &["[2001:db8::7]:443"], &trusted),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn listener_names() {
        assert_eq!(Listener::parse("listener", "api").unwrap(), Listener::Api);
        assert_eq!(
            Listener::parse("listener", "gateway").unwrap(),
            Listener::Gateway
        );
        assert_eq!(
            Listener::parse("listener", "web").unwrap_err().field,
            "listener"
        );
    }
}
