//! Metrics: the core's own metrics are defined here (name, help text, type, labels); each
//! plugin defines its own in its crate the same way. Everyone takes handles from the one
//! [`Registry`] the core hands out (cheap atomics, taken once, not per message). Series are
//! kept by `prometheus-client`, which renders them in the Prometheus text exposition format
//! (version 0.0.4) for the metrics endpoint; the registry also keeps an index of every series
//! so that the bus can read its own totals. docs/metrics.md lists every metric for operators.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, prometheus_text};
use prometheus_client::metrics::MetricType as PromType;
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::gauge::Gauge as PromGauge;
use prometheus_client::metrics::histogram::Histogram as PromHistogram;

/// How a metric behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up (reset at restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into buckets (seconds).
    Histogram,
}

/// The definition of one metric.
#[derive(Debug)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    /// Label names, in the order handles pass their values.
    pub labels: &'static [&'static str],
    /// Upper bounds of the buckets (histograms only), ascending.
    pub buckets: &'static [f64],
}

impl Metric {
    /// A counter; its name ends in `_total`.
    pub const fn counter(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            help,
            kind: MetricType::Counter,
            labels,
            buckets: &[],
        }
    }

    /// A gauge.
    pub const fn gauge(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            help,
            kind: MetricType::Gauge,
            labels,
            buckets: &[],
        }
    }

    /// A histogram of seconds, without labels.
    pub const fn histogram(
        name: &'static str,
        help: &'static str,
        buckets: &'static [f64],
    ) -> Self {
        Self {
            name,
            help,
            kind: MetricType::Histogram,
            labels: &[],
            buckets,
        }
    }
}

