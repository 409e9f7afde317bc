//! Bus → apps: moves messages from the subscribers' queues to the PUB socket.
//!
//! One publisher task owns the PUB socket and serves every subscription's bus queue directly:
//! it polls them all, takes up to a batch from each queue that has messages, and writes the
//! frames `<p2p_topic><suffix> <json>`. The JSON is the message's shared encoding: nothing is
//! re-serialised per subscriber, and no task or channel sits between a queue and the socket.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use threatbus_core::queue::SubscriberReceiver;
use threatbus_core::throttle::LogThrottle;
use threatbus_core::{Body, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A subscription's queue and the p2p topic its frames carry, handed to the publisher.
pub(crate) struct Outlet {
    pub(crate) p2p_topic: Arc<str>,
    pub(crate) queue: SubscriberReceiver,
}

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
    stop: CancellationToken,
) {
    let mut publisher = Publisher {
        socket,
        skipped: LogThrottle::default(),
        failed: LogThrottle::default(),
    };
    let mut outlets = Outlets::default();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(outlet) = added.recv() => outlets.list.push(outlet),
            () = poll_fn(|cx| outlets.poll_round(cx, &mut publisher)) => {}
        }
    }
    while let Ok(outlet) = added.try_recv() {
        outlets.list.push(outlet);
    }
    let mut flushed = 0usize;
    for outlet in &mut outlets.list {
        while let Some(message) = outlet.queue.try_recv() {
            publisher.send(&outlet.p2p_topic, &message);
            flushed += 1;
        }
    }
    tracing::debug!(flushed, "ZeroMQ publisher stopped");
}

#[derive(Default)]
struct Outlets {
    list: Vec<Outlet>,
    batch: Vec<Message>,
}

impl Outlets {
    /// One pass over every queue. Ready once anything was written (so the task yields between
    /// rounds); pending, with every queue's waker registered, when all queues are empty.
    fn poll_round(&mut self, cx: &mut Context<'_>, publisher: &mut Publisher) -> Poll<()> {
        let mut progress = false;
        let mut index = 0;
        while index < self.list.len() {
            let outlet = &mut self.list[index];
            match outlet.queue.poll_recv_many(cx, &mut self.batch, BATCH) {
                Poll::Ready(0) => {
                    self.list.swap_remove(index);
                    continue;
                }
                Poll::Ready(_) => {
                    progress = true;
                    for message in self.batch.drain(..) {
                        publisher.send(&outlet.p2p_topic, &message);
                    }
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
}

struct Publisher {
    socket: zmq::Socket,
    skipped: LogThrottle,
    failed: LogThrottle,
}

impl Publisher {
    fn send(&mut self, p2p_topic: &str, message: &Message) {
        let Some(suffix) = suffix(message) else {
            if let Some(suppressed) = self.skipped.allow() {
                tracing::warn!(
                    p2p_topic,
                    kind = message.body().kind(),
                    suppressed,
                    "not forwarding a message ZeroMQ apps do not receive"
                );
            }
            return;
        };
        let frame = encode_frame(p2p_topic, suffix, message.json());
        // PUB sockets never block: a frame for an app whose buffer is full is dropped by ZeroMQ.
        if let Err(err) = self.socket.send(frame, zmq::DONTWAIT) {
            if let Some(suppressed) = self.failed.allow() {
                tracing::warn!(p2p_topic, error = %err, suppressed, "could not publish a frame");
            }
        } else {
            tracing::trace!(p2p_topic, suffix, "published");
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
