//! Settings of `plugins.backbones.rabbitmq`.
//!
//! The keys and defaults of upstream's `threatbus-rabbitmq` (spec §4.1) come first and mean the
//! same; everything after them is new and has a default, so an upstream config works unchanged.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use threatbus_core::config::{
    BackoffConfig, ConfigError, lenient_string, non_negative_u64, parse_section, port,
    positive_usize, whole, whole_seconds,
};

/// Where the section lives in the config file; every error names a key below it.
pub const KEY: &str = "plugins.backbones.rabbitmq";

/// Settings of `plugins.backbones.rabbitmq`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqConfig {
    /// Host name or IP address of the RabbitMQ server. Required.
    #[serde(deserialize_with = "threatbus_core::config::host")]
    pub host: String,
    /// AMQP port of the server (conventionally 5672, or 5671 with TLS). Required.
    #[serde(deserialize_with = "port")]
    pub port: u16,
    /// User name to log in with. Required.
    #[serde(deserialize_with = "lenient_string")]
    pub username: String,
    /// Password to log in with. Required.
    #[serde(deserialize_with = "lenient_string")]
    pub password: String,
    /// Virtual host. Default `/`.
    #[serde(default = "default_vhost", deserialize_with = "lenient_string")]
    pub vhost: String,
    /// Name of the fanout exchange every bus instance publishes to. Default `threatbus`.
    #[serde(default = "default_exchange", deserialize_with = "lenient_string")]
    pub exchange_name: String,
    /// This instance's queue.
    #[serde(default)]
    pub queue: QueueConfig,

    // ----- not in upstream -----
    /// Declare the exchange durable, so that it and its bindings survive a broker restart.
    /// Default `false`, as upstream: RabbitMQ refuses to redeclare an exchange with other flags,
    /// so every instance on the exchange (a Python one included) must agree.
    #[serde(default)]
    pub exchange_durable: bool,
    /// Connect with TLS (`amqps`). Absent: plain AMQP, as upstream.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Heartbeat interval in seconds proposed to the server; a connection that stays silent for
    /// about two intervals counts as lost. `0` turns heartbeats off. Default 60.
    #[serde(default = "default_heartbeat", deserialize_with = "seconds_u16")]
    pub heartbeat: u16,
    /// Seconds a connection attempt (TCP, TLS and AMQP handshake) may take. Default 10.
    #[serde(
        serialize_with = "threatbus_core::config::serialize_seconds",
        default = "default_connect_timeout",
        deserialize_with = "positive_seconds"
    )]
    pub connect_timeout: Duration,
    /// Backoff between reconnection attempts.
    #[serde(default)]
    pub reconnect: BackoffConfig,
    /// Messages RabbitMQ hands this instance before it has acknowledged them (AMQP prefetch
    /// count). `0` means no limit (upstream's behaviour). Default 1000.
    #[serde(default = "default_prefetch", deserialize_with = "prefetch")]
    pub prefetch: u16,
    /// Messages the bus keeps for publishing while RabbitMQ is unreachable (those sent but not
    /// yet confirmed included); beyond it the newest are dropped, counted and logged. While
    /// connected, local publishers wait instead once `confirm_window` messages await their
    /// confirm. Default 100000.
    #[serde(
        default = "default_publish_buffer",
        deserialize_with = "positive_usize"
    )]
    pub publish_buffer: usize,
    /// AMQP messages sent to the server but not yet confirmed, at most; more wait in the
    /// buffer. Default 4096.
    #[serde(
        default = "default_confirm_window",
        deserialize_with = "positive_usize"
    )]
    pub confirm_window: usize,
    /// Bus messages packed into one AMQP message at most, one JSON document per line with
    /// content type `application/x-ndjson`, when several are waiting to be published. `1`, the
    /// default, publishes each on its own as upstream does. Larger values multiply throughput
    /// through RabbitMQ, which then stores, delivers and confirms one message per batch, but
    /// **only this port reads such batches**: use them only when no Python Threat Bus shares
    /// the exchange. `queue.max_items` then counts batches. At most 10000.
    #[serde(
        default = "default_batch_messages",
        deserialize_with = "batch_messages"
    )]
    pub batch_messages: usize,
    /// Seconds without any publisher confirm, while messages await one, after which the
    /// connection counts as hung: it is closed and the messages are sent again on a new one.
    /// Not while the server blocks publishing (resource alarm). Default 30.
    #[serde(
        serialize_with = "threatbus_core::config::serialize_seconds",
        default = "default_confirm_timeout",
        deserialize_with = "positive_seconds"
    )]
    pub confirm_timeout: Duration,
    /// Seconds that shutdown may spend publishing what is buffered and waiting for the
    /// server's confirms before the connection is closed. Default 5.
    #[serde(
        serialize_with = "threatbus_core::config::serialize_seconds",
        default = "default_flush_timeout",
        deserialize_with = "positive_seconds"
    )]
    pub flush_timeout: Duration,
    /// What to do with a message from RabbitMQ that is not a bus message: `ack` drops it after
    /// logging (upstream's behaviour, the default); `reject` rejects it without requeueing, so
    /// that RabbitMQ dead-letters it if the queue has a dead-letter exchange (set one with a
    /// policy, which needs no change to the queue's arguments).
    #[serde(default)]
    pub on_undecodable: OnUndecodable,
}

