//! The router's side of catch-up (see [`crate::catchup`]): the journal and the subscribers
//! behind, falling behind, the worker's requests and answers, giving up, going live again.

use std::sync::Arc;
use std::time::Instant;

use super::{Placed, Router};
use crate::budget::Admission;
use crate::catchup::{self, Behind, CatchUpKey, CatchUpSource, Journal, Lag, Replay, Work};
use crate::config::WhenFull;
use crate::message::Message;
use crate::queue::{Offer, SubscriberId};
use crate::throttle::LogThrottle;

/// The router's side of catch-up (see [`crate::catchup`]).
pub(super) struct CatchUp {
    source: Arc<dyn CatchUpSource>,
    pub(super) journal: Journal,
    timeout: std::time::Duration,
    /// The subscribers behind, served in turn.
    behind: Vec<SubscriberId>,
    turn: usize,
    /// Wakes the worker when someone falls behind.
    wake: std::sync::mpsc::SyncSender<()>,
    /// "Fell behind" and "caught up" lines: a subscriber that reads at about the rate of the
    /// traffic may do both many times a second.
    log: LogThrottle,
    /// When subscribers behind were last checked against the timeout.
    checked: Option<Instant>,
}

/// How often subscribers behind are checked against `bus.catch_up_timeout`.
const TIMEOUT_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

impl Router {
    /// Feeds subscribers that fall behind from `source` (see [`crate::catchup`]); `wake` tells
    /// the worker when one does.
    pub(crate) fn with_catch_up(
        mut self,
        source: Arc<dyn CatchUpSource>,
        wake: std::sync::mpsc::SyncSender<()>,
    ) -> Self {
        self.catch_up = Some(CatchUp {
            source,
            journal: Journal::new(self.budget.clone()),
            timeout: self.config.catch_up_timeout,
            behind: Vec::new(),
            turn: 0,
            wake,
            log: LogThrottle::new(32, std::time::Duration::from_secs(5)),
            checked: None,
        });
        self
    }

