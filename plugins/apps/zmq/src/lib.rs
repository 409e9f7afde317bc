//! The ZeroMQ app (`plugins.apps.zmq`), wire-compatible with upstream's `threatbus-zmq`.
//!
//! Three sockets bind on `host`:
//! * `manage` (REP): JSON subscribe / unsubscribe / heartbeat requests ([`manage`]);
//! * `pub` (PUB): bus → apps, single-part frames `<p2p_topic><suffix> <json>` ([`publisher`]);
//! * `sub` (SUB): apps → bus, frames `<topic> <json>` on `stix2/…` and
//!   `threatbus/snapshotenvelope` ([`receiver`]).
//!
//! Each subscribe request gets a fresh 32-letter p2p topic and its own bus subscriber, which also
//! receives every snapshot request made by other subscribers (upstream's snapshot hook).

#![forbid(unsafe_code)]

pub mod error;
pub mod manage;
pub mod metrics;
mod publisher;
pub mod receiver;
mod server;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use threatbus_core::config::{
    ConfigError, host, parse_section, port, positive_seconds, positive_usize, whole,
};
use threatbus_core::{App, BoxFuture, BusHandle, PluginError, Shutdown};
use threatbus_zmq_client::tcp_endpoint;

/// Settings of `plugins.apps.zmq`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZmqConfig {
    /// Address all three sockets bind to, e.g. `127.0.0.1`, `0.0.0.0` or `::1`.
    #[serde(deserialize_with = "host")]
    pub host: String,
    /// Port of the management (REQ/REP) socket; conventionally 13370.
    #[serde(deserialize_with = "port")]
    pub manage: u16,
    /// Port of the socket apps receive from (PUB); conventionally 13371.
    #[serde(rename = "pub", deserialize_with = "port")]
    pub pub_port: u16,
    /// Port of the socket apps publish to (SUB); conventionally 13372.
    #[serde(rename = "sub", deserialize_with = "port")]
    pub sub_port: u16,
    /// Largest message accepted on the manage and sub sockets, in bytes. A peer that sends a
    /// larger one is disconnected by ZeroMQ (and reconnects). Default 1 MiB.
    #[serde(
        default = "default_max_message_size",
        deserialize_with = "message_size"
    )]
    pub max_message_size: i64,
    /// Per-app send buffer of the pub socket, in messages (ZeroMQ's high-water mark). When it is
    /// full the publisher holds that app's frames and the app's bus queue absorbs the lag
    /// (`bus.queue_capacity`, then `bus.when_full`); ZeroMQ drops nothing. Default 1000, as
    /// ZeroMQ's own default: the bus queue, not ZeroMQ, is where lag is buffered and counted.
    #[serde(default = "default_hwm", deserialize_with = "hwm")]
    pub send_hwm: i32,
    /// Receive buffer of the sub socket, in messages (ZeroMQ's high-water mark). When apps
    /// publish faster than the bus takes messages in, ZeroMQ buffers up to this many; beyond it
    /// the publishing app's own send buffer fills (and, unless it sets `ZMQ_XPUB_NODROP`, its
    /// ZeroMQ drops). Default 1000, as ZeroMQ's own default.
    #[serde(default = "default_hwm", deserialize_with = "hwm")]
    pub receive_hwm: i32,
    /// Forget a subscription that has sent no heartbeat (and no other request) for this many
    /// seconds. Off by default, like upstream: apps that never send heartbeats keep working.
    #[serde(default, deserialize_with = "optional_seconds")]
    pub subscription_timeout: Option<u64>,
    /// Seconds a subscription may go without any SUB socket listening to its p2p topic before
    /// it is removed (apps subscribe their SUB socket right after the subscribe reply; one that
    /// never does, or went away, holds a subscription nobody reads). After 5 s without a
    /// listener nothing is queued for it any more. Default 300.
    #[serde(default = "default_listener_timeout", deserialize_with = "seconds")]
    pub listener_timeout: u64,
    /// Largest management request answered, in bytes; a larger one gets an error reply that
    /// names this key. Default 65536.
    #[serde(
        default = "default_max_request_size",
        deserialize_with = "positive_usize"
    )]
    pub max_request_size: usize,
    /// Longest topic a subscription may name, in bytes. Default 1024.
    #[serde(
        default = "default_max_topic_length",
        deserialize_with = "positive_usize"
    )]
    pub max_topic_length: usize,
    /// Most topics one subscribe request may name. Default 64.
    #[serde(
        default = "default_max_topics_per_request",
        deserialize_with = "positive_usize"
    )]
    pub max_topics_per_request: usize,
    /// Most subscriptions the ZeroMQ app holds at once; a subscribe beyond it gets an error
    /// reply that names this key. Default 1024.
    #[serde(
        default = "default_max_subscriptions",
        deserialize_with = "positive_usize"
    )]
    pub max_subscriptions: usize,
}

