//! The `plugins.apps.cif3` section: upstream's keys (`api.host`, `api.token`, `api.ssl`,
//! `group`, `tlp`, `confidence`, `tags`) with upstream's defaults, plus `api.ca_file` and
//! `retry`.

use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use threatbus_core::config::{
    BackoffConfig, ConfigError, lenient_number, lenient_string, parse_section,
};

/// Where the section lives in the config file.
pub const KEY: &str = "plugins.apps.cif3";

/// The confidence sent when `confidence` is configured as 0, as the Python Threat Bus did.
pub const CONFIDENCE_FOR_ZERO: f64 = 5.0;

/// Settings of `plugins.apps.cif3`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cif3Config {
    /// The CIFv3 REST API.
    pub api: ApiConfig,
    /// CIF group the indicators belong to. Default `everyone`. Sent in lower case.
    #[serde(default = "default_group", deserialize_with = "lenient_string")]
    pub group: String,
    /// Traffic Light Protocol colour of the indicators. Default `amber`. Sent in lower case.
    #[serde(default = "default_tlp", deserialize_with = "lenient_string")]
    pub tlp: String,
    /// Confidence of the indicators, 0 to 10. Default 7.5. 0 is sent as 5 (upstream's rule).
    #[serde(default = "default_confidence", deserialize_with = "confidence")]
    pub confidence: f64,
    /// Tags of the indicators (e.g. `[malware, threatbus]`). Required; may be empty.
    #[serde(deserialize_with = "tag_list")]
    pub tags: Vec<String>,

    // ----- not in upstream -----
    /// Waits between attempts at a call CIF could not serve (ping at start, a submission
    /// that met a network error, 408, 429 or 5xx).
    #[serde(default)]
    pub retry: BackoffConfig,
}

/// `api`: where CIF is and how to authenticate.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Base URL of the CIF REST API, e.g. `https://cif.example.org` or
    /// `http://localhost:5000`.
    #[serde(deserialize_with = "lenient_string")]
    pub host: String,
    /// A CIF API token with write permission.
    #[serde(deserialize_with = "lenient_string")]
    pub token: String,
    /// Verify CIF's TLS certificate (for `https://` hosts).
    pub ssl: bool,
    /// Not in upstream: PEM file with the CA certificates to verify CIF's certificate with.
    /// Default: the system's trust store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_group() -> String {
    "everyone".into()
}

fn default_tlp() -> String {
    "amber".into()
}

fn default_confidence() -> f64 {
    7.5
}

fn confidence<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let (n, value) = lenient_number(deserializer)?;
    if (0.0..=10.0).contains(&n) {
        Ok(n)
    } else {
        Err(de::Error::custom(format!(
            "expected a number from 0 to 10 (CIF's confidence scale), got {value}"
        )))
    }
}

/// A list of non-empty strings (numbers are taken as their text).
fn tag_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let value = Value::deserialize(deserializer)?;
    let bad = || de::Error::custom(format!("expected a list of strings, got {value}"));
    let Value::Array(items) = &value else {
        return Err(bad());
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(bad()),
        })
        .collect()
}

