//! The TAXII feeds app (`plugins.apps.taxii_feeds`): the bus polls TAXII 2.1 collections and
//! publishes the indicators and sightings it finds, so that Zeek and the ZeroMQ apps get shared
//! intel (ISACs, CERTs, OpenCTI, another Threat Bus) with no glue program.
//!
//! * [`config`]: the list of feeds;
//! * [`feed`]: one feed's polling: the collection looked up by id or title, pages followed to
//!   the end, objects validated as ZeroMQ input is, the cursor kept in the store;
//! * [`metrics`]: polls, objects, errors and the last success, per feed.
//!
//! Each feed runs on its own: one that fails (wrong password, a server that is down) logs and
//! counts its errors and tries again, and the others and the bus keep running.

#![forbid(unsafe_code)]

pub mod config;
pub mod feed;
pub mod metrics;

use base64::Engine as _;
use serde_json::Value;
use threatbus_core::config::ConfigError;
use threatbus_core::{App, BoxFuture, BusHandle, PluginError, Shutdown};
use threatbus_net::http::{HttpClient, Limits, SetupError};
use threatbus_net::tls::TlsSettings;
use threatbus_store::Location;

use crate::config::{FeedConfig, KEY};

/// The app, built from its section (and the store, where cursors are kept).
pub struct TaxiiFeedsApp {
    feeds: Vec<(FeedConfig, HttpClient)>,
    store: Option<Location>,
}

/// A client for the feed's API root, with its credentials and the TAXII `Accept` header.
fn client(index: usize, feed: &FeedConfig) -> Result<HttpClient, ConfigError> {
    let key = format!("{KEY}[{index}]");
    let named = |field: &str, message: String| {
        ConfigError::new(
            format!("{key}.{field}"),
            format!("{message} (feed {:?})", feed.name),
        )
    };
    let tls = TlsSettings {
        verify: feed.verify,
        ca_file: feed.ca_file.as_deref(),
        client_auth: None,
    };
    let url = feed.url.trim();
    let mut client = HttpClient::new(url, &tls, Limits::default()).map_err(|err| match err {
        SetupError::Url { reason, .. } => named("url", format!("{url:?}: {reason}")),
        SetupError::Tls(tls) => named(
            if tls.field == "verify" {
                "verify"
            } else {
                "ca_file"
            },
            tls.message,
        ),
    })?;
    let header = |client: &mut HttpClient, name: &'static str, value: &str, field: &str| {
        client
            .default_header(name, value)
            .map_err(|err| named(field, err.to_string()))
    };
    header(
        &mut client,
        "accept",
        threatbus_taxii::TAXII_MEDIA_TYPE,
        "url",
    )?;
    if let (Some(user), Some(password)) = (&feed.username, &feed.password) {
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        header(
            &mut client,
            "authorization",
            &format!("Basic {credentials}"),
            "password",
        )?;
    }
    Ok(client)
}

impl TaxiiFeedsApp {
    /// Validates the feeds and builds their clients (URLs and TLS files are checked here;
    /// nothing is contacted).
    pub fn build(section: &Value, store: Option<&Location>) -> Result<Self, ConfigError> {
        let configs = config::feeds(section)?;
        let mut feeds = Vec::with_capacity(configs.len());
        for (index, feed) in configs.into_iter().enumerate() {
            let client = client(index, &feed)?;
            feeds.push((feed, client));
        }
        Ok(Self {
            feeds,
            store: store.cloned(),
        })
    }
}

impl App for TaxiiFeedsApp {
    fn name(&self) -> &'static str {
        "taxii_feeds"
    }

    fn effective_config(&self) -> Option<Value> {
        Some(Value::Array(
            self.feeds.iter().map(|(feed, _)| feed.to_json()).collect(),
        ))
    }

    fn run(
        self: Box<Self>,
        bus: BusHandle,
        shutdown: Shutdown,
    ) -> BoxFuture<Result<(), PluginError>> {
        Box::pin(async move {
            let Self { feeds, store } = *self;
            if store.is_none() {
                tracing::info!(
                    "taxii feeds: no store, so cursors are not kept: after a restart each feed reaches back initial_lookback again"
                );
            }
            let tasks = tokio_util::task::TaskTracker::new();
            for (config, client) in feeds {
                let feed = feed::Feed::new(
                    config,
                    client,
                    store.clone(),
                    bus.clone(),
                    shutdown.stop_input.clone(),
                );
                tasks.spawn(feed.run());
            }
            tasks.close();
            bus.set_ready(true);
            tasks.wait().await;
            Ok(())
        })
    }
}