fn default_max_message_size() -> i64 {
    1024 * 1024
}

fn default_listener_timeout() -> u64 {
    300
}

fn default_max_request_size() -> usize {
    64 * 1024
}

fn default_max_topic_length() -> usize {
    1024
}

fn default_max_topics_per_request() -> usize {
    64
}

fn default_max_subscriptions() -> usize {
    1024
}

/// ZeroMQ's own default, which the Python Threat Bus runs with.
fn default_hwm() -> i32 {
    1000
}

fn message_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    whole(deserializer, 1024, i64::MAX as u64).map(|n| n as i64)
}

fn hwm<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
    whole(deserializer, 1, i32::MAX as u64).map(|n| n as i32)
}

fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    positive_seconds(deserializer).map(|duration| duration.as_secs())
}

/// Seconds, or nothing (`null`, as an absent key).
fn optional_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        value => seconds(value).map(Some).map_err(serde::de::Error::custom),
    }
}

impl ZmqConfig {
    /// Reads and validates the section.
    pub fn from_section(section: &Value) -> Result<Self, ConfigError> {
        const KEY: &str = "plugins.apps.zmq";
        let config: Self = parse_section(KEY, section)?;
        let ports = [
            ("manage", config.manage),
            ("pub", config.pub_port),
            ("sub", config.sub_port),
        ];
        for (i, (a, pa)) in ports.iter().enumerate() {
            for (b, pb) in &ports[i + 1..] {
                if pa == pb && *pa != 0 {
                    return Err(ConfigError::new(
                        KEY,
                        format!("`{a}` and `{b}` must be different ports, both are {pa}"),
                    ));
                }
            }
        }
        Ok(config)
    }

    /// What one management request may carry.
    pub fn limits(&self) -> manage::Limits {
        manage::Limits {
            max_request_size: self.max_request_size,
            max_topic_length: self.max_topic_length,
            max_topics_per_request: self.max_topics_per_request,
        }
    }

    /// `tcp://host:port`, with brackets around IPv6 addresses.
    fn endpoint(&self, port: u16) -> String {
        tcp_endpoint(&self.host, port)
    }

    fn is_ipv6(&self) -> bool {
        self.host.contains(':')
    }
}

/// The ZeroMQ app.
#[derive(Debug)]
pub struct ZmqApp {
    config: ZmqConfig,
}

impl ZmqApp {
    /// Builds the app from its config section; no socket is touched yet.
    pub fn build(section: &Value) -> Result<Self, ConfigError> {
        Ok(Self {
            config: ZmqConfig::from_section(section)?,
        })
    }
}

impl App for ZmqApp {
    fn name(&self) -> &'static str {
        "zmq"
    }

    fn effective_config(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.config).ok()
    }

    fn run(
        self: Box<Self>,
        bus: BusHandle,
        shutdown: Shutdown,
    ) -> BoxFuture<Result<(), PluginError>> {
        Box::pin(server::run(self.config, bus, shutdown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_requires_upstream_keys_and_names_bad_values() {
        let ok = ZmqConfig::from_section(
            &json!({"host": "127.0.0.1", "manage": 13370, "pub": 13371, "sub": 13372}),
        )
        .unwrap();
        assert_eq!((ok.manage, ok.pub_port, ok.sub_port), (13370, 13371, 13372));
        assert_eq!(ok.endpoint(1), "tcp://127.0.0.1:1");
        let v6 = ZmqConfig::from_section(&json!({"host": "::1", "manage": 1, "pub": 2, "sub": 3}))
            .unwrap();
        assert_eq!(v6.endpoint(1), "tcp://[::1]:1");

        let err = ZmqConfig::from_section(
            &json!({"host": "127.0.0.1", "manage": "abc", "pub": 1, "sub": 2}),
        )
        .unwrap_err();
        assert_eq!(err.key, "plugins.apps.zmq.manage");
        assert!(err.message.contains("abc"), "{err}");
        let err =
            ZmqConfig::from_section(&json!({"host": "127.0.0.1", "pub": 1, "sub": 2})).unwrap_err();
        assert!(err.to_string().contains("manage"), "{err}");
        let err =
            ZmqConfig::from_section(&json!({"host": "127.0.0.1", "manage": 1, "pub": 1, "sub": 2}))
                .unwrap_err();
        assert!(err.to_string().contains("different"), "{err}");
        let err = ZmqConfig::from_section(
            &json!({"host": "127.0.0.1", "manage": 1, "pub": 2, "sub": 3, "bogus": 1}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = ZmqConfig::from_section(&Value::Null).unwrap_err();
        assert!(err.to_string().contains("host"), "{err}");
    }
}
