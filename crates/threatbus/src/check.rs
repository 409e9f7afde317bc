//! `threatbus check`: loads and validates the whole configuration exactly as a start would
//! (file or embedded default, `.env`, `THREATBUS_` overrides, every plugin section built), binds
//! nothing, and prints the effective configuration with secrets masked.
//!
//! Every section is shown as it is in effect, defaults included (each plugin serialises its own
//! typed section). Standard output carries only the configuration, as JSON (which is also YAML, so it can be
//! saved as a config file once the masked values are filled in); the verdict goes to standard
//! error. Exit status 0: valid; 1: invalid, with every error listed.

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use crate::config::{Config, Source};
use crate::registry::{self, Plugins};
use crate::report_config_errors;

/// What a masked secret reads as.
pub const MASK: &str = "********";

pub fn run(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> ExitCode {
    let (config, plugins) = match registry::load_and_build(path, env) {
        Ok(loaded) => loaded,
        Err(errors) => {
            report_config_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    let mut effective = effective(&config, &plugins);
    mask_secrets(&mut effective);
    match serde_json::to_string_pretty(&effective) {
        Ok(text) => println!("{text}"),
        Err(err) => {
            eprintln!("threatbus: cannot print the configuration: {err}");
            return ExitCode::FAILURE;
        }
    }
    let source = match &config.source {
        Source::File(path) => path.display().to_string(),
        Source::Embedded => "the embedded default (no config.yaml or config.yml here)".into(),
    };
    for key in &config.ignored_keys {
        eprintln!("threatbus: warning: ignoring unknown top-level key `{key}`");
    }
    for note in &plugins.notes {
        eprintln!("threatbus: note: {note}");
    }
    let apps: Vec<_> = plugins.apps.iter().map(|app| app.name()).collect();
    eprintln!(
        "threatbus: configuration is valid: {source}; backbone {}, apps {}",
        plugins.backbone.name(),
        apps.join(", ")
    );
    ExitCode::SUCCESS
}

/// The document as read (file and environment), every section as it is in effect: the core's
/// and each built plugin's with their defaults filled in.
fn effective(config: &Config, plugins: &Plugins) -> Value {
    let mut document = match &config.document {
        Value::Object(map) => map.clone(),
        _ => Default::default(),
    };
    document.insert("logging".into(), config.logging.to_json());
    document.insert("bus".into(), config.bus.to_json());
    document.insert("metrics".into(), config.metrics.to_json());
    let sections = plugins
        .apps
        .iter()
        .map(|app| ("apps", app.name(), app.effective_config()))
        .chain(std::iter::once((
            "backbones",
            plugins.backbone.name(),
            plugins.backbone.effective_config(),
        )));
    for (kind, name, section) in sections {
        if let (Some(section), Some(Value::Object(kinds))) = (
            section,
            document.get_mut("plugins").and_then(|p| p.get_mut(kind)),
        ) {
            kinds.insert(name.into(), section);
        }
    }
    Value::Object(document)
}

/// Whether a key holds a secret: passwords, API keys, tokens (not file paths such as
/// `key_file`).
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    const NAMES: [&str; 6] = [
        "password",
        "key",
        "token",
        "secret",
        "api_key",
        "passphrase",
    ];
    NAMES.contains(&key.as_str())
        || ["_password", "_token", "_secret", "_passphrase"]
            .iter()
            .any(|suffix| key.ends_with(suffix))
}

/// Replaces every secret value (anything but an empty string or null) with [`MASK`].
pub fn mask_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let empty = value.is_null() || value.as_str().is_some_and(str::is_empty);
                if is_secret(key) && !empty {
                    *value = Value::String(MASK.into());
                } else {
                    mask_secrets(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_and_paths_are_not() {
        let mut doc = json!({
            "plugins": {
                "backbones": {"rabbitmq": {"username": "guest", "password": "s3cret", "tls": {"key_file": "/etc/tb/key.pem"}}},
                "apps": {
                    "misp": {"api": {"host": "https://misp", "key": "ABCDEF", "ssl": true}},
                    "cif3": {"api": {"token": 12345}},
                    "other": [{"Api_Token": "x"}, {"secret": ""}, {"password": null}],
                }
            }
        });
        mask_secrets(&mut doc);
        assert_eq!(doc["plugins"]["backbones"]["rabbitmq"]["password"], MASK);
        assert_eq!(doc["plugins"]["backbones"]["rabbitmq"]["username"], "guest");
        assert_eq!(
            doc["plugins"]["backbones"]["rabbitmq"]["tls"]["key_file"],
            "/etc/tb/key.pem"
        );
        assert_eq!(doc["plugins"]["apps"]["misp"]["api"]["key"], MASK);
        assert_eq!(
            doc["plugins"]["apps"]["misp"]["api"]["host"],
            "https://misp"
        );
        assert_eq!(doc["plugins"]["apps"]["cif3"]["api"]["token"], MASK);
        assert_eq!(doc["plugins"]["apps"]["other"][0]["Api_Token"], MASK);
        // Nothing to hide in an empty or missing value, and showing it helps find the mistake.
        assert_eq!(doc["plugins"]["apps"]["other"][1]["secret"], "");
        assert!(doc["plugins"]["apps"]["other"][2]["password"].is_null());
    }
}
