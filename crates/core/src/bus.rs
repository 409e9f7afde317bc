//! Assembling and running a bus: router, backbone and apps, with a staged shutdown.

use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::BusConfig;
use crate::metrics::{self, Counter, Gauge, Registry};
use crate::plugin::{App, Backbone, BackboneIo, Inbound, PluginError, Shutdown};
use crate::queue::{SubscriberId, SubscriberOptions, SubscriberReceiver};
use crate::router::{Command, Router};
use crate::stats::Totals;
use crate::{BusError, Message};

/// What apps use to talk to the core. Cheap to clone. The `blocking_*` variants are for
/// plugin threads outside the async runtime (e.g. ZeroMQ socket threads); they must not be
/// called from async code.
///
/// Each app gets its own handle, which counts what the app publishes and rejects under the
/// app's name and registers the app's subscribers under it.
#[derive(Clone)]
pub struct BusHandle {
    pub(crate) router: mpsc::Sender<Command>,
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

/// Where published messages go: to the backbone, or, when the backbone only loops messages
/// back to this instance, straight to the router (one hop and one task less per message).
#[derive(Clone)]
pub(crate) struct Outbound {
    route: Route,
    /// Messages handed to the backbone, per kind.
    sent: [Counter; 4],
}

#[derive(Clone)]
enum Route {
    Backbone(mpsc::Sender<Message>),
    Loopback(mpsc::Sender<Command>),
}

impl Outbound {
    pub(crate) async fn send(&self, message: Message) -> Result<(), BusError> {
        self.sent[message.body().topic_index()].inc();
        let sent = match &self.route {
            Route::Backbone(tx) => tx.send(message).await.is_ok(),
            Route::Loopback(tx) => tx.send(Command::Route(message)).await.is_ok(),
        };
        if sent { Ok(()) } else { Err(BusError::Stopped) }
    }

    fn blocking_send(&self, message: Message) -> Result<(), BusError> {
        self.sent[message.body().topic_index()].inc();
        let sent = match &self.route {
            Route::Backbone(tx) => tx.blocking_send(message).is_ok(),
            Route::Loopback(tx) => tx.blocking_send(Command::Route(message)).is_ok(),
        };
        if sent { Ok(()) } else { Err(BusError::Stopped) }
    }