/// Messages an app took from its tool and published on the bus.
pub const APP_RECEIVED: Metric = Metric::counter(
    "threatbus_app_received_messages_total",
    "Messages an app received from its tool and published on the bus, by kind.",
    &["app", "kind"],
);
/// Messages queued for an app's subscribers.
pub const APP_SENT: Metric = Metric::counter(
    "threatbus_app_sent_messages_total",
    "Messages the bus queued for an app's subscribers (to go out to its tool), by kind.",
    &["app", "kind"],
);
/// Input an app dropped.
pub const APP_REJECTED: Metric = Metric::counter(
    "threatbus_app_rejected_input_total",
    "Input an app dropped because it could not be decoded, was not valid STIX or was refused by the tool it forwards to.",
    &["app"],
);
/// Messages handed to the backbone.
pub const BACKBONE_SENT: Metric = Metric::counter(
    "threatbus_backbone_sent_messages_total",
    "Messages this instance handed to the backbone (to reach every bus instance), by kind.",
    &["backbone", "kind"],
);
/// Messages the backbone delivered to this instance.
pub const BACKBONE_RECEIVED: Metric = Metric::counter(
    "threatbus_backbone_received_messages_total",
    "Messages the backbone delivered to this instance's router (from any instance), by kind.",
    &["backbone", "kind"],
);
/// Messages dropped, per plugin and reason.
pub const DROPPED: Metric = Metric::counter(
    "threatbus_dropped_messages_total",
    "Messages dropped, by plugin and reason (queue_full: a subscriber's queue was full; subscriber_gone: the subscriber left first; memory_budget: bus.memory_budget was reached; catch_up_timeout: a subscriber stayed behind longer than bus.catch_up_timeout; catch_up_limit: the catch-up journal was full; not_stored: the store did not hold a version to replay; a backbone may add reasons of its own).",
    &["plugin", "reason"],
);
/// Subscribers per app.
pub const SUBSCRIBERS: Metric = Metric::gauge(
    "threatbus_subscribers",
    "Subscribers (ZeroMQ subscriptions, Zeek peers, plugin workers) the bus currently has, by app.",
    &["app"],
);
/// Messages waiting in subscriber queues per app.
pub const QUEUED: Metric = Metric::gauge(
    "threatbus_subscriber_queued_messages",
    "Messages waiting in the subscriber queues of an app (read at scrape time).",
    &["app"],
);
/// Snapshot requests issued.
pub const SNAPSHOT_REQUESTS: Metric = Metric::counter(
    "threatbus_snapshot_requests_total",
    "Snapshot requests this instance issued for its subscribers, by requested kind.",
    &["kind"],
);
/// Snapshot answers delivered.
pub const SNAPSHOT_ANSWERS: Metric = Metric::counter(
    "threatbus_snapshot_answers_total",
    "Snapshot answers (envelope contents) delivered to the subscriber that asked.",
    &[],
);
/// Envelopes for unknown snapshot ids.
pub const SNAPSHOT_UNKNOWN: Metric = Metric::counter(
    "threatbus_snapshot_unknown_envelopes_total",
    "Snapshot envelopes whose snapshot id this instance did not issue or forgot (expired).",
    &[],
);
/// Whether a part of the bus is ready.
pub const READY: Metric = Metric::gauge(
    "threatbus_ready",
    "1 when a component is ready (backbone connected, app bound or started), else 0; /ready answers 200 when all are 1.",
    &["component"],
);
/// The memory budget's limit.
pub const MEMORY_BUDGET: Metric = Metric::gauge(
    "threatbus_memory_budget_bytes",
    "bus.memory_budget: bytes that everything queued for subscribers may take in all.",
    &[],
);
/// What is charged against it.
pub const MEMORY_USED: Metric = Metric::gauge(
    "threatbus_memory_budget_used_bytes",
    "Estimated bytes of the messages queued for subscribers and still held (read at scrape time).",
    &[],
);
/// Subscribers behind, per app.
pub const BEHIND: Metric = Metric::gauge(
    "threatbus_subscribers_behind",
    "Subscribers that fell behind and are being fed from the store (catch-up), by app.",
    &["app"],
);
/// Messages replayed from the store, per app.
pub const REPLAYED: Metric = Metric::counter(
    "threatbus_replayed_messages_total",
    "Messages the bus read back from the store and queued for a subscriber that had fallen behind, by app.",
    &["app"],
);
/// Catch-up journal entries held.
pub const CATCH_UP_JOURNAL: Metric = Metric::gauge(
    "threatbus_catch_up_journal_entries",
    "Keys of routed messages kept for subscribers that are behind (read at scrape time).",
    &[],
);
/// Build information.
pub const BUILD_INFO: Metric = Metric::gauge(
    "threatbus_build_info",
    "Always 1; the label carries the version of this binary.",
    &["version"],
);

/// The core's metrics, registered (and so rendered, with their HELP and TYPE lines) from the
/// start.
pub const CORE: &[&Metric] = &[
    &BUILD_INFO,
    &READY,
    &APP_RECEIVED,
    &APP_SENT,
    &APP_REJECTED,
    &BACKBONE_SENT,
    &BACKBONE_RECEIVED,
    &DROPPED,
    &SUBSCRIBERS,
    &QUEUED,
    &SNAPSHOT_REQUESTS,
    &SNAPSHOT_ANSWERS,
    &SNAPSHOT_UNKNOWN,
    &MEMORY_BUDGET,
    &MEMORY_USED,
    &BEHIND,
    &REPLAYED,
    &CATCH_UP_JOURNAL,
];

/// The `kind` label values, indexed like [`crate::topic::ALL`].
pub const KINDS: [&str; 4] = [
    "indicator",
    "sighting",
    "snapshotrequest",
    "snapshotenvelope",
];

/// A counter handle.
#[derive(Debug, Clone, Default)]
pub struct Counter(PromCounter);

impl Counter {
    pub fn inc(&self) {
        self.0.inc();
    }

    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }

    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A gauge handle.
#[derive(Debug, Clone, Default)]
pub struct Gauge(PromGauge);

impl Gauge {
    pub fn set(&self, value: i64) {
        self.0.set(value);
    }

    pub fn inc(&self) {
        self.0.inc();
    }

    pub fn dec(&self) {
        self.0.dec();
    }

    pub fn get(&self) -> i64 {
        self.0.get()
    }
}

