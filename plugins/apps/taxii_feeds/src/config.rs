//! The `plugins.apps.taxii_feeds` section: a list of feeds.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use threatbus_core::config::{
    BackoffConfig, ConfigError, lenient_string, optional_string, parse_section, positive_seconds,
    whole,
};

/// The section's key, for errors.
pub const KEY: &str = "plugins.apps.taxii_feeds";

/// One feed: a TAXII 2.1 collection the bus polls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Names the feed in logs, metrics and the stored cursor: letters, digits, `-`, `_`, `.`.
    #[serde(deserialize_with = "lenient_string")]
    pub name: String,
    /// The API root's URL, `http://` or `https://`.
    #[serde(deserialize_with = "lenient_string")]
    pub url: String,
    /// The collection's id or title.
    #[serde(deserialize_with = "lenient_string")]
    pub collection: String,
    /// HTTP Basic user name (optional; with `password`).
    #[serde(default, deserialize_with = "optional_string")]
    pub username: Option<String>,
    /// HTTP Basic password.
    #[serde(default, deserialize_with = "optional_string")]
    pub password: Option<String>,
    /// Seconds between the starts of two polls. Default 300.
    #[serde(
        default = "default_poll_interval",
        deserialize_with = "positive_seconds"
    )]
    pub poll_interval: Duration,
    /// Days the first poll reaches back (when no cursor is stored). Default 30.
    #[serde(default = "default_lookback", deserialize_with = "lookback_days")]
    pub initial_lookback: u64,
    /// PEM file with the certificate authorities to trust (else the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Verify the server's certificate. Default true.
    #[serde(default = "yes")]
    pub verify: bool,
    /// The object types to publish; others are skipped and counted. Default `[indicator,
    /// sighting]`.
    #[serde(default = "default_types", deserialize_with = "types")]
    pub types: Vec<String>,
    /// Backoff while the server is unreachable or failing.
    #[serde(default)]
    pub retry: BackoffConfig,
}

fn yes() -> bool {
    true
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(300)
}

fn default_lookback() -> u64 {
    30
}

fn default_types() -> Vec<String> {
    vec!["indicator".into(), "sighting".into()]
}

fn lookback_days<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    whole(deserializer, 0, 36_500)
}

/// `indicator` and `sighting`, the types the bus carries.
fn types<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let types: Vec<String> = Vec::deserialize(deserializer)?;
    if types.is_empty() {
        return Err(serde::de::Error::custom(
            "expected at least one of \"indicator\" and \"sighting\"",
        ));
    }
    for kind in &types {
        if kind != "indicator" && kind != "sighting" {
            return Err(serde::de::Error::custom(format!(
                "expected \"indicator\" or \"sighting\" (the types the bus carries), got {kind:?}"
            )));
        }
    }
    Ok(types)
}

impl FeedConfig {
    /// The feed as it is in effect, for `threatbus check` (the password left out).
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "url": self.url,
            "collection": self.collection,
            "username": self.username,
            "password": self.password.as_ref().map(|_| "(set)"),
            "poll_interval": self.poll_interval.as_secs(),
            "initial_lookback": self.initial_lookback,
            "ca_file": self.ca_file.as_ref().map(|p| p.display().to_string()),
            "verify": self.verify,
            "types": self.types,
            "retry": {
                "min_delay": self.retry.min_delay.as_secs_f64(),
                "max_delay": self.retry.max_delay.as_secs_f64(),
            },
        })
    }
}