impl Cif3Config {
    /// Reads and validates the section. The host URL and TLS files are checked when the
    /// client is built ([`crate::client::CifClient::new`]).
    pub fn from_section(section: &Value) -> Result<Self, ConfigError> {
        let config: Self = parse_section(KEY, section)?;
        let key = |name: &str| format!("{KEY}.{name}");
        for (name, value) in [
            ("api.host", &config.api.host),
            ("group", &config.group),
            ("tlp", &config.tlp),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::new(
                    key(name),
                    format!("must not be empty, got {value:?}"),
                ));
            }
        }
        if config.api.token.trim().is_empty() {
            return Err(ConfigError::new(
                key("api.token"),
                "must not be empty: a CIF token with write permission",
            ));
        }
        config.retry.check(&key("retry"))?;
        Ok(config)
    }

    /// The confidence sent: the configured one, with 0 read as 5 as upstream did.
    pub fn effective_confidence(&self) -> f64 {
        if self.confidence == 0.0 {
            CONFIDENCE_FOR_ZERO
        } else {
            self.confidence
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn minimal() -> Value {
        json!({
            "api": {"host": "http://localhost:5000", "token": "CIF_TOKEN", "ssl": false},
            "tags": ["test", "malicious"]
        })
    }

    fn with(path: &[&str], value: Value) -> Value {
        let mut section = minimal();
        let mut at = &mut section;
        for step in &path[..path.len() - 1] {
            at = &mut at[*step];
        }
        at[path[path.len() - 1]] = value;
        section
    }

    fn without(path: &[&str]) -> Value {
        let mut section = minimal();
        let mut at = &mut section;
        for step in &path[..path.len() - 1] {
            at = &mut at[*step];
        }
        if let Value::Object(map) = at {
            map.remove(path[path.len() - 1]);
        }
        section
    }

    #[test]
    fn upstream_example_takes_upstreams_defaults() {
        let config = Cif3Config::from_section(&minimal()).unwrap();
        assert_eq!(config.api.host, "http://localhost:5000");
        assert_eq!(config.api.token, "CIF_TOKEN");
        assert!(!config.api.ssl);
        assert_eq!(config.api.ca_file, None);
        assert_eq!(config.group, "everyone");
        assert_eq!(config.tlp, "amber");
        assert_eq!(config.confidence, 7.5);
        assert_eq!(config.effective_confidence(), 7.5);
        assert_eq!(config.tags, ["test", "malicious"]);
        assert_eq!(config.retry.min_delay, Duration::from_millis(500));
        assert_eq!(config.retry.max_delay, Duration::from_secs(30));
    }

    #[test]
    fn values_from_the_environment_and_upstreams_zero_confidence() {
        let section = json!({
            "api": {"host": "https://cif.example.org", "token": 1234, "ssl": true,
                    "ca_file": "/etc/ssl/cif-ca.pem"},
            "group": "Partners", "tlp": "GREEN", "confidence": "0", "tags": [],
            "retry": {"min_delay": "0.1", "max_delay": 2}
        });
        let config = Cif3Config::from_section(&section).unwrap();
        assert_eq!(config.api.token, "1234");
        assert_eq!(
            config.api.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ssl/cif-ca.pem"))
        );
        assert_eq!(
            (config.group.as_str(), config.tlp.as_str()),
            ("Partners", "GREEN")
        );
        assert_eq!(config.confidence, 0.0);
        assert_eq!(config.effective_confidence(), CONFIDENCE_FOR_ZERO);
        assert!(config.tags.is_empty());
        assert_eq!(config.retry.min_delay, Duration::from_millis(100));
        assert_eq!(config.retry.max_delay, Duration::from_secs(2));
        let integer = Cif3Config::from_section(&with(&["confidence"], json!(8))).unwrap();
        assert_eq!(integer.confidence, 8.0);
    }

    #[test]
    fn errors_name_the_key_and_the_value() {
        let cases = [
            (
                without(&["tags"]),
                "plugins.apps.cif3.tags: required, but missing",
            ),
            (
                without(&["api"]),
                "plugins.apps.cif3.api: required, but missing",
            ),
            (
                without(&["api", "host"]),
                "plugins.apps.cif3.api.host: required, but missing",
            ),
            (
                without(&["api", "token"]),
                "plugins.apps.cif3.api.token: required, but missing",
            ),
            (
                without(&["api", "ssl"]),
                "plugins.apps.cif3.api.ssl: required, but missing",
            ),
            (
                with(&["tags"], json!("malware")),
                "plugins.apps.cif3.tags: expected a list of strings, got \"malware\"",
            ),
            (
                with(&["tags"], json!(["a", ""])),
                "plugins.apps.cif3.tags: expected a list of strings, got [\"a\",\"\"]",
            ),
            (
                with(&["confidence"], json!("high")),
                "plugins.apps.cif3.confidence: expected a number, got \"high\"",
            ),
            (
                with(&["confidence"], json!(75)),
                "plugins.apps.cif3.confidence: expected a number from 0 to 10 (CIF's confidence scale), got 75",
            ),
            (
                with(&["group"], json!("")),
                "plugins.apps.cif3.group: must not be empty, got \"\"",
            ),
            (
                with(&["api", "token"], json!(" ")),
                "plugins.apps.cif3.api.token: must not be empty: a CIF token with write permission",
            ),
            (
                with(&["retry"], json!({"min_delay": 0})),
                "plugins.apps.cif3.retry.min_delay: expected seconds from 0.001 to 86400, got 0",
            ),
            (
                with(&["retry"], json!({"min_delay": 5, "max_delay": 1})),
                "plugins.apps.cif3.retry: min_delay (5s) must not exceed max_delay (1s)",
            ),
        ];
        for (section, expected) in cases {
            let err = Cif3Config::from_section(&section).unwrap_err().to_string();
            assert_eq!(err, expected, "{section}");
        }
        let unknown = Cif3Config::from_section(&with(&["colour"], json!("red")))
            .unwrap_err()
            .to_string();
        assert!(
            unknown.starts_with("plugins.apps.cif3.colour: unknown field `colour`"),
            "{unknown}"
        );
        let unknown = Cif3Config::from_section(&with(&["api", "key"], json!("x")))
            .unwrap_err()
            .to_string();
        assert!(
            unknown.starts_with("plugins.apps.cif3.api.key: unknown field `key`"),
            "{unknown}"
        );
        let not_bool = Cif3Config::from_section(&with(&["api", "ssl"], json!("maybe")))
            .unwrap_err()
            .to_string();
        assert!(
            not_bool.starts_with("plugins.apps.cif3.api.ssl: ") && not_bool.contains("maybe"),
            "{not_bool}"
        );
    }
}
