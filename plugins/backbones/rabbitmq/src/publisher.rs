//! Publishing what local apps published to the exchange, with publisher confirms.
//!
//! * A message counts as published only once the server has confirmed it. Messages are sent in
//!   the order the core handed them over, with up to `confirm_window` awaiting their confirm.
//!   Sending does not wait for each message to be written to the socket (lapin writes on its own
//!   I/O thread; waiting for each write would cost two thread switches per message): see
//!   [`InFlight`].
//! * When the connection breaks, the unconfirmed messages go back to the front of the buffer
//!   and are sent again, in order, on the next connection (at least once; the consumers
//!   recognise the repeats by their `message_id`, see [`crate::dedup`]).
//! * While RabbitMQ is unreachable, messages are buffered up to `publish_buffer`; beyond that
//!   the newest are dropped, counted and logged. While connected, the publisher takes no more
//!   from the core while the confirm window is full, so local publishers wait (back-pressure).
//! * On every (re)connect the exchange is declared, and the queue with its binding too (unless
//!   exclusive), so that this instance's own queue is bound before anything is published.
//! * At shutdown, what is buffered is sent and confirmed within `flush_timeout`, then the
//!   connection is closed.
//!
//! The buffer of messages awaiting their send or their confirm, with its packing into batches
//! and its bookkeeping, is the `outbox` module; this one connects, sends and waits.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Connection, Event};
use threatbus_core::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::connect::{self, Backoff, Connector, Events};
use crate::dedup::message_id;
use crate::error::RabbitMqError;
use crate::outbox::{InFlight, Outbox, Outgoing, Write};
use crate::stats::{Meters, RabbitMqStats};
use crate::topology::Topology;

pub use crate::outbox::BATCH_CONTENT_TYPE;

/// Messages taken from the core per wake-up.
const INTAKE_BATCH: usize = 256;

/// `delivery_mode` of a persistent message.
const PERSISTENT: u8 = 2;

/// What the publisher needs besides its connections.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    /// Identifies this publisher in `message_id`s; unique per process.
    pub publisher_id: String,
    /// Send messages persistent (when the queue is durable).
    pub persistent: bool,
    /// Declare and bind the queue too (not possible for an exclusive queue).
    pub declare_queue: bool,
    pub buffer: usize,
    /// AMQP messages sent but not yet confirmed, at most.
    pub confirm_window: usize,
    /// Bus messages packed into one AMQP message at most; 1 sends each on its own, as
    /// upstream does.
    pub batch_messages: usize,
    pub flush_timeout: Duration,
    /// Without any confirm for this long while messages await one (and the server has not
    /// said it blocks publishing), the connection counts as hung: it is closed and the
    /// messages are sent again on a new one.
    pub confirm_timeout: Duration,
}

/// The publishing half of the backbone.
pub struct Publisher {
    connector: Connector,
    topology: Topology,
    settings: PublisherSettings,
    backoff: Backoff,
    stats: Arc<RabbitMqStats>,
    meters: Meters,
}

/// An open connection with a channel in confirm mode.
struct Session {
    connection: Connection,
    channel: Channel,
    events: Events,
}

impl Session {
    async fn close(self) {
        // Closing the connection closes its channel.
        connect::close(&self.connection, "publisher").await;
    }
}

/// How a connected stretch ended.
enum SessionEnd {
    /// Shutdown was requested.
    Stop,
    /// The connection or channel failed.
    Lost(RabbitMqError),
}

impl Publisher {
    pub fn new(
        connector: Connector,
        topology: Topology,
        settings: PublisherSettings,
        backoff: Backoff,
        stats: Arc<RabbitMqStats>,
        meters: Meters,
    ) -> Self {
        Self {
            connector,
            topology,
            settings,
            backoff,
            stats,
            meters,
        }
    }

