//! The MISP app (`plugins.apps.misp`): MISP's attribute feed → STIX indicators on the bus.
//!
//! * [`feed`]: the ZeroMQ SUB socket to MISP's publisher, each notification filtered and mapped.
//! * [`attribute`]: a MISP attribute notification → a STIX Indicator (type table, compound
//!   types, escaping, the `to_ids` / action matrix).
//! * [`filter`]: which attributes pass the configured `filter`.
//! * [`rest`]: the bodies of the REST calls to MISP: a sighting (`/sightings/add`) and the
//!   snapshot searches (`/attributes/restSearch`); [`api`] makes the calls.
//! * [`sightings`]: STIX sightings from the bus → MISP sightings (only with `api`).
//! * [`snapshot`]: snapshot requests for indicators answered from MISP's search (only with
//!   `api`).

#![forbid(unsafe_code)]

pub mod api;
pub mod attribute;
pub mod feed;
pub mod filter;
pub mod rest;
mod retry;
pub mod sightings;
pub mod snapshot;

use std::path::PathBuf;

use serde::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use threatbus_core::config::{
    BackoffConfig, ConfigError, lenient_string, parse_section, port, whole,
};
use threatbus_core::{App, BoxFuture, BusHandle, PluginError, Shutdown};
use threatbus_net::Backoff;
use threatbus_net::http::SetupError;

use crate::api::MispApi;
use crate::filter::FilterEntry;
use crate::retry::Retry;

/// Where the section lives in the config file.
pub const KEY: &str = "plugins.apps.misp";

/// Settings of `plugins.apps.misp` (upstream's keys).
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    #[serde(default, skip_serializing)]
    pub kafka: Option<Value>,

    // ----- not in upstream -----
    /// Waits between attempts at a call MISP could not serve (the check at start, reporting a
    /// sighting, a snapshot search).
    #[serde(default)]
    pub retry: BackoffConfig,
}

/// `api`: MISP's REST API.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// PEM file with the certificate authorities to trust for `host` (not upstream). Default:
    /// the system's trust store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Attributes per restSearch page when answering snapshots (not upstream). Default 1000.
    #[serde(default = "default_page_size", deserialize_with = "page_size")]
    pub page_size: u32,
}

fn default_page_size() -> u32 {
    1000
}

fn page_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    whole(deserializer, 1, 100_000).map(|n| n as u32)
}

/// `zmq`: where MISP's ZeroMQ plugin publishes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    #[serde(deserialize_with = "threatbus_core::config::host")]
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
            (Some(_), None) => {
                config.retry.check(&format!("{KEY}.retry"))?;
                if let Some(api) = &config.api {
                    api.validate()?;
                }
                Ok(config)
            }
        }
    }
}

impl ApiConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.key.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{KEY}.api.key"),
                "must not be empty: MISP's API key (MISP: Administration → List Auth Keys)",
            ));
        }
        if self.key.chars().any(char::is_control) {
            return Err(ConfigError::new(
                format!("{KEY}.api.key"),
                "must not contain control characters such as line breaks",
            ));
        }
        MispApi::new(self).map(drop).map_err(|err| match err {
            SetupError::Url { .. } => ConfigError::new(format!("{KEY}.api.host"), err.to_string()),
            SetupError::Tls(tls) => {
                ConfigError::new(format!("{KEY}.api.{}", tls.field), tls.message)
            }
        })
    }
}

/// Backoff between attempts at calls MISP could not serve.
fn backoff(retry: &BackoffConfig) -> Backoff {
    Backoff::new(retry.min_delay, retry.max_delay)
}

