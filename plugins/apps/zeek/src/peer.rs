//! One Zeek peer: the Broker handshake, then the `Tenzir::*` conversation (spec `zeek-broker.md`
//! §8, `upstream.md` §5).
//!
//! * The bus announces the filter `threatbus/manage`, `stix2/sighting`; Zeek's filter arrives
//!   in the handshake and in routing updates (each replaces the last).
//! * After the handshake the bus pings and sends no data until the pong is back: data sent
//!   right after a handshake that the other side originated can be lost (spec §5.10).
//! * `subscribe(topic, snapshot)` → `subscription_acknowledged(p2p)` on `threatbus/manage`,
//!   and a bus subscriber for `topic` (with a snapshot if the interval is positive). Its
//!   indicators go to Zeek as `intel` on the p2p topic, but only while Zeek's filter covers
//!   the p2p topic: until then the subscriber's bus queue holds them (upstream lost the first
//!   intel this way).
//! * `unsubscribe(p2p)` removes the subscriber; so does losing the connection.
//! * Pings are answered with pongs (BYE included); the bus pings every `ping_interval` and
//!   drops a peer silent for two. At shutdown it says BYE and waits up to 3 s for the pong.
//! * A malformed frame, a frame above `max_frame_size` or a handshake violation closes this
//!   connection only, with a log line.
//! * Everything for Zeek goes out through the peer's [`Connection`]: handshake messages,
//!   pings and pongs, acknowledgements (held until the ready pong) and the subscriptions'
//!   intel, which their forwarding tasks hand to the peer task as envelopes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use rand::Rng;
use thiserror::Error;
use threatbus_broker::data::Data;
use threatbus_broker::frame::{Envelope, EnvelopeType, Filter, filter_matches};
use threatbus_broker::handshake::{HandshakeFailure, Handshaker, Peered, TcpRole};
use threatbus_broker::zeek::Event;
use threatbus_broker::{DecodeError, EndpointId, OwnEndpointId};
use threatbus_core::throttle::{LogThrottle, bounded, bounded_bytes};
use threatbus_core::{Body, BusHandle, SubscriberId, SubscriberOptions};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::connection::{Connection, ConnectionError};
use crate::mapping::{self, NotSent};
use crate::metrics::{Refusal, Refusals};
use crate::transport::{AcceptError, Transport};

/// The topic Zeek sends `subscribe` and `unsubscribe` on and receives acknowledgements on.
pub const MANAGE_TOPIC: &str = "threatbus/manage";

/// The topic Zeek sends sightings on.
pub const SIGHTING_TOPIC: &str = "stix2/sighting";

/// Letters appended to a subscribed topic to make its p2p topic (as upstream).
const P2P_SUFFIX: usize = 10;

/// Payload of the ping whose pong opens the gate for data.
const READY_PING: &[u8] = b"threatbus-ready";

/// Payload of the periodic liveness pings.
const ALIVE_PING: &[u8] = b"threatbus-alive";

/// Broker's graceful-unpeering ping starts with these bytes.
const BYE: &[u8] = b"BYE";

/// How long to wait for the pong to our BYE.
const BYE_TIMEOUT: Duration = Duration::from_secs(3);

/// Subscriptions one Zeek may hold at once (`threatbus.zeek` holds one); more are refused, so
/// that a misbehaving peer cannot make the bus create subscribers without end.
const MAX_SUBSCRIPTIONS: usize = 64;

/// Envelopes the subscriptions may queue for the peer task.
const OUTGOING_QUEUE: usize = 256;

/// Longest topic a `subscribe` may name, in bytes (as the ZeroMQ app's default
/// `max_topic_length`): a longer one is refused.
const MAX_TOPIC_LENGTH: usize = 1024;

/// One throttle per kind of line a Zeek peer can cause with what it sends.
#[derive(Default)]
struct PeerLogs {
    not_an_event: LogThrottle,
    bad_sighting: LogThrottle,
    bad_subscribe: LogThrottle,
    bad_unsubscribe: LogThrottle,
    refused: LogThrottle,
    ignored: LogThrottle,
}

