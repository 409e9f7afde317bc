//! What the core's integration tests share: an identity backbone (what the in-memory backbone
//! does), an app that hands its bus handle to the test, and message and subscriber helpers.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use threatbus_core::{
    App, Backbone, BackboneIo, BoxFuture, Bus, BusConfig, BusHandle, Carrier, CatchUpSource,
    Message, PluginError, Shutdown, SubscriberOptions, SubscriberReceiver,
};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub struct Identity;

impl Backbone for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }
    fn run(self: Box<Self>, mut io: BackboneIo) -> BoxFuture<Result<(), PluginError>> {
        Box::pin(async move {
            loop {
                tokio::select! {
                    message = io.outbound.recv() => match message {
                        Some(m) => { let _ = io.inbound.deliver(m).await; }
                        None => return Ok(()),
                    },
                    _ = io.stop.cancelled() => return Ok(()),
                }
            }
        })
    }
}

/// An app that hands its bus handle to the test and idles until shutdown.
pub struct Probe(pub oneshot::Sender<BusHandle>);

impl App for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn run(
        self: Box<Self>,
        bus: BusHandle,
        shutdown: Shutdown,
    ) -> BoxFuture<Result<(), PluginError>> {
        Box::pin(async move {
            let _ = self.0.send(bus);
            shutdown.stop.cancelled().await;
            Ok(())
        })
    }
}

pub struct Running {
    pub bus: BusHandle,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), threatbus_core::BusError>>,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// A bus with the identity backbone and the probe app (and catch-up from `catch_up`).
pub async fn start(config: BusConfig, catch_up: Option<Arc<dyn CatchUpSource>>) -> Running {
    // Tests leave messages unread in queues; do not wait long for them to drain.
    let config = BusConfig {
        shutdown_timeout: Duration::from_secs(1),
        ..config
    };
    let (tx, rx) = oneshot::channel();
    let mut bus = Bus::new(
        config,
        Carrier::Backbone(Box::new(Identity)),
        vec![Box::new(Probe(tx))],
    );
    if let Some(source) = catch_up {
        bus.set_catch_up(source);
    }
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(bus.run(shutdown.clone()));
    Running {
        bus: rx.await.expect("probe app started"),
        shutdown,
        task,
    }
}

/// Indicator number `n` (its id and `x_seq` say which).
pub fn indicator(n: u32) -> Message {
    let id = format!("indicator--00000000-0000-4000-8000-{n:012}");
    Message::from_json(
        json!({
            "type": "indicator", "spec_version": "2.1", "id": id,
            "created": "2020-06-23T12:34:56.000Z", "modified": "2020-06-23T12:34:56.000Z",
            "pattern": "[ipv4-addr:value = '6.6.6.6']", "pattern_type": "stix", "x_seq": n
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

/// A subscriber with default options on `topics`.
pub async fn subscriber(bus: &BusHandle, topics: &[&str]) -> SubscriberReceiver {
    let rx = bus
        .add_subscriber(SubscriberOptions::default())
        .await
        .unwrap();
    bus.subscribe(rx.id, topics.iter().map(|t| t.to_string()).collect(), None)
        .await
        .unwrap();
    rx
}

/// The next message, within 10 s.
pub async fn recv(rx: &mut SubscriberReceiver) -> Message {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a message within 10 s")
        .expect("queue open")
}
