//! Core settings (the `bus` section) and helpers every plugin uses to read its config section.
//!
//! Plugins receive their section as a `serde_json::Value` (the YAML file merged with
//! `THREATBUS_` environment overrides) and turn it into a typed struct with [`parse_section`],
//! which names the full key path and the offending value in every error.

mod values;

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;

use values::seconds;
pub use values::{
    BackoffConfig, MAX_HOST_LENGTH, check_host, fractional_seconds, host, lenient_number,
    lenient_string, non_negative_u64, optional_string, port, positive_seconds, positive_usize,
    serialize_seconds, whole, whole_number, whole_seconds,
};

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
    /// With a store: seconds a `drop_newest` subscriber may stay behind (its oldest missing
    /// message routed this long ago) while the bus feeds it from the store; after that what it
    /// missed is dropped for it, as without a store. 0 turns catch-up off.
    #[serde(deserialize_with = "catch_up_seconds")]
    pub catch_up_timeout: Duration,
}

/// Whole seconds from 0 (off) to 7 days.
fn catch_up_seconds<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    whole_seconds(deserializer, 0, 7 * 24 * 3600)
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
            "catch_up_timeout": seconds(self.catch_up_timeout),
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
            catch_up_timeout: Duration::from_secs(600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let err = parse_section::<BusConfig>("bus", &json!({"queue_size": 5})).unwrap_err();
        assert!(err.to_string().contains("queue_size"), "{err}");
        let ok: BusConfig =
            parse_section("bus", &json!({"queue_capacity": "5", "when_full": "block"})).unwrap();
        assert_eq!((ok.queue_capacity, ok.when_full), (5, WhenFull::Block));
        let off: BusConfig = parse_section("bus", &json!({"catch_up_timeout": 0})).unwrap();
        assert_eq!(off.catch_up_timeout, Duration::ZERO);
        let err = parse_section::<BusConfig>("bus", &json!({"catch_up_timeout": -1})).unwrap_err();
        assert_eq!(err.key, "bus.catch_up_timeout");
        assert!(err.message.contains("-1"), "{err}");
    }
}
