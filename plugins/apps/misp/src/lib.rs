//! The MISP app (`plugins.apps.misp`): MISP's attribute feed → STIX indicators on the bus.
//!
//! * [`feed`]: the ZeroMQ SUB socket to MISP's publisher, each notification filtered and mapped.
//! * [`attribute`]: a MISP attribute notification → a STIX Indicator (type table, compound
//!   types, escaping, the `to_ids` / action matrix).
//! * [`filter`]: which attributes pass the configured `filter`.
//! * [`rest`]: the bodies of the REST calls to MISP: a sighting (`/sightings/add`) and the
//!   snapshot searches (`/attributes/restSearch`).
//!
//! Work in progress: sightings back to MISP and snapshots through its REST API are not wired
//! yet; with `api` configured the app says so at start and runs the feed alone.

pub mod attribute;
pub mod feed;
pub mod filter;
pub mod rest;

use serde::Deserialize;
use serde_json::Value;
use threatbus_core::config::{ConfigError, lenient_string, parse_section, port};
use threatbus_core::{App, BoxFuture, BusHandle, PluginError, Shutdown};

use crate::filter::FilterEntry;

/// Where the section lives in the config file.
pub const KEY: &str = "plugins.apps.misp";

/// Settings of `plugins.apps.misp` (upstream's keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MispConfig {
    /// MISP's REST API, for sightings back and snapshots.
    #[serde(default)]
    pub api: Option<ApiConfig>,
    /// Which attributes reach the bus; empty: all.
    #[serde(default)]
    pub filter: Vec<FilterEntry>,
    /// MISP's ZeroMQ publisher.
    #[serde(default)]
    pub zmq: Option<FeedConfig>,
    /// MISP's Kafka feed: not supported yet.
    #[serde(default)]
    pub kafka: Option<Value>,
}

/// `api`: MISP's REST API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Base URL, e.g. `https://misp.example.org`.
    #[serde(deserialize_with = "lenient_string")]
    pub host: String,
    /// Verify the server's TLS certificate.
    pub ssl: bool,
    /// The API key.
    #[serde(deserialize_with = "lenient_string")]
    pub key: String,
}

/// `zmq`: where MISP's ZeroMQ plugin publishes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    #[serde(deserialize_with = "lenient_string")]
    pub host: String,
    #[serde(deserialize_with = "port")]
    pub port: u16,
}

impl MispConfig {
    /// Reads and validates the section.
    pub fn from_section(section: &Value) -> Result<Self, ConfigError> {
        let config: Self = parse_section(KEY, section)?;
        match (&config.zmq, &config.kafka) {
            (_, Some(_)) => Err(ConfigError::new(
                format!("{KEY}.kafka"),
                "the Kafka feed is not supported yet; use MISP's ZeroMQ feed (`zmq: {host, port}`)",
            )),
            (None, None) => Err(ConfigError::new(
                format!("{KEY}.zmq"),
                "required: the host and port of MISP's ZeroMQ publisher",
            )),
            (Some(feed), None) if feed.host.trim().is_empty() => Err(ConfigError::new(
                format!("{KEY}.zmq.host"),
                "must not be empty",
            )),
            (Some(_), None) => Ok(config),
        }
    }
}

/// The MISP app.
pub struct MispApp {
    config: MispConfig,
}

impl MispApp {
    pub fn build(section: &Value) -> Result<Self, ConfigError> {
        Ok(Self {
            config: MispConfig::from_section(section)?,
        })
    }
}

impl App for MispApp {
    fn name(&self) -> &'static str {
        "misp"
    }

    fn run(
        self: Box<Self>,
        bus: BusHandle,
        shutdown: Shutdown,
    ) -> BoxFuture<Result<(), PluginError>> {
        Box::pin(async move {
            let config = self.config;
            match &config.api {
                Some(api) => tracing::warn!(
                    host = %api.host,
                    "MISP app: sightings back to MISP and snapshots from its REST API are not implemented in this version yet; only the attribute feed runs"
                ),
                None => tracing::warn!(
                    "MISP app without `api`: attributes are ingested, but sightings are not reported to MISP and snapshots are not answered"
                ),
            }
            let Some(feed) = config.zmq else {
                return Err(PluginError(format!("{KEY}.zmq: required")));
            };
            let endpoint = threatbus_zmq::tcp_endpoint(&feed.host, feed.port);
            let stop = shutdown.stop_input.clone();
            let filters = config.filter;
            let receiving =
                tokio::task::spawn_blocking(move || feed::run(endpoint, filters, bus, stop));
            match receiving.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(PluginError(format!("{KEY}: {err}"))),
                Err(err) => Err(PluginError(format!("{KEY}: the feed thread failed: {err}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upstream_config_parses_and_errors_name_the_key() {
        let config = MispConfig::from_section(&json!({
            "api": {"host": "https://localhost", "ssl": false, "key": "MISP_API_KEY"},
            "filter": [{"orgs": ["1", 25], "tags": ["TLP:AMBER"], "types": ["ip-src"]}],
            "zmq": {"host": "localhost", "port": 50000}
        }))
        .unwrap();
        assert_eq!(config.filter[0].orgs, ["1", "25"]);
        assert_eq!(config.zmq.unwrap().port, 50000);
        let cases = [
            (
                json!({"kafka": {"topics": ["misp_attribute"]}}),
                "plugins.apps.misp.kafka",
                "not supported yet",
            ),
            (json!({}), "plugins.apps.misp.zmq", "required"),
            (
                json!({"zmq": {"host": "x", "port": "abc"}}),
                "plugins.apps.misp.zmq.port",
                "abc",
            ),
            (
                json!({"zmq": {"host": "x", "port": 1}, "api": {"host": "h", "ssl": true}}),
                "plugins.apps.misp.api",
                "key",
            ),
            (
                json!({"zmq": {"host": "x", "port": 1}, "filter": [{"orgs": [true]}]}),
                "plugins.apps.misp.filter",
                "organisation id",
            ),
        ];
        for (section, key, text) in cases {
            let err = MispConfig::from_section(&section).unwrap_err().to_string();
            assert!(
                err.starts_with(key) && err.contains(text),
                "{section}: {err}"
            );
        }
    }
}
