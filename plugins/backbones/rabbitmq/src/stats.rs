//! Counters of the RabbitMQ backbone, summarised in the log at shutdown.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the backbone did. Cheap atomics, shared by the publisher and the consumer.
#[derive(Debug, Default)]
pub struct RabbitMqStats {
    /// Messages the server confirmed (each counted once, however often it was sent).
    pub confirmed: AtomicU64,
    /// Messages sent again after a reconnect because their confirm had not arrived.
    pub resent: AtomicU64,
    /// Messages dropped because the publish buffer was full while RabbitMQ was unreachable.
    pub dropped_buffer_full: AtomicU64,
    /// Messages still unconfirmed when the backbone stopped (lost unless the server got them).
    pub unconfirmed_at_stop: AtomicU64,
    /// Messages received from RabbitMQ and handed to the router.
    pub received: AtomicU64,
    /// Messages received a second time (resent or redelivered) and not handed on again.
    pub repeats: AtomicU64,
    /// Messages from RabbitMQ that were not bus messages.
    pub undecodable: AtomicU64,
    /// Connections (publisher and consumer) opened after the first.
    pub reconnects: AtomicU64,
}

impl RabbitMqStats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        format!(
            "published and confirmed {}, resent after reconnect {}, dropped (buffer full while disconnected) {}, unconfirmed at stop {}, received {}, repeats skipped {}, undecodable {}, reconnects {}",
            Self::get(&self.confirmed),
            Self::get(&self.resent),
            Self::get(&self.dropped_buffer_full),
            Self::get(&self.unconfirmed_at_stop),
            Self::get(&self.received),
            Self::get(&self.repeats),
            Self::get(&self.undecodable),
            Self::get(&self.reconnects),
        )
    }
}
