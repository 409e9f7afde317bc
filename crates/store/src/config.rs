//! The `store` section. Absent: no store, as upstream.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use threatbus_core::config::{ConfigError, optional_string, parse_section, whole};

/// Where the section lives in the config file.
pub const KEY: &str = "store";

/// The store the embedded default runs with: this file in the working directory.
pub const DEFAULT_PATH: &str = "threatbus-store";

/// Settings of the `store` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The embedded store's file (created if missing). Default `threatbus-store`, relative to
    /// the working directory.
    #[serde(default, deserialize_with = "optional_path")]
    pub path: Option<PathBuf>,
    /// A PostgreSQL store instead of `path` (`postgresql://user:pass@host:5432/threatbus`).
    #[serde(
        default,
        deserialize_with = "optional_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub url: Option<String>,
    /// Days of intel kept, by `modified`: older versions and objects are pruned. Default 90.
    #[serde(default = "default_retention", deserialize_with = "retention_days")]
    pub retention: u64,
    /// The store answers the snapshot requests of this instance's subscribers. Default `true`.
    #[serde(default = "yes")]
    pub answer_snapshots: bool,
}

fn default_retention() -> u64 {
    90
}

fn yes() -> bool {
    true
}

/// Up to 100 years.
fn retention_days<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    whole(deserializer, 1, 36_500)
}

fn optional_path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PathBuf>, D::Error> {
    optional_string(deserializer).map(|text| text.map(PathBuf::from))
}

impl StoreConfig {
    /// The store of the embedded default: [`DEFAULT_PATH`] in the working directory.
    pub fn embedded_default() -> Self {
        Self {
            path: Some(PathBuf::from(DEFAULT_PATH)),
            url: None,
            retention: default_retention(),
            answer_snapshots: true,
        }
    }

    /// Reads and validates the section; `None` when there is none.
    pub fn from_section(section: Option<&Value>) -> Result<Option<Self>, ConfigError> {
        let Some(section) = section else {
            return Ok(None);
        };
        let mut config: Self = parse_section(KEY, section)?;
        match (&config.path, &config.url) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    KEY,
                    "give either `path` (embedded store) or `url` (PostgreSQL), not both",
                ));
            }
            (Some(path), None) if path.as_os_str().is_empty() => {
                return Err(ConfigError::new(format!("{KEY}.path"), "must not be empty"));
            }
            (None, Some(url)) => {
                let scheme_ok = url.starts_with("postgresql://") || url.starts_with("postgres://");
                let parsed = <::postgres::Config as std::str::FromStr>::from_str(url);
                if let (true, Err(err)) = (scheme_ok, &parsed) {
                    return Err(ConfigError::new(
                        format!("{KEY}.url"),
                        format!("not a usable PostgreSQL URL: {err}"),
                    ));
                }
                if !scheme_ok {
                    return Err(ConfigError::new(
                        format!("{KEY}.url"),
                        "expected a PostgreSQL URL (postgresql://user:password@host:5432/database)",
                    ));
                }
            }
            (None, None) => config.path = Some(PathBuf::from(DEFAULT_PATH)),
            (Some(_), None) => {}
        }
        Ok(Some(config))
    }

    /// Where the store is: the PostgreSQL URL if there is one, else the file.
    pub fn location(&self) -> crate::Location {
        match &self.url {
            Some(url) => crate::Location::Postgres(url.clone()),
            None => crate::Location::File(
                self.path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH)),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(section: Value) -> Result<Option<StoreConfig>, String> {
        StoreConfig::from_section(Some(&section)).map_err(|e| e.to_string())
    }

    #[test]
    fn absent_is_no_store_and_empty_is_the_default_file() {
        assert!(StoreConfig::from_section(None).unwrap().is_none());
        let config = read(Value::Null).unwrap().unwrap();
        assert_eq!(
            config.location(),
            crate::Location::File(PathBuf::from(DEFAULT_PATH))
        );
        assert_eq!(config.retention, 90);
        assert!(config.answer_snapshots);
    }

    #[test]
    fn values_are_lenient_and_errors_name_key_and_value() {
        let config = read(
            json!({"path": "/var/lib/tb/store", "retention": "30", "answer_snapshots": false}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            config.location(),
            crate::Location::File(PathBuf::from("/var/lib/tb/store"))
        );
        let pg = read(json!({"url": "postgresql://tb:secret@db.example.org:5433/intel"}))
            .unwrap()
            .unwrap();
        assert_eq!(
            pg.location().describe(),
            "postgresql://db.example.org:5433/intel"
        );
        assert_eq!(config.retention, 30);
        assert!(!config.answer_snapshots);
        for (section, message) in [
            (
                json!({"retention": 0}),
                "store.retention: expected a whole number from 1 to 36500, got 0",
            ),
            (
                json!({"retention": "ninety"}),
                "store.retention: expected a whole number from 1 to 36500, got \"ninety\"",
            ),
            (json!({"path": ""}), "store.path: must not be empty"),
            (
                json!({"url": "mysql://x/y"}),
                "store.url: expected a PostgreSQL URL (postgresql://user:password@host:5432/database)",
            ),
            (
                json!({"path": "a", "url": "postgresql://x/y"}),
                "store: give either `path` (embedded store) or `url` (PostgreSQL), not both",
            ),
            (
                json!({"answer_snapshot": true}),
                "store.answer_snapshot: unknown field `answer_snapshot`, expected one of `path`, `url`, `retention`, `answer_snapshots`",
            ),
        ] {
            assert_eq!(read(section.clone()).unwrap_err(), message, "{section}");
        }
    }
}
