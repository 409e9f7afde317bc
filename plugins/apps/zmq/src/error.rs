//! What can go wrong in the ZeroMQ app, typed.

use thiserror::Error;
use threatbus_core::{BusError, DecodeError};

/// A failure that stops the app: its sockets or threads.
#[derive(Debug, Error)]
pub enum ZmqAppError {
    /// A socket could not be created, configured or bound.
    #[error("plugins.apps.zmq: cannot bind the {socket} socket to {endpoint}")]
    Bind {
        socket: &'static str,
        endpoint: String,
        #[source]
        source: zmq::Error,
    },
    /// A bound socket failed while serving.
    #[error("ZeroMQ {socket} socket failed")]
    Socket {
        socket: &'static str,
        #[source]
        source: zmq::Error,
    },
    /// A socket thread could not be started.
    #[error("cannot start thread {name}")]
    Thread {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// A socket thread panicked.
    #[error("thread {0} panicked")]
    Panicked(String),
}

/// Why a frame from an app was dropped.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("no space between topic and payload")]
    NoSpace,
    #[error("topic is not UTF-8")]
    TopicNotUtf8,
    #[error("unexpected topic")]
    UnexpectedTopic,
    #[error(transparent)]
    Payload(#[from] DecodeError),
}

/// Why a subscribe request was refused after it passed the request checks; the text goes to
/// the app in the `reason` of the error reply.
#[derive(Debug, Error)]
pub enum SubscribeError {
    #[error("snapshot of {0} days is out of range")]
    SnapshotOutOfRange(i64),
    #[error("the ZeroMQ publisher has stopped")]
    PublisherStopped,
    #[error(transparent)]
    Bus(#[from] BusError),
}
