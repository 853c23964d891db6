//! Validation of the names users type: user, group, target, account, policy and tag names, and hosts.
//!
//! Names end up in SSH usernames (`alice+root+db01`, `alice:root@db01`), URLs and audit entries, so
//! they are kept to a small alphabet: `+`, `:` and `@` never appear in a user, account or target
//! name, which keeps the gateway's login grammar unambiguous.

use crate::FieldError;

pub const MAX_NAME_LEN: usize = 64;
pub const MAX_HOST_LEN: usize = 253;

/// Lowercase identifiers: users, groups, targets, policies, tags. `[a-z0-9][a-z0-9._-]*`, at most 64.
pub fn check_identifier(field: &str, value: &str) -> Result<(), FieldError> {
    check_len(field, value, MAX_NAME_LEN)?;
    let mut chars = value.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !first_ok {
        return Err(FieldError::new(
            field,
            "must start with a lowercase letter or a digit",
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(FieldError::new(
            field,
            format!("may contain only a-z, 0-9, '.', '_' and '-' (found {bad:?})"),
        ));
    }
    Ok(())
}

/// Accounts on a target (`root`, `Administrator`, `svc$backup`): case is kept, `:`/`@`/space are not allowed.
pub fn check_account(field: &str, value: &str) -> Result<(), FieldError> {
    check_len(field, value, MAX_NAME_LEN)?;
    if value.starts_with('-') {
        return Err(FieldError::new(field, "must not start with '-'"));
    }
    // Names end up in paths (recordings, break-glass listings, URLs): never a directory step.
    if value == "." || value == ".." {
        return Err(FieldError::new(field, "must not be '.' or '..'"));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '$')))
    {
        return Err(FieldError::new(
            field,
            format!("may contain only letters, digits, '.', '_', '-' and '$' (found {bad:?})"),
        ));
    }
    Ok(())
}

