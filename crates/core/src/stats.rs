//! Bus-wide totals for the log lines (the periodic summary and the one at shutdown), read from
//! the metrics registry: the registry is the one place that counts, this is a sum over it.

use crate::metrics::{self, Registry};

/// Totals since the start, per routing topic where it applies (index as [`crate::topic::ALL`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    /// Messages handed to the backbone: what apps published and this instance's snapshot
    /// requests.
    pub published: [u64; 4],
    /// Messages the backbone delivered to this instance's router.
    pub routed: [u64; 4],
    /// Message copies put into subscriber queues.
    pub delivered: u64,
    /// Copies dropped because a subscriber's queue was full.
    pub dropped_queue_full: u64,
    /// Copies dropped because the subscriber had gone.
    pub dropped_subscriber_gone: u64,
    /// Input apps rejected.
    pub rejected_input: u64,
    /// Snapshot requests this instance issued.
    pub snapshot_requests: u64,
    /// Snapshot answers handed to their requester.
    pub snapshot_answers: u64,
    /// Envelopes whose snapshot id was unknown or expired.
    pub snapshot_unknown: u64,
    /// Copies read back from the store for subscribers that fell behind.
    pub replayed: u64,
    /// Copies given up for subscribers that fell behind (catch-up timeout, journal full, not
    /// in the store).
    pub dropped_catch_up: u64,
}

impl Totals {
    /// Sums the registry's counters.
    pub fn read(registry: &Registry) -> Self {
        let by_kind = |metric| metrics::KINDS.map(|kind| registry.sum(metric, "kind", Some(kind)));
        Self {
            published: by_kind(&metrics::BACKBONE_SENT),
            routed: by_kind(&metrics::BACKBONE_RECEIVED),
            delivered: registry.sum(&metrics::APP_SENT, "kind", None),
            dropped_queue_full: registry.sum(&metrics::DROPPED, "reason", Some("queue_full")),
            dropped_subscriber_gone: registry.sum(
                &metrics::DROPPED,
                "reason",
                Some("subscriber_gone"),
            ),
            rejected_input: registry.sum(&metrics::APP_REJECTED, "app", None),
            snapshot_requests: registry.sum(&metrics::SNAPSHOT_REQUESTS, "kind", None),
            snapshot_answers: registry.sum(&metrics::SNAPSHOT_ANSWERS, "", None),
            snapshot_unknown: registry.sum(&metrics::SNAPSHOT_UNKNOWN, "", None),
            replayed: registry.sum(&metrics::REPLAYED, "app", None),
            dropped_catch_up: ["catch_up_timeout", "catch_up_limit", "not_stored"]
                .iter()
                .map(|reason| registry.sum(&metrics::DROPPED, "reason", Some(reason)))
                .sum(),
        }
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Self) -> Self {
        let diff = |a: u64, b: u64| a.saturating_sub(b);
        Self {
            published: std::array::from_fn(|i| diff(self.published[i], before.published[i])),
            routed: std::array::from_fn(|i| diff(self.routed[i], before.routed[i])),
            delivered: diff(self.delivered, before.delivered),
            dropped_queue_full: diff(self.dropped_queue_full, before.dropped_queue_full),
            dropped_subscriber_gone: diff(
                self.dropped_subscriber_gone,
                before.dropped_subscriber_gone,
            ),
            rejected_input: diff(self.rejected_input, before.rejected_input),
            snapshot_requests: diff(self.snapshot_requests, before.snapshot_requests),
            snapshot_answers: diff(self.snapshot_answers, before.snapshot_answers),
            snapshot_unknown: diff(self.snapshot_unknown, before.snapshot_unknown),
            replayed: diff(self.replayed, before.replayed),
            dropped_catch_up: diff(self.dropped_catch_up, before.dropped_catch_up),
        }
    }

    /// One line for the logs.
    pub fn summary(&self) -> String {
        format!(
            "published {}, routed {}, delivered {}, dropped (queue full) {}, dropped (subscriber gone) {}, rejected input {}, snapshot requests {}, snapshot answers {}, unknown snapshot envelopes {}, replayed from the store {}, dropped (catch-up given up) {}",
            self.published.iter().sum::<u64>(),
            self.routed.iter().sum::<u64>(),
            self.delivered,
            self.dropped_queue_full,
            self.dropped_subscriber_gone,
            self.rejected_input,
            self.snapshot_requests,
            self.snapshot_answers,
            self.snapshot_unknown,
            self.replayed,
            self.dropped_catch_up,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_the_registry_and_subtract() {
        let registry = Registry::default();
        let before = Totals::read(&registry);
        registry
            .counter(&metrics::BACKBONE_SENT, &["inmem", "sighting"])
            .add(3);
        registry
            .counter(&metrics::DROPPED, &["zmq", "queue_full"])
            .add(2);
        registry
            .counter(&metrics::DROPPED, &["zeek", "queue_full"])
            .add(1);
        registry
            .counter(&metrics::DROPPED, &["zmq", "subscriber_gone"])
            .add(5);
        registry
            .counter(&metrics::APP_SENT, &["zmq", "indicator"])
            .add(4);
        registry
            .counter(&metrics::APP_SENT, &["zeek", "sighting"])
            .add(6);
        registry.counter(&metrics::SNAPSHOT_ANSWERS, &[]).add(7);
        registry.counter(&metrics::REPLAYED, &["zmq"]).add(8);
        registry
            .counter(&metrics::DROPPED, &["zmq", "catch_up_timeout"])
            .add(9);
        registry
            .counter(&metrics::DROPPED, &["zeek", "not_stored"])
            .add(1);
        let totals = Totals::read(&registry);
        let d = totals.since(&before);
        assert_eq!(d.published, [0, 3, 0, 0]);
        assert_eq!(d.dropped_queue_full, 3);
        assert_eq!(d.dropped_subscriber_gone, 5);
        assert_eq!(d.delivered, 10);
        assert_eq!(d.snapshot_answers, 7);
        assert_eq!((d.replayed, d.dropped_catch_up), (8, 10));
        assert!(
            totals
                .summary()
                .ends_with("replayed from the store 8, dropped (catch-up given up) 10")
        );
        assert!(
            totals
                .summary()
                .starts_with("published 3, routed 0, delivered 10, dropped (queue full) 3")
        );
        assert_eq!(Totals::read(&registry).since(&totals), Totals::default());
    }
}
