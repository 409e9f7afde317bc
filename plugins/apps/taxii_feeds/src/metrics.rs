//! The feeds app's metrics, per feed (docs/metrics.md lists them with the core's).

use threatbus_core::BusHandle;
use threatbus_core::metrics::{Counter, Gauge, Metric};

/// Polls, by outcome.
pub const FEED_POLLS: Metric = Metric::counter(
    "threatbus_taxii_feed_polls_total",
    "Polls of a TAXII feed, by outcome: ok (followed to the last page) or failed (ended by an error; the next poll resumes).",
    &["feed", "outcome"],
);
/// Objects, by outcome.
pub const FEED_OBJECTS: Metric = Metric::counter(
    "threatbus_taxii_feed_objects_total",
    "Objects a TAXII feed delivered, by outcome: published (on the bus), skipped (a type the feed's `types` leaves out) or invalid (not valid STIX 2.1 or a bad pattern).",
    &["feed", "outcome"],
);
/// Errors, by reason.
pub const FEED_ERRORS: Metric = Metric::counter(
    "threatbus_taxii_feed_errors_total",
    "Failed requests of a TAXII feed, by reason: network (unreachable, timeout), throttled (429 or 503, retried after Retry-After), unauthorized (401, 403), not_found (404), server (other 5xx), protocol (not TAXII 2.1, an answer that is not an envelope, other 4xx).",
    &["feed", "reason"],
);
/// When the last poll that reached the end finished.
pub const FEED_LAST_SUCCESS: Metric = Metric::gauge(
    "threatbus_taxii_feed_last_success_timestamp_seconds",
    "Unix time at which the last successful poll of a TAXII feed ended (0: none yet).",
    &["feed"],
);

/// Every metric of the feeds app, registered when it starts.
pub const METRICS: &[&Metric] = &[&FEED_POLLS, &FEED_OBJECTS, &FEED_ERRORS, &FEED_LAST_SUCCESS];

/// Why a request failed: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Network,
    Throttled,
    Unauthorized,
    NotFound,
    Server,
    Protocol,
}

impl Failure {
    const ALL: [Self; 6] = [
        Self::Network,
        Self::Throttled,
        Self::Unauthorized,
        Self::NotFound,
        Self::Server,
        Self::Protocol,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Throttled => "throttled",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::Server => "server",
            Self::Protocol => "protocol",
        }
    }
}

/// One feed's handles.
#[derive(Clone)]
pub struct FeedMeters {
    pub polls_ok: Counter,
    pub polls_failed: Counter,
    pub published: Counter,
    pub skipped: Counter,
    pub invalid: Counter,
    pub last_success: Gauge,
    errors: [Counter; 6],
}

impl FeedMeters {
    pub fn new(bus: &BusHandle, feed: &str) -> Self {
        let registry = bus.metrics();
        registry.register(METRICS);
        Self {
            polls_ok: registry.counter(&FEED_POLLS, &[feed, "ok"]),
            polls_failed: registry.counter(&FEED_POLLS, &[feed, "failed"]),
            published: registry.counter(&FEED_OBJECTS, &[feed, "published"]),
            skipped: registry.counter(&FEED_OBJECTS, &[feed, "skipped"]),
            invalid: registry.counter(&FEED_OBJECTS, &[feed, "invalid"]),
            last_success: registry.gauge(&FEED_LAST_SUCCESS, &[feed]),
            errors: Failure::ALL
                .map(|reason| registry.counter(&FEED_ERRORS, &[feed, reason.label()])),
        }
    }

    pub fn failed(&self, reason: Failure) {
        if let Some(i) = Failure::ALL.iter().position(|r| *r == reason) {
            self.errors[i].inc();
        }
    }
}
