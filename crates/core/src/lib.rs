//! Threat Bus core.
//!
//! The core owns the message model ([`Message`]), the routing topics ([`topic`]), the one
//! subscription table and the snapshot bookkeeping (both inside the [`router`]), and the traits
//! that apps ([`App`]) and backbones ([`Backbone`]) implement. It is the only place that decides
//! who receives what: apps publish through a [`BusHandle`] and read their [`SubscriberReceiver`];
//! backbones carry what local apps published to every bus instance and hand back what any
//! instance published.

#![forbid(unsafe_code)]

// The modules in dependency order, top-down: each uses only those above it.

// Foundations: errors, log throttling, settings, metrics.
mod error;

pub mod throttle;

pub mod config;

pub mod metrics;

pub mod stats;

// What travels: routing topics, messages (charged against the memory budget), subscriber
// queues.
pub mod topic;

pub mod budget;

pub mod message;

pub mod queue;

// What a subscriber that fell behind is fed from, and the journal of what it missed.
pub mod catchup;

// The router's mailbox, where published messages enter, and the handle apps hold.
mod command;

mod intake;

pub mod handle;

// Who receives what.
pub mod router;

// What plugins implement, and the bus's lifecycle.
pub mod plugin;

pub mod bus;

pub use bus::{Bus, Running};
pub use catchup::{CatchUpKey, CatchUpReader, CatchUpSource};
pub use config::{BusConfig, ConfigError, WhenFull};
pub use error::BusError;
pub use handle::BusHandle;
pub use intake::Inbound;
pub use message::{Body, DecodeError, Message, MessageType, SnapshotEnvelope, SnapshotRequest};
pub use metrics::Registry;
pub use plugin::{App, Backbone, BackboneIo, BoxError, BoxFuture, Carrier, PluginError, Shutdown};
pub use queue::{SubscriberId, SubscriberOptions, SubscriberReceiver};
pub use stats::Totals;
pub use threatbus_stix as stix;
