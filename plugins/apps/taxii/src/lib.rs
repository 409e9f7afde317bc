//! The TAXII 2.1 server app (`plugins.apps.taxii`): the intel store's indicators and sightings
//! for any TAXII 2.1 client (SIEMs, TIPs, `taxii2-client` scripts), and a way onto the bus for
//! clients allowed to write.
//!
//! * [`config`]: the section;
//! * [`api`]: the endpoints (OASIS TAXII 2.1, sections 4 and 5), two collections
//!   (`indicators`, `sightings`) with fixed ids;
//! * [`auth`]: HTTP Basic against the configured users;
//! * [`reader`]: store reads on blocking threads, a few at a time;
//! * [`status`]: the status resources of recent writes;
//! * [`metrics`]: requests, objects and latency.
//!
//! Reads come from the store (`date_added` is when the store took a version); writes are
//! published on the bus like any app's input, so live subscribers get them at once and the store
//! keeps them. The HTTP server is the shared one of `threatbus_net::server`.

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod config;
pub mod metrics;
pub mod reader;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use threatbus_core::config::ConfigError;
use threatbus_core::{App, BoxFuture, BusHandle, PluginError, Shutdown};
use threatbus_net::server::ServerLimits;
use threatbus_store::Location;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use config::TaxiiConfig;

/// The app, built from its section and the store it serves.
pub struct TaxiiApp {
    config: TaxiiConfig,
    store: Location,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl TaxiiApp {
    /// Validates the section, reads the TLS certificate and key, and checks that there is a
    /// store to serve from.
    pub fn build(section: &Value, store: Option<&Location>) -> Result<Self, ConfigError> {
        let config = TaxiiConfig::from_section(section)?;
        let Some(store) = store else {
            return Err(ConfigError::new(
                config::KEY,
                "the TAXII server serves the intel store, and there is none: add a `store` section (e.g. `store: {path: threatbus-store}`)",
            ));
        };
        let tls = match &config.tls {
            None => None,
            Some(files) => Some(Arc::new(
                threatbus_net::tls::server_config(&files.certificate, &files.key).map_err(
                    |err| {
                        ConfigError::new(format!("{}.tls.{}", config::KEY, err.field), err.message)
                    },
                )?,
            )),
        };
        Ok(Self {
            config,
            store: store.clone(),
            tls,
        })
    }
}

impl App for TaxiiApp {
    fn name(&self) -> &'static str {
        "taxii"
    }

    fn effective_config(&self) -> Option<Value> {
        Some(self.config.to_json())
    }

    fn run(
        self: Box<Self>,
        bus: BusHandle,
        shutdown: Shutdown,
    ) -> BoxFuture<Result<(), PluginError>> {
        Box::pin(serve(*self, bus, shutdown))
    }
}

async fn serve(app: TaxiiApp, bus: BusHandle, shutdown: Shutdown) -> Result<(), PluginError> {
    let TaxiiApp { config, store, tls } = app;
    let host = config.host.trim_start_matches('[').trim_end_matches(']');
    let address: SocketAddr = format!("{host}:{}", config.port)
        .parse()
        .or_else(|_| format!("[{host}]:{}", config.port).parse())
        .map_err(|err| {
            PluginError::new(format!("{}.host: cannot use {host:?}", config::KEY), err)
        })?;
    let listener = TcpListener::bind(address).await.map_err(|err| {
        PluginError::new(format!("{}: cannot listen on {address}", config::KEY), err)
    })?;
    let bound = listener.local_addr().unwrap_or(address);
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        address = %bound,
        discovery = %format!("{scheme}://{bound}/taxii2/"),
        api_root = %format!("/{}/", config.api_root),
        users = config.users.len(),
        store = %store.describe(),
        "TAXII server listening"
    );
    if config.users.is_empty() {
        tracing::warn!(
            "taxii: no users configured: anyone who reaches the server may read, nobody may write"
        );
    }
    if tls.is_none() && !bound.ip().is_loopback() && !config.users.is_empty() {
        tracing::warn!(
            "taxii: passwords travel in clear text (no `tls` section) to a server reachable from other hosts"
        );
    }
    let limits = ServerLimits {
        max_connections: config.max_connections,
        header_timeout: config.request_timeout,
        max_header_bytes: 16 * 1024,
    };
    let server = Arc::new(api::Server {
        meters: metrics::Meters::new(&bus),
        readers: reader::Readers::new(store),
        statuses: status::StatusLog::default(),
        bus: bus.clone(),
        config,
        scheme,
    });
    bus.set_ready(true);
    let answer = move |request, client| server.clone().answer(request, client);
    threatbus_net::server::serve(
        "taxii",
        listener,
        tls.map(TlsAcceptor::from),
        limits,
        shutdown.stop_input,
        answer,
    )
    .await;
    Ok(())
}
