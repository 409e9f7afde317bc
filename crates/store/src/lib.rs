//! The intel store: every Indicator and Sighting the bus routes, kept as the bus published it
//! (its canonical JSON) and versioned as STIX 2.1 says, so that the bus answers snapshot
//! requests itself and remembers across restarts.
//!
//! * [`config`]: the `store` section;
//! * [`record`]: what is kept of a message;
//! * [`engine`]: what every engine does; [`location`]: where a store is, opened for each use;
//! * [`listing`]: versions in the order they were added, a page at a time (TAXII);
//! * [`sqlite`]: the embedded engine; [`postgres`]: the shared one;
//! * [`catchup`]: versions read back for subscribers that fell behind;
//! * [`service`]: the bus service that writes what the router routes and answers the snapshot
//!   requests of this instance's subscribers.

#![forbid(unsafe_code)]

pub mod catchup;
pub mod config;
pub mod engine;
pub mod listing;
pub mod location;
pub mod metrics;
pub mod postgres;
pub mod record;
pub mod service;
pub mod sqlite;

use thiserror::Error;

pub use catchup::StoreCatchUp;
pub use config::StoreConfig;
pub use engine::{Engine, close_off_runtime};
pub use listing::{Listed, Listing, VersionSelect};
pub use location::Location;
pub use record::{Kind, Record};
pub use service::StoreService;
pub use sqlite::{SqliteStore, Stats};

/// What went wrong with the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The store cannot be opened; it is left as it is. `location` is the file, or the
    /// PostgreSQL server and database (never the password).
    #[error("store {location}: {cause}")]
    Open { location: String, cause: String },
    /// A read or write of the embedded store failed.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A read or write of the PostgreSQL store failed.
    #[error("store (PostgreSQL): {0}")]
    Postgres(#[from] ::postgres::Error),
}

/// What one batch write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// Versions that became their object's current version.
    pub current: u64,
    /// Versions older than the current one: kept, but they change nothing.
    pub history: u64,
    /// Versions the store had already (same `id` and `modified`): no-ops.
    pub repeated: u64,
}
