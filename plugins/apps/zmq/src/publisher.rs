//! Bus → apps: moves messages from the subscribers' queues to the PUB socket.
//!
//! One publisher task owns the PUB socket and serves every subscription's bus queue directly:
//! it polls them all, takes up to a batch from each queue that has messages, and writes the
//! frames `<p2p_topic><suffix> <json>`. The JSON is the message's shared encoding: nothing is
//! re-serialised per subscriber, and no task or channel sits between a queue and the socket.
//!
//! The socket has `ZMQ_XPUB_NODROP` set: when the ZeroMQ buffer of the app a frame goes to is
//! full (`send_hwm`), the send fails instead of ZeroMQ silently dropping the frame. Every p2p
//! topic is unique, so only that app's frames fail: its outlet keeps the unsent frames, stops
//! taking from its bus queue and retries shortly. Its bus queue then fills, and the bus applies
//! `bus.when_full` to that subscriber alone (with `drop_newest`: counted and logged per
//! subscriber). Other apps go on at full speed.
//!
//! The socket is an XPUB: it reports the prefixes the apps' SUB sockets subscribe to (each
//! distinct prefix once, and its end when the last SUB socket holding it goes). Nothing is
//! taken from the queue of a subscription no SUB socket listens to (ZeroMQ would drop it): a
//! snapshot answer that is ready before the app's SUB socket has connected waits for it. A
//! subscription whose p2p topic no SUB socket has listened to for [`PAUSE_AFTER`] is paused at the router
//! (nothing is queued for it: ZeroMQ would drop its frames anyway), resumed when a listener
//! appears, and handed to the manage thread for removal once it has had no listener for
//! `listener_timeout`.

use std::collections::{HashSet, VecDeque};
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use threatbus_core::queue::SubscriberReceiver;
use threatbus_core::throttle::LogThrottle;
use threatbus_core::{Body, BusHandle, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A subscription's queue and the p2p topic its frames carry, handed to the publisher.
pub(crate) struct Outlet {
    p2p_topic: Arc<str>,
    queue: SubscriberReceiver,
}

impl Outlet {
    pub(crate) fn new(p2p_topic: Arc<str>, queue: SubscriberReceiver) -> Self {
        Self { p2p_topic, queue }
    }
}

/// An outlet with the messages taken from its queue that its app's buffer had no room for.
struct Active {
    outlet: Outlet,
    backlog: VecDeque<Message>,
    /// When to try the backlog again (set while it is not empty).
    retry_at: Instant,
    /// Subscribed SUB prefixes that cover the p2p topic.
    listeners: usize,
    /// Since when no SUB socket listens (None while one does).
    silent_since: Option<Instant>,
    /// The router queues nothing for it.
    paused: bool,
    /// Handed to the manage thread for removal.
    expired: bool,
}

/// A subscription whose p2p topic has had no listener for a few seconds is paused.
pub(crate) const PAUSE_AFTER: Duration = Duration::from_secs(5);

/// How often the XPUB's subscription messages are read and listeners reviewed.
const LISTENER_CHECK: Duration = Duration::from_millis(100);

/// Whether frames for `p2p_topic` (the topic followed by a suffix) reach a SUB socket
/// subscribed to `prefix`.
fn covers(prefix: &[u8], p2p_topic: &[u8]) -> bool {
    p2p_topic.starts_with(prefix) || prefix.starts_with(p2p_topic)
}

/// What the publisher needs to pause, resume and expire subscriptions without listeners.
pub(crate) struct ListenerPolicy {
    pub(crate) bus: BusHandle,
    /// Remove a subscription after this long without a listener.
    pub(crate) listener_timeout: Duration,
    /// Where expired p2p topics go (the manage thread removes them).
    pub(crate) expired: std::sync::mpsc::Sender<String>,
}

impl Active {
    /// Sends the backlog as far as the app's buffer takes it; true if it is now empty.
    fn flush_backlog(&mut self, publisher: &mut Publisher, now: Instant) -> bool {
        publisher.send_backlog(&self.outlet.p2p_topic, &mut self.backlog);
        if self.backlog.is_empty() {
            true
        } else {
            self.retry_at = now + RETRY;
            false
        }
    }
}

/// What retrying an outlet's held frames came to.
#[derive(Debug, PartialEq, Eq)]
enum Retry {
    /// Everything held was sent.
    Cleared,
    /// Not due yet, or the app's buffer is still full.
    Waiting,
    /// The subscription is gone while its app still holds the topic but reads nothing: it would
    /// wait forever, so its frames are given up.
    GiveUp,
}

impl Active {
    /// Retries the held frames if due (at most once per [`RETRY`]).
    fn retry(&mut self, publisher: &mut Publisher, now: Instant) -> Retry {
        if self.backlog.is_empty() {
            return Retry::Cleared;
        }
        if self.retry_at > now {
            return Retry::Waiting;
        }
        if self.flush_backlog(publisher, now) {
            return Retry::Cleared;
        }
        if self.outlet.queue.is_closed() {
            tracing::debug!(
                p2p_topic = %self.outlet.p2p_topic,
                frames = self.backlog.len(),
                "subscription removed while its app reads nothing: giving up its held frames"
            );
            return Retry::GiveUp;
        }
        Retry::Waiting
    }
}

/// How often an outlet whose app buffer is full is retried.
const RETRY: Duration = Duration::from_millis(1);

/// At most this many messages from one queue per round, so one busy subscription cannot starve
/// the others.
const BATCH: usize = 256;

/// The suffix that follows the p2p topic, or `None` for messages apps do not receive.
fn suffix(message: &Message) -> Option<&'static str> {
    match message.body() {
        Body::Indicator(_) | Body::Sighting(_) | Body::SnapshotRequest(_) => {
            Some(message.body().kind())
        }
        Body::SnapshotEnvelope(_) => None,
    }
}

