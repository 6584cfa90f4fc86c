//! Cron schedules as Kubernetes CronJobs understand them: five fields and an IANA time zone.
//!
//! CloudNativePG's six-field parser turned "daily" into "hourly" for users who wrote five fields;
//! Lifeboat refuses anything but five fields (or a `@daily`-style macro), both at admission (a
//! pattern in the CRD schema) and here, where the operator also needs the next due time of a
//! DrillSchedule. Parsing is croner's; the extra checks keep to the syntax the CronJob controller
//! accepts (no `L`, `W`, `#` or seconds), so a schedule valid here is valid for the CronJob too.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// Admission-time shape of a schedule (a CEL rule rather than a schema `pattern`, so the refusal
/// says what to write instead of printing a regular expression): a macro or exactly five
/// space-separated fields, with no `TZ=` prefix (time zones go in `timeZone`, as for CronJobs).
pub const SCHEDULE_RULE: &str = "self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9A-Za-z*?,/-]+( +[0-9A-Za-z*?,/-]+){4})$')";
pub const SCHEDULE_MESSAGE: &str = "schedule must be 5 cron fields (minute hour day-of-month month day-of-week), e.g. '0 * * * *', or a macro such as @hourly or @daily; seconds are not supported and the time zone goes in timeZone";

/// Admission-time shape of an IANA time zone name such as `Europe/Paris` or `UTC`.
pub const TIME_ZONE_RULE: &str = "self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$')";
pub const TIME_ZONE_MESSAGE: &str =
    "timeZone must be an IANA time zone name such as UTC or Europe/Paris";

const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

const NAMES: [&str; 19] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC", "SUN",
    "MON", "TUE", "WED", "THU", "FRI", "SAT",
];

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "schedule {0:?} has {1} fields; write exactly 5 (minute hour day-of-month month day-of-week), e.g. \"0 * * * *\" for hourly"
    )]
    FieldCount(String, usize),
    #[error("schedule {0:?} uses {1:?}, which Kubernetes CronJobs do not support")]
    Unsupported(String, String),
    #[error("schedule {0:?} is not a valid cron expression: {1}")]
    Invalid(String, String),
    #[error("schedule {0:?} never fires")]
    NeverFires(String),
    #[error("time zone {0:?} is not a known IANA time zone name (e.g. UTC, Europe/Paris)")]
    UnknownTimeZone(String),
}

/// How far ahead [`CronSchedule::longest_gap`] looks for a BackupPolicy's worst-case RPO: a
/// week covers every weekday pattern, the extra day a week boundary and a DST change.
pub const RPO_HORIZON: SignedDuration = SignedDuration::from_hours(8 * 24);

/// A validated schedule, ready to compute due times.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: TimeZone,
}

impl CronSchedule {
    /// Validates `expr` (five fields or a macro) in time zone `tz` (UTC when absent).
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Self, ScheduleError> {
        let expanded = expand_macro(expr.trim());
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ScheduleError::FieldCount(expr.to_owned(), fields.len()));
        }
        for field in &fields {
            check_field_syntax(expr, field)?;
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(&expanded)
            .map_err(|e| ScheduleError::Invalid(expr.to_owned(), e.to_string()))?;
        let tz = match tz {
            None | Some("") => TimeZone::UTC,
            Some(name) => {
                TimeZone::get(name).map_err(|_| ScheduleError::UnknownTimeZone(name.to_owned()))?
            }
        };
        let schedule = Self { cron, tz };
        // A pattern such as "0 0 31 2 *" parses but never matches.
        schedule
            .next_after(Timestamp::UNIX_EPOCH)
            .ok_or_else(|| ScheduleError::NeverFires(expr.to_owned()))?;
        Ok(schedule)
    }

    /// The first due time strictly after `after`, or `None` when there is none.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let zoned = after.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&zoned, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The last due time at or before `at`, or `None` when there is none.
    pub fn previous_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        let zoned = at.to_zoned(self.tz.clone());
        self.cron
            .find_previous_occurrence(&zoned, true)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The longest wait between two consecutive due times, over the due times from the last one
    /// at or before `from` until the first one after `from + horizon`: the worst case of how old
    /// the newest scheduled backup can be (before the backup's own duration). Every due time is
    /// walked rather than one interval assumed, so irregular schedules (`0 9,17 * * 1-5`, a
    /// daylight-saving jump in `timeZone`) give their real longest gap. `None` when the schedule
    /// never fires again: no bound exists.
    pub fn longest_gap(&self, from: Timestamp, horizon: SignedDuration) -> Option<SignedDuration> {
        let end = from.checked_add(horizon).unwrap_or(Timestamp::MAX);
        let mut at = match self.previous_at_or_before(from) {
            Some(p) => p,
            None => self.next_after(from)?,
        };
        let mut longest = SignedDuration::ZERO;
        // At most one due time a minute: the walk is bounded by the horizon in minutes.
        loop {
            let next = self.next_after(at)?;
            longest = longest.max(next.duration_since(at));
            if next > end {
                return Some(longest);
            }
            at = next;
        }
    }
}

fn expand_macro(expr: &str) -> String {
    MACROS
        .iter()
        .find(|(name, _)| expr.eq_ignore_ascii_case(name))
        .map_or_else(|| expr.to_owned(), |(_, fields)| (*fields).to_owned())
}

