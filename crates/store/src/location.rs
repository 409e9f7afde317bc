//! Where a store is, and how to open it for each use.

use std::path::PathBuf;

use crate::StoreError;
use crate::engine::Engine;
use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;

/// Where a store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The embedded store's file.
    File(PathBuf),
    /// A PostgreSQL database (the URL as configured).
    Postgres(String),
}

impl Location {
    /// The store for writing: the one writer of an embedded store (`<path>.lock`), or one
    /// more writer of a shared PostgreSQL store. Creates or migrates the schema.
    pub fn open_writer(&self) -> Result<Box<dyn Engine>, StoreError> {
        Ok(match self {
            Self::File(path) => Box::new(SqliteStore::open(path)?),
            Self::Postgres(url) => Box::new(PgStore::open(url)?),
        })
    }

    /// A connection beside the bus's writer for the side tables (feed cursors): for an
    /// embedded store, one that writes without taking the store's lock; the bus must have opened
    /// (created, migrated) the store first.
    pub fn open_side(&self) -> Result<Box<dyn Engine>, StoreError> {
        Ok(match self {
            Self::File(path) => Box::new(SqliteStore::open_side(path)?),
            Self::Postgres(url) => Box::new(PgStore::open_reader(url)?),
        })
    }

    /// The store for reading, beside its writer.
    pub fn open_reader(&self) -> Result<Box<dyn Engine>, StoreError> {
        Ok(match self {
            Self::File(path) => Box::new(SqliteStore::open_reader(path)?),
            Self::Postgres(url) => Box::new(PgStore::open_reader(url)?),
        })
    }

    /// For log lines and errors: the file, or the server and database (no password).
    pub fn describe(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Postgres(url) => crate::postgres::describe(url),
        }
    }
}