/// Reads and validates the list; errors name the feed (by position and name) and the key.
pub fn feeds(section: &Value) -> Result<Vec<FeedConfig>, ConfigError> {
    let Value::Array(items) = section else {
        return Err(ConfigError::new(
            KEY,
            format!("expected a list of feeds (`- name: …`), got {section}"),
        ));
    };
    if items.is_empty() {
        return Err(ConfigError::new(KEY, "the list of feeds is empty"));
    }
    let mut feeds: Vec<FeedConfig> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .map_or_else(String::new, |name| format!(" (feed {name:?})"));
        let key = format!("{KEY}[{i}]");
        let named = |err: ConfigError| ConfigError::new(err.key, format!("{}{name}", err.message));
        let feed: FeedConfig = parse_section(&key, item).map_err(named)?;
        let valid = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if feed.name.is_empty() || feed.name.len() > 64 || !feed.name.chars().all(valid) {
            return Err(ConfigError::new(
                format!("{key}.name"),
                format!(
                    "expected 1 to 64 letters, digits, `-`, `_` or `.`, got {:?}",
                    feed.name
                ),
            ));
        }
        if feeds.iter().any(|other| other.name == feed.name) {
            return Err(ConfigError::new(
                format!("{key}.name"),
                format!("two feeds are named {:?}", feed.name),
            ));
        }
        if feed.username.is_some() != feed.password.is_some() {
            return Err(named(ConfigError::new(
                format!("{key}.password"),
                "`username` and `password` go together",
            )));
        }
        if feed.collection.is_empty() {
            return Err(named(ConfigError::new(
                format!("{key}.collection"),
                "expected a collection id or title",
            )));
        }
        if feed.retry.min_delay > feed.retry.max_delay {
            return Err(named(ConfigError::new(
                format!("{key}.retry"),
                "min_delay must not exceed max_delay",
            )));
        }
        // The URL and the TLS files are checked as the client is built (see `lib.rs`).
        feeds.push(feed);
    }
    Ok(feeds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(extra: Value) -> Value {
        let mut base =
            json!({"name": "cert", "url": "https://taxii.example.org/api1/", "collection": "c"});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        base
    }

    #[test]
    fn defaults_and_values() {
        let feeds = feeds(&json!([
            feed(json!({})),
            feed(json!({
                "name": "isac", "username": "u", "password": 1234, "poll_interval": "60",
                "initial_lookback": 0, "types": ["indicator"], "verify": false
            }))
        ]))
        .unwrap();
        assert_eq!(feeds[0].poll_interval, Duration::from_secs(300));
        assert_eq!(feeds[0].initial_lookback, 30);
        assert_eq!(feeds[0].types, ["indicator", "sighting"]);
        assert!(feeds[0].verify && !feeds[1].verify);
        assert_eq!(feeds[1].password.as_deref(), Some("1234"));
        assert_eq!(feeds[1].poll_interval, Duration::from_secs(60));
        assert!(!feeds[1].to_json().to_string().contains("1234"));
    }

    #[test]
    fn errors_name_the_feed_and_the_key() {
        let err = |section: Value| feeds(&section).unwrap_err().to_string();
        let e = err(json!([
            feed(json!({})),
            feed(json!({"name": "x", "poll_interval": 0}))
        ]));
        assert!(
            e.starts_with("plugins.apps.taxii_feeds[1].poll_interval")
                && e.contains("(feed \"x\")"),
            "{e}"
        );
        let e = err(json!([feed(json!({"types": ["malware"]}))]));
        assert!(
            e.starts_with("plugins.apps.taxii_feeds[0].types") && e.contains("malware"),
            "{e}"
        );
        let e = err(json!([feed(json!({})), feed(json!({}))]));
        assert!(e.contains("two feeds are named \"cert\""), "{e}");
        let e = err(json!([feed(json!({"name": "a b"}))]));
        assert!(e.starts_with("plugins.apps.taxii_feeds[0].name"), "{e}");
        let e = err(json!([feed(json!({"username": "u"}))]));
        assert!(e.starts_with("plugins.apps.taxii_feeds[0].password"), "{e}");
        let e = err(json!([{"name": "n", "url": "u"}]));
        assert!(
            e.contains("collection") && e.contains("(feed \"n\")"),
            "{e}"
        );
        let e = err(json!({"name": "n"}));
        assert!(
            e.starts_with("plugins.apps.taxii_feeds: expected a list"),
            "{e}"
        );
        let e = err(json!([feed(json!({"color": 1}))]));
        assert!(e.contains("color"), "{e}");
    }
}