/// A DNS name or an IPv4/IPv6 address literal.
pub fn check_host(field: &str, value: &str) -> Result<(), FieldError> {
    check_len(field, value, MAX_HOST_LEN)?;
    if value.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    for label in value.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(FieldError::new(
                field,
                "must be an IP address or a DNS name (labels of 1 to 63 characters)",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(FieldError::new(
                field,
                "DNS labels must not start or end with '-'",
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(FieldError::new(
                field,
                format!("must be an IP address or a DNS name (found {bad:?})"),
            ));
        }
    }
    Ok(())
}

/// Free text that is stored and shown (reasons, comments): bounded, printable, one paragraph.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    if let Some(c) = value.chars().find(|c| is_invisible_format(*c)) {
        return Err(FieldError::new(
            field,
            format!(
                "must not contain invisible formatting characters (found U+{:04X}): they can make \
                 a reason read differently from what was stored",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// Bidirectional overrides and isolates, zero-width characters and the byte-order mark: text
/// that looks like one thing on screen and is another in the audit trail ("Trojan Source").
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}'   // zero-width space/joiners, LRM, RLM
        | '\u{202A}'..='\u{202E}' // embeddings and overrides
        | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
        | '\u{2066}'..='\u{2069}' // isolates
        | '\u{FEFF}'               // zero-width no-break space
        | '\u{061C}'               // Arabic letter mark
        | '\u{180E}'               // Mongolian vowel separator
    )
}

/// The three names of a gateway login: which Cofre user, as which account, on which target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayLogin {
    pub user: String,
    pub account: String,
    pub target: String,
}

/// The longest SSH login name the gateway reads (three names and their separators, with room).
pub const MAX_LOGIN_LEN: usize = 200;

/// Parses a gateway login: `alice+root+db01`, or `alice:root@db01`.
///
/// `+` is the form OpenSSH's scp, sftp and rsync take as written: they split `user@host:path` at
/// the first `:`, so `alice:root@db01@gw:/tmp` cannot reach them whole. The error's `reason` says
/// what is wrong; the caller adds how to log in (it knows the gateway's address).
pub fn parse_gateway_login(s: &str) -> Result<GatewayLogin, FieldError> {
    let bad = |why: String| FieldError::new("username", why);
    if s.len() > MAX_LOGIN_LEN {
        return Err(bad(format!(
            "the login name is too long (at most {MAX_LOGIN_LEN} characters)"
        )));
    }
    let (user, account, target) = if let Some((user, rest)) = s.split_once(':') {
        let (account, target) = rest
            .rsplit_once('@')
            .ok_or_else(|| bad("no '@TARGET' after the account".into()))?;
        (user, account, target)
    } else {
        let mut parts = s.split('+');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(user), Some(account), Some(target), None) => (user, account, target),
            _ => {
                return Err(bad(
                    "expected three names: the Cofre user, the account and the target".into(),
                ))
            }
        }
    };
    let name = |field: &str, r: Result<(), FieldError>| {
        r.map_err(|e| bad(format!("the {field} name {}", e.reason)))
    };
    name("user", check_identifier("user", user))?;
    name("account", check_account("account", account))?;
    name("target", check_identifier("target", target))?;
    Ok(GatewayLogin {
        user: user.to_owned(),
        account: account.to_owned(),
        target: target.to_owned(),
    })
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["alice", "db01", "ops-team", "a.b_c", "0x"] {
            check_identifier("name", ok).unwrap();
        }
        for bad in ["", "Alice", "-x", "a b", "a:b", "a@b", "é", &"a".repeat(65)] {
            let err = check_identifier("name", bad).unwrap_err();
            assert_eq!(err.field, "name");
        }
    }

    #[test]
    fn accounts() {
        for ok in ["root", "Administrator", "svc$backup", "oracle.db"] {
            check_account("account", ok).unwrap();
        }
        for bad in ["", "-root", "ro ot", "root:x", "a@b", ".", ".."] {
            assert!(check_account("account", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        for ok in ["10.0.0.5", "::1", "db01.corp.example", "localhost"] {
            check_host("host", ok).unwrap();
        }
        for bad in ["", "a..b", "-a.b", "a_b.c", "a b", &"a".repeat(254)] {
            assert!(check_host("host", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text() {
        check_text("reason", "INC-42 disk full", 500).unwrap();
        assert!(check_text("reason", "a\u{7}", 500).is_err());
        assert!(check_text("reason", &"x".repeat(501), 500).is_err());
        // "Trojan Source": a right-to-left override makes the stored text read otherwise.
        for sneaky in [
            "INC-1 \u{202E}tpecca",
            "ok\u{200B}",
            "a\u{2066}b\u{2069}",
            "\u{FEFF}x",
        ] {
            let e = check_text("reason", sneaky, 500).unwrap_err();
            assert!(e.reason.contains("invisible"), "{sneaky:?}: {}", e.reason);
        }
        check_text("reason", "über café: 数据库 ремонт", 500).unwrap();
    }

    #[test]
    fn gateway_logins() {
        let alice = GatewayLogin {
            user: "alice".into(),
            account: "root".into(),
            target: "db01".into(),
        };
        assert_eq!(parse_gateway_login("alice:root@db01").unwrap(), alice);
        assert_eq!(parse_gateway_login("alice+root+db01").unwrap(), alice);
        assert_eq!(
            parse_gateway_login("bob+svc$backup+web-02.prod").unwrap(),
            GatewayLogin {
                user: "bob".into(),
                account: "svc$backup".into(),
                target: "web-02.prod".into()
            }
        );
        for bad in [
            "alice",
            "alice:",
            ":root@db01",
            "alice:root",
            "alice:root@",
            "Alice:root@db01",
            "alice+root",
            "alice+root+db01+x",
            "alice++db01",
            "+root+db01",
            "alice+ro ot+db01",
            &format!("alice:{}@db01", "r".repeat(300)),
        ] {
            let e = parse_gateway_login(bad).unwrap_err();
            assert_eq!(e.field, "username", "{bad}");
            assert!(!e.reason.is_empty(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn gateway_login_never_panics_and_round_trips(s in ".*") {
            if let Ok(l) = parse_gateway_login(&s) {
                let plus = format!("{}+{}+{}", l.user, l.account, l.target);
                proptest::prop_assert_eq!(parse_gateway_login(&plus).unwrap(), l);
            }
        }

        #[test]
        fn validators_never_panic(s in ".*") {
            let _ = check_identifier("f", &s);
            let _ = check_account("f", &s);
            let _ = check_host("f", &s);
            let _ = check_text("f", &s, 100);
        }
    }
}
