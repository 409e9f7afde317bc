//! Every plugin compiled into this binary, in one list. Each entry is behind the cargo feature
//! of the same name; an unknown name in the config fails with this list.

use serde::Deserialize;
use serde_json::Value;
use threatbus_core::config::{ConfigError, parse_section};
use threatbus_core::{App, Carrier};

use std::path::Path;

use crate::config::{self, Config};

/// A plugin: its name under `plugins.apps` or `plugins.backbones` and how to build it from its
/// config section (and what else of the configuration it depends on).
pub struct Plugin<T> {
    pub name: &'static str,
    pub build: fn(&Value, &Context) -> Result<T, ConfigError>,
}

/// What a plugin may need from outside its own section.
#[derive(Debug, Default)]
pub struct Context {
    /// The intel store, if the configuration has one (the TAXII server serves from it).
    pub store: Option<threatbus_store::Location>,
}

/// An app plugin.
pub type AppPlugin = Plugin<Box<dyn App>>;
/// A backbone plugin: what carries messages between instances.
pub type BackbonePlugin = Plugin<Carrier>;

/// `plugins.backbones.inmem` takes no settings (`inmem: {}` or `inmem:`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InMemoryConfig {}

/// The compiled-in apps.
pub const APPS: &[AppPlugin] = &[
    #[cfg(feature = "zmq")]
    AppPlugin {
        name: "zmq",
        build: |section, _| Ok(Box::new(threatbus_zmq::ZmqApp::build(section)?)),
    },
    #[cfg(feature = "zeek")]
    AppPlugin {
        name: "zeek",
        build: |section, _| Ok(Box::new(threatbus_zeek::ZeekApp::build(section)?)),
    },
    #[cfg(feature = "misp")]
    AppPlugin {
        name: "misp",
        build: |section, _| Ok(Box::new(threatbus_misp::MispApp::build(section)?)),
    },
    #[cfg(feature = "cif3")]
    AppPlugin {
        name: "cif3",
        build: |section, _| Ok(Box::new(threatbus_cif3::Cif3App::build(section)?)),
    },
    #[cfg(feature = "taxii")]
    AppPlugin {
        name: "taxii",
        build: |section, context| {
            let app = threatbus_taxii_server::TaxiiApp::build(section, context.store.as_ref())?;
            Ok(Box::new(app))
        },
    },
    #[cfg(feature = "taxii_feeds")]
    AppPlugin {
        name: "taxii_feeds",
        build: |section, context| {
            let app = threatbus_taxii_feeds::TaxiiFeedsApp::build(section, context.store.as_ref())?;
            Ok(Box::new(app))
        },
    },
];

/// The compiled-in backbones.
pub const BACKBONES: &[BackbonePlugin] = &[
    // One bus instance, no external service: the core routes what its apps publish itself.
    BackbonePlugin {
        name: "inmem",
        build: |section, _| {
            parse_section::<InMemoryConfig>("plugins.backbones.inmem", section)?;
            Ok(Carrier::Loopback)
        },
    },
    #[cfg(feature = "rabbitmq")]
    BackbonePlugin {
        name: "rabbitmq",
        build: |section, _| {
            let backbone = threatbus_rabbitmq::RabbitMq::build(section)?;
            Ok(Carrier::Backbone(Box::new(backbone)))
        },
    },
];

/// The built plugins, ready to run.
pub struct Plugins {
    pub backbone: Carrier,
    pub apps: Vec<Box<dyn App>>,
    /// Notes for the log (e.g. a redundant backbone that was left out).
    pub notes: Vec<String>,
}

