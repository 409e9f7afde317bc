//! The Zeek app (`plugins.apps.zeek`): a Broker peer in pure Rust (over [`threatbus_broker`]),
//! so that Zeek with upstream's `threatbus.zeek` connects unchanged.
//!
//! The app listens on `host:port`; Zeek peers with it (`Broker::peer`). Each connection is
//! TLS (anonymous ECDH, Zeek's default, or with certificates if configured) or plain TCP (Zeek
//! with `Broker::disable_ssl=T`), told apart by the first byte ([`transport`]). After the
//! Broker handshake, a [`peer`] task speaks the `Tenzir::*` events ([`mapping`]):
//! `subscribe` → `subscription_acknowledged(p2p)` and a bus subscription whose indicators go to
//! Zeek as `intel` on the p2p topic (held until Zeek's filter covers it); `unsubscribe`;
//! `sighting` → STIX Sightings on the bus. Each peer's frames go in and out through one
//! [`connection::Connection`].

#![forbid(unsafe_code)]

mod connection;
pub mod mapping;
pub mod metrics;
mod peer;
mod server;
pub mod transport;

use std::path::PathBuf;
use std::time::Duration;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use threatbus_core::config::{
    ConfigError, host, lenient_string, parse_section, port, whole, whole_seconds,
};
use threatbus_core::{App, BoxFuture, BusHandle, PluginError, Shutdown};

/// Where the section lives in the config file.
pub const KEY: &str = "plugins.apps.zeek";

/// Settings of `plugins.apps.zeek`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZeekConfig {
    /// Address to listen on for Zeek's Broker connections. Default `localhost`.
    #[serde(default = "default_host", deserialize_with = "host")]
    pub host: String,
    /// Port to listen on (Zeek's `Tenzir::broker_port`). Default 47761.
    #[serde(default = "default_port", deserialize_with = "port")]
    pub port: u16,
    /// Namespace of the event names (`Tenzir::intel`). Received names are accepted with or
    /// without it. Default `Tenzir`.
    #[serde(default = "default_namespace", deserialize_with = "lenient_string")]
    pub module_namespace: String,

    // ----- not in upstream -----
    /// Accept plain TCP connections (Zeek with `Broker::disable_ssl=T`) besides TLS ones.
    /// Default `true`.
    #[serde(default = "yes")]
    pub allow_plain: bool,
    /// Certificate-based TLS, as Zeek uses when `Broker::ssl_certificate` and friends are
    /// set. Absent: TLS connections use anonymous ECDH, Zeek's default.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Largest Broker frame accepted from Zeek, in bytes; a larger one closes that
    /// connection. Default 1 MiB.
    #[serde(default = "default_max_frame", deserialize_with = "frame_size")]
    pub max_frame_size: usize,
    /// Seconds between pings to each Zeek peer; a peer silent for two intervals is
    /// disconnected (Broker itself has no keep-alive). Default 30.
    #[serde(
        serialize_with = "threatbus_core::config::serialize_seconds",
        default = "default_ping",
        deserialize_with = "seconds"
    )]
    pub ping_interval: Duration,
    /// Seconds a new connection may take for TLS and the Broker handshake. Default 10.
    #[serde(
        serialize_with = "threatbus_core::config::serialize_seconds",
        default = "default_handshake",
        deserialize_with = "seconds"
    )]
    pub handshake_timeout: Duration,
    /// Seconds a subscription waits for Zeek to subscribe to its p2p topic (Zeek does so right
    /// after the acknowledgement); after that it is removed with a log line, so that
    /// subscriptions nobody reads do not hold intel in memory. Default 60.
    #[serde(
        serialize_with = "threatbus_core::config::serialize_seconds",
        default = "default_p2p_timeout",
        deserialize_with = "seconds"
    )]
    pub p2p_timeout: Duration,
    /// Zeek connections held at once, handshakes included; a connection beyond it is closed
    /// at once (logged, throttled, and counted in `threatbus_zeek_refused_connections_total`).
    /// Default 256.
    #[serde(default = "default_max_connections", deserialize_with = "connections")]
    pub max_connections: usize,
    /// Connections still in TLS or the Broker handshake at once; beyond it a new connection
    /// is closed at once, so that a flood of connections that never finish cannot hold file
    /// descriptors and memory for `handshake_timeout` each. Default 32.
    #[serde(default = "default_max_handshakes", deserialize_with = "connections")]
    pub max_handshakes: usize,
}

