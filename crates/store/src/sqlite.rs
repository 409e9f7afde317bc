//! The embedded engine: one SQLite file (WAL journal), opened by one bus at a time.
//!
//! Two tables: `versions` keeps every version ever stored (`id`, `modified` unique; the rowid is
//! the order it was added in), `current` the greatest version of each object with the fields the
//! snapshot queries filter on. A write is one transaction per batch; a version older than the
//! current one lands in `versions` only, the same version again changes nothing.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

use crate::listing::{Listed, Listing, next_added, now_micros, version_condition};
use crate::record::{Kind, Record};
use crate::{StoreError, WriteCounts};

/// The schema this build writes. A store with a greater version was written by a newer build
/// and is refused; a smaller one is migrated forward at open.
pub const SCHEMA_VERSION: i64 = 3;

/// The application id in the SQLite header (`PRAGMA application_id`): "TBst". A file with
/// another non-zero id is some other program's database and is refused.
pub const APPLICATION_ID: i64 = 0x5442_7374;

/// How long a write waits for a lock held by another connection (a store command while the
/// bus runs) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The page cache of the writer connection, in KiB.
const WRITER_CACHE_KIB: i64 = 8192;

/// The embedded store.
pub struct SqliteStore {
    connection: Connection,
    path: PathBuf,
    /// Held while the store is open for writing (`<path>.lock`): one bus per store.
    _lock: Option<File>,
    /// The greatest `added` time given to a version so far (writers only).
    last_added: i64,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Takes `<path>.lock` for as long as the returned file is held: a second bus (or a writing
/// store command) on the same store fails here instead of interleaving its writes.
fn lock(path: &Path) -> Result<File, StoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let open_error = |cause: String| StoreError::Open {
        location: path.display().to_string(),
        cause,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|err| {
            open_error(format!(
                "cannot create the lock file {}: {err}",
                lock_path.display()
            ))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(open_error(format!(
            "locked by another process (is another bus running on this store? {} is held)",
            lock_path.display()
        ))),
        Err(TryLockError::Error(err)) => Err(open_error(format!(
            "cannot lock {}: {err}",
            lock_path.display()
        ))),
    }
}

/// Says what went wrong with the file at `path`, in words an operator can act on.
fn open_error(path: &Path, err: rusqlite::Error) -> StoreError {
    let cause = match err.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => {
            "not a Threat Bus store (not an SQLite database, or corrupt)".to_owned()
        }
        Some(ErrorCode::DatabaseCorrupt) => "the file is corrupt".to_owned(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "locked by another process (is another bus running on this store?)".to_owned()
        }
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen) => {
            format!("cannot be opened for writing ({err})")
        }
        _ => err.to_string(),
    };
    StoreError::Open {
        location: path.display().to_string(),
        cause,
    }
}