/// Builds the frame `<p2p_topic><suffix> <json>`.
pub(crate) fn encode_frame(p2p_topic: &str, suffix: &str, json: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(p2p_topic.len() + suffix.len() + 1 + json.len());
    frame.extend_from_slice(p2p_topic.as_bytes());
    frame.extend_from_slice(suffix.as_bytes());
    frame.push(b' ');
    frame.extend_from_slice(json);
    frame
}

/// Writes frames to the PUB socket until `stop` fires, then writes what the queues still hold.
/// New subscriptions arrive on `added`; a subscription whose queue the bus closed (unsubscribe,
/// expiry) is dropped once its queue is empty.
pub(crate) async fn run(
    socket: zmq::Socket,
    mut added: mpsc::UnboundedReceiver<Outlet>,
    policy: ListenerPolicy,
    stop: CancellationToken,
) {
    let mut publisher = Publisher {
        socket,
        skipped: LogThrottle::default(),
        failed: LogThrottle::default(),
        full: LogThrottle::default(),
    };
    let mut outlets = Outlets::default();
    let mut listeners = tokio::time::interval(LISTENER_CHECK);
    listeners.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let retry_at = outlets.next_retry();
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(outlet) = added.recv() => outlets.add(outlet),
            _ = listeners.tick() => {
                outlets.read_subscriptions(&publisher.socket);
                outlets.review_listeners(&policy).await;
            }
            () = poll_fn(|cx| outlets.poll_round(cx, &mut publisher)) => {}
            () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                outlets.retry(&mut publisher);
            }
        }
    }
    while let Ok(outlet) = added.try_recv() {
        outlets.add(outlet);
    }
    let (flushed, lost) = outlets.flush(&mut publisher);
    if lost > 0 {
        tracing::warn!(
            flushed,
            lost,
            "ZeroMQ publisher stopped: frames for apps with full buffers were not sent"
        );
    } else {
        tracing::debug!(flushed, "ZeroMQ publisher stopped");
    }
}

