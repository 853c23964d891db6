//! Backup schedules: `every 30m`, `every 1h`, `every 2d`, `daily 03:00` and `manual`. Intervals
//! are the one duration grammar and `HH:MM` the one time of day (`cofre_core::when`); `daily` is
//! read in the instance's time zone (`[instance] time_zone`), daylight saving included.
//! Pure: the scheduler asks when a job is next due, given when it last started.

use cofre_core::when::{self, Zone};
use time::{Duration, OffsetDateTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Only when someone runs it (or, for `credentials`, after a break-glass file is written).
    Manual,
    Every(Duration),
    /// Once a day when the instance's clock shows this many minutes after midnight.
    Daily(u16),
}

const EXAMPLES: &str =
    "use `every 30m`, `every 1h`, `every 2d`, `daily 03:00` (the instance's time zone) or `manual`";

impl Schedule {
    /// Parses a schedule; the error says what is wrong and what would be right.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["manual"] => Ok(Schedule::Manual),
            ["every", amount] => parse_interval(amount).map(Schedule::Every),
            ["daily", at] => when::parse_time_of_day("schedule", at, false)
                .map(Schedule::Daily)
                .map_err(|e| format!("`daily {at}`: {}", e.reason)),
            [] => Err(format!("is empty; {EXAMPLES}")),
            _ => Err(format!("`{text}` is not a schedule; {EXAMPLES}")),
        }
    }

    /// When a job that last started at `last` (or was created then) is due next; `daily` times
    /// are read in `zone`.
    pub fn next_after(&self, last: OffsetDateTime, zone: &Zone) -> Option<OffsetDateTime> {
        match *self {
            Schedule::Manual => None,
            Schedule::Every(d) => Some(last + d),
            Schedule::Daily(at) => {
                OffsetDateTime::from_unix_timestamp(zone.next_at(last.unix_timestamp(), at)).ok()
            }
        }
    }
}

fn parse_interval(amount: &str) -> Result<Duration, String> {
    // `30min` was accepted before the one grammar; jobs stored with it must keep running.
    let grammar = amount.strip_suffix("min").map(|n| format!("{n}m"));
    let seconds = when::parse_duration("schedule", grammar.as_deref().unwrap_or(amount))
        .map_err(|e| format!("`every {amount}`: {}", e.reason))?;
    if !(60..=31 * 86_400).contains(&seconds) {
        return Err(format!(
            "`every {amount}`: must be between 1 minute and 31 days"
        ));
    }
    Ok(Duration::seconds(seconds))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(
            Schedule::parse("every 1h"),
            Ok(Schedule::Every(Duration::hours(1)))
        );
        assert_eq!(
            Schedule::parse(" every 30m "),
            Ok(Schedule::Every(Duration::minutes(30)))
        );
        assert_eq!(
            Schedule::parse("every 2d"),
            Ok(Schedule::Every(Duration::days(2)))
        );
        assert_eq!(Schedule::parse("daily 03:00"), Ok(Schedule::Daily(180)));
        assert_eq!(Schedule::parse("manual"), Ok(Schedule::Manual));
        assert_eq!(
            Schedule::parse("every 30min"),
            Ok(Schedule::Every(Duration::minutes(30)))
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (text, needle) in [
            ("every 1y", "is not a duration"),
            ("every h", "is not a duration"),
            ("every 0m", "is not a duration"),
            ("every 90d", "between 1 minute"),
            ("daily 3:00", "HH:MM"),
            ("daily 25:00", "HH:MM"),
            ("hourly", "is not a schedule"),
            ("", "is empty"),
        ] {
            let err = Schedule::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn next_run() {
        let utc = Zone::utc();
        let t = datetime!(2026-01-10 02:00 UTC);
        let daily = Schedule::parse("daily 03:00").unwrap();
        assert_eq!(
            daily.next_after(t, &utc),
            Some(datetime!(2026-01-10 03:00 UTC))
        );
        assert_eq!(
            daily.next_after(datetime!(2026-01-10 03:00 UTC), &utc),
            Some(datetime!(2026-01-11 03:00 UTC))
        );
        let hourly = Schedule::parse("every 1h").unwrap();
        assert_eq!(
            hourly.next_after(t, &utc),
            Some(datetime!(2026-01-10 03:00 UTC))
        );
        assert_eq!(Schedule::Manual.next_after(t, &utc), None);
        // In Lisbon, 03:00 is 03:00 UTC in winter and 02:00 UTC from the day summer time begins.
        let lisbon = Zone::parse("time_zone", "Europe/Lisbon").unwrap();
        assert_eq!(
            daily.next_after(datetime!(2026-03-28 03:00 UTC), &lisbon),
            Some(datetime!(2026-03-29 02:00 UTC))
        );
        assert_eq!(
            daily.next_after(datetime!(2026-03-27 03:00 UTC), &lisbon),
            Some(datetime!(2026-03-28 03:00 UTC))
        );
    }
}
