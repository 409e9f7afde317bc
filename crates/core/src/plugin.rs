//! What apps and backbones implement, and what the core hands them.
//!
//! Plugins are built from their typed config section first (a fallible, synchronous step in the
//! plugin crate, so that every config error surfaces before any socket is bound) and then run
//! until the shutdown tokens fire.

use std::future::Future;
use std::pin::Pin;

use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::handle::BusHandle;
use crate::intake::Inbound;
use crate::message::Message;
use crate::metrics::{Gauge, Registry};

/// A boxed, sendable future, as the plugin traits return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The error underneath a [`PluginError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A plugin failed to start or failed while running: the plugin's own typed error, or what it
/// was doing (e.g. serving which API) with the error that stopped it as its source.
#[derive(Debug, Error)]
pub enum PluginError {
    /// The plugin's own error, which says what failed.
    #[error(transparent)]
    Failed(BoxError),
    /// A failure at `what`, caused by `source`.
    #[error("{what}")]
    During {
        what: String,
        #[source]
        source: BoxError,
    },
    /// A failure with no underlying error (a missing setting, a task that ended early).
    #[error("{0}")]
    Message(String),
}

impl PluginError {
    /// A failure at `what`, caused by `source`.
    pub fn new(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::During {
            what: what.into(),
            source: source.into(),
        }
    }

    /// The plugin's own error, which says what failed by itself.
    pub fn from_error(source: impl Into<BoxError>) -> Self {
        Self::Failed(source.into())
    }

    /// A failure with no underlying error.
    pub fn message(what: impl Into<String>) -> Self {
        Self::Message(what.into())
    }

    /// What failed and every cause, joined by `: ` (for log lines and the exit message).
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(err) = cause {
            text.push_str(": ");
            text.push_str(&err.to_string());
            cause = err.source();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Error)]
    #[error("cannot bind the pub socket")]
    struct Bind(#[source] std::io::Error);

    #[test]
    fn reports_name_every_cause_once() {
        let refused = || std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let own = PluginError::from_error(Bind(refused()));
        assert_eq!(own.report(), "cannot bind the pub socket: address in use");
        let during = PluginError::new("plugins.apps.x", Bind(refused()));
        assert_eq!(
            during.report(),
            "plugins.apps.x: cannot bind the pub socket: address in use"
        );
        assert!(std::error::Error::source(&during).is_some());
        assert_eq!(PluginError::message("x: required").report(), "x: required");
    }
}

/// The two stages of a graceful shutdown, as an app sees them.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Fires first: stop taking input from outside (close listening sockets, stop reading), but
    /// keep delivering what subscriber queues still hold.
    pub stop_input: CancellationToken,
    /// Fires once the queues are drained or the deadline has passed: flush and return.
    pub stop: CancellationToken,
}

/// An app translates between an outside tool and bus messages.
pub trait App: Send + 'static {
    /// The plugin name as in `plugins.apps`.
    fn name(&self) -> &'static str;

    /// The app's section as it is in effect (defaults filled in), for `threatbus check`;
    /// `None` shows the section as written.
    fn effective_config(&self) -> Option<serde_json::Value> {
        None
    }

    /// Binds, serves and returns after `shutdown.stop` (or with an error if it cannot run).
    fn run(
        self: Box<Self>,
        bus: BusHandle,
        shutdown: Shutdown,
    ) -> BoxFuture<Result<(), PluginError>>;
}

/// A backbone carries messages between bus instances: it takes every message local apps
/// published (`outbound`) and hands back, through `inbound`, every message any instance
/// published, this one included.
pub trait Backbone: Send + 'static {
    /// The plugin name as in `plugins.backbones`.
    fn name(&self) -> &'static str;

    /// The backbone's section as it is in effect (defaults filled in), for `threatbus check`;
    /// `None` shows the section as written.
    fn effective_config(&self) -> Option<serde_json::Value> {
        None
    }

    /// Carries messages until `io.stop` fires, then flushes and returns.
    fn run(self: Box<Self>, io: BackboneIo) -> BoxFuture<Result<(), PluginError>>;
}

/// How this instance's messages reach every bus instance.
pub enum Carrier {
    /// This instance is alone (`plugins.backbones.inmem`): the core routes what its apps publish
    /// itself, with no backbone in between.
    Loopback,
    /// A backbone plugin carries messages between instances.
    Backbone(Box<dyn Backbone>),
}

impl Carrier {
    /// The name metrics and log lines use: the backbone's, or `inmem`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Loopback => "inmem",
            Self::Backbone(backbone) => backbone.name(),
        }
    }

    /// The section as it is in effect, for `threatbus check` (see [`Backbone::effective_config`]).
    pub fn effective_config(&self) -> Option<serde_json::Value> {
        match self {
            Self::Loopback => Some(serde_json::Value::Object(Default::default())),
            Self::Backbone(backbone) => backbone.effective_config(),
        }
    }
}

/// The backbone's connection to the core.
pub struct BackboneIo {
    /// What local apps published, in order.
    pub outbound: mpsc::Receiver<Message>,
    /// Where to hand what any instance published.
    pub inbound: Inbound,
    /// Fires when the backbone should flush and return.
    pub stop: CancellationToken,
    /// Where the backbone takes its own metrics from.
    pub metrics: Arc<Registry>,
    /// The backbone's readiness (`threatbus_ready{component="backbone:<name>"}`): set to 1
    /// while connected, 0 while not.
    pub ready: Gauge,
}
