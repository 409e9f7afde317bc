//! The broker objects, declared exactly as upstream's `threatbus-rabbitmq` declares them
//! (spec §4.2), so that Python and Rust instances can share one exchange: a fanout exchange
//! with pika's default flags, a queue `threatbus<join><suffix>` with `x-queue-mode` and, if
//! set, `x-max-length`, bound with the queue name as routing key (pika's default).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::config::RabbitMqConfig;
use crate::error::RabbitMqError;

/// What this instance declares on every (re)connect.
#[derive(Debug, Clone)]
pub struct Topology {
    pub exchange: String,
    pub exchange_options: ExchangeDeclareOptions,
    pub queue: String,
    pub queue_options: QueueDeclareOptions,
    pub queue_arguments: FieldTable,
}

impl Topology {
    pub fn new(config: &RabbitMqConfig) -> Self {
        Self {
            exchange: config.exchange_name.clone(),
            exchange_options: ExchangeDeclareOptions {
                passive: false,
                durable: config.exchange_durable,
                auto_delete: false,
                internal: false,
                nowait: false,
            },
            queue: config.queue_name(),
            queue_options: QueueDeclareOptions {
                passive: false,
                durable: config.queue.durable,
                exclusive: config.queue.exclusive,
                auto_delete: config.queue.auto_delete,
                nowait: false,
            },
            queue_arguments: queue_arguments(config),
        }
    }

    /// Declares the exchange.
    pub async fn declare_exchange(&self, channel: &Channel) -> Result<(), RabbitMqError> {
        channel
            .exchange_declare(
                ShortString::from(self.exchange.as_str()),
                ExchangeKind::Fanout,
                self.exchange_options,
                FieldTable::default(),
            )
            .await
            .map_err(|err| {
                RabbitMqError::from_lapin(
                    format!(
                        "declaring exchange {:?} (fanout, durable: {})",
                        self.exchange, self.exchange_options.durable
                    ),
                    err,
                )
            })
    }

    /// Declares the queue and binds it to the exchange.
    pub async fn declare_queue(&self, channel: &Channel) -> Result<(), RabbitMqError> {
        channel
            .queue_declare(
                ShortString::from(self.queue.as_str()),
                self.queue_options,
                self.queue_arguments.clone(),
            )
            .await
            .map_err(|err| {
                RabbitMqError::from_lapin(
                    format!(
                        "declaring queue {:?} (durable: {}, exclusive: {}, auto_delete: {}, arguments: {})",
                        self.queue,
                        self.queue_options.durable,
                        self.queue_options.exclusive,
                        self.queue_options.auto_delete,
                        describe(&self.queue_arguments),
                    ),
                    err,
                )
            })?;
        channel
            .queue_bind(
                ShortString::from(self.queue.as_str()),
                ShortString::from(self.exchange.as_str()),
                ShortString::from(self.queue.as_str()),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|err| {
                RabbitMqError::from_lapin(
                    format!(
                        "binding queue {:?} to exchange {:?}",
                        self.queue, self.exchange
                    ),
                    err,
                )
            })
    }

    /// Everything, in upstream's order.
    pub async fn declare_all(&self, channel: &Channel) -> Result<(), RabbitMqError> {
        self.declare_exchange(channel).await?;
        self.declare_queue(channel).await
    }
}

/// `{"x-queue-mode": "lazy" | "default"}`, plus `"x-max-length"` when `max_items` is not 0.
/// Integers go out as pika sends Python ints: 32-bit when they fit, 64-bit otherwise
/// (RabbitMQ compares integer arguments by value, whatever their width).
fn queue_arguments(config: &RabbitMqConfig) -> FieldTable {
    let mut arguments = FieldTable::default();
    let mode = if config.queue.lazy { "lazy" } else { "default" };
    arguments.insert(
        ShortString::from("x-queue-mode"),
        AMQPValue::LongString(LongString::from(mode)),
    );
    if config.queue.max_items != 0 {
        let max = config.queue.max_items;
        let value = match i32::try_from(max) {
            Ok(small) => AMQPValue::LongInt(small),
            Err(_) => AMQPValue::LongLongInt(i64::try_from(max).unwrap_or(i64::MAX)),
        };
        arguments.insert(ShortString::from("x-max-length"), value);
    }
    arguments
}

/// `x-queue-mode=lazy, x-max-length=10` for error messages.
fn describe(arguments: &FieldTable) -> String {
    let parts: Vec<String> = arguments
        .inner()
        .iter()
        .map(|(key, value)| {
            let value = match value {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::LongInt(n) => n.to_string(),
                AMQPValue::LongLongInt(n) => n.to_string(),
                other => format!("{other:?}"),
            };
            format!("{key}={value}")
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn topology(queue: serde_json::Value) -> Topology {
        let config = RabbitMqConfig::from_section(&json!({
            "host": "h", "port": 5672, "username": "u", "password": "p", "queue": queue,
        }))
        .unwrap();
        Topology::new(&config)
    }

    #[test]
    fn defaults_match_upstream() {
        let t = topology(json!({"name_suffix": "a"}));
        assert_eq!(t.exchange, "threatbus");
        let e = t.exchange_options;
        assert!(!e.passive && !e.durable && !e.auto_delete && !e.internal && !e.nowait);
        assert_eq!(t.queue, "threatbus.a");
        let q = t.queue_options;
        assert!(q.durable && !q.exclusive && !q.auto_delete && !q.passive);
        assert_eq!(describe(&t.queue_arguments), "{x-queue-mode=lazy}");
    }

    #[test]
    fn queue_flags_and_arguments_follow_the_config() {
        let t = topology(json!({
            "name_suffix": "b", "name_join_symbol": "-", "lazy": false, "durable": false,
            "exclusive": true, "auto_delete": true, "max_items": 10,
        }));
        assert_eq!(t.queue, "threatbus-b");
        let q = t.queue_options;
        assert!(!q.durable && q.exclusive && q.auto_delete);
        assert_eq!(
            describe(&t.queue_arguments),
            "{x-max-length=10, x-queue-mode=default}"
        );
        let big = topology(json!({"name_suffix": "c", "max_items": 5_000_000_000u64}));
        assert_eq!(
            describe(&big.queue_arguments),
            "{x-max-length=5000000000, x-queue-mode=lazy}"
        );
    }
}
