//! The RabbitMQ backbone (`plugins.backbones.rabbitmq`): many bus instances on one fanout
//! exchange, wire-compatible with upstream's `threatbus-rabbitmq`.
//!
//! Every instance publishes what its apps published to the exchange and consumes its own queue
//! bound to it, so a message published at any instance reaches the subscribers of every
//! instance, this one included (its own messages come back through its queue, as upstream).
//!
//! Two independent halves, each with its own connection and reconnect loop:
//! * the [`publisher`] takes messages from the core and publishes them with confirms;
//! * the [`consumer`] hands what arrives on the queue to the router.
//!
//! They are independent so that neither can hold up the other: the router may wait on the
//! publisher (it publishes snapshot requests) while the consumer waits on the router.
//!
//! Broker objects and bodies are as upstream ([`topology`], spec §4.2–4.4); what differs is
//! documented in `docs/rabbitmq.md`: confirms, persistent messages on durable queues, order
//! kept across reconnects, repeats suppressed by `message_id`, bounded buffering, backoff,
//! clear errors for refused declarations, and an orderly shutdown.

#![forbid(unsafe_code)]

pub mod config;
pub mod connect;
pub mod consumer;
pub mod dedup;
pub mod error;
mod outbox;
pub mod publisher;
pub mod stats;
pub mod topology;

use std::sync::Arc;

use serde_json::Value;
use threatbus_core::config::ConfigError;
use threatbus_core::{Backbone, BackboneIo, BoxFuture, PluginError};

pub use config::RabbitMqConfig;
pub use error::RabbitMqError;
pub use stats::{Meters, RabbitMqStats};

use connect::{Backoff, Connector};
use consumer::Consumer;
use publisher::{Publisher, PublisherSettings};
use topology::Topology;

/// The RabbitMQ backbone, built and ready to run.
#[derive(Debug)]
pub struct RabbitMq {
    config: RabbitMqConfig,
    connector: Connector,
    stats: Arc<RabbitMqStats>,
}

impl RabbitMq {
    /// Builds the backbone from its config section; reads the TLS files, connects nowhere.
    pub fn build(section: &Value) -> Result<Self, ConfigError> {
        Self::new(RabbitMqConfig::from_section(section)?)
    }

    /// Builds the backbone from a parsed config.
    pub fn new(config: RabbitMqConfig) -> Result<Self, ConfigError> {
        let connector = Connector::new(&config).map_err(|err| match err {
            RabbitMqError::Tls { key, message } => {
                ConfigError::new(format!("{}.{key}", config::KEY), message)
            }
            other => ConfigError::new(config::KEY, other.to_string()),
        })?;
        Ok(Self {
            config,
            connector,
            stats: Arc::default(),
        })
    }

    /// The backbone's counters (shared; readable while it runs).
    pub fn stats(&self) -> Arc<RabbitMqStats> {
        self.stats.clone()
    }

    async fn run_halves(self, io: BackboneIo) -> Result<(), PluginError> {
        let BackboneIo {
            outbound,
            inbound,
            stop,
            metrics,
            ready,
        } = io;
        let meters = Meters::new(&metrics, ready, &self.stats);
        let config = &self.config;
        let topology = Topology::new(config);
        tracing::info!(
            endpoint = self.connector.endpoint(),
            vhost = %config.vhost,
            exchange = %topology.exchange,
            queue = %topology.queue,
            tls = config.tls.enabled,
            "RabbitMQ backbone starting"
        );
        let settings = PublisherSettings {
            publisher_id: uuid::Uuid::new_v4().simple().to_string(),
            persistent: config.queue.durable,
            declare_queue: !config.queue.exclusive,
            buffer: config.publish_buffer,
            confirm_window: config.confirm_window,
            batch_messages: config.batch_messages,
            flush_timeout: config.flush_timeout,
            confirm_timeout: config.confirm_timeout,
        };
        let publisher = Publisher::new(
            self.connector.clone(),
            topology.clone(),
            settings,
            Backoff::new(config.reconnect.min_delay, config.reconnect.max_delay),
            self.stats.clone(),
            meters.clone(),
        );
        let consumer = Consumer::new(
            self.connector.clone(),
            topology,
            config.prefetch,
            config.on_undecodable,
            Backoff::new(config.reconnect.min_delay, config.reconnect.max_delay),
            self.stats.clone(),
            meters,
        );
        // A fatal error in one half stops the other.
        let halt = stop.child_token();
        let publishing = async {
            let result = publisher.run(outbound, halt.clone()).await;
            if result.is_err() {
                halt.cancel();
            }
            result
        };
        let consuming = async {
            let result = consumer.run(inbound, halt.clone()).await;
            if result.is_err() {
                halt.cancel();
            }
            result
        };
        let (published, consumed) = tokio::join!(publishing, consuming);
        tracing::info!("RabbitMQ backbone stopped: {}", self.stats.summary());
        match published.and(consumed) {
            Ok(()) => Ok(()),
            Err(err) => Err(PluginError::new(
                format!("RabbitMQ at {}", self.connector.endpoint()),
                err,
            )),
        }
    }
}

impl Backbone for RabbitMq {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn effective_config(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.config).ok()
    }

    fn run(self: Box<Self>, io: BackboneIo) -> BoxFuture<Result<(), PluginError>> {
        Box::pin(self.run_halves(io))
    }
}
