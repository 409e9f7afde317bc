//! The store as the bus's catch-up source: subscribers that fell behind are fed the versions
//! they missed from here, and nothing is pruned while any subscriber is behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use threatbus_core::{CatchUpKey, CatchUpReader, CatchUpSource};

use crate::engine::Engine;
use crate::location::Location;

/// The store, as catch-up reads it.
#[derive(Debug)]
pub struct StoreCatchUp {
    location: Location,
    /// Some subscriber is behind: the writer does not prune.
    held: Arc<AtomicBool>,
}

impl StoreCatchUp {
    pub(crate) fn new(location: Location, held: Arc<AtomicBool>) -> Self {
        Self { location, held }
    }
}

impl CatchUpSource for StoreCatchUp {
    fn open(&self) -> Result<Box<dyn CatchUpReader>, String> {
        let engine = self.location.open_reader().map_err(|err| err.to_string())?;
        Ok(Box::new(Reader(engine)))
    }

    fn hold(&self, held: bool) {
        self.held.store(held, Ordering::Relaxed);
        tracing::debug!(held, "store: pruning paused while subscribers catch up");
    }
}

/// A read connection of the catch-up worker (opened and closed on its thread).
struct Reader(Box<dyn Engine>);

impl CatchUpReader for Reader {
    fn fetch(&mut self, keys: &[CatchUpKey]) -> Result<Vec<Option<Bytes>>, String> {
        let keys: Vec<(String, i64)> = keys.iter().map(|k| (k.id(), k.modified())).collect();
        self.0.versions(&keys).map_err(|err| err.to_string())
    }
}
