//! What can go wrong talking to RabbitMQ, split into what a reconnect can cure and what it
//! cannot.

use std::time::Duration;

use lapin::ErrorKind;
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use thiserror::Error;

/// An error of the RabbitMQ backbone.
#[derive(Debug, Error)]
pub enum RabbitMqError {
    /// The connection or a channel failed in a way a reconnect may cure (server down,
    /// network error, heartbeat timeout, server restart).
    #[error("{context}: {source}")]
    Transient {
        context: String,
        #[source]
        source: lapin::Error,
    },
    /// A connection attempt did not finish in time.
    #[error("{context}: no answer within {timeout:?}")]
    Timeout { context: String, timeout: Duration },
    /// The server refused what we asked for in a way that retrying cannot change: the exchange
    /// or queue exists with other flags or arguments, the login or virtual host is refused,
    /// access to a resource is denied.
    #[error("{0}")]
    Fatal(String),
    /// The TLS settings cannot be used (unreadable CA file, bad key). `key` is below
    /// `plugins.backbones.rabbitmq`, e.g. `tls.ca_file`.
    #[error("{key}: {message}")]
    Tls { key: &'static str, message: String },
    /// The server did not confirm a published message (it nacked it).
    #[error("RabbitMQ did not accept a published message (basic.nack)")]
    Nacked,
    /// The server closed the session in an orderly way we did not ask for (e.g. a consumer
    /// cancelled because its queue was deleted).
    #[error("{0}")]
    Closed(String),
    /// No publisher confirm arrived for a long time although messages await one: the
    /// connection is taken for hung.
    #[error("no publisher confirm for {waited:?} with {unconfirmed} messages awaiting one")]
    Stalled {
        waited: Duration,
        unconfirmed: usize,
    },
}

impl RabbitMqError {
    /// Classifies a lapin error raised while doing `context` (e.g. `declaring queue "x"`).
    pub fn from_lapin(context: impl Into<String>, source: lapin::Error) -> Self {
        let context = context.into();
        if let ErrorKind::ProtocolError(amqp) = source.kind() {
            let fatal = match amqp.kind() {
                // The resource exists with other flags / arguments, or is locked by another
                // connection (exclusive queue): redeclaring will fail the same way.
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
                | AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
                | AMQPErrorKind::Soft(AMQPSoftError::RESOURCELOCKED) => true,
                // Unknown virtual host or no permission on it (a refused login is
                // ACCESS_REFUSED above).
                AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => true,
                _ => false,
            };
            if fatal {
                return Self::Fatal(format!(
                    "{context}: RabbitMQ refused: {}",
                    amqp.get_message()
                ));
            }
        }
        Self::Transient { context, source }
    }

    /// Whether reconnecting cannot help.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Fatal(_) | Self::Tls { .. })
    }
}
