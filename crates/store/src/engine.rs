//! What every store engine does.

use crate::listing::{Listed, Listing};
use crate::record::{Kind, Record};
use crate::sqlite::{SqliteStore, Stats};
use crate::{StoreError, WriteCounts};

/// The operations the service and the commands need, whatever the engine.
pub trait Engine: Send {
    /// Stores `records` in one transaction.
    fn write(&mut self, records: &[Record]) -> Result<WriteCounts, StoreError>;
    /// Hands out the objects a snapshot of `kind` over `[since, …]` at `now` answers with, one
    /// at a time, until `each` returns `false`; how many were handed out.
    fn snapshot(
        &mut self,
        kind: Kind,
        since: i64,
        now: i64,
        each: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<u64, StoreError>;
    /// Hands out every stored object modified since `since` (current versions, or all).
    fn export(
        &mut self,
        since: i64,
        all_versions: bool,
        each: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<u64, StoreError>;
    /// What the store holds at `now`.
    fn stats(&mut self, now: i64) -> Result<Stats, StoreError>;
    /// One page of versions, in the order the store added them (see [`crate::listing`]).
    fn list(&mut self, listing: &Listing) -> Result<Vec<Listed>, StoreError>;
    /// The JSON of the versions `(id, modified)`, in the order asked; `None` where the store
    /// holds no such version.
    fn versions(&mut self, keys: &[(String, i64)])
    -> Result<Vec<Option<bytes::Bytes>>, StoreError>;
    /// The saved position of a TAXII feed (the feeds app's cursor), if any.
    fn feed_cursor(&mut self, feed: &str) -> Result<Option<String>, StoreError>;
    /// Saves the position of a TAXII feed.
    fn set_feed_cursor(&mut self, feed: &str, cursor: &str) -> Result<(), StoreError>;
    /// The oldest and newest `modified` of the current versions.
    fn span(&mut self) -> Result<Option<(i64, i64)>, StoreError>;
    /// Removes versions modified before `before`; how many.
    fn prune(&mut self, before: i64) -> Result<u64, StoreError>;
    /// Bytes the store takes on disk (for a shared database: its tables and their indexes).
    fn bytes_on_disk(&mut self) -> Result<u64, StoreError>;
}

/// Closes `engines` on a thread of their own. A PostgreSQL connection owns a runtime, which
/// must not be dropped on one of the bus's runtime threads (tokio panics); an embedded store
/// does not mind. Call it wherever an async task lets go of engines it kept.
pub fn close_off_runtime(engines: Vec<Box<dyn Engine>>) {
    if engines.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("store-close".into())
        .spawn(move || drop(engines));
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "store: cannot start a thread to close connections; leaving them open");
    }
}

impl Engine for SqliteStore {
    fn write(&mut self, records: &[Record]) -> Result<WriteCounts, StoreError> {
        SqliteStore::write(self, records)
    }

    fn snapshot(
        &mut self,
        kind: Kind,
        since: i64,
        now: i64,
        each: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<u64, StoreError> {
        SqliteStore::snapshot(self, kind, since, now, each)
    }

    fn export(
        &mut self,
        since: i64,
        all_versions: bool,
        each: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<u64, StoreError> {
        SqliteStore::export(self, since, all_versions, each)
    }

    fn stats(&mut self, now: i64) -> Result<Stats, StoreError> {
        SqliteStore::stats(self, now)
    }

    fn list(&mut self, listing: &Listing) -> Result<Vec<Listed>, StoreError> {
        SqliteStore::list(self, listing)
    }

    fn versions(
        &mut self,
        keys: &[(String, i64)],
    ) -> Result<Vec<Option<bytes::Bytes>>, StoreError> {
        SqliteStore::versions(self, keys)
    }

    fn feed_cursor(&mut self, feed: &str) -> Result<Option<String>, StoreError> {
        SqliteStore::feed_cursor(self, feed)
    }

    fn set_feed_cursor(&mut self, feed: &str, cursor: &str) -> Result<(), StoreError> {
        SqliteStore::set_feed_cursor(self, feed, cursor)
    }

    fn span(&mut self) -> Result<Option<(i64, i64)>, StoreError> {
        SqliteStore::span(self)
    }

    fn prune(&mut self, before: i64) -> Result<u64, StoreError> {
        SqliteStore::prune(self, before)
    }

    fn bytes_on_disk(&mut self) -> Result<u64, StoreError> {
        let mut total = 0;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.path().as_os_str().to_owned();
            name.push(suffix);
            total += std::fs::metadata(&name).map_or(0, |m| m.len());
        }
        Ok(total)
    }
}
