//! Invitations for third parties (issue 18), pure: what an invitation may ask for, its life, and
//! what an invitee may open under it.
//!
//! An invitation names an e-mail address, targets and accounts, a window and a reason. It is
//! `active` from its creation until it is revoked; whether it can be used is the window's
//! question (`usable`), asked at every use. Its link is one-use: redeeming it (setting a
//! password and enrolling TOTP) is accepted once, while the invitation is active and before its
//! end. The invitee opens sessions only to the pairs `targets × accounts` it names.

use crate::names::{check_account, check_identifier, check_text};
use crate::FieldError;

/// The longest an invitation may run: an afternoon is the use case, a month the ceiling.
pub const MAX_SECONDS: i64 = 31 * 24 * 3600;
/// How far ahead an invitation may start.
pub const MAX_START_AHEAD_SECONDS: i64 = 90 * 24 * 3600;
/// Names in `--targets` or `--accounts`.
pub const MAX_NAMES: usize = 32;

/// A code mailed to the invitee (`[external] second_factor = "email"`): this many digits, ...
pub const CODE_DIGITS: u32 = 8;
/// ... good for this long after it is sent by default (`[external] code_seconds`) ...
pub const CODE_SECONDS: i64 = 600;
/// ... and for this many wrong tries; then it is void and a new login sends a new one.
pub const CODE_TRIES: i64 = 3;

/// Why a mailed code cannot be tried any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeRefusal {
    #[error("the code expired")]
    Expired,
    #[error("the code had too many wrong tries")]
    Spent,
}

/// Whether a code sent to expire at `expires_at`, tried wrongly `tries` times, may be tried at
/// `at`. A right code is used once: the caller deletes it.
pub fn code_triable(expires_at: i64, tries: i64, at: i64) -> Result<(), CodeRefusal> {
    if at >= expires_at {
        Err(CodeRefusal::Expired)
    } else if tries >= CODE_TRIES {
        Err(CodeRefusal::Spent)
    } else {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    /// Taken back before its end: the link, the login and every session are refused.
    Revoked,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        [State::Active, State::Revoked]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// What an invitation looks like at a moment, as the list shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Before its window.
    Upcoming,
    /// In its window, the link not used yet.
    Sent,
    /// In its window, the invitee enrolled.
    Open,
    /// Past its window.
    Expired,
    Revoked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Upcoming => "upcoming",
            Status::Sent => "sent",
            Status::Open => "open",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
        }
    }
}

/// An invitation as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub targets: Vec<String>,
    pub accounts: Vec<String>,
    /// `[starts_at, ends_at)`, Unix seconds.
    pub starts_at: i64,
    pub ends_at: i64,
    pub state: State,
    /// Whether the link was used (the invitee set a password and enrolled TOTP).
    pub redeemed: bool,
}

/// Why an invitation refuses a use. The invitee is told only that the link or login is not
/// valid (no enumeration); the audit trail keeps which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the invitation was revoked")]
    Revoked,
    #[error("the invitation's window has not begun")]
    NotYet,
    #[error("the invitation has expired")]
    Expired,
    #[error("the invitation's link was used already")]
    AlreadyRedeemed,
    #[error("the invitee has not enrolled yet")]
    NotRedeemed,
    #[error("the invitation does not cover this target and account")]
    NotCovered,
}

impl Invitation {
    pub fn status(&self, at: i64) -> Status {
        match self.state {
            State::Revoked => Status::Revoked,
            State::Active if at >= self.ends_at => Status::Expired,
            State::Active if at < self.starts_at => Status::Upcoming,
            State::Active if self.redeemed => Status::Open,
            State::Active => Status::Sent,
        }
    }

    /// Whether the invitee may act (log in, open a session) at `at`.
    pub fn usable(&self, at: i64) -> Result<(), Refusal> {
        match self.state {
            State::Revoked => Err(Refusal::Revoked),
            State::Active if at >= self.ends_at => Err(Refusal::Expired),
            State::Active if at < self.starts_at => Err(Refusal::NotYet),
            State::Active => Ok(()),
        }
    }

    /// Whether the one-time link may be redeemed at `at`: once, while active and before the end
    /// (enrolling ahead of the window is allowed, so the invitee is ready when it opens).
    pub fn redeemable(&self, at: i64) -> Result<(), Refusal> {
        match self.state {
            State::Revoked => Err(Refusal::Revoked),
            State::Active if self.redeemed => Err(Refusal::AlreadyRedeemed),
            State::Active if at >= self.ends_at => Err(Refusal::Expired),
            State::Active => Ok(()),
        }
    }

