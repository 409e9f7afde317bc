//! Logging (the `logging` section): a console sink and a file sink, each with its own level,
//! as upstream (spec §1.7), on `tracing`.

use std::fs::OpenOptions;
use std::sync::Mutex;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// A log level as upstream spells it: `DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`
/// (case-insensitive; `TRACE` and `WARN` are accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level(pub LevelFilter);

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let level = match text.to_ascii_uppercase().as_str() {
            "TRACE" => LevelFilter::TRACE,
            "DEBUG" => LevelFilter::DEBUG,
            "INFO" => LevelFilter::INFO,
            "WARNING" | "WARN" => LevelFilter::WARN,
            "ERROR" | "CRITICAL" => LevelFilter::ERROR,
            _ => {
                return Err(de::Error::custom(format!(
                    "expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {text:?}"
                )));
            }
        };
        Ok(Self(level))
    }
}

/// The `logging` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Log to the console (standard error).
    pub console: bool,
    /// Lowest level printed on the console.
    pub console_verbosity: Level,
    /// Log to `filename`.
    pub file: bool,
    /// Lowest level written to the file.
    pub file_verbosity: Level,
    /// The log file (appended to). Defaults to `threatbus.log`, as upstream documents (upstream
    /// itself failed to apply that default).
    pub filename: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            console: true,
            console_verbosity: Level(LevelFilter::INFO),
            file: false,
            file_verbosity: Level(LevelFilter::INFO),
            filename: "threatbus.log".into(),
        }
    }
}

/// Installs the global subscriber. `RUST_LOG`, if set, further restricts what is logged (e.g.
/// `RUST_LOG=threatbus_zmq=trace` with `console_verbosity: DEBUG`… narrows to that crate).
pub fn init(config: &LoggingConfig) -> anyhow::Result<()> {
    let console = config.console.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(config.console_verbosity.0)
    });
    let file = if config.file {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.filename)
            .map_err(|e| {
                anyhow::anyhow!("logging.filename: cannot open {:?}: {e}", config.filename)
            })?;
        Some(
            tracing_subscriber::fmt::layer()
                .with_writer(Mutex::new(file))
                .with_ansi(false)
                .with_filter(config.file_verbosity.0),
        )
    } else {
        None
    };
    let env_filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok());
    tracing_subscriber::registry()
        .with(env_filter)
        .with(console)
        .with(file)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use threatbus_core::config::parse_section;

    #[test]
    fn levels_follow_upstream_names() {
        let config: LoggingConfig = parse_section(
            "logging",
            &json!({"console_verbosity": "debug", "file": true, "file_verbosity": "CRITICAL"}),
        )
        .unwrap();
        assert_eq!(config.console_verbosity, Level(LevelFilter::DEBUG));
        assert_eq!(config.file_verbosity, Level(LevelFilter::ERROR));
        assert_eq!(config.filename, "threatbus.log");
        let err = parse_section::<LoggingConfig>("logging", &json!({"file_verbosity": "LOUD"}))
            .unwrap_err();
        assert_eq!(err.key, "logging.file_verbosity");
        assert!(err.message.contains("LOUD"));
        let err =
            parse_section::<LoggingConfig>("logging", &json!({"console": "maybe"})).unwrap_err();
        assert_eq!(err.key, "logging.console");
    }
}
