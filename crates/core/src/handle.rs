//! The handle apps hold: publish, subscribe, unsubscribe and the app's own counters, all as
//! requests to the router (or, for publishing, to the intake).

use std::sync::Arc;

use jiff::SignedDuration;
use tokio::sync::{mpsc, oneshot};

use crate::BusError;
use crate::command::Command;
use crate::intake::Outbound;
use crate::message::Message;
use crate::metrics::{self, Counter, Gauge, Registry};
use crate::queue::{RequesterRoom, SubscriberId, SubscriberOptions, SubscriberReceiver};

/// What apps use to talk to the core. Cheap to clone. The `blocking_*` variants are for
/// plugin threads outside the async runtime (e.g. ZeroMQ socket threads); they must not be
/// called from async code.
///
/// Each app gets its own handle, which counts what the app publishes and rejects under the
/// app's name and registers the app's subscribers under it.
#[derive(Clone)]
pub struct BusHandle {
    router: mpsc::Sender<Command>,
    outbound: Outbound,
    metrics: Arc<Registry>,
    app: Arc<AppMeters>,
}

/// The metrics of the app a handle belongs to.
struct AppMeters {
    name: &'static str,
    received: [Counter; 4],
    rejected: Counter,
    ready: Gauge,
}

impl AppMeters {
    fn new(metrics: &Registry, name: &'static str) -> Self {
        Self {
            name,
            received: metrics.kind_counters(&metrics::APP_RECEIVED, &[name]),
            rejected: metrics.counter(&metrics::APP_REJECTED, &[name]),
            ready: metrics.gauge(&metrics::READY, &[&format!("app:{name}")]),
        }
    }

    /// Meters that count nowhere, for the core's own handle (it never publishes).
    fn unregistered(name: &'static str) -> Self {
        Self {
            name,
            received: Default::default(),
            rejected: Counter::default(),
            ready: Gauge::default(),
        }
    }
}

impl BusHandle {
    /// The core's own handle (it never publishes; its meters count nowhere).
    pub(crate) fn core(
        router: mpsc::Sender<Command>,
        outbound: Outbound,
        metrics: Arc<Registry>,
    ) -> Self {
        Self {
            router,
            outbound,
            metrics,
            app: Arc::new(AppMeters::unregistered("core")),
        }
    }

    /// A handle for a service (run like an app, counted as none): its name only labels its
    /// subscribers.
    pub(crate) fn for_service(&self, name: &'static str) -> Self {
        Self {
            app: Arc::new(AppMeters::unregistered(name)),
            ..self.clone()
        }
    }

    /// Publishes a message to the bus (through the backbone to every instance). Waits while the
    /// bus is at capacity.
    pub async fn publish(&self, message: Message) -> Result<(), BusError> {
        self.count_published(&message);
        self.outbound.send(message).await
    }

    /// [`BusHandle::publish`] for threads outside the runtime.
    pub fn blocking_publish(&self, message: Message) -> Result<(), BusError> {
        self.count_published(&message);
        self.outbound.blocking_send(message)
    }

    fn count_published(&self, message: &Message) {
        self.app.received[message.body().topic_index()].inc();
    }

    /// Records that the app dropped bad input (or input its tool refused).
    pub fn record_rejected_input(&self) {
        self.app.rejected.inc();
    }

    /// Marks the app ready (bound, connected or started) or not, for `/ready`.
    pub fn set_ready(&self, ready: bool) {
        self.app.ready.set(i64::from(ready));
    }

    /// The metrics registry, for metrics specific to a plugin.
    pub fn metrics(&self) -> &Arc<Registry> {
        &self.metrics
    }

    /// A handle for the app `name`: what it publishes and its subscribers count under that name.
    pub fn for_app(&self, name: &'static str) -> Self {
        Self {
            app: Arc::new(AppMeters::new(&self.metrics, name)),
            ..self.clone()
        }
    }

    /// Brings the gauges read at scrape time (subscriber queue depths) up to date.
    pub async fn refresh_gauges(&self) -> Result<(), BusError> {
        self.request(|reply| Command::RefreshGauges { reply }).await
    }

    /// Creates a subscriber with an empty topic set and returns its queue.
    pub async fn add_subscriber(
        &self,
        options: SubscriberOptions,
    ) -> Result<SubscriberReceiver, BusError> {
        let app = self.app.name;
        self.request(|reply| Command::AddSubscriber {
            options,
            app,
            reply,
        })
        .await?
    }

    /// [`BusHandle::add_subscriber`] for threads outside the runtime.
    pub fn blocking_add_subscriber(
        &self,
        options: SubscriberOptions,
    ) -> Result<SubscriberReceiver, BusError> {
        let app = self.app.name;
        self.blocking_request(|reply| Command::AddSubscriber {
            options,
            app,
            reply,
        })?
    }

