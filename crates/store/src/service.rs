//! The store as a bus service: a subscriber to every Indicator and Sighting the router routes
//! (it never loses one: when its queue is full the router waits, so the store falls behind by
//! at most one queue), a writer thread that commits in batches (at least every
//! [`FLUSH_INTERVAL`]), and snapshot answers for this instance's subscribers, streamed from the
//! file at the pace the requester reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use jiff::SignedDuration;
use threatbus_core::config::WhenFull;
use threatbus_core::message::{Body, Message, MessageType, SnapshotRequest};
use threatbus_core::queue::RequesterRoom;
use threatbus_core::{App, BoxFuture, BusHandle, PluginError, Shutdown, SubscriberOptions};

use crate::catchup::StoreCatchUp;
use crate::engine::Engine;
use crate::location::Location;
use crate::metrics::StoreMeters;
use crate::record::{Kind, Record};
use crate::{StoreConfig, StoreError};

/// Longest time a routed message waits before it is committed.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// Most records committed in one transaction.
const BATCH: usize = 4096;

/// How often the object counts (`threatbus_store_objects`) are brought up to date.
const STATS_EVERY: Duration = Duration::from_secs(10);

/// How often versions older than the retention are pruned (and once at start).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How long pruning waits while subscribers catch up (they are given up after
/// `bus.catch_up_timeout`, so this is not forever).
const PRUNE_POSTPONED: Duration = Duration::from_secs(60);

/// How long a snapshot answer waits for a requester that reads nothing before it gives up.
const STALLED_REQUESTER: Duration = Duration::from_secs(30);

/// Jobs (each at most one receive, 256 records) waiting for the writer thread. When the writer
/// falls this far behind, the store's task waits, its subscriber queue fills and the router
/// holds up publishers (the store's subscriber blocks, it never drops): memory stays bounded in
/// a bulk load instead of piling up records the disk has not taken yet.
const WRITER_QUEUE: usize = 64;

/// Hands `job` to the writer thread, waiting (without blocking the runtime) while its queue is
/// full; an error if the writer is gone.
async fn hand_over(jobs: &std_mpsc::SyncSender<Job>, mut job: Job) -> Result<(), ()> {
    loop {
        match jobs.try_send(job) {
            Ok(()) => return Ok(()),
            Err(std_mpsc::TrySendError::Full(back)) => {
                job = back;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(std_mpsc::TrySendError::Disconnected(_)) => return Err(()),
        }
    }
}

/// What the service tells the writer thread.
enum Job {
    /// What one receive took from the store's queue, in routing order.
    Write(Vec<Record>),
    /// Commit now and say so (for shutdown).
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The store, opened, ready to run as a bus service.
pub struct StoreService {
    config: StoreConfig,
    location: Location,
    store: Box<dyn Engine>,
    /// Some subscriber is being fed from the store: nothing is pruned.
    held: Arc<AtomicBool>,
}

impl std::fmt::Debug for StoreService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreService")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl StoreService {
    /// Opens (or creates) the store; every reason it cannot be used is an error here, before
    /// the bus binds anything.
    pub fn open(config: StoreConfig) -> Result<Self, StoreError> {
        let location = config.location();
        let store = location.open_writer()?;
        Ok(Self {
            config,
            location,
            store,
            held: Arc::default(),
        })
    }

    /// The store as the bus's catch-up source (see `threatbus_core::catchup`).
    pub fn catch_up(&self) -> Arc<StoreCatchUp> {
        Arc::new(StoreCatchUp::new(self.location.clone(), self.held.clone()))
    }

    /// Where the store is.
    pub fn location(&self) -> &Location {
        &self.location
    }
}

impl App for StoreService {
    fn name(&self) -> &'static str {
        "store"
    }

    fn effective_config(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.config).ok()
    }

    fn run(
        self: Box<Self>,
        bus: BusHandle,
        shutdown: Shutdown,
    ) -> BoxFuture<Result<(), PluginError>> {
        Box::pin(serve(*self, bus, shutdown))
    }
}

