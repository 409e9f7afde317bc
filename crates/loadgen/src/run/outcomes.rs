//! Turning the threads' outcomes into the run's [`Report`]: throughput, loss, duplicates,
//! reordering and latency, per subscriber and over all of them.

use super::Timeline;
use crate::publisher::PublisherOutcome;
use crate::report::{Report, RunConfig, SubscriberRow};
use crate::stats::LatencySummary;
use crate::subscriber::SubscriberOutcome;

/// Turns the outcomes into the report.
pub(super) fn build_report(
    config: RunConfig,
    timeline: &Timeline,
    publishers: &[PublisherOutcome],
    subscribers: Vec<SubscriberOutcome>,
) -> Report {
    let first_send = publishers.iter().filter_map(|p| p.first_send_ns).min();
    let last_send = publishers.iter().filter_map(|p| p.last_send_ns).max();
    let seconds = |from: Option<u64>, to: Option<u64>| match (from, to) {
        (Some(from), Some(to)) => to.saturating_sub(from) as f64 / 1e9,
        _ => 0.0,
    };
    let per_second = |count: u64, seconds: f64| {
        if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        }
    };
    let sent = publishers.iter().map(|p| p.sent).sum();
    let send_s = seconds(first_send, last_send);
    let last_receive = subscribers.iter().filter_map(|s| s.last_receive_ns).max();
    let duration_s = seconds(first_send, last_receive);

    let mut rows = Vec::with_capacity(subscribers.len());
    let mut all_latencies: Vec<u32> = Vec::new();
    for (index, mut outcome) in subscribers.into_iter().enumerate() {
        let tracker = &outcome.tracker;
        rows.push(SubscriberRow {
            index,
            received: tracker.unique,
            throughput: per_second(tracker.unique, seconds(first_send, outcome.last_receive_ns)),
            lost: tracker.lost(),
            duplicates: tracker.duplicates,
            reordered: tracker.reordered,
            ignored: outcome.foreign + outcome.other + outcome.malformed + tracker.unexpected,
            latency: LatencySummary::from_samples(&mut outcome.latencies_us),
        });
        if all_latencies.is_empty() {
            all_latencies = outcome.latencies_us;
        } else {
            all_latencies.extend_from_slice(&outcome.latencies_us);
        }
    }
    let deliveries = rows.iter().map(|row| row.received).sum();
    Report {
        config,
        warmup_s: timeline.warmup.as_secs_f64(),
        drain_s: timeline.drain.as_secs_f64(),
        probes_sent: publishers.iter().map(|p| p.probes).sum(),
        sent,
        send_s,
        send_rate: per_second(sent, send_s),
        duration_s,
        deliveries,
        deliveries_per_s: per_second(deliveries, duration_s),
        lost: rows.iter().map(|row| row.lost).sum(),
        duplicates: rows.iter().map(|row| row.duplicates).sum(),
        reordered: rows.iter().map(|row| row.reordered).sum(),
        latency: LatencySummary::from_samples(&mut all_latencies),
        subscribers: rows,
        bus: None,
        generator_cpu_s: 0.0,
        complete: timeline.complete,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::DeliveryTracker;

    #[test]
    fn report_measures_from_the_first_send_to_each_last_receive() {
        let config = RunConfig {
            manage: String::new(),
            pub_port: 1,
            sub_port: 2,
            subscribers: 2,
            publishers: 2,
            messages: 4,
            rate: 0.0,
            topic: "stix2/indicator".into(),
            json_bytes: (450, 450),
            hwm: 0,
            stalled: 0,
        };
        let publisher = |first: u64, last: u64| PublisherOutcome {
            sent: 2,
            probes: 3,
            first_send_ns: Some(first),
            last_send_ns: Some(last),
            socket: zmq::Context::new().socket(zmq::PUB).unwrap(),
        };
        let publishers = [
            publisher(1_000_000_000, 1_250_000_000),
            publisher(1_100_000_000, 1_500_000_000),
        ];
        let subscriber = |seqs: &[(u64, u64)], last: u64, latencies: Vec<u32>| {
            let mut tracker = DeliveryTracker::new(&[2, 2]);
            for &(publisher, seq) in seqs {
                tracker.record(publisher, seq);
            }
            SubscriberOutcome {
                tracker,
                latencies_us: latencies,
                last_receive_ns: Some(last),
                probes: 1,
                foreign: 0,
                other: 1,
                malformed: 0,
            }
        };
        let subscribers = vec![
            subscriber(
                &[(0, 0), (0, 1), (1, 0), (1, 1)],
                3_000_000_000,
                vec![10, 20, 30, 4000],
            ),
            subscriber(&[(0, 1), (0, 0), (0, 0)], 2_000_000_000, vec![5, 6]),
        ];
        let timeline = Timeline {
            warmup: Duration::from_millis(250),
            drain: Duration::from_millis(50),
            complete: false,
        };
        let report = build_report(config, &timeline, &publishers, subscribers);
        assert_eq!(report.sent, 4);
        assert_eq!(report.probes_sent, 6);
        assert!((report.send_s - 0.5).abs() < 1e-9);
        assert!((report.duration_s - 2.0).abs() < 1e-9);
        assert_eq!(report.deliveries, 6);
        assert!((report.deliveries_per_s - 3.0).abs() < 1e-9);
        assert!((report.subscribers[0].throughput - 2.0).abs() < 1e-9);
        assert!((report.subscribers[1].throughput - 2.0).abs() < 1e-9);
        assert_eq!(report.subscribers[1].lost, 2);
        assert_eq!(report.subscribers[1].duplicates, 1);
        assert_eq!(report.subscribers[1].reordered, 1);
        assert_eq!(report.subscribers[1].ignored, 1);
        assert_eq!(
            (report.lost, report.duplicates, report.reordered),
            (2, 1, 1)
        );
        let latency = report.latency.unwrap();
        assert_eq!(
            (latency.samples, latency.max_us, latency.p50_us),
            (6, 4000, 10)
        );
        assert_eq!(report.subscribers[0].latency.unwrap().p99_us, 4000);
        assert!(!report.complete);
    }
}
