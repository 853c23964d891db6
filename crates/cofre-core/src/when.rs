//! One grammar for time, shared by policies, grants, backup and snapshot schedules (and, next,
//! maintenance windows): durations (`30s`, `15m`, `2h`, `7d`, `1h30m`), times of day (`HH:MM`,
//! 24-hour), and one notion of the instance's time zone ([`Zone`]: an IANA name such as
//! `Europe/Lisbon`, `UTC`, or a fixed offset `+01:00`), in which every "at 03:00" and "08:00-20:00"
//! is read, daylight-saving changes included.
//!
//! Pure: the zone rules are the tz database bundled into the binary (jiff's `tzdb-bundle-always`),
//! so reading a zone name does no I/O and gives the same answer on every machine; every moment is
//! an argument (Unix seconds), never the clock.

use crate::FieldError;
use jiff::civil::{DateTime, Time};
use jiff::tz::{Offset, TimeZone};
use jiff::Timestamp;

/// A duration such as `30s`, `15m`, `2h`, `7d` or `1h30m`, in seconds (more than zero).
pub fn parse_duration(field: &str, s: &str) -> Result<i64, FieldError> {
    let bad = || {
        FieldError::new(
            field,
            format!("{s:?} is not a duration (e.g. 30s, 15m, 2h, 1h30m, 7d)"),
        )
    };
    let text = s.trim();
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: i64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        let n: i64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !number.is_empty() || total <= 0 {
        return Err(bad());
    }
    Ok(total)
}

