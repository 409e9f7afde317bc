//! Metrics: every metric the bus exports is defined once, in this file (name, help text, type,
//! labels). The core and the plugins take handles from the [`Registry`] (cheap atomics, taken
//! once, not per message); the metrics endpoint renders the registry in the Prometheus text
//! exposition format. docs/metrics.md lists the same table for operators.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

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

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
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

const fn counter(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
) -> Metric {
    Metric {
        name,
        help,
        kind: MetricType::Counter,
        labels,
        buckets: &[],
    }
}

const fn gauge(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Metric {
    Metric {
        name,
        help,
        kind: MetricType::Gauge,
        labels,
        buckets: &[],
    }
}

/// Messages an app took from its tool and published on the bus.
pub const APP_RECEIVED: Metric = counter(
    "threatbus_app_received_messages_total",
    "Messages an app received from its tool and published on the bus, by kind.",
    &["app", "kind"],
);
/// Messages queued for an app's subscribers.
pub const APP_SENT: Metric = counter(
    "threatbus_app_sent_messages_total",
    "Messages the bus queued for an app's subscribers (to go out to its tool), by kind.",
    &["app", "kind"],
);
/// Input an app dropped.
pub const APP_REJECTED: Metric = counter(
    "threatbus_app_rejected_input_total",
    "Input an app dropped because it could not be decoded, was not valid STIX or was refused by the tool it forwards to.",
    &["app"],
);
/// Messages handed to the backbone.
pub const BACKBONE_SENT: Metric = counter(
    "threatbus_backbone_sent_messages_total",
    "Messages this instance handed to the backbone (to reach every bus instance), by kind.",
    &["backbone", "kind"],
);
/// Messages the backbone delivered to this instance.
pub const BACKBONE_RECEIVED: Metric = counter(
    "threatbus_backbone_received_messages_total",
    "Messages the backbone delivered to this instance's router (from any instance), by kind.",
    &["backbone", "kind"],
);
/// Messages dropped, per plugin and reason.
pub const DROPPED: Metric = counter(
    "threatbus_dropped_messages_total",
    "Messages dropped, by plugin and reason (queue_full: a subscriber's queue was full; subscriber_gone: the subscriber left first; memory_budget: bus.memory_budget was reached; publish_buffer_full: RabbitMQ was unreachable and the publish buffer was full).",
    &["plugin", "reason"],
);
/// Subscribers per app.
pub const SUBSCRIBERS: Metric = gauge(
    "threatbus_subscribers",
    "Subscribers (ZeroMQ subscriptions, Zeek peers, plugin workers) the bus currently has, by app.",
    &["app"],
);
/// Messages waiting in subscriber queues per app.
pub const QUEUED: Metric = gauge(
    "threatbus_subscriber_queued_messages",
    "Messages waiting in the subscriber queues of an app (read at scrape time).",
    &["app"],
);
/// Snapshot requests issued.
pub const SNAPSHOT_REQUESTS: Metric = counter(
    "threatbus_snapshot_requests_total",
    "Snapshot requests this instance issued for its subscribers, by requested kind.",
    &["kind"],
);
/// Snapshot answers delivered.
pub const SNAPSHOT_ANSWERS: Metric = counter(
    "threatbus_snapshot_answers_total",
    "Snapshot answers (envelope contents) delivered to the subscriber that asked.",
    &[],
);
/// Envelopes for unknown snapshot ids.
pub const SNAPSHOT_UNKNOWN: Metric = counter(
    "threatbus_snapshot_unknown_envelopes_total",
    "Snapshot envelopes whose snapshot id this instance did not issue or forgot (expired).",
    &[],
);
/// Whether a part of the bus is ready.
pub const READY: Metric = gauge(
    "threatbus_ready",
    "1 when a component is ready (backbone connected, app bound or started), else 0; /ready answers 200 when all are 1.",
    &["component"],
);
/// Whether the RabbitMQ connection is up.
pub const RABBITMQ_CONNECTED: Metric = gauge(
    "threatbus_rabbitmq_connected",
    "1 while the RabbitMQ backbone's connection (publisher and consumer) is up, else 0.",
    &[],
);
/// RabbitMQ connections made.
pub const RABBITMQ_CONNECTS: Metric = counter(
    "threatbus_rabbitmq_connects_total",
    "Connections the RabbitMQ backbone opened (the first one and every reconnect).",
    &[],
);
/// Time from publishing to RabbitMQ's confirm.
pub const RABBITMQ_CONFIRM_LATENCY: Metric = Metric {
    name: "threatbus_rabbitmq_confirm_latency_seconds",
    help: "Time from handing a message to RabbitMQ to its publisher confirm.",
    kind: MetricType::Histogram,
    labels: &[],
    buckets: &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ],
};
/// Messages RabbitMQ confirmed.
pub const RABBITMQ_CONFIRMED: Metric = counter(
    "threatbus_rabbitmq_confirmed_messages_total",
    "Bus messages RabbitMQ confirmed (each once, however often it was sent).",
    &[],
);
/// Messages sent again after a reconnect.
pub const RABBITMQ_RESENT: Metric = counter(
    "threatbus_rabbitmq_resent_messages_total",
    "Bus messages sent again after a reconnect because their confirm had not arrived.",
    &[],
);
/// Messages received from RabbitMQ.
pub const RABBITMQ_RECEIVED: Metric = counter(
    "threatbus_rabbitmq_received_messages_total",
    "Bus messages received from RabbitMQ and handed to the router.",
    &[],
);
/// Repeats skipped.
pub const RABBITMQ_REPEATS: Metric = counter(
    "threatbus_rabbitmq_repeats_skipped_total",
    "Bus messages received a second time (resent or redelivered) and not handed on again.",
    &[],
);
/// Undecodable messages from RabbitMQ.
pub const RABBITMQ_UNDECODABLE: Metric = counter(
    "threatbus_rabbitmq_undecodable_messages_total",
    "Messages on the bus's queue that were not bus messages (see on_undecodable).",
    &[],
);
/// Zeek peers.
pub const ZEEK_PEERS: Metric = gauge(
    "threatbus_zeek_peers",
    "Zeek (Broker) peers currently connected to the Zeek app (handshake done).",
    &[],
);
/// Zeek connections the Zeek app closed before or during the handshake.
pub const ZEEK_REFUSED: Metric = counter(
    "threatbus_zeek_refused_connections_total",
    "Zeek connections closed before they became peers, by reason: max_connections and max_handshakes (over the configured caps), invalid_endpoint_id (an id Broker would ignore), handshake_failed, handshake_timeout.",
    &["reason"],
);
/// ZeroMQ subscriptions the ZeroMQ app removed on its own.
pub const ZMQ_EXPIRED: Metric = counter(
    "threatbus_zmq_expired_subscriptions_total",
    "ZeroMQ subscriptions removed without an unsubscribe, by reason: no_listener (no SUB socket listened to the p2p topic for listener_timeout), no_heartbeat (subscription_timeout).",
    &["reason"],
);
/// The memory budget's limit.
pub const MEMORY_BUDGET: Metric = gauge(
    "threatbus_memory_budget_bytes",
    "bus.memory_budget: bytes that everything queued for subscribers may take in all.",
    &[],
);
/// What is charged against it.
pub const MEMORY_USED: Metric = gauge(
    "threatbus_memory_budget_used_bytes",
    "Estimated bytes of the messages queued for subscribers and still held (read at scrape time).",
    &[],
);
/// Build information.
pub const BUILD_INFO: Metric = gauge(
    "threatbus_build_info",
    "Always 1; the label carries the version of this binary.",
    &["version"],
);