    /// Routes an Indicator or Sighting (`key`) while catch-up is on: a subscriber that is
    /// behind gets it later from the store (through the journal), a live `drop_newest`
    /// subscriber that cannot take it now falls behind at it; the others are offered it as
    /// without catch-up.
    pub(super) async fn route_with_catch_up(
        &mut self,
        targets: &[SubscriberId],
        message: &Message,
    ) {
        // The key is made only when the journal needs it: nobody behind, nothing to note.
        let mut noted = false;
        let mut seq = None;
        if self.catch_up.as_ref().is_some_and(|c| !c.behind.is_empty()) {
            noted = true;
            seq = CatchUpKey::of(message).and_then(|key| self.journal_append(key));
        }
        for id in targets {
            let Some(subscriber) = self.subscribers.get_mut(id) else {
                continue;
            };
            let low_water = subscriber.queue.depth() <= subscriber.queue.capacity() / 2;
            match &subscriber.lag {
                Lag::Behind(_) => continue,
                Lag::GaveUp if low_water => subscriber.lag = Lag::Live,
                Lag::GaveUp => {
                    self.offer(*id, message).await;
                    continue;
                }
                Lag::Live => {}
            }
            let policy = subscriber
                .queue
                .options
                .when_full
                .unwrap_or(self.config.when_full);
            if policy != WhenFull::DropNewest {
                self.offer(*id, message).await;
                continue;
            }
            match self.place(*id, message).await {
                Placed::Queued => {}
                Placed::Gone => self.gone(*id),
                Placed::Full | Placed::Budget => {
                    if !noted {
                        noted = true;
                        seq = CatchUpKey::of(message).and_then(|key| self.journal_append(key));
                    }
                    match seq {
                        Some(seq) => self.fall_behind(*id, seq),
                        // The journal could not take it.
                        None => {
                            if let Some(subscriber) = self.subscribers.get_mut(id) {
                                subscriber.meters.dropped_limit.inc();
                                subscriber.queue.count_drops(*id, 1);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Appends `key` to the journal, giving up the subscriber furthest behind while it is
    /// full; its number, or `None` if nobody is behind any more and the journal is still full.
    fn journal_append(&mut self, key: CatchUpKey) -> Option<u64> {
        loop {
            let catch_up = self.catch_up.as_mut()?;
            if !catch_up.journal.is_full() {
                return Some(catch_up.journal.append(key));
            }
            let (_, id) = self.furthest_behind()?;
            self.give_up(id, "catch_up_limit");
        }
    }

    /// The place and id of the subscriber furthest behind, if any is.
    fn furthest_behind(&self) -> Option<(u64, SubscriberId)> {
        let catch_up = self.catch_up.as_ref()?;
        catch_up
            .behind
            .iter()
            .filter_map(|id| match self.subscribers.get(id).map(|s| &s.lag) {
                Some(Lag::Behind(behind)) => Some((behind.cursor, *id)),
                _ => None,
            })
            .min()
    }

    /// `id` could not take the Indicator or Sighting numbered `seq`: it gets it, and what
    /// follows, from the store.
    fn fall_behind(&mut self, id: SubscriberId, seq: u64) {
        let mask = self.mask_of(id);
        let Some(catch_up) = self.catch_up.as_mut() else {
            return;
        };
        let Some(subscriber) = self.subscribers.get_mut(&id) else {
            return;
        };
        if let Some(suppressed) = catch_up.log.allow() {
            tracing::info!(
                subscriber = %id,
                label = %subscriber.queue.options.label,
                app = subscriber.app,
                queued = subscriber.queue.depth(),
                memory_used = self.budget.used(),
                suppressed,
                "subscriber fell behind: it gets what it misses from the store once its queue drains"
            );
        }
        subscriber.lag = Lag::Behind(Box::new(Behind::new(seq, mask)));
        subscriber.meters.behind.inc();
        catch_up.behind.push(id);
        if catch_up.behind.len() == 1 {
            catch_up.source.hold(true);
        }
        let _ = catch_up.wake.try_send(());
    }

    /// Takes `id` off the list of subscribers behind (its lag is set by the caller) and forgets
    /// the journal entries nobody needs any more.
    pub(super) fn leave_behind(&mut self, id: SubscriberId) {
        let Some(catch_up) = self.catch_up.as_mut() else {
            return;
        };
        let Some(position) = catch_up.behind.iter().position(|b| *b == id) else {
            return;
        };
        catch_up.behind.remove(position);
        if let Some(subscriber) = self.subscribers.get(&id) {
            subscriber.meters.behind.dec();
        }
        if catch_up.behind.is_empty() {
            catch_up.source.hold(false);
        }
        self.trim_journal();
    }

    /// Forgets the journal entries below every behind subscriber's place.
    fn trim_journal(&mut self) {
        let lowest = self.furthest_behind().map(|(cursor, _)| cursor);
        if let Some(catch_up) = self.catch_up.as_mut() {
            let end = catch_up.journal.end();
            catch_up.journal.trim(lowest.unwrap_or(end));
        }
    }

    /// Gives up feeding `id` from the store: what it has not received is dropped for it,
    /// counted under `reason` and logged; it gets messages as with plain `drop_newest` until its
    /// queue drains below half.
    fn give_up(&mut self, id: SubscriberId, reason: &'static str) {
        let Some(catch_up) = self.catch_up.as_ref() else {
            return;
        };
        let Some(subscriber) = self.subscribers.get_mut(&id) else {
            return;
        };
        let Lag::Behind(behind) = std::mem::replace(&mut subscriber.lag, Lag::GaveUp) else {
            return;
        };
        let owed = behind.owed(&catch_up.journal);
        let counter = if reason == "catch_up_limit" {
            &subscriber.meters.dropped_limit
        } else {
            &subscriber.meters.dropped_timeout
        };
        counter.add(owed);
        subscriber
            .queue
            .dropped
            .fetch_add(owed, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            subscriber = %id,
            label = %subscriber.queue.options.label,
            app = subscriber.app,
            dropped = owed,
            replayed = behind.replayed,
            behind_seconds = behind.since.elapsed().as_secs(),
            reason,
            timeout_seconds = catch_up.timeout.as_secs(),
            "subscriber behind for too long (bus.catch_up_timeout) or the catch-up journal is full: what it has not received is dropped for it"
        );
        self.leave_behind(id);
    }

    /// The worker's next work (see [`crate::catchup::Work`]).
    pub(super) fn next_work(&mut self) -> Work {
        let Some(catch_up) = self.catch_up.as_ref() else {
            return Work::Idle;
        };
        if catch_up.behind.is_empty() {
            return Work::Idle;
        }
        // Those behind for too long are given up first (checked every TIMEOUT_CHECK).
        let timeout = catch_up.timeout;
        let due = catch_up
            .checked
            .is_none_or(|at| at.elapsed() >= TIMEOUT_CHECK);
        let expired: Vec<SubscriberId> = if due {
            catch_up
                .behind
                .iter()
                .filter(|id| match self.subscribers.get(id).map(|s| &s.lag) {
                    Some(Lag::Behind(behind)) => {
                        catch_up.journal.routed_at(behind.cursor).is_some_and(|at| {
                            at.elapsed() > timeout && behind.cursor < catch_up.journal.end()
                        })
                    }
                    _ => false,
                })
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        if due && let Some(catch_up) = self.catch_up.as_mut() {
            catch_up.checked = Some(Instant::now());
        }
        for id in expired {
            self.give_up(id, "catch_up_timeout");
        }
        let mut tried = 0;
        loop {
            let Some(catch_up) = self.catch_up.as_mut() else {
                return Work::Idle;
            };
            let count = catch_up.behind.len();
            if count == 0 {
                return Work::Idle;
            }
            if tried >= count {
                return Work::Wait;
            }
            tried += 1;
            catch_up.turn = (catch_up.turn + 1) % count;
            let id = catch_up.behind[catch_up.turn];
            let journal = &catch_up.journal;
            let Some(subscriber) = self.subscribers.get_mut(&id) else {
                continue;
            };
            let (depth, capacity) = (subscriber.queue.depth(), subscriber.queue.capacity());
            let Lag::Behind(behind) = &mut subscriber.lag else {
                continue;
            };
            let fill = capacity.min(catchup::REPLAY_DEPTH);
            if behind.in_flight || !subscriber.listening || depth > fill / 2 {
                continue;
            }
            behind.furthest = behind
                .furthest
                .max(journal.end().saturating_sub(behind.cursor));
            let room = fill.saturating_sub(depth).min(catchup::CHUNK);
            if room == 0 {
                continue;
            }
            let (keys, to) = behind.next_keys(journal, room);
            if keys.is_empty() {
                behind.advance(to);
                if behind.cursor >= journal.end() {
                    self.caught_up(id);
                    tried = 0;
                }
                continue;
            }
            behind.in_flight = true;
            return Work::Read {
                id,
                from: behind.cursor,
                to,
                keys,
            };
        }
    }

    /// Queues what the worker read for a behind subscriber, as far as its queue and the budget
    /// take it, and moves its place on; live again once it reaches the journal's end.
    pub(super) fn replay(&mut self, replay: Replay) {
        let average = if self.budget.is_tight() {
            self.average_depth()
        } else {
            f64::INFINITY
        };
        let Some(catch_up) = self.catch_up.as_ref() else {
            return;
        };
        let Some(subscriber) = self.subscribers.get_mut(&replay.id) else {
            return;
        };
        let Lag::Behind(behind) = &mut subscriber.lag else {
            return;
        };
        if !behind.in_flight || behind.cursor != replay.from {
            return;
        }
        behind.in_flight = false;
        let mut cursor = replay.next;
        for (seq, message) in &replay.messages {
            if self
                .budget
                .admit(message, subscriber.queue.depth(), average)
                != Admission::Queue
            {
                cursor = *seq;
                break;
            }
            match subscriber.queue.try_queue(message) {
                Offer::Delivered => {
                    subscriber.meters.sent[message.body().topic_index()].inc();
                    subscriber.meters.replayed.inc();
                    behind.replayed += 1;
                }
                Offer::DroppedFull | Offer::Gone => {
                    self.budget.release_copies(1);
                    cursor = *seq;
                    break;
                }
            }
        }
        // Given up for good only where the place moves past them.
        let skipped = replay
            .not_stored
            .iter()
            .filter(|seq| **seq < cursor)
            .count() as u64;
        if skipped > 0 {
            subscriber.meters.dropped_not_stored.add(skipped);
            subscriber
                .queue
                .dropped
                .fetch_add(skipped, std::sync::atomic::Ordering::Relaxed);
        }
        behind.advance(cursor);
        if behind.cursor >= catch_up.journal.end() {
            self.caught_up(replay.id);
        } else {
            self.trim_journal();
        }
    }

    /// `id` has received everything up to the journal's end: it is live again.
    fn caught_up(&mut self, id: SubscriberId) {
        let Some(subscriber) = self.subscribers.get_mut(&id) else {
            return;
        };
        let Lag::Behind(behind) = std::mem::replace(&mut subscriber.lag, Lag::Live) else {
            return;
        };
        if let Some(suppressed) = self.catch_up.as_mut().and_then(|c| c.log.allow()) {
            tracing::info!(
                subscriber = %id,
                label = %subscriber.queue.options.label,
                app = subscriber.app,
                replayed = behind.replayed,
                furthest_behind = behind.furthest,
                ms = behind.since.elapsed().as_millis() as u64,
                suppressed,
                "subscriber caught up from the store: live again"
            );
        }
        self.leave_behind(id);
    }
}
