//! The TAXII app's own metrics (docs/metrics.md lists them with the core's).

use std::time::Duration;

use threatbus_core::BusHandle;
use threatbus_core::metrics::{Counter, Histogram, Metric};

/// Requests answered, by endpoint and HTTP status.
pub const TAXII_REQUESTS: Metric = Metric::counter(
    "threatbus_taxii_requests_total",
    "TAXII requests answered, by endpoint (discovery, api_root, status, collections, collection, manifest, objects, object, versions, other) and HTTP status.",
    &["endpoint", "status"],
);
/// Objects served.
pub const TAXII_SERVED: Metric = Metric::counter(
    "threatbus_taxii_objects_served_total",
    "STIX objects the TAXII server sent in envelopes (manifest entries and versions not counted).",
    &[],
);
/// Objects accepted.
pub const TAXII_ACCEPTED: Metric = Metric::counter(
    "threatbus_taxii_objects_accepted_total",
    "STIX objects clients added through the TAXII server and the bus published (withdrawals by DELETE included).",
    &[],
);
/// Objects refused.
pub const TAXII_REFUSED: Metric = Metric::counter(
    "threatbus_taxii_objects_refused_total",
    "STIX objects clients tried to add through the TAXII server that were not valid for the collection (failures in the status resource).",
    &[],
);
/// Time to answer.
pub const TAXII_LATENCY: Metric = Metric::histogram(
    "threatbus_taxii_request_duration_seconds",
    "Time the TAXII server took to answer a request, from its headers to the answer (reading the body included).",
    &[
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    ],
);

/// Every metric of the TAXII app, registered when it starts.
pub const METRICS: &[&Metric] = &[
    &TAXII_REQUESTS,
    &TAXII_SERVED,
    &TAXII_ACCEPTED,
    &TAXII_REFUSED,
    &TAXII_LATENCY,
];

/// The app's handles, taken once.
#[derive(Clone)]
pub struct Meters {
    bus: BusHandle,
    pub served: Counter,
    pub accepted: Counter,
    pub refused: Counter,
    latency: Histogram,
}

impl Meters {
    pub fn new(bus: &BusHandle) -> Self {
        let registry = bus.metrics();
        registry.register(METRICS);
        Self {
            bus: bus.clone(),
            served: registry.counter(&TAXII_SERVED, &[]),
            accepted: registry.counter(&TAXII_ACCEPTED, &[]),
            refused: registry.counter(&TAXII_REFUSED, &[]),
            latency: registry.histogram(&TAXII_LATENCY),
        }
    }

    /// Counts one answered request.
    pub fn answered(&self, endpoint: &str, status: u16, took: Duration) {
        let status = status.to_string();
        self.bus
            .metrics()
            .counter(&TAXII_REQUESTS, &[endpoint, &status])
            .inc();
        self.latency.observe(took);
    }
}
