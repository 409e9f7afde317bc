//! The value types every config section shares, read as leniently as upstream's Dynaconf config
//! lets users write them, and checked with one wording everywhere.
//!
//! Numbers may be JSON/YAML numbers or numeric strings (a quoted YAML value, an environment
//! override): `10`, `"10"` and `" 10 "` are the same. Where a whole number is expected, a number
//! with no fractional part is one: `10.0` and `1e3` (what Dynaconf makes of
//! `THREATBUS_…=10.0` or `=1e3`) count as `10` and `1000`, as they do in upstream's Python code;
//! `10.5` is refused with the key and the value. Seconds are whole numbers unless a key says it
//! takes fractions (`fractional_seconds`).

use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// The number `value` holds, as a JSON number or a numeric string; `None` for anything else,
/// including infinities and NaN.
fn number(value: &Value) -> Option<f64> {
    let n = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    n.is_finite().then_some(n)
}

/// The whole number `value` holds: an integer, a number without fractional part (`10.0`), or
/// a string of either. Integers beyond 2^53 are read exactly.
pub fn whole_number(value: &Value) -> Option<u64> {
    let exact = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    exact.or_else(|| {
        let n = number(value)?;
        // `as` saturates; the range check below rejects what does not fit.
        (n >= 0.0 && n.fract() == 0.0 && n <= u64::MAX as f64).then_some(n as u64)
    })
}

/// What a range reads like in an error message: `from 1 to 86400`, or `of at least 1` when the
/// upper bound is only the type's.
fn range_text(min: u64, max: u64) -> String {
    if max >= i64::MAX as u64 {
        format!("of at least {min}")
    } else {
        format!("from {min} to {max}")
    }
}

/// A number as written ([`number`]) with the value itself, for plugins that check their own
/// range and say why (CIF's confidence scale).
pub fn lenient_number<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<(f64, Value), D::Error> {
    let value = Value::deserialize(deserializer)?;
    match number(&value) {
        Some(n) => Ok((n, value)),
        None => Err(de::Error::custom(format!("expected a number, got {value}"))),
    }
}

/// A whole number from `min` to `max` (see the module docs for what counts as one).
pub fn whole<'de, D: Deserializer<'de>>(
    deserializer: D,
    min: u64,
    max: u64,
) -> Result<u64, D::Error> {
    let value = Value::deserialize(deserializer)?;
    match whole_number(&value) {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(de::Error::custom(format!(
            "expected a whole number {}, got {value}",
            range_text(min, max)
        ))),
    }
}

/// A whole number of seconds from `min` to `max`.
pub fn whole_seconds<'de, D: Deserializer<'de>>(
    deserializer: D,
    min: u64,
    max: u64,
) -> Result<Duration, D::Error> {
    let value = Value::deserialize(deserializer)?;
    match whole_number(&value) {
        Some(n) if (min..=max).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(de::Error::custom(format!(
            "expected a whole number of seconds {}, got {value}",
            range_text(min, max)
        ))),
    }
}

/// Seconds, fractions allowed, from `min` to `max`.
pub fn fractional_seconds<'de, D: Deserializer<'de>>(
    deserializer: D,
    min: f64,
    max: f64,
) -> Result<Duration, D::Error> {
    let value = Value::deserialize(deserializer)?;
    match number(&value) {
        Some(n) if (min..=max).contains(&n) => Ok(Duration::from_secs_f64(n)),
        _ => Err(de::Error::custom(format!(
            "expected seconds from {min} to {max}, got {value}"
        ))),
    }
}

/// The longest duration a `*_seconds` key takes unless it says otherwise: one year (so that
/// adding it to a clock can never overflow).
const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// A count of at least 1.
pub fn positive_usize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let n = whole(deserializer, 1, i64::MAX as u64)?;
    usize::try_from(n).map_err(de::Error::custom)
}

/// A count that may be 0.
pub fn non_negative_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    whole(deserializer, 0, i64::MAX as u64)
}

/// Whole seconds from 1 to one year.
pub fn positive_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    whole_seconds(deserializer, 1, MAX_SECONDS)
}

/// A TCP port: a whole number from 0 to 65535 (0 lets the operating system choose).
pub fn port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    let value = Value::deserialize(deserializer)?;
    whole_number(&value)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| de::Error::custom(format!("expected a port number (0-65535), got {value}")))
}

/// A string, also accepting numbers and booleans (an environment override such as
/// `THREATBUS_..._PASSWORD=1234` arrives as a number).
pub fn lenient_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(de::Error::custom(format!("expected a string, got {other}"))),
    }
}

