//! Snapshots from MISP's REST API (spec `upstream.md` §6.7).
//!
//! The app listens for snapshot requests from any subscriber on the bus. For an INDICATOR
//! request it searches MISP (`/attributes/restSearch`, one query per org × type combination of
//! each filter entry), a page at a time, maps every attribute found to an indicator, applies
//! the filter to the results too, and sends each indicator once, wrapped in a snapshot
//! envelope for the requester. MISP errors are logged and end that snapshot only.

use std::collections::HashSet;

use jiff::SignedDuration;
use serde_json::Value;
use threatbus_core::{
    Body, BusHandle, Message, MessageType, PluginError, SnapshotEnvelope, SnapshotRequest,
    SubscriberOptions,
};
use threatbus_net::Backoff;
use tokio_util::sync::CancellationToken;

use crate::api::{CallError, MispApi};
use crate::attribute::{self, Action};
use crate::filter::{self, FilterEntry};
use crate::rest;
use crate::retry::Retry;

/// How often a search page is tried before the snapshot gives up.
const ATTEMPTS: u32 = 4;

/// At most this many pages per query (a server that ignores `page` cannot loop us forever).
const MAX_PAGES: u32 = 100_000;

/// What a snapshot produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answered {
    pub indicators: u64,
    pub duplicates: u64,
    pub filtered: u64,
    pub unmapped: u64,
    pub pages: u64,
}

/// Answers snapshot requests until `stop` fires.
pub async fn run(
    mut api: MispApi,
    bus: BusHandle,
    filters: Vec<FilterEntry>,
    page_size: u32,
    backoff: Backoff,
    stop: CancellationToken,
) -> Result<(), PluginError> {
    let mut requests = bus
        .add_subscriber(SubscriberOptions {
            label: "misp snapshots".into(),
            snapshot_requests: true,
            ..Default::default()
        })
        .await
        .map_err(|err| PluginError::new("MISP snapshots", err))?;
    let mut retry = Retry::new(backoff);
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            message = requests.recv() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let Body::SnapshotRequest(request) = message.body() else {
            continue;
        };
        if request.snapshot_type != MessageType::Indicator {
            tracing::debug!(snapshot_id = %request.snapshot_id, "MISP answers indicator snapshots only");
            continue;
        }
        tracing::info!(snapshot_id = %request.snapshot_id, seconds = request.snapshot.as_secs(), "searching MISP for a snapshot");
        let started = std::time::Instant::now();
        let mut snapshot = Snapshot {
            api: &mut api,
            bus: &bus,
            filters: &filters,
            page_size,
            retry: &mut retry,
            stop: &stop,
        };
        match snapshot.answer(request).await {
            Ok(answered) => tracing::info!(
                snapshot_id = %request.snapshot_id,
                indicators = answered.indicators,
                duplicates = answered.duplicates,
                filtered = answered.filtered,
                unmapped = answered.unmapped,
                pages = answered.pages,
                ms = started.elapsed().as_millis() as u64,
                "snapshot from MISP sent"
            ),
            Err(Stopped::Shutdown) => break,
            Err(Stopped::Failed(reason, answered)) => tracing::error!(
                snapshot_id = %request.snapshot_id,
                %reason,
                indicators_sent = answered.indicators,
                "snapshot from MISP incomplete"
            ),
        }
    }
    Ok(())
}

/// Why a snapshot ended early.
enum Stopped {
    Shutdown,
    Failed(String, Answered),
}

struct Snapshot<'a> {
    api: &'a mut MispApi,
    bus: &'a BusHandle,
    filters: &'a [FilterEntry],
    page_size: u32,
    retry: &'a mut Retry,
    stop: &'a CancellationToken,
}

impl Snapshot<'_> {
    async fn answer(&mut self, request: &SnapshotRequest) -> Result<Answered, Stopped> {
        // Upstream queried from a future date for a negative duration (Zeek's README writes
        // `-30 days`); the intent is the same span back.
        let age = SignedDuration::from_nanos(request.snapshot.as_nanos().saturating_abs() as i64);
        let now = jiff::Timestamp::now().as_nanosecond() as f64 / 1e9;
        let mut answered = Answered::default();
        let mut seen = HashSet::new();
        for query in rest::search_queries(self.filters, age, now) {
            for page in 1..=MAX_PAGES {
                let attributes = match self
                    .search(&rest::paged(&query, self.page_size, page))
                    .await
                {
                    Ok(attributes) => attributes,
                    Err(Some(reason)) => return Err(Stopped::Failed(reason, answered)),
                    Err(None) => return Err(Stopped::Shutdown),
                };
                answered.pages += 1;
                let more = attributes.len() as u64 == u64::from(self.page_size);
                for attribute in attributes {
                    self.offer(request, attribute, &mut seen, &mut answered)
                        .await?;
                }
                tracing::debug!(snapshot_id = %request.snapshot_id, page, "MISP search page done");
                // A page with fewer than asked for is the last; so is one with more (a server
                // that ignores paging sent everything at once).
                if !more {
                    break;
                }
            }
        }
        Ok(answered)
    }

    /// One page of search results; `Err(None)` at shutdown.
    async fn search(&mut self, query: &Value) -> Result<Vec<Value>, Option<String>> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.api.search(query).await {
                Ok(attributes) => {
                    self.retry.succeeded();
                    return Ok(attributes);
                }
                Err(CallError::Rejected(reason)) => return Err(Some(reason)),
                Err(CallError::Unavailable(reason)) if attempts >= ATTEMPTS => {
                    return Err(Some(format!("gave up after {attempts} attempts: {reason}")));
                }
                Err(CallError::Unavailable(reason)) => {
                    if !self
                        .retry
                        .wait("searching MISP for a snapshot", &reason, self.stop)
                        .await
                    {
                        return Err(None);
                    }
                }
            }
        }
    }

    /// Maps, filters and sends one attribute of the results.
    async fn offer(
        &mut self,
        request: &SnapshotRequest,
        attribute: Value,
        seen: &mut HashSet<String>,
        answered: &mut Answered,
    ) -> Result<(), Stopped> {
        let Value::Object(attribute) = attribute else {
            answered.unmapped += 1;
            return Ok(());
        };
        if !filter::result_passes(self.filters, &attribute) {
            answered.filtered += 1;
            return Ok(());
        }
        let indicator = match attribute::indicator(&attribute, Action::Add) {
            Ok(indicator) => indicator,
            Err(why) => {
                answered.unmapped += 1;
                tracing::debug!(reason = %why, "MISP attribute in a snapshot not mapped");
                return Ok(());
            }
        };
        if !seen.insert(indicator.id.as_str().to_owned()) {
            answered.duplicates += 1;
            return Ok(());
        }
        let envelope = SnapshotEnvelope {
            snapshot_type: MessageType::Indicator,
            snapshot_id: request.snapshot_id.clone(),
            body: Message::new(Body::Indicator(indicator)),
        };
        if self
            .bus
            .publish(Message::new(Body::SnapshotEnvelope(envelope)))
            .await
            .is_err()
        {
            return Err(Stopped::Shutdown);
        }
        answered.indicators += 1;
        Ok(())
    }
}