async fn serve(
    service: StoreService,
    bus: BusHandle,
    shutdown: Shutdown,
) -> Result<(), PluginError> {
    let StoreService {
        config,
        location,
        store,
        held,
    } = service;
    // The writer thread takes the engine first: it must live and be dropped outside the
    // runtime (a PostgreSQL client owns a runtime of its own).
    let meters = StoreMeters::new(bus.metrics());
    let (jobs, queue) = std_mpsc::sync_channel(WRITER_QUEUE);
    let writer_meters = meters.clone();
    let retention = Duration::from_secs(config.retention.saturating_mul(86_400));
    let writer = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn({
            let location = location.clone();
            move || write_loop(store, location, queue, writer_meters, retention, &held)
        })
        .map_err(|err| PluginError::new("store: cannot start the writer thread", err))?;

    let mut receiver = bus
        .add_subscriber(SubscriberOptions {
            label: "store".into(),
            snapshot_requests: config.answer_snapshots,
            local_snapshot_requests_only: true,
            when_full: Some(WhenFull::Block),
        })
        .await
        .map_err(|err| PluginError::new("store", err))?;
    bus.subscribe(
        receiver.id,
        vec!["stix2/indicator".into(), "stix2/sighting".into()],
        None,
    )
    .await
    .map_err(|err| PluginError::new("store", err))?;
    tracing::info!(store = %location.describe(), retention_days = config.retention, answer_snapshots = config.answer_snapshots, "store open");

    let mut batch = Vec::with_capacity(256);
    loop {
        batch.clear();
        // Input stops only when the bus stops: the store keeps taking what is still routed
        // while the queues drain.
        let received = tokio::select! {
            received = receiver.recv_many(&mut batch, 256) => received,
            _ = shutdown.stop.cancelled() => break,
        };
        if received == 0 {
            break;
        }
        let mut records = Vec::with_capacity(batch.len());
        for message in batch.drain(..) {
            match message.body() {
                Body::SnapshotRequest(request) => {
                    let meters = meters.clone();
                    tokio::spawn(answer(
                        bus.clone(),
                        location.clone(),
                        request.clone(),
                        meters,
                    ));
                }
                _ => records.extend(Record::from_message(&message)),
            }
        }
        if !records.is_empty() && hand_over(&jobs, Job::Write(records)).await.is_err() {
            return Err(PluginError::message("store: the writer thread stopped"));
        }
    }
    // Whatever is still queued for the store is written before it closes.
    let mut records = Vec::new();
    while let Some(message) = receiver.try_recv() {
        records.extend(Record::from_message(&message));
    }
    let _ = hand_over(&jobs, Job::Write(records)).await;
    let (done, flushed) = tokio::sync::oneshot::channel();
    let _ = hand_over(&jobs, Job::Flush(done)).await;
    drop(jobs);
    let _ = flushed.await;
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    Ok(())
}

/// The write connection, reopened when a write breaks it (a PostgreSQL server restarted or a
/// proxy closed the connection: the old client never works again).
struct Writer {
    location: Location,
    store: Option<Box<dyn Engine>>,
    meters: StoreMeters,
    /// Lines about failed writes and reopens: an outage is a few lines, not one per batch.
    failures: threatbus_core::throttle::LogThrottle,
}

impl Writer {
    /// The engine, opened again first if the last write failed; `None` while it cannot be.
    fn engine(&mut self) -> Option<&mut Box<dyn Engine>> {
        if self.store.is_none() {
            match self.location.open_writer() {
                Ok(store) => {
                    tracing::info!(store = %self.location.describe(), "store: reopened after a failed write");
                    self.store = Some(store);
                }
                Err(err) => {
                    if let Some(suppressed) = self.failures.allow() {
                        tracing::error!(error = %err, suppressed, "store: cannot reopen the store after a failed write");
                    }
                    return None;
                }
            }
        }
        self.store.as_mut()
    }

