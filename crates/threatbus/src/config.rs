//! Loading the configuration: YAML file (or the embedded default), `THREATBUS_` environment
//! overrides, and validation of the top-level sections.
//!
//! Precedence and discovery follow upstream (spec §1.6): `-c/--config PATH` (must end in `yaml`
//! or `yml`), else `config.yaml` or `config.yml` in the working directory. Unlike upstream, when
//! neither exists the bus runs an embedded default (in-memory backbone, ZeroMQ app on
//! 127.0.0.1:13370-13372) instead of failing.
//!
//! Environment variables `THREATBUS_A__B__C=value` set key `a.b.c` (keys are case-insensitive,
//! `__` nests), creating sections that the file does not have. Values are typed like upstream's
//! Dynaconf: `true`/`false`, integers, floats, `[...]`/`{...}` JSON, `@json <JSON>`, quoted
//! strings; anything else stays a string.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use threatbus_core::BusConfig;
use threatbus_core::config::{ConfigError, parse_section};

use threatbus_store::StoreConfig;

use crate::logging::LoggingConfig;
use crate::metrics_http::MetricsConfig;

/// The configuration used when no file exists.
pub const EMBEDDED_DEFAULT: &str = r#"
logging:
  console: true
  console_verbosity: INFO
store:
  path: threatbus-store
plugins:
  backbones:
    inmem: {}
  apps:
    zmq:
      host: "127.0.0.1"
      manage: 13370
      pub: 13371
      sub: 13372
"#;

/// Names of the default files, in the order tried.
pub const DEFAULT_FILES: [&str; 2] = ["config.yaml", "config.yml"];

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "THREATBUS_";

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Embedded,
}

/// A loaded and validated configuration.
#[derive(Debug)]
pub struct Config {
    pub source: Source,
    pub logging: LoggingConfig,
    pub bus: BusConfig,
    pub metrics: MetricsConfig,
    /// The intel store; `None` without a `store` section.
    pub store: Option<StoreConfig>,
    /// The whole document after environment overrides, as read (for `threatbus check`).
    pub document: Value,
    /// Configured backbones: name and section, in file order.
    pub backbones: Vec<(String, Value)>,
    /// Configured apps: name and section, in file order.
    pub apps: Vec<(String, Value)>,
    /// Top-level keys we do not know, reported as warnings once logging runs.
    pub ignored_keys: Vec<String>,
}

/// Reads the file (or the embedded default), applies environment overrides from `env` and
/// validates. Returns every error found, not just the first.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, Vec<ConfigError>> {
    let (config, errors) = read(path, env)?;
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

/// Like [`load`], but a section that fails validation does not stop the others: the errors
/// come back beside a config whose failed sections hold their defaults, so that the plugin
/// sections can be checked too. `Err` only when there is no document to look into (the file
/// cannot be read, is not YAML, or is not a mapping).
pub fn read(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Config, Vec<ConfigError>), Vec<ConfigError>> {
    let (source, text) = read_source(path).map_err(|e| vec![e])?;
    let mut root: Value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_saphyr::from_str(&text).map_err(|e| {
            vec![ConfigError::new(
                source_name(&source),
                format!("invalid YAML: {}", yaml_error_text(&e.to_string())),
            )]
        })?
    };
    if root.is_null() {
        root = Value::Object(Map::new());
    }
    if !root.is_object() {
        return Err(vec![ConfigError::new(
            source_name(&source),
            "expected a mapping at the top level",
        )]);
    }
    apply_env_overrides(&mut root, env).map_err(|e| vec![e])?;
    validate(source, root)
}

/// The YAML parser's message in our words: its first line (where and what), without the parser's
/// own advice (options of the library that a user cannot set), cut to a bounded length.
fn yaml_error_text(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let text = match first.split_once("duplicate mapping key: ") {
        Some((place, rest)) => {
            let key = rest.split(", set ").next().unwrap_or(rest);
            format!(
                "{place}the key `{key}` appears twice in one mapping (each key may appear once)"
            )
        }
        None => first.to_owned(),
    };
    threatbus_core::throttle::bounded(&text).into_owned()
}