/// A histogram handle (observations in seconds).
#[derive(Debug, Clone)]
pub struct Histogram(PromHistogram);

impl Default for Histogram {
    /// A histogram counted nowhere, for code run without a registry.
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self(PromHistogram::new(bounds.iter().copied()))
    }

    /// Records one observation.
    pub fn observe(&self, value: Duration) {
        self.0.observe(value.as_secs_f64());
    }
}

#[derive(Debug, Clone)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

/// One registered metric and its series by label values.
#[derive(Debug)]
struct Family {
    metric: &'static Metric,
    series: BTreeMap<Vec<String>, Series>,
}

/// Every registered metric, in the order they were registered (the order they render in).
#[derive(Debug, Default)]
struct Index {
    families: Vec<Family>,
}

impl Index {
    fn family(&mut self, metric: &'static Metric) -> &mut Family {
        let position = match self
            .families
            .iter()
            .position(|f| f.metric.name == metric.name)
        {
            Some(position) => position,
            None => {
                self.families.push(Family {
                    metric,
                    series: BTreeMap::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[position]
    }

    fn get(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.metric.name == name)
    }
}

/// Label names and values of one series, as `prometheus-client` encodes them.
type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Encodes the index at every scrape.
#[derive(Debug)]
struct Collector(Arc<Mutex<Index>>);

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let index = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for family in &index.families {
            let metric = family.metric;
            let kind = match metric.kind {
                MetricType::Counter => PromType::Counter,
                MetricType::Gauge => PromType::Gauge,
                MetricType::Histogram => PromType::Histogram,
            };
            let mut descriptor =
                encoder.encode_descriptor(base_name(metric), metric.help, None, kind)?;
            for (values, series) in &family.series {
                let labels: Labels = metric
                    .labels
                    .iter()
                    .copied()
                    .zip(values.iter().map(String::as_str))
                    .collect();
                let encoder = descriptor.encode_family(&labels)?;
                match series {
                    Series::Counter(c) => c.0.encode(encoder)?,
                    Series::Gauge(g) => g.0.encode(encoder)?,
                    Series::Histogram(h) => h.0.encode(encoder)?,
                }
            }
        }
        Ok(())
    }
}

/// The name as `prometheus-client` takes it: it adds `_total` to counters itself.
fn base_name(metric: &Metric) -> &'static str {
    match metric.kind {
        MetricType::Counter => metric.name.strip_suffix("_total").unwrap_or(metric.name),
        _ => metric.name,
    }
}