/// `queue`: this instance's queue, bound to the exchange.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Last part of the queue name `threatbus<name_join_symbol><name_suffix>`. Every instance
    /// needs its own queue: instances sharing one split its messages between them. Default:
    /// the host name.
    #[serde(deserialize_with = "lenient_string")]
    pub name_suffix: String,
    /// Joins `threatbus` and the suffix. Default `.`.
    #[serde(deserialize_with = "lenient_string")]
    pub name_join_symbol: String,
    /// The queue (and, with it, its messages: they are sent persistent) survives a broker
    /// restart. Default `true`.
    pub durable: bool,
    /// `x-queue-mode: lazy`: keep messages on disk rather than in memory. Default `true`.
    pub lazy: bool,
    /// RabbitMQ deletes the queue when its last consumer goes. Default `false`.
    pub auto_delete: bool,
    /// Only this connection may use the queue; RabbitMQ deletes it when the connection closes
    /// (messages sent meanwhile are lost). Default `false`.
    pub exclusive: bool,
    /// `x-max-length`: RabbitMQ drops the oldest messages beyond this many. `0`, the default,
    /// means unlimited.
    #[serde(deserialize_with = "non_negative_u64")]
    pub max_items: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            name_suffix: host_name(),
            name_join_symbol: ".".into(),
            durable: true,
            lazy: true,
            auto_delete: false,
            exclusive: false,
            max_items: 0,
        }
    }
}

/// `tls`: connect with `amqps`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Use TLS. Default `false`.
    pub enabled: bool,
    /// PEM file with the certificate authorities that signed the server's certificate. Default:
    /// the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// Check the server's certificate and that it names `host`. Default `true`; turn it off
    /// only for testing.
    #[serde(default = "yes")]
    pub verify: bool,
    /// PEM file with a client certificate (chain), for servers that require one.
    pub cert_file: Option<PathBuf>,
    /// PEM file with the private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ca_file: None,
            verify: true,
            cert_file: None,
            key_file: None,
        }
    }
}

/// What happens to a message from RabbitMQ that is not a bus message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUndecodable {
    /// Acknowledge (drop) it after logging.
    #[default]
    Ack,
    /// Reject it without requeueing (dead-lettered if the queue has a dead-letter exchange).
    Reject,
}

