//! Microsecond timestamps: the precision of `date_added` on this server.
//!
//! The store keeps `date_added` as whole microseconds since the Unix epoch; TAXII shows it as
//! an RFC 3339 UTC timestamp with exactly six fractional digits, e.g.
//! `2026-12-06T14:00:00.123456Z`. Conversions saturate instead of failing: values beyond what a
//! four-digit year can show print as the first microsecond of year 0000 or the last one the
//! date library knows (`9999-12-30T22:00:00.000000Z`).

use threatbus_stix::{Timestamp, TimestampError};

/// `0000-01-01T00:00:00.000000Z` in microseconds since the Unix epoch.
const MIN_MICROS: i64 = -62_167_219_200_000_000;

/// `9999-12-30T22:00:00.000000Z` in microseconds since the Unix epoch: the largest value jiff
/// builds a timestamp from microseconds for.
const MAX_MICROS: i64 = 253_402_207_200_000_000;

/// Prints microseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (always six
/// fractional digits, UTC). Values outside `0000-01-01T00:00:00.000000Z` to
/// `9999-12-30T22:00:00.000000Z` are clamped to that range.
pub fn format_micros(micros: i64) -> String {
    let clamped = micros.clamp(MIN_MICROS, MAX_MICROS);
    match jiff::Timestamp::from_microsecond(clamped) {
        Ok(instant) => format!("{instant:.6}"),
        // Unreachable: the clamped range lies inside jiff's. Print the epoch rather than panic.
        Err(_) => "1970-01-01T00:00:00.000000Z".to_owned(),
    }
}

/// Whole microseconds since the Unix epoch (finer digits are dropped, rounding towards the
/// past), saturating at the bounds of `i64`.
pub fn micros(timestamp: &Timestamp) -> i64 {
    let micros = timestamp.as_nanosecond().div_euclid(1_000);
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

/// Parses a STIX timestamp (`YYYY-MM-DDTHH:MM:SS[.s]Z`) into whole microseconds since the Unix
/// epoch (see [`micros`]).
pub fn parse_micros(text: &str) -> Result<i64, TimestampError> {
    Timestamp::parse(text).map(|timestamp| micros(&timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_six_digits() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_micros(1_796_565_600_123_456),
            "2026-12-06T14:00:00.123456Z"
        );
        assert_eq!(format_micros(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn formats_saturating() {
        assert_eq!(format_micros(i64::MIN), "0000-01-01T00:00:00.000000Z");
        assert_eq!(format_micros(i64::MAX), "9999-12-30T22:00:00.000000Z");
        assert_eq!(format_micros(MIN_MICROS), "0000-01-01T00:00:00.000000Z");
        assert_eq!(format_micros(MAX_MICROS), "9999-12-30T22:00:00.000000Z");
    }

    #[test]
    fn bounds_match_the_date_library() {
        assert!(jiff::Timestamp::from_microsecond(MAX_MICROS).is_ok());
        assert!(jiff::Timestamp::from_microsecond(MAX_MICROS + 1).is_err());
        assert_eq!(
            "0000-01-01T00:00:00Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_microsecond(),
            MIN_MICROS
        );
    }

    #[test]
    fn parses_and_truncates() {
        assert_eq!(
            parse_micros("2026-12-06T14:00:00.123456Z"),
            Ok(1_796_565_600_123_456)
        );
        assert_eq!(
            parse_micros("2026-12-06T14:00:00.123456789Z"),
            Ok(1_796_565_600_123_456)
        );
        assert_eq!(
            parse_micros("2026-12-06T14:00:00Z"),
            Ok(1_796_565_600_000_000)
        );
        assert_eq!(parse_micros("1969-12-31T23:59:59.9999999Z"), Ok(-1));
        assert!(parse_micros("2026-12-06 14:00:00Z").is_err());
        assert!(parse_micros("").is_err());
    }

    #[test]
    fn round_trips() {
        for micros in [0, 1, -1, 1_796_565_600_123_456, MIN_MICROS, MAX_MICROS] {
            assert_eq!(parse_micros(&format_micros(micros)), Ok(micros));
        }
        let t = Timestamp::parse("2020-06-23T12:34:56.1Z").unwrap();
        assert_eq!(format_micros(micros(&t)), "2020-06-23T12:34:56.100000Z");
    }
}
