//! Counters of the RabbitMQ backbone: summarised in the log at shutdown and, once the backbone
//! runs, served as metrics (the same counters, adopted by the registry).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use threatbus_core::metrics::{self, Counter, Gauge, Histogram, Metric, Registry};

// The backbone's own metrics (docs/metrics.md lists them with the core's).

/// Whether the RabbitMQ connection is up.
pub const RABBITMQ_CONNECTED: Metric = Metric::gauge(
    "threatbus_rabbitmq_connected",
    "1 while the RabbitMQ backbone's connection (publisher and consumer) is up, else 0.",
    &[],
);
/// RabbitMQ connections made.
pub const RABBITMQ_CONNECTS: Metric = Metric::counter(
    "threatbus_rabbitmq_connects_total",
    "Connections the RabbitMQ backbone opened (the first one and every reconnect).",
    &[],
);
/// Time from publishing to RabbitMQ's confirm.
pub const RABBITMQ_CONFIRM_LATENCY: Metric = Metric::histogram(
    "threatbus_rabbitmq_confirm_latency_seconds",
    "Time from handing a message to RabbitMQ to its publisher confirm.",
    &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ],
);
/// Messages RabbitMQ confirmed.
pub const RABBITMQ_CONFIRMED: Metric = Metric::counter(
    "threatbus_rabbitmq_confirmed_messages_total",
    "Bus messages RabbitMQ confirmed (each once, however often it was sent).",
    &[],
);
/// Messages sent again after a reconnect.
pub const RABBITMQ_RESENT: Metric = Metric::counter(
    "threatbus_rabbitmq_resent_messages_total",
    "Bus messages sent again after a reconnect because their confirm had not arrived.",
    &[],
);
/// Messages received from RabbitMQ.
pub const RABBITMQ_RECEIVED: Metric = Metric::counter(
    "threatbus_rabbitmq_received_messages_total",
    "Bus messages received from RabbitMQ and handed to the router.",
    &[],
);
/// Repeats skipped.
pub const RABBITMQ_REPEATS: Metric = Metric::counter(
    "threatbus_rabbitmq_repeats_skipped_total",
    "Bus messages received a second time (resent or redelivered) and not handed on again.",
    &[],
);
/// Undecodable messages from RabbitMQ.
pub const RABBITMQ_UNDECODABLE: Metric = Metric::counter(
    "threatbus_rabbitmq_undecodable_messages_total",
    "Messages on the bus's queue that were not bus messages (see on_undecodable).",
    &[],
);
/// Every metric of the backbone, registered when it starts.
pub const METRICS: &[&Metric] = &[
    &RABBITMQ_CONNECTED,
    &RABBITMQ_CONNECTS,
    &RABBITMQ_CONFIRM_LATENCY,
    &RABBITMQ_CONFIRMED,
    &RABBITMQ_RESENT,
    &RABBITMQ_RECEIVED,
    &RABBITMQ_REPEATS,
    &RABBITMQ_UNDECODABLE,
];

/// What the backbone did. Cheap atomics, shared by the publisher and the consumer.
#[derive(Debug, Default)]
pub struct RabbitMqStats {
    /// Messages the server confirmed (each counted once, however often it was sent).
    pub confirmed: Counter,
    /// Messages sent again after a reconnect because their confirm had not arrived.
    pub resent: Counter,
    /// Messages dropped because the publish buffer was full while RabbitMQ was unreachable.
    pub dropped_buffer_full: Counter,
    /// Messages still unconfirmed when the backbone stopped (lost unless the server got them).
    pub unconfirmed_at_stop: Counter,
    /// Messages received from RabbitMQ and handed to the router.
    pub received: Counter,
    /// Messages received a second time (resent or redelivered) and not handed on again.
    pub repeats: Counter,
    /// Messages from RabbitMQ that were not bus messages.
    pub undecodable: Counter,
    /// Connections (publisher and consumer) opened after the first.
    pub reconnects: Counter,
}

impl RabbitMqStats {
    pub fn bump(counter: &Counter) {
        counter.inc();
    }

    pub fn add(counter: &Counter, n: u64) {
        counter.add(n);
    }

    pub fn get(counter: &Counter) -> u64 {
        counter.get()
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
    /// How many of the two halves (publisher, consumer) are connected.
    halves_up: Arc<AtomicU8>,
}

impl Meters {
    /// Takes the handles from `registry` and gives it the counters of `stats`; `ready` is the
    /// backbone's readiness gauge.
    pub fn new(registry: &Registry, ready: Gauge, stats: &RabbitMqStats) -> Self {
        registry.register(METRICS);
        for (metric, labels, counter) in [
            (&RABBITMQ_CONFIRMED, &[][..], &stats.confirmed),
            (&RABBITMQ_RESENT, &[], &stats.resent),
            (&RABBITMQ_RECEIVED, &[], &stats.received),
            (&RABBITMQ_REPEATS, &[], &stats.repeats),
            (&RABBITMQ_UNDECODABLE, &[], &stats.undecodable),
            (
                &metrics::DROPPED,
                &["rabbitmq", "publish_buffer_full"],
                &stats.dropped_buffer_full,
            ),
        ] {
            registry.adopt_counter(metric, labels, counter);
        }
        let meters = Self {
            connected: registry.gauge(&RABBITMQ_CONNECTED, &[]),
            ready,
            connects: registry.counter(&RABBITMQ_CONNECTS, &[]),
            confirm_latency: registry.histogram(&RABBITMQ_CONFIRM_LATENCY),
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