/// Every metric, in the order they are rendered.
pub const ALL: &[&Metric] = &[
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
    &RABBITMQ_CONNECTED,
    &RABBITMQ_CONNECTS,
    &RABBITMQ_CONFIRM_LATENCY,
    &RABBITMQ_CONFIRMED,
    &RABBITMQ_RESENT,
    &RABBITMQ_RECEIVED,
    &RABBITMQ_REPEATS,
    &RABBITMQ_UNDECODABLE,
    &ZEEK_PEERS,
    &ZEEK_REFUSED,
    &ZMQ_EXPIRED,
    &MEMORY_BUDGET,
    &MEMORY_USED,
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
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge handle.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct HistogramCells {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last cell is above every bound.
    buckets: Vec<AtomicU64>,
    /// Sum of the observations in nanoseconds.
    sum_nanos: AtomicU64,
}

/// A histogram handle (observations in seconds).
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramCells>);

impl Default for Histogram {
    /// A histogram counted nowhere (one bucket), for code run without a registry.
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self(Arc::new(HistogramCells {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }))
    }

    /// Records one observation.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let cells = &self.0;
        let index = cells
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(cells.bounds.len());
        cells.buckets[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        cells.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

/// Every series, by metric name and label values.
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, BTreeMap<Vec<String>, Series>>>,
}