impl RabbitMqConfig {
    /// Reads and validates the section.
    pub fn from_section(section: &Value) -> Result<Self, ConfigError> {
        let config: Self = parse_section(KEY, section)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let key = |name: &str| format!("{KEY}.{name}");
        if self.port == 0 {
            return Err(ConfigError::new(
                key("port"),
                "must be a port number from 1 to 65535, got 0",
            ));
        }
        if self.exchange_name.is_empty() {
            return Err(ConfigError::new(
                key("exchange_name"),
                "must not be empty (the empty name is RabbitMQ's default exchange)",
            ));
        }
        if self.exchange_name.starts_with("amq.") {
            return Err(ConfigError::new(
                key("exchange_name"),
                format!(
                    "names starting with \"amq.\" are reserved by RabbitMQ, got {:?}",
                    self.exchange_name
                ),
            ));
        }
        if self.exchange_name.len() > 255 {
            return Err(ConfigError::new(
                key("exchange_name"),
                format!(
                    "must be at most 255 bytes long, got {}",
                    self.exchange_name.len()
                ),
            ));
        }
        if self.queue.name_suffix.is_empty() {
            return Err(ConfigError::new(
                key("queue.name_suffix"),
                "must not be empty: every instance needs its own queue name",
            ));
        }
        let queue = self.queue_name();
        if queue.len() > 255 {
            return Err(ConfigError::new(
                key("queue.name_suffix"),
                format!("the queue name {queue:?} must be at most 255 bytes long"),
            ));
        }
        if self.vhost.len() > 255 {
            return Err(ConfigError::new(
                key("vhost"),
                "must be at most 255 bytes long",
            ));
        }
        self.reconnect.check(&key("reconnect"))?;
        let tls = &self.tls;
        if !tls.enabled {
            for (name, set) in [
                ("ca_file", tls.ca_file.is_some()),
                ("cert_file", tls.cert_file.is_some()),
                ("key_file", tls.key_file.is_some()),
            ] {
                if set {
                    return Err(ConfigError::new(
                        key(&format!("tls.{name}")),
                        "is set, but TLS is off: set tls.enabled to true",
                    ));
                }
            }
        }
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            let missing = if tls.cert_file.is_some() {
                "key_file"
            } else {
                "cert_file"
            };
            return Err(ConfigError::new(
                key(&format!("tls.{missing}")),
                "required when a client certificate is configured (cert_file and key_file go together)",
            ));
        }
        Ok(())
    }

    /// `threatbus<name_join_symbol><name_suffix>`, as upstream.
    pub fn queue_name(&self) -> String {
        format!(
            "threatbus{}{}",
            self.queue.name_join_symbol, self.queue.name_suffix
        )
    }

    /// `host:port` for log lines.
    pub fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The machine's host name, as Python's `socket.gethostname()`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

fn default_vhost() -> String {
    "/".into()
}

fn default_exchange() -> String {
    "threatbus".into()
}

fn default_heartbeat() -> u16 {
    60
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_prefetch() -> u16 {
    1000
}

fn default_publish_buffer() -> usize {
    100_000
}

fn default_confirm_window() -> usize {
    4096
}

fn default_batch_messages() -> usize {
    1
}

fn default_confirm_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_flush_timeout() -> Duration {
    Duration::from_secs(5)
}

fn yes() -> bool {
    true
}

fn seconds_u16<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    whole(deserializer, 0, u64::from(u16::MAX)).map(|n| n as u16)
}

fn prefetch<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    seconds_u16(deserializer)
}

fn batch_messages<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    whole(deserializer, 1, 10_000).map(|n| n as usize)
}