    /// Commits `pending` and empties it. A failed write closes the connection and is tried once
    /// more on a fresh one; what fails twice is lost, logged and counted.
    fn commit(&mut self, pending: &mut Vec<Record>) {
        if pending.is_empty() {
            return;
        }
        for attempt in 1..=2 {
            let Some(store) = self.engine() else {
                break;
            };
            let started = Instant::now();
            let written = store.write(pending);
            self.meters.commit.observe(started.elapsed());
            match written {
                Ok(counts) => {
                    self.meters.wrote(counts);
                    tracing::debug!(
                        records = pending.len(),
                        current = counts.current,
                        history = counts.history,
                        repeated = counts.repeated,
                        micros = started.elapsed().as_micros() as u64,
                        "store: batch committed"
                    );
                    pending.clear();
                    return;
                }
                Err(err) => {
                    if let Some(suppressed) = self.failures.allow() {
                        tracing::warn!(error = %err, records = pending.len(), attempt, suppressed, "store: write failed; reopening the store");
                    }
                    // Closed here, on the writer's own thread (a PostgreSQL client owns a
                    // runtime), before the store is opened again (an embedded store's lock).
                    self.store = None;
                }
            }
        }
        self.meters.lost.add(pending.len() as u64);
        tracing::error!(
            records = pending.len(),
            "store: write failed twice; these records are lost (routing went on)"
        );
        pending.clear();
    }
}

/// Owns the write connection: commits what arrives at least every [`FLUSH_INTERVAL`], and at
/// once when a batch is full or a flush is asked for.
fn write_loop(
    store: Box<dyn Engine>,
    location: Location,
    jobs: std_mpsc::Receiver<Job>,
    meters: StoreMeters,
    retention: Duration,
    held: &AtomicBool,
) {
    let mut writer = Writer {
        location,
        store: Some(store),
        meters: meters.clone(),
        failures: threatbus_core::throttle::LogThrottle::default(),
    };
    let mut pending: Vec<Record> = Vec::with_capacity(BATCH);
    let mut oldest: Option<Instant> = None;
    let mut next_prune = Instant::now();
    let mut next_stats = Instant::now();
    loop {
        if Instant::now() >= next_prune {
            if held.load(Ordering::Relaxed) {
                // A subscriber that fell behind may still need what is due to go.
                tracing::debug!("store: pruning postponed while subscribers catch up");
                next_prune = Instant::now() + PRUNE_POSTPONED;
            } else {
                if let Some(store) = writer.engine() {
                    prune(store, retention, &meters);
                }
                next_prune = Instant::now() + PRUNE_EVERY;
            }
        }
        if Instant::now() >= next_stats {
            if let Some(store) = writer.engine() {
                match store.stats(now_nanos()) {
                    Ok(stats) => meters.holds(&stats),
                    Err(err) => tracing::warn!(error = %err, "store: cannot count its objects"),
                }
            }
            next_stats = Instant::now() + STATS_EVERY;
        }
        let wait = oldest.map_or(STATS_EVERY, |at| {
            FLUSH_INTERVAL.saturating_sub(at.elapsed())
        });
        match jobs.recv_timeout(wait) {
            Ok(Job::Write(records)) => {
                pending.extend(records);
                oldest.get_or_insert_with(Instant::now);
                if pending.len() >= BATCH {
                    writer.commit(&mut pending);
                    oldest = None;
                }
            }
            Ok(Job::Flush(done)) => {
                writer.commit(&mut pending);
                oldest = None;
                let _ = done.send(());
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                writer.commit(&mut pending);
                oldest = None;
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                writer.commit(&mut pending);
                return;
            }
        }
    }
}

/// Removes what is older than the retention; logs what went.
fn prune(store: &mut Box<dyn Engine>, retention: Duration, meters: &StoreMeters) {
    let retention = i64::try_from(retention.as_nanos()).unwrap_or(i64::MAX);
    let before = now_nanos().saturating_sub(retention);
    let started = Instant::now();
    match store.prune(before) {
        Ok(0) => {}
        Ok(pruned) => {
            meters.pruned.add(pruned);
            tracing::info!(
                versions = pruned,
                ms = started.elapsed().as_millis() as u64,
                "store: pruned versions older than store.retention"
            );
        }
        Err(err) => tracing::warn!(error = %err, "store: pruning failed"),
    }
}

