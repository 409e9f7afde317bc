//! The Zeek app's own metrics (docs/metrics.md lists them with the core's).

use threatbus_core::BusHandle;
use threatbus_core::metrics::{Counter, Metric};

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

/// Why a connection was closed before it became a peer: the `reason` label of
/// `threatbus_zeek_refused_connections_total`.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    MaxConnections,
    MaxHandshakes,
    InvalidEndpointId,
    HandshakeFailed,
    HandshakeTimeout,
}

impl Refusal {
    const ALL: [Self; 5] = [
        Self::MaxConnections,
        Self::MaxHandshakes,
        Self::InvalidEndpointId,
        Self::HandshakeFailed,
        Self::HandshakeTimeout,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::MaxHandshakes => "max_handshakes",
            Self::InvalidEndpointId => "invalid_endpoint_id",
            Self::HandshakeFailed => "handshake_failed",
            Self::HandshakeTimeout => "handshake_timeout",
        }
    }
}

/// The refusal counters, one per reason, taken once.
pub struct Refusals([Counter; 5]);

impl Refusals {
    pub fn new(bus: &BusHandle) -> Self {
        Self(Refusal::ALL.map(|reason| bus.metrics().counter(&ZEEK_REFUSED, &[reason.label()])))
    }

    /// Counts one refusal.
    pub fn count(&self, reason: Refusal) {
        self.0[reason as usize].inc();
    }
}