/// Event arguments from Zeek as bounded text for a log line: the type of each, strings cut to
/// [`threatbus_core::throttle::LOG_VALUE_MAX`] bytes, containers by their size only.
fn describe(args: &[Data]) -> String {
    let parts: Vec<String> = args
        .iter()
        .take(8)
        .map(|arg| match arg {
            Data::String(bytes) => format!("string {:?}", bounded_bytes(bytes)),
            Data::EnumValue(name) => format!("enum {:?}", bounded(name)),
            Data::Vector(items) => format!("vector of {}", items.len()),
            Data::Set(items) => format!("set of {}", items.len()),
            Data::Table(items) => format!("table of {}", items.len()),
            other => format!("{other:?}"),
        })
        .collect();
    let more = args.len().saturating_sub(parts.len());
    if more > 0 {
        format!("[{}, … {more} more]", parts.join(", "))
    } else {
        format!("[{}]", parts.join(", "))
    }
}

/// Settings shared by all peers.
pub struct PeerSettings {
    pub own_id: OwnEndpointId,
    pub namespace: String,
    pub max_frame_size: usize,
    pub ping_interval: Duration,
    pub handshake_timeout: Duration,
    /// How long a subscription may wait for Zeek to cover its p2p topic.
    pub p2p_timeout: Duration,
    pub refusals: Refusals,
    /// Lines about connections that never became peers, throttled across all connections (a
    /// flood of them must not flood the log).
    pub setup_log: std::sync::Mutex<LogThrottle>,
}

impl PeerSettings {
    /// Whether a line about a failed setup may be written now, and how many were suppressed.
    fn allow_setup_line(&self) -> Option<u64> {
        self.setup_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allow()
    }
}

/// A connection's places under the listener's caps: the connection one for its whole life,
/// the handshake one until the handshake is over.
pub struct Permits {
    pub connection: OwnedSemaphorePermit,
    pub handshake: OwnedSemaphorePermit,
}