/// A time of day, `HH:MM` (24-hour, two digits each), as minutes after midnight. `24:00` is
/// accepted only where `end_of_day` is (the end of a range of hours).
pub fn parse_time_of_day(field: &str, s: &str, end_of_day: bool) -> Result<u16, FieldError> {
    let bad = || {
        FieldError::new(
            field,
            format!("{s:?}: expected a time HH:MM (24-hour), e.g. 03:00 or 20:30"),
        )
    };
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let ok = (h < 24 && m < 60) || (end_of_day && h == 24 && m == 0);
    if !ok {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// `HH:MM` of minutes after midnight.
pub fn time_of_day_text(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// The instance's time zone (`[instance] time_zone`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl Default for Zone {
    fn default() -> Self {
        Zone::utc()
    }
}

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            tz: TimeZone::UTC,
        }
    }

    /// `Europe/Lisbon` (any IANA name), `UTC`, or a fixed offset `+01:00` / `-05:30` (no
    /// daylight saving: prefer a name where the place has it).
    pub fn parse(field: &str, s: &str) -> Result<Zone, FieldError> {
        let name = s.trim();
        if name.starts_with(['+', '-']) {
            return fixed_offset(name)
                .map(|tz| Zone {
                    name: name.to_owned(),
                    tz,
                })
                .ok_or_else(|| {
                    FieldError::new(
                        field,
                        format!("{s:?}: expected an offset like +01:00 or -05:30"),
                    )
                });
        }
        if name.eq_ignore_ascii_case("utc") {
            return Ok(Zone::utc());
        }
        let tz = TimeZone::get(name).map_err(|_| {
            FieldError::new(
                field,
                format!("{s:?} is not a time zone: use a tz database name (e.g. Europe/Lisbon, America/New_York), UTC, or an offset like +01:00"),
            )
        })?;
        Ok(Zone {
            name: tz.iana_name().unwrap_or(name).to_owned(),
            tz,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The wall-clock date and time here at `unix` (seconds).
    pub fn local(&self, unix: i64) -> time::PrimitiveDateTime {
        let ts = Timestamp::from_second(unix).unwrap_or(Timestamp::UNIX_EPOCH);
        civil_to_time(self.tz.to_datetime(ts))
    }

    /// The first moment strictly after `after` (Unix seconds) at which the clock here shows
    /// `minutes` after midnight. On a day that skips that time (spring forward) it is as long
    /// after the jump as the time was after the skipped hour began (a skipped 01:30 comes at
    /// 02:30), so it still happens that day; on a day that shows it twice (fall back), the first
    /// only.
    pub fn next_at(&self, after: i64, minutes: u16) -> i64 {
        let ts = Timestamp::from_second(after).unwrap_or(Timestamp::UNIX_EPOCH);
        let today = self.tz.to_datetime(ts).date();
        let at =
            Time::new((minutes / 60) as i8, (minutes % 60) as i8, 0, 0).unwrap_or(Time::midnight());
        // Two days ahead is always enough: at most one day's occurrence lies at or before `after`.
        let mut day = today;
        for _ in 0..3 {
            if let Ok(t) = self.tz.to_timestamp(day.to_datetime(at)) {
                if t.as_second() > after {
                    return t.as_second();
                }
            }
            match day.tomorrow() {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
        after.saturating_add(86_400)
    }
}

fn fixed_offset(s: &str) -> Option<TimeZone> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1i32, s.get(1..)?),
        b'-' => (-1i32, s.get(1..)?),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if h > 18 || m > 59 {
        return None;
    }
    Offset::from_seconds(sign * (h * 3600 + m * 60))
        .ok()
        .map(TimeZone::fixed)
}

fn civil_to_time(dt: DateTime) -> time::PrimitiveDateTime {
    let date = time::Month::try_from(dt.month() as u8)
        .ok()
        .and_then(|m| time::Date::from_calendar_date(i32::from(dt.year()), m, dt.day() as u8).ok())
        .unwrap_or(time::Date::MIN);
    let t = time::Time::from_hms(dt.hour() as u8, dt.minute() as u8, dt.second() as u8)
        .unwrap_or(time::Time::MIDNIGHT);
    time::PrimitiveDateTime::new(date, t)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn unix(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_second()
    }

    #[test]
    fn durations_one_grammar() {
        for (s, secs) in [
            ("30s", 30),
            ("15m", 900),
            ("2h", 7200),
            ("7d", 604_800),
            ("1h30m", 5400),
            (" 90m ", 5400),
        ] {
            assert_eq!(parse_duration("d", s).unwrap(), secs, "{s}");
        }
        for bad in [
            "",
            "0m",
            "5",
            "m",
            "1y",
            "1.5h",
            "-1h",
            "99999999999999999999d",
        ] {
            let e = parse_duration("duration", bad).unwrap_err();
            assert_eq!(e.field, "duration");
            assert!(e.reason.contains("e.g. 30s"), "{}", e.reason);
        }
    }

    #[test]
    fn times_of_day() {
        assert_eq!(parse_time_of_day("t", "03:00", false).unwrap(), 180);
        assert_eq!(parse_time_of_day("t", "23:59", false).unwrap(), 1439);
        assert_eq!(parse_time_of_day("t", "24:00", true).unwrap(), 1440);
        for bad in ["24:00", "3:00", "03:60", "0300", "ab:cd", "+1:00", ""] {
            assert_eq!(
                parse_time_of_day("time", bad, false).unwrap_err().field,
                "time",
                "{bad}"
            );
        }
        assert_eq!(time_of_day_text(1230), "20:30");
    }

    #[test]
    fn zones_by_name_utc_and_offset() {
        assert_eq!(
            Zone::parse("z", "Europe/Lisbon").unwrap().name(),
            "Europe/Lisbon"
        );
        assert_eq!(Zone::parse("z", "utc").unwrap(), Zone::utc());
        let plus = Zone::parse("z", "+05:30").unwrap();
        assert_eq!(plus.local(0).hour(), 5);
        assert_eq!(plus.local(0).minute(), 30);
        for bad in ["Mars/Olympus", "+25:00", "+1", "", "Europe/"] {
            let e = Zone::parse("instance.time_zone", bad).unwrap_err();
            assert_eq!(e.field, "instance.time_zone", "{bad}");
        }
    }

    #[test]
    fn local_time_follows_daylight_saving() {
        let lisbon = Zone::parse("z", "Europe/Lisbon").unwrap();
        // Winter: UTC+0; summer (from 2026-03-29 01:00 UTC): UTC+1.
        assert_eq!(lisbon.local(unix("2026-03-28T07:30:00Z")).hour(), 7);
        assert_eq!(lisbon.local(unix("2026-03-29T07:30:00Z")).hour(), 8);
        assert_eq!(lisbon.local(unix("2026-10-25T07:30:00Z")).hour(), 7);
    }

    #[test]
    fn next_at_is_dst_correct() {
        let lisbon = Zone::parse("z", "Europe/Lisbon").unwrap();
        // 03:00 local the day after summer time began is 02:00 UTC; the day before, 03:00 UTC.
        assert_eq!(
            lisbon.next_at(unix("2026-03-28T00:00:00Z"), 180),
            unix("2026-03-28T03:00:00Z")
        );
        assert_eq!(
            lisbon.next_at(unix("2026-03-28T03:00:00Z"), 180),
            unix("2026-03-29T02:00:00Z")
        );
        // 01:30 does not exist on 2026-03-29 (01:00 jumps to 02:00): it comes at 02:30 summer
        // time (01:30 UTC), as late as if the clock had not jumped, and still that day.
        assert_eq!(
            lisbon.next_at(unix("2026-03-29T00:00:00Z"), 90),
            unix("2026-03-29T01:30:00Z")
        );
        // 01:30 happens twice on 2026-10-25: the first one (still summer time, 00:30 UTC), once.
        assert_eq!(
            lisbon.next_at(unix("2026-10-25T00:00:00Z"), 90),
            unix("2026-10-25T00:30:00Z")
        );
        assert_eq!(
            lisbon.next_at(unix("2026-10-25T00:30:00Z"), 90),
            unix("2026-10-26T01:30:00Z")
        );
        assert_eq!(
            Zone::utc().next_at(unix("2026-01-01T03:00:00Z"), 180),
            unix("2026-01-02T03:00:00Z")
        );
    }
}
