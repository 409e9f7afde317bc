//! Catch-up from the store: a subscriber that cannot take a message now gets it later, from the
//! store, in the order the bus routed it.
//!
//! With a store (a [`CatchUpSource`]) and `bus.catch_up_timeout` above 0, the router does not
//! drop an Indicator or Sighting for a `drop_newest` subscriber whose queue or the memory budget
//! is full. It marks the subscriber *behind* at that message's place in the [`Journal`]: the
//! keys (kind, id, `modified`) of the Indicators and Sightings routed while anyone is behind, in
//! routing order, 40-odd bytes each instead of a queued message's kilobyte or more. Everything
//! routed for a behind subscriber goes through the journal, so nothing overtakes anything.
//!
//! The [`worker`](run_worker) (one thread) asks the router for work: a behind subscriber whose
//! queue has drained below half of [`REPLAY_DEPTH`], and the next keys it subscribes to. It reads those versions
//! from the store and hands them back; the router queues them and moves the subscriber's place
//! on. When the place reaches the journal's end, in that same router step, the subscriber is
//! live again: no gap, no duplicate, no reordering. A key the store does not hold yet (it commits
//! within [`crate::catchup::MISSING_LIMIT`] of routing at the latest) is asked for again.
//!
//! Bounds: the journal takes at most a quarter of `bus.memory_budget` (charged to it); a
//! subscriber whose oldest missing message was routed longer than `bus.catch_up_timeout` ago,
//! or the one furthest behind when the journal is full, is given up: what it has not received is
//! dropped for it, counted and logged, and it gets messages as with plain `drop_newest` until
//! its queue has drained below half again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::budget::MemoryBudget;
use crate::message::{Body, Message, MessageType};
use crate::queue::SubscriberId;
use crate::stix::StixId;

/// Versions handed to a subscriber in one step, at most.
pub const CHUNK: usize = 512;

/// Replay fills a behind subscriber's queue up to this many messages (or its capacity), once it
/// has drained to half of that: enough to keep a reader busy between two steps, while many
/// subscribers catching up at once hold little memory (each replayed copy is its own message
/// unless subscribers replay the same stretch together).
pub const REPLAY_DEPTH: usize = 2048;

/// A key the store has not returned for this long is given up (counted as `not_stored`): its
/// write failed, or it never reached this store.
pub const MISSING_LIMIT: Duration = Duration::from_secs(30);

/// What one journal entry is charged against the memory budget (the entry and its share of the
/// ring's spare room).
pub const ENTRY_COST: usize = 48;

/// The share of `bus.memory_budget` the journal may take.
pub const JOURNAL_SHARE: usize = 4;

/// Journal entries scanned for one subscriber in one step, at most (a subscriber whose topics
/// match little of the journal still moves on in bounded steps).
const SCAN_LIMIT: usize = 65_536;

/// How often the journal notes the time, so that how long ago a place was routed is known to
/// about this much.
const MARK_EVERY: Duration = Duration::from_millis(500);

/// One version of one Indicator or Sighting, as the store finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchUpKey {
    kind: MessageType,
    id: KeyId,
    modified: i64,
}

/// The STIX id: the UUID alone when the id is `<kind>--<lower-case uuid>` (nearly always), else
/// the id as written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyId {
    Uuid([u8; 16]),
    Text(StixId),
}

impl CatchUpKey {
    /// The key of an Indicator or Sighting; `None` for snapshot requests and envelopes.
    pub fn of(message: &Message) -> Option<Self> {
        let (kind, id, modified) = match message.body() {
            Body::Indicator(indicator) => {
                (MessageType::Indicator, &indicator.id, &indicator.modified)
            }
            Body::Sighting(sighting) => (MessageType::Sighting, &sighting.id, &sighting.modified),
            Body::SnapshotRequest(_) | Body::SnapshotEnvelope(_) => return None,
        };
        let modified = i64::try_from(modified.as_nanosecond()).unwrap_or(i64::MAX);
        Some(Self {
            kind,
            id: compact(kind, id),
            modified,
        })
    }

    /// Indicator or Sighting.
    pub fn kind(&self) -> MessageType {
        self.kind
    }

    /// The STIX id.
    pub fn id(&self) -> String {
        match &self.id {
            KeyId::Uuid(bytes) => format!(
                "{}--{}",
                type_name(self.kind),
                uuid::Uuid::from_bytes(*bytes).hyphenated()
            ),
            KeyId::Text(id) => id.as_str().to_owned(),
        }
    }

    /// The version: `modified`, in nanoseconds since the Unix epoch (as the store keeps it).
    pub fn modified(&self) -> i64 {
        self.modified
    }

