//! The router owns the subscription table and the snapshot bookkeeping and is the only place
//! that decides who receives what.
//!
//! It is one task fed by one bounded channel, so subscribe, unsubscribe and deliveries apply in
//! the order they were issued and the hot path takes no lock. For each of the four routing
//! topics it keeps the sorted list of subscribers whose subscriptions match, so routing a
//! message costs one pointer copy per receiving subscriber. A change to one subscriber's topics
//! updates only that subscriber's place in the four lists: its cost depends on that
//! subscriber's topics, not on how many topics other subscribers hold.
//!
//! Deviations from upstream (see docs/compatibility.md): a subscriber receives a message once
//! even if several of its topics match; one subscribe call issues at most one snapshot id; the
//! requester of a snapshot is recorded before its request is sent and never receives its own
//! request; snapshot ids expire.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use jiff::SignedDuration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::budget::{Admission, MemoryBudget};
use crate::catchup::Lag;
use crate::command::Command;
use crate::config::{BusConfig, WhenFull};
use crate::intake::Outbound;
use crate::message::{Body, Message, MessageType, SnapshotRequest};
use crate::metrics::{self, Counter, Gauge, Registry};
use crate::queue::{Offer, RequesterRoom, SubscriberId, SubscriberQueue};
use crate::throttle::LogThrottle;
use crate::{BusError, topic};

mod catch_up;

use catch_up::CatchUp;

struct Subscriber {
    queue: SubscriberQueue,
    topics: BTreeSet<String>,
    /// Someone reads this queue; while false, nothing is queued for it.
    listening: bool,
    /// The app it belongs to, and that app's meters.
    app: &'static str,
    meters: Arc<AppQueueMeters>,
    /// Whether it is behind (catch-up from the store).
    lag: Lag,
}

/// The metrics of one app's subscribers (shared by all of them).
struct AppQueueMeters {
    sent: [Counter; 4],
    dropped_full: Counter,
    dropped_budget: Counter,
    dropped_gone: Counter,
    subscribers: Gauge,
    queued: Gauge,
    behind: Gauge,
    replayed: Counter,
    dropped_timeout: Counter,
    dropped_limit: Counter,
    dropped_not_stored: Counter,
}

impl AppQueueMeters {
    fn new(registry: &Registry, app: &str) -> Self {
        Self {
            sent: registry.kind_counters(&metrics::APP_SENT, &[app]),
            dropped_full: registry.counter(&metrics::DROPPED, &[app, "queue_full"]),
            dropped_budget: registry.counter(&metrics::DROPPED, &[app, "memory_budget"]),
            dropped_gone: registry.counter(&metrics::DROPPED, &[app, "subscriber_gone"]),
            subscribers: registry.gauge(&metrics::SUBSCRIBERS, &[app]),
            queued: registry.gauge(&metrics::QUEUED, &[app]),
            behind: registry.gauge(&metrics::BEHIND, &[app]),
            replayed: registry.counter(&metrics::REPLAYED, &[app]),
            dropped_timeout: registry.counter(&metrics::DROPPED, &[app, "catch_up_timeout"]),
            dropped_limit: registry.counter(&metrics::DROPPED, &[app, "catch_up_limit"]),
            dropped_not_stored: registry.counter(&metrics::DROPPED, &[app, "not_stored"]),
        }
    }
}

/// The router's own metrics.
struct RouterMeters {
    registry: Arc<Registry>,
    /// Per app, taken once.
    apps: HashMap<&'static str, Arc<AppQueueMeters>>,
    received: [Counter; 4],
    snapshot_requests: HashMap<MessageType, Counter>,
    snapshot_answers: Counter,
    snapshot_unknown: Counter,
    /// Drops for a subscriber that was gone before its app was known.
    dropped_gone: Counter,
}

