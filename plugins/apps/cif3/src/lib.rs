//! The CIFv3 app (`plugins.apps.cif3`): indicators from the bus → a CIFv3 server
//! (Collective Intelligence Framework, `bearded-avenger`). Push only, as upstream: nothing comes
//! back from CIF, and the app answers no snapshot requests.
//!
//! * [`config`]: the section, upstream's keys and defaults plus `api.ca_file` and `retry`.
//! * [`itype`]: CIF's indicator types and value forms, as the CIF SDK decides them.
//! * [`mapping`]: which indicators CIF gets and the JSON it is sent.
//! * [`client`]: `GET /ping` and `POST /indicators` (deflate body, token header), and what each
//!   answer means.
//! * `publisher`: the task that subscribes, pings until CIF answers and pushes with retries.

#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod itype;
pub mod mapping;
mod publisher;

use serde_json::Value;
use threatbus_core::config::ConfigError;
use threatbus_core::{App, BoxFuture, BusHandle, PluginError, Shutdown};

pub use config::{Cif3Config, KEY};

use crate::client::CifClient;

/// The CIFv3 app.
pub struct Cif3App {
    config: Cif3Config,
    client: CifClient,
}

impl Cif3App {
    /// Builds the app from its config section: checks every value, the host URL and the TLS
    /// files; connects nowhere yet.
    pub fn build(section: &Value) -> Result<Self, ConfigError> {
        let config = Cif3Config::from_section(section)?;
        let client = CifClient::new(&config.api)?;
        Ok(Self { config, client })
    }
}

impl App for Cif3App {
    fn name(&self) -> &'static str {
        "cif3"
    }

    fn effective_config(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.config).ok()
    }

    fn run(
        self: Box<Self>,
        bus: BusHandle,
        shutdown: Shutdown,
    ) -> BoxFuture<Result<(), PluginError>> {
        Box::pin(publisher::run(self.config, self.client, bus, shutdown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn build_checks_the_section_and_the_url() {
        let section = json!({
            "api": {"host": "http://localhost:5000", "token": "T", "ssl": false},
            "tags": ["threatbus"]
        });
        assert!(Cif3App::build(&section).is_ok());
        let section = json!({
            "api": {"host": "localhost:5000", "token": "T", "ssl": false},
            "tags": ["threatbus"]
        });
        let err = Cif3App::build(&section).err().unwrap().to_string();
        assert!(
            err.starts_with("plugins.apps.cif3.api.host: \"localhost:5000\""),
            "{err}"
        );
    }
}
