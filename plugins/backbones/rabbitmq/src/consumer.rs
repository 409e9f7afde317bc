//! Consuming this instance's queue and handing each message to the router.
//!
//! * Manual acknowledgements: a message is acknowledged only after the router took it (acks
//!   are batched with `multiple`), so a crash or a broken connection makes the server deliver
//!   it again rather than lose it. The prefetch limit bounds what sits unacknowledged here.
//! * Bodies are the bus's JSON encodings, dispatched on `type` ([`Message::from_json`]), or
//!   batches of them, one per line (`batch_messages`, content type `application/x-ndjson`).
//!   Anything else is logged (throttled), counted and acknowledged, or rejected without
//!   requeueing if `on_undecodable: reject`; it never stops consumption.
//! * Repeats (resent by a publisher after a reconnect, or redelivered by the server) are
//!   recognised by `message_id` ([`crate::dedup`]), acknowledged and not handed on again.
//! * On any connection or channel failure: reconnect with backoff and declare everything
//!   again. Refusals that a retry cannot change end the backbone with an error.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::{DeliveryTag, FieldTable, ShortString};
use lapin::{Channel, Connection, Event};
use threatbus_core::Inbound;
use threatbus_core::Message;
use threatbus_core::throttle::LogThrottle;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::config::OnUndecodable;
use crate::connect::{Backoff, Connector, Events};
use crate::dedup::RepeatFilter;
use crate::error::RabbitMqError;
use crate::publisher::BATCH_CONTENT_TYPE;
use crate::stats::{Meters, RabbitMqStats};
use crate::topology::Topology;

/// Publishers whose last sequence number is remembered for recognising repeats.
const REMEMBERED_PUBLISHERS: usize = 4096;

/// Acknowledge at least every this many messages, even in a steady stream.
const ACK_BATCH: u64 = 256;

/// How long closing the connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How much of an undecodable body the log shows.
const PREVIEW_BYTES: usize = 200;

/// The consuming half of the backbone.
pub struct Consumer {
    connector: Connector,
    topology: Topology,
    prefetch: u16,
    on_undecodable: OnUndecodable,
    backoff: Backoff,
    stats: Arc<RabbitMqStats>,
    meters: Meters,
    repeats: RepeatFilter,
    undecodable_log: LogThrottle,
}

/// An open connection consuming the queue.
struct Session {
    connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
    events: Events,
    /// The newest delivery tag handled but not yet acknowledged, and how many are pending.
    unacked: Option<DeliveryTag>,
    pending_acks: u64,
}

impl Session {
    /// Acknowledges everything handled so far.
    async fn ack(&mut self) -> Result<(), RabbitMqError> {
        if let Some(tag) = self.unacked.take() {
            self.pending_acks = 0;
            self.channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .map_err(|err| RabbitMqError::from_lapin("acknowledging messages", err))?;
        }
        Ok(())
    }

    async fn ack_later(&mut self, tag: DeliveryTag) -> Result<(), RabbitMqError> {
        self.unacked = Some(tag);
        self.pending_acks += 1;
        if self.pending_acks >= ACK_BATCH {
            self.ack().await?;
        }
        Ok(())
    }

    async fn close(mut self) {
        let close = async {
            if let Err(err) = self.ack().await {
                tracing::debug!(error = %err, "final acknowledgement failed; the server will redeliver");
            }
            // Closing the connection closes its channel; the server requeues what was
            // delivered but not acknowledged.
            let _ = self.connection.close(200, "OK".into()).await;
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, close).await.is_err() {
            tracing::debug!("closing the consumer connection timed out");
        }
    }
}

/// The bus messages in a body: the body itself, or each line of a batch
/// ([`BATCH_CONTENT_TYPE`]; empty lines are skipped).
fn parts(body: &[u8], batch: bool) -> impl Iterator<Item = &[u8]> {
    let lines = batch.then(|| {
        body.split(|byte| *byte == b'\n')
            .filter(|line| !line.is_empty())
    });
    let whole = (!batch).then_some(body);
    lines.into_iter().flatten().chain(whole)
}

/// Polls `stream` once without registering for a wake-up: what has already arrived.
fn poll_now<S: Stream + Unpin>(stream: &mut S) -> Poll<Option<S::Item>> {
    Pin::new(stream).poll_next(&mut Context::from_waker(Waker::noop()))
}

/// Whether to go on after handling a delivery.
enum Flow {
    Continue,
    /// The router is gone: the bus is stopping.
    Stop,
}

impl Consumer {
    pub fn new(
        connector: Connector,
        topology: Topology,
        prefetch: u16,
        on_undecodable: OnUndecodable,
        backoff: Backoff,
        stats: Arc<RabbitMqStats>,
        meters: Meters,
    ) -> Self {
        Self {
            connector,
            topology,
            prefetch,
            on_undecodable,
            backoff,
            stats,
            meters,
            repeats: RepeatFilter::new(REMEMBERED_PUBLISHERS),
            undecodable_log: LogThrottle::default(),
        }
    }

