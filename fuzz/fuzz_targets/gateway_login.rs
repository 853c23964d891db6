//! The gateway login parser and the name validators behind it, and the policy grammar a request
//! carries (days, hours, dates, durations, approval levels, target selectors).
//!
//! Beyond "never panics": a login the parser accepts must come back the same when written in
//! either form (`user+account+target` and `user:account@target`), so the two spellings can never
//! name different things.
#![no_main]

use cofre_core::names::{
    check_account, check_host, check_identifier, check_text, parse_gateway_login,
};
use cofre_core::policy::{parse_duration, parse_duration_minutes, TargetSelector, Window};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();

    if let Ok(login) = parse_gateway_login(s) {
        for form in [
            format!("{}+{}+{}", login.user, login.account, login.target),
            format!("{}:{}@{}", login.user, login.account, login.target),
        ] {
            let again = parse_gateway_login(&form);
            assert_eq!(
                again.as_ref().ok(),
                Some(&login),
                "{form:?} parses differently"
            );
        }
        assert!(check_identifier("user", &login.user).is_ok());
        assert!(check_account("account", &login.account).is_ok());
        assert!(check_identifier("target", &login.target).is_ok());
    }

    let _ = check_identifier("name", s);
    let _ = check_account("account", s);
    let _ = check_host("host", s);
    let _ = check_text("reason", s, 500);

    let _ = TargetSelector::parse("targets", s);
    if let Ok(mask) = Window::parse_days("days", s) {
        let text = Window::days_text(mask);
        assert_eq!(
            Window::parse_days("days", &text).ok(),
            Some(mask),
            "{text:?}"
        );
    }
    if let Ok(hours) = Window::parse_hours("hours", s) {
        let text = Window::hours_text(hours);
        assert_eq!(
            Window::parse_hours("hours", &text).ok(),
            Some(hours),
            "{text:?}"
        );
    }
    let _ = Window::parse_date("from", s);
    let _ = parse_duration("duration", s);
    let _ = parse_duration_minutes("max_duration", s);
    let _ = cofre_core::approval::parse_levels("levels", s);
});