impl RouterMeters {
    fn new(registry: Arc<Registry>, backbone: &str) -> Self {
        let requests = [MessageType::Indicator, MessageType::Sighting]
            .map(|ty| {
                let kind = metrics::KINDS[topic_index_of(ty)];
                (ty, registry.counter(&metrics::SNAPSHOT_REQUESTS, &[kind]))
            })
            .into_iter()
            .collect();
        Self {
            received: registry.kind_counters(&metrics::BACKBONE_RECEIVED, &[backbone]),
            snapshot_requests: requests,
            snapshot_answers: registry.counter(&metrics::SNAPSHOT_ANSWERS, &[]),
            snapshot_unknown: registry.counter(&metrics::SNAPSHOT_UNKNOWN, &[]),
            dropped_gone: registry.counter(&metrics::DROPPED, &["core", "subscriber_gone"]),
            apps: HashMap::new(),
            registry,
        }
    }

    fn app(&mut self, app: &'static str) -> Arc<AppQueueMeters> {
        let registry = &self.registry;
        self.apps
            .entry(app)
            .or_insert_with(|| Arc::new(AppQueueMeters::new(registry, app)))
            .clone()
    }
}

/// The routing topic index of indicator and sighting messages (as `topic::ALL`).
fn topic_index_of(ty: MessageType) -> usize {
    match ty {
        MessageType::Indicator => 0,
        MessageType::Sighting => 1,
    }
}

struct PendingSnapshot {
    requester: SubscriberId,
    expires: Instant,
}

/// Which message types a snapshot for `topic` asks for (upstream spec §1.5).
pub fn snapshot_types(topic: &str) -> &'static [MessageType] {
    if topic == "stix2" || topic == "stix2/" {
        &[MessageType::Indicator, MessageType::Sighting]
    } else if topic.ends_with("sighting") {
        &[MessageType::Sighting]
    } else if topic.ends_with("indicator") {
        &[MessageType::Indicator]
    } else {
        &[]
    }
}

pub(crate) struct Router {
    config: BusConfig,
    meters: RouterMeters,
    next_id: u64,
    subscribers: HashMap<SubscriberId, Subscriber>,
    /// For each routing topic (index as `topic::ALL`), the subscribers that receive it.
    routes: [Vec<SubscriberId>; 4],
    /// Subscribers that receive every snapshot request but their own.
    snapshot_listeners: Vec<SubscriberId>,
    pending: HashMap<String, PendingSnapshot>,
    /// Where snapshot requests go: to the backbone, like any published message.
    outbound: Outbound,
    /// Reused buffer of delivery targets.
    targets: Vec<SubscriberId>,
    /// What everything queued for subscribers may take.
    budget: Arc<MemoryBudget>,
    /// The average queue depth, recomputed at most every [`AVERAGE_EVERY`], and when it was.
    average_depth: f64,
    average_at: Option<Instant>,
    budget_log: LogThrottle,
    /// Catch-up from the store, when there is one.
    catch_up: Option<CatchUp>,
}

/// Why a message could not be queued for a subscriber.
enum Placed {
    Queued,
    Budget,
    Full,
    Gone,
}

/// How often the average queue depth is recomputed (what "holding the most" is measured
/// against).
const AVERAGE_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

impl Router {
    pub(crate) fn new(
        config: BusConfig,
        registry: Arc<Registry>,
        backbone: &str,
        outbound: Outbound,
    ) -> Self {
        let budget = MemoryBudget::new(config.memory_budget);
        registry
            .gauge(&metrics::MEMORY_BUDGET, &[])
            .set(i64::try_from(config.memory_budget).unwrap_or(i64::MAX));
        Self {
            budget,
            average_depth: 0.0,
            average_at: None,
            budget_log: LogThrottle::default(),
            config,
            meters: RouterMeters::new(registry, backbone),
            next_id: 1,
            subscribers: HashMap::new(),
            routes: Default::default(),
            snapshot_listeners: Vec::new(),
            pending: HashMap::new(),
            outbound,
            targets: Vec::new(),
            catch_up: None,
        }
    }