/// Why a connection did not become a peer.
#[derive(Debug, Error)]
enum SetupError {
    /// No TLS or plain TCP connection.
    #[error(transparent)]
    Accept(#[from] AcceptError),
    /// Reading or writing a handshake frame failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// Zeek closed the connection between handshake frames.
    #[error("closed during the handshake")]
    Closed,
    /// Zeek broke the handshake or has an endpoint id Broker ignores.
    #[error(transparent)]
    Handshake(HandshakeFailure),
}

/// Why a peered connection was closed.
#[derive(Debug, Error)]
enum PeerError {
    /// Reading or writing a frame failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// A frame that is not an envelope.
    #[error("bad envelope")]
    BadEnvelope(#[source] DecodeError),
    /// A routing update whose payload is not a filter.
    #[error("bad routing update")]
    BadRoutingUpdate(#[source] DecodeError),
    /// Nothing heard from Zeek for this long, pings unanswered.
    #[error("no answer for {0:.0?} (dead peer)")]
    Silent(Duration),
}

/// An error and its causes, joined by `: `, for a log line. A cause whose text already ends
/// the line is left out: OpenSSL's errors (also inside I/O errors) print their cause
/// themselves.
fn report(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        let next = err.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = err.source();
    }
    text
}

/// What the subscriptions of a peer need to know before they may send.
#[derive(Debug, Clone, Default)]
struct Gate {
    /// The pong to the first ping has arrived.
    ready: bool,
    /// Zeek's current subscriptions.
    filter: Filter,
}

/// Why a connection ended.
enum End {
    /// Zeek closed it (or said BYE and closed).
    Closed,
    /// The bus is stopping.
    Stopping,
    Failed(PeerError),
}

/// Serves one accepted connection until it ends or `stop` fires.
pub async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    permits: Permits,
    transport: Arc<Transport>,
    settings: Arc<PeerSettings>,
    bus: BusHandle,
    stop: CancellationToken,
) {
    let setup = async {
        let (io, kind) = match transport.accept(stream).await {
            Ok(accepted) => accepted,
            // A port check (connect, then close): not worth a warning.
            Err(AcceptError::ClosedBeforeSending) => return Ok(None),
            Err(err) => return Err(SetupError::from(err)),
        };
        let mut connection = Connection::new(io, settings.max_frame_size);
        let peered = handshake(&mut connection, settings.own_id).await?;
        Ok::<_, SetupError>(Some((connection, kind, peered)))
    };
    let refusals = &settings.refusals;
    let (connection, kind, peered) = tokio::select! {
        _ = stop.cancelled() => return,
        done = tokio::time::timeout(settings.handshake_timeout, setup) => match done {
            Ok(Ok(Some(done))) => done,
            Ok(Ok(None)) => {
                tracing::debug!(peer = %remote, "connection closed before it sent anything");
                return;
            }
            Ok(Err(SetupError::Handshake(HandshakeFailure::InvalidPeerId { id, why }))) => {
                refusals.count(Refusal::InvalidEndpointId);
                if let Some(suppressed) = settings.allow_setup_line() {
                    tracing::warn!(
                        peer = %remote,
                        zeek_endpoint = %id,
                        reason = %why,
                        suppressed,
                        "Zeek connection refused: its Broker endpoint id is one a real Broker ignores (not a UUID of version 1 to 5), so it is not a real Broker"
                    );
                }
                return;
            }
            Ok(Err(err)) => {
                refusals.count(Refusal::HandshakeFailed);
                if let Some(suppressed) = settings.allow_setup_line() {
                    tracing::warn!(peer = %remote, reason = %bounded(&report(&err)), suppressed, "Zeek connection closed during the handshake");
                }
                return;
            }
            Err(_) => {
                refusals.count(Refusal::HandshakeTimeout);
                if let Some(suppressed) = settings.allow_setup_line() {
                    tracing::warn!(peer = %remote, timeout = ?settings.handshake_timeout, suppressed, "Zeek connection closed: no handshake in time");
                }
                return;
            }
        },
    };
    let Permits {
        connection: _connection_permit,
        handshake,
    } = permits;
    drop(handshake);
    tracing::info!(
        peer = %remote,
        transport = %kind,
        zeek_endpoint = %peered.peer,
        originator = if peered.originator { "bus" } else { "zeek" },
        filter = ?printable(&peered.peer_filter),
        "Zeek peered"
    );
    let peers = bus.metrics().gauge(&crate::metrics::ZEEK_PEERS, &[]);
    peers.inc();
    let (gate, _) = watch::channel(Gate {
        ready: false,
        filter: peered.peer_filter,
    });
    let (outgoing_tx, outgoing) = mpsc::channel(OUTGOING_QUEUE);
    let mut session = Session {
        remote,
        zeek: peered.peer,
        settings,
        bus,
        connection,
        gate,
        outgoing_tx,
        subscriptions: HashMap::new(),
        held: Vec::new(),
        last_heard: Instant::now(),
        logs: PeerLogs::default(),
    };
    let end = session.run(outgoing, &stop).await;
    session.remove_subscriptions().await;
    peers.dec();
    match end {
        End::Closed => tracing::info!(peer = %remote, "Zeek peer disconnected"),
        End::Stopping => tracing::info!(peer = %remote, "Zeek peer disconnected at shutdown"),
        End::Failed(err) => {
            tracing::warn!(peer = %remote, reason = %report(&err), "Zeek connection closed")
        }
    }
}

fn printable(filter: &Filter) -> Vec<String> {
    filter
        .iter()
        .map(|prefix| String::from_utf8_lossy(prefix).into_owned())
        .collect()
}

/// The Broker handshake as the accepting side, announcing the bus's filter; on a violation,
/// sends the DROP_CONN Broker would send and closes.
async fn handshake(
    connection: &mut Connection,
    own_id: OwnEndpointId,
) -> Result<Peered, SetupError> {
    let filter = vec![
        MANAGE_TOPIC.as_bytes().to_vec(),
        SIGHTING_TOPIC.as_bytes().to_vec(),
    ];
    let (mut handshaker, first) = Handshaker::start(own_id, filter, TcpRole::Acceptor);
    connection.send_handshake(&first).await?;
    loop {
        let Some(payload) = connection.read_frame().await? else {
            return Err(SetupError::Closed);
        };
        match handshaker.receive(&payload) {
            Ok(progress) => {
                connection.send_handshake(&progress.send).await?;
                if let Some(peered) = progress.done {
                    return Ok(peered);
                }
            }
            Err(err) => {
                if let Some(drop) = &err.drop_conn {
                    let _ = connection.send_handshake(std::slice::from_ref(drop)).await;
                }
                connection.close().await;
                return Err(SetupError::Handshake(err.failure));
            }
        }
    }
}

/// A Zeek subscription: its bus subscriber and the task forwarding its indicators.
struct Subscription {
    id: SubscriberId,
    forwarder: JoinHandle<()>,
    /// Since when Zeek's filter has not covered the p2p topic (None while it does).
    uncovered_since: Option<Instant>,
}

impl Subscription {
    async fn end(self, bus: &BusHandle) {
        self.forwarder.abort();
        let _ = bus.remove_subscriber(self.id).await;
    }
}

struct Session {
    remote: SocketAddr,
    zeek: EndpointId,
    settings: Arc<PeerSettings>,
    bus: BusHandle,
    connection: Connection,
    gate: watch::Sender<Gate>,
    outgoing_tx: mpsc::Sender<Envelope>,
    subscriptions: HashMap<String, Subscription>,
    /// Data for Zeek held until the ready pong (acknowledgements).
    held: Vec<Envelope>,
    last_heard: Instant,
    logs: PeerLogs,
}

impl Session {
    async fn run(
        &mut self,
        mut outgoing: mpsc::Receiver<Envelope>,
        stop: &CancellationToken,
    ) -> End {
        if let Err(err) = self
            .send_internal(EnvelopeType::Ping, READY_PING.to_vec())
            .await
        {
            return End::Failed(err.into());
        }
        // Ticks often enough for the p2p timeout too; pings still go every ping_interval.
        let mut ping = tokio::time::interval(
            self.settings
                .ping_interval
                .min(self.settings.p2p_timeout / 2)
                .max(Duration::from_millis(100)),
        );
        let mut last_ping = Instant::now();
        ping.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    self.say_bye().await;
                    return End::Stopping;
                }
                frame = self.connection.read_frame() => match frame {
                    Ok(Some(payload)) => {
                        self.last_heard = Instant::now();
                        if let Err(err) = self.on_frame(&payload).await {
                            return End::Failed(err);
                        }
                    }
                    Ok(None) => return End::Closed,
                    Err(err) => return End::Failed(err.into()),
                },
                // Intel from the subscriptions' forwarders (which wait for the gate).
                Some(envelope) = outgoing.recv() => {
                    if let Err(err) = self.connection.send(&envelope).await {
                        return End::Failed(err.into());
                    }
                }
                _ = ping.tick() => {
                    self.drop_uncovered_subscriptions().await;
                    let silent = self.last_heard.elapsed();
                    if silent > self.settings.ping_interval * 2 {
                        return End::Failed(PeerError::Silent(silent));
                    }
                    if last_ping.elapsed() >= self.settings.ping_interval {
                        last_ping = Instant::now();
                        if let Err(err) = self.send_internal(EnvelopeType::Ping, ALIVE_PING.to_vec()).await {
                            return End::Failed(err.into());
                        }
                    }
                }
            }
        }
    }

    /// A ping, pong or routing update to Zeek.
    async fn send_internal(
        &mut self,
        kind: EnvelopeType,
        payload: Vec<u8>,
    ) -> Result<(), ConnectionError> {
        let envelope = Envelope::internal(kind, self.settings.own_id.id(), self.zeek, payload);
        self.connection.send(&envelope).await
    }

    /// A data message on `topic` from the bus itself (not a forwarder's intel): sent if the
    /// ready pong has arrived, else held until it does.
    async fn send_data(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), ConnectionError> {
        let envelope = Envelope::data(self.settings.own_id.id(), topic, payload);
        if self.gate.borrow().ready {
            self.connection.send(&envelope).await
        } else {
            self.held.push(envelope);
            Ok(())
        }
    }

    /// Broker's graceful unpeering: a BYE ping, then wait (briefly) for its pong.
    async fn say_bye(&mut self) {
        let mut payload = BYE.to_vec();
        payload.extend_from_slice(&rand::rng().random::<u64>().to_ne_bytes());
        if self
            .send_internal(EnvelopeType::Ping, payload.clone())
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::time::timeout(BYE_TIMEOUT, async {
            while let Ok(Some(frame)) = self.connection.read_frame().await {
                if let Ok(envelope) = Envelope::decode(&frame)
                    && envelope.kind == EnvelopeType::Pong
                    && envelope.payload == payload
                {
                    return;
                }
            }
        })
        .await;
        self.connection.close().await;
    }

    async fn on_frame(&mut self, payload: &[u8]) -> Result<(), PeerError> {
        if payload.is_empty() {
            // CAF ignores empty frames after the handshake.
            return Ok(());
        }
        let envelope = Envelope::decode(payload).map_err(PeerError::BadEnvelope)?;
        match envelope.kind {
            EnvelopeType::Ping => {
                let bye = envelope.payload.starts_with(BYE);
                self.send_internal(EnvelopeType::Pong, envelope.payload)
                    .await?;
                if bye {
                    tracing::debug!(peer = %self.remote, "Zeek says BYE");
                }
            }
            EnvelopeType::Pong => {
                if envelope.payload == READY_PING && !self.gate.borrow().ready {
                    self.gate.send_modify(|gate| gate.ready = true);
                    for envelope in std::mem::take(&mut self.held) {
                        self.connection.send(&envelope).await?;
                    }
                }
            }
            EnvelopeType::RoutingUpdate => match envelope.filter() {
                Ok(filter) => {
                    tracing::debug!(peer = %self.remote, filter = %threatbus_core::throttle::bounded_list(&printable(&filter)), "Zeek's subscriptions changed");
                    for (p2p, subscription) in &mut self.subscriptions {
                        if filter_matches(&filter, p2p.as_bytes()) {
                            subscription.uncovered_since = None;
                        } else if subscription.uncovered_since.is_none() {
                            subscription.uncovered_since = Some(Instant::now());
                        }
                    }
                    self.gate.send_modify(|gate| gate.filter = filter);
                }
                Err(err) => return Err(PeerError::BadRoutingUpdate(err)),
            },
            EnvelopeType::Command => {
                tracing::debug!(peer = %self.remote, "ignoring a data-store command");
            }
            EnvelopeType::Data => self.on_data(&envelope.topic, &envelope.payload).await,
        }
        Ok(())
    }

    /// A data message: one event. Anything unexpected is logged and skipped; it never ends
    /// the connection (Zeek may publish other things on topics the bus subscribed to).
    async fn on_data(&mut self, topic: &[u8], payload: &[u8]) {
        let topic = String::from_utf8_lossy(topic);
        let event = match Event::decode(payload) {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(err) => {
                if let Some(suppressed) = self.logs.not_an_event.allow() {
                    tracing::warn!(peer = %self.remote, topic = %bounded(&topic), error = %err, suppressed, "Zeek sent data that is not a Zeek event");
                }
                return;
            }
        };
        let name = mapping::local_name(&self.settings.namespace, &event.name).to_owned();
        match (topic.as_ref(), name.as_str()) {
            (MANAGE_TOPIC, "subscribe") => self.on_subscribe(&event.args).await,
            (MANAGE_TOPIC, "unsubscribe") => self.on_unsubscribe(&event.args).await,
            (SIGHTING_TOPIC, "sighting") => match mapping::sighting_message(&event.args) {
                Ok(message) => {
                    if self.bus.publish(message).await.is_err() {
                        tracing::debug!("the bus is stopping; sighting not published");
                    }
                }
                Err(err) => {
                    if let Some(suppressed) = self.logs.bad_sighting.allow() {
                        tracing::warn!(peer = %self.remote, error = %bounded(&err.to_string()), suppressed, "invalid sighting from Zeek, dropped")
                    }
                }
            },
            _ => {
                if let Some(suppressed) = self.logs.ignored.allow() {
                    tracing::debug!(peer = %self.remote, topic = %bounded(&topic), event = %bounded(&event.name), suppressed, "ignoring an event")
                }
            }
        }
    }

    async fn on_subscribe(&mut self, args: &[Data]) {
        let (topic, snapshot) = match args {
            [topic, Data::Timespan(ns)] if topic.as_str().is_some_and(|t| !t.is_empty()) => {
                (topic.as_str().unwrap_or_default().to_owned(), *ns)
            }
            _ => {
                if let Some(suppressed) = self.logs.bad_subscribe.allow() {
                    tracing::warn!(peer = %self.remote, args = %describe(args), suppressed, "invalid subscribe from Zeek (expected topic: string, snapshot_intel: interval)");
                }
                return;
            }
        };
        if topic.len() > MAX_TOPIC_LENGTH {
            if let Some(suppressed) = self.logs.refused.allow() {
                tracing::warn!(peer = %self.remote, topic = %bounded(&topic), length = topic.len(), limit = MAX_TOPIC_LENGTH, suppressed, "Zeek subscribed to a topic longer than the limit; subscribe refused");
            }
            return;
        }
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            if let Some(suppressed) = self.logs.refused.allow() {
                tracing::warn!(peer = %self.remote, topic = %bounded(&topic), limit = MAX_SUBSCRIPTIONS, suppressed, "Zeek holds too many subscriptions; subscribe refused");
            }
            return;
        }
        let suffix: String = (0..P2P_SUFFIX)
            .map(|_| char::from(rand::rng().random_range(b'a'..=b'z')))
            .collect();
        let p2p = format!("{topic}{suffix}");
        // Subscribe before acknowledging, so that nothing published meanwhile is missed.
        let receiver = match self
            .bus
            .add_subscriber(SubscriberOptions {
                label: format!("zeek {} {p2p}", self.remote),
                snapshot_requests: false,
                ..Default::default()
            })
            .await
        {
            Ok(receiver) => receiver,
            Err(err) => {
                if let Some(suppressed) = self.logs.refused.allow() {
                    tracing::warn!(peer = %self.remote, topic = %bounded(&topic), error = %err, suppressed, "subscribe from Zeek refused");
                }
                return;
            }
        };
        let id = receiver.id;
        let snapshot = (snapshot > 0).then(|| SignedDuration::from_nanos(snapshot));
        if let Err(err) = self.bus.subscribe(id, vec![topic.clone()], snapshot).await {
            tracing::warn!(peer = %self.remote, %topic, error = %err, "subscribing for Zeek failed");
            let _ = self.bus.remove_subscriber(id).await;
            return;
        }
        let ack = Event::new(
            mapping::event_name(&self.settings.namespace, "subscription_acknowledged"),
            vec![Data::string(p2p.as_str())],
        );
        if let Err(err) = self.send_data(MANAGE_TOPIC, ack.to_bytes()).await {
            tracing::debug!(peer = %self.remote, reason = %report(&err), "could not acknowledge");
        }
        let forwarder = tokio::spawn(forward(
            receiver,
            p2p.clone(),
            self.gate.subscribe(),
            self.outgoing_tx.clone(),
            self.settings.clone(),
        ));
        tracing::info!(peer = %self.remote, %topic, %p2p, snapshot = ?snapshot, "Zeek subscribed");
        let covered = filter_matches(&self.gate.borrow().filter, p2p.as_bytes());
        self.subscriptions.insert(
            p2p,
            Subscription {
                id,
                forwarder,
                uncovered_since: (!covered).then(Instant::now),
            },
        );
    }

    async fn on_unsubscribe(&mut self, args: &[Data]) {
        let [p2p] = args else {
            if let Some(suppressed) = self.logs.bad_unsubscribe.allow() {
                tracing::warn!(peer = %self.remote, args = %describe(args), suppressed, "invalid unsubscribe from Zeek (expected one p2p topic)");
            }
            return;
        };
        let p2p = p2p.as_str().unwrap_or_default();
        match self.subscriptions.remove(p2p) {
            Some(subscription) => {
                subscription.end(&self.bus).await;
                tracing::info!(peer = %self.remote, %p2p, "Zeek unsubscribed");
            }
            // Zeek unsubscribes its old p2p topic whenever it (re)peers, and at exit even when
            // it has none.
            None => {
                if let Some(suppressed) = self.logs.ignored.allow() {
                    tracing::debug!(peer = %self.remote, p2p = %bounded(p2p), suppressed, "unsubscribe for an unknown p2p topic")
                }
            }
        }
    }

    /// Removes the subscriptions whose p2p topic Zeek has not covered for `p2p_timeout`:
    /// nobody reads them, and their bus queues would hold intel for nobody.
    async fn drop_uncovered_subscriptions(&mut self) {
        let timeout = self.settings.p2p_timeout;
        let stale: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| {
                s.uncovered_since
                    .is_some_and(|since| since.elapsed() >= timeout)
            })
            .map(|(p2p, _)| p2p.clone())
            .collect();
        for p2p in stale {
            if let Some(subscription) = self.subscriptions.remove(&p2p) {
                subscription.end(&self.bus).await;
                tracing::warn!(
                    peer = %self.remote,
                    %p2p,
                    timeout = ?timeout,
                    "Zeek did not subscribe to its p2p topic in time; subscription removed"
                );
            }
        }
    }

    async fn remove_subscriptions(&mut self) {
        for (_, subscription) in std::mem::take(&mut self.subscriptions) {
            subscription.end(&self.bus).await;
        }
    }
}

