//! Cron schedules as a CronJob's `spec.schedule` spells them, and the times they fire.
//!
//! Owns parsing (the standard five fields — minute, hour, day of month, month, day of
//! week — with `*`, `?`, ranges `a-b`, steps `/n`, lists `a,b`, month and weekday names,
//! and the `@yearly`/`@annually`/`@monthly`/`@weekly`/`@daily`/`@midnight`/`@hourly`
//! macros) and [`Schedule::next_after`], the next firing time in a time zone.
//!
//! The semantics are those of robfig/cron v3's standard parser, which kube-controller-
//! manager uses: day of week is 0–6 (Sunday = 0); when both day fields are restricted a day
//! matching either fires, when one is `*` both must match; `a/n` means `a-max/n`; `*/n`
//! with `n > 1` counts as restricted. `@every`, seconds fields and `TZ=`/`CRON_TZ=` prefixes
//! are refused (kube-apiserver refuses the prefixes too; the zone is `spec.timeZone`).
//!
//! Times are searched field by field in *absolute* time, checking each candidate's civil
//! fields in the zone (robfig's algorithm), so daylight saving time behaves as in kube: a
//! civil time skipped by a spring-forward transition never fires that day, and one repeated
//! by a fall-back transition fires at each of its two instants.
//!
//! Why our own parser: the crates.io parsers (`cron`, `croner`) compute times with chrono
//! and would bring a second date-time library and time-zone database next to `jiff`, which
//! this crate already uses; the grammar above is ~150 lines with the table tests below.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

/// How many years ahead [`Schedule::next_after`] searches before deciding a schedule never
/// fires (e.g. `0 0 30 2 *`); robfig/cron gives up after five years too.
pub const CRON_SEARCH_YEARS_MAX: i16 = 5;

/// Why a schedule string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule {schedule:?}: {reason}")]
pub struct ParseError {
    pub schedule: String,
    pub reason: String,
}

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    /// Bits 1..=31.
    days_of_month: u64,
    /// Bits 1..=12.
    months: u64,
    /// Bits 0..=6, Sunday = 0.
    days_of_week: u64,
    /// The day-of-month field was `*` or `?` (robfig's star bit).
    dom_star: bool,
    dow_star: bool,
}

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    what: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The first name stands for this value.
    names_from: u32,
}

const FIELDS: [Field; 5] = [
    Field {
        what: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_from: 0,
    },
    Field {
        what: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_from: 0,
    },
    Field {
        what: "day of month",
        min: 1,
        max: 31,
        names: &[],
        names_from: 0,
    },
    Field {
        what: "month",
        min: 1,
        max: 12,
        names: &MONTH_NAMES,
        names_from: 1,
    },
    Field {
        what: "day of week",
        min: 0,
        max: 6,
        names: &DAY_NAMES,
        names_from: 0,
    },
];

impl Field {
    fn value(&self, s: &str) -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            return Ok(self.names_from + u32::try_from(i).unwrap_or(0));
        }
        let v: u32 = s
            .parse()
            .map_err(|_| format!("{} {s:?} is not a number", self.what))?;
        if v < self.min || v > self.max {
            return Err(format!(
                "{} {v} is out of range {}-{}",
                self.what, self.min, self.max
            ));
        }
        Ok(v)
    }

    /// The bits of one comma-separated field, and whether it was a bare `*`/`?`.
    fn parse(&self, expr: &str) -> Result<(u64, bool), String> {
        let mut bits = 0u64;
        let mut star = false;
        for item in expr.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s
                        .parse()
                        .map_err(|_| format!("step {s:?} in the {} field", self.what))?;
                    if step == 0 {
                        return Err(format!("step 0 in the {} field", self.what));
                    }
                    (r, Some(step))
                }
                None => (item, None),
            };
            let (start, end, item_star) = if range == "*" || range == "?" {
                (self.min, self.max, true)
            } else if let Some((a, b)) = range.split_once('-') {
                (self.value(a)?, self.value(b)?, false)
            } else {
                let v = self.value(range)?;
                // `a/n` runs from a to the field's maximum.
                (v, if step.is_some() { self.max } else { v }, false)
            };
            if start > end {
                return Err(format!("{} range {start}-{end} runs backwards", self.what));
            }
            let step = step.unwrap_or(1);
            star |= item_star && step == 1;
            let mut v = start;
            while v <= end {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok((bits, star))
    }
}