    /// The routing topic index (`topic::ALL`).
    fn topic_index(&self) -> usize {
        match self.kind {
            MessageType::Indicator => 0,
            MessageType::Sighting => 1,
        }
    }
}

fn type_name(kind: MessageType) -> &'static str {
    match kind {
        MessageType::Indicator => "indicator",
        MessageType::Sighting => "sighting",
    }
}

fn compact(kind: MessageType, id: &StixId) -> KeyId {
    let text = id.as_str();
    let uuid = text
        .strip_prefix(type_name(kind))
        .and_then(|rest| rest.strip_prefix("--"))
        .and_then(|uuid| {
            uuid::Uuid::try_parse(uuid)
                .ok()
                .map(|parsed| (uuid, parsed))
        });
    let mut buffer = [0u8; uuid::fmt::Hyphenated::LENGTH];
    match uuid {
        // Only if writing it back gives the same text (upper-case hex would not).
        Some((written, parsed))
            if parsed.hyphenated().encode_lower(&mut buffer).as_bytes() == written.as_bytes() =>
        {
            KeyId::Uuid(parsed.into_bytes())
        }
        _ => KeyId::Text(id.clone()),
    }
}

/// Where catch-up reads versions from: the store.
pub trait CatchUpSource: Send + Sync {
    /// A reader for the catch-up worker (opened on its thread, closed there).
    fn open(&self) -> Result<Box<dyn CatchUpReader>, String>;
    /// Called with `true` when a subscriber falls behind and `false` when none is any more:
    /// while held, the source keeps every version (no pruning).
    fn hold(&self, held: bool);
}

/// Reads versions by key.
pub trait CatchUpReader: Send {
    /// The JSON of each key's version, in the order of `keys`; `None` where there is no such
    /// version (yet).
    fn fetch(&mut self, keys: &[CatchUpKey]) -> Result<Vec<Option<Bytes>>, String>;
}

/// The keys routed while anyone is behind, in routing order, numbered from 0 since the bus
/// started.
pub(crate) struct Journal {
    entries: VecDeque<CatchUpKey>,
    /// The number of `entries[0]`.
    base: u64,
    /// (number, when it was routed) every [`MARK_EVERY`] or so, oldest first.
    marks: VecDeque<(u64, Instant)>,
    budget: Arc<MemoryBudget>,
    /// Most entries held.
    cap: usize,
}

impl Journal {
    pub(crate) fn new(budget: Arc<MemoryBudget>) -> Self {
        let cap = (budget.limit() / JOURNAL_SHARE / ENTRY_COST).max(CHUNK);
        Self {
            entries: VecDeque::new(),
            base: 0,
            marks: VecDeque::new(),
            budget,
            cap,
        }
    }

    /// The number the next entry gets.
    pub(crate) fn end(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.entries.len() >= self.cap
    }

    /// Appends `key`; its number.
    pub(crate) fn append(&mut self, key: CatchUpKey) -> u64 {
        let seq = self.end();
        let now = Instant::now();
        if self
            .marks
            .back()
            .is_none_or(|(_, at)| now.duration_since(*at) >= MARK_EVERY)
        {
            self.marks.push_back((seq, now));
        }
        self.entries.push_back(key);
        self.budget.add(ENTRY_COST);
        seq
    }

    pub(crate) fn get(&self, seq: u64) -> Option<&CatchUpKey> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.entries.get(index)
    }

    /// Forgets the entries numbered below `upto` (nobody needs them any more).
    pub(crate) fn trim(&mut self, upto: u64) {
        let upto = upto.min(self.end());
        if upto <= self.base {
            return;
        }
        let count = (upto - self.base) as usize;
        self.entries.drain(..count);
        self.base = upto;
        self.budget.release(count * ENTRY_COST);
        // Keep the last mark at or before the new base: it dates the first entry.
        while self.marks.len() > 1 && self.marks[1].0 <= upto {
            self.marks.pop_front();
        }
        if self.entries.is_empty() {
            self.marks.clear();
            // Memory back once nobody is behind.
            self.entries.shrink_to(CHUNK);
        }
    }

    /// When entry `seq` was routed, to within [`MARK_EVERY`] (no later than it was).
    pub(crate) fn routed_at(&self, seq: u64) -> Option<Instant> {
        let after = self.marks.partition_point(|(mark, _)| *mark <= seq);
        after
            .checked_sub(1)
            .and_then(|index| self.marks.get(index))
            .map(|(_, at)| *at)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.budget.release(self.entries.len() * ENTRY_COST);
    }
}

