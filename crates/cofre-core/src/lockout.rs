//! Failed logins counted per user name *and* source address, with back-off: wrong passwords from
//! one address slow down that address only, so nobody can lock a user (or every admin) out by
//! typing wrong passwords for them. An account-wide lock needs failures from many addresses at
//! once (a distributed guess), which one attacker's address cannot produce alone.
//!
//! Unknown user names are counted exactly like known ones, so the answers (and when a back-off
//! starts) never tell whether a name exists. Pure: the caller passes every moment.

use std::net::IpAddr;

/// The settings (`lockout_threshold`, `lockout_minutes`, `lockout_sources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Consecutive failures from one address before that address waits.
    pub threshold: u32,
    /// The longest wait for one address, and how long failures count towards an account lock.
    pub max_seconds: i64,
    /// Addresses in back-off at once that lock the account for everyone's passwords.
    pub sources: u32,
}

/// The first wait after `threshold` failures; each further failure doubles it, up to the cap.
pub const FIRST_WAIT_SECONDS: i64 = 30;

/// One (user name, source) pair's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceFailures {
    pub failures: i64,
    pub last_failure_at: i64,
    pub blocked_until: Option<i64>,
}

impl Rules {
    /// The count after one more failure at `now`. A row idle for longer than the cap starts over,
    /// so an old typo never counts against today's login.
    pub fn after_failure(&self, before: Option<SourceFailures>, now: i64) -> SourceFailures {
        let failures = match before {
            Some(b) if now - b.last_failure_at <= self.max_seconds => b.failures + 1,
            _ => 1,
        };
        let over = failures - i64::from(self.threshold);
        let blocked_until = (over >= 0).then(|| {
            let wait = FIRST_WAIT_SECONDS
                .saturating_mul(1i64 << over.min(30))
                .min(self.max_seconds.max(1));
            now + wait
        });
        SourceFailures {
            failures,
            last_failure_at: now,
            blocked_until,
        }
    }

    /// Until when this source must wait, if it must.
    pub fn waiting(&self, row: Option<&SourceFailures>, now: i64) -> Option<i64> {
        row.and_then(|r| r.blocked_until).filter(|t| *t > now)
    }

    /// Whether a user name's rows (one per source) lock the whole account at `now`: `sources`
    /// addresses have each reached the threshold within the last `max_seconds`.
    pub fn account_locked(&self, rows: &[SourceFailures], now: i64) -> bool {
        self.sources > 0
            && self.in_backoff(rows, now) >= usize::try_from(self.sources).unwrap_or(usize::MAX)
    }

    fn in_backoff(&self, rows: &[SourceFailures], now: i64) -> usize {
        rows.iter()
            .filter(|r| {
                r.failures >= i64::from(self.threshold)
                    && now - r.last_failure_at <= self.max_seconds
            })
            .count()
    }
}

/// The address failures are counted under: an IPv4 address as it is, an IPv6 address by its /64
/// (one host usually holds a whole /64, so counting single addresses would give it 2^64 tries).
pub fn source_key(source: &str) -> String {
    match source.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => source.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        threshold: 5,
        max_seconds: 900,
        sources: 3,
    };

    #[test]
    fn one_address_waits_after_the_threshold_and_the_wait_doubles_up_to_the_cap() {
        let mut row = None;
        for i in 1..=4 {
            let r = RULES.after_failure(row, 100);
            assert_eq!(r.failures, i);
            assert_eq!(r.blocked_until, None, "no wait before the threshold");
            row = Some(r);
        }
        let mut waits = Vec::new();
        let mut now = 100;
        for _ in 0..8 {
            let r = RULES.after_failure(row, now);
            let until = r.blocked_until.unwrap();
            waits.push(until - now);
            assert_eq!(RULES.waiting(Some(&r), now), Some(until));
            assert_eq!(
                RULES.waiting(Some(&r), until),
                None,
                "over once the wait ends"
            );
            now = until;
            row = Some(r);
        }
        assert_eq!(waits, vec![30, 60, 120, 240, 480, 900, 900, 900]);
    }

    #[test]
    fn an_old_count_starts_over() {
        let mut row = None;
        for _ in 0..5 {
            row = Some(RULES.after_failure(row, 0));
        }
        let later = RULES.after_failure(row, 10_000);
        assert_eq!(later.failures, 1);
        assert_eq!(later.blocked_until, None);
    }

    #[test]
    fn the_account_locks_only_when_many_addresses_fail() {
        let failing = |at| {
            let mut row = None;
            for _ in 0..5 {
                row = Some(RULES.after_failure(row, at));
            }
            row.unwrap()
        };
        let typo = RULES.after_failure(None, 0);
        assert!(!RULES.account_locked(&[failing(0), failing(0), typo], 0));
        assert!(RULES.account_locked(&[failing(0), failing(0), failing(0)], 0));
        assert!(
            !RULES.account_locked(&[failing(0), failing(0), failing(0)], 901),
            "failures older than the cap no longer lock"
        );
        let off = Rules {
            sources: 0,
            ..RULES
        };
        assert!(!off.account_locked(&[failing(0); 10], 0));
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        assert_eq!(source_key("192.0.2.7"), "192.0.2.7");
        assert_eq!(source_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(source_key("2001:db8:1:2:ffff::1"), "2001:db8:1:2::/64");
        assert_eq!(source_key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(source_key("unknown"), "unknown");
    }
}