/// Nanoseconds since the epoch, now.
fn now_nanos() -> i64 {
    i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX)
}

/// Answers one snapshot request from a reader of its own, streaming envelopes to the
/// requester's queue only as fast as the requester makes room.
async fn answer(bus: BusHandle, location: Location, request: SnapshotRequest, meters: StoreMeters) {
    if request.snapshot <= SignedDuration::ZERO {
        return;
    }
    let kind = match request.snapshot_type {
        MessageType::Indicator => Kind::Indicator,
        MessageType::Sighting => Kind::Sighting,
    };
    let started = Instant::now();
    let snapshot_id = request.snapshot_id.clone();
    let seconds = request.snapshot.as_secs();
    let sent_counter = match kind {
        Kind::Indicator => meters.snapshot_indicators.clone(),
        Kind::Sighting => meters.snapshot_sightings.clone(),
    };
    let result = tokio::task::spawn_blocking(move || {
        let mut reader = location.open_reader()?;
        let now = now_nanos();
        let since = now.saturating_sub(
            i64::try_from(request.snapshot.as_nanos()).unwrap_or(i64::MAX),
        );
        let mut answer = Answer {
            bus: &bus,
            snapshot_id: &request.snapshot_id,
            chunk: Vec::with_capacity(CHUNK),
            room: 0,
            requester: String::new(),
            sent: 0,
            sent_counter: &sent_counter,
        };
        let mut outcome = Answered::Complete;
        reader.snapshot(kind, since, now, &mut |json| {
            let body = match Message::from_stored_json(bytes::Bytes::copy_from_slice(json)) {
                Ok(body) => body,
                Err(err) => {
                    tracing::warn!(error = %err, "store: a stored object no longer reads as bus input; skipped");
                    return true;
                }
            };
            match answer.push(body) {
                Ok(()) => true,
                Err(stop) => {
                    outcome = stop;
                    false
                }
            }
        })?;
        if matches!(outcome, Answered::Complete)
            && let Err(stop) = answer.flush()
        {
            outcome = stop;
        }
        let (sent, requester) = (answer.sent, answer.requester);
        Ok::<_, StoreError>((sent, outcome, requester))
    })
    .await;
    let millis = started.elapsed().as_millis() as u64;
    match result {
        Ok(Ok((sent, Answered::Complete, requester))) => tracing::info!(
            %snapshot_id, requester, kind = kind.name(), seconds, objects = sent, ms = millis,
            "store answered a snapshot"
        ),
        Ok(Ok((sent, outcome, requester))) => tracing::warn!(
            %snapshot_id, requester, kind = kind.name(), objects_sent = sent, ms = millis, reason = outcome.reason(),
            "store snapshot answer incomplete"
        ),
        Ok(Err(err)) => tracing::error!(%snapshot_id, error = %err, "store snapshot answer failed"),
        Err(err) => tracing::error!(%snapshot_id, error = %err, "store snapshot answer failed"),
    }
}

/// Bodies handed to the router in one command, at most.
const CHUNK: usize = 512;

/// One snapshot answer on its way: bodies are sent in chunks, never more than the requester's
/// queue has room for.
struct Answer<'a> {
    bus: &'a BusHandle,
    snapshot_id: &'a str,
    chunk: Vec<Message>,
    /// Slots left in the requester's queue, as last asked, minus what was taken since.
    room: usize,
    requester: String,
    sent: u64,
    sent_counter: &'a threatbus_core::metrics::Counter,
}