impl Schedule {
    /// Parses a CronJob schedule.
    ///
    /// # Errors
    /// [`ParseError`] naming the field and value at fault.
    pub fn parse(schedule: &str) -> Result<Schedule, ParseError> {
        let err = |reason: String| ParseError {
            schedule: schedule.to_string(),
            reason,
        };
        let s = schedule.trim();
        if s.starts_with("TZ=") || s.starts_with("CRON_TZ=") {
            return Err(err(
                "TZ and CRON_TZ prefixes are not supported; use spec.timeZone".into(),
            ));
        }
        let expanded = match s.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@hourly" => "0 * * * *".to_string(),
            other if other.starts_with('@') => {
                return Err(err(format!("unsupported descriptor {s:?}")));
            }
            _ => s.to_string(),
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(err(format!(
                "expected exactly 5 fields, found {}",
                parts.len()
            )));
        }
        let mut out = [(0u64, false); 5];
        for (i, (field, expr)) in FIELDS.iter().zip(&parts).enumerate() {
            out[i] = field.parse(expr).map_err(err)?;
        }
        Ok(Schedule {
            minutes: out[0].0,
            hours: out[1].0,
            days_of_month: out[2].0,
            months: out[3].0,
            days_of_week: out[4].0,
            dom_star: out[2].1,
            dow_star: out[4].1,
        })
    }

    fn day_matches(&self, z: &Zoned) -> bool {
        let dom = self.days_of_month & (1 << z.day()) != 0;
        let dow = self.days_of_week & (1 << z.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first time strictly after `after` at which the schedule fires in `tz`, or `None`
    /// when it does not fire within [`CRON_SEARCH_YEARS_MAX`] years.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        // The next whole minute after `after`.
        let secs = after.as_second().div_euclid(60) * 60 + 60;
        let mut z = Timestamp::from_second(secs).ok()?.to_zoned(tz.clone());
        let last_year = z.year().saturating_add(CRON_SEARCH_YEARS_MAX);
        loop {
            if z.year() > last_year {
                return None;
            }
            if self.months & (1 << z.month()) == 0 {
                let first = z.date().first_of_month();
                let next = first.checked_add(1.month()).ok()?;
                z = start_of_day(next, tz)?;
                continue;
            }
            if !self.day_matches(&z) {
                z = start_of_day(z.date().tomorrow().ok()?, tz)?;
                continue;
            }
            if self.hours & (1 << z.hour()) == 0 {
                let to_next_hour = 60 - i64::from(z.minute());
                z = z.checked_add(to_next_hour.minutes()).ok()?;
                continue;
            }
            if self.minutes & (1 << z.minute()) == 0 {
                z = z.checked_add(1.minute()).ok()?;
                continue;
            }
            return Some(z.timestamp());
        }
    }
}

/// The first instant of `date` in `tz` (later than midnight when a transition skips it).
fn start_of_day(date: Date, tz: &TimeZone) -> Option<Zoned> {
    date.to_zoned(tz.clone()).ok()
}

