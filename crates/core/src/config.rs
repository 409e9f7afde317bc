//! Core settings (the `bus` section) and helpers every plugin uses to read its config section.
//!
//! Plugins receive their section as a `serde_json::Value` (the YAML file merged with
//! `THREATBUS_` environment overrides) and turn it into a typed struct with [`parse_section`],
//! which names the full key path and the offending value in every error.

use std::time::Duration;

use serde::Deserialize;
use serde::Serializer;
use serde::de::{self, DeserializeOwned, Deserializer};
use serde_json::Value;
use thiserror::Error;

/// A configuration error: the dotted key and what is wrong with its value.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path, e.g. `plugins.apps.zmq.manage`.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Deserialises the section at `path` (e.g. `plugins.apps.zmq`) into `T`. A missing section
/// (`zmq:` with no value) is read as an empty map so that defaults apply.
pub fn parse_section<T: DeserializeOwned>(path: &str, value: &Value) -> Result<T, ConfigError> {
    let value = match value {
        Value::Null => Value::Object(Default::default()),
        other => other.clone(),
    };
    serde_path_to_error::deserialize(value).map_err(|err| {
        let inner = err.path().to_string();
        let mut key = if inner == "." || inner.is_empty() {
            path.to_owned()
        } else {
            format!("{path}.{inner}")
        };
        let message = err.into_inner().to_string();
        // serde reports a missing field at the enclosing map; name the field itself.
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            key = format!("{key}.{field}");
            return ConfigError::new(key, "required, but missing");
        }
        ConfigError::new(key, message)
    })
}

/// What the router does when a subscriber's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Drop the new message for that subscriber only; count and log the drop. A stalled
    /// subscriber never slows the others down. The default.
    #[default]
    DropNewest,
    /// Wait until the subscriber has room. Nothing is dropped, but one stalled subscriber
    /// holds up delivery to every other subscriber and, in turn, the publishers.
    Block,
}

/// The `bus` section: settings of the core itself. Not present upstream; every key has a
/// default, so upstream configs need no change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Capacity (messages) of each subscriber's queue, of the router's input and of the queue
    /// towards the backbone.
    #[serde(deserialize_with = "positive_usize")]
    pub queue_capacity: usize,
    /// Policy when a subscriber's queue is full: `drop_newest` or `block`.
    pub when_full: WhenFull,
    /// Seconds after which an unanswered snapshot id is forgotten; later envelopes for it are
    /// dropped.
    #[serde(deserialize_with = "positive_seconds")]
    pub snapshot_expiry: Duration,
    /// Seconds that a graceful shutdown may take to drain the queues before the bus exits
    /// anyway.
    #[serde(deserialize_with = "positive_seconds")]
    pub shutdown_timeout: Duration,
    /// Bytes that everything queued for subscribers may take in all (see `budget.rs`): above
    /// half of it only subscribers holding no more than the average get new messages, at the
    /// limit none.
    #[serde(deserialize_with = "positive_usize")]
    pub memory_budget: usize,
    /// Subscribers of all apps together (ZeroMQ subscriptions, Zeek subscriptions, apps that
    /// answer snapshots); one more is refused with an error naming this key.
    #[serde(deserialize_with = "positive_usize")]
    pub max_subscribers: usize,
}

/// A duration as seconds: a whole number when it is one.
fn seconds(duration: Duration) -> Value {
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
    serde::Serialize::serialize(&seconds(*duration), serializer)
}

impl BusConfig {
    /// The section as it is in effect (every key, defaults included), for `threatbus check`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "queue_capacity": self.queue_capacity,
            "when_full": match self.when_full {
                WhenFull::DropNewest => "drop_newest",
                WhenFull::Block => "block",
            },
            "snapshot_expiry": seconds(self.snapshot_expiry),
            "shutdown_timeout": seconds(self.shutdown_timeout),
            "memory_budget": self.memory_budget,
            "max_subscribers": self.max_subscribers,
        })
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 10_000,
            when_full: WhenFull::DropNewest,
            snapshot_expiry: Duration::from_secs(3600),
            shutdown_timeout: Duration::from_secs(10),
            memory_budget: 256 * 1024 * 1024,
            max_subscribers: 10_000,
        }
    }
}