impl Answer<'_> {
    fn push(&mut self, body: Message) -> Result<(), Answered> {
        if self.room == 0 {
            let found = wait_for_room(self.bus, self.snapshot_id)?;
            self.room = found.free;
            self.requester = found.requester;
        }
        self.chunk.push(body);
        self.room -= 1;
        if self.chunk.len() >= CHUNK || self.room == 0 {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands the chunk over; what the requester's queue has no room for (it fills from other
    /// sources too: live traffic, catch-up) waits for room and goes again.
    fn flush(&mut self) -> Result<(), Answered> {
        while !self.chunk.is_empty() {
            let bodies = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
            let count = bodies.len() as u64;
            match self.bus.blocking_answer_snapshot(self.snapshot_id, bodies) {
                Ok(Some(rest)) => {
                    let queued = count - rest.len() as u64;
                    self.sent += queued;
                    self.sent_counter.add(queued);
                    self.chunk = rest;
                    if !self.chunk.is_empty() {
                        let found = wait_for_room(self.bus, self.snapshot_id)?;
                        self.requester = found.requester;
                        self.room = 0;
                    }
                }
                Ok(None) => return Err(Answered::RequesterGone),
                Err(_) => return Err(Answered::Stopped),
            }
        }
        Ok(())
    }
}

/// How an answer ended.
enum Answered {
    Complete,
    /// The requester left (or its snapshot id expired).
    RequesterGone,
    /// The requester read nothing for [`STALLED_REQUESTER`].
    RequesterStalled,
    /// The bus is stopping.
    Stopped,
}

impl Answered {
    fn reason(&self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::RequesterGone => "the requester is gone",
            Self::RequesterStalled => "the requester read nothing for 30 s",
            Self::Stopped => "the bus is stopping",
        }
    }
}

/// Waits until the requester's queue has room; the free slots, and who the requester is.
fn wait_for_room(bus: &BusHandle, snapshot_id: &str) -> Result<RequesterRoom, Answered> {
    let since = Instant::now();
    loop {
        match bus.blocking_snapshot_room(snapshot_id) {
            Err(_) => return Err(Answered::Stopped),
            Ok(None) => return Err(Answered::RequesterGone),
            Ok(Some(room)) if room.free > 0 => return Ok(room),
            Ok(Some(_)) if since.elapsed() >= STALLED_REQUESTER => {
                return Err(Answered::RequesterStalled);
            }
            Ok(Some(_)) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use threatbus_core::Registry;

    fn old_indicator() -> Record {
        let json = br#"{"type":"indicator","spec_version":"2.1","id":"indicator--00000000-0000-4000-8000-000000000001","created":"2001-01-01T00:00:00.000Z","modified":"2001-01-01T00:00:00.000Z","pattern":"[ipv4-addr:value = '10.0.0.1']","pattern_type":"stix","valid_from":"2001-01-01T00:00:00Z"}"#;
        Record::from_message(&Message::from_stix_json(json).unwrap()).unwrap()
    }

    /// Runs the writer over one record older than the retention, with pruning `held` or not;
    /// how many versions are left.
    fn versions_left(held: bool) -> u64 {
        let dir = std::env::temp_dir().join(format!(
            "threatbus-store-held-{held}-{}-{}",
            std::process::id(),
            now_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let location = Location::File(dir.join("store"));
        let mut store = location.open_writer().unwrap();
        store.write(&[old_indicator()]).unwrap();
        let (jobs, queue) = std_mpsc::sync_channel(WRITER_QUEUE);
        drop(jobs);
        let meters = StoreMeters::new(&Registry::default());
        let held = AtomicBool::new(held);
        // The first thing the writer does is prune; then it sees the queue closed and stops.
        write_loop(
            store,
            location.clone(),
            queue,
            meters,
            Duration::from_secs(86_400),
            &held,
        );
        let versions = location
            .open_reader()
            .unwrap()
            .stats(now_nanos())
            .unwrap()
            .versions;
        let _ = std::fs::remove_dir_all(&dir);
        versions
    }

    #[test]
    fn nothing_is_pruned_while_a_subscriber_catches_up() {
        assert_eq!(versions_left(true), 1);
        assert_eq!(versions_left(false), 0);
    }
}
