//! The app's one task: take indicators from the bus and push them to CIF.
//!
//! The subscription to `stix2/indicator` is made first, so that indicators published while CIF
//! is still unreachable wait in the app's bounded bus queue instead of being lost. Then CIF is
//! pinged until it answers (upstream gave up after one failed ping). Each indicator is mapped
//! ([`crate::mapping`]) and submitted; a submission CIF could not serve (network error,
//! timeout, 408, 429, 5xx) is repeated with backoff, so indicators stay in order and none is
//! lost while CIF is down; one CIF refuses (another 4xx) is logged with CIF's message, counted
//! and dropped.
//!
//! Shutdown: while the bus drains (`stop_input`), queued indicators are still pushed as long
//! as CIF takes them; once CIF fails then, or had not answered yet, the app stops waiting for
//! it and counts the rest as unsent, so that a CIF outage does not hold up the shutdown. A
//! submission under way when `stop` fires gets a few seconds to finish. The counts are logged
//! last.

use std::time::Duration;

use bytes::Bytes;
use threatbus_core::throttle::LogThrottle;
use threatbus_core::{Body, BusHandle, Message, PluginError, Shutdown, SubscriberOptions, topic};
use threatbus_net::{Backoff, FailureStreak};
use tokio_util::sync::CancellationToken;

use crate::client::{CifClient, Outcome};
use crate::config::{Cif3Config, KEY};
use crate::mapping::{self, Defaults, Skip, SkipReason};
use threatbus_core::config::BackoffConfig;

/// How long a submission under way when the bus stops may still take: CIF may have stored the
/// indicator already, and the answer says so.
const FINISH_GRACE: Duration = Duration::from_secs(3);

/// Runs until `shutdown.stop` fires.
pub(crate) async fn run(
    config: Cif3Config,
    client: CifClient,
    bus: BusHandle,
    shutdown: Shutdown,
) -> Result<(), PluginError> {
    let failed =
        |what: &str, err: threatbus_core::BusError| PluginError::new(format!("{KEY}: {what}"), err);
    let mut queue = bus
        .add_subscriber(SubscriberOptions {
            label: "cif3".into(),
            ..Default::default()
        })
        .await
        .map_err(|err| failed("cannot add a subscriber", err))?;
    bus.subscribe(queue.id, vec![topic::INDICATOR.into()], None)
        .await
        .map_err(|err| failed("cannot subscribe to stix2/indicator", err))?;
    // Nothing to bind: ready once subscribed, whether CIF answers yet or not (that shows in
    // the log and the counters).
    bus.set_ready(true);
    if config.confidence == 0.0 {
        tracing::warn!(
            confidence = config.effective_confidence(),
            "CIFv3 app: `confidence: 0` is sent as 5, as the Python Threat Bus did"
        );
    }
    let mut publisher = Publisher::new(client, Defaults::from_config(&config), &config.retry);
    let Shutdown { stop_input, stop } = shutdown;
    if !publisher.connect(&stop_input).await {
        tracing::warn!(
            "CIFv3 app: the bus is stopping and CIF has not answered yet; queued indicators are not sent"
        );
    } else {
        loop {
            let message = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                message = queue.recv() => message,
            };
            let Some(message) = message else { break };
            if !publisher.handle(&message, &stop_input, &stop).await {
                break;
            }
        }
    }
    // CIF is given up on, or the bus stops: what is still queued, or routed to the queue
    // before the bus stops, is not sent.
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.cancelled() => queue.try_recv(),
            message = queue.recv() => message,
        };
        let Some(message) = message else { break };
        publisher.not_sent(&message);
    }
    publisher.counts.log();
    Ok(())
}

/// What happened to the indicators taken from the bus.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counts {
    /// Accepted by CIF.
    sent: u64,
    /// Refused by CIF for good.
    rejected: u64,
    /// Not for CIF, per [`SkipReason::index`].
    skipped: [u64; SkipReason::ALL.len()],
    /// Still unsent when the bus stopped (the one being retried and those queued).
    unsent: u64,
}

impl Counts {
    fn log(&self) {
        let skipped = |reason: SkipReason| self.skipped[reason.index()];
        tracing::info!(
            sent = self.sent,
            rejected = self.rejected,
            skipped_update = skipped(SkipReason::Update),
            skipped_not_point_ioc = skipped(SkipReason::NotPointIoc),
            skipped_unsupported_path = skipped(SkipReason::UnsupportedPath),
            skipped_no_cif_type = skipped(SkipReason::NoCifType),
            skipped_value_does_not_fit = skipped(SkipReason::ValueDoesNotFit),
            unsent = self.unsent,
            "CIFv3 app stopped"
        );
    }
}