impl SqliteStore {
    /// Opens the store at `path`, creating it if it does not exist, and migrates its schema
    /// forward. Refuses (and leaves untouched) a file that is not a store, is corrupt, is
    /// locked by another bus, cannot be written or was written by a newer build.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let lock = lock(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection =
            Connection::open_with_flags(path, flags).map_err(|err| open_error(path, err))?;
        let mut store = Self {
            connection,
            path: path.to_owned(),
            _lock: Some(lock),
            last_added: 0,
        };
        store.prepare().map_err(|err| match err {
            StoreError::Sqlite(inner) => open_error(path, inner),
            other => other,
        })?;
        Ok(store)
    }

    /// A second, read-only connection to the store a bus has open (snapshot answers, which
    /// then never hold up the writer).
    pub fn open_reader(path: &Path) -> Result<Self, StoreError> {
        Self::beside(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
    }

    /// A connection beside the writer (no lock, no migration), waiting up to
    /// [`BUSY_TIMEOUT`] for the writer's locks.
    fn beside(path: &Path, access: OpenFlags) -> Result<Self, StoreError> {
        let flags = access | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection =
            Connection::open_with_flags(path, flags).map_err(|err| open_error(path, err))?;
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|err| open_error(path, err))?;
        Ok(Self {
            connection,
            path: path.to_owned(),
            _lock: None,
            last_added: 0,
        })
    }

    /// A connection beside the writer for the small side tables (feed cursors): read-write,
    /// but neither creating, locking nor migrating the store, which the bus has open already.
    pub fn open_side(path: &Path) -> Result<Self, StoreError> {
        let side = Self::beside(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        // As the writer: in WAL mode NORMAL loses at most the last commits on power loss.
        side.connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|err| open_error(path, err))?;
        Ok(side)
    }

    /// The saved position of a TAXII feed, if any.
    pub fn feed_cursor(&self, feed: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .connection
            .query_row(
                "SELECT cursor FROM feed_cursors WHERE feed = ?1",
                [feed],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Saves the position of a TAXII feed.
    pub fn set_feed_cursor(&self, feed: &str, cursor: &str) -> Result<(), StoreError> {
        self.connection.execute(
            "INSERT INTO feed_cursors (feed, cursor, updated) VALUES (?1, ?2, ?3)
             ON CONFLICT (feed) DO UPDATE SET cursor = excluded.cursor, updated = excluded.updated",
            params![feed, cursor, now_micros()],
        )?;
        Ok(())
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn prepare(&mut self) -> Result<(), StoreError> {
        let c = &self.connection;
        c.busy_timeout(BUSY_TIMEOUT)?;
        // Reading the header first finds a file that is not a database before anything is
        // written to it.
        let application_id: i64 = c.query_row("PRAGMA application_id", [], |row| row.get(0))?;
        let version: i64 = c.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if application_id != 0 && application_id != APPLICATION_ID {
            return Err(StoreError::Open {
                location: self.path.display().to_string(),
                cause: format!(
                    "an SQLite database of another program (application id {application_id:#x}), not a Threat Bus store"
                ),
            });
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::Open {
                location: self.path.display().to_string(),
                cause: format!(
                    "schema version {version} was written by a newer Threat Bus (this one reads up to {SCHEMA_VERSION})"
                ),
            });
        }
        let tables: i64 =
            c.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))?;
        if application_id == 0 && tables > 0 {
            return Err(StoreError::Open {
                location: self.path.display().to_string(),
                cause: "an SQLite database with tables of its own, not a Threat Bus store"
                    .to_owned(),
            });
        }
        // WAL: readers (store commands, snapshots) do not block the writer; NORMAL sync loses
        // at most the last transactions on power loss, never consistency.
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "NORMAL")?;
        // The writer's page cache (KiB): the id indexes take random inserts, which touch pages
        // all over them; 2 MiB (SQLite's default) held too few of them in a bulk load.
        c.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        self.migrate(version)?;
        // Per kind, each an index lookup.
        self.last_added = self.connection.query_row(
            "SELECT max(coalesce((SELECT max(added) FROM versions WHERE kind = 0), 0),
                        coalesce((SELECT max(added) FROM versions WHERE kind = 1), 0))",
            [],
            |row| row.get(0),
        )?;
        Ok(())
    }

    /// Brings the schema from `version` to [`SCHEMA_VERSION`], one step per version.
    fn migrate(&mut self, version: i64) -> Result<(), StoreError> {
        if version >= SCHEMA_VERSION {
            return Ok(());
        }
        let tx = self.connection.transaction()?;
        if version < 1 {
            tx.execute_batch(
                "CREATE TABLE versions (
                     position INTEGER PRIMARY KEY,
                     id TEXT NOT NULL,
                     modified INTEGER NOT NULL,
                     kind INTEGER NOT NULL,
                     json BLOB NOT NULL,
                     UNIQUE (id, modified)
                 );
                 CREATE TABLE current (
                     id TEXT PRIMARY KEY,
                     kind INTEGER NOT NULL,
                     created INTEGER NOT NULL,
                     modified INTEGER NOT NULL,
                     withdrawn INTEGER NOT NULL,
                     valid_until INTEGER,
                     position INTEGER NOT NULL
                 ) WITHOUT ROWID;
                 CREATE INDEX current_by_kind_modified ON current (kind, modified);
                 CREATE INDEX current_by_kind_created ON current (kind, created);
                 CREATE INDEX versions_by_modified ON versions (modified);",
            )?;
        }
        if version < 2 {
            // `added`: when the store took each version (µs since the epoch, strictly
            // increasing), for TAXII's `date_added`. Versions stored before have no such time:
            // they get consecutive microseconds ending now, in the order they were stored.
            tx.execute_batch(
                "ALTER TABLE versions ADD COLUMN added INTEGER NOT NULL DEFAULT 0;
                 CREATE INDEX versions_by_kind_added ON versions (kind, added);",
            )?;
            tx.execute(
                "UPDATE versions SET added = ?1 - (SELECT max(position) FROM versions) + position",
                [now_micros()],
            )?;
        }
        if version < 3 {
            // Where each TAXII feed stopped, so that a restart resumes there.
            tx.execute_batch(
                "CREATE TABLE feed_cursors (
                     feed TEXT PRIMARY KEY,
                     cursor TEXT NOT NULL,
                     updated INTEGER NOT NULL
                 ) WITHOUT ROWID;",
            )?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.commit()?;
        tracing::info!(
            path = %self.path.display(),
            from = version,
            to = SCHEMA_VERSION,
            "store schema created or migrated"
        );
        Ok(())
    }

    /// Stores `records` in one transaction.
    pub fn write(&mut self, records: &[Record]) -> Result<WriteCounts, StoreError> {
        let mut counts = WriteCounts::default();
        let tx = self.connection.transaction()?;
        {
            let mut insert_version = tx.prepare_cached(
                "INSERT INTO versions (id, modified, kind, json, added) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id, modified) DO NOTHING",
            )?;
            // Becomes current unless a newer version is (one statement: no row changed means
            // the version is history).
            let mut upsert_current = tx.prepare_cached(
                "INSERT INTO current (id, kind, created, modified, withdrawn, valid_until, position)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (id) DO UPDATE SET
                     kind = excluded.kind, created = excluded.created,
                     modified = excluded.modified, withdrawn = excluded.withdrawn,
                     valid_until = excluded.valid_until, position = excluded.position
                 WHERE excluded.modified > current.modified",
            )?;
            for record in records {
                let added = next_added(self.last_added);
                let inserted = insert_version.execute(params![
                    record.id,
                    record.modified,
                    record.kind.code(),
                    record.json.as_ref(),
                    added
                ])?;
                if inserted == 0 {
                    counts.repeated += 1;
                    continue;
                }
                self.last_added = added;
                let position = tx.last_insert_rowid();
                let changed = upsert_current.execute(params![
                    record.id,
                    record.kind.code(),
                    record.created,
                    record.modified,
                    record.withdrawn,
                    record.valid_until,
                    position
                ])?;
                if changed == 0 {
                    counts.history += 1;
                } else {
                    counts.current += 1;
                }
            }
        }
        tx.commit()?;
        Ok(counts)
    }

    /// Calls `each` with the JSON of every object a snapshot of `kind` over the last `since`
    /// nanoseconds answers with, at `now` (nanoseconds since the epoch), in `modified` order,
    /// until `each` returns `false`. Indicators: the current version of every one that is
    /// neither withdrawn nor expired, modified since `since`; sightings: every one created
    /// since `since`. Rows are read one at a time, never all at once. Returns how many were
    /// handed out.
    pub fn snapshot(
        &self,
        kind: Kind,
        since: i64,
        now: i64,
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> Result<u64, StoreError> {
        let sql = match kind {
            Kind::Indicator => {
                "SELECT v.json FROM current c JOIN versions v ON v.position = c.position
                 WHERE c.kind = 0 AND c.withdrawn = 0 AND c.modified >= ?1
                   AND (c.valid_until IS NULL OR c.valid_until > ?2)
                 ORDER BY c.modified"
            }
            Kind::Sighting => {
                "SELECT v.json FROM current c JOIN versions v ON v.position = c.position
                 WHERE c.kind = 1 AND c.created >= ?1 AND ?2 = ?2
                 ORDER BY c.created"
            }
        };
        let mut statement = self.connection.prepare_cached(sql)?;
        let mut rows = statement.query(params![since, now])?;
        let mut handed = 0;
        while let Some(row) = rows.next()? {
            let json = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
            handed += 1;
            if !each(json) {
                break;
            }
        }
        Ok(handed)
    }

    /// Calls `each` with every stored object modified at or after `since` (nanoseconds since
    /// the epoch), in the order they were added: the current versions only, or with
    /// `all_versions` every version, until `each` returns `false`. Rows are read one at a time.
    /// Returns how many were handed out.
    pub fn export(
        &self,
        since: i64,
        all_versions: bool,
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> Result<u64, StoreError> {
        let sql = if all_versions {
            "SELECT json FROM versions WHERE modified >= ?1 ORDER BY position"
        } else {
            "SELECT v.json FROM current c JOIN versions v ON v.position = c.position
             WHERE c.modified >= ?1 ORDER BY c.position"
        };
        let mut statement = self.connection.prepare(sql)?;
        let mut rows = statement.query([since])?;
        let mut exported = 0;
        while let Some(row) = rows.next()? {
            exported += 1;
            if !each(row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?) {
                break;
            }
        }
        Ok(exported)
    }

    /// One page of versions of `listing.kind`, in the order they were added (see
    /// [`crate::listing`]).
    pub fn list(&self, listing: &Listing) -> Result<Vec<Listed>, StoreError> {
        let Some(versions) = version_condition(
            listing.versions,
            "versions",
            "current",
            "v.modified IN (SELECT value FROM json_each(?4))",
        ) else {
            return Ok(Vec::new());
        };
        // With ids, the (id, modified) index finds the rows: `+` keeps SQLite from walking the
        // `added` index instead.
        let (plus, ids) = if listing.ids.is_empty() {
            ("", "?3 IS NULL")
        } else {
            ("+", "v.id IN (SELECT value FROM json_each(?3))")
        };
        let json = if listing.with_json { "v.json" } else { "NULL" };
        let sql = format!(
            "SELECT v.id, v.modified, v.added, {json} FROM versions v
             WHERE v.kind = ?1 AND {plus}v.added > ?2 AND {ids} AND ?4 IS ?4 AND {versions}
             ORDER BY {plus}v.added LIMIT ?5"
        );
        // Lists travel as JSON arrays (`json_each`); an empty one as NULL.
        let ids = (!listing.ids.is_empty())
            .then(|| serde_json::to_string(listing.ids).ok())
            .flatten();
        let at = (!listing.versions.at.is_empty())
            .then(|| serde_json::to_string(&listing.versions.at).ok())
            .flatten();
        let limit = i64::try_from(listing.limit).unwrap_or(i64::MAX);
        let mut statement = self.connection.prepare_cached(&sql)?;
        let rows = statement.query_map(
            params![listing.kind.code(), listing.added_after, ids, at, limit],
            |row| {
                let json: Option<Vec<u8>> = row.get(3)?;
                Ok(Listed {
                    id: row.get(0)?,
                    modified: row.get(1)?,
                    added: row.get(2)?,
                    json: json.map(bytes::Bytes::from),
                })
            },
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The oldest and newest `modified` of the current versions, if any.
    /// The JSON of the versions `(id, modified)`, in the order asked; `None` where there is no
    /// such version.
    pub fn versions(
        &self,
        keys: &[(String, i64)],
    ) -> Result<Vec<Option<bytes::Bytes>>, StoreError> {
        let mut select = self
            .connection
            .prepare_cached("SELECT json FROM versions WHERE id = ?1 AND modified = ?2")?;
        let mut found = Vec::with_capacity(keys.len());
        for (id, modified) in keys {
            let json: Option<Vec<u8>> = select
                .query_row(params![id, modified], |row| row.get(0))
                .optional()?;
            found.push(json.map(bytes::Bytes::from));
        }
        Ok(found)
    }

    pub fn span(&self) -> Result<Option<(i64, i64)>, StoreError> {
        let span: (Option<i64>, Option<i64>) = self.connection.query_row(
            "SELECT min(modified), max(modified) FROM current",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok(span.0.zip(span.1))
    }

    /// What the store holds.
    pub fn stats(&self, now: i64) -> Result<Stats, StoreError> {
        let c = &self.connection;
        let count = |sql: &str| -> Result<u64, StoreError> {
            let n: i64 = c.query_row(sql, params![now], |row| row.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(Stats {
            indicators_active: count(
                "SELECT count(*) FROM current WHERE kind = 0 AND withdrawn = 0
                   AND (valid_until IS NULL OR valid_until > ?1)",
            )?,
            indicators_withdrawn: count(
                "SELECT count(*) FROM current WHERE kind = 0 AND withdrawn = 1 AND ?1 = ?1",
            )?,
            indicators_expired: count(
                "SELECT count(*) FROM current WHERE kind = 0 AND withdrawn = 0
                   AND valid_until IS NOT NULL AND valid_until <= ?1",
            )?,
            sightings: count("SELECT count(*) FROM current WHERE kind = 1 AND ?1 = ?1")?,
            versions: count("SELECT count(*) FROM versions WHERE ?1 = ?1")?,
        })
    }

    /// Removes every version modified before `before` (nanoseconds since the epoch), and the
    /// objects whose current version is among them. Returns how many versions went.
    pub fn prune(&mut self, before: i64) -> Result<u64, StoreError> {
        let tx = self.connection.transaction()?;
        tx.execute("DELETE FROM current WHERE modified < ?1", [before])?;
        let removed = tx.execute(
            "DELETE FROM versions WHERE modified < ?1
               AND position NOT IN (SELECT position FROM current)",
            [before],
        )?;
        tx.commit()?;
        Ok(removed as u64)
    }
}

/// What the store holds (see [`SqliteStore::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Indicators whose current version is neither withdrawn nor expired.
    pub indicators_active: u64,
    pub indicators_withdrawn: u64,
    pub indicators_expired: u64,
    pub sightings: u64,
    /// Versions of all objects, current ones included.
    pub versions: u64,
}