/// The zone a CronJob's times are computed in: `spec.timeZone` (an IANA name from the
/// system's tz database), else UTC (kube uses kube-controller-manager's local zone, which
/// is UTC in nearly every deployment; fixing it keeps Job names independent of the host).
///
/// # Errors
/// The zone name when the database does not know it.
pub fn zone(name: Option<&str>) -> Result<TimeZone, String> {
    match name {
        None | Some("") => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(n).map_err(|e| format!("unknown time zone {n:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        match s.parse() {
            Ok(t) => t,
            Err(e) => panic!("bad test timestamp {s}: {e}"),
        }
    }

    fn next(schedule: &str, after: &str, tz: &str) -> Option<String> {
        let s = match Schedule::parse(schedule) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let tz = zone(Some(tz)).unwrap_or(TimeZone::UTC);
        s.next_after(ts(after), &tz).map(|t| t.to_string())
    }

    #[test]
    fn schedules_fire_at_the_next_matching_minute() {
        // (schedule, after, zone, expected next firing)
        let cases = [
            (
                "*/1 * * * *",
                "2026-03-01T10:00:00Z",
                "UTC",
                Some("2026-03-01T10:01:00Z"),
            ),
            (
                "* * * * *",
                "2026-03-01T10:00:30Z",
                "UTC",
                Some("2026-03-01T10:01:00Z"),
            ),
            (
                "*/15 * * * *",
                "2026-03-01T10:07:00Z",
                "UTC",
                Some("2026-03-01T10:15:00Z"),
            ),
            (
                "5/20 * * * *",
                "2026-03-01T10:46:00Z",
                "UTC",
                Some("2026-03-01T11:05:00Z"),
            ),
            (
                "0 9-17/4 * * *",
                "2026-03-01T13:00:00Z",
                "UTC",
                Some("2026-03-01T17:00:00Z"),
            ),
            (
                "30 2 * * MON-FRI",
                "2026-03-06T03:00:00Z",
                "UTC",
                Some("2026-03-09T02:30:00Z"),
            ),
            (
                "0 0 1 JAN,jul *",
                "2026-03-01T00:00:00Z",
                "UTC",
                Some("2026-07-01T00:00:00Z"),
            ),
            (
                "@hourly",
                "2026-03-01T10:00:00Z",
                "UTC",
                Some("2026-03-01T11:00:00Z"),
            ),
            (
                "@daily",
                "2026-03-01T10:00:00Z",
                "UTC",
                Some("2026-03-02T00:00:00Z"),
            ),
            (
                "@weekly",
                "2026-03-02T10:00:00Z",
                "UTC",
                Some("2026-03-08T00:00:00Z"),
            ),
            (
                "@monthly",
                "2026-03-02T10:00:00Z",
                "UTC",
                Some("2026-04-01T00:00:00Z"),
            ),
            (
                "@yearly",
                "2026-03-02T10:00:00Z",
                "UTC",
                Some("2027-01-01T00:00:00Z"),
            ),
            // Both day fields restricted: either matches (the 13th, or a Friday).
            (
                "0 0 13 * 5",
                "2026-03-01T00:00:00Z",
                "UTC",
                Some("2026-03-06T00:00:00Z"),
            ),
            // One of them `*`: both must match (Friday the 13th).
            (
                "0 0 13 * *",
                "2026-03-01T00:00:00Z",
                "UTC",
                Some("2026-03-13T00:00:00Z"),
            ),
            (
                "0 0 29 2 *",
                "2026-03-01T00:00:00Z",
                "UTC",
                Some("2028-02-29T00:00:00Z"),
            ),
            ("0 0 30 2 *", "2026-03-01T00:00:00Z", "UTC", None),
            // A zone: 09:00 in Berlin (UTC+1 in winter).
            (
                "0 9 * * *",
                "2026-01-10T00:00:00Z",
                "Europe/Berlin",
                Some("2026-01-10T08:00:00Z"),
            ),
        ];
        for (schedule, after, tz, want) in cases {
            assert_eq!(
                next(schedule, after, tz).as_deref(),
                want,
                "{schedule} after {after} in {tz}"
            );
        }
    }

    #[test]
    fn daylight_saving_skips_the_missing_hour_and_repeats_the_doubled_one() {
        // New York springs forward on 2026-03-08 at 02:00 EST → 03:00 EDT: 02:30 does not
        // exist that day, so a 02:30 job next runs on the 9th (at 06:30 UTC, EDT).
        assert_eq!(
            next("30 2 * * *", "2026-03-08T00:00:00Z", "America/New_York").as_deref(),
            Some("2026-03-09T06:30:00Z")
        );
        // 03:30 exists: 07:30 UTC (EDT, UTC-4).
        assert_eq!(
            next("30 3 * * *", "2026-03-08T05:00:00Z", "America/New_York").as_deref(),
            Some("2026-03-08T07:30:00Z")
        );
        // Fall back on 2026-11-01 at 02:00 EDT → 01:00 EST: 01:30 happens twice.
        let first = next("30 1 * * *", "2026-11-01T04:00:00Z", "America/New_York");
        assert_eq!(first.as_deref(), Some("2026-11-01T05:30:00Z"));
        let second = next("30 1 * * *", "2026-11-01T05:30:00Z", "America/New_York");
        assert_eq!(second.as_deref(), Some("2026-11-01T06:30:00Z"));
        // An hourly schedule keeps firing every absolute hour through the repeat.
        assert_eq!(
            next("0 * * * *", "2026-11-01T05:00:00Z", "America/New_York").as_deref(),
            Some("2026-11-01T06:00:00Z")
        );
    }

    #[test]
    fn bad_schedules_are_refused_with_the_field_at_fault() {
        let cases = [
            ("", "expected exactly 5 fields"),
            ("* * * *", "expected exactly 5 fields"),
            ("* * * * * *", "expected exactly 5 fields"),
            ("60 * * * *", "minute 60 is out of range"),
            ("* 24 * * *", "hour 24 is out of range"),
            ("* * 0 * *", "day of month 0 is out of range"),
            ("* * * 13 *", "month 13 is out of range"),
            ("* * * * 7", "day of week 7 is out of range"),
            ("* * * FOO *", "month \"FOO\" is not a number"),
            ("*/0 * * * *", "step 0"),
            ("5-1 * * * *", "runs backwards"),
            ("@every 5m", "unsupported descriptor"),
            ("TZ=UTC * * * * *", "TZ and CRON_TZ prefixes"),
            ("CRON_TZ=Europe/Berlin 0 9 * * *", "TZ and CRON_TZ prefixes"),
        ];
        for (schedule, want) in cases {
            match Schedule::parse(schedule) {
                Ok(s) => panic!("{schedule:?} parsed as {s:?}"),
                Err(e) => assert!(e.to_string().contains(want), "{schedule:?}: {e}"),
            }
        }
    }

    #[test]
    fn an_unknown_time_zone_is_an_error_not_a_panic() {
        assert!(zone(Some("Mars/Olympus_Mons")).is_err());
        assert_eq!(zone(None).ok(), Some(TimeZone::UTC));
    }
}