/// A string as [`lenient_string`] reads it, or nothing (`null`, as an absent key).
pub fn optional_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        value => lenient_string(value).map(Some).map_err(de::Error::custom),
    }
}

/// A duration as seconds: a whole number when it is one.
pub(crate) fn seconds(duration: Duration) -> Value {
    if duration.subsec_nanos() == 0 {
        Value::from(duration.as_secs())
    } else {
        Value::from(duration.as_secs_f64())
    }
}

/// Writes a duration as seconds (a whole number when it is one), as config files give them; for
/// the effective configuration that `threatbus check` prints.
pub fn serialize_seconds<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    Serialize::serialize(&seconds(*duration), serializer)
}

/// The longest host name DNS allows.
pub const MAX_HOST_LENGTH: usize = 253;

/// Whether `text` is a host the bus can bind to or connect to: an IPv4 or IPv6 literal
/// (IPv6 with or without brackets), or a DNS name of at most 253 bytes whose labels are 1 to 63
/// letters, digits, `-` or `_` and neither start nor end with `-`. `Err` says what is wrong.
pub fn check_host(text: &str) -> Result<(), String> {
    let shown = crate::throttle::bounded(text);
    if text.is_empty() {
        return Err("expected a host name or IP address, got an empty string".into());
    }
    let unbracketed = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(text);
    if unbracketed.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if text.len() > MAX_HOST_LENGTH {
        return Err(format!(
            "a host name has at most {MAX_HOST_LENGTH} bytes, got {} ({shown:?})",
            text.len()
        ));
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!("expected a host name or IP address, got {shown:?}"))
    }
}

/// A host for a listener or a client: [`lenient_string`], trimmed, then [`check_host`].
pub fn host<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = lenient_string(deserializer)?.trim().to_owned();
    check_host(&text).map_err(de::Error::custom)?;
    Ok(text)
}

/// Capped exponential backoff between attempts at something that failed (connecting to
/// RabbitMQ, calling MISP's or CIF's API): the first wait is `min_delay`, each further failure
/// doubles it up to `max_delay`, and each wait is shortened by up to 20 % at random so that
/// many instances do not retry in step. One type for every plugin that retries, under the key
/// each plugin documents (`reconnect` for RabbitMQ, `retry` for MISP and CIF).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    /// Seconds to wait after the first failure; doubles after each further one. Default 0.5.
    #[serde(
        serialize_with = "serialize_seconds",
        deserialize_with = "backoff_delay"
    )]
    pub min_delay: Duration,
    /// Upper bound of the wait, in seconds. Default 30.
    #[serde(
        serialize_with = "serialize_seconds",
        deserialize_with = "backoff_delay"
    )]
    pub max_delay: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl BackoffConfig {
    /// Checks that the delays are in order; `key` is the section's dotted path.
    pub fn check(&self, key: &str) -> Result<(), super::ConfigError> {
        if self.min_delay > self.max_delay {
            return Err(super::ConfigError::new(
                key,
                format!(
                    "min_delay ({:?}) must not exceed max_delay ({:?})",
                    self.min_delay, self.max_delay
                ),
            ));
        }
        Ok(())
    }
}

