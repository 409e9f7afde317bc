//! Sightings back to MISP (spec `upstream.md` §6.6).
//!
//! The app subscribes to `stix2/sighting` (only when `api` is configured, so no queue fills up
//! without a reader) and reports each sighting of an indicator as a MISP sighting of the
//! attribute whose uuid the indicator id carries. While MISP is unreachable (or refuses the
//! key) the sighting waits and is retried with backoff; later ones wait in the bus's bounded
//! subscriber queue. A sighting MISP rejects (e.g. of an indicator that did not come from
//! MISP) is logged with MISP's answer and dropped.

use threatbus_core::throttle::LogThrottle;
use threatbus_core::{Body, BusHandle, PluginError, SubscriberOptions};
use threatbus_net::Backoff;
use tokio_util::sync::CancellationToken;

use crate::api::{CallError, MispApi};
use crate::rest;
use crate::retry::Retry;

/// The topic sightings are routed on.
pub const SIGHTING_TOPIC: &str = "stix2/sighting";

/// What happened to the sightings, for the stop log line.
#[derive(Debug, Default)]
struct Counts {
    sent: u64,
    rejected: u64,
    not_of_indicators: u64,
    retries: u64,
}

/// Reports sightings to MISP until `stop` fires.
pub async fn run(
    mut api: MispApi,
    bus: BusHandle,
    backoff: Backoff,
    stop: CancellationToken,
) -> Result<(), PluginError> {
    let failed = |err: threatbus_core::BusError| PluginError::new("MISP sightings", err);
    let mut queue = bus
        .add_subscriber(SubscriberOptions {
            label: "misp sightings".into(),
            ..Default::default()
        })
        .await
        .map_err(failed)?;
    bus.subscribe(queue.id, vec![SIGHTING_TOPIC.into()], None)
        .await
        .map_err(failed)?;
    tracing::info!(url = %api.url("/sightings/add"), "reporting sightings to MISP");
    let mut counts = Counts::default();
    let mut retry = Retry::new(backoff);
    let mut rejections = LogThrottle::default();
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            message = queue.recv() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let Body::Sighting(sighting) = message.body() else {
            continue;
        };
        let Some(body) = rest::sighting_body(sighting) else {
            counts.not_of_indicators += 1;
            tracing::debug!(sighting_of_ref = %sighting.sighting_of_ref.as_str(), "not a sighting of an indicator: not reported to MISP");
            continue;
        };
        loop {
            match api.add_sighting(&body).await {
                Ok(()) => {
                    counts.sent += 1;
                    retry.succeeded();
                    tracing::debug!(id = %sighting.id.as_str(), attribute = %body["id"], "sighting reported to MISP");
                    break;
                }
                Err(CallError::Rejected(reason)) => {
                    counts.rejected += 1;
                    bus.record_rejected_input();
                    if let Some(suppressed) = rejections.allow() {
                        tracing::warn!(id = %sighting.id.as_str(), attribute = %body["id"], %reason, suppressed, "MISP rejected a sighting");
                    }
                    break;
                }
                Err(CallError::Unavailable(reason)) => {
                    counts.retries += 1;
                    if !retry
                        .wait("reporting a sighting to MISP", &reason, &stop)
                        .await
                    {
                        let unsent = 1 + queue.len();
                        tracing::warn!(unsent, "stopping with sightings MISP has not received");
                        log_counts(&counts);
                        return Ok(());
                    }
                }
            }
        }
    }
    log_counts(&counts);
    Ok(())
}

fn log_counts(counts: &Counts) {
    tracing::info!(
        sent = counts.sent,
        rejected = counts.rejected,
        not_of_indicators = counts.not_of_indicators,
        retries = counts.retries,
        "MISP sightings stopped"
    );
}