#[derive(Default)]
struct Outlets {
    list: Vec<Active>,
    batch: Vec<Message>,
    /// The prefixes SUB sockets subscribe to, as the XPUB reported them.
    prefixes: HashSet<Vec<u8>>,
}

impl Outlets {
    fn add(&mut self, outlet: Outlet) {
        let topic = outlet.p2p_topic.as_bytes();
        let listeners = self.prefixes.iter().filter(|p| covers(p, topic)).count();
        self.list.push(Active {
            outlet,
            backlog: VecDeque::new(),
            retry_at: Instant::now(),
            listeners,
            silent_since: (listeners == 0).then(Instant::now),
            paused: false,
            expired: false,
        });
    }

    /// Reads the subscription messages the XPUB socket holds: `1` + prefix when the first SUB
    /// socket subscribes to a prefix, `0` + prefix when the last one leaves.
    fn read_subscriptions(&mut self, socket: &zmq::Socket) {
        while let Ok(message) = socket.recv_bytes(zmq::DONTWAIT) {
            let Some((&kind, prefix)) = message.split_first() else {
                continue;
            };
            let change: isize = match kind {
                1 if self.prefixes.insert(prefix.to_vec()) => 1,
                0 if self.prefixes.remove(prefix) => -1,
                _ => continue,
            };
            let now = Instant::now();
            for active in &mut self.list {
                if covers(prefix, active.outlet.p2p_topic.as_bytes()) {
                    active.listeners = active.listeners.saturating_add_signed(change);
                    active.silent_since = match (active.listeners, active.silent_since) {
                        (0, None) => Some(now),
                        (0, since) => since,
                        _ => None,
                    };
                }
            }
        }
    }

    /// Pauses subscriptions without a listener for [`PAUSE_AFTER`], resumes those that have
    /// one again, and hands those silent for `listener_timeout` to the manage thread.
    async fn review_listeners(&mut self, policy: &ListenerPolicy) {
        for active in &mut self.list {
            let id = active.outlet.queue.id;
            let pause = match active.silent_since {
                None => false,
                Some(since) => active.paused || since.elapsed() >= PAUSE_AFTER,
            };
            if pause != active.paused && policy.bus.set_listening(id, !pause).await.is_ok() {
                active.paused = pause;
                if pause {
                    active.backlog.clear();
                    tracing::debug!(p2p_topic = %active.outlet.p2p_topic, "no SUB socket listens: subscription paused");
                } else {
                    tracing::debug!(p2p_topic = %active.outlet.p2p_topic, "a SUB socket listens again: subscription resumed");
                }
            }
            if let Some(since) = active.silent_since
                && !active.expired
                && since.elapsed() >= policy.listener_timeout
            {
                active.expired = true;
                let _ = policy.expired.send(active.outlet.p2p_topic.to_string());
            }
        }
    }

    /// The earliest retry among outlets holding frames back, if any.
    fn next_retry(&self) -> Option<Instant> {
        self.list
            .iter()
            .filter(|active| !active.backlog.is_empty())
            .map(|active| active.retry_at)
            .min()
    }

    /// Sends what outlets hold back, as far as their apps' buffers take it.
    fn retry(&mut self, publisher: &mut Publisher) {
        let now = Instant::now();
        self.list
            .retain_mut(|active| active.retry(publisher, now) != Retry::GiveUp);
    }

