//! Errors the core reports to apps and to the binary.

use thiserror::Error;

/// Why a bus operation failed.
#[derive(Debug, Error)]
pub enum BusError {
    /// The bus is shutting down or its router has stopped; nothing more can be done.
    #[error("the bus is shutting down")]
    Stopped,
    /// The subscriber does not exist (never created, or already removed).
    #[error("unknown subscriber {0}")]
    UnknownSubscriber(u64),
    /// `bus.max_subscribers` subscribers exist already.
    #[error("the bus holds bus.max_subscribers ({0}) subscribers; no more")]
    TooManySubscribers(usize),
    /// An app or backbone failed; the message names which one and why.
    #[error("{kind} `{name}` failed: {reason}")]
    PluginFailed {
        kind: &'static str,
        name: String,
        reason: String,
    },
}
