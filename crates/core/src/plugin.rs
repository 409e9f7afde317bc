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

use crate::metrics::{Gauge, Registry};
use crate::router::Command;
use crate::{BusError, BusHandle, Message};

/// A boxed, sendable future, as the plugin traits return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A plugin failed to start or failed while running. The message says what and why (e.g. the
/// address that could not be bound).
#[derive(Debug, Error)]
#[error("{0}")]
pub struct PluginError(pub String);

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
/// published, this one included. The in-memory backbone is the identity.
pub trait Backbone: Send + 'static {
    /// The plugin name as in `plugins.backbones`.
    fn name(&self) -> &'static str;

    /// The backbone's section as it is in effect (defaults filled in), for `threatbus check`;
    /// `None` shows the section as written.
    fn effective_config(&self) -> Option<serde_json::Value> {
        None
    }

    /// True for a backbone that only hands every message back to this same instance (the
    /// in-memory backbone). The core then routes published messages itself and never calls
    /// [`Backbone::run`].
    fn loops_back(&self) -> bool {
        false
    }

    /// Carries messages until `io.stop` fires, then flushes and returns.
    fn run(self: Box<Self>, io: BackboneIo) -> BoxFuture<Result<(), PluginError>>;
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

/// Hands messages from a backbone to the router.
#[derive(Clone)]
pub struct Inbound {
    pub(crate) router: mpsc::Sender<Command>,
}

impl Inbound {
    /// Routes `message` to the local subscribers; waits while the router is busy.
    pub async fn deliver(&self, message: Message) -> Result<(), BusError> {
        self.router
            .send(Command::Route(message))
            .await
            .map_err(|_| BusError::Stopped)
    }
}
