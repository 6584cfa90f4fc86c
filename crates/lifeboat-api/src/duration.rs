//! Human durations (`15m`, `7d`, `1h30m`) as users write them in specs.
//!
//! Kubernetes' own `metav1.Duration` (Go's `time.ParseDuration`) has no day or week unit, yet
//! retention is naturally written `7d` or `30d`. The grammar here is deliberately small: whole
//! numbers followed by a unit, units in descending order, each at most once.

use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The admission-time rule: the same grammar as [`Duration::from_str`] (a CEL rule rather than
/// a schema `pattern`, so the refusal explains itself instead of printing a regular expression).
pub const DURATION_RULE: &str =
    "self.matches('^([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$') && self.matches('[1-9]')";
const DURATION_MESSAGE: &str = "must be a duration such as 90s, 15m, 1h30m or 7d: whole numbers with units w, d, h, m, s, largest first, greater than zero";

const UNITS: [(char, u64); 5] = [
    ('w', 7 * 24 * 3600),
    ('d', 24 * 3600),
    ('h', 3600),
    ('m', 60),
    ('s', 1),
];

/// A positive duration with a one-second resolution, written like `90s`, `15m`, `7d` or `1h30m`.
///
/// It serializes back exactly as the user spelled it (`90m` stays `90m`), so a spec read and
/// written by a tool never drifts from what GitOps applied; equality compares the length only.
#[derive(Clone, Debug)]
pub struct Duration {
    seconds: u64,
    spelling: Option<Box<str>>,
}

impl PartialEq for Duration {
    fn eq(&self, other: &Self) -> bool {
        self.seconds == other.seconds
    }
}

impl Eq for Duration {}

impl PartialOrd for Duration {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Duration {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.seconds.cmp(&other.seconds)
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("duration is empty; write e.g. 15m, 1h30m or 7d")]
    Empty,
    #[error("duration {0:?}: expected whole numbers each followed by w, d, h, m or s, e.g. 1h30m")]
    Syntax(String),
    #[error("duration {0:?}: units must appear at most once, largest first (w, d, h, m, s)")]
    UnitOrder(String),
    #[error("duration {0:?} must be greater than zero")]
    Zero(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

impl Duration {
    /// A duration of `seconds` seconds; zero is allowed here for computed values (an RPO
    /// achieved can be zero), while parsing user input refuses it.
    pub const fn from_secs(seconds: u64) -> Self {
        Self {
            seconds,
            spelling: None,
        }
    }

    pub const fn as_secs(&self) -> u64 {
        self.seconds
    }

    pub fn as_std(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.seconds)
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let mut total: u64 = 0;
        let mut next_unit = 0; // index into UNITS of the largest unit still allowed
        let mut digits = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let Some(pos) = UNITS.iter().position(|(u, _)| *u == c) else {
                return Err(DurationError::Syntax(s.to_owned()));
            };
            if digits.is_empty() {
                return Err(DurationError::Syntax(s.to_owned()));
            }
            if pos < next_unit {
                return Err(DurationError::UnitOrder(s.to_owned()));
            }
            let n: u64 = digits
                .parse()
                .map_err(|_| DurationError::Overflow(s.to_owned()))?;
            total = n
                .checked_mul(UNITS[pos].1)
                .and_then(|v| v.checked_add(total))
                .ok_or_else(|| DurationError::Overflow(s.to_owned()))?;
            digits.clear();
            next_unit = pos + 1;
        }
        if !digits.is_empty() {
            return Err(DurationError::Syntax(s.to_owned()));
        }
        if total == 0 {
            return Err(DurationError::Zero(s.to_owned()));
        }
        Ok(Self {
            seconds: total,
            spelling: Some(s.into()),
        })
    }
}

impl fmt::Display for Duration {
    /// The user's spelling when parsed, else the canonical one, largest unit first
    /// (`from_secs(5400)` prints as `1h30m`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(spelling) = &self.spelling {
            return f.write_str(spelling);
        }
        if self.seconds == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.seconds;
        for (unit, size) in UNITS {
            if rest >= size {
                write!(f, "{}{}", rest / size, unit)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 2,
            "maxLength": 32,
            "x-kubernetes-validations": [{"rule": DURATION_RULE, "message": DURATION_MESSAGE}],
            "description": "A duration: whole numbers with units w, d, h, m, s, largest first, e.g. 15m, 1h30m, 7d."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_units_users_write() {
        assert_eq!("90s".parse::<Duration>().unwrap().as_secs(), 90);
        assert_eq!("15m".parse::<Duration>().unwrap().as_secs(), 900);
        assert_eq!("1h30m".parse::<Duration>().unwrap().as_secs(), 5400);
        assert_eq!("7d".parse::<Duration>().unwrap().as_secs(), 604_800);
        assert_eq!("2w1d".parse::<Duration>().unwrap().as_secs(), 15 * 86_400);
    }

    #[test]
    fn refuses_what_is_ambiguous_or_empty() {
        assert_eq!("".parse::<Duration>(), Err(DurationError::Empty));
        assert!(matches!(
            "15".parse::<Duration>(),
            Err(DurationError::Syntax(_))
        ));
        assert!(matches!(
            "m".parse::<Duration>(),
            Err(DurationError::Syntax(_))
        ));
        assert!(matches!(
            "1.5h".parse::<Duration>(),
            Err(DurationError::Syntax(_))
        ));
        assert!(matches!(
            "15M".parse::<Duration>(),
            Err(DurationError::Syntax(_))
        ));
        assert!(matches!(
            "30m1h".parse::<Duration>(),
            Err(DurationError::UnitOrder(_))
        ));
        assert!(matches!(
            "1h1h".parse::<Duration>(),
            Err(DurationError::UnitOrder(_))
        ));
        assert!(matches!(
            "0m".parse::<Duration>(),
            Err(DurationError::Zero(_))
        ));
        assert!(matches!(
            "99999999999999999999s".parse::<Duration>(),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            "9999999999999999w".parse::<Duration>(),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn keeps_the_users_spelling_and_prints_computed_values_canonically() {
        for input in ["5400s", "7d", "90m", "1d1s"] {
            assert_eq!(input.parse::<Duration>().unwrap().to_string(), input);
        }
        for (secs, canonical) in [
            (5400, "1h30m"),
            (604_800, "1w"),
            (86_401, "1d1s"),
            (0, "0s"),
        ] {
            let d = Duration::from_secs(secs);
            assert_eq!(d.to_string(), canonical);
            if secs > 0 {
                assert_eq!(canonical.parse::<Duration>().unwrap(), d);
            }
        }
        assert_eq!(
            "90m".parse::<Duration>().unwrap(),
            "1h30m".parse::<Duration>().unwrap()
        );
    }

    #[test]
    fn serde_uses_the_string_form() {
        let d: Duration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m\"");
        let err = serde_json::from_str::<Duration>("\"soon\"").unwrap_err();
        assert!(err.to_string().contains("expected whole numbers"), "{err}");
    }
}