    /// Subscribes `id` to every topic in `topics` (prefix match). With a non-zero `snapshot`,
    /// asks every app that answers snapshots for data of that age for the message types the
    /// topics name; the answers reach only this subscriber. Returns the snapshot id if a
    /// snapshot was requested.
    pub async fn subscribe(
        &self,
        id: SubscriberId,
        topics: Vec<String>,
        snapshot: Option<SignedDuration>,
    ) -> Result<Option<String>, BusError> {
        self.request(|reply| Command::Subscribe {
            id,
            topics,
            snapshot,
            reply,
        })
        .await?
    }

    /// [`BusHandle::subscribe`] for threads outside the runtime.
    pub fn blocking_subscribe(
        &self,
        id: SubscriberId,
        topics: Vec<String>,
        snapshot: Option<SignedDuration>,
    ) -> Result<Option<String>, BusError> {
        self.blocking_request(|reply| Command::Subscribe {
            id,
            topics,
            snapshot,
            reply,
        })?
    }

    /// Removes `topics` from the subscriber's topic set.
    pub async fn unsubscribe(&self, id: SubscriberId, topics: Vec<String>) -> Result<(), BusError> {
        self.request(|reply| Command::Unsubscribe { id, topics, reply })
            .await?
    }

    /// [`BusHandle::unsubscribe`] for threads outside the runtime.
    pub fn blocking_unsubscribe(
        &self,
        id: SubscriberId,
        topics: Vec<String>,
    ) -> Result<(), BusError> {
        self.blocking_request(|reply| Command::Unsubscribe { id, topics, reply })?
    }

    /// Says whether anyone reads what the subscriber's queue would carry (an app that knows its
    /// outside listeners, e.g. the ZeroMQ app from its XPUB socket). While `false`, the router
    /// queues nothing for the subscriber (neither routed messages nor snapshot requests and
    /// answers), so a subscription nobody reads costs neither memory nor work. Subscribers
    /// start listening.
    pub async fn set_listening(&self, id: SubscriberId, listening: bool) -> Result<(), BusError> {
        self.request(|reply| Command::SetListening {
            id,
            listening,
            reply,
        })
        .await?
    }

    /// Hands answers to snapshot `snapshot_id` straight to its requester on this instance (no
    /// envelopes, no backbone), counted like envelope contents. `Ok(None)` when the requester
    /// is gone or the id unknown; else `Ok(Some(rest))`, the bodies its queue (or the memory
    /// budget) had no room for, in order: send them again once
    /// [`BusHandle::blocking_snapshot_room`] says there is room. For threads outside the
    /// runtime.
    pub fn blocking_answer_snapshot(
        &self,
        snapshot_id: &str,
        bodies: Vec<Message>,
    ) -> Result<Option<Vec<Message>>, BusError> {
        let snapshot_id = snapshot_id.to_owned();
        self.blocking_request(|reply| Command::SnapshotAnswers {
            snapshot_id,
            bodies,
            reply,
        })
    }

    /// Free slots in the queue of the subscriber that asked for snapshot `snapshot_id` (and who
    /// it is), so that an answer of many objects can wait for the requester instead of
    /// overflowing its queue; `None` when that requester is not (or no longer) a subscriber of
    /// this instance. For threads outside the runtime.
    pub fn blocking_snapshot_room(
        &self,
        snapshot_id: &str,
    ) -> Result<Option<RequesterRoom>, BusError> {
        let snapshot_id = snapshot_id.to_owned();
        self.blocking_request(|reply| Command::SnapshotRoom { snapshot_id, reply })
    }

    /// Removes the subscriber with all its topics and pending snapshots; its queue closes.
    pub async fn remove_subscriber(&self, id: SubscriberId) -> Result<(), BusError> {
        self.request(|reply| Command::RemoveSubscriber { id, reply })
            .await?
    }

    /// [`BusHandle::remove_subscriber`] for threads outside the runtime.
    pub fn blocking_remove_subscriber(&self, id: SubscriberId) -> Result<(), BusError> {
        self.blocking_request(|reply| Command::RemoveSubscriber { id, reply })?
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, BusError> {
        let (reply, answer) = oneshot::channel();
        self.router
            .send(make(reply))
            .await
            .map_err(|_| BusError::Stopped)?;
        answer.await.map_err(|_| BusError::Stopped)
    }

    fn blocking_request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, BusError> {
        let (reply, answer) = oneshot::channel();
        self.router
            .blocking_send(make(reply))
            .map_err(|_| BusError::Stopped)?;
        answer.blocking_recv().map_err(|_| BusError::Stopped)
    }

    /// Messages waiting anywhere in the core: towards the backbone, at the router, in
    /// subscriber queues.
    pub(crate) async fn in_flight(&self) -> usize {
        let channel = |capacity: usize, max: usize| max - capacity;
        let queued = self
            .request(|reply| Command::QueuedMessages { reply })
            .await
            .unwrap_or(0);
        self.outbound.queued()
            + channel(self.router.capacity(), self.router.max_capacity())
            + queued
    }
}