impl Registry {
    fn families(&self) -> MutexGuard<'_, BTreeMap<&'static str, BTreeMap<Vec<String>, Series>>> {
        self.families.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The series of `metric` with these label values, created on first use. Label values are
    /// matched to `metric.labels` by position (missing ones are empty).
    fn series(&self, metric: &'static Metric, labels: &[&str]) -> Series {
        debug_assert_eq!(labels.len(), metric.labels.len(), "{}", metric.name);
        let key: Vec<String> = (0..metric.labels.len())
            .map(|i| labels.get(i).copied().unwrap_or_default().to_owned())
            .collect();
        self.families()
            .entry(metric.name)
            .or_default()
            .entry(key)
            .or_insert_with(|| match metric.kind {
                MetricType::Counter => Series::Counter(Counter::default()),
                MetricType::Gauge => Series::Gauge(Gauge::default()),
                MetricType::Histogram => Series::Histogram(Histogram::new(metric.buckets)),
            })
            .clone()
    }

    /// A counter of `metric` (which must be a counter).
    pub fn counter(&self, metric: &'static Metric, labels: &[&str]) -> Counter {
        debug_assert_eq!(metric.kind, MetricType::Counter, "{}", metric.name);
        match self.series(metric, labels) {
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
        self.families()
            .entry(metric.name)
            .or_default()
            .insert(key, Series::Counter(counter.clone()));
    }

    /// A gauge of `metric` (which must be a gauge).
    pub fn gauge(&self, metric: &'static Metric, labels: &[&str]) -> Gauge {
        debug_assert_eq!(metric.kind, MetricType::Gauge, "{}", metric.name);
        match self.series(metric, labels) {
            Series::Gauge(gauge) => gauge,
            _ => Gauge::default(),
        }
    }

    /// A histogram of `metric` (which must be a histogram).
    pub fn histogram(&self, metric: &'static Metric, labels: &[&str]) -> Histogram {
        debug_assert_eq!(metric.kind, MetricType::Histogram, "{}", metric.name);
        match self.series(metric, labels) {
            Series::Histogram(histogram) => histogram,
            _ => Histogram::new(metric.buckets),
        }
    }

    /// The sum of the counters of `metric` whose label `label` is `value` (every series with
    /// `None`, or when the metric has no such label).
    pub fn sum(&self, metric: &'static Metric, label: &str, value: Option<&str>) -> u64 {
        let position = metric.labels.iter().position(|name| *name == label);
        self.families()
            .get(metric.name)
            .map(|series| {
                series
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
        self.families()
            .get(READY.name)
            .map(|series| {
                series
                    .iter()
                    .filter(|(_, s)| !matches!(s, Series::Gauge(g) if g.get() == 1))
                    .map(|(labels, _)| labels.join(","))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Renders every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let families = self.families();
        let mut out = String::new();
        for metric in ALL {
            let _ = writeln!(out, "# HELP {} {}", metric.name, escape_help(metric.help));
            let _ = writeln!(out, "# TYPE {} {}", metric.name, metric.kind.as_str());
            let Some(series) = families.get(metric.name) else {
                continue;
            };
            for (values, series) in series {
                let labels = label_text(metric.labels, values);
                match series {
                    Series::Counter(c) => {
                        let _ = writeln!(out, "{}{} {}", metric.name, braces(&labels), c.get());
                    }
                    Series::Gauge(g) => {
                        let _ = writeln!(out, "{}{} {}", metric.name, braces(&labels), g.get());
                    }
                    Series::Histogram(h) => render_histogram(&mut out, metric.name, &labels, h),
                }
            }
        }
        out
    }
}

fn render_histogram(out: &mut String, name: &str, labels: &str, histogram: &Histogram) {
    let cells = &histogram.0;
    let with_le = |le: &str| {
        if labels.is_empty() {
            format!("{{le=\"{le}\"}}")
        } else {
            format!("{{{labels},le=\"{le}\"}}")
        }
    };
    let mut cumulative = 0;
    for (bound, cell) in cells.bounds.iter().zip(&cells.buckets) {
        cumulative += cell.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{} {cumulative}",
            with_le(&bound.to_string())
        );
    }
    if let Some(last) = cells.buckets.last() {
        cumulative += last.load(Ordering::Relaxed);
    }
    let _ = writeln!(out, "{name}_bucket{} {cumulative}", with_le("+Inf"));
    let sum = cells.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
    let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

fn label_text(names: &[&str], values: &[String]) -> String {
    names
        .iter()
        .zip(values)
        .map(|(name, value)| format!("{name}=\"{}\"", escape_label(value)))
        .collect::<Vec<_>>()
        .join(",")
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_valid_and_typed_by_suffix() {
        let mut names: Vec<_> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        for metric in ALL {
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
        registry.gauge(&ZEEK_PEERS, &[]).set(2);
        registry
            .counter(&DROPPED, &["zmq \"x\"\\", "queue_full"])
            .inc();
        let h = registry.histogram(&RABBITMQ_CONFIRM_LATENCY, &[]);
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let text = registry.render();
        assert!(text.contains(
            "# TYPE threatbus_app_received_messages_total counter\nthreatbus_app_received_messages_total{app=\"zmq\",kind=\"indicator\"} 4\n"
        ), "{text}");
        assert!(text.contains("threatbus_zeek_peers 2\n"), "{text}");
        assert!(
            text.contains(
                "threatbus_dropped_messages_total{plugin=\"zmq \\\"x\\\"\\\\\",reason=\"queue_full\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("threatbus_rabbitmq_confirm_latency_seconds_bucket{le=\"0.0005\"} 0\n")
        );
        assert!(
            text.contains("threatbus_rabbitmq_confirm_latency_seconds_bucket{le=\"0.001\"} 1\n")
        );
        assert!(
            text.contains("threatbus_rabbitmq_confirm_latency_seconds_bucket{le=\"0.005\"} 2\n")
        );
        assert!(text.contains("threatbus_rabbitmq_confirm_latency_seconds_bucket{le=\"10\"} 2\n"));
        assert!(
            text.contains("threatbus_rabbitmq_confirm_latency_seconds_bucket{le=\"+Inf\"} 3\n")
        );
        assert!(text.contains("threatbus_rabbitmq_confirm_latency_seconds_count 3\n"));
        assert!(
            text.contains("threatbus_rabbitmq_confirm_latency_seconds_sum 60.0037\n"),
            "{text}"
        );
        // Every metric has its HELP and TYPE lines even without series.
        for metric in ALL {
            assert!(text.contains(&format!("# TYPE {} ", metric.name)));
        }
    }

    #[test]
    fn adopted_counters_are_read_at_render() {
        let registry = Registry::default();
        let early = Counter::default();
        early.add(2);
        registry.adopt_counter(&RABBITMQ_CONFIRMED, &[], &early);
        early.inc();
        assert!(
            registry
                .render()
                .contains("threatbus_rabbitmq_confirmed_messages_total 3\n")
        );
        assert_eq!(registry.sum(&RABBITMQ_CONFIRMED, "", None), 3);
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
