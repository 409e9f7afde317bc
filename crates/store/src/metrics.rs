//! The store's metrics (docs/metrics.md lists them with the core's).

use threatbus_core::metrics::{Counter, Gauge, Histogram, Metric, Registry};

use crate::WriteCounts;
use crate::sqlite::Stats;

/// Objects by kind and state.
pub const STORE_OBJECTS: Metric = Metric::gauge(
    "threatbus_store_objects",
    "Objects in the store by kind and state of their current version (indicator: active, withdrawn, expired; sighting: stored), refreshed every few seconds.",
    &["kind", "state"],
);
/// Versions written.
pub const STORE_WRITES: Metric = Metric::counter(
    "threatbus_store_writes_total",
    "Versions the store took, by outcome: current (became its object's current version), history (older than the current one), repeated (already stored), lost (the write failed twice, the store reopened in between).",
    &["outcome"],
);
/// Commit latency.
pub const STORE_COMMIT: Metric = Metric::histogram(
    "threatbus_store_commit_seconds",
    "Time to commit one batch of versions to the store.",
    &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ],
);
/// Pruned versions.
pub const STORE_PRUNED: Metric = Metric::counter(
    "threatbus_store_pruned_versions_total",
    "Versions removed because they were older than store.retention.",
    &[],
);
/// Snapshot objects answered.
pub const STORE_SNAPSHOT_OBJECTS: Metric = Metric::counter(
    "threatbus_store_snapshot_objects_total",
    "Objects the store sent in answer to snapshot requests of this instance's subscribers, by kind.",
    &["kind"],
);

/// Every metric of the store, registered when it starts.
pub const METRICS: &[&Metric] = &[
    &STORE_OBJECTS,
    &STORE_WRITES,
    &STORE_COMMIT,
    &STORE_PRUNED,
    &STORE_SNAPSHOT_OBJECTS,
];

/// The store's handles, taken once.
#[derive(Debug, Clone, Default)]
pub struct StoreMeters {
    objects: [Gauge; 4],
    writes: [Counter; 3],
    /// Versions whose write failed even after the store was reopened.
    pub lost: Counter,
    pub commit: Histogram,
    pub pruned: Counter,
    pub snapshot_indicators: Counter,
    pub snapshot_sightings: Counter,
}

impl StoreMeters {
    pub fn new(registry: &Registry) -> Self {
        registry.register(METRICS);
        let objects = |kind, state| registry.gauge(&STORE_OBJECTS, &[kind, state]);
        let writes = |outcome| registry.counter(&STORE_WRITES, &[outcome]);
        Self {
            objects: [
                objects("indicator", "active"),
                objects("indicator", "withdrawn"),
                objects("indicator", "expired"),
                objects("sighting", "stored"),
            ],
            writes: [writes("current"), writes("history"), writes("repeated")],
            lost: writes("lost"),
            commit: registry.histogram(&STORE_COMMIT),
            pruned: registry.counter(&STORE_PRUNED, &[]),
            snapshot_indicators: registry.counter(&STORE_SNAPSHOT_OBJECTS, &["indicator"]),
            snapshot_sightings: registry.counter(&STORE_SNAPSHOT_OBJECTS, &["sighting"]),
        }
    }

    pub fn wrote(&self, counts: WriteCounts) {
        self.writes[0].add(counts.current);
        self.writes[1].add(counts.history);
        self.writes[2].add(counts.repeated);
    }

    pub fn holds(&self, stats: &Stats) {
        let as_gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.objects[0].set(as_gauge(stats.indicators_active));
        self.objects[1].set(as_gauge(stats.indicators_withdrawn));
        self.objects[2].set(as_gauge(stats.indicators_expired));
        self.objects[3].set(as_gauge(stats.sightings));
    }
}