    /// Whether a session to `account` on `target` may open at `at`.
    pub fn session_may(&self, target: &str, account: &str, at: i64) -> Result<(), Refusal> {
        self.usable(at)?;
        if !self.redeemed {
            return Err(Refusal::NotRedeemed);
        }
        if self.targets.iter().any(|t| t == target) && self.accounts.iter().any(|a| a == account) {
            Ok(())
        } else {
            Err(Refusal::NotCovered)
        }
    }

    /// Revocation; revoking a revoked invitation is refused (nothing changes).
    pub fn revoke(&mut self) -> Result<(), Refusal> {
        match self.state {
            State::Revoked => Err(Refusal::Revoked),
            State::Active => {
                self.state = State::Revoked;
                Ok(())
            }
        }
    }
}

/// What an inviter asks for, before it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask<'a> {
    pub email: &'a str,
    /// Comma-separated target names.
    pub targets: &'a str,
    /// Comma-separated account names.
    pub accounts: &'a str,
    pub starts_at: i64,
    pub ends_at: i64,
    pub reason: &'a str,
}

/// An address an invitation may go to: `local@domain.tld`, printable ASCII, no spaces, at most
/// 254 characters. Deliberately narrow (no quoted local parts, no IP literals): it ends up in an
/// SMTP envelope and in the audit trail.
pub fn check_email(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() || value.len() > 254 {
        return Err(FieldError::new(field, "must be 1 to 254 characters"));
    }
    let Some((local, domain)) = value.split_once('@') else {
        return Err(FieldError::new(field, "must look like name@example.com"));
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok {
        Ok(())
    } else {
        Err(FieldError::new(field, "must look like name@example.com"))
    }
}

/// A comma-separated list of names, each checked, none twice, at least one.
pub fn parse_names(
    field: &str,
    text: &str,
    check: fn(&str, &str) -> Result<(), FieldError>,
) -> Result<Vec<String>, FieldError> {
    let mut out: Vec<String> = Vec::new();
    for name in text.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(FieldError::new(
                field,
                "a comma-separated list of names, none empty",
            ));
        }
        check(field, name)?;
        if !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    if out.len() > MAX_NAMES {
        return Err(FieldError::new(field, format!("at most {MAX_NAMES} names")));
    }
    Ok(out)
}