/// A subscriber's place in the journal while it is behind.
#[derive(Debug)]
pub(crate) struct Behind {
    /// The next entry it has not received.
    pub(crate) cursor: u64,
    /// When it fell behind.
    pub(crate) since: Instant,
    /// Which routing topics it receives (bit per `topic::ALL` index), from which entry on;
    /// ascending, the first at or before `cursor`.
    masks: Vec<(u64, u8)>,
    /// Versions handed to it since it fell behind.
    pub(crate) replayed: u64,
    /// The most entries it was behind by.
    pub(crate) furthest: u64,
    /// The worker is reading versions for it.
    pub(crate) in_flight: bool,
}

impl Behind {
    pub(crate) fn new(at: u64, mask: u8) -> Self {
        Self {
            cursor: at,
            since: Instant::now(),
            masks: vec![(at, mask)],
            replayed: 0,
            furthest: 0,
            in_flight: false,
        }
    }

    /// Its topics changed: from entry `at` on it receives `mask`.
    pub(crate) fn set_mask(&mut self, at: u64, mask: u8) {
        match self.masks.last_mut() {
            Some(last) if last.0 == at => last.1 = mask,
            Some(last) if last.1 == mask => {}
            _ => self.masks.push((at, mask)),
        }
    }

    fn receives(&self, seq: u64, key: &CatchUpKey) -> bool {
        let index = self.masks.partition_point(|(from, _)| *from <= seq);
        let mask = index
            .checked_sub(1)
            .and_then(|i| self.masks.get(i))
            .map_or(0, |(_, mask)| *mask);
        mask & (1 << key.topic_index()) != 0
    }

    /// Moves the place on to `cursor`, forgetting topic changes it has passed.
    pub(crate) fn advance(&mut self, cursor: u64) {
        self.cursor = self.cursor.max(cursor);
        while self.masks.len() > 1 && self.masks[1].0 <= self.cursor {
            self.masks.remove(0);
        }
    }

    /// Up to `limit` keys it receives from its place on, with their numbers, and the number
    /// after the last entry looked at.
    pub(crate) fn next_keys(
        &self,
        journal: &Journal,
        limit: usize,
    ) -> (Vec<(u64, CatchUpKey)>, u64) {
        let mut keys = Vec::new();
        let mut seq = self.cursor.max(journal.base);
        let stop = journal.end().min(seq + SCAN_LIMIT as u64);
        while seq < stop && keys.len() < limit {
            if let Some(key) = journal.get(seq)
                && self.receives(seq, key)
            {
                keys.push((seq, key.clone()));
            }
            seq += 1;
        }
        (keys, seq)
    }

    /// How many entries from its place on it would receive (what giving it up drops).
    pub(crate) fn owed(&self, journal: &Journal) -> u64 {
        let mut owed = 0;
        let mut seq = self.cursor.max(journal.base);
        while let Some(key) = journal.get(seq) {
            owed += u64::from(self.receives(seq, key));
            seq += 1;
        }
        owed
    }
}

/// Where a subscriber stands.
#[derive(Debug, Default)]
pub(crate) enum Lag {
    /// Gets messages as they are routed.
    #[default]
    Live,
    /// Gets what it missed from the store first (see [`Behind`]).
    Behind(Box<Behind>),
    /// Was given up: gets messages as with plain `drop_newest` until its queue has drained
    /// below half.
    GaveUp,
}

/// The worker's question: the next versions to read, for whom.
#[derive(Debug)]
pub(crate) enum Work {
    /// Nobody is behind.
    Idle,
    /// Someone is behind, but no queue has room yet.
    Wait,
    /// Read these keys for `id`, whose place is `from`; `to` is where it will be once they are
    /// delivered.
    Read {
        id: SubscriberId,
        from: u64,
        to: u64,
        keys: Vec<(u64, CatchUpKey)>,
    },
}

/// The worker's answer: what it read for `id`.
#[derive(Debug)]
pub(crate) struct Replay {
    pub(crate) id: SubscriberId,
    pub(crate) from: u64,
    /// The versions read, in journal order.
    pub(crate) messages: Vec<(u64, Message)>,
    /// Where the place is once `messages` are queued (the first key not stored yet, or the
    /// `to` of the work).
    pub(crate) next: u64,
    /// Keys given up: the store did not have them after [`MISSING_LIMIT`], or what it had no
    /// longer reads as a message.
    pub(crate) not_stored: Vec<u64>,
}

/// What the worker asks the router, and how (the router's mailbox from a plain thread).
pub(crate) trait WorkSource {
    /// The next work; `None` once the bus stops.
    fn next_work(&self) -> Option<Work>;
    /// Hands back what was read; false once the bus stops.
    fn replay(&self, replay: Replay) -> bool;
}

