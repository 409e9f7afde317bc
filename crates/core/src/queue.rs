//! Subscriber queues: one bounded queue per subscriber, filled by the router, drained by the app.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::Message;
use crate::budget::MemoryBudget;
use crate::config::WhenFull;

/// Identifies a subscriber for the lifetime of the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(pub u64);

impl fmt::Display for SubscriberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// How a subscriber wants to be treated.
#[derive(Debug, Clone, Default)]
pub struct SubscriberOptions {
    /// A name for the logs, e.g. the ZeroMQ p2p topic or the Zeek peer address.
    pub label: String,
    /// Also receive every snapshot request issued anywhere on the bus, except the subscriber's
    /// own, whatever its topics (upstream's snapshot hook: the subscriber may answer with
    /// envelopes). A subscriber with no topics and this flag set is how an app that answers
    /// snapshots (e.g. MISP) listens for requests.
    pub snapshot_requests: bool,
    /// With `snapshot_requests`: only the requests of subscribers of this instance (a snapshot
    /// request from another instance on the backbone is that instance's to answer).
    pub local_snapshot_requests_only: bool,
    /// What the router does when this subscriber's queue is full, instead of `bus.when_full`
    /// (the store takes `Block`: it must see every message, and a full queue means it has
    /// fallen behind by a whole queue).
    pub when_full: Option<WhenFull>,
}

/// The subscriber that asked for a snapshot, as an answer sees it: who it is and how many more
/// messages its queue takes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequesterRoom {
    /// Free slots in its queue.
    pub free: usize,
    /// `<app> <label>`, e.g. the ZeroMQ app and the subscription's p2p topic, for log lines.
    pub requester: String,
}

/// The receiving end of a subscriber's queue. Dropping it makes later deliveries fail, which
/// the router counts as drops.
#[derive(Debug)]
pub struct SubscriberReceiver {
    pub id: SubscriberId,
    pub(crate) rx: mpsc::Receiver<Message>,
    /// Each copy taken from the queue gives its slot's charge back.
    pub(crate) budget: Arc<MemoryBudget>,
}

impl Drop for SubscriberReceiver {
    fn drop(&mut self) {
        // What is still queued goes with the queue.
        self.budget.release_copies(self.rx.len());
    }
}

impl SubscriberReceiver {
    /// The next message, or `None` once the subscriber has been removed and its queue drained.
    pub async fn recv(&mut self) -> Option<Message> {
        let message = self.rx.recv().await;
        self.budget.release_copies(usize::from(message.is_some()));
        message
    }

    /// Receives up to `limit` messages into `buffer`, waiting only for the first. Returns how
    /// many were received; 0 means the queue is closed and empty.
    pub async fn recv_many(&mut self, buffer: &mut Vec<Message>, limit: usize) -> usize {
        let received = self.rx.recv_many(buffer, limit).await;
        self.budget.release_copies(received);
        received
    }

    /// Polls for up to `limit` messages into `buffer`, for a task that serves many queues at
    /// once. `Ready(0)` means the queue is closed and empty.
    pub fn poll_recv_many(
        &mut self,
        cx: &mut std::task::Context<'_>,
        buffer: &mut Vec<Message>,
        limit: usize,
    ) -> std::task::Poll<usize> {
        let polled = self.rx.poll_recv_many(cx, buffer, limit);
        if let std::task::Poll::Ready(received) = polled {
            self.budget.release_copies(received);
        }
        polled
    }

    /// Whether the bus has removed this subscriber (messages may still wait in the queue).
    pub fn is_closed(&self) -> bool {
        self.rx.is_closed()
    }

    /// A message if one is ready now.
    pub fn try_recv(&mut self) -> Option<Message> {
        let message = self.rx.try_recv().ok();
        self.budget.release_copies(usize::from(message.is_some()));
        message
    }

    /// Messages waiting in the queue.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

/// Outcome of offering a message to a subscriber.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    Delivered,
    DroppedFull,
    Gone,
}

/// The router's end of a subscriber queue, with its counters.
pub(crate) struct SubscriberQueue {
    pub(crate) options: SubscriberOptions,
    tx: mpsc::Sender<Message>,
    pub(crate) delivered: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// Drops not yet reported in a log line, and when the last line was written.
    unreported: u64,
    last_report: Option<Instant>,
}

/// At most one "queue full" warning per subscriber in this interval; the line carries the count.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(5);

impl SubscriberQueue {
    pub(crate) fn new(
        id: SubscriberId,
        options: SubscriberOptions,
        capacity: usize,
        budget: Arc<MemoryBudget>,
    ) -> (Self, SubscriberReceiver) {
        let (tx, rx) = mpsc::channel(capacity);
        let queue = Self {
            options,
            tx,
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            unreported: 0,
            last_report: None,
        };
        (queue, SubscriberReceiver { id, rx, budget })
    }

    /// Hands `message` to the subscriber according to `policy`.
    pub(crate) async fn offer(
        &mut self,
        id: SubscriberId,
        message: &Message,
        policy: WhenFull,
    ) -> Offer {
        match policy {
            WhenFull::DropNewest => {
                let result = self.try_queue(message);
                if result == Offer::DroppedFull {
                    self.count_drops(id, 1);
                }
                result
            }
            WhenFull::Block => match self.tx.send(message.clone()).await {
                Ok(()) => {
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                    Offer::Delivered
                }
                Err(_) => Offer::Gone,
            },
        }
    }

    /// Hands `message` over if the queue has room now, without counting a full queue as a
    /// drop (catch-up takes over then).
    pub(crate) fn try_queue(&mut self, message: &Message) -> Offer {
        match self.tx.try_send(message.clone()) {
            Ok(()) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                Offer::Delivered
            }
            Err(mpsc::error::TrySendError::Full(_)) => Offer::DroppedFull,
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
        }
    }

    /// Counts `count` messages dropped for this subscriber and logs them like full-queue drops
    /// (at most once per interval).
    pub(crate) fn count_drops(&mut self, id: SubscriberId, count: u64) {
        self.dropped.fetch_add(count, Ordering::Relaxed);
        self.unreported += count;
        self.report_drops(id, false);
    }

    /// The queue's capacity.
    pub(crate) fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }

    /// Logs drops not yet reported, at most once per interval unless `force`d.
    pub(crate) fn report_drops(&mut self, id: SubscriberId, force: bool) {
        if self.unreported == 0 {
            return;
        }
        let due = self
            .last_report
            .is_none_or(|at| at.elapsed() >= DROP_REPORT_INTERVAL);
        if due || force {
            tracing::warn!(
                subscriber = %id,
                label = %self.options.label,
                dropped = self.unreported,
                dropped_total = self.dropped.load(Ordering::Relaxed),
                capacity = self.tx.max_capacity(),
                "subscriber queue full: dropped messages for this subscriber"
            );
            self.unreported = 0;
            self.last_report = Some(Instant::now());
        }
    }

    /// Free slots in the queue (0 once the reader is gone).
    pub(crate) fn room(&self) -> usize {
        if self.tx.is_closed() {
            0
        } else {
            self.tx.capacity()
        }
    }

    /// Messages waiting in the queue for a reader that is still there.
    pub(crate) fn depth(&self) -> usize {
        if self.tx.is_closed() {
            0
        } else {
            self.tx.max_capacity() - self.tx.capacity()
        }
    }
}