/// The file's text, or where it stops being UTF-8 (byte offset, line and column).
fn utf8_text(path: &Path, bytes: Vec<u8>) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|err| {
        let offset = err.utf8_error().valid_up_to();
        let valid = &err.as_bytes()[..offset];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = offset - valid.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
        ConfigError::new(
            "--config",
            format!(
                "cannot read {}: not UTF-8 text: invalid byte 0x{:02x} at byte offset {offset} (line {line}, column {column})",
                path.display(),
                err.as_bytes().get(offset).copied().unwrap_or_default(),
            ),
        )
    })
}

fn source_name(source: &Source) -> String {
    match source {
        Source::File(path) => path.display().to_string(),
        Source::Embedded => "embedded default config".into(),
    }
}

fn read_source(path: Option<&Path>) -> Result<(Source, String), ConfigError> {
    let read = |path: &Path| {
        let bytes = std::fs::read(path).map_err(|e| {
            ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
        })?;
        utf8_text(path, bytes)
    };
    if let Some(path) = path {
        let name = path.to_string_lossy();
        if !(name.ends_with("yaml") || name.ends_with("yml")) {
            return Err(ConfigError::new(
                "--config",
                format!("please provide a `yaml` or `yml` configuration file, got {name:?}"),
            ));
        }
        return Ok((Source::File(path.to_owned()), read(path)?));
    }
    for name in DEFAULT_FILES {
        let path = Path::new(name);
        if path.exists() {
            return Ok((Source::File(path.to_owned()), read(path)?));
        }
    }
    Ok((Source::Embedded, EMBEDDED_DEFAULT.to_owned()))
}

/// Applies `THREATBUS_…` variables from `env` to `root`.
pub fn apply_env_overrides(
    root: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut overrides: Vec<(Vec<String>, Value)> = env
        .into_iter()
        .filter_map(|(key, value)| {
            let rest = key.strip_prefix(ENV_PREFIX)?;
            let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
            Some((path, parse_env_value(&value)))
        })
        .collect();
    // Deterministic: shorter paths first, so `A__B` and then `A__B__C` both apply.
    overrides.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.cmp(&b.0)));
    for (path, value) in overrides {
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                format!("{ENV_PREFIX}{}", path.join("__").to_uppercase()),
                "empty key segment in environment override",
            ));
        }
        let mut node = &mut *root;
        for segment in &path {
            node = child(node, segment);
        }
        *node = value;
    }
    Ok(())
}

/// The child `segment` of `node`: an element of a list when `segment` is one of its indices
/// (`THREATBUS_PLUGINS__APPS__TAXII_FEEDS__0__PASSWORD` sets the first feed's password), else
/// a key of a map, made a map (and the key added) if it is not one yet.
fn child<'a>(node: &'a mut Value, segment: &str) -> &'a mut Value {
    let index = match (&*node, segment.parse::<usize>()) {
        (Value::Array(items), Ok(index)) if index < items.len() => Some(index),
        _ => None,
    };
    match index {
        Some(index) => match node {
            Value::Array(items) => &mut items[index],
            other => other,
        },
        None => {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            match node {
                Value::Object(map) => map.entry(segment.to_owned()).or_insert(Value::Null),
                other => other,
            }
        }
    }
}

