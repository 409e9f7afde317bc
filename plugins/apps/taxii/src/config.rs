//! The `plugins.apps.taxii` section.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use threatbus_core::config::{
    ConfigError, host, lenient_string, parse_section, port, positive_seconds, positive_usize,
};

/// The section's key, for errors.
pub const KEY: &str = "plugins.apps.taxii";

/// Settings of `plugins.apps.taxii`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxiiConfig {
    /// Address the server binds to. Default `127.0.0.1`.
    #[serde(default = "default_host", deserialize_with = "host")]
    pub host: String,
    /// Port of the server. Default 13380.
    #[serde(default = "default_port", deserialize_with = "port")]
    pub port: u16,
    /// The API root's path segment: the API root is `/<api_root>/`. Default `threatbus`.
    #[serde(default = "default_api_root", deserialize_with = "api_root")]
    pub api_root: String,
    /// Users allowed in, by name (HTTP Basic). Without users everybody may read and nobody may
    /// write.
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    /// Serve HTTPS with this certificate; plain HTTP without it.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Largest request body accepted, in bytes (advertised in the API root). Default 10 MiB.
    #[serde(
        default = "default_max_content_length",
        deserialize_with = "positive_usize"
    )]
    pub max_content_length: usize,
    /// Objects per page: the default and the maximum `limit`. Default 1000.
    #[serde(default = "default_page_size", deserialize_with = "positive_usize")]
    pub page_size: usize,
    /// Connections held at once; beyond it the oldest idle one is closed. Default 256.
    #[serde(
        default = "default_max_connections",
        deserialize_with = "positive_usize"
    )]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers, and again its body. Default 10.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "positive_seconds"
    )]
    pub request_timeout: Duration,
    /// The level of the access log line written for every request: `info`, `debug` or `off`.
    /// Default `info`.
    #[serde(default)]
    pub access_log: AccessLog,
}

/// One user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The password (set it with a `THREATBUS_PLUGINS__APPS__TAXII__USERS__<NAME>__PASSWORD`
    /// override rather than in the file).
    #[serde(deserialize_with = "lenient_string")]
    pub password: String,
    /// Whether the user may add and delete objects. Default false.
    #[serde(default)]
    pub write: bool,
}

/// The certificate of an HTTPS server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file with the server's certificate chain, the server's certificate first.
    pub certificate: PathBuf,
    /// PEM file with the certificate's private key.
    pub key: PathBuf,
}

/// The level of the access log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLog {
    #[default]
    Info,
    Debug,
    Off,
}

fn default_host() -> String {
    "127.0.0.1".into()
}

fn default_port() -> u16 {
    13380
}

fn default_api_root() -> String {
    "threatbus".into()
}

fn default_max_content_length() -> usize {
    10 * 1024 * 1024
}

fn default_page_size() -> usize {
    1000
}

fn default_max_connections() -> usize {
    256
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A path segment of unreserved URL characters, other than `taxii2` (the discovery path).
fn api_root<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = lenient_string(deserializer)?;
    let unreserved = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
    if text.is_empty() || text.len() > 64 || !text.chars().all(unreserved) {
        return Err(serde::de::Error::custom(format!(
            "expected a path segment of 1 to 64 letters, digits, `-`, `.`, `_` or `~`, got {text:?}"
        )));
    }
    if text == "taxii2" || text == "." || text == ".." {
        return Err(serde::de::Error::custom(format!(
            "{text:?} cannot be an API root (`taxii2` is the discovery path)"
        )));
    }
    Ok(text)
}

impl TaxiiConfig {
    /// Reads and validates the section.
    pub fn from_section(section: &Value) -> Result<Self, ConfigError> {
        let config: Self = parse_section(KEY, section)?;
        for (name, user) in &config.users {
            if name.is_empty() || name.contains(':') || name.chars().any(char::is_control) {
                return Err(ConfigError::new(
                    format!("{KEY}.users"),
                    format!(
                        "{name:?} cannot be a user name (empty, or holds `:` or a control character)"
                    ),
                ));
            }
            if user.password.is_empty() {
                return Err(ConfigError::new(
                    format!("{KEY}.users.{name}.password"),
                    "must not be empty",
                ));
            }
        }
        Ok(config)
    }

    /// The section as it is in effect, for `threatbus check` (passwords left out).
    pub fn to_json(&self) -> Value {
        let users: serde_json::Map<String, Value> = self
            .users
            .iter()
            .map(|(name, user)| {
                (
                    name.clone(),
                    json!({"password": "(set)", "write": user.write}),
                )
            })
            .collect();
        json!({
            "host": self.host,
            "port": self.port,
            "api_root": self.api_root,
            "users": users,
            "tls": self.tls.as_ref().map(|tls| json!({
                "certificate": tls.certificate.display().to_string(),
                "key": tls.key.display().to_string(),
            })),
            "max_content_length": self.max_content_length,
            "page_size": self.page_size,
            "max_connections": self.max_connections,
            "request_timeout": self.request_timeout.as_secs(),
            "access_log": match self.access_log {
                AccessLog::Info => "info",
                AccessLog::Debug => "debug",
                AccessLog::Off => "off",
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(section: Value) -> String {
        TaxiiConfig::from_section(&section).unwrap_err().to_string()
    }

    #[test]
    fn defaults_and_values() {
        let config = TaxiiConfig::from_section(&Value::Null).unwrap();
        assert_eq!(
            (config.host.as_str(), config.port, config.api_root.as_str()),
            ("127.0.0.1", 13380, "threatbus")
        );
        assert_eq!(
            (config.page_size, config.max_content_length),
            (1000, 10 * 1024 * 1024)
        );
        assert!(config.users.is_empty() && config.tls.is_none());
        let config = TaxiiConfig::from_section(&json!({
            "port": "13390", "api_root": "intel",
            "users": {"reader": {"password": 1234}, "writer": {"password": "w", "write": true}},
            "access_log": "debug", "page_size": 50
        }))
        .unwrap();
        assert_eq!(config.port, 13390);
        assert_eq!(config.users["reader"].password, "1234");
        assert!(config.users["writer"].write && !config.users["reader"].write);
        assert_eq!(config.access_log, AccessLog::Debug);
        let shown = config.to_json().to_string();
        assert!(!shown.contains("1234"), "{shown}");
    }

    #[test]
    fn errors_name_the_key_and_the_value() {
        let err = errors(json!({"api_root": "a/b"}));
        assert!(
            err.starts_with("plugins.apps.taxii.api_root") && err.contains("\"a/b\""),
            "{err}"
        );
        let err = errors(json!({"api_root": "taxii2"}));
        assert!(err.contains("discovery"), "{err}");
        let err = errors(json!({"users": {"a:b": {"password": "x"}}}));
        assert!(
            err.starts_with("plugins.apps.taxii.users") && err.contains("a:b"),
            "{err}"
        );
        let err = errors(json!({"users": {"r": {"password": ""}}}));
        assert!(
            err.starts_with("plugins.apps.taxii.users.r.password"),
            "{err}"
        );
        let err = errors(json!({"page_size": 0}));
        assert!(err.starts_with("plugins.apps.taxii.page_size"), "{err}");
        let err = errors(json!({"access_log": "loud"}));
        assert!(err.starts_with("plugins.apps.taxii.access_log"), "{err}");
        let err = errors(json!({"tls": {"certificate": "c.pem"}}));
        assert!(err.starts_with("plugins.apps.taxii.tls"), "{err}");
        let err = errors(json!({"colour": 1}));
        assert!(err.contains("colour"), "{err}");
    }
}
