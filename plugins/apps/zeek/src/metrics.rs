//! The Zeek app's own metrics (docs/metrics.md lists them with the core's).

use threatbus_core::metrics::Metric;

/// Zeek peers.
pub const ZEEK_PEERS: Metric = Metric::gauge(
    "threatbus_zeek_peers",
    "Zeek (Broker) peers currently connected to the Zeek app (handshake done).",
    &[],
);
/// Zeek connections the Zeek app closed before or during the handshake.
pub const ZEEK_REFUSED: Metric = Metric::counter(
    "threatbus_zeek_refused_connections_total",
    "Zeek connections closed before they became peers, by reason: max_connections and max_handshakes (over the configured caps), invalid_endpoint_id (an id Broker would ignore), handshake_failed, handshake_timeout.",
    &["reason"],
);

/// Every metric of the Zeek app, registered when it starts.
pub const METRICS: &[&Metric] = &[&ZEEK_PEERS, &ZEEK_REFUSED];