/// Rejects croner extensions (`L`, `W`, `#`) that the CronJob controller would refuse later,
/// after admission, where the user would only see it as a failing child.
fn check_field_syntax(expr: &str, field: &str) -> Result<(), ScheduleError> {
    if field.contains('#') {
        return Err(ScheduleError::Unsupported(expr.to_owned(), "#".to_owned()));
    }
    let mut rest = field.to_ascii_uppercase();
    for name in NAMES {
        rest = rest.replace(name, "");
    }
    if let Some(c) = rest.chars().find(|c| c.is_ascii_alphabetic()) {
        return Err(ScheduleError::Unsupported(expr.to_owned(), c.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn hourly_and_daily_fire_when_expected() {
        let hourly = CronSchedule::parse("0 * * * *", None).unwrap();
        assert_eq!(
            hourly.next_after(ts("2026-11-24T09:15:00Z")),
            Some(ts("2026-11-24T10:00:00Z"))
        );
        let daily = CronSchedule::parse("@daily", None).unwrap();
        assert_eq!(
            daily.next_after(ts("2026-11-24T09:15:00Z")),
            Some(ts("2026-11-25T00:00:00Z"))
        );
    }

    #[test]
    fn six_fields_are_refused_not_reinterpreted() {
        // The CloudNativePG foot-gun: "0 0 0 * * *" (seconds first) must not be read as hourly.
        let err = CronSchedule::parse("0 0 0 * * *", None).unwrap_err();
        assert_eq!(err, ScheduleError::FieldCount("0 0 0 * * *".into(), 6));
        assert!(matches!(
            CronSchedule::parse("* * * *", None),
            Err(ScheduleError::FieldCount(_, 4))
        ));
    }

    #[test]
    fn time_zones_shift_the_due_time() {
        let paris = CronSchedule::parse("0 2 * * *", Some("Europe/Paris")).unwrap();
        // 02:00 in Paris in November (UTC+1) is 01:00 UTC.
        assert_eq!(
            paris.next_after(ts("2026-11-24T09:00:00Z")),
            Some(ts("2026-11-25T01:00:00Z"))
        );
        assert_eq!(
            CronSchedule::parse("0 2 * * *", Some("Mars/Olympus")).unwrap_err(),
            ScheduleError::UnknownTimeZone("Mars/Olympus".into())
        );
    }

    #[test]
    fn quarterly_drill_schedule() {
        let quarterly = CronSchedule::parse("0 6 1 1,4,7,10 *", None).unwrap();
        assert_eq!(
            quarterly.next_after(ts("2026-11-24T09:00:00Z")),
            Some(ts("2027-01-01T06:00:00Z"))
        );
        assert_eq!(
            quarterly.previous_at_or_before(ts("2026-11-24T09:00:00Z")),
            Some(ts("2026-10-01T06:00:00Z"))
        );
    }

    #[test]
    fn names_are_accepted_and_extensions_refused() {
        assert!(CronSchedule::parse("30 1 * JAN,JUL MON-FRI", None).is_ok());
        assert!(matches!(
            CronSchedule::parse("0 0 L * *", None),
            Err(ScheduleError::Unsupported(_, c)) if c == "L"
        ));
        assert!(matches!(
            CronSchedule::parse("0 0 * * 1#2", None),
            Err(ScheduleError::Unsupported(_, c)) if c == "#"
        ));
        assert!(matches!(
            CronSchedule::parse("61 * * * *", None),
            Err(ScheduleError::Invalid(..))
        ));
        assert_eq!(
            CronSchedule::parse("0 0 31 2 *", None).unwrap_err(),
            ScheduleError::NeverFires("0 0 31 2 *".into())
        );
    }

    #[test]
    fn the_longest_gap_walks_every_due_time() {
        let gap = |expr: &str, tz: Option<&str>, from: &str| {
            CronSchedule::parse(expr, tz)
                .unwrap()
                .longest_gap(ts(from), RPO_HORIZON)
                .map(|d| d.as_secs())
        };
        assert_eq!(gap("@hourly", None, "2026-11-24T09:15:00Z"), Some(3600));
        assert_eq!(gap("*/15 * * * *", None, "2026-11-24T09:15:00Z"), Some(900));
        // Twice a weekday: the weekend is the gap, Friday 17:00 to Monday 09:00.
        assert_eq!(
            gap("0 9,17 * * 1-5", None, "2026-11-24T09:15:00Z"),
            Some(64 * 3600)
        );
        // Uneven minutes: 0,10,50 leaves 40 minutes between :10 and :50.
        assert_eq!(
            gap("0,10,50 * * * *", None, "2026-11-24T09:15:00Z"),
            Some(2400)
        );
        // Monthly: whole months count, not only the horizon. From 24 November, 1 December is
        // within the eight days, so December's 31 days (to 1 January) are the longest gap.
        assert_eq!(
            gap("@monthly", None, "2026-11-24T09:15:00Z"),
            Some(31 * 24 * 3600)
        );
        assert_eq!(
            gap("@monthly", None, "2026-11-10T09:15:00Z"),
            Some(30 * 24 * 3600)
        );
        // Daily at midnight in Paris: the day the clocks go back lasts 25 hours.
        assert_eq!(
            gap("0 0 * * *", Some("Europe/Paris"), "2026-10-22T00:00:00Z"),
            Some(25 * 3600)
        );
        assert_eq!(
            gap("0 0 * * *", Some("Europe/Paris"), "2026-11-22T00:00:00Z"),
            Some(24 * 3600)
        );
    }
}
