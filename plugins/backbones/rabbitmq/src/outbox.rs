//! The publisher's outbox: every bus message not yet confirmed by the server, in order, and its
//! bookkeeping.
//!
//! Messages wait unpacked until they are sent; sending packs them into AMQP messages
//! ([`Outgoing`], batched up to `batch_messages` and [`BATCH_MAX_BYTES`]) with a sequence
//! number for their `message_id`. Sent messages await their confirm in order ([`InFlight`]);
//! when a connection breaks they go back in front of the unsent ones and keep their sequence
//! numbers and contents. The outbox counts what it holds against `publish_buffer` and drops
//! (counting and logging) what does not fit while RabbitMQ is unreachable. The connection and
//! the sending loop are in [`crate::publisher`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use lapin::{Confirmation, PublisherConfirm};
use threatbus_core::Message;
use threatbus_core::throttle::LogThrottle;
use tokio::time::Instant;

use crate::error::RabbitMqError;
use crate::stats::{Meters, RabbitMqStats};

/// Content type of a body holding one bus message.
const JSON_CONTENT_TYPE: &str = "application/json";

/// Content type of a body holding several bus messages, one JSON document per line. Bus
/// messages are compact JSON and contain no line breaks.
pub const BATCH_CONTENT_TYPE: &str = "application/x-ndjson";

/// A batch grows beyond one message only while its body stays within this size.
const BATCH_MAX_BYTES: usize = 1 << 20;

/// One AMQP message: one bus message or, with batching, several. Its sequence number and its
/// contents stay the same when it is sent again, so that consumers can recognise the repeat.
pub(crate) struct Outgoing {
    pub(crate) sequence: u64,
    messages: Vec<Message>,
    /// When it was last sent, for the confirm latency.
    pub(crate) sent_at: Option<Instant>,
}

impl Outgoing {
    /// The AMQP body and its content type: a bus message's JSON as it is (upstream's format),
    /// or several, one per line ([`BATCH_CONTENT_TYPE`]).
    pub(crate) fn body(&self) -> (Bytes, &'static str) {
        match self.messages.as_slice() {
            [single] => (single.json().clone(), JSON_CONTENT_TYPE),
            several => {
                let size = several.iter().map(|m| m.json().len() + 1).sum();
                let mut body = Vec::with_capacity(size);
                for (index, message) in several.iter().enumerate() {
                    if index > 0 {
                        body.push(b'\n');
                    }
                    body.extend_from_slice(message.json());
                }
                (Bytes::from(body), BATCH_CONTENT_TYPE)
            }
        }
    }
}

/// A message's publish future: resolves once its frames are written, to the future of its
/// confirm.
pub(crate) type Write = Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + Send>>;

/// Where a sent message is on its way to being confirmed.
///
/// `Channel::basic_publish` does everything that fixes a message's place in the channel (the
/// state check, the delivery tag for its confirm, queueing its frames for lapin's I/O thread)
/// synchronously on its first poll, and only then waits for the frames to be written. Polling
/// each publish once, right after creating it, therefore sends messages in order without
/// waiting for the writes; the futures are polled again only when they reach the head.
pub(crate) enum InFlight {
    Writing(Write),
    Sent(PublisherConfirm),
}

impl InFlight {
    /// Ready once the server confirmed the message (or refused it, or the channel failed).
    fn poll_confirmed(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RabbitMqError>> {
        loop {
            match self {
                Self::Writing(write) => match write.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(confirm)) => *self = Self::Sent(confirm),
                    Poll::Ready(Err(err)) => {
                        return Poll::Ready(Err(RabbitMqError::from_lapin("publishing", err)));
                    }
                },
                Self::Sent(confirm) => return Pin::new(confirm).poll(cx).map(settle),
            }
        }
    }
}

/// Everything not yet confirmed, in order: `unconfirmed` were sent on the current connection,
/// `resend` were sent on an earlier one (and keep their sequence numbers and contents),
/// `waiting` were never sent and are not yet packed into AMQP messages.
pub(crate) struct Outbox {
    pub(crate) unconfirmed: VecDeque<(Outgoing, InFlight)>,
    resend: VecDeque<Outgoing>,
    waiting: VecDeque<Message>,
    /// Bus messages in `unconfirmed` and `resend`.
    packed: usize,
    /// Bus messages kept at most (`publish_buffer`).
    capacity: usize,
    /// Bus messages per AMQP message at most (`batch_messages`).
    batch: usize,
    next_sequence: u64,
    drops: LogThrottle,
    pub(crate) meters: Meters,
}