/// Every metric of this bus: the core's, and each plugin's once it registers them or takes a
/// handle.
pub struct Registry {
    index: Arc<Mutex<Index>>,
    prometheus: prometheus_client::registry::Registry,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Default for Registry {
    /// A registry with every core metric registered.
    fn default() -> Self {
        let index = Arc::new(Mutex::new(Index::default()));
        let mut prometheus = prometheus_client::registry::Registry::default();
        prometheus.register_collector(Box::new(Collector(index.clone())));
        let registry = Self { index, prometheus };
        registry.register(CORE);
        registry
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `metrics` (a plugin's, at its start), so that their HELP and TYPE lines render
    /// before their first series exists.
    pub fn register(&self, metrics: &[&'static Metric]) {
        let mut index = self.lock();
        for metric in metrics {
            index.family(metric);
        }
    }

    /// The series of `metric` with these label values (matched to `metric.labels` by position;
    /// missing ones are empty), created by `make` on first use.
    fn series(
        &self,
        metric: &'static Metric,
        values: &[&str],
        make: impl FnOnce() -> Series,
    ) -> Series {
        debug_assert_eq!(values.len(), metric.labels.len(), "{}", metric.name);
        let key: Vec<String> = (0..metric.labels.len())
            .map(|i| values.get(i).copied().unwrap_or_default().to_owned())
            .collect();
        self.lock()
            .family(metric)
            .series
            .entry(key)
            .or_insert_with(make)
            .clone()
    }

    /// A counter of `metric` (which must be a counter).
    pub fn counter(&self, metric: &'static Metric, labels: &[&str]) -> Counter {
        debug_assert_eq!(metric.kind, MetricType::Counter, "{}", metric.name);
        match self.series(metric, labels, || Series::Counter(Counter::default())) {
            Series::Counter(counter) => counter,
            _ => Counter::default(),
        }
    }

    /// One counter of `metric` per message kind, `labels` followed by the kind.
    pub fn kind_counters(&self, metric: &'static Metric, labels: &[&str]) -> [Counter; 4] {
        KINDS.map(|kind| {
            let mut all = labels.to_vec();
            all.push(kind);
            self.counter(metric, &all)
        })
    }

    /// Makes `counter` (created before the registry was at hand) the series of `metric` with
    /// these labels, so that the scrape reads it.
    pub fn adopt_counter(&self, metric: &'static Metric, labels: &[&str], counter: &Counter) {
        debug_assert_eq!(metric.kind, MetricType::Counter, "{}", metric.name);
        let key: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        self.lock()
            .family(metric)
            .series
            .insert(key, Series::Counter(counter.clone()));
    }

    /// A gauge of `metric` (which must be a gauge).
    pub fn gauge(&self, metric: &'static Metric, labels: &[&str]) -> Gauge {
        debug_assert_eq!(metric.kind, MetricType::Gauge, "{}", metric.name);
        match self.series(metric, labels, || Series::Gauge(Gauge::default())) {
            Series::Gauge(gauge) => gauge,
            _ => Gauge::default(),
        }
    }

    /// A histogram of `metric` (which must be a histogram).
    pub fn histogram(&self, metric: &'static Metric) -> Histogram {
        debug_assert_eq!(metric.kind, MetricType::Histogram, "{}", metric.name);
        let make = || Series::Histogram(Histogram::new(metric.buckets));
        match self.series(metric, &[], make) {
            Series::Histogram(histogram) => histogram,
            _ => Histogram::new(metric.buckets),
        }
    }

    /// The sum of the counters of `metric` whose label `label` is `value` (every series with
    /// `None`, or when the metric has no such label).
    pub fn sum(&self, metric: &'static Metric, label: &str, value: Option<&str>) -> u64 {
        let position = metric.labels.iter().position(|name| *name == label);
        self.lock()
            .get(metric.name)
            .map(|family| {
                family
                    .series
                    .iter()
                    .filter(|(values, _)| match (position, value) {
                        (Some(i), Some(want)) => values[i] == want,
                        _ => true,
                    })
                    .map(|(_, series)| match series {
                        Series::Counter(counter) => counter.get(),
                        _ => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The components whose [`READY`] gauge is not 1, or none when all are ready.
    pub fn not_ready(&self) -> Vec<String> {
        self.lock()
            .get(READY.name)
            .map(|family| {
                family
                    .series
                    .iter()
                    .filter(|(_, s)| !matches!(s, Series::Gauge(g) if g.get() == 1))
                    .map(|(labels, _)| labels.join(","))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Renders every registered metric in the Prometheus text exposition format (version
    /// 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_text::encode(&mut out, &self.prometheus) {
            tracing::warn!(error = %err, "could not render the metrics");
        }
        out
    }
}

/// The content type of [`Registry::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    const LATENCY: Metric = Metric::histogram(
        "threatbus_test_latency_seconds",
        "A test histogram.",
        &[0.0005, 0.001, 0.0025, 0.005, 0.01, 10.0],
    );
    const EARLY: Metric = Metric::counter("threatbus_test_early_total", "Counted early.", &[]);
    const PEERS: Metric = Metric::gauge("threatbus_test_peers", "Peers.", &[]);

    #[test]
    fn names_are_unique_valid_and_typed_by_suffix() {
        let mut names: Vec<_> = CORE.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CORE.len());
        for metric in CORE {
            assert!(metric.name.starts_with("threatbus_"), "{}", metric.name);
            assert!(
                metric
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                metric.name
            );
            assert_eq!(
                metric.name.ends_with("_total"),
                metric.kind == MetricType::Counter,
                "{}",
                metric.name
            );
            assert!(metric.help.ends_with('.'), "{}", metric.name);
            assert_eq!(
                metric.buckets.is_empty(),
                metric.kind != MetricType::Histogram
            );
            assert!(metric.buckets.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let registry = Registry::default();
        let a = registry.counter(&APP_RECEIVED, &["zmq", "indicator"]);
        a.add(3);
        // The same labels give the same series.
        registry.counter(&APP_RECEIVED, &["zmq", "indicator"]).inc();
        registry.gauge(&PEERS, &[]).set(2);
        registry
            .counter(&DROPPED, &["zmq \"x\"\\", "queue_full"])
            .inc();
        let h = registry.histogram(&LATENCY);
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let text = registry.render();
        assert!(text.contains(
            "# HELP threatbus_app_received_messages_total Messages an app received from its tool and published on the bus, by kind.\n# TYPE threatbus_app_received_messages_total counter\nthreatbus_app_received_messages_total{app=\"zmq\",kind=\"indicator\"} 4\n"
        ), "{text}");
        assert!(text.contains("# HELP threatbus_test_peers Peers.\n# TYPE threatbus_test_peers gauge\nthreatbus_test_peers 2\n"), "{text}");
        assert!(
            text.contains(
                "threatbus_dropped_messages_total{plugin=\"zmq \\\"x\\\"\\\\\",reason=\"queue_full\"} 1\n"
            ),
            "{text}"
        );
        for line in [
            "# TYPE threatbus_test_latency_seconds histogram\n",
            "threatbus_test_latency_seconds_bucket{le=\"0.0005\"} 0\n",
            "threatbus_test_latency_seconds_bucket{le=\"0.001\"} 1\n",
            "threatbus_test_latency_seconds_bucket{le=\"0.005\"} 2\n",
            "threatbus_test_latency_seconds_bucket{le=\"10\"} 2\n",
            "threatbus_test_latency_seconds_bucket{le=\"+Inf\"} 3\n",
            "threatbus_test_latency_seconds_count 3\n",
            "threatbus_test_latency_seconds_sum 60.0037\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
        // Every core metric has its HELP and TYPE lines even without series, with its help
        // text as defined.
        for metric in CORE {
            assert!(
                text.contains(&format!("# HELP {} {}\n", metric.name, metric.help)),
                "{}: {text}",
                metric.name
            );
            assert!(text.contains(&format!("# TYPE {} ", metric.name)));
        }
    }

    #[test]
    fn adopted_counters_are_read_at_render() {
        let registry = Registry::default();
        let early = Counter::default();
        early.add(2);
        registry.adopt_counter(&EARLY, &[], &early);
        early.inc();
        assert!(registry.render().contains("threatbus_test_early_total 3\n"));
        assert_eq!(registry.sum(&EARLY, "", None), 3);
        // Labelled series too (a plugin's own reason of a core metric).
        let dropped = Counter::default();
        registry.adopt_counter(&DROPPED, &["rabbitmq", "publish_buffer_full"], &dropped);
        dropped.add(5);
        assert!(registry.render().contains(
            "threatbus_dropped_messages_total{plugin=\"rabbitmq\",reason=\"publish_buffer_full\"} 5\n"
        ));
    }

    #[test]
    fn readiness_lists_what_is_not_ready() {
        let registry = Registry::default();
        assert!(registry.not_ready().is_empty());
        let app = registry.gauge(&READY, &["app:zmq"]);
        let backbone = registry.gauge(&READY, &["backbone:rabbitmq"]);
        assert_eq!(registry.not_ready(), ["app:zmq", "backbone:rabbitmq"]);
        app.set(1);
        assert_eq!(registry.not_ready(), ["backbone:rabbitmq"]);
        backbone.set(1);
        assert!(registry.not_ready().is_empty());
        backbone.set(0);
        assert_eq!(registry.not_ready(), ["backbone:rabbitmq"]);
    }
}