/// A number given as a JSON number or as a numeric string (as environment overrides and quoted
/// YAML values may produce).
fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| de::Error::custom(format!("expected a non-negative integer, got {n}"))),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| de::Error::custom(format!("expected a non-negative integer, got {s:?}"))),
        other => Err(de::Error::custom(format!(
            "expected a non-negative integer, got {other}"
        ))),
    }
}

fn positive_usize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    match lenient_u64(deserializer)? {
        0 => Err(de::Error::custom("must be at least 1, got 0")),
        n => usize::try_from(n).map_err(de::Error::custom),
    }
}

fn positive_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    match lenient_u64(deserializer)? {
        0 => Err(de::Error::custom("must be at least 1 second, got 0")),
        n => Ok(Duration::from_secs(n)),
    }
}

/// Deserialises a TCP port: an integer or numeric string from 0 to 65535 (0 lets the operating
/// system choose).
pub fn port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    let value = Value::deserialize(deserializer)?;
    let parsed = match &value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    parsed
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| de::Error::custom(format!("expected a port number (0-65535), got {value}")))
}

/// Deserialises a string, also accepting numbers and booleans (an environment override such as
/// `THREATBUS_..._PASSWORD=1234` arrives as a number).
pub fn lenient_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(de::Error::custom(format!("expected a string, got {other}"))),
    }
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

/// Deserializes a host for a listener or a client: [`lenient_string`], trimmed, then
/// [`check_host`].
pub fn host<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = lenient_string(deserializer)?.trim().to_owned();
    check_host(&text).map_err(de::Error::custom)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn bus_defaults_apply_to_a_missing_section() {
        let config: BusConfig = parse_section("bus", &Value::Null).unwrap();
        assert_eq!(config.queue_capacity, 10_000);
        assert_eq!(config.when_full, WhenFull::DropNewest);
    }

    #[test]
    fn bus_values_are_validated_with_key_and_value() {
        let err = parse_section::<BusConfig>("bus", &json!({"queue_capacity": 0})).unwrap_err();
        assert_eq!(err.key, "bus.queue_capacity");
        assert!(err.message.contains("0"), "{err}");
        let err = parse_section::<BusConfig>("bus", &json!({"when_full": "explode"})).unwrap_err();
        assert_eq!(err.key, "bus.when_full");
        assert!(err.message.contains("explode"), "{err}");
        let err = parse_section::<Ports>("x", &json!({})).unwrap_err();
        assert_eq!(err.to_string(), "x.p: required, but missing");
        let err = parse_section::<BusConfig>("bus", &json!({"queue_size": 5})).unwrap_err();
        assert!(err.to_string().contains("queue_size"), "{err}");
        let ok: BusConfig =
            parse_section("bus", &json!({"queue_capacity": "5", "when_full": "block"})).unwrap();
        assert_eq!((ok.queue_capacity, ok.when_full), (5, WhenFull::Block));
    }

    #[derive(Debug, Deserialize)]
    struct Ports {
        #[serde(deserialize_with = "port")]
        p: u16,
    }

    #[test]
    fn ports_accept_numbers_and_numeric_strings_only() {
        assert_eq!(
            parse_section::<Ports>("x", &json!({"p": 13370})).unwrap().p,
            13370
        );
        assert_eq!(
            parse_section::<Ports>("x", &json!({"p": "13370"}))
                .unwrap()
                .p,
            13370
        );
        for bad in [
            json!("abc"),
            json!(70000),
            json!(-1),
            json!(1.5),
            json!(null),
        ] {
            let err = parse_section::<Ports>("x", &json!({ "p": bad })).unwrap_err();
            assert_eq!(err.key, "x.p");
            assert!(err.message.contains(&bad.to_string()), "{err}");
        }
    }
}
