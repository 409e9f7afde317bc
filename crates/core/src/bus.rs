//! A bus's lifecycle: [`Bus::start`] wires the intake, the router, the backbone and the apps
//! together; [`Running::wait`] runs until shutdown is asked for or a plugin fails;
//! [`Running::stop`] shuts down in stages (stop input, drain the queues, stop the plugins, stop
//! the router).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::BusError;
use crate::catchup::{self, CatchUpSource, Replay, Work, WorkSource};
use crate::command::Command;
use crate::config::BusConfig;
use crate::handle::BusHandle;
use crate::intake::{Inbound, Outbound};
use crate::metrics::{self, Registry};
use crate::plugin::{App, BackboneIo, Carrier, PluginError, Shutdown};
use crate::router::Router;
use crate::stats::Totals;

/// Upper bound for the capacity of the queues into the router and to the backbone.
const INTAKE_CAPACITY: usize = 1024;

/// A configured bus, ready to run.
pub struct Bus {
    config: BusConfig,
    carrier: Carrier,
    apps: Vec<Box<dyn App>>,
    /// Run like apps, but not counted as apps (e.g. the metrics listener).
    services: Vec<Box<dyn App>>,
    metrics: Arc<Registry>,
    /// Where subscribers that fall behind are fed from (the store), if anywhere.
    catch_up: Option<Arc<dyn CatchUpSource>>,
}

/// Which plugin a task runs, for error messages.
struct TaskName {
    kind: &'static str,
    name: &'static str,
}

type PluginTasks = JoinSet<(TaskName, Result<(), PluginError>)>;

/// A started bus.
pub struct Running {
    tasks: PluginTasks,
    phases: Shutdown,
    /// The core's own handle, to see what is still in flight.
    handle: BusHandle,
    router: JoinHandle<()>,
    stop_router: CancellationToken,
    metrics: Arc<Registry>,
    shutdown_timeout: Duration,
}

impl Bus {
    pub fn new(config: BusConfig, carrier: Carrier, apps: Vec<Box<dyn App>>) -> Self {
        Self {
            config,
            carrier,
            apps,
            services: Vec::new(),
            metrics: Arc::default(),
            catch_up: None,
        }
    }

    /// Feeds `drop_newest` subscribers that fall behind from `source` instead of dropping for
    /// them (unless `bus.catch_up_timeout` is 0); see [`crate::catchup`].
    pub fn set_catch_up(&mut self, source: Arc<dyn CatchUpSource>) {
        self.catch_up = Some(source);
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
        let mut running = self.start();
        let failure = running.wait(shutdown).await;
        running.stop(failure).await
    }

