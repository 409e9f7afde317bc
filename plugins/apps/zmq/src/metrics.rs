//! The ZeroMQ app's own metrics (docs/metrics.md lists them with the core's).

use threatbus_core::metrics::Metric;

/// ZeroMQ subscriptions the ZeroMQ app removed on its own.
pub const ZMQ_EXPIRED: Metric = Metric::counter(
    "threatbus_zmq_expired_subscriptions_total",
    "ZeroMQ subscriptions removed without an unsubscribe, by reason: no_listener (no SUB socket listened to the p2p topic for listener_timeout), no_heartbeat (subscription_timeout).",
    &["reason"],
);

/// Every metric of the ZeroMQ app, registered when it starts.
pub const METRICS: &[&Metric] = &[&ZMQ_EXPIRED];