fn backoff_delay<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    fractional_seconds(deserializer, 0.001, 86_400.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_section;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    struct Values {
        #[serde(default, deserialize_with = "port")]
        port: u16,
        #[serde(default, deserialize_with = "positive_usize")]
        count: usize,
        #[serde(default, deserialize_with = "non_negative_u64")]
        items: u64,
        #[serde(default, deserialize_with = "positive_seconds")]
        timeout: Duration,
        #[serde(default, deserialize_with = "backoff_delay")]
        delay: Duration,
        #[serde(default, deserialize_with = "lenient_string")]
        name: String,
        #[serde(default)]
        backoff: BackoffConfig,
    }

    fn read(section: Value) -> Result<Values, String> {
        parse_section::<Values>("x", &section).map_err(|err| err.to_string())
    }

    /// Upstream's Dynaconf hands the code what YAML or the environment typed: `10`, `"10"`,
    /// `10.0` and `1e3` all reach it as numbers Python computes with. Every whole-number key
    /// here reads them the same way.
    #[test]
    fn whole_numbers_are_read_as_upstream_writes_them() {
        for (written, expected) in [
            (json!(13370), 13370),
            (json!("13370"), 13370),
            (json!(" 13370 "), 13370),
            (json!(13370.0), 13370),
            (json!("13370.0"), 13370),
            (json!(1.337e4), 13370),
        ] {
            let values = read(
                json!({"port": written, "count": written, "items": written, "timeout": written}),
            )
            .unwrap();
            assert_eq!(values.port, expected, "{written}");
            assert_eq!(values.count, usize::from(expected), "{written}");
            assert_eq!(values.items, u64::from(expected), "{written}");
            assert_eq!(
                values.timeout,
                Duration::from_secs(expected.into()),
                "{written}"
            );
        }
        let big = read(json!({"items": 9_007_199_254_740_993u64})).unwrap();
        assert_eq!(
            big.items, 9_007_199_254_740_993,
            "integers beyond 2^53 are exact"
        );
        assert_eq!(read(json!({"name": 1234})).unwrap().name, "1234");
        assert_eq!(read(json!({"name": true})).unwrap().name, "true");
    }

    #[test]
    fn bad_values_name_the_key_the_value_and_the_range() {
        for (section, message) in [
            (
                json!({"port": 1.5}),
                "x.port: expected a port number (0-65535), got 1.5",
            ),
            (
                json!({"port": 70000}),
                "x.port: expected a port number (0-65535), got 70000",
            ),
            (
                json!({"port": -1}),
                "x.port: expected a port number (0-65535), got -1",
            ),
            (
                json!({"port": "abc"}),
                "x.port: expected a port number (0-65535), got \"abc\"",
            ),
            (
                json!({"port": null}),
                "x.port: expected a port number (0-65535), got null",
            ),
            (
                json!({"count": 0}),
                "x.count: expected a whole number of at least 1, got 0",
            ),
            (
                json!({"count": 10.5}),
                "x.count: expected a whole number of at least 1, got 10.5",
            ),
            (
                json!({"count": "NaN"}),
                "x.count: expected a whole number of at least 1, got \"NaN\"",
            ),
            (
                json!({"items": -3}),
                "x.items: expected a whole number of at least 0, got -3",
            ),
            (
                json!({"timeout": 0}),
                "x.timeout: expected a whole number of seconds from 1 to 31536000, got 0",
            ),
            (
                json!({"timeout": 2.5}),
                "x.timeout: expected a whole number of seconds from 1 to 31536000, got 2.5",
            ),
            (
                json!({"timeout": 1e300}),
                "x.timeout: expected a whole number of seconds from 1 to 31536000, got 1e+300",
            ),
            (
                json!({"delay": 0}),
                "x.delay: expected seconds from 0.001 to 86400, got 0",
            ),
            (
                json!({"delay": "inf"}),
                "x.delay: expected seconds from 0.001 to 86400, got \"inf\"",
            ),
            (json!({"name": [1]}), "x.name: expected a string, got [1]"),
            (
                json!({"backoff": {"min_delay": -1}}),
                "x.backoff.min_delay: expected seconds from 0.001 to 86400, got -1",
            ),
        ] {
            assert_eq!(read(section.clone()).unwrap_err(), message, "{section}");
        }
        assert!(
            read(json!({"backoff": {"max": 1}}))
                .unwrap_err()
                .contains("max")
        );
    }

    #[test]
    fn fractional_seconds_and_backoff_defaults() {
        let values = read(json!({"delay": "0.25", "backoff": {"max_delay": 2}})).unwrap();
        assert_eq!(values.delay, Duration::from_millis(250));
        assert_eq!(values.backoff.min_delay, Duration::from_millis(500));
        assert_eq!(values.backoff.max_delay, Duration::from_secs(2));
        assert_eq!(
            serde_json::to_value(values.backoff).unwrap(),
            json!({"min_delay": 0.5, "max_delay": 2})
        );
    }

    #[test]
    fn hosts_are_addresses_or_dns_names() {
        for good in [
            "localhost",
            "127.0.0.1",
            "0.0.0.0",
            "::1",
            "[::1]",
            "2001:db8::1",
            "misp.example.org",
            "misp.example.org.",
            "rabbit_1",
            "a-b.c",
        ] {
            assert_eq!(check_host(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "no host",
            "http://x",
            "-x.org",
            "x-.org",
            "a..b",
            "user@host",
            "host:5672",
            "[x]",
            "ä.org",
        ] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
        let long = "a".repeat(50_000_000);
        let err = check_host(&long).unwrap_err();
        assert!(err.len() < 400, "{}", err.len());
        assert!(err.contains("at most 253 bytes, got 50000000"), "{err}");
        let label = format!("{}.org", "a".repeat(64));
        assert!(check_host(&label).is_err());
    }

    #[derive(Debug, Deserialize)]
    struct Required {
        #[serde(deserialize_with = "port")]
        #[allow(dead_code)]
        p: u16,
    }

    #[test]
    fn a_missing_required_key_is_named() {
        let err = parse_section::<Required>("x", &json!({})).unwrap_err();
        assert_eq!(err.to_string(), "x.p: required, but missing");
    }
}
