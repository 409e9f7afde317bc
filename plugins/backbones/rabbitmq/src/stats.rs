//! Counters of the RabbitMQ backbone, summarised in the log at shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use threatbus_core::metrics::{self, Counter, Gauge, Histogram, Registry};

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

/// The backbone's metrics (see `threatbus_core::metrics`). Cheap to clone; the default counts
/// nowhere.
#[derive(Debug, Clone, Default)]
pub struct Meters {
    connected: Gauge,
    ready: Gauge,
    connects: Counter,
    pub(crate) confirm_latency: Histogram,
    pub(crate) dropped_buffer_full: Counter,
    /// How many of the two halves (publisher, consumer) are connected.
    halves_up: Arc<AtomicU8>,
}

impl Meters {
    /// Takes the handles from `registry`; `ready` is the backbone's readiness gauge.
    pub fn new(registry: &Registry, ready: Gauge) -> Self {
        let meters = Self {
            connected: registry.gauge(&metrics::RABBITMQ_CONNECTED, &[]),
            ready,
            connects: registry.counter(&metrics::RABBITMQ_CONNECTS, &[]),
            confirm_latency: registry.histogram(&metrics::RABBITMQ_CONFIRM_LATENCY, &[]),
            dropped_buffer_full: registry
                .counter(&metrics::DROPPED, &["rabbitmq", "publish_buffer_full"]),
            halves_up: Arc::default(),
        };
        meters.publish_state(0);
        meters
    }

    /// One half (publisher or consumer) connected.
    pub(crate) fn half_connected(&self) {
        self.connects.inc();
        let up = self.halves_up.fetch_add(1, Ordering::Relaxed) + 1;
        self.publish_state(up);
    }

    /// One half that was connected lost its connection (or stopped).
    pub(crate) fn half_disconnected(&self) {
        let up = self
            .halves_up
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        self.publish_state(up);
    }

    fn publish_state(&self, halves_up: u8) {
        let state = i64::from(halves_up >= 2);
        self.connected.set(state);
        self.ready.set(state);
    }
}