fn names<T>(plugins: &[Plugin<T>]) -> String {
    let list: Vec<_> = plugins.iter().map(|p| p.name).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// Builds every configured plugin of one kind (`apps` or `backbones`), collecting errors.
fn build_kind<T>(
    kind: &str,
    configured: &[(String, Value)],
    compiled_in: &[Plugin<T>],
    context: &Context,
    errors: &mut Vec<ConfigError>,
) -> Vec<T> {
    let mut built = Vec::new();
    for (name, section) in configured {
        match compiled_in.iter().find(|p| p.name == name) {
            Some(plugin) => match (plugin.build)(section, context) {
                Ok(plugin) => built.push(plugin),
                Err(err) => errors.push(err),
            },
            None => errors.push(ConfigError::new(
                format!("plugins.{kind}.{name}"),
                format!(
                    "unknown plugin {name:?}; compiled-in {kind}: {}",
                    names(compiled_in)
                ),
            )),
        }
    }
    built
}

/// Loads the configuration and builds every configured plugin, as a start does; returns every
/// error found in the file, the environment and all plugin sections together.
pub fn load_and_build(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Config, Plugins), Vec<ConfigError>> {
    let (config, mut errors) = config::read(path, env)?;
    match build(&config) {
        Ok(plugins) if errors.is_empty() => Ok((config, plugins)),
        Ok(_) => Err(errors),
        Err(more) => {
            // A section reported missing by the loader is not reported again as empty.
            for error in more {
                if !errors.iter().any(|e| e.key == error.key) {
                    errors.push(error);
                }
            }
            Err(errors)
        }
    }
}

/// Builds every configured plugin; returns every error found.
pub fn build(config: &Config) -> Result<Plugins, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let context = Context {
        store: config
            .store
            .as_ref()
            .map(threatbus_store::StoreConfig::location),
    };
    let apps = build_kind("apps", &config.apps, APPS, &context, &mut errors);
    let mut backbones = build_kind(
        "backbones",
        &config.backbones,
        BACKBONES,
        &context,
        &mut errors,
    );
    // A backbone is a transport between instances. The in-memory one is the identity, so next
    // to a real transport it is redundant (upstream's example config lists both).
    if backbones.len() > 1 {
        let before = backbones.len();
        backbones.retain(|b| b.name() != "inmem");
        if backbones.len() < before {
            notes.push("ignoring backbone `inmem`: another backbone carries the messages".into());
        }
    }
    if config.apps.is_empty() {
        errors.push(ConfigError::new(
            "plugins.apps",
            format!("no app configured; compiled-in apps: {}", names(APPS)),
        ));
    }
    match backbones.len() {
        0 if errors.is_empty() => errors.push(ConfigError::new(
            "plugins.backbones",
            format!(
                "no backbone configured; compiled-in backbones: {}",
                names(BACKBONES)
            ),
        )),
        0 | 1 => {}
        _ => errors.push(ConfigError::new(
            "plugins.backbones",
            "configure only one backbone besides `inmem`",
        )),
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let backbone = backbones
        .pop()
        .ok_or_else(|| vec![ConfigError::new("plugins.backbones", "no backbone")])?;
    Ok(Plugins {
        backbone,
        apps,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;
    use crate::logging::LoggingConfig;
    use serde_json::json;

    fn config(apps: Value, backbones: Value) -> Config {
        let pairs = |v: Value| match v {
            Value::Object(map) => map.into_iter().collect(),
            _ => Vec::new(),
        };
        Config {
            source: Source::Embedded,
            logging: LoggingConfig::default(),
            bus: Default::default(),
            metrics: Default::default(),
            store: None,
            document: Value::Null,
            apps: pairs(apps),
            backbones: pairs(backbones),
            ignored_keys: Vec::new(),
        }
    }

    fn errors(config: &Config) -> Vec<String> {
        match build(config) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn unknown_plugins_fail_with_the_compiled_in_list() {
        let zmq = json!({"host": "127.0.0.1", "manage": 1, "pub": 2, "sub": 3});
        let errs = errors(&config(
            json!({"zmq": zmq, "foo": {}}),
            json!({"inmem": {}, "kafka": {}}),
        ));
        assert_eq!(
            errs,
            [
                "plugins.apps.foo: unknown plugin \"foo\"; compiled-in apps: zmq, zeek, misp, cif3, taxii, taxii_feeds"
                    .to_owned(),
                format!(
                    "plugins.backbones.kafka: unknown plugin \"kafka\"; compiled-in backbones: {}",
                    names(BACKBONES)
                ),
            ]
        );
    }

    #[cfg(feature = "taxii")]
    #[test]
    fn the_taxii_server_needs_the_store() {
        let errs = errors(&config(json!({"taxii": {}}), json!({"inmem": null})));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("plugins.apps.taxii: the TAXII server serves the intel store, and there is none: add a `store` section"),
            "{errs:?}"
        );
        let mut with_store = config(json!({"taxii": {}}), json!({"inmem": null}));
        with_store.store = Some(serde_json::from_value(json!({})).unwrap());
        assert_eq!(errors(&with_store), Vec::<String>::new());
    }

    #[test]
    fn plugin_sections_are_validated_and_apps_are_required() {
        let errs = errors(&config(
            json!({"zmq": {"host": "x"}}),
            json!({"inmem": {"a": 1}}),
        ));
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("plugins.apps.zmq.manage"), "{errs:?}");
        assert!(errs[1].starts_with("plugins.backbones.inmem"), "{errs:?}");
        let errs = errors(&config(json!({}), json!({"inmem": null})));
        assert_eq!(
            errs,
            [
                "plugins.apps: no app configured; compiled-in apps: zmq, zeek, misp, cif3, taxii, taxii_feeds"
            ]
        );
    }

    #[cfg(feature = "rabbitmq")]
    #[test]
    fn rabbitmq_is_compiled_in_and_validated() {
        let zmq = json!({"host": "127.0.0.1", "manage": 1, "pub": 2, "sub": 3});
        let rabbitmq =
            json!({"host": "localhost", "port": 5672, "username": "guest", "password": "guest"});
        // Upstream's example config lists both backbones; RabbitMQ carries the messages.
        let plugins = build(&config(
            json!({"zmq": zmq}),
            json!({"inmem": {}, "rabbitmq": rabbitmq}),
        ))
        .unwrap();
        assert_eq!(plugins.backbone.name(), "rabbitmq");
        assert_eq!(plugins.notes.len(), 1);
        let errs = errors(&config(
            json!({"zmq": zmq}),
            json!({"rabbitmq": {"host": "localhost", "username": "u", "password": "p"}}),
        ));
        assert_eq!(
            errs,
            ["plugins.backbones.rabbitmq.port: required, but missing"]
        );
    }

    #[test]
    fn errors_of_core_and_plugin_sections_are_reported_together() {
        let dir = std::env::temp_dir().join(format!("threatbus-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(
            &path,
            "logging:\n  console_verbosity: LOUD\nmetrics:\n  listen: 0\nplugins:\n  backbones:\n    inmem: {}\n  apps: {}\n",
        )
        .unwrap();
        let errors: Vec<String> = match load_and_build(Some(&path), Vec::new()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("logging.console_verbosity"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("metrics.listen: port must be 1-65535, got 0"),
            "{errors:?}"
        );
        assert!(
            errors[2].starts_with("plugins.apps: no app configured"),
            "{errors:?}"
        );
        // A missing section is reported once, by the loader.
        std::fs::write(&path, "plugins:\n  backbones:\n    inmem: {}\n").unwrap();
        let errors: Vec<String> = match load_and_build(Some(&path), Vec::new()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("plugins.apps: missing"), "{errors:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_valid_config_builds() {
        let zmq = json!({"host": "127.0.0.1", "manage": 1, "pub": 2, "sub": 3});
        let plugins = build(&config(json!({"zmq": zmq}), json!({"inmem": null}))).unwrap();
        assert_eq!(plugins.backbone.name(), "inmem");
        assert_eq!(plugins.apps.len(), 1);
    }
}
