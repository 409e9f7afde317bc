//! Logging (the `logging` section): a console sink and a file sink, each with its own level,
//! as upstream (spec §1.7), on `tracing`; beyond upstream, JSON lines (`format: json`) and a
//! periodic traffic summary (`summary_interval`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::{Value, json};
use threatbus_core::{Registry, Totals};
use tokio_util::sync::CancellationToken;
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

impl Level {
    fn name(self) -> &'static str {
        match self.0 {
            LevelFilter::TRACE => "TRACE",
            LevelFilter::DEBUG => "DEBUG",
            LevelFilter::INFO => "INFO",
            LevelFilter::WARN => "WARNING",
            LevelFilter::ERROR => "ERROR",
            _ => "OFF",
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, message, fields), for log shippers.
    Json,
}

/// Seconds between two summary lines; 0 turns them off.
fn summary_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    threatbus_core::config::whole_seconds(deserializer, 0, 24 * 3600)
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
    /// `text` or `json`, for both sinks.
    pub format: Format,
    /// Interval of the INFO line that counts the traffic per message kind; zero: none.
    #[serde(deserialize_with = "summary_seconds")]
    pub summary_interval: Duration,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            console: true,
            console_verbosity: Level(LevelFilter::INFO),
            file: false,
            file_verbosity: Level(LevelFilter::INFO),
            filename: "threatbus.log".into(),
            format: Format::Text,
            summary_interval: Duration::from_secs(60),
        }
    }
}

impl LoggingConfig {
    /// The section as it is in effect, for `threatbus check`.
    pub fn to_json(&self) -> Value {
        json!({
            "console": self.console,
            "console_verbosity": self.console_verbosity.name(),
            "file": self.file,
            "file_verbosity": self.file_verbosity.name(),
            "filename": self.filename,
            "format": match self.format {
                Format::Text => "text",
                Format::Json => "json",
            },
            "summary_interval": self.summary_interval.as_secs(),
        })
    }
}

/// The log file, reopened on request (SIGHUP) so that log rotation can move the old one away:
/// every line goes to the file most recently opened at the configured path.
#[derive(Clone)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl LogFile {
    fn open(path: &Path) -> std::io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }

    /// Opens the file at its path again (a new one if rotation moved the old one away).
    pub fn reopen(&self) -> std::io::Result<&Path> {
        let fresh = Self::open(&self.path)?;
        let mut current = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = current.flush();
        *current = fresh;
        Ok(&self.path)
    }
}

/// One log line's access to the current file.
pub struct LogFileWriter<'a>(std::sync::MutexGuard<'a, File>);

impl Write for LogFileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = LogFileWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter(self.file.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Installs the global subscriber. `RUST_LOG`, if set, further restricts what is logged (e.g.
/// `RUST_LOG=threatbus_zmq=trace` with `console_verbosity: DEBUG`… narrows to that crate).
/// Returns the log file, if one is written, for reopening.
pub fn init(config: &LoggingConfig) -> anyhow::Result<Option<LogFile>> {
    let json = config.format == Format::Json;
    let console = config.console.then(|| {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(!json && std::io::IsTerminal::is_terminal(&std::io::stderr()));
        let layer: Box<dyn Layer<_> + Send + Sync> = if json {
            Box::new(layer.json().flatten_event(true))
        } else {
            Box::new(layer)
        };
        layer.with_filter(config.console_verbosity.0)
    });
    let log_file = if config.file {
        let path = PathBuf::from(&config.filename);
        let file = LogFile::open(&path).map_err(|e| {
            anyhow::anyhow!("logging.filename: cannot open {:?}: {e}", config.filename)
        })?;
        Some(LogFile {
            path,
            file: Arc::new(Mutex::new(file)),
        })
    } else {
        None
    };
    let file = if let Some(log_file) = &log_file {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(log_file.clone())
            .with_ansi(false);
        let layer: Box<dyn Layer<_> + Send + Sync> = if json {
            Box::new(layer.json().flatten_event(true))
        } else {
            Box::new(layer)
        };
        Some(layer.with_filter(config.file_verbosity.0))
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
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(log_file)
}

/// Writes an INFO line every `interval` with the traffic since the last one, until `stop`.
pub async fn summarize(metrics: Arc<Registry>, interval: Duration, stop: CancellationToken) {
    if interval.is_zero() {
        return;
    }
    let mut last = Totals::read(&metrics);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = Totals::read(&metrics);
        let d = now.since(&last);
        tracing::info!(
            indicators_in = d.published[0],
            sightings_in = d.published[1],
            snapshot_requests_in = d.published[2],
            snapshot_envelopes_in = d.published[3],
            delivered = d.delivered,
            dropped = d.dropped_queue_full + d.dropped_subscriber_gone,
            rejected = d.rejected_input,
            "traffic in the last {} s",
            interval.as_secs(),
        );
        last = now;
    }
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

    #[test]
    fn format_and_summary_interval() {
        let config: LoggingConfig =
            parse_section("logging", &json!({"format": "json", "summary_interval": 0})).unwrap();
        assert_eq!(config.format, Format::Json);
        assert!(config.summary_interval.is_zero());
        assert_eq!(
            LoggingConfig::default().summary_interval,
            Duration::from_secs(60)
        );
        let err = parse_section::<LoggingConfig>("logging", &json!({"format": "xml"})).unwrap_err();
        assert_eq!(err.key, "logging.format");
        assert!(err.message.contains("xml"), "{}", err.message);
        let err = parse_section::<LoggingConfig>("logging", &json!({"summary_interval": -5}))
            .unwrap_err();
        assert_eq!(err.key, "logging.summary_interval");
        assert!(err.message.contains("-5"), "{}", err.message);
        assert_eq!(
            LoggingConfig::default().to_json(),
            json!({"console": true, "console_verbosity": "INFO", "file": false, "file_verbosity": "INFO", "filename": "threatbus.log", "format": "text", "summary_interval": 60})
        );
    }
}