    /// Starts the router, the backbone (unless this instance is alone), the apps and the
    /// services; must be called within a Tokio runtime.
    pub fn start(self) -> Running {
        // The queues into the router and to the backbone only smooth out bursts: when they are
        // full, publishers wait (no loss), so they need not be as deep as subscriber queues,
        // and each queued message costs memory (about 1.7 KiB for a 500-byte indicator).
        let capacity = self.config.queue_capacity.min(INTAKE_CAPACITY);
        let (router_tx, router_rx) = mpsc::channel(capacity);
        let phases = Shutdown {
            stop_input: CancellationToken::new(),
            stop: CancellationToken::new(),
        };
        let mut tasks = PluginTasks::new();
        let metrics = self.metrics.clone();
        metrics
            .gauge(&metrics::BUILD_INFO, &[env!("CARGO_PKG_VERSION")])
            .set(1);
        let carrier_name = self.carrier.name();
        let sent = metrics.kind_counters(&metrics::BACKBONE_SENT, &[carrier_name]);
        let ready = metrics.gauge(&metrics::READY, &[&format!("backbone:{carrier_name}")]);
        let outbound = match self.carrier {
            Carrier::Loopback => {
                tracing::info!(
                    backbone = carrier_name,
                    "backbone is a local loopback: published messages go straight to the router"
                );
                ready.set(1);
                Outbound::loopback(router_tx.clone(), sent)
            }
            Carrier::Backbone(backbone) => {
                let (outbound_tx, outbound_rx) = mpsc::channel(capacity);
                let run = backbone.run(BackboneIo {
                    outbound: outbound_rx,
                    inbound: Inbound::new(router_tx.clone()),
                    stop: phases.stop.clone(),
                    metrics: metrics.clone(),
                    ready,
                });
                spawn_plugin(&mut tasks, "backbone", carrier_name, run);
                tracing::info!(backbone = carrier_name, "backbone started");
                Outbound::to_backbone(outbound_tx, sent)
            }
        };
        let handle = BusHandle::core(router_tx.clone(), outbound.clone(), metrics.clone());
        let stop_router = CancellationToken::new();
        let mut router = Router::new(self.config.clone(), metrics.clone(), carrier_name, outbound);
        if let Some(source) = self
            .catch_up
            .filter(|_| !self.config.catch_up_timeout.is_zero())
        {
            let (wake, woken) = std::sync::mpsc::sync_channel(1);
            router = router.with_catch_up(source.clone(), wake);
            let mailbox = RouterMailbox(router_tx.clone());
            let spawned = std::thread::Builder::new()
                .name("catch-up".into())
                .spawn(move || catchup::run_worker(&mailbox, &*source, woken));
            match spawned {
                Ok(_) => tracing::info!(
                    timeout_seconds = self.config.catch_up_timeout.as_secs(),
                    "catch-up on: subscribers that fall behind are fed from the store"
                ),
                Err(err) => {
                    tracing::error!(error = %err, "cannot start the catch-up thread: subscribers that fall behind lose messages");
                }
            }
        }
        let router = tokio::spawn(router.run(router_rx, stop_router.clone()));

        // Services first: the store subscribes before any app can publish.
        for service in self.services {
            let name = service.name();
            let run = service.run(handle.for_service(name), phases.clone());
            spawn_plugin(&mut tasks, "service", name, run);
        }
        // Every app's readiness starts at 0 (before any app runs, so that /ready cannot answer
        // 200 while an app has not been polled yet).
        let app_handles: Vec<BusHandle> = self
            .apps
            .iter()
            .map(|app| handle.for_app(app.name()))
            .collect();
        for (app, app_handle) in self.apps.into_iter().zip(app_handles) {
            let name = app.name();
            spawn_plugin(&mut tasks, "app", name, app.run(app_handle, phases.clone()));
            tracing::info!(app = name, "app started");
        }
        Running {
            tasks,
            phases,
            handle,
            router,
            stop_router,
            metrics,
            shutdown_timeout: self.config.shutdown_timeout,
        }
    }
}

fn spawn_plugin(
    tasks: &mut PluginTasks,
    kind: &'static str,
    name: &'static str,
    run: crate::BoxFuture<Result<(), PluginError>>,
) {
    tasks.spawn(async move { (TaskName { kind, name }, run.await) });
}

impl Running {
    /// Waits until `shutdown` fires (`None`) or a plugin ends, which is always a failure since
    /// plugins run until told to stop.
    pub async fn wait(&mut self, shutdown: CancellationToken) -> Option<BusError> {
        tokio::select! {
            _ = shutdown.cancelled() => {
                tracing::info!("shutting down: draining queues");
                None
            }
            Some(joined) = self.tasks.join_next() => Some(task_failure(joined)),
        }
    }

    /// Stops in stages within `bus.shutdown_timeout`: apps stop taking input; unless a plugin
    /// failed, the queues drain; the plugins stop (aborted at the deadline); the router stops.
    /// Returns `failure` or the first failure of a plugin while stopping.
    pub async fn stop(mut self, mut failure: Option<BusError>) -> Result<(), BusError> {
        let deadline = Instant::now() + self.shutdown_timeout;
        self.phases.stop_input.cancel();
        if failure.is_none() {
            drain(&self.handle, deadline).await;
        }
        self.phases.stop.cancel();
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, self.tasks.join_next()).await
        {
            if let err @ Some(_) = finished(joined) {
                failure = failure.or(err);
            }
        }
        if !self.tasks.is_empty() {
            tracing::warn!(
                remaining = self.tasks.len(),
                "shutdown deadline passed: aborting plugins"
            );
            self.tasks.abort_all();
        }
        self.stop_router.cancel();
        let _ = self.router.await;
        tracing::info!("{}", Totals::read(&self.metrics).summary());
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

/// The catch-up worker's way to the router: blocking requests from its own thread.
struct RouterMailbox(mpsc::Sender<Command>);

impl WorkSource for RouterMailbox {
    fn next_work(&self) -> Option<Work> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.0.blocking_send(Command::CatchUpWork { reply }).ok()?;
        answer.blocking_recv().ok()
    }

    fn replay(&self, replay: Replay) -> bool {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self
            .0
            .blocking_send(Command::CatchUpReplay { replay, reply })
            .is_err()
        {
            return false;
        }
        answer.blocking_recv().is_ok()
    }
}