/// Certificate, key and CA for certificate-based TLS. Zeek's authenticated mode verifies both
/// sides: the bus asks for Zeek's certificate and checks it against `ca_file`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate (chain) of the bus.
    pub cert_file: PathBuf,
    /// PEM private key of the bus.
    pub key_file: PathBuf,
    /// PEM CA certificates that signed Zeek's certificate.
    pub ca_file: PathBuf,
}

fn default_host() -> String {
    "localhost".into()
}

fn default_port() -> u16 {
    47761
}

fn default_namespace() -> String {
    "Tenzir".into()
}

fn yes() -> bool {
    true
}

fn default_max_frame() -> usize {
    1 << 20
}

fn default_ping() -> Duration {
    Duration::from_secs(30)
}

fn default_handshake() -> Duration {
    Duration::from_secs(10)
}

fn default_p2p_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_max_connections() -> usize {
    256
}

fn default_max_handshakes() -> usize {
    32
}

fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    whole_seconds(deserializer, 1, 86_400)
}

fn frame_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    whole(deserializer, 1024, 1 << 30).map(|n| n as usize)
}

fn connections<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    whole(deserializer, 1, 65_536).map(|n| n as usize)
}

impl ZeekConfig {
    /// Reads and validates the section (an empty or absent section takes every default).
    pub fn from_section(section: &Value) -> Result<Self, ConfigError> {
        let empty = Value::Object(Default::default());
        let section = if section.is_null() { &empty } else { section };
        let config: Self = parse_section(KEY, section)?;
        if config.module_namespace.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                format!("{KEY}.module_namespace"),
                format!("must not contain spaces, got {:?}", config.module_namespace),
            ));
        }
        Ok(config)
    }
}

/// The Zeek app.
pub struct ZeekApp {
    config: ZeekConfig,
    transport: transport::Transport,
}

impl ZeekApp {
    /// Builds the app from its config section: reads the TLS files, binds nothing yet.
    pub fn build(section: &Value) -> Result<Self, ConfigError> {
        let config = ZeekConfig::from_section(section)?;
        let transport = transport::Transport::new(&config)?;
        Ok(Self { config, transport })
    }
}

impl App for ZeekApp {
    fn name(&self) -> &'static str {
        "zeek"
    }

    fn effective_config(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.config).ok()
    }

    fn run(
        self: Box<Self>,
        bus: BusHandle,
        shutdown: Shutdown,
    ) -> BoxFuture<Result<(), PluginError>> {
        Box::pin(server::run(self.config, self.transport, bus, shutdown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_upstreams() {
        for section in [Value::Null, json!({})] {
            let config = ZeekConfig::from_section(&section).unwrap();
            assert_eq!(
                (
                    config.host.as_str(),
                    config.port,
                    config.module_namespace.as_str()
                ),
                ("localhost", 47761, "Tenzir")
            );
            assert!(config.allow_plain && config.tls.is_none());
            assert_eq!(config.max_frame_size, 1 << 20);
            assert_eq!((config.max_connections, config.max_handshakes), (256, 32));
            assert_eq!(config.p2p_timeout, Duration::from_secs(60));
        }
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let cases = [
            (json!({"port": "abc"}), "plugins.apps.zeek.port", "abc"),
            (json!({"host": ""}), "plugins.apps.zeek.host", ""),
            (
                json!({"ping_interval": 0}),
                "plugins.apps.zeek.ping_interval",
                "0",
            ),
            (
                json!({"max_frame_size": 10}),
                "plugins.apps.zeek.max_frame_size",
                "10",
            ),
            (
                json!({"max_connections": 0}),
                "plugins.apps.zeek.max_connections",
                "0",
            ),
            (
                json!({"max_handshakes": "many"}),
                "plugins.apps.zeek.max_handshakes",
                "many",
            ),
            (json!({"colour": "red"}), "plugins.apps.zeek", "colour"),
            (
                json!({"tls": {"cert_file": "/x"}}),
                "plugins.apps.zeek.tls",
                "key_file",
            ),
        ];
        for (section, key, value) in cases {
            let err = ZeekConfig::from_section(&section).unwrap_err().to_string();
            assert!(
                err.starts_with(key) && err.contains(value),
                "{section}: {err}"
            );
        }
    }

    #[test]
    fn unreadable_tls_files_fail_the_build_naming_the_key() {
        let section = json!({"tls": {"cert_file": "/nonexistent/c.pem", "key_file": "/nonexistent/k.pem", "ca_file": "/nonexistent/ca.pem"}});
        let err = ZeekApp::build(&section).err().unwrap().to_string();
        assert!(err.starts_with("plugins.apps.zeek.tls.cert_file"), "{err}");
        assert!(err.contains("/nonexistent/c.pem"), "{err}");
    }
}