    /// Messages waiting for the backbone (the router's own channel is counted apart).
    fn queued(&self) -> usize {
        match &self.route {
            Route::Backbone(tx) => tx.max_capacity() - tx.capacity(),
            Route::Loopback(_) => 0,
        }
    }
}

impl BusHandle {
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
    async fn in_flight(&self) -> usize {
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

/// Upper bound for the capacity of the queues into the router and to the backbone.
const INTAKE_CAPACITY: usize = 1024;

/// A configured bus, ready to run.
pub struct Bus {
    config: BusConfig,
    backbone: Box<dyn Backbone>,
    apps: Vec<Box<dyn App>>,
    /// Run like apps, but not counted as apps (e.g. the metrics listener).
    services: Vec<Box<dyn App>>,
    metrics: Arc<Registry>,
}

/// Which plugin a task runs, for error messages.
struct TaskName {
    kind: &'static str,
    name: &'static str,
}

impl Bus {
    pub fn new(config: BusConfig, backbone: Box<dyn Backbone>, apps: Vec<Box<dyn App>>) -> Self {
        Self {
            config,
            backbone,
            apps,
            services: Vec::new(),
            metrics: Arc::default(),
        }
    }

    /// Adds a service: it runs and stops like an app, but neither its readiness nor its
    /// traffic counts as an app's (the metrics listener is one).
    pub fn add_service(&mut self, service: Box<dyn App>) {
        self.services.push(service);
    }

    /// The metrics registry (shared with every plugin).
    pub fn metrics(&self) -> Arc<Registry> {
        self.metrics.clone()
    }

    /// Runs until `shutdown` fires (then drains and stops gracefully) or a plugin fails (then
    /// stops everything and returns the failure).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BusError> {
        // The queues into the router and to the backbone only smooth out bursts: when they are
        // full, publishers wait (no loss), so they need not be as deep as subscriber queues,
        // and each queued message costs memory (about 1.7 KiB for a 500-byte indicator).
        let capacity = self.config.queue_capacity.min(INTAKE_CAPACITY);
        let (router_tx, router_rx) = mpsc::channel(capacity);
        let phases = Shutdown {
            stop_input: CancellationToken::new(),
            stop: CancellationToken::new(),
        };
        let mut tasks: JoinSet<(TaskName, Result<(), PluginError>)> = JoinSet::new();
        let backbone_name = self.backbone.name();
        let metrics = self.metrics.clone();
        metrics
            .gauge(&metrics::BUILD_INFO, &[env!("CARGO_PKG_VERSION")])
            .set(1);
        let backbone_ready =
            metrics.gauge(&metrics::READY, &[&format!("backbone:{backbone_name}")]);
        let route = if self.backbone.loops_back() {
            tracing::info!(
                backbone = backbone_name,
                "backbone is a local loopback: published messages go straight to the router"
            );
            backbone_ready.set(1);
            Route::Loopback(router_tx.clone())
        } else {
            let (outbound_tx, outbound_rx) = mpsc::channel(capacity);
            let io = BackboneIo {
                outbound: outbound_rx,
                inbound: Inbound {
                    router: router_tx.clone(),
                },
                stop: phases.stop.clone(),
                metrics: metrics.clone(),
                ready: backbone_ready,
            };
            let backbone_run = self.backbone.run(io);
            tasks.spawn(async move {
                let name = TaskName {
                    kind: "backbone",
                    name: backbone_name,
                };
                (name, backbone_run.await)
            });
            tracing::info!(backbone = backbone_name, "backbone started");
            Route::Backbone(outbound_tx)
        };
        let outbound = Outbound {
            route,
            sent: metrics.kind_counters(&metrics::BACKBONE_SENT, &[backbone_name]),
        };
        let handle = BusHandle {
            router: router_tx,
            outbound: outbound.clone(),
            metrics: metrics.clone(),
            app: Arc::new(AppMeters::unregistered("core")),
        };
        let stop_router = CancellationToken::new();
        let router = Router::new(
            self.config.clone(),
            metrics.clone(),
            backbone_name,
            outbound,
        );
        let router_task = tokio::spawn(router.run(router_rx, stop_router.clone()));

        // Every app's readiness starts at 0 (before any app runs, so that /ready cannot answer
        // 200 while an app has not been polled yet).
        let app_handles: Vec<BusHandle> = self
            .apps
            .iter()
            .map(|app| handle.for_app(app.name()))
            .collect();
        for (app, app_handle) in self.apps.into_iter().zip(app_handles) {
            let name = app.name();
            let run = app.run(app_handle, phases.clone());
            tasks.spawn(async move { (TaskName { kind: "app", name }, run.await) });
            tracing::info!(app = name, "app started");
        }
        for service in self.services {
            let name = service.name();
            let service_handle = BusHandle {
                app: Arc::new(AppMeters::unregistered(name)),
                ..handle.clone()
            };
            let run = service.run(service_handle, phases.clone());
            tasks.spawn(async move {
                (
                    TaskName {
                        kind: "service",
                        name,
                    },
                    run.await,
                )
            });
        }

        let mut failure = None;
        tokio::select! {
            _ = shutdown.cancelled() => tracing::info!("shutting down: draining queues"),
            Some(joined) = tasks.join_next() => {
                failure = Some(task_failure(joined));
            }
        }
        let deadline = Instant::now() + self.config.shutdown_timeout;
        phases.stop_input.cancel();
        if failure.is_none() {
            drain(&handle, deadline).await;
        }
        phases.stop.cancel();
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
            if let err @ Some(_) = finished(joined) {
                failure = failure.or(err);
            }
        }
        if !tasks.is_empty() {
            tracing::warn!(
                remaining = tasks.len(),
                "shutdown deadline passed: aborting plugins"
            );
            tasks.abort_all();
        }
        stop_router.cancel();
        let _ = router_task.await;
        tracing::info!("{}", Totals::read(&metrics).summary());
        match failure {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// Waits until nothing is in flight in the core, or the deadline.
async fn drain(handle: &BusHandle, deadline: Instant) {
    loop {
        let in_flight = handle.in_flight().await;
        if in_flight == 0 {
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                in_flight,
                "shutdown deadline passed with messages still queued"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plugin task ended before shutdown: always a failure, since plugins run until told to stop.
fn task_failure(
    joined: Result<(TaskName, Result<(), PluginError>), tokio::task::JoinError>,
) -> BusError {
    finished(joined).unwrap_or_else(|| BusError::PluginFailed {
        kind: "plugin",
        name: "unknown".into(),
        reason: "stopped unexpectedly".into(),
    })
}

/// Logs how a plugin task ended; `Some` if it failed.
fn finished(
    joined: Result<(TaskName, Result<(), PluginError>), tokio::task::JoinError>,
) -> Option<BusError> {
    match joined {
        Ok((name, Ok(()))) => {
            tracing::debug!(kind = name.kind, name = name.name, "stopped");
            None
        }
        Ok((name, Err(err))) => Some(BusError::PluginFailed {
            kind: name.kind,
            name: name.name.to_owned(),
            reason: err.report(),
        }),
        Err(err) => Some(BusError::PluginFailed {
            kind: "plugin",
            name: "unknown".into(),
            reason: format!("task panicked or was cancelled: {err}"),
        }),
    }
}
