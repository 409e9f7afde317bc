//! Bus → apps: moves messages from the subscribers' queues to the PUB socket.
//!
//! Every subscription has a small forwarding task that reads its bus queue and tags each message
//! with the subscription's p2p topic; one publisher task owns the PUB socket and writes the
//! frames `<p2p_topic><suffix> <json>`. The JSON is the message's shared encoding: nothing is
//! re-serialised per subscriber.

use std::sync::Arc;

use threatbus_core::queue::SubscriberReceiver;
use threatbus_core::throttle::LogThrottle;
use threatbus_core::{Body, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A message and the p2p topic of the subscription it goes to.
pub(crate) type Frame = (Arc<str>, Message);

/// Capacity of the queue between the forwarding tasks and the publisher.
pub(crate) const FRAME_QUEUE: usize = 4096;
const BATCH: usize = 256;

/// Moves one subscription's messages to the publisher until the subscription is removed.
pub(crate) async fn forward(
    mut queue: SubscriberReceiver,
    p2p_topic: Arc<str>,
    frames: mpsc::Sender<Frame>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        for message in batch.drain(..) {
            if frames.send((p2p_topic.clone(), message)).await.is_err() {
                return;
            }
        }
    }
}

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

/// Writes frames to the PUB socket until `stop` fires, then flushes what is queued.
pub(crate) async fn run(
    socket: zmq::Socket,
    mut frames: mpsc::Receiver<Frame>,
    stop: CancellationToken,
) {
    let mut publisher = Publisher {
        socket,
        skipped: LogThrottle::default(),
        failed: LogThrottle::default(),
    };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            biased;
            received = frames.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    break;
                }
                for (p2p_topic, message) in batch.drain(..) {
                    publisher.send(&p2p_topic, &message);
                }
            }
            _ = stop.cancelled() => {
                // Forwarders may still hold a few frames: take what arrives within a moment.
                let grace = tokio::time::sleep(std::time::Duration::from_millis(100));
                tokio::pin!(grace);
                loop {
                    tokio::select! {
                        frame = frames.recv() => match frame {
                            Some((p2p_topic, message)) => publisher.send(&p2p_topic, &message),
                            None => break,
                        },
                        _ = &mut grace => break,
                    }
                }
                break;
            }
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