    /// Publishes what arrives on `outbound` until `stop` fires, then flushes. Returns an error
    /// only for failures a reconnect cannot cure.
    pub async fn run(
        mut self,
        mut outbound: mpsc::Receiver<Message>,
        stop: CancellationToken,
    ) -> Result<(), RabbitMqError> {
        let mut outbox = Outbox::new(self.settings.buffer, self.settings.batch_messages);
        outbox.meters = self.meters.clone();
        let mut connected_before = false;
        loop {
            let opened = self.intake_while(self.open(), &mut outbox, &mut outbound, &stop);
            let (error, what) = match opened.await {
                None => break,
                Some(Err(err)) => (err, "RabbitMQ publisher cannot connect"),
                Some(Ok(mut session)) => {
                    self.backoff.reset();
                    if connected_before {
                        RabbitMqStats::bump(&self.stats.reconnects);
                    }
                    connected_before = true;
                    self.meters.half_connected();
                    let resent = outbox.requeue_unconfirmed();
                    RabbitMqStats::add(&self.stats.resent, resent as u64);
                    tracing::info!(
                        endpoint = self.connector.endpoint(),
                        exchange = %self.topology.exchange,
                        buffered = outbox.len(),
                        resending = resent,
                        "RabbitMQ publisher connected"
                    );
                    let end = self
                        .pump(&mut session, &mut outbox, &mut outbound, &stop)
                        .await;
                    self.meters.half_disconnected();
                    match end {
                        SessionEnd::Stop => {
                            self.flush(Some(session), &mut outbox, &mut outbound).await;
                            return Ok(());
                        }
                        // No graceful close: the connection is broken or hung. Dropping it
                        // asks lapin to close it in the background.
                        SessionEnd::Lost(err) => (
                            err,
                            "RabbitMQ publisher lost its connection; unconfirmed messages will be sent again",
                        ),
                    }
                }
            };
            if error.is_fatal() {
                return Err(error);
            }
            let delay = self.backoff.next_delay();
            tracing::warn!(
                error = %error,
                retry_in = ?delay,
                buffered = outbox.len(),
                unconfirmed = outbox.unconfirmed.len(),
                "{what}"
            );
            let wait = tokio::time::sleep(delay);
            if self
                .intake_while(wait, &mut outbox, &mut outbound, &stop)
                .await
                .is_none()
            {
                break;
            }
        }
        // Stopped while disconnected: one more try to deliver what is buffered.
        self.flush(None, &mut outbox, &mut outbound).await;
        Ok(())
    }

    /// Connects, declares and turns on confirms.
    async fn open(&self) -> Result<Session, RabbitMqError> {
        let opened = self
            .connector
            .open("publisher", &self.topology.queue, async |channel| {
                self.topology.declare_exchange(channel).await?;
                if self.settings.declare_queue {
                    self.topology.declare_queue(channel).await?;
                }
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(|err| RabbitMqError::from_lapin("turning on publisher confirms", err))
            })
            .await?;
        Ok(Session {
            connection: opened.connection,
            channel: opened.channel,
            events: opened.events,
        })
    }

