//! The in-memory backbone (`plugins.backbones.inmem`): one bus instance, no external service.
//!
//! A backbone carries what local apps published to every bus instance; with a single instance
//! that is the identity: every published message goes straight back to the router.

#![forbid(unsafe_code)]

use serde::Deserialize;
use serde_json::Value;
use threatbus_core::config::{ConfigError, parse_section};
use threatbus_core::{Backbone, BackboneIo, BoxFuture, PluginError};

/// How many messages the backbone moves per wake-up.
const BATCH: usize = 256;

/// `plugins.backbones.inmem` takes no settings (`inmem: {}` or `inmem:`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InMemoryConfig {}

/// The in-memory backbone.
#[derive(Debug)]
pub struct InMemory;

impl InMemory {
    /// Builds the backbone from its config section, rejecting any key.
    pub fn build(section: &Value) -> Result<Self, ConfigError> {
        parse_section::<InMemoryConfig>("plugins.backbones.inmem", section)?;
        Ok(Self)
    }
}

impl Backbone for InMemory {
    fn name(&self) -> &'static str {
        "inmem"
    }

    fn effective_config(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::Object(Default::default()))
    }

    fn loops_back(&self) -> bool {
        true
    }

    fn run(self: Box<Self>, io: BackboneIo) -> BoxFuture<Result<(), PluginError>> {
        Box::pin(async move {
            let BackboneIo {
                mut outbound,
                inbound,
                stop,
                ..
            } = io;
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                tokio::select! {
                    biased;
                    received = outbound.recv_many(&mut batch, BATCH) => {
                        if received == 0 {
                            return Ok(());
                        }
                        for message in batch.drain(..) {
                            if inbound.deliver(message).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                    _ = stop.cancelled() => break,
                }
            }
            // Flush what is already queued; the router may already be gone.
            while let Ok(message) = outbound.try_recv() {
                if inbound.deliver(message).await.is_err() {
                    break;
                }
            }
            tracing::debug!("in-memory backbone stopped");
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_empty_section_and_rejects_keys() {
        assert!(InMemory::build(&Value::Null).is_ok());
        assert!(InMemory::build(&json!({})).is_ok());
        let err = InMemory::build(&json!({"size": 1})).unwrap_err();
        assert!(err.to_string().contains("size"), "{err}");
        assert!(
            err.to_string().starts_with("plugins.backbones.inmem"),
            "{err}"
        );
    }
}
