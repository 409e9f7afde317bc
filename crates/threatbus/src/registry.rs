//! Every plugin compiled into this binary, in one list. Each entry is behind the cargo feature
//! of the same name; an unknown name in the config fails with this list.

use serde_json::Value;
use threatbus_core::config::ConfigError;
use threatbus_core::{App, Backbone};

use crate::config::Config;

/// An app plugin: its name under `plugins.apps` and how to build it from its section.
pub struct AppPlugin {
    pub name: &'static str,
    pub build: fn(&Value) -> Result<Box<dyn App>, ConfigError>,
}

/// A backbone plugin: its name under `plugins.backbones` and how to build it.
pub struct BackbonePlugin {
    pub name: &'static str,
    pub build: fn(&Value) -> Result<Box<dyn Backbone>, ConfigError>,
}

/// The compiled-in apps.
pub const APPS: &[AppPlugin] = &[
    #[cfg(feature = "zmq")]
    AppPlugin {
        name: "zmq",
        build: |section| Ok(Box::new(threatbus_zmq::ZmqApp::build(section)?)),
    },
];

/// The compiled-in backbones.
pub const BACKBONES: &[BackbonePlugin] = &[
    #[cfg(feature = "inmem")]
    BackbonePlugin {
        name: "inmem",
        build: |section| Ok(Box::new(threatbus_inmem::InMemory::build(section)?)),
    },
];

/// The built plugins, ready to run.
pub struct Plugins {
    pub backbone: Box<dyn Backbone>,
    pub apps: Vec<Box<dyn App>>,
    /// Notes for the log (e.g. a redundant backbone that was left out).
    pub notes: Vec<String>,
}

fn names<T>(plugins: &[T], name: fn(&T) -> &'static str) -> String {
    let list: Vec<_> = plugins.iter().map(name).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// Builds every configured plugin; returns every error found.
pub fn build(config: &Config) -> Result<Plugins, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let mut apps = Vec::new();
    for (name, section) in &config.apps {
        match APPS.iter().find(|p| p.name == name) {
            Some(plugin) => match (plugin.build)(section) {
                Ok(app) => apps.push(app),
                Err(err) => errors.push(err),
            },
            None => errors.push(ConfigError::new(
                format!("plugins.apps.{name}"),
                format!(
                    "unknown app plugin {name:?}; compiled-in apps: {}",
                    names(APPS, |p| p.name)
                ),
            )),
        }
    }
    let mut backbones = Vec::new();
    for (name, section) in &config.backbones {
        match BACKBONES.iter().find(|p| p.name == name) {
            Some(plugin) => match (plugin.build)(section) {
                Ok(backbone) => backbones.push(backbone),
                Err(err) => errors.push(err),
            },
            None => errors.push(ConfigError::new(
                format!("plugins.backbones.{name}"),
                format!(
                    "unknown backbone plugin {name:?}; compiled-in backbones: {}",
                    names(BACKBONES, |p| p.name)
                ),
            )),
        }
    }
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
            format!(
                "no app configured; compiled-in apps: {}",
                names(APPS, |p| p.name)
            ),
        ));
    }
    match backbones.len() {
        0 if errors.is_empty() => errors.push(ConfigError::new(
            "plugins.backbones",
            format!(
                "no backbone configured; compiled-in backbones: {}",
                names(BACKBONES, |p| p.name)
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