/// Checks once at start that MISP answers and takes the key (`GET /servers/getVersion`), and
/// keeps trying with backoff until it does; the feed and the workers run meanwhile.
async fn check_api(
    config: ApiConfig,
    retry: BackoffConfig,
    stop: tokio_util::sync::CancellationToken,
) {
    let Ok(mut api) = MispApi::new(&config) else {
        return;
    };
    let mut retry = Retry::new(backoff(&retry));
    loop {
        match api.check().await {
            Ok(version) => {
                retry.succeeded();
                tracing::info!(url = %api.url(""), %version, "MISP API reachable");
                return;
            }
            Err(err) => {
                if !retry
                    .wait(
                        "checking MISP's API (GET /servers/getVersion)",
                        &err.to_string(),
                        &stop,
                    )
                    .await
                {
                    return;
                }
            }
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

    fn effective_config(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.config).ok()
    }

    fn run(
        self: Box<Self>,
        bus: BusHandle,
        shutdown: Shutdown,
    ) -> BoxFuture<Result<(), PluginError>> {
        Box::pin(async move {
            let config = self.config;
            let Some(feed) = config.zmq else {
                return Err(PluginError::message(format!("{KEY}.zmq: required")));
            };
            let mut workers = tokio::task::JoinSet::new();
            // Nothing to bind: the app is ready once started (MISP's reachability shows in
            // the log and in the counters, not in readiness).
            bus.set_ready(true);
            match &config.api {
                Some(api) => {
                    let client = || {
                        MispApi::new(api).map_err(|err| PluginError::new(format!("{KEY}.api"), err))
                    };
                    workers.spawn(sightings::run(
                        client()?,
                        bus.clone(),
                        backoff(&config.retry),
                        shutdown.stop.clone(),
                    ));
                    workers.spawn(snapshot::run(
                        client()?,
                        bus.clone(),
                        config.filter.clone(),
                        api.page_size,
                        backoff(&config.retry),
                        shutdown.stop.clone(),
                    ));
                    let check = check_api(api.clone(), config.retry, shutdown.stop.clone());
                    workers.spawn(async move {
                        check.await;
                        Ok(())
                    });
                }
                None => tracing::warn!(
                    "MISP app without `api`: attributes are ingested, but sightings are not reported to MISP and snapshots are not answered"
                ),
            }
            let endpoint = threatbus_zmq_client::tcp_endpoint(&feed.host, feed.port);
            let stop = shutdown.stop_input.clone();
            let filters = config.filter;
            let feed_bus = bus.clone();
            let mut receiving =
                tokio::task::spawn_blocking(move || feed::run(endpoint, filters, feed_bus, stop));
            // The feed runs until input stops; a worker that fails ends the app.
            let fed = loop {
                tokio::select! {
                    fed = &mut receiving => break fed,
                    Some(done) = workers.join_next() => {
                        if let Ok(Err(err)) = done {
                            shutdown.stop_input.cancel();
                            let _ = receiving.await;
                            return Err(err);
                        }
                    }
                }
            };
            while let Some(done) = workers.join_next().await {
                if let Ok(Err(err)) = done {
                    return Err(err);
                }
            }
            match fed {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(PluginError::new(KEY, err)),
                Err(err) => Err(PluginError::new(
                    format!("{KEY}: the feed thread failed"),
                    err,
                )),
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
                json!({"zmq": {"host": "x", "port": 1}, "api": {"host": "misp.local", "ssl": true, "key": "k"}}),
                "plugins.apps.misp.api.host",
                "misp.local",
            ),
            (
                json!({"zmq": {"host": "x", "port": 1}, "api": {"host": "https://m", "ssl": true, "key": " "}}),
                "plugins.apps.misp.api.key",
                "empty",
            ),
            (
                json!({"zmq": {"host": "x", "port": 1}, "api": {"host": "https://m", "ssl": true, "key": "k", "page_size": 0}}),
                "plugins.apps.misp.api.page_size",
                "got 0",
            ),
            (
                json!({"zmq": {"host": "x", "port": 1}, "api": {"host": "https://m", "ssl": true, "key": "k", "ca_file": "/nonexistent/ca.pem"}}),
                "plugins.apps.misp.api.ca_file",
                "/nonexistent/ca.pem",
            ),
            (
                json!({"zmq": {"host": "x", "port": 1}, "api": {"host": "https://m", "ssl": true, "key": "line\nbreak"}}),
                "plugins.apps.misp.api.key",
                "line breaks",
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