    /// One pass over every queue whose app can take frames. Ready once anything was taken (so
    /// the task yields between rounds); pending, with those queues' wakers registered, when
    /// they are all empty.
    fn poll_round(&mut self, cx: &mut Context<'_>, publisher: &mut Publisher) -> Poll<()> {
        let mut progress = false;
        let mut now = None;
        let mut index = 0;
        while index < self.list.len() {
            let active = &mut self.list[index];
            if !active.backlog.is_empty() {
                // Retried here while other outlets keep the task busy, or by the timer when they
                // are idle; its queue fills meanwhile.
                match active.retry(publisher, *now.get_or_insert_with(Instant::now)) {
                    Retry::Cleared => {}
                    Retry::Waiting => {
                        index += 1;
                        continue;
                    }
                    Retry::GiveUp => {
                        self.list.swap_remove(index);
                        continue;
                    }
                }
            }
            if active.listeners == 0 {
                // No SUB socket listens (yet): ZeroMQ would drop the frames. They wait in the
                // bus queue instead, for the app's SUB socket, which connects right after the
                // subscribe reply (a snapshot answer may be ready before it), or until the
                // subscription is paused. The listener check wakes this task.
                index += 1;
                continue;
            }
            match active
                .outlet
                .queue
                .poll_recv_many(cx, &mut self.batch, BATCH)
            {
                Poll::Ready(0) => {
                    self.list.swap_remove(index);
                    continue;
                }
                Poll::Ready(_) => {
                    progress = true;
                    active.backlog.extend(self.batch.drain(..));
                    active.flush_backlog(publisher, *now.get_or_insert_with(Instant::now));
                }
                Poll::Pending => {}
            }
            index += 1;
        }
        if progress {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// On shutdown: sends what every outlet holds and what its queue still has, without
    /// waiting for full buffers. Returns (sent, not sent).
    fn flush(&mut self, publisher: &mut Publisher) -> (usize, usize) {
        let (mut sent, mut lost) = (0, 0);
        for active in &mut self.list {
            while let Some(message) = active.outlet.queue.try_recv() {
                active.backlog.push_back(message);
            }
            let before = active.backlog.len();
            publisher.send_backlog(&active.outlet.p2p_topic, &mut active.backlog);
            sent += before - active.backlog.len();
            lost += active.backlog.len();
        }
        (sent, lost)
    }
}

struct Publisher {
    socket: zmq::Socket,
    skipped: LogThrottle,
    failed: LogThrottle,
    full: LogThrottle,
}

/// What became of one frame.
enum Sent {
    /// Written, or deliberately not sent (a message type apps do not receive, a socket error
    /// that a retry would not fix); either way it leaves the backlog.
    Done,
    /// The app's buffer is full: keep the message and retry later.
    Full,
}

impl Publisher {
    /// Sends from the front of `backlog` until it is empty or the app's buffer is full.
    fn send_backlog(&mut self, p2p_topic: &str, backlog: &mut VecDeque<Message>) {
        while let Some(message) = backlog.front() {
            match self.send(p2p_topic, message) {
                Sent::Done => {
                    backlog.pop_front();
                }
                Sent::Full => {
                    if let Some(suppressed) = self.full.allow() {
                        tracing::debug!(
                            p2p_topic,
                            held = backlog.len(),
                            suppressed,
                            "ZeroMQ buffer of a subscribed app is full (send_hwm): holding its frames"
                        );
                    }
                    return;
                }
            }
        }
    }

    fn send(&mut self, p2p_topic: &str, message: &Message) -> Sent {
        let Some(suffix) = suffix(message) else {
            if let Some(suppressed) = self.skipped.allow() {
                tracing::warn!(
                    p2p_topic,
                    kind = message.body().kind(),
                    suppressed,
                    "not forwarding a message ZeroMQ apps do not receive"
                );
            }
            return Sent::Done;
        };
        let frame = encode_frame(p2p_topic, suffix, message.json());
        match self.socket.send(frame, zmq::DONTWAIT) {
            Ok(()) => {
                tracing::trace!(p2p_topic, suffix, "published");
                Sent::Done
            }
            Err(zmq::Error::EAGAIN) => Sent::Full,
            Err(err) => {
                if let Some(suppressed) = self.failed.allow() {
                    tracing::warn!(p2p_topic, error = %err, suppressed, "could not publish a frame");
                }
                Sent::Done
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_glues_suffix_to_topic_then_one_space() {
        let frame = encode_frame(
            "abcdefghijklmnopqrstuvwxyzabcdef",
            "indicator",
            br#"{"a":1}"#,
        );
        assert_eq!(
            frame,
            br#"abcdefghijklmnopqrstuvwxyzabcdefindicator {"a":1}"#
        );
    }
}