/// Waits `delay`; false if `stop` fired first.
async fn pause(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// Fires [`FINISH_GRACE`] after `stop`.
async fn grace_after(stop: &CancellationToken) {
    stop.cancelled().await;
    tokio::time::sleep(FINISH_GRACE).await;
}

struct Publisher {
    client: CifClient,
    defaults: Defaults,
    retry: FailureStreak,
    counts: Counts,
    unfit_log: LogThrottle,
    rejected_log: LogThrottle,
}

/// How a submission ended.
enum Delivery {
    Sent,
    Rejected,
    /// Not sent: the bus is stopping.
    GaveUp,
}

impl Publisher {
    fn new(client: CifClient, defaults: Defaults, retry: &BackoffConfig) -> Self {
        Self {
            client,
            defaults,
            retry: FailureStreak::new(Backoff::new(retry.min_delay, retry.max_delay)),
            counts: Counts::default(),
            unfit_log: LogThrottle::default(),
            rejected_log: LogThrottle::default(),
        }
    }

    /// Pings CIF until it answers; false if `give_up` fired first.
    async fn connect(&mut self, give_up: &CancellationToken) -> bool {
        let url = self.client.url("/ping");
        loop {
            let answer = tokio::select! {
                _ = give_up.cancelled() => return false,
                answer = self.client.ping() => answer,
            };
            match answer {
                Ok(()) => {
                    let failures = self.retry.succeeded().map_or(0, |(failures, _)| failures);
                    tracing::info!(
                        %url,
                        failed_pings = failures,
                        "CIFv3 app: CIF answers; pushing indicators"
                    );
                    return true;
                }
                Err(reason) => {
                    let (delay, log) = self.retry.failed();
                    if log {
                        tracing::error!(
                            %url,
                            %reason,
                            failures = self.retry.failures(),
                            retry_in_ms = delay.as_millis() as u64,
                            "CIFv3 app: ping failed; retrying (indicators wait in the app's bus queue meanwhile)"
                        );
                    } else {
                        tracing::debug!(%reason, "CIFv3 app: ping failed again");
                    }
                    if !pause(delay, give_up).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Maps one message and submits it; false once CIF is given up on (see [`Self::submit`]).
    async fn handle(
        &mut self,
        message: &Message,
        give_up: &CancellationToken,
        stop: &CancellationToken,
    ) -> bool {
        let Body::Indicator(indicator) = message.body() else {
            return true;
        };
        let id = indicator.id.as_str();
        let (body, value) = match mapping::to_cif(indicator, &self.defaults) {
            Ok(cif) => (mapping::request_body(&cif), cif.indicator),
            Err(skip) => {
                self.skipped(id, &skip);
                return true;
            }
        };
        let body = match body {
            Ok(body) => body,
            Err(err) => {
                // Writing JSON into memory and compressing it cannot fail; count it anyway.
                tracing::error!(id, error = %err, "CIFv3 app: cannot encode an indicator");
                self.counts.rejected += 1;
                return true;
            }
        };
        match self.submit(body, id, &value, give_up, stop).await {
            Delivery::Sent => {
                self.counts.sent += 1;
                tracing::debug!(id, indicator = %value, "CIFv3 app: CIF took the indicator");
                true
            }
            Delivery::Rejected => {
                self.counts.rejected += 1;
                true
            }
            Delivery::GaveUp => {
                self.counts.unsent += 1;
                false
            }
        }
    }

    /// Counts a message that is not sent because the app stops: as skipped if it was not for
    /// CIF anyway, else as unsent.
    fn not_sent(&mut self, message: &Message) {
        if let Body::Indicator(indicator) = message.body() {
            match mapping::to_cif(indicator, &self.defaults) {
                Ok(_) => self.counts.unsent += 1,
                Err(skip) => self.counts.skipped[skip.reason().index()] += 1,
            }
        }
    }

    fn skipped(&mut self, id: &str, skip: &Skip) {
        self.counts.skipped[skip.reason().index()] += 1;
        match skip {
            // A value of the wrong kind is a data problem worth a warning (upstream logged an
            // error); everything else is simply not for CIF.
            Skip::ValueDoesNotFit { .. } => {
                if let Some(suppressed) = self.unfit_log.allow() {
                    tracing::warn!(id, reason = %skip, suppressed, "CIFv3 app: indicator not sent");
                }
            }
            _ => tracing::debug!(id, reason = %skip, "CIFv3 app: indicator not sent"),
        }
    }

    /// Submits `body` until CIF takes or refuses it. Gives up when a retry would be needed
    /// after `give_up` fired, or when the submission under way has not finished
    /// [`FINISH_GRACE`] after `stop`.
    async fn submit(
        &mut self,
        body: Bytes,
        id: &str,
        value: &str,
        give_up: &CancellationToken,
        stop: &CancellationToken,
    ) -> Delivery {
        loop {
            let outcome = tokio::select! {
                _ = grace_after(stop) => return Delivery::GaveUp,
                outcome = self.client.submit(body.clone()) => outcome,
            };
            match outcome {
                Outcome::Accepted => {
                    if let Some((failures, duration)) = self.retry.succeeded() {
                        tracing::info!(
                            failures,
                            seconds = duration.as_secs(),
                            "CIFv3 app: CIF takes indicators again"
                        );
                    }
                    return Delivery::Sent;
                }
                Outcome::Rejected { status, message } => {
                    if let Some(suppressed) = self.rejected_log.allow() {
                        tracing::warn!(
                            id,
                            indicator = %value,
                            status = status.as_u16(),
                            %message,
                            suppressed,
                            "CIFv3 app: CIF rejected an indicator; dropped"
                        );
                    }
                    return Delivery::Rejected;
                }
                Outcome::Retry { reason } => {
                    let (delay, log) = self.retry.failed();
                    if log {
                        tracing::error!(
                            id,
                            %reason,
                            failures = self.retry.failures(),
                            retry_in_ms = delay.as_millis() as u64,
                            "CIFv3 app: submitting an indicator failed; retrying it"
                        );
                    } else {
                        tracing::debug!(id, %reason, "CIFv3 app: submitting failed again");
                    }
                    if give_up.is_cancelled() || !pause(delay, give_up).await {
                        tracing::warn!(
                            id,
                            "CIFv3 app: the bus is stopping and CIF does not take indicators; the rest is not sent"
                        );
                        return Delivery::GaveUp;
                    }
                }
            }
        }
    }
}