/// Messages read recently, shared by subscribers replaying the same stretch (one read and one
/// parse for all of them).
struct Recent {
    messages: HashMap<u64, Message>,
    order: VecDeque<u64>,
    /// What the messages held cost ([`Message::cost`]), and the most they may.
    bytes: usize,
    cap: usize,
}

impl Recent {
    fn get(&self, seq: u64) -> Option<Message> {
        self.messages.get(&seq).cloned()
    }

    fn put(&mut self, seq: u64, message: Message) {
        let cost = message.cost();
        if self.messages.insert(seq, message).is_none() {
            self.order.push_back(seq);
            self.bytes += cost;
        }
        while self.bytes > self.cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.messages.remove(&old) {
                self.bytes = self.bytes.saturating_sub(gone.cost());
            }
        }
    }

    fn clear(&mut self) {
        self.messages.clear();
        self.order.clear();
        self.bytes = 0;
    }
}

/// What the messages in [`Recent`] may cost in all (they count against the memory budget
/// like any queued message): about 10,000 indicators.
const RECENT_BYTES: usize = 16 << 20;

/// How long the worker sleeps when no behind subscriber has room.
const WAIT: Duration = Duration::from_millis(2);

/// The catch-up worker: runs on a thread of its own until the router is gone or `wake` is
/// disconnected. `wake` is signalled when a subscriber falls behind.
pub(crate) fn run_worker(
    work: &dyn WorkSource,
    source: &dyn CatchUpSource,
    wake: std::sync::mpsc::Receiver<()>,
) {
    let mut reader: Option<Box<dyn CatchUpReader>> = None;
    let mut recent = Recent {
        messages: HashMap::new(),
        order: VecDeque::new(),
        bytes: 0,
        cap: RECENT_BYTES,
    };
    // (subscriber, entry) first found missing, and when.
    let mut missing: HashMap<SubscriberId, (u64, Instant)> = HashMap::new();
    let mut failures = crate::throttle::LogThrottle::default();
    loop {
        let Some(next) = work.next_work() else {
            return;
        };
        let (id, from, to, keys) = match next {
            Work::Idle => {
                recent.clear();
                missing.clear();
                match wake.recv_timeout(Duration::from_secs(1)) {
                    Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            Work::Wait => {
                std::thread::sleep(WAIT);
                continue;
            }
            Work::Read { id, from, to, keys } => (id, from, to, keys),
        };
        let mut replay = Replay {
            id,
            from,
            messages: Vec::with_capacity(keys.len()),
            next: to,
            not_stored: Vec::new(),
        };
        let cached: Vec<Option<Message>> = keys.iter().map(|(seq, _)| recent.get(*seq)).collect();
        let wanted: Vec<CatchUpKey> = keys
            .iter()
            .zip(&cached)
            .filter(|(_, hit)| hit.is_none())
            .map(|((_, key), _)| key.clone())
            .collect();
        let fetched = if wanted.is_empty() {
            Ok(Vec::new())
        } else {
            fetch(&mut reader, source, &wanted)
        };
        let mut fetched = match fetched {
            Ok(found) => found.into_iter(),
            Err(err) => {
                if let Some(suppressed) = failures.allow() {
                    tracing::error!(error = %err, suppressed, "catch-up: cannot read from the store; retrying");
                }
                reader = None;
                replay.next = from;
                if !work.replay(replay) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        for ((seq, key), cached) in keys.into_iter().zip(cached) {
            let found = match cached {
                Some(message) => Some(Some(message)),
                // A stored version that no longer reads is skipped at once (logged).
                None => fetched.next().flatten().map(|json| decode(&key, json)),
            };
            match found {
                Some(Some(message)) => {
                    recent.put(seq, message.clone());
                    replay.messages.push((seq, message));
                }
                Some(None) => replay.not_stored.push(seq),
                None => {
                    let first_seen = match missing.get(&id) {
                        Some((at, since)) if *at == seq => *since,
                        _ => {
                            missing.insert(id, (seq, Instant::now()));
                            Instant::now()
                        }
                    };
                    if first_seen.elapsed() >= MISSING_LIMIT {
                        tracing::warn!(subscriber = %id, id = %key.id(), modified = key.modified(), "catch-up: the store does not hold this version; dropped for the subscriber");
                        missing.remove(&id);
                        replay.not_stored.push(seq);
                        continue;
                    }
                    replay.next = seq;
                    break;
                }
            }
        }
        let waiting = replay.next < to && replay.messages.is_empty();
        if !work.replay(replay) {
            return;
        }
        if waiting {
            // The store has not committed it yet.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn fetch(
    reader: &mut Option<Box<dyn CatchUpReader>>,
    source: &dyn CatchUpSource,
    keys: &[CatchUpKey],
) -> Result<Vec<Option<Bytes>>, String> {
    if reader.is_none() {
        *reader = Some(source.open()?);
    }
    let Some(open) = reader.as_mut() else {
        return Err("no reader".into());
    };
    let found = open.fetch(keys)?;
    if found.len() != keys.len() {
        return Err(format!(
            "asked for {} versions, got {} answers",
            keys.len(),
            found.len()
        ));
    }
    Ok(found)
}

/// The stored JSON as a message; `None` (logged) if it no longer reads as one.
fn decode(key: &CatchUpKey, json: Bytes) -> Option<Message> {
    match Message::from_stored_json(json) {
        Ok(message) => Some(message),
        Err(err) => {
            tracing::warn!(id = %key.id(), error = %err, "catch-up: a stored version no longer reads as bus input; skipped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8, kind: MessageType) -> CatchUpKey {
        let id = StixId::parse(&format!(
            "{}--00000000-0000-4000-8000-0000000000{n:02x}",
            type_name(kind)
        ))
        .unwrap();
        CatchUpKey {
            kind,
            id: compact(kind, &id),
            modified: i64::from(n),
        }
    }

    #[test]
    fn keys_write_their_id_back_as_it_was() {
        let lower = StixId::parse("indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc").unwrap();
        let k = CatchUpKey {
            kind: MessageType::Indicator,
            id: compact(MessageType::Indicator, &lower),
            modified: 1,
        };
        assert!(matches!(k.id, KeyId::Uuid(_)));
        assert_eq!(k.id(), lower.as_str());
        let upper = StixId::parse("indicator--DF0F9A0E-C3B6-4F53-B0CF-5E9C454EE0CC").unwrap();
        let k = CatchUpKey {
            kind: MessageType::Indicator,
            id: compact(MessageType::Indicator, &upper),
            modified: 1,
        };
        assert!(matches!(k.id, KeyId::Text(_)));
        assert_eq!(k.id(), upper.as_str());
        // A sighting id under an indicator key is kept as written too.
        let other = StixId::parse("sighting--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc").unwrap();
        assert_eq!(
            CatchUpKey {
                kind: MessageType::Indicator,
                id: compact(MessageType::Indicator, &other),
                modified: 1
            }
            .id(),
            other.as_str()
        );
        assert!(std::mem::size_of::<CatchUpKey>() <= ENTRY_COST);
    }

    #[test]
    fn the_journal_charges_the_budget_and_trims() {
        let budget = MemoryBudget::new(1 << 20);
        let mut journal = Journal::new(budget.clone());
        for n in 0..10 {
            assert_eq!(journal.append(key(n, MessageType::Indicator)), u64::from(n));
        }
        assert_eq!(budget.used(), 10 * ENTRY_COST);
        assert!(journal.routed_at(0).is_some());
        journal.trim(4);
        assert_eq!((journal.base, journal.end(), journal.len()), (4, 10, 6));
        assert_eq!(journal.get(3), None);
        assert_eq!(journal.get(4), Some(&key(4, MessageType::Indicator)));
        assert!(journal.routed_at(4).is_some());
        assert_eq!(budget.used(), 6 * ENTRY_COST);
        drop(journal);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_behind_subscriber_gets_the_topics_it_had_when_each_entry_was_routed() {
        let budget = MemoryBudget::new(1 << 20);
        let mut journal = Journal::new(budget);
        for n in 0..6 {
            let kind = if n % 2 == 0 {
                MessageType::Indicator
            } else {
                MessageType::Sighting
            };
            journal.append(key(n, kind));
        }
        // Indicators only from 0, both kinds from 4.
        let mut behind = Behind::new(0, 0b01);
        behind.set_mask(4, 0b11);
        let (keys, to) = behind.next_keys(&journal, 100);
        let seqs: Vec<u64> = keys.iter().map(|(seq, _)| *seq).collect();
        assert_eq!((seqs, to), (vec![0, 2, 4, 5], 6));
        assert_eq!(behind.owed(&journal), 4);
        let (keys, to) = behind.next_keys(&journal, 2);
        assert_eq!((keys.len(), to), (2, 3));
        behind.advance(5);
        assert_eq!(behind.masks, vec![(4, 0b11)]);
        assert_eq!(behind.owed(&journal), 1);
    }
}