/// A new invitation, checked at `now`.
pub fn invite(ask: &Ask<'_>, now: i64) -> Result<Invitation, FieldError> {
    check_email("email", ask.email)?;
    let targets = parse_names("targets", ask.targets, check_identifier)?;
    let accounts = parse_names("accounts", ask.accounts, check_account)?;
    let reason = ask.reason.trim();
    if reason.chars().count() < 3 {
        return Err(FieldError::new(
            "reason",
            "say why the invitee needs access (at least 3 characters)",
        ));
    }
    check_text("reason", reason, 500)?;
    if ask.ends_at <= ask.starts_at {
        return Err(FieldError::new("until", "must be after `from`"));
    }
    if ask.ends_at <= now {
        return Err(FieldError::new("until", "lies in the past"));
    }
    if ask.starts_at > now + MAX_START_AHEAD_SECONDS {
        return Err(FieldError::new("from", "at most 90 days ahead"));
    }
    if ask.ends_at - ask.starts_at > MAX_SECONDS {
        return Err(FieldError::new(
            "until",
            "an invitation runs at most 31 days",
        ));
    }
    Ok(Invitation {
        targets,
        accounts,
        starts_at: ask.starts_at,
        ends_at: ask.ends_at,
        state: State::Active,
        redeemed: false,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const H: i64 = 3600;

    fn ask<'a>(targets: &'a str, accounts: &'a str) -> Ask<'a> {
        Ask {
            email: "ana@vendor.example",
            targets,
            accounts,
            starts_at: 10 * H,
            ends_at: 15 * H,
            reason: "CHG-77 vendor patch",
        }
    }

    #[test]
    fn an_invitation_is_checked_field_by_field() {
        let inv = invite(&ask("db01, web02,db01", "deploy"), 9 * H).unwrap();
        assert_eq!(inv.targets, vec!["db01", "web02"]);
        assert_eq!(inv.accounts, vec!["deploy"]);
        let field = |a: Ask<'_>, now| invite(&a, now).unwrap_err().field;
        for bad in [
            "ana",
            "ana@",
            "@x.example",
            "a b@x.example",
            "ana@example",
            "ana@-x.example",
        ] {
            assert_eq!(
                field(
                    Ask {
                        email: bad,
                        ..ask("db01", "deploy")
                    },
                    0
                ),
                "email",
                "{bad}"
            );
        }
        assert_eq!(field(ask("", "deploy"), 0), "targets");
        assert_eq!(field(ask("DB01", "deploy"), 0), "targets");
        assert_eq!(field(ask("db01", "de ploy"), 0), "accounts");
        assert_eq!(
            field(
                Ask {
                    reason: " x ",
                    ..ask("db01", "deploy")
                },
                0
            ),
            "reason"
        );
        assert_eq!(
            field(
                Ask {
                    ends_at: 10 * H,
                    ..ask("db01", "deploy")
                },
                0
            ),
            "until"
        );
        assert_eq!(field(ask("db01", "deploy"), 16 * H), "until");
        assert_eq!(
            field(
                Ask {
                    ends_at: 10 * H + MAX_SECONDS + 1,
                    ..ask("db01", "deploy")
                },
                0
            ),
            "until"
        );
        assert_eq!(
            field(ask("db01", "deploy"), 10 * H - MAX_START_AHEAD_SECONDS - 1),
            "from"
        );
        let many = (0..=MAX_NAMES)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(field(ask(&many, "deploy"), 0), "targets");
    }

    #[test]
    fn the_link_is_redeemed_once_and_sessions_open_only_in_the_window_and_the_scope() {
        let mut inv = invite(&ask("db01,web02", "deploy"), 9 * H).unwrap();
        assert_eq!(inv.status(9 * H), Status::Upcoming);
        // Enrolling ahead of the window is fine; a session is not.
        assert_eq!(inv.redeemable(9 * H), Ok(()));
        assert_eq!(
            inv.session_may("db01", "deploy", 11 * H),
            Err(Refusal::NotRedeemed)
        );
        inv.redeemed = true;
        assert_eq!(inv.redeemable(9 * H), Err(Refusal::AlreadyRedeemed));
        assert_eq!(
            inv.session_may("db01", "deploy", 9 * H),
            Err(Refusal::NotYet)
        );
        assert_eq!(inv.status(11 * H), Status::Open);
        assert_eq!(inv.session_may("db01", "deploy", 11 * H), Ok(()));
        assert_eq!(inv.session_may("web02", "deploy", 11 * H), Ok(()));
        assert_eq!(
            inv.session_may("db02", "deploy", 11 * H),
            Err(Refusal::NotCovered)
        );
        assert_eq!(
            inv.session_may("db01", "root", 11 * H),
            Err(Refusal::NotCovered)
        );
        assert_eq!(
            inv.session_may("db01", "deploy", 15 * H),
            Err(Refusal::Expired)
        );
        assert_eq!(inv.status(15 * H), Status::Expired);
    }

    #[test]
    fn a_revoked_invitation_refuses_everything_at_once() {
        let mut inv = invite(&ask("db01", "deploy"), 9 * H).unwrap();
        assert_eq!(inv.status(11 * H), Status::Sent);
        inv.revoke().unwrap();
        assert_eq!(inv.revoke(), Err(Refusal::Revoked));
        assert_eq!(inv.status(11 * H), Status::Revoked);
        assert_eq!(inv.redeemable(11 * H), Err(Refusal::Revoked));
        inv.redeemed = true;
        assert_eq!(
            inv.session_may("db01", "deploy", 11 * H),
            Err(Refusal::Revoked)
        );
        assert_eq!(inv.usable(11 * H), Err(Refusal::Revoked));
    }

    #[test]
    fn a_mailed_code_lasts_ten_minutes_and_three_wrong_tries() {
        let sent = 100;
        let ends = sent + CODE_SECONDS;
        assert_eq!(code_triable(ends, 0, sent), Ok(()));
        assert_eq!(code_triable(ends, CODE_TRIES - 1, ends - 1), Ok(()));
        assert_eq!(code_triable(ends, 0, ends), Err(CodeRefusal::Expired));
        assert_eq!(
            code_triable(ends, CODE_TRIES, sent),
            Err(CodeRefusal::Spent)
        );
    }

    #[test]
    fn an_expired_link_cannot_be_redeemed() {
        let inv = invite(&ask("db01", "deploy"), 9 * H).unwrap();
        assert_eq!(inv.redeemable(15 * H), Err(Refusal::Expired));
    }
}
