//! One feed: resolves its collection, then polls it every `poll_interval`, following `more` /
//! `next` to the last page, publishing what it may on the bus and remembering where it stopped.
//!
//! A poll never overlaps the previous one of the same feed: the next starts `poll_interval`
//! after the previous one started, or when it ends if it took longer. The feed holds one page
//! at a time and publishes it before asking for the next, so a slow bus slows the feed down
//! instead of filling memory.

use std::time::{Duration, Instant};

use serde::Deserialize;
use threatbus_core::throttle::LogThrottle;
use threatbus_core::{BusHandle, Message};
use threatbus_net::http::{HttpClient, HttpError, Response};
use threatbus_net::{Backoff, FailureStreak};
use threatbus_store::Location;
use threatbus_taxii::{ApiRoot, Collections, TAXII_MEDIA_TYPE, parse_envelope};
use tokio_util::sync::CancellationToken;

use crate::config::FeedConfig;
use crate::metrics::{Failure, FeedMeters};

/// Objects asked for per page (servers may send fewer).
const PAGE: usize = 1000;

/// The longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How often a poll saves its cursor in the store at most (and once more at its end): a
/// crash republishes at most this much of a poll.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// The wait after a 429 or 503 without a usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Why a poll ended early.
#[derive(Debug)]
pub enum PollError {
    /// The bus is stopping.
    Stopped,
    /// A request failed in a way that retrying now will not fix.
    Failed(Failure, String),
}

/// What one poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub pages: u64,
    pub published: u64,
    pub skipped: u64,
    pub invalid: u64,
}

/// A feed, ready to run.
pub struct Feed {
    pub config: FeedConfig,
    pub client: HttpClient,
    /// Where the cursor is kept, if there is a store.
    pub store: Option<Location>,
    pub meters: FeedMeters,
    pub bus: BusHandle,
    pub stop: CancellationToken,
    streak: FailureStreak,
    invalid_log: LogThrottle,
    /// The collection's id, once found.
    collection: Option<String>,
    /// `added_after` of the next poll: the last `X-TAXII-Date-Added-Last` seen.
    cursor: Option<String>,
    /// The cursor as last saved in the store, and when.
    saved: Option<String>,
    saved_at: Option<Instant>,
    /// The store connection the cursor is saved with, once opened.
    side: Option<Box<dyn threatbus_store::Engine>>,
}

/// Only the fields of an object the feed looks at before the object is parsed.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
}

impl Feed {
    pub fn new(
        config: FeedConfig,
        client: HttpClient,
        store: Option<Location>,
        bus: BusHandle,
        stop: CancellationToken,
    ) -> Self {
        let meters = FeedMeters::new(&bus, &config.name);
        let backoff = Backoff::new(config.retry.min_delay, config.retry.max_delay);
        Self {
            config,
            client,
            store,
            meters,
            bus,
            stop,
            streak: FailureStreak::new(backoff),
            invalid_log: LogThrottle::default(),
            collection: None,
            cursor: None,
            saved: None,
            saved_at: None,
            side: None,
        }
    }

    /// The key of this feed's cursor in the store: a feed renamed, or pointed at another
    /// server or collection, starts afresh.
    fn cursor_key(&self) -> String {
        format!(
            "{}|{}|{}",
            self.config.name, self.config.url, self.config.collection
        )
    }

