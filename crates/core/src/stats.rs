//! Bus-wide totals the core keeps about traffic, for the log lines (the periodic summary and the
//! one at shutdown). The metrics endpoint reads the finer [`crate::metrics`] registry.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bus-wide counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages apps handed to the bus, per routing topic (index as [`crate::topic::ALL`]).
    pub published: [AtomicU64; 4],
    /// Messages the router received from the backbone, per routing topic.
    pub routed: [AtomicU64; 4],
    /// Message copies put into subscriber queues.
    pub delivered: AtomicU64,
    /// Message copies dropped because a subscriber's queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Messages dropped because the subscriber they were meant for had gone.
    pub dropped_subscriber_gone: AtomicU64,
    /// Input an app rejected (undecodable, not STIX, invalid).
    pub rejected_input: AtomicU64,
    /// Snapshot requests this instance issued.
    pub snapshot_requests: AtomicU64,
    /// Snapshot envelope bodies handed to their requester.
    pub snapshot_answers: AtomicU64,
    /// Envelopes whose snapshot id was unknown or expired.
    pub snapshot_unknown: AtomicU64,
}

impl Stats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// One line for the logs.
    pub fn summary(&self) -> String {
        let sum = |counters: &[AtomicU64; 4]| counters.iter().map(Self::get).sum::<u64>();
        format!(
            "published {}, routed {}, delivered {}, dropped (queue full) {}, dropped (subscriber gone) {}, rejected input {}, snapshot requests {}, snapshot answers {}, unknown snapshot envelopes {}",
            sum(&self.published),
            sum(&self.routed),
            Self::get(&self.delivered),
            Self::get(&self.dropped_queue_full),
            Self::get(&self.dropped_subscriber_gone),
            Self::get(&self.rejected_input),
            Self::get(&self.snapshot_requests),
            Self::get(&self.snapshot_answers),
            Self::get(&self.snapshot_unknown),
        )
    }
}