    /// Consumes until `stop` fires. Returns an error only for failures a reconnect cannot
    /// cure.
    pub async fn run(
        mut self,
        inbound: Inbound,
        stop: CancellationToken,
    ) -> Result<(), RabbitMqError> {
        let mut connected_before = false;
        loop {
            let opened = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                opened = self.open() => opened,
            };
            let (error, what) = match opened {
                Ok(mut session) => {
                    self.backoff.reset();
                    if connected_before {
                        RabbitMqStats::bump(&self.stats.reconnects);
                    }
                    connected_before = true;
                    self.meters.half_connected();
                    tracing::info!(
                        endpoint = self.connector.endpoint(),
                        queue = %self.topology.queue,
                        exchange = %self.topology.exchange,
                        prefetch = self.prefetch,
                        "RabbitMQ consumer connected"
                    );
                    let consumed = self.consume(&mut session, &inbound, &stop).await;
                    self.meters.half_disconnected();
                    match consumed {
                        Ok(()) => {
                            session.close().await;
                            return Ok(());
                        }
                        // No graceful close: the connection is broken or hung. Dropping it
                        // asks lapin to close it in the background.
                        Err(err) => (err, "RabbitMQ consumer lost its connection"),
                    }
                }
                Err(err) => (err, "RabbitMQ consumer cannot connect"),
            };
            if error.is_fatal() {
                return Err(error);
            }
            let delay = self.backoff.next_delay();
            tracing::warn!(error = %error, retry_in = ?delay, "{what}");
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Connects, declares exchange, queue and binding, and starts consuming.
    async fn open(&self) -> Result<Session, RabbitMqError> {
        let queue = self.topology.queue.as_str();
        let opened = self
            .connector
            .open("consumer", queue, async |channel| {
                self.topology.declare_all(channel).await?;
                if self.prefetch > 0 {
                    channel
                        .basic_qos(self.prefetch, BasicQosOptions::default())
                        .await
                        .map_err(|err| {
                            RabbitMqError::from_lapin("setting the prefetch count", err)
                        })?;
                }
                channel
                    .basic_consume(
                        ShortString::from(queue),
                        ShortString::from(""),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|err| {
                        RabbitMqError::from_lapin(format!("consuming queue {queue:?}"), err)
                    })
            })
            .await?;
        Ok(Session {
            connection: opened.connection,
            channel: opened.channel,
            consumer: opened.prepared,
            events: opened.events,
            unacked: None,
            pending_acks: 0,
        })
    }

    /// Hands deliveries to the router until `stop` fires (`Ok`) or the session fails.
    async fn consume(
        &mut self,
        session: &mut Session,
        inbound: &Inbound,
        stop: &CancellationToken,
    ) -> Result<(), RabbitMqError> {
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                event = session.events.next() => match event {
                    Some(Event::Error(err)) => {
                        return Err(RabbitMqError::from_lapin("consumer connection", err));
                    }
                    None => return Err(RabbitMqError::Closed("the consumer connection closed".into())),
                    Some(_) => {}
                },
                delivery = session.consumer.next() => {
                    let delivery = self.received(delivery)?;
                    if let Flow::Stop = self.handle(session, delivery, inbound).await? {
                        return Ok(());
                    }
                    // Take what has already arrived without waiting, then acknowledge the lot.
                    while let Poll::Ready(next) = poll_now(&mut session.consumer) {
                        let delivery = self.received(next)?;
                        if let Flow::Stop = self.handle(session, delivery, inbound).await? {
                            return Ok(());
                        }
                    }
                    session.ack().await?;
                }
            }
        }
    }

    /// Unpacks what the consumer stream yielded.
    fn received(&self, next: Option<lapin::Result<Delivery>>) -> Result<Delivery, RabbitMqError> {
        match next {
            Some(Ok(delivery)) => Ok(delivery),
            Some(Err(err)) => Err(RabbitMqError::from_lapin(
                format!("consuming queue {:?}", self.topology.queue),
                err,
            )),
            None => Err(RabbitMqError::Closed(format!(
                "RabbitMQ cancelled the consumer of queue {:?} (was the queue deleted?)",
                self.topology.queue
            ))),
        }
    }

    async fn handle(
        &mut self,
        session: &mut Session,
        delivery: Delivery,
        inbound: &Inbound,
    ) -> Result<Flow, RabbitMqError> {
        let tag = delivery.delivery_tag;
        let batch = delivery
            .properties
            .content_type()
            .as_ref()
            .is_some_and(|content_type| content_type.as_str() == BATCH_CONTENT_TYPE);
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(ShortString::as_str);
        if self.repeats.is_repeat(id) {
            RabbitMqStats::add(
                &self.stats.repeats,
                parts(&delivery.data, batch).count() as u64,
            );
            tracing::debug!(
                message_id = id.unwrap_or_default(),
                redelivered = delivery.redelivered,
                "skipping a message this instance already received"
            );
            session.ack_later(tag).await?;
            return Ok(Flow::Continue);
        }
        let (mut decoded, mut undecodable) = (0, 0);
        for part in parts(&delivery.data, batch) {
            match Message::from_json(part) {
                Ok(message) => {
                    if inbound.deliver(message).await.is_err() {
                        return Ok(Flow::Stop);
                    }
                    RabbitMqStats::bump(&self.stats.received);
                    decoded += 1;
                }
                Err(err) => {
                    undecodable += 1;
                    RabbitMqStats::bump(&self.stats.undecodable);
                    if let Some(suppressed) = self.undecodable_log.allow() {
                        let preview = &part[..part.len().min(PREVIEW_BYTES)];
                        tracing::warn!(
                            error = %err,
                            body = %String::from_utf8_lossy(preview),
                            bytes = part.len(),
                            batch,
                            action = ?self.on_undecodable,
                            suppressed,
                            "RabbitMQ delivered a message that is not a bus message"
                        );
                    }
                }
            }
        }
        // A batch with some good messages was handed on: acknowledged, whatever else it held.
        if undecodable > 0 && decoded == 0 && self.on_undecodable == OnUndecodable::Reject {
            session.ack().await?;
            session
                .channel
                .basic_reject(tag, BasicRejectOptions { requeue: false })
                .await
                .map_err(|err| RabbitMqError::from_lapin("rejecting a message", err))?;
        } else {
            session.ack_later(tag).await?;
        }
        Ok(Flow::Continue)
    }
}