    /// Runs `task` while taking messages from the core into the buffer (dropping beyond its
    /// capacity). `None` if `stop` fired first.
    async fn intake_while<T>(
        &self,
        task: impl Future<Output = T>,
        outbox: &mut Outbox,
        outbound: &mut mpsc::Receiver<Message>,
        stop: &CancellationToken,
    ) -> Option<T> {
        tokio::pin!(task);
        let mut batch = Vec::with_capacity(INTAKE_BATCH);
        let mut intake_open = true;
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                result = &mut task => return Some(result),
                received = outbound.recv_many(&mut batch, INTAKE_BATCH), if intake_open => {
                    if received == 0 {
                        intake_open = false;
                    }
                    for message in batch.drain(..) {
                        outbox.accept_or_drop(message, &self.stats);
                    }
                }
            }
        }
    }

    /// Sends waiting messages while the confirm window has room, without waiting for them to be
    /// written (see [`InFlight`]).
    fn send_waiting(&self, channel: &Channel, outbox: &mut Outbox) -> Result<(), RabbitMqError> {
        let mut context = Context::from_waker(Waker::noop());
        while outbox.unconfirmed.len() < self.settings.confirm_window {
            let Some(mut next) = outbox.next_outgoing() else {
                break;
            };
            let mut write = self.publish(channel, &next);
            let in_flight = match write.as_mut().poll(&mut context) {
                Poll::Pending => InFlight::Writing(write),
                Poll::Ready(Ok(confirm)) => InFlight::Sent(confirm),
                Poll::Ready(Err(err)) => {
                    outbox.unsend(next);
                    return Err(RabbitMqError::from_lapin(
                        format!("publishing to exchange {:?}", self.topology.exchange),
                        err,
                    ));
                }
            };
            next.sent_at = Some(Instant::now());
            outbox.unconfirmed.push_back((next, in_flight));
        }
        Ok(())
    }

    /// The publish of one message, not yet polled.
    fn publish(&self, channel: &Channel, outgoing: &Outgoing) -> Write {
        let (body, content_type) = outgoing.body();
        let mut properties = BasicProperties::default()
            .with_content_type(ShortString::from(content_type))
            .with_message_id(ShortString::from(message_id(
                &self.settings.publisher_id,
                outgoing.sequence,
            )));
        if self.settings.persistent {
            properties = properties.with_delivery_mode(PERSISTENT);
        }
        let channel = channel.clone();
        let exchange = ShortString::from(self.topology.exchange.as_str());
        Box::pin(async move {
            channel
                .basic_publish(
                    exchange,
                    ShortString::from(""),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await
        })
    }

    /// Moves messages from the core to the server until `stop` fires or the session fails.
    async fn pump(
        &self,
        session: &mut Session,
        outbox: &mut Outbox,
        outbound: &mut mpsc::Receiver<Message>,
        stop: &CancellationToken,
    ) -> SessionEnd {
        let mut batch = Vec::with_capacity(INTAKE_BATCH);
        let mut intake_open = true;
        let mut blocked = false;
        // When a confirm last arrived, or nothing awaited one.
        let mut progress = (Instant::now(), RabbitMqStats::get(&self.stats.confirmed));
        loop {
            if outbox.unconfirmed.is_empty() {
                progress.0 = Instant::now();
            }
            // Confirmed first, then refill the window: the select below must not wait with
            // messages waiting and none awaiting a confirm, or nothing would wake it.
            let sent = outbox
                .pop_confirmed(&self.stats)
                .and_then(|()| self.send_waiting(&session.channel, outbox));
            if let Err(err) = sent {
                return SessionEnd::Lost(err);
            }
            if outbox.unconfirmed.is_empty() && outbox.has_unsent() {
                // Cannot happen (sending fills the window), but waiting below would then never
                // end: go round once more instead.
                continue;
            }
            let confirmed = RabbitMqStats::get(&self.stats.confirmed);
            if confirmed != progress.1 {
                progress = (Instant::now(), confirmed);
            }
            let room = outbox.room().min(INTAKE_BATCH);
            let window_full = outbox.unconfirmed.len() >= self.settings.confirm_window;
            let watch = !outbox.unconfirmed.is_empty() && !blocked;
            tokio::select! {
                biased;
                _ = stop.cancelled() => return SessionEnd::Stop,
                event = session.events.next() => {
                    if let Some(end) = self.on_event(event, &mut blocked) {
                        return end;
                    }
                }
                _ = tokio::time::sleep_until(progress.0 + self.settings.confirm_timeout), if watch => {
                    return SessionEnd::Lost(RabbitMqError::Stalled {
                        waited: self.settings.confirm_timeout,
                        unconfirmed: outbox.unconfirmed.len(),
                    });
                }
                confirmed = outbox.confirm_head(&self.stats), if !outbox.unconfirmed.is_empty() => {
                    if let Err(err) = confirmed {
                        return SessionEnd::Lost(err);
                    }
                }
                received = outbound.recv_many(&mut batch, room), if room > 0 && intake_open && !window_full => {
                    if received == 0 {
                        intake_open = false;
                    }
                    for message in batch.drain(..) {
                        outbox.accept(message);
                    }
                }
            }
        }
    }

    fn on_event(&self, event: Option<Event>, blocked: &mut bool) -> Option<SessionEnd> {
        match event {
            None => Some(SessionEnd::Lost(RabbitMqError::Closed(
                "the publisher connection closed".into(),
            ))),
            Some(Event::Error(err)) => Some(SessionEnd::Lost(RabbitMqError::from_lapin(
                "publisher connection",
                err,
            ))),
            Some(Event::ConnectionBlocked(reason)) => {
                *blocked = true;
                tracing::warn!(%reason, "RabbitMQ blocks publishing (resource alarm); local publishers wait");
                None
            }
            Some(Event::ConnectionUnblocked) => {
                *blocked = false;
                tracing::info!("RabbitMQ accepts publishing again");
                None
            }
            Some(_) => None,
        }
    }

    /// Sends and confirms what is buffered (and what the core still holds) within
    /// `flush_timeout`, then closes the connection. With no session, connects first.
    async fn flush(
        &self,
        session: Option<Session>,
        outbox: &mut Outbox,
        outbound: &mut mpsc::Receiver<Message>,
    ) {
        while let Ok(message) = outbound.try_recv() {
            outbox.accept_or_drop(message, &self.stats);
        }
        let deadline = Instant::now() + self.settings.flush_timeout;
        let mut session = session;
        if session.is_none() && !outbox.is_empty() {
            match tokio::time::timeout_at(deadline, self.open()).await {
                Ok(Ok(opened)) => {
                    outbox.requeue_unconfirmed();
                    session = Some(opened);
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "RabbitMQ publisher cannot connect to flush at shutdown")
                }
                Err(_) => tracing::warn!(
                    "RabbitMQ publisher could not connect to flush before the flush timeout"
                ),
            }
        }
        if let Some(session) = session {
            let flushed = tokio::time::timeout_at(deadline, async {
                loop {
                    self.send_waiting(&session.channel, outbox)?;
                    if outbox.unconfirmed.is_empty() {
                        return Ok::<(), RabbitMqError>(());
                    }
                    outbox.confirm_head(&self.stats).await?;
                }
            })
            .await;
            match flushed {
                Ok(Ok(())) => tracing::debug!("RabbitMQ publisher flushed"),
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "RabbitMQ publisher failed while flushing")
                }
                Err(_) => tracing::warn!(
                    timeout = ?self.settings.flush_timeout,
                    "RabbitMQ publisher: flush timeout passed before every message was confirmed"
                ),
            }
            session.close().await;
        }
        if !outbox.is_empty() {
            RabbitMqStats::add(&self.stats.unconfirmed_at_stop, outbox.len() as u64);
            tracing::warn!(
                unconfirmed = outbox.len(),
                "RabbitMQ publisher stopped with messages the server has not confirmed; they may be lost"
            );
        }
    }
}
