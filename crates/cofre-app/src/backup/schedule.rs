//! Backup schedules: `every 30m`, `every 1h`, `every 2d`, `daily 03:00` (UTC) and `manual`.
//! Pure: the scheduler asks when a job is next due, given when it last started.

use time::{Duration, OffsetDateTime, Time};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Only when someone runs it (or, for `credentials`, after a break-glass file is written).
    Manual,
    Every(Duration),
    /// Once a day at this UTC time.
    Daily(Time),
}

const EXAMPLES: &str = "use `every 30m`, `every 1h`, `every 2d`, `daily 03:00` (UTC) or `manual`";

impl Schedule {
    /// Parses a schedule; the error says what is wrong and what would be right.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["manual"] => Ok(Schedule::Manual),
            ["every", amount] => parse_interval(amount).map(Schedule::Every),
            ["daily", at] => parse_time(at).map(Schedule::Daily),
            [] => Err(format!("is empty; {EXAMPLES}")),
            _ => Err(format!("`{text}` is not a schedule; {EXAMPLES}")),
        }
    }

    /// When a job that last started at `last` (or was created then) is due next.
    pub fn next_after(&self, last: OffsetDateTime) -> Option<OffsetDateTime> {
        match *self {
            Schedule::Manual => None,
            Schedule::Every(d) => Some(last + d),
            Schedule::Daily(at) => {
                let last = last.to_offset(time::UtcOffset::UTC);
                let today = last.replace_time(at);
                Some(if today > last {
                    today
                } else {
                    today + Duration::days(1)
                })
            }
        }
    }
}

fn parse_interval(amount: &str) -> Result<Duration, String> {
    let split = amount
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(amount.len());
    let (digits, unit) = amount.split_at(split);
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("`every {amount}`: the interval needs a number, e.g. `every 1h`"))?;
    let per = match unit {
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`every {amount}`: the unit must be m (minutes), h (hours) or d (days)"
            ))
        }
    };
    let seconds = n.saturating_mul(per);
    if !(60..=31 * 86_400).contains(&seconds) {
        return Err(format!(
            "`every {amount}`: must be between 1 minute and 31 days"
        ));
    }
    Ok(Duration::seconds(seconds))
}

fn parse_time(at: &str) -> Result<Time, String> {
    let bad = || format!("`daily {at}`: the time must be HH:MM (24-hour, UTC), e.g. `daily 03:00`");
    let (h, m) = at.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u8 = h.parse().map_err(|_| bad())?;
    let m: u8 = m.parse().map_err(|_| bad())?;
    Time::from_hms(h, m, 0).map_err(|_| bad())
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
        assert_eq!(
            Schedule::parse("daily 03:00"),
            Ok(Schedule::Daily(Time::from_hms(3, 0, 0).unwrap()))
        );
        assert_eq!(Schedule::parse("manual"), Ok(Schedule::Manual));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (text, needle) in [
            ("every 1y", "unit must be"),
            ("every h", "needs a number"),
            ("every 0m", "between 1 minute"),
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
        let t = datetime!(2026-01-10 02:00 UTC);
        let daily = Schedule::parse("daily 03:00").unwrap();
        assert_eq!(daily.next_after(t), Some(datetime!(2026-01-10 03:00 UTC)));
        assert_eq!(
            daily.next_after(datetime!(2026-01-10 03:00 UTC)),
            Some(datetime!(2026-01-11 03:00 UTC))
        );
        let hourly = Schedule::parse("every 1h").unwrap();
        assert_eq!(hourly.next_after(t), Some(datetime!(2026-01-10 03:00 UTC)));
        assert_eq!(Schedule::Manual.next_after(t), None);
    }
}