/// Types an environment value the way upstream's Dynaconf does (TOML literals, `@json`).
pub fn parse_env_value(raw: &str) -> Value {
    let text = raw.trim();
    if let Some(json) = text.strip_prefix("@json ") {
        return serde_json::from_str(json).unwrap_or_else(|_| Value::String(raw.to_owned()));
    }
    match text {
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = text.replace('_', "");
    if !text.starts_with('_') && !text.ends_with('_') && !text.contains("__") {
        if let Ok(int) = digits.parse::<i64>() {
            return Value::from(int);
        }
        if text.contains(['.', 'e', 'E'])
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE_".contains(&b))
            && let Ok(float) = digits.parse::<f64>()
            && let Some(number) = serde_json::Number::from_f64(float)
        {
            return Value::Number(number);
        }
    }
    if (text.starts_with('[') || text.starts_with('{') || text.starts_with('"'))
        && let Ok(value) = serde_json::from_str(text)
    {
        return value;
    }
    if text.len() >= 2 && text.starts_with('\'') && text.ends_with('\'') {
        return Value::String(text[1..text.len() - 1].to_owned());
    }
    Value::String(raw.to_owned())
}

/// Splits the root into typed sections; plugin sections are checked by their plugins.
fn validate(source: Source, root: Value) -> Result<(Config, Vec<ConfigError>), Vec<ConfigError>> {
    let Value::Object(mut root) = root else {
        unreachable!("checked by load")
    };
    let mut errors = Vec::new();
    let logging =
        parse_section::<LoggingConfig>("logging", root.get("logging").unwrap_or(&Value::Null))
            .map_err(|e| errors.push(e))
            .ok();
    let bus = parse_section::<BusConfig>("bus", root.get("bus").unwrap_or(&Value::Null))
        .map_err(|e| errors.push(e))
        .ok();
    let metrics =
        parse_section::<MetricsConfig>("metrics", root.get("metrics").unwrap_or(&Value::Null))
            .map_err(|e| errors.push(e))
            .ok();
    let store = StoreConfig::from_section(root.get("store"))
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let document = Value::Object(root.clone());
    let mut sections = |kind: &str| -> Vec<(String, Value)> {
        let key = format!("plugins.{kind}");
        match root.get("plugins").and_then(|p| p.get(kind)) {
            Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Some(Value::Null) | None => {
                errors.push(ConfigError::new(
                    key,
                    format!("missing: configure at least one of the {kind} plugins"),
                ));
                Vec::new()
            }
            Some(other) => {
                errors.push(ConfigError::new(
                    key,
                    format!("expected a mapping of plugin names to settings, got {other}"),
                ));
                Vec::new()
            }
        }
    };
    let backbones = sections("backbones");
    let apps = sections("apps");
    if let Some(Value::Object(plugins)) = root.get("plugins") {
        for key in plugins.keys().filter(|k| *k != "apps" && *k != "backbones") {
            errors.push(ConfigError::new(
                format!("plugins.{key}"),
                "unknown section (expected `apps` and `backbones`)",
            ));
        }
    }
    for known in ["logging", "bus", "metrics", "store", "plugins"] {
        root.remove(known);
    }
    let config = Config {
        source,
        logging: logging.unwrap_or_default(),
        bus: bus.unwrap_or_default(),
        metrics: metrics.unwrap_or_default(),
        store,
        document,
        backbones,
        apps,
        ignored_keys: root.keys().cloned().collect(),
    };
    Ok((config, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_errors_are_ours_and_non_utf8_input_says_where() {
        let err = yaml_error_text(
            "error: line 4 column 3: duplicate mapping key: apps, set DuplicateKeyPolicy in Options if acceptable\n --> <input>:4:3\n  |",
        );
        assert_eq!(
            err,
            "line 4 column 3: the key `apps` appears twice in one mapping (each key may appear once)"
        );
        assert!(!err.contains("Options"));
        let err = utf8_text(Path::new("c.yaml"), b"a: 1\nbb: x\xff\n".to_vec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--config: cannot read c.yaml: not UTF-8 text: invalid byte 0xff at byte offset 10 (line 2, column 6)"
        );
        assert_eq!(
            utf8_text(Path::new("c.yaml"), b"ok".to_vec()).unwrap(),
            "ok"
        );
    }
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_values_are_typed_like_dynaconf() {
        assert_eq!(parse_env_value("true"), json!(true));
        assert_eq!(parse_env_value("false"), json!(false));
        assert_eq!(parse_env_value("13370"), json!(13370));
        assert_eq!(parse_env_value("-5"), json!(-5));
        assert_eq!(parse_env_value("1_000"), json!(1000));
        assert_eq!(parse_env_value("1.5"), json!(1.5));
        assert_eq!(parse_env_value("[\"a\", \"b\"]"), json!(["a", "b"]));
        assert_eq!(parse_env_value("@json {\"a\": 1}"), json!({"a": 1}));
        assert_eq!(parse_env_value("'quoted'"), json!("quoted"));
        assert_eq!(parse_env_value("\"quoted\""), json!("quoted"));
        assert_eq!(parse_env_value("127.0.0.1"), json!("127.0.0.1"));
        assert_eq!(parse_env_value("localhost"), json!("localhost"));
        assert_eq!(parse_env_value("[oops"), json!("[oops"));
        assert_eq!(parse_env_value("1e3"), json!(1000.0));
        assert_eq!(parse_env_value("abc_"), json!("abc_"));
    }

    #[test]
    fn env_overrides_merge_and_create_sections() {
        let mut root = json!({"plugins": {"backbones": {"inmem": null}, "apps": {"zmq": {"host": "127.0.0.1", "manage": 1}}}});
        apply_env_overrides(
            &mut root,
            env(&[
                ("THREATBUS_PLUGINS__APPS__ZMQ__MANAGE", "14000"),
                ("THREATBUS_LOGGING__CONSOLE", "false"),
                ("THREATBUS_PLUGINS__BACKBONES__INMEM__X", "1"),
                ("OTHER_VAR", "x"),
                ("threatbus_lowercase", "ignored: the prefix is upper-case"),
            ]),
        )
        .unwrap();
        assert_eq!(
            root["plugins"]["apps"]["zmq"],
            json!({"host": "127.0.0.1", "manage": 14000})
        );
        assert_eq!(root["logging"], json!({"console": false}));
        assert_eq!(root["plugins"]["backbones"]["inmem"], json!({"x": 1}));
        assert!(root.get("threatbus_lowercase").is_none());
    }

    #[test]
    fn env_overrides_reach_into_list_items_by_index() {
        let mut root = json!({"feeds": [{"name": "a", "password": "file"}, {"name": "b"}]});
        apply_env_overrides(
            &mut root,
            env(&[
                ("THREATBUS_FEEDS__0__PASSWORD", "secret"),
                ("THREATBUS_FEEDS__1__USERNAME", "u"),
                // Not an index of the list: the list becomes a map, as before.
                ("THREATBUS_OTHER__X", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(
            root["feeds"],
            json!([{"name": "a", "password": "secret"}, {"name": "b", "username": "u"}])
        );
        let mut root = json!({"feeds": [{"name": "a"}]});
        apply_env_overrides(&mut root, env(&[("THREATBUS_FEEDS__5__NAME", "x")])).unwrap();
        assert_eq!(root["feeds"], json!({"5": {"name": "x"}}));
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "threatbus-config-test-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn loads_a_file_and_reports_every_error() {
        let dir = temp_dir("errors");
        let path = write(
            &dir,
            "bad.yaml",
            "logging:\n  console_verbosity: LOUD\nbus:\n  queue_capacity: 0\nplugins:\n  apps:\n    zmq: {}\n",
        );
        let errors = load(Some(&path), env(&[])).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{text:?}");
        assert!(
            text[0].starts_with("logging.console_verbosity") && text[0].contains("LOUD"),
            "{text:?}"
        );
        assert!(text[1].starts_with("bus.queue_capacity"), "{text:?}");
        assert!(
            text[2].starts_with("plugins.backbones: missing"),
            "{text:?}"
        );
    }

    #[test]
    fn rejects_wrong_suffix_and_missing_file() {
        let err = load(Some(Path::new("config.json")), env(&[])).unwrap_err();
        assert!(err[0].message.contains("yaml"), "{err:?}");
        let err = load(Some(Path::new("/nonexistent/threatbus.yaml")), env(&[])).unwrap_err();
        assert!(
            err[0].message.contains("/nonexistent/threatbus.yaml"),
            "{err:?}"
        );
    }

    #[test]
    fn embedded_default_is_valid_and_env_applies_to_it() {
        let (source, text) = (Source::Embedded, EMBEDDED_DEFAULT);
        let mut root: Value = serde_saphyr::from_str(text).unwrap();
        apply_env_overrides(
            &mut root,
            env(&[("THREATBUS_PLUGINS__APPS__ZMQ__MANAGE", "14000")]),
        )
        .unwrap();
        let (config, errors) = validate(source, root).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(config.backbones[0].0, "inmem");
        assert_eq!(config.apps[0].0, "zmq");
        assert_eq!(config.apps[0].1["manage"], 14000);
    }

    #[test]
    fn upstream_example_shape_loads() {
        let dir = temp_dir("upstream");
        let path = write(
            &dir,
            "config.yaml",
            r#"
logging:
  console: true
  console_verbosity: INFO        # One of "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL".
  file: false
  file_verbosity: INFO
  filename: threatbus.log

plugins:
  backbones:
    inmem: {}
  apps:
    zmq:
      host: "127.0.0.1"          # Required.
      manage: 13370              # Required.
      pub: 13371                 # Required.
      sub: 13372                 # Required.
"#,
        );
        let config = load(Some(&path), env(&[])).unwrap();
        assert_eq!(config.source, Source::File(path));
        assert_eq!(config.apps.len(), 1);
        assert!(config.ignored_keys.is_empty());
    }
}