impl Outbox {
    pub(crate) fn new(capacity: usize, batch: usize) -> Self {
        Self {
            unconfirmed: VecDeque::new(),
            resend: VecDeque::new(),
            waiting: VecDeque::new(),
            packed: 0,
            capacity,
            batch: batch.max(1),
            next_sequence: 1,
            drops: LogThrottle::default(),
            meters: Meters::default(),
        }
    }

    /// Bus messages not yet confirmed.
    pub(crate) fn len(&self) -> usize {
        self.packed + self.waiting.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn has_unsent(&self) -> bool {
        !self.resend.is_empty() || !self.waiting.is_empty()
    }

    pub(crate) fn room(&self) -> usize {
        self.capacity.saturating_sub(self.len())
    }

    pub(crate) fn accept(&mut self, message: Message) {
        self.waiting.push_back(message);
    }

    /// Takes a message while disconnected: dropped (and counted) if the buffer is full.
    pub(crate) fn accept_or_drop(&mut self, message: Message, stats: &RabbitMqStats) {
        if self.room() > 0 {
            self.accept(message);
            return;
        }
        RabbitMqStats::bump(&stats.dropped_buffer_full);
        if let Some(suppressed) = self.drops.allow() {
            tracing::warn!(
                topic = message.topic(),
                buffered = self.len(),
                dropped_total = RabbitMqStats::get(&stats.dropped_buffer_full),
                suppressed,
                "RabbitMQ is unreachable and the publish buffer is full: dropping a message"
            );
        }
    }

    /// The next AMQP message to send: one to send again, or a new one packed from up to
    /// `batch` waiting messages (at most [`BATCH_MAX_BYTES`] of them, but at least one).
    pub(crate) fn next_outgoing(&mut self) -> Option<Outgoing> {
        if let Some(outgoing) = self.resend.pop_front() {
            return Some(outgoing);
        }
        let first = self.waiting.pop_front()?;
        let mut bytes = first.json().len();
        let mut messages = vec![first];
        while messages.len() < self.batch {
            let Some(next) = self.waiting.front() else {
                break;
            };
            bytes += next.json().len() + 1;
            if bytes > BATCH_MAX_BYTES {
                break;
            }
            messages.extend(self.waiting.pop_front());
        }
        self.packed += messages.len();
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        Some(Outgoing {
            sequence,
            messages,
            sent_at: None,
        })
    }

    /// Puts back a message that could not be sent, in front of everything unsent.
    pub(crate) fn unsend(&mut self, outgoing: Outgoing) {
        self.resend.push_front(outgoing);
    }

    /// Moves the unconfirmed messages back in front of the unsent ones, for sending again.
    /// Returns how many bus messages that is.
    pub(crate) fn requeue_unconfirmed(&mut self) -> usize {
        let mut count = 0;
        while let Some((outgoing, _in_flight)) = self.unconfirmed.pop_back() {
            count += outgoing.messages.len();
            self.resend.push_front(outgoing);
        }
        count
    }

    /// Removes the oldest unconfirmed message once the server has confirmed it.
    fn confirmed_head(&mut self, stats: &RabbitMqStats) {
        if let Some((outgoing, _)) = self.unconfirmed.pop_front() {
            self.packed -= outgoing.messages.len();
            if let Some(sent_at) = outgoing.sent_at {
                self.meters.confirm_latency.observe(sent_at.elapsed());
            }
            RabbitMqStats::add(&stats.confirmed, outgoing.messages.len() as u64);
        }
    }

    /// Removes confirmed messages from the front without waiting. Errors if the server
    /// nacked one or the channel failed.
    pub(crate) fn pop_confirmed(&mut self, stats: &RabbitMqStats) -> Result<(), RabbitMqError> {
        let mut context = Context::from_waker(Waker::noop());
        while let Some((_, in_flight)) = self.unconfirmed.front_mut() {
            match in_flight.poll_confirmed(&mut context) {
                Poll::Pending => break,
                Poll::Ready(result) => {
                    result?;
                    self.confirmed_head(stats);
                }
            }
        }
        Ok(())
    }

    /// Waits until the oldest unconfirmed message is confirmed and removes it.
    pub(crate) async fn confirm_head(
        &mut self,
        stats: &RabbitMqStats,
    ) -> Result<(), RabbitMqError> {
        if let Some((_, in_flight)) = self.unconfirmed.front_mut() {
            std::future::poll_fn(|cx| in_flight.poll_confirmed(cx)).await?;
            self.confirmed_head(stats);
        }
        Ok(())
    }
}

/// Interprets one confirm.
fn settle(result: lapin::Result<Confirmation>) -> Result<(), RabbitMqError> {
    match result {
        Ok(Confirmation::Ack(_)) | Ok(Confirmation::NotRequested) => Ok(()),
        Ok(Confirmation::Nack(_)) => Err(RabbitMqError::Nacked),
        Err(err) => Err(RabbitMqError::from_lapin(
            "waiting for a publisher confirm",
            err,
        )),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn indicator(n: u64, padding: usize) -> Message {
        let json = format!(
            r#"{{"type": "indicator", "spec_version": "2.1", "id": "indicator--00000000-0000-4000-8000-{n:012}", "created": "2020-06-23T12:34:56.000Z", "modified": "2020-06-23T12:34:56.000Z", "pattern": "[ipv4-addr:value = '6.6.6.6']", "pattern_type": "stix", "valid_from": "2020-06-23T12:34:56.000Z", "description": "{}"}}"#,
            "x".repeat(padding)
        );
        Message::from_json(json.as_bytes()).unwrap()
    }

    fn sizes(outbox: &mut Outbox) -> Vec<(u64, usize)> {
        std::iter::from_fn(|| outbox.next_outgoing())
            .map(|outgoing| (outgoing.sequence, outgoing.messages.len()))
            .collect()
    }

    #[test]
    fn batches_take_what_waits_up_to_the_limit() {
        let mut outbox = Outbox::new(100, 4);
        for n in 0..10 {
            outbox.accept(indicator(n, 0));
        }
        assert_eq!(sizes(&mut outbox), [(1, 4), (2, 4), (3, 2)]);
        assert_eq!(outbox.len(), 10, "sent but unconfirmed still counts");
        // Without batching every message is its own AMQP message, sent as its JSON.
        let mut single = Outbox::new(100, 1);
        single.accept(indicator(1, 0));
        let outgoing = single.next_outgoing().unwrap();
        let (body, content_type) = outgoing.body();
        assert_eq!(
            (&body, content_type),
            (outgoing.messages[0].json(), JSON_CONTENT_TYPE)
        );
    }

    #[test]
    fn a_batch_stays_within_the_byte_limit_but_holds_at_least_one() {
        let mut outbox = Outbox::new(100, 100);
        let big = BATCH_MAX_BYTES / 3;
        for n in 0..4 {
            outbox.accept(indicator(n, big));
        }
        outbox.accept(indicator(9, BATCH_MAX_BYTES));
        assert_eq!(sizes(&mut outbox), [(1, 2), (2, 2), (3, 1)]);
    }

    #[test]
    fn what_could_not_be_sent_goes_again_first_with_its_number_and_contents() {
        let mut outbox = Outbox::new(100, 3);
        for n in 0..5 {
            outbox.accept(indicator(n, 0));
        }
        let first = outbox.next_outgoing().unwrap();
        outbox.accept(indicator(5, 0));
        outbox.unsend(first);
        assert_eq!(sizes(&mut outbox), [(1, 3), (2, 3)]);
        assert_eq!(outbox.len(), 6);
    }

    #[test]
    fn batch_bodies_are_the_messages_one_per_line() {
        let mut outbox = Outbox::new(100, 10);
        let messages: Vec<Message> = (0..3).map(|n| indicator(n, 0)).collect();
        for message in &messages {
            outbox.accept(message.clone());
        }
        let (body, content_type) = outbox.next_outgoing().unwrap().body();
        assert_eq!(content_type, BATCH_CONTENT_TYPE);
        let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
        let expected: Vec<&[u8]> = messages.iter().map(|m| m.json().as_ref()).collect();
        assert_eq!(lines, expected);
    }
}
