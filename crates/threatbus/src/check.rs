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

use threatbus_core::config::ConfigError;

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
    let (listeners, clients): (Vec<_>, Vec<_>) = unresolvable_hosts(&effective)
        .into_iter()
        .partition(|(listener, _)| *listener);
    if !listeners.is_empty() {
        let errors: Vec<ConfigError> = listeners.into_iter().map(|(_, e)| e).collect();
        report_config_errors(&errors);
        return ExitCode::FAILURE;
    }
    for (_, warning) in clients {
        eprintln!(
            "threatbus: warning: {warning} (the bus starts anyway and keeps trying to reach it)"
        );
    }
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
    if let Some(store) = config
        .store
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
    {
        document.insert("store".into(), store);
    }
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

/// A host in the effective configuration: where it is, whether the value is a URL (whose host
/// part counts), and whether it is a listener's (the bus binds it) or a client's (the bus
/// connects to it).
struct HostKey {
    path: &'static [&'static str],
    url: bool,
    listener: bool,
}

const HOST_KEYS: [HostKey; 6] = [
    HostKey {
        path: &["plugins", "apps", "zmq", "host"],
        url: false,
        listener: true,
    },
    HostKey {
        path: &["plugins", "apps", "zeek", "host"],
        url: false,
        listener: true,
    },
    HostKey {
        path: &["plugins", "apps", "misp", "zmq", "host"],
        url: false,
        listener: false,
    },
    HostKey {
        path: &["plugins", "apps", "misp", "api", "host"],
        url: true,
        listener: false,
    },
    HostKey {
        path: &["plugins", "apps", "cif3", "api", "host"],
        url: true,
        listener: false,
    },
    HostKey {
        path: &["plugins", "backbones", "rabbitmq", "host"],
        url: false,
        listener: false,
    },
];

/// How long `check` waits for a name to resolve.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The host part of `http(s)://host[:port]/...`.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if let Some(bracketed) = authority.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or(bracketed);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// Resolves `host` (a name; literals need nothing), within [`RESOLVE_TIMEOUT`].
fn resolve(host: &str) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    if unbracketed.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_owned();
    std::thread::spawn(move || {
        let result = (name.as_str(), 0)
            .to_socket_addrs()
            .map(|mut addresses| addresses.next().is_some());
        let _ = tx.send(result);
    });
    match rx.recv_timeout(RESOLVE_TIMEOUT) {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err("resolves to no address".into()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!(
            "no answer from the resolver within {RESOLVE_TIMEOUT:?}"
        )),
    }
}

/// Every configured host that does not resolve, and whether it is a listener's. A listener
/// that cannot resolve cannot bind: an error. A client's server may be unknown to DNS for a
/// while (the bus retries): a warning, so that a `check` before a start (the systemd unit's)
/// does not fail on a passing DNS outage.
fn unresolvable_hosts(effective: &Value) -> Vec<(bool, ConfigError)> {
    HOST_KEYS
        .iter()
        .filter_map(|key| {
            let value = key
                .path
                .iter()
                .try_fold(effective, |v, name| v.get(name))?
                .as_str()?;
            let host = if key.url { url_host(value) } else { value };
            resolve(host).err().map(|why| {
                let error = ConfigError::new(
                    key.path.join("."),
                    format!(
                        "cannot resolve {:?}: {why}",
                        threatbus_core::throttle::bounded(host)
                    ),
                );
                (key.listener, error)
            })
        })
        .collect()
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
    fn url_hosts_and_literals() {
        assert_eq!(url_host("https://misp.example.org/x"), "misp.example.org");
        assert_eq!(url_host("http://user@cif:5000"), "cif");
        assert_eq!(url_host("https://[::1]:8443/"), "::1");
        assert_eq!(resolve("127.0.0.1"), Ok(()));
        assert_eq!(resolve("[::1]"), Ok(()));
        assert_eq!(resolve("localhost"), Ok(()));
        assert!(resolve("no-such-host.invalid").is_err());
    }

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