    /// Polls until the bus stops.
    pub async fn run(mut self) {
        self.cursor = self.load_cursor().await;
        self.saved = self.cursor.clone();
        let name = self.config.name.clone();
        match &self.cursor {
            Some(cursor) => {
                tracing::info!(feed = %name, url = %self.config.url, collection = %self.config.collection, %cursor, "taxii feed: resuming after the stored cursor")
            }
            None => tracing::info!(
                feed = %name, url = %self.config.url, collection = %self.config.collection,
                lookback_days = self.config.initial_lookback,
                "taxii feed: first poll reaches back initial_lookback"
            ),
        }
        loop {
            let started = Instant::now();
            let polled = self.poll().await;
            self.save_cursor().await;
            match polled {
                Ok(counts) => {
                    self.meters.polls_ok.inc();
                    self.meters
                        .last_success
                        .set(jiff::Timestamp::now().as_second());
                    tracing::info!(
                        feed = %name,
                        pages = counts.pages,
                        published = counts.published,
                        skipped = counts.skipped,
                        invalid = counts.invalid,
                        ms = started.elapsed().as_millis() as u64,
                        cursor = self.cursor.as_deref().unwrap_or("-"),
                        "taxii feed polled"
                    );
                }
                Err(PollError::Stopped) => return,
                Err(PollError::Failed(reason, message)) => {
                    self.meters.polls_failed.inc();
                    self.meters.failed(reason);
                    tracing::error!(
                        feed = %name,
                        url = %self.config.url,
                        reason = reason.label(),
                        error = %message,
                        retry_in_s = self.config.poll_interval.as_secs(),
                        "taxii feed: poll failed"
                    );
                }
            }
            let next = started + self.config.poll_interval;
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep_until(next.into()) => {}
            }
        }
    }

    /// One poll: from the cursor to the last page.
    pub async fn poll(&mut self) -> Result<Counts, PollError> {
        let collection = match self.collection.clone() {
            Some(id) => id,
            None => {
                let id = self.resolve().await?;
                self.collection = Some(id.clone());
                id
            }
        };
        let poll_started = jiff::Timestamp::now();
        let added_after = self.cursor.clone().unwrap_or_else(|| self.lookback_start());
        let mut counts = Counts::default();
        let mut next: Option<String> = None;
        let mut saw_dates = false;
        let mut after = added_after;
        // The previous page's X-TAXII-Date-Added-Last, not yet the cursor: objects added at the
        // same moment (medallion dates a whole POST alike) may straddle the page boundary, so a
        // page's last date becomes the cursor only once a later page is seen to start after it,
        // or the poll reaches the last page. A poll that ends early (an expired `next`, a
        // restart) then resumes where nothing can be skipped, publishing some objects again
        // rather than losing any.
        let mut held: Option<String> = None;
        loop {
            let mut query = format!("limit={PAGE}&added_after={}", encode(&after));
            if let Some(next) = &next {
                query.push_str("&next=");
                query.push_str(&encode(next));
            }
            let path = format!("/collections/{}/objects/?{query}", encode(&collection));
            let answer = self.get(&path, "get objects").await?;
            let envelope = parse_envelope(&answer.body).map_err(|err| {
                PollError::Failed(
                    Failure::Protocol,
                    format!("the objects answer is not a TAXII envelope: {err}"),
                )
            })?;
            counts.pages += 1;
            for object in &envelope.objects {
                self.take(object.get().as_bytes(), &mut counts).await?;
            }
            if let (Some(previous), Some(first)) =
                (&held, answer.header("x-taxii-date-added-first"))
                && later(first.trim(), previous)
            {
                self.advance(previous.clone()).await;
            }
            if let Some(last) = answer.header("x-taxii-date-added-last") {
                saw_dates = true;
                held = Some(last.trim().to_owned());
            }
            if !envelope.more {
                break;
            }
            match envelope.next {
                Some(token) => next = Some(token),
                // `more` without `next`: continue after the last date seen, if it moved on
                // (the only way on such a server, though it skips objects dated alike).
                None => match &held {
                    Some(last) if *last != after => {
                        after = last.clone();
                        self.advance(after.clone()).await;
                        next = None;
                    }
                    _ => {
                        tracing::warn!(feed = %self.config.name, "taxii feed: the server says there is more but gives neither `next` nor a later X-TAXII-Date-Added-Last; stopping this poll here");
                        break;
                    }
                },
            }
        }
        if let Some(last) = held {
            self.advance(last).await;
        }
        // A server that sends no date headers: the next poll asks for what was added since
        // this one started (by this machine's clock).
        if !saw_dates
            && counts.pages > 0
            && (counts.published + counts.skipped + counts.invalid) > 0
        {
            self.advance(format!("{poll_started:.6}")).await;
        }
        Ok(counts)
    }

    /// Publishes one object if its type is wanted and it is valid; counts it either way.
    async fn take(&mut self, json: &[u8], counts: &mut Counts) -> Result<(), PollError> {
        let peek: Option<Peek> = serde_json::from_slice(json).ok();
        let kind = peek.as_ref().and_then(|p| p.kind.as_deref()).unwrap_or("");
        if !self.config.types.iter().any(|t| t == kind) {
            counts.skipped += 1;
            self.meters.skipped.inc();
            return Ok(());
        }
        match Message::from_stix_json(json) {
            Ok(message) => {
                tokio::select! {
                    _ = self.stop.cancelled() => return Err(PollError::Stopped),
                    published = self.bus.publish(message) => {
                        if published.is_err() {
                            return Err(PollError::Stopped);
                        }
                    }
                }
                counts.published += 1;
                self.meters.published.inc();
            }
            Err(err) => {
                counts.invalid += 1;
                self.meters.invalid.inc();
                if let Some(suppressed) = self.invalid_log.allow() {
                    let id = peek
                        .as_ref()
                        .and_then(|p| p.id.as_deref())
                        .unwrap_or("(no id)");
                    tracing::warn!(feed = %self.config.name, id, error = %err, suppressed, "taxii feed: invalid object skipped");
                }
            }
        }
        Ok(())
    }

    /// Moves the cursor on and saves it.
    async fn advance(&mut self, cursor: String) {
        if self.cursor.as_deref() == Some(cursor.as_str()) {
            return;
        }
        self.cursor = Some(cursor);
        if self.saved_at.is_none_or(|at| at.elapsed() >= SAVE_EVERY) {
            self.save_cursor().await;
        }
    }

    /// Writes the cursor to the store, if there is one and it moved since the last save. One
    /// connection is kept for it; a save waits for the store's writer to finish a batch, so it
    /// is done at most every [`SAVE_EVERY`] during a poll, and at its end.
    async fn save_cursor(&mut self) {
        let (Some(location), Some(cursor)) = (self.store.clone(), self.cursor.clone()) else {
            return;
        };
        if self.saved.as_deref() == Some(cursor.as_str()) {
            return;
        }
        self.saved_at = Some(Instant::now());
        let key = self.cursor_key();
        let side = self.side.take();
        let written = tokio::task::spawn_blocking(move || {
            let mut side = match side {
                Some(side) => side,
                None => location.open_side()?,
            };
            side.set_feed_cursor(&key, &cursor)?;
            Ok::<_, threatbus_store::StoreError>((side, cursor))
        })
        .await;
        match written {
            Ok(Ok((side, cursor))) => {
                self.side = Some(side);
                self.saved = Some(cursor);
            }
            Ok(Err(err)) => {
                tracing::warn!(feed = %self.config.name, error = %err, "taxii feed: cannot save the cursor in the store (a restart would poll again from the last saved one)")
            }
            Err(err) => {
                tracing::warn!(feed = %self.config.name, error = %err, "taxii feed: cannot save the cursor")
            }
        }
    }

    async fn load_cursor(&mut self) -> Option<String> {
        let location = self.store.clone()?;
        let key = self.cursor_key();
        let loaded =
            tokio::task::spawn_blocking(move || location.open_side()?.feed_cursor(&key)).await;
        match loaded {
            Ok(Ok(cursor)) => cursor,
            Ok(Err(err)) => {
                tracing::warn!(feed = %self.config.name, error = %err, "taxii feed: cannot read the stored cursor; starting from initial_lookback");
                None
            }
            Err(_) => None,
        }
    }

    /// `added_after` of a first poll: `initial_lookback` days ago.
    fn lookback_start(&self) -> String {
        let days = i64::try_from(self.config.initial_lookback).unwrap_or(36_500);
        let micros = threatbus_store::listing::now_micros()
            .saturating_sub(days.saturating_mul(86_400_000_000));
        threatbus_taxii::time::format_micros(micros)
    }

    /// Finds the collection: checks that the URL is a TAXII 2.1 API root, then looks the
    /// collection up by id or title.
    async fn resolve(&mut self) -> Result<String, PollError> {
        let answer = self.get("/", "get the API root").await?;
        let root: ApiRoot = serde_json::from_slice(&answer.body).map_err(|err| {
            PollError::Failed(
                Failure::Protocol,
                format!(
                    "{} is not a TAXII 2.1 API root (the answer is not an API root resource: {err}); `url` must be the API root, not the discovery URL",
                    self.config.url
                ),
            )
        })?;
        if !root.versions.iter().any(|v| supports_21(v)) {
            return Err(PollError::Failed(
                Failure::Protocol,
                format!(
                    "the API root at {} speaks {:?}, not TAXII 2.1 (TAXII 2.0-only servers are not supported)",
                    self.config.url, root.versions
                ),
            ));
        }
        let answer = self.get("/collections/", "list the collections").await?;
        let collections: Collections = serde_json::from_slice(&answer.body).map_err(|err| {
            PollError::Failed(
                Failure::Protocol,
                format!("the collections answer is not a TAXII collections resource: {err}"),
            )
        })?;
        let wanted = &self.config.collection;
        let found = collections
            .collections
            .iter()
            .find(|c| &c.id == wanted)
            .or_else(|| collections.collections.iter().find(|c| &c.title == wanted));
        let Some(collection) = found else {
            let have: Vec<String> = collections
                .collections
                .iter()
                .map(|c| format!("{:?} ({})", c.title, c.id))
                .collect();
            return Err(PollError::Failed(
                Failure::NotFound,
                format!(
                    "no collection with id or title {wanted:?} at {} (this user sees: {})",
                    self.config.url,
                    if have.is_empty() {
                        "none".to_owned()
                    } else {
                        have.join(", ")
                    }
                ),
            ));
        };
        if !collection.can_read {
            return Err(PollError::Failed(
                Failure::Unauthorized,
                format!("collection {wanted:?} exists but this user may not read it"),
            ));
        }
        tracing::info!(feed = %self.config.name, collection = %collection.id, title = %collection.title, "taxii feed: collection found");
        Ok(collection.id.clone())
    }

    /// GETs `path` under the API root. Network errors, server errors and throttling are
    /// retried (backoff, or `Retry-After`) until the bus stops; a 4xx ends the poll.
    async fn get(&mut self, path: &str, what: &str) -> Result<Response, PollError> {
        loop {
            let sent = tokio::select! {
                _ = self.stop.cancelled() => return Err(PollError::Stopped),
                sent = self.client.request(http::Method::GET, path, &[], bytes::Bytes::new()) => sent,
            };
            let (reason, message, wait) = match sent {
                Ok(answer) if answer.status.is_success() => {
                    if let Some((failures, took)) = self.streak.succeeded() {
                        tracing::info!(feed = %self.config.name, failures, seconds = took.as_secs(), "taxii feed: the server answers again");
                    }
                    return Ok(answer);
                }
                Ok(answer) => {
                    let status = answer.status.as_u16();
                    let detail = format!("{what}: HTTP {status}: {}", answer.preview(300));
                    match status {
                        429 | 503 => {
                            let wait = retry_after(&answer).unwrap_or(DEFAULT_RETRY_AFTER);
                            (Failure::Throttled, detail, Some(wait))
                        }
                        401 | 403 => {
                            return Err(PollError::Failed(
                                Failure::Unauthorized,
                                format!(
                                    "{detail} (check username and password, and that the user may read the collection)"
                                ),
                            ));
                        }
                        404 => {
                            return Err(PollError::Failed(
                                Failure::NotFound,
                                format!(
                                    "{detail} (is `url` the API root, and does the collection exist?)"
                                ),
                            ));
                        }
                        406 | 415 => {
                            return Err(PollError::Failed(
                                Failure::Protocol,
                                format!(
                                    "{detail} (the server does not speak {TAXII_MEDIA_TYPE}: TAXII 2.0-only servers are not supported)"
                                ),
                            ));
                        }
                        500..=599 => (Failure::Server, detail, None),
                        _ => return Err(PollError::Failed(Failure::Protocol, detail)),
                    }
                }
                // An answer over the size cap would be as large on every try: not retried now.
                Err(err @ HttpError::TooLarge { .. }) => {
                    return Err(PollError::Failed(
                        Failure::Protocol,
                        format!(
                            "{what}: {err} (a page that large is not read; does the server ignore `limit`?)"
                        ),
                    ));
                }
                Err(err) => (Failure::Network, format!("{what}: {err}"), None),
            };
            self.meters.failed(reason);
            let (backoff, log) = self.streak.failed();
            let wait = wait.map_or(backoff, |w| w.min(MAX_RETRY_AFTER));
            if log {
                tracing::warn!(
                    feed = %self.config.name,
                    reason = reason.label(),
                    error = %message,
                    failures = self.streak.failures(),
                    retry_in_ms = wait.as_millis() as u64,
                    "taxii feed: request failed; retrying"
                );
            }
            tokio::select! {
                _ = self.stop.cancelled() => return Err(PollError::Stopped),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        // The kept store connection may be a PostgreSQL one, which owns a runtime.
        threatbus_store::close_off_runtime(self.side.take().into_iter().collect());
    }
}

/// Whether the TAXII timestamp `first` is strictly after `previous` (false if either is not a
/// timestamp: then the cursor waits for the end of the poll).
fn later(first: &str, previous: &str) -> bool {
    match (
        first.parse::<jiff::Timestamp>(),
        previous.parse::<jiff::Timestamp>(),
    ) {
        (Ok(first), Ok(previous)) => first > previous,
        _ => false,
    }
}

/// Whether an API root's `versions` entry is TAXII 2.1.
fn supports_21(version: &str) -> bool {
    let version = version.replace(' ', "").to_ascii_lowercase();
    version == "application/taxii+json;version=2.1"
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(answer: &Response) -> Option<Duration> {
    let value = answer.header("retry-after")?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let now = jiff::Timestamp::now();
    let seconds = at.as_second().saturating_sub(now.as_second()).max(0);
    Some(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}

/// Percent-encodes a query value (everything but unreserved characters).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode("2030-01-02T03:04:05.123456Z"),
            "2030-01-02T03%3A04%3A05.123456Z"
        );
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn a_page_boundary_is_safe_to_resume_after_only_when_the_dates_move_on() {
        assert!(later(
            "2030-01-02T03:04:05.000001Z",
            "2030-01-02T03:04:05.000000Z"
        ));
        assert!(later("2030-01-02T03:04:06Z", "2030-01-02T03:04:05.999Z"));
        assert!(!later(
            "2030-01-02T03:04:05.000000Z",
            "2030-01-02T03:04:05Z"
        ));
        assert!(!later("2030-01-02T03:04:04Z", "2030-01-02T03:04:05Z"));
        assert!(!later("soon", "2030-01-02T03:04:05Z"));
    }

    #[test]
    fn only_taxii_2_1_api_roots_are_followed() {
        assert!(supports_21("application/taxii+json;version=2.1"));
        assert!(supports_21("application/taxii+json; version=2.1"));
        assert!(!supports_21("application/taxii+json;version=2.0"));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let answer = |value: &str| Response {
            status: http::StatusCode::TOO_MANY_REQUESTS,
            headers: [(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_str(value).unwrap(),
            )]
            .into_iter()
            .collect(),
            body: bytes::Bytes::new(),
        };
        assert_eq!(retry_after(&answer("7")), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(&answer("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        let wait = retry_after(&answer("Wed, 21 Oct 2099 07:28:00 GMT")).unwrap();
        assert!(wait > Duration::from_secs(70 * 365 * 86_400), "{wait:?}");
        assert_eq!(retry_after(&answer("soon")), None);
    }
}