/// Turns one subscription's indicators into `intel` frames for Zeek, waiting whenever Zeek
/// does not (yet) receive its p2p topic: the bus queue holds what waits.
async fn forward(
    mut receiver: threatbus_core::SubscriberReceiver,
    p2p: String,
    mut gate: watch::Receiver<Gate>,
    outgoing: mpsc::Sender<Envelope>,
    settings: Arc<PeerSettings>,
) {
    loop {
        let open = gate
            .wait_for(|gate| gate.ready && filter_matches(&gate.filter, p2p.as_bytes()))
            .await
            .is_ok();
        if !open {
            return;
        }
        let Some(message) = receiver.recv().await else {
            return;
        };
        let Body::Indicator(indicator) = message.body() else {
            continue;
        };
        let event = match mapping::intel_event(indicator, &settings.namespace) {
            Ok(event) => event,
            Err(why) => {
                match why {
                    NotSent::NotAPointIoc => {
                        tracing::debug!(id = %indicator.id.as_str(), "not sent to Zeek: not a point IoC")
                    }
                    NotSent::UnmappedPath(path) | NotSent::NotAString(path) => {
                        tracing::debug!(id = %indicator.id.as_str(), %path, "not sent to Zeek: no Zeek intel type for it")
                    }
                }
                continue;
            }
        };
        let envelope = Envelope::data(settings.own_id.id(), &p2p, event.to_bytes());
        if outgoing.send(envelope).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that prints its cause itself, as OpenSSL's do.
    #[derive(Debug, Error)]
    #[error("{0}")]
    struct Echo(#[source] std::io::Error);

    #[test]
    fn reports_name_every_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let read: PeerError = ConnectionError::Read(io()).into();
        assert_eq!(report(&read), "reading: reset by peer");
        let write = SetupError::Connection(ConnectionError::Write(io()));
        assert_eq!(report(&write), "writing: reset by peer");
        let echoed = std::io::Error::other(Echo(io()));
        assert_eq!(
            report(&SetupError::Connection(ConnectionError::Read(echoed))),
            "reading: reset by peer"
        );
        assert_eq!(
            report(&PeerError::BadEnvelope(DecodeError::UnknownEnvelopeType(9))),
            "bad envelope: unknown envelope type 9"
        );
        assert_eq!(
            report(&PeerError::Silent(Duration::from_millis(61_400))),
            "no answer for 61s (dead peer)"
        );
        assert_eq!(
            report(&SetupError::Accept(AcceptError::PlainNotAllowed)),
            "a plain TCP connection, but allow_plain is false"
        );
        assert_eq!(
            report(&SetupError::Handshake(HandshakeFailure::Protocol(
                "unexpected HELLO while in Done".into()
            ))),
            "unexpected HELLO while in Done"
        );
        assert_eq!(report(&SetupError::Closed), "closed during the handshake");
    }
}