fn positive_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    whole_seconds(deserializer, 1, 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({"host": "localhost", "port": 5672, "username": "guest", "password": "guest"})
    }

    fn with(extra: Value) -> Value {
        let mut section = minimal();
        if let (Value::Object(base), Value::Object(extra)) = (&mut section, extra) {
            base.extend(extra);
        }
        section
    }

    fn error(section: Value) -> ConfigError {
        match RabbitMqConfig::from_section(&section) {
            Ok(config) => panic!("accepted {section}: {config:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn upstream_defaults_apply() {
        let config = RabbitMqConfig::from_section(&minimal()).unwrap();
        assert_eq!(config.vhost, "/");
        assert_eq!(config.exchange_name, "threatbus");
        assert_eq!(config.queue.name_suffix, host_name());
        assert_eq!(config.queue.name_join_symbol, ".");
        assert!(config.queue.durable);
        assert!(config.queue.lazy);
        assert!(!config.queue.auto_delete);
        assert!(!config.queue.exclusive);
        assert_eq!(config.queue.max_items, 0);
        assert_eq!(config.queue_name(), format!("threatbus.{}", host_name()));
        // Ours, all with defaults.
        assert!(!config.exchange_durable);
        assert!(!config.tls.enabled);
        assert_eq!(config.heartbeat, 60);
        assert_eq!(config.prefetch, 1000);
        assert_eq!(config.publish_buffer, 100_000);
        assert_eq!(config.batch_messages, 1);
        assert_eq!(config.reconnect.min_delay, Duration::from_millis(500));
        assert_eq!(config.reconnect.max_delay, Duration::from_secs(30));
        assert_eq!(config.on_undecodable, OnUndecodable::Ack);
    }

    #[test]
    fn upstream_example_config_parses() {
        // The rabbitmq section of upstream's config.example.yaml.
        let config = RabbitMqConfig::from_section(&json!({
            "host": "localhost", "port": 5672, "username": "guest", "password": "guest",
            "vhost": "/", "exchange_name": "threatbus",
            "queue": {
                "name_suffix": "my_suffix", "name_join_symbol": ".", "durable": true,
                "auto_delete": false, "lazy": true, "exclusive": false, "max_items": 100000
            }
        }))
        .unwrap();
        assert_eq!(config.queue_name(), "threatbus.my_suffix");
        assert_eq!(config.queue.max_items, 100_000);
    }

    #[test]
    fn required_keys_are_named() {
        for key in ["host", "port", "username", "password"] {
            let mut section = minimal();
            section.as_object_mut().unwrap().remove(key);
            assert_eq!(
                error(section).to_string(),
                format!("{KEY}.{key}: required, but missing")
            );
        }
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let cases = [
            (json!({"port": "abc"}), "port", "abc"),
            (json!({"port": 70000}), "port", "70000"),
            (json!({"port": 0}), "port", "0"),
            (json!({"host": ""}), "host", "empty"),
            (json!({"host": "amqp://x"}), "host", "amqp://x"),
            (json!({"exchange_name": ""}), "exchange_name", "empty"),
            (
                json!({"exchange_name": "amq.fanout"}),
                "exchange_name",
                "amq.fanout",
            ),
            (
                json!({"queue": {"durable": "maybe"}}),
                "queue.durable",
                "maybe",
            ),
            (json!({"queue": {"max_items": -1}}), "queue.max_items", "-1"),
            (
                json!({"queue": {"name_suffix": ""}}),
                "queue.name_suffix",
                "empty",
            ),
            (json!({"queue": {"size": 1}}), "queue.size", "unknown field"),
            (json!({"heartbeat": 1.5}), "heartbeat", "1.5"),
            (json!({"prefetch": 70000}), "prefetch", "70000"),
            (json!({"publish_buffer": 0}), "publish_buffer", "0"),
            (json!({"flush_timeout": 0}), "flush_timeout", "0"),
            (json!({"confirm_timeout": "x"}), "confirm_timeout", "x"),
            (json!({"confirm_window": 0}), "confirm_window", "0"),
            (json!({"batch_messages": 0}), "batch_messages", "0"),
            (json!({"batch_messages": 10001}), "batch_messages", "10001"),
            (
                json!({"reconnect": {"min_delay": 0}}),
                "reconnect.min_delay",
                "0",
            ),
            (
                json!({"reconnect": {"min_delay": 10, "max_delay": 1}}),
                "reconnect",
                "max_delay",
            ),
            (
                json!({"on_undecodable": "explode"}),
                "on_undecodable",
                "explode",
            ),
            (
                json!({"tls": {"ca_file": "/x.pem"}}),
                "tls.ca_file",
                "tls.enabled",
            ),
            (
                json!({"tls": {"enabled": true, "cert_file": "/c.pem"}}),
                "tls.key_file",
                "cert_file",
            ),
            (json!({"exchange": "x"}), "exchange", "unknown field"),
        ];
        for (extra, key, needle) in cases {
            let err = error(with(extra.clone()));
            let expected_key = if key.is_empty() {
                KEY.to_owned()
            } else {
                format!("{KEY}.{key}")
            };
            assert_eq!(err.key, expected_key, "{extra}: {err}");
            assert!(err.to_string().contains(needle), "{extra}: {err}");
        }
    }

    #[test]
    fn environment_style_strings_are_accepted() {
        let config = RabbitMqConfig::from_section(&with(json!({
            "port": "5671", "password": 1234, "heartbeat": "0", "prefetch": "0",
            "queue": {"max_items": "10", "name_suffix": 7},
            "reconnect": {"min_delay": "0.1", "max_delay": 2},
            "tls": {"enabled": true, "verify": false},
        })))
        .unwrap();
        assert_eq!(config.port, 5671);
        assert_eq!(config.password, "1234");
        assert_eq!((config.heartbeat, config.prefetch), (0, 0));
        assert_eq!(config.queue.max_items, 10);
        assert_eq!(config.queue_name(), "threatbus.7");
        assert_eq!(config.reconnect.min_delay, Duration::from_millis(100));
        assert!(config.tls.enabled && !config.tls.verify);
    }
}
