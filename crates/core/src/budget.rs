//! The memory budget: one byte limit for everything queued for subscribers, across every app
//! and every queue (`bus.memory_budget`).
//!
//! A message is charged once, when it is first queued for a subscriber, with an estimate of what
//! it costs in memory (its JSON, its parsed form and the bookkeeping: [`Message::cost`]); the
//! charge is released when the last handle to it is dropped, wherever that happens (a
//! subscriber read it, an app's backlog let it go, a subscriber was removed with its queue).
//! So the budget counts each message once however many subscribers hold it, and counts it for
//! as long as it is held anywhere after being queued, Zeek's held p2p traffic and the ZeroMQ
//! publisher's backlog included.
//!
//! The router asks [`MemoryBudget::admit`] before queueing: above [`HIGH_WATER`] (half) of the
//! limit it queues only for subscribers holding no more than the average (the ones holding the
//! most lose messages first, and one stalled subscriber can take at most about half the budget,
//! leaving the other half for the rest to lag in); at the limit it queues nothing new. Nothing
//! new is charged past the limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Above this share of the limit, subscribers holding more than the average, or more than
/// [`HEAVY_DEPTH`] messages, get no more.
pub const HIGH_WATER: f64 = 0.5;

/// A subscriber holding this many messages is far behind: above [`HIGH_WATER`] it gets no more,
/// even when many others hold as much (then they are the average).
pub const HEAVY_DEPTH: usize = 256;

/// What one queued copy costs besides the message (the queue's slot), charged per copy from
/// the moment it is queued until the subscriber takes it.
pub const COPY_COST: usize = 16;

/// The limit and what is charged against it.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

/// What the budget charges: a message, with the estimate of what it costs in memory, charged
/// once and released when the last copy is dropped.
pub trait Chargeable {
    /// Estimated bytes the message takes while queued.
    fn cost(&self) -> usize;
    /// Whether it counts against a budget already.
    fn is_charged(&self) -> bool;
    /// Counts it against `budget` until it is dropped (once; later calls do nothing).
    fn charge(&self, budget: Arc<MemoryBudget>);
}

/// Whether a message may be queued for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Queue,
    /// Over the high-water mark and this subscriber holds more than the average.
    DropHeavyHolder,
    /// The budget is used up.
    DropFull,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// The configured limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether more than [`HIGH_WATER`] of the budget is charged (only then does it matter who
    /// holds the most).
    pub fn is_tight(&self) -> bool {
        self.used() as f64 > self.limit as f64 * HIGH_WATER
    }

    /// Whether `message` may be queued for a subscriber that holds `depth` messages while the
    /// average subscriber holds `average_depth`; charges it if it is queued for the first time.
    pub fn admit(
        self: &Arc<Self>,
        message: &impl Chargeable,
        depth: usize,
        average_depth: f64,
    ) -> Admission {
        let fresh = COPY_COST
            + if message.is_charged() {
                0
            } else {
                message.cost()
            };
        let used = self.used();
        let after = used.saturating_add(fresh);
        if after > self.limit {
            return Admission::DropFull;
        }
        let heavy = depth as f64 > average_depth || depth >= HEAVY_DEPTH;
        if after as f64 > self.limit as f64 * HIGH_WATER && heavy {
            return Admission::DropHeavyHolder;
        }
        if !message.is_charged() {
            message.charge(self.clone());
        }
        self.add(COPY_COST);
        Admission::Queue
    }

    /// Gives back what `copies` queued copies cost (the subscriber took them, or its queue
    /// went away with them).
    pub fn release_copies(&self, copies: usize) {
        self.release(copies.saturating_mul(COPY_COST));
    }

    pub(crate) fn add(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// A message's charge; released when the message is dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    pub(crate) budget: Arc<MemoryBudget>,
    pub(crate) bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;
    use crate::message::{Body, SnapshotRequest};

    fn message(n: u32) -> Message {
        Message::new(Body::SnapshotRequest(SnapshotRequest {
            snapshot_type: crate::MessageType::Indicator,
            snapshot_id: format!("id-{n:03}"),
            snapshot: jiff::SignedDuration::from_secs(60),
        }))
    }

    #[test]
    fn a_message_is_charged_once_and_released_when_the_last_handle_goes() {
        let budget = MemoryBudget::new(1 << 20);
        let first = message(1);
        let copy = first.clone();
        assert_eq!(budget.admit(&first, 0, 0.0), Admission::Queue);
        let cost = first.cost();
        assert_eq!(budget.used(), cost + COPY_COST);
        // Queued for a second subscriber: only the copy is charged.
        assert_eq!(budget.admit(&copy, 0, 0.0), Admission::Queue);
        assert_eq!(budget.used(), cost + 2 * COPY_COST);
        // Both subscribers take their copy.
        budget.release_copies(2);
        drop(first);
        assert_eq!(budget.used(), cost);
        drop(copy);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn heavy_holders_lose_first_and_nothing_is_charged_past_the_limit() {
        let one = message(0).cost() + COPY_COST;
        let budget = MemoryBudget::new(one * 10);
        let mut held = Vec::new();
        for n in 0..5 {
            let m = message(n);
            assert_eq!(budget.admit(&m, 50, 10.0), Admission::Queue);
            held.push(m);
        }
        // Above half the budget, a subscriber above the average loses; one below still gets
        // messages, up to the limit.
        for n in 5..10 {
            let m = message(n);
            assert_eq!(budget.admit(&m, 50, 10.0), Admission::DropHeavyHolder);
            assert_eq!(budget.admit(&m, 5, 10.0), Admission::Queue);
            held.push(m);
        }
        // Full: nobody gets a new message.
        assert_eq!(budget.admit(&message(11), 0, 10.0), Admission::DropFull);
        assert_eq!(budget.used(), one * 10);
        // Far behind is heavy even when everybody is (the average is no help then).
        budget.release_copies(10);
        held.truncate(6);
        let m = message(12);
        assert_eq!(
            budget.admit(&m, HEAVY_DEPTH, 1000.0),
            Admission::DropHeavyHolder
        );
        assert_eq!(budget.admit(&m, 10, 1000.0), Admission::Queue);
        held.push(m);
        budget.release_copies(1);
        held.clear();
        assert_eq!(budget.used(), 0);
    }
}