    /// Serves commands until `stop` fires or every sender is gone.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        stop: CancellationToken,
    ) {
        let mut sweep = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                command = commands.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                _ = sweep.tick() => self.sweep(),
            }
        }
        for (id, subscriber) in &mut self.subscribers {
            subscriber.queue.report_drops(*id, true);
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Route(message) => self.route(&message).await,
            Command::AddSubscriber {
                options,
                app,
                reply,
            } => {
                if self.subscribers.len() >= self.config.max_subscribers {
                    let _ = reply.send(Err(BusError::TooManySubscribers(
                        self.config.max_subscribers,
                    )));
                    return;
                }
                let id = SubscriberId(self.next_id);
                self.next_id += 1;
                tracing::debug!(subscriber = %id, app, label = %options.label, "subscriber added");
                let meters = self.meters.app(app);
                meters.subscribers.inc();
                if options.snapshot_requests {
                    self.snapshot_listeners.push(id);
                }
                let (queue, receiver) = SubscriberQueue::new(
                    id,
                    options,
                    self.config.queue_capacity,
                    self.budget.clone(),
                );
                self.subscribers.insert(
                    id,
                    Subscriber {
                        queue,
                        topics: BTreeSet::new(),
                        listening: true,
                        app,
                        meters,
                        lag: Lag::Live,
                    },
                );
                if reply.send(Ok(receiver)).is_err() {
                    self.remove(id);
                }
            }
            Command::Subscribe {
                id,
                topics,
                snapshot,
                reply,
            } => {
                let _ = reply.send(self.subscribe(id, topics, snapshot));
            }
            Command::Unsubscribe { id, topics, reply } => {
                let result = match self.subscribers.get_mut(&id) {
                    Some(subscriber) => {
                        for topic in &topics {
                            subscriber.topics.remove(topic);
                        }
                        tracing::debug!(subscriber = %id, topics = %crate::throttle::bounded_list(&topics), "unsubscribed");
                        self.update_routes(id);
                        Ok(())
                    }
                    None => Err(BusError::UnknownSubscriber(id.0)),
                };
                let _ = reply.send(result);
            }
            Command::SetListening {
                id,
                listening,
                reply,
            } => {
                let result = match self.subscribers.get_mut(&id) {
                    Some(subscriber) => {
                        if subscriber.listening != listening {
                            subscriber.listening = listening;
                            tracing::debug!(subscriber = %id, label = %subscriber.queue.options.label, listening, "subscriber listening changed");
                            self.update_routes(id);
                        }
                        Ok(())
                    }
                    None => Err(BusError::UnknownSubscriber(id.0)),
                };
                let _ = reply.send(result);
            }
            Command::RemoveSubscriber { id, reply } => {
                let result = if self.remove(id) {
                    Ok(())
                } else {
                    Err(BusError::UnknownSubscriber(id.0))
                };
                let _ = reply.send(result);
            }
            Command::SnapshotAnswers {
                snapshot_id,
                bodies,
                reply,
            } => {
                let requester = self
                    .pending
                    .get(&snapshot_id)
                    .filter(|pending| pending.expires > Instant::now())
                    .map(|pending| pending.requester)
                    .filter(|id| self.subscribers.get(id).is_some_and(|s| s.listening));
                let Some(requester) = requester else {
                    let _ = reply.send(None);
                    return;
                };
                // What does not fit now goes back to the answerer, which waits for room: an
                // answer is never dropped for a full queue (nor overtaken by catch-up).
                let mut bodies = bodies.into_iter();
                let mut rest = Vec::new();
                while let Some(body) = bodies.next() {
                    match self.place(requester, &body).await {
                        Placed::Queued => self.meters.snapshot_answers.inc(),
                        Placed::Gone => {
                            self.gone(requester);
                            let _ = reply.send(None);
                            return;
                        }
                        Placed::Full | Placed::Budget => {
                            rest.push(body);
                            rest.extend(bodies);
                            break;
                        }
                    }
                }
                let _ = reply.send(Some(rest));
            }
            Command::SnapshotRoom { snapshot_id, reply } => {
                let room = self
                    .pending
                    .get(&snapshot_id)
                    .filter(|pending| pending.expires > Instant::now())
                    .and_then(|pending| self.subscribers.get(&pending.requester))
                    .filter(|subscriber| subscriber.listening)
                    .map(|subscriber| RequesterRoom {
                        free: subscriber.queue.room(),
                        requester: format!("{} {}", subscriber.app, subscriber.queue.options.label),
                    });
                let _ = reply.send(room);
            }
            Command::QueuedMessages { reply } => {
                let queued: usize = self.subscribers.values().map(|s| s.queue.depth()).sum();
                let end = self.catch_up.as_ref().map_or(0, |c| c.journal.end());
                let owed: u64 = self
                    .subscribers
                    .values()
                    .filter_map(|s| match &s.lag {
                        Lag::Behind(behind) => Some(end.saturating_sub(behind.cursor)),
                        _ => None,
                    })
                    .sum();
                let _ =
                    reply.send(queued.saturating_add(usize::try_from(owed).unwrap_or(usize::MAX)));
            }
            Command::CatchUpWork { reply } => {
                let _ = reply.send(self.next_work());
            }
            Command::CatchUpReplay { replay, reply } => {
                self.replay(replay);
                let _ = reply.send(());
            }
            Command::RefreshGauges { reply } => {
                let mut depths: HashMap<&'static str, usize> = HashMap::new();
                for subscriber in self.subscribers.values() {
                    *depths.entry(subscriber.app).or_default() += subscriber.queue.depth();
                }
                for (app, meters) in &self.meters.apps {
                    let depth = depths.get(app).copied().unwrap_or(0);
                    meters.queued.set(i64::try_from(depth).unwrap_or(i64::MAX));
                }
                self.meters
                    .registry
                    .gauge(&metrics::MEMORY_USED, &[])
                    .set(i64::try_from(self.budget.used()).unwrap_or(i64::MAX));
                let journal = self.catch_up.as_ref().map_or(0, |c| c.journal.len());
                self.meters
                    .registry
                    .gauge(&metrics::CATCH_UP_JOURNAL, &[])
                    .set(i64::try_from(journal).unwrap_or(i64::MAX));
                let _ = reply.send(());
            }
        }
    }

    fn subscribe(
        &mut self,
        id: SubscriberId,
        topics: Vec<String>,
        snapshot: Option<SignedDuration>,
    ) -> Result<Option<String>, BusError> {
        let subscriber = self
            .subscribers
            .get_mut(&id)
            .ok_or(BusError::UnknownSubscriber(id.0))?;
        let mut types: Vec<MessageType> = Vec::new();
        for topic in &topics {
            for ty in snapshot_types(topic) {
                if !types.contains(ty) {
                    types.push(*ty);
                }
            }
        }
        tracing::debug!(subscriber = %id, label = %subscriber.queue.options.label, topics = %crate::throttle::bounded_list(&topics), "subscribed");
        subscriber.topics.extend(topics);
        self.update_routes(id);

        let Some(duration) = snapshot.filter(|d| !d.is_zero()) else {
            return Ok(None);
        };
        if types.is_empty() {
            return Ok(None);
        }
        self.sweep();
        let snapshot_id = uuid::Uuid::new_v4().to_string();
        self.pending.insert(
            snapshot_id.clone(),
            PendingSnapshot {
                requester: id,
                expires: Instant::now() + self.config.snapshot_expiry,
            },
        );
        for snapshot_type in types {
            let request = Message::new(Body::SnapshotRequest(SnapshotRequest {
                snapshot_type,
                snapshot_id: snapshot_id.clone(),
                snapshot: duration,
            }));
            if let Some(counter) = self.meters.snapshot_requests.get(&snapshot_type) {
                counter.inc();
            }
            tracing::info!(subscriber = %id, %snapshot_id, ?snapshot_type, seconds = duration.as_secs(), "requesting snapshot");
            // Not awaited here: the backbone may be waiting for this very router to take a
            // message, and awaiting would deadlock the two.
            let outbound = self.outbound.clone();
            tokio::spawn(async move {
                if outbound.send(request).await.is_err() {
                    tracing::warn!("snapshot request not sent: the bus is shutting down");
                }
            });
        }
        Ok(Some(snapshot_id))
    }

    fn remove(&mut self, id: SubscriberId) -> bool {
        self.leave_behind(id);
        let Some(mut subscriber) = self.subscribers.remove(&id) else {
            return false;
        };
        subscriber.queue.report_drops(id, true);
        subscriber.meters.subscribers.dec();
        tracing::debug!(subscriber = %id, label = %subscriber.queue.options.label, "subscriber removed");
        self.snapshot_listeners.retain(|listener| *listener != id);
        self.pending.retain(|_, pending| pending.requester != id);
        self.update_routes(id);
        true
    }

    /// Puts `id` into the routes its topics match and takes it out of the others (all of them
    /// once it is gone or while nobody listens to it).
    fn update_routes(&mut self, id: SubscriberId) {
        let topics = self
            .subscribers
            .get(&id)
            .filter(|s| s.listening)
            .map(|s| &s.topics);
        for (index, routing_topic) in topic::ALL.iter().enumerate() {
            let receives = topics
                .is_some_and(|topics| topics.iter().any(|t| topic::matches(t, routing_topic)));
            let route = &mut self.routes[index];
            match (route.binary_search(&id), receives) {
                (Ok(position), false) => {
                    route.remove(position);
                }
                (Err(position), true) => route.insert(position, id),
                _ => {}
            }
        }
        let mask = self.mask_of(id);
        if let (Some(catch_up), Some(subscriber)) = (&self.catch_up, self.subscribers.get_mut(&id))
            && let Lag::Behind(behind) = &mut subscriber.lag
        {
            behind.set_mask(catch_up.journal.end(), mask);
        }
    }

    /// The Indicator and Sighting routes `id` is in, one bit per `topic::ALL` index.
    fn mask_of(&self, id: SubscriberId) -> u8 {
        let mut mask = 0;
        for (index, route) in self.routes.iter().take(2).enumerate() {
            if route.binary_search(&id).is_ok() {
                mask |= 1 << index;
            }
        }
        mask
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        let before = self.pending.len();
        self.pending.retain(|_, pending| pending.expires > now);
        let expired = before - self.pending.len();
        if expired > 0 {
            tracing::debug!(expired, "forgot expired snapshot ids");
        }
    }

    async fn route(&mut self, message: &Message) {
        self.meters.received[message.body().topic_index()].inc();
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        targets.extend_from_slice(&self.routes[message.body().topic_index()]);
        let mut requester_delivery = None;
        match message.body() {
            Body::SnapshotRequest(request) => {
                let requester = self.pending.get(&request.snapshot_id).map(|p| p.requester);
                for listener in &self.snapshot_listeners {
                    let Some(subscriber) = self.subscribers.get(listener) else {
                        continue;
                    };
                    let local_only = subscriber.queue.options.local_snapshot_requests_only;
                    if subscriber.listening
                        && Some(*listener) != requester
                        && !(local_only && requester.is_none())
                        && !targets.contains(listener)
                    {
                        targets.push(*listener);
                    }
                }
            }
            Body::SnapshotEnvelope(envelope) => match self.pending.get(&envelope.snapshot_id) {
                Some(pending) if pending.expires > Instant::now() => {
                    let listening = self
                        .subscribers
                        .get(&pending.requester)
                        .is_some_and(|s| s.listening);
                    if listening {
                        requester_delivery = Some((pending.requester, envelope.body.clone()));
                    }
                }
                _ => {
                    self.meters.snapshot_unknown.inc();
                    tracing::debug!(snapshot_id = %envelope.snapshot_id, "envelope for a snapshot id this instance did not request (or that expired)");
                }
            },
            Body::Indicator(_) | Body::Sighting(_) => {}
        }
        let stix = matches!(message.body(), Body::Indicator(_) | Body::Sighting(_));
        if stix && self.catch_up.is_some() {
            self.route_with_catch_up(&targets, message).await;
        } else {
            for id in &targets {
                self.offer(*id, message).await;
            }
        }
        if let Some((requester, body)) = requester_delivery
            && self.offer(requester, &body).await
        {
            self.meters.snapshot_answers.inc();
        }
        self.targets = targets;
    }

    /// The average subscriber queue depth, at most [`AVERAGE_EVERY`] old.
    fn average_depth(&mut self) -> f64 {
        let stale = self
            .average_at
            .is_none_or(|at| at.elapsed() >= AVERAGE_EVERY);
        if stale && !self.subscribers.is_empty() {
            let total: usize = self.subscribers.values().map(|s| s.queue.depth()).sum();
            self.average_depth = total as f64 / self.subscribers.len() as f64;
            self.average_at = Some(Instant::now());
        }
        self.average_depth
    }

    /// Whether the budget lets `message` be queued for `id` now; with `block`, waits until it
    /// does (a subscriber reads, or lets go of what it holds).
    async fn admit(&mut self, id: SubscriberId, message: &Message) -> Admission {
        loop {
            // The average only matters while the budget is tight: no clock read per message
            // otherwise.
            let average = if self.budget.is_tight() {
                self.average_depth()
            } else {
                f64::INFINITY
            };
            let Some(subscriber) = self.subscribers.get(&id) else {
                return Admission::Queue;
            };
            let depth = subscriber.queue.depth();
            let policy = subscriber
                .queue
                .options
                .when_full
                .unwrap_or(self.config.when_full);
            let admission = self.budget.admit(message, depth, average);
            if admission == Admission::Queue || policy == WhenFull::DropNewest {
                return admission;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Queues `message` for `id` if the budget and its queue take it (waiting for both with
    /// `block`); counts what was queued, not what was not.
    async fn place(&mut self, id: SubscriberId, message: &Message) -> Placed {
        let admission = self.admit(id, message).await;
        let Some(subscriber) = self.subscribers.get_mut(&id) else {
            return Placed::Gone;
        };
        if admission != Admission::Queue {
            return Placed::Budget;
        }
        match subscriber.queue.try_queue(message) {
            Offer::Delivered => {
                subscriber.meters.sent[message.body().topic_index()].inc();
                Placed::Queued
            }
            Offer::DroppedFull => {
                // The copy charged on admission was not queued.
                self.budget.release_copies(1);
                Placed::Full
            }
            Offer::Gone => {
                self.budget.release_copies(1);
                Placed::Gone
            }
        }
    }

    /// `id`'s reader went away while a message was offered to it.
    fn gone(&mut self, id: SubscriberId) {
        match self.subscribers.get(&id) {
            Some(subscriber) => {
                subscriber.meters.dropped_gone.inc();
                self.remove(id);
            }
            None => self.meters.dropped_gone.inc(),
        }
    }

    /// Offers `message` to one subscriber; true if it was queued.
    async fn offer(&mut self, id: SubscriberId, message: &Message) -> bool {
        let admission = self.admit(id, message).await;
        let Some(subscriber) = self.subscribers.get_mut(&id) else {
            self.meters.dropped_gone.inc();
            return false;
        };
        if admission != Admission::Queue {
            subscriber.meters.dropped_budget.inc();
            if let Some(suppressed) = self.budget_log.allow() {
                tracing::warn!(
                    subscriber = %id,
                    label = %subscriber.queue.options.label,
                    app = subscriber.app,
                    used = self.budget.used(),
                    limit = self.budget.limit(),
                    queued = subscriber.queue.depth(),
                    heavy_holder = admission == Admission::DropHeavyHolder,
                    suppressed,
                    "memory budget (bus.memory_budget) reached: message dropped for this subscriber"
                );
            }
            return false;
        }
        let policy = subscriber
            .queue
            .options
            .when_full
            .unwrap_or(self.config.when_full);
        match subscriber.queue.offer(id, message, policy).await {
            Offer::Delivered => {
                subscriber.meters.sent[message.body().topic_index()].inc();
                true
            }
            Offer::DroppedFull => {
                // The copy charged on admission was not queued.
                self.budget.release_copies(1);
                subscriber.meters.dropped_full.inc();
                false
            }
            Offer::Gone => {
                self.budget.release_copies(1);
                subscriber.meters.dropped_gone.inc();
                self.remove(id);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_types_follow_upstream_table() {
        use MessageType::*;
        assert_eq!(snapshot_types("stix2"), &[Indicator, Sighting]);
        assert_eq!(snapshot_types("stix2/"), &[Indicator, Sighting]);
        assert_eq!(snapshot_types("stix2/sighting"), &[Sighting]);
        assert_eq!(snapshot_types("stix2/indicator"), &[Indicator]);
        assert_eq!(snapshot_types("my/indicator"), &[Indicator]);
        for none in [
            "",
            "threatbus/snapshotrequest",
            "stix2/indicator/",
            "TOPIC",
            "stix",
        ] {
            assert!(snapshot_types(none).is_empty(), "{none}");
        }
    }
}
