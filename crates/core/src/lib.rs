//! Threat Bus core.
//!
//! The core owns the message model ([`Message`]), the routing topics ([`topic`]), the one
//! subscription table and the snapshot bookkeeping (both inside the [`router`]), and the traits
//! that apps ([`App`]) and backbones ([`Backbone`]) implement. It is the only place that decides
//! who receives what: apps publish through a [`BusHandle`] and read their [`SubscriberReceiver`];
//! backbones carry what local apps published to every bus instance and hand back what any
//! instance published.

#![forbid(unsafe_code)]

pub mod budget;
pub mod bus;
pub mod config;
mod error;
pub mod message;
pub mod metrics;
pub mod plugin;
pub mod queue;
pub mod router;
pub mod stats;
pub mod throttle;
pub mod topic;

pub use bus::{Bus, BusHandle};
pub use config::{BusConfig, ConfigError, WhenFull};
pub use error::BusError;
pub use message::{Body, DecodeError, Message, MessageType, SnapshotEnvelope, SnapshotRequest};
pub use metrics::Registry;
pub use plugin::{App, Backbone, BackboneIo, BoxFuture, PluginError, Shutdown};
pub use queue::{SubscriberId, SubscriberOptions, SubscriberReceiver};
pub use stats::Totals;
pub use threatbus_stix as stix;
