//! STIX timestamps: RFC 3339 in UTC with a trailing `Z`.

use std::fmt;

use thiserror::Error;

/// Why a text is not a STIX timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimestampError {
    #[error("expected RFC 3339 UTC form YYYY-MM-DDTHH:MM:SS[.s]Z")]
    NotUtcRfc3339,
    #[error("fractional seconds must be 1 to 9 digits")]
    FractionDigits,
    /// The form is right but the date or time is not (e.g. February 30th); the text is the
    /// date library's.
    #[error("{0}")]
    OutOfRange(String),
}

/// A STIX timestamp. Equality compares the instant; the number of fractional digits the sender
/// used is remembered so that a value is printed back with the same precision (never less than
/// the minimum a property demands, see [`Timestamp::to_stix_string`]).
#[derive(Clone, Copy)]
pub struct Timestamp {
    instant: jiff::Timestamp,
    /// Fractional-second digits as received (0–9).
    digits: u8,
}

impl Timestamp {
    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z`. Offsets other than `Z` are rejected: STIX
    /// requires UTC.
    pub fn parse(value: &str) -> Result<Self, TimestampError> {
        let bytes = value.as_bytes();
        if !value.is_ascii()
            || bytes.len() < 20
            || bytes[10] != b'T'
            || bytes[bytes.len() - 1] != b'Z'
        {
            return Err(TimestampError::NotUtcRfc3339);
        }
        let digits = match value[19..value.len() - 1].strip_prefix('.') {
            None if value.len() == 20 => 0,
            Some(frac)
                if (1..=9).contains(&frac.len()) && frac.bytes().all(|b| b.is_ascii_digit()) =>
            {
                frac.len() as u8
            }
            _ => return Err(TimestampError::FractionDigits),
        };
        let instant: jiff::Timestamp = value
            .parse()
            .map_err(|e: jiff::Error| TimestampError::OutOfRange(e.to_string()))?;
        Ok(Self { instant, digits })
    }

    /// The current time with millisecond precision.
    pub fn now() -> Self {
        let now = jiff::Timestamp::now();
        let ms = now.as_millisecond();
        Self {
            instant: jiff::Timestamp::from_millisecond(ms).unwrap_or(now),
            digits: 3,
        }
    }

    /// A timestamp from whole seconds since the Unix epoch and nanoseconds, e.g. a Zeek `time`.
    pub fn from_unix(seconds: i64, nanos: i32) -> Option<Self> {
        let instant = jiff::Timestamp::new(seconds, nanos).ok()?;
        let digits = if nanos == 0 { 0 } else { 9 };
        Some(Self { instant, digits })
    }

    /// Nanoseconds since the Unix epoch.
    pub fn as_nanosecond(&self) -> i128 {
        self.instant.as_nanosecond()
    }

    /// Prints the timestamp with at least `min_digits` fractional digits (STIX demands 3 for
    /// `created` and `modified`) and at most the precision needed to keep the value exact.
    pub fn to_stix_string(&self, min_digits: u8) -> String {
        // The fewest digits that print the sub-second part exactly.
        let mut needed = 9u8;
        let mut nanos = self.instant.subsec_nanosecond().unsigned_abs();
        while needed > 0 && nanos.is_multiple_of(10) {
            nanos /= 10;
            needed -= 1;
        }
        let digits = self.digits.max(min_digits).max(needed).min(9) as usize;
        if digits == 0 {
            format!("{:.0}", self.instant)
        } else {
            format!("{:.digits$}", self.instant)
        }
    }
}

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        self.instant == other.instant
    }
}

impl Eq for Timestamp {}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_stix_string(0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_stix_string(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_precision_and_pads_to_minimum() {
        let t = Timestamp::parse("2020-06-23T12:34:56Z").unwrap();
        assert_eq!(t.to_stix_string(0), "2020-06-23T12:34:56Z");
        assert_eq!(t.to_stix_string(3), "2020-06-23T12:34:56.000Z");
        let t = Timestamp::parse("2020-06-23T12:34:56.123456Z").unwrap();
        assert_eq!(t.to_stix_string(3), "2020-06-23T12:34:56.123456Z");
        let t = Timestamp::parse("2020-06-23T12:34:56.1Z").unwrap();
        assert_eq!(t.to_stix_string(0), "2020-06-23T12:34:56.1Z");
        assert_eq!(t.to_stix_string(3), "2020-06-23T12:34:56.100Z");
    }

    #[test]
    fn equality_is_by_instant() {
        assert_eq!(
            Timestamp::parse("2020-06-23T12:34:56Z").unwrap(),
            Timestamp::parse("2020-06-23T12:34:56.000Z").unwrap()
        );
    }

    #[test]
    fn rejects_non_utc_and_garbage() {
        for bad in [
            "",
            "2020-06-23",
            "2020-06-23 12:34:56Z",
            "2020-06-23T12:34:56+01:00",
            "2020-06-23T12:34:56",
            "2020-13-23T12:34:56Z",
            "2020-06-23T12:34:56.Z",
            "2020-06-23T12:34:56.1234567890Z",
            "2020-06-23T12:34:56.12aZ",
            "2020-06-23T12:34:56z",
            // Found by fuzzing: a multi-byte character where the fraction starts.
            "2020-06-23T12:34:5\u{87}@P6.0102Z",
            "2020-06-23T12:34:56.\u{e9}Z",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn from_unix_keeps_nanoseconds() {
        let t = Timestamp::from_unix(1_600_000_000, 123_456_789).unwrap();
        assert_eq!(t.to_stix_string(3), "2020-09-13T12:26:40.123456789Z");
        assert_eq!(t.as_nanosecond(), 1_600_000_000_123_456_789);
    }
}
