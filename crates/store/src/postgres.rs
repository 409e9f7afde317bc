//! The PostgreSQL engine: the same two tables as the embedded store (`threatbus_versions`,
//! `threatbus_current`) in a database several bus instances may share. Every write is an
//! idempotent upsert, so instances that all store what the backbone carries agree; a batch is
//! two statements whatever its size (arrays unnested on the server).

use std::collections::HashMap;
use std::str::FromStr;

use ::postgres::{Client, Config, NoTls};

use crate::engine::Engine;
use crate::listing::{Listed, Listing, next_added, now_micros, version_condition};
use crate::record::{Kind, Record};
use crate::sqlite::Stats;
use crate::{StoreError, WriteCounts};

/// The schema this build writes (in `threatbus_meta`).
pub const SCHEMA_VERSION: i64 = 3;

/// How long connecting may take unless the URL says (`connect_timeout=`).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A PostgreSQL store.
pub struct PgStore {
    client: Client,
}

/// `host:port/dbname` of a URL, for logs and errors (never the password).
pub fn describe(url: &str) -> String {
    match Config::from_str(url) {
        Ok(config) => {
            let host = config
                .get_hosts()
                .first()
                .map(|host| match host {
                    ::postgres::config::Host::Tcp(name) => name.clone(),
                    ::postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .unwrap_or_else(|| "localhost".into());
            let port = config.get_ports().first().copied().unwrap_or(5432);
            let db = config.get_dbname().unwrap_or("(default database)");
            format!("postgresql://{host}:{port}/{db}")
        }
        Err(_) => "PostgreSQL (unparsable URL)".into(),
    }
}

fn open_error(url: &str, cause: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        location: describe(url),
        cause: cause.to_string(),
    }
}

/// Connects; the URL's own errors and the server's refusal are open errors.
fn connect(url: &str) -> Result<Client, StoreError> {
    let config = Config::from_str(url)
        .map_err(|err| open_error(url, format!("not a usable PostgreSQL URL: {err}")))?;
    if config.get_ssl_mode() == ::postgres::config::SslMode::Require {
        return Err(open_error(
            url,
            "sslmode=require: TLS to PostgreSQL is not supported yet (use a local socket, a tunnel or sslmode=disable)",
        ));
    }
    let mut config = config;
    // A server that does not answer must not hold the writer (and so the bus) for long.
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config
        .connect(NoTls)
        .map_err(|err| open_error(url, format!("cannot connect: {err}")))
}

impl PgStore {
    /// Connects and creates or migrates the schema (under an advisory lock, so that instances
    /// starting together do not race).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let mut client = connect(url)?;
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock(7353420110)", &[])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS threatbus_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )?;
        let version: Option<String> = tx
            .query_opt(
                "SELECT value FROM threatbus_meta WHERE key = 'schema_version'",
                &[],
            )?
            .map(|row| row.get(0));
        let version: i64 = match version {
            None => 0,
            Some(text) => text.parse().map_err(|_| {
                open_error(
                    url,
                    format!("threatbus_meta.schema_version is {text:?}, not a number"),
                )
            })?,
        };
        if version > SCHEMA_VERSION {
            return Err(open_error(
                url,
                format!(
                    "schema version {version} was written by a newer Threat Bus (this one reads up to {SCHEMA_VERSION})"
                ),
            ));
        }
        if version < 1 {
            tx.batch_execute(
                "CREATE TABLE threatbus_versions (
                     position BIGSERIAL PRIMARY KEY,
                     id TEXT NOT NULL,
                     modified BIGINT NOT NULL,
                     kind SMALLINT NOT NULL,
                     json BYTEA NOT NULL,
                     UNIQUE (id, modified)
                 );
                 CREATE TABLE threatbus_current (
                     id TEXT PRIMARY KEY,
                     kind SMALLINT NOT NULL,
                     created BIGINT NOT NULL,
                     modified BIGINT NOT NULL,
                     withdrawn BOOLEAN NOT NULL,
                     valid_until BIGINT,
                     position BIGINT NOT NULL
                 );
                 CREATE INDEX threatbus_current_by_kind_modified ON threatbus_current (kind, modified);
                 CREATE INDEX threatbus_current_by_kind_created ON threatbus_current (kind, created);
                 CREATE INDEX threatbus_versions_by_modified ON threatbus_versions (modified);",
            )?;
        }
        if version < 2 {
            // `added`, as in the embedded store (see `crate::listing`); versions stored before
            // get consecutive microseconds ending now, in the order they were stored.
            tx.batch_execute(
                "ALTER TABLE threatbus_versions ADD COLUMN added BIGINT NOT NULL DEFAULT 0;
                 CREATE INDEX threatbus_versions_by_kind_added ON threatbus_versions (kind, added);
                 CREATE INDEX threatbus_versions_by_added ON threatbus_versions (added);",
            )?;
            tx.execute(
                "UPDATE threatbus_versions
                 SET added = $1 - (SELECT max(position) FROM threatbus_versions) + position",
                &[&now_micros()],
            )?;
        }
        if version < 3 {
            tx.batch_execute(
                "CREATE TABLE threatbus_feed_cursors (
                     feed TEXT PRIMARY KEY,
                     cursor TEXT NOT NULL,
                     updated BIGINT NOT NULL
                 );",
            )?;
        }
        if version < SCHEMA_VERSION {
            tx.execute(
                "INSERT INTO threatbus_meta (key, value) VALUES ('schema_version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&SCHEMA_VERSION.to_string()],
            )?;
            tracing::info!(database = %describe(url), from = version, to = SCHEMA_VERSION, "store schema created or migrated");
        }
        tx.commit()?;
        Ok(Self { client })
    }

    /// A connection for reading (a snapshot answer, a command).
    pub fn open_reader(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            client: connect(url)?,
        })
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Engine for PgStore {
    fn write(&mut self, records: &[Record]) -> Result<WriteCounts, StoreError> {
        if records.is_empty() {
            return Ok(WriteCounts::default());
        }
        let mut tx = self.client.transaction()?;
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let modified: Vec<i64> = records.iter().map(|r| r.modified).collect();
        let kinds: Vec<i16> = records.iter().map(|r| r.kind.code() as i16).collect();
        let json: Vec<&[u8]> = records.iter().map(|r| r.json.as_ref()).collect();
        // `added` must grow in commit order across every instance writing to this database,
        // so writers take turns from here to their commit, and each batch continues from the
        // greatest `added` committed.
        tx.execute("SELECT pg_advisory_xact_lock(7353420112)", &[])?;
        let last: Option<i64> = tx
            .query_one("SELECT max(added) FROM threatbus_versions", &[])?
            .get(0);
        let first = next_added(last.unwrap_or(0));
        let added: Vec<i64> = (0..records.len() as i64)
            .map(|i| first.saturating_add(i))
            .collect();
        let inserted = tx.query(
            "INSERT INTO threatbus_versions (id, modified, kind, json, added)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int2[], $4::bytea[], $5::int8[])
             ON CONFLICT (id, modified) DO NOTHING
             RETURNING id, modified, position",
            &[&ids, &modified, &kinds, &json, &added],
        )?;
        // Counted as the embedded store counts, in arrival order: a new version is current if
        // it is newer than the object's current one (stored, or earlier in this batch).
        let by_key: HashMap<(&str, i64), &Record> = records
            .iter()
            .map(|r| ((r.id.as_str(), r.modified), r))
            .collect();
        let mut positions: HashMap<(&str, i64), i64> = HashMap::new();
        for row in &inserted {
            let id: &str = row.get(0);
            let modified: i64 = row.get(1);
            if let Some(record) = by_key.get(&(id, modified)) {
                positions.insert((record.id.as_str(), modified), row.get(2));
            }
        }
        let new_ids: Vec<&str> = positions.keys().map(|(id, _)| *id).collect();
        let mut newest_modified: HashMap<String, i64> = tx
            .query(
                "SELECT id, modified FROM threatbus_current WHERE id = ANY($1)",
                &[&new_ids],
            )?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let mut newest: HashMap<&str, (&Record, i64)> = HashMap::new();
        let mut current_count = 0u64;
        for record in records {
            let Some(position) = positions.remove(&(record.id.as_str(), record.modified)) else {
                continue;
            };
            let known = newest_modified.get(record.id.as_str()).copied();
            if known.is_some_and(|modified| modified >= record.modified) {
                continue;
            }
            current_count += 1;
            newest_modified.insert(record.id.clone(), record.modified);
            newest.insert(record.id.as_str(), (record, position));
        }
        let candidates: Vec<&(&Record, i64)> = newest.values().collect();
        let c_ids: Vec<&str> = candidates.iter().map(|(r, _)| r.id.as_str()).collect();
        let c_kinds: Vec<i16> = candidates
            .iter()
            .map(|(r, _)| r.kind.code() as i16)
            .collect();
        let c_created: Vec<i64> = candidates.iter().map(|(r, _)| r.created).collect();
        let c_modified: Vec<i64> = candidates.iter().map(|(r, _)| r.modified).collect();
        let c_withdrawn: Vec<bool> = candidates.iter().map(|(r, _)| r.withdrawn).collect();
        let c_valid_until: Vec<Option<i64>> =
            candidates.iter().map(|(r, _)| r.valid_until).collect();
        let c_position: Vec<i64> = candidates.iter().map(|(_, p)| *p).collect();
        tx.execute(
            "INSERT INTO threatbus_current (id, kind, created, modified, withdrawn, valid_until, position)
             SELECT * FROM unnest($1::text[], $2::int2[], $3::int8[], $4::int8[], $5::bool[], $6::int8[], $7::int8[])
             ON CONFLICT (id) DO UPDATE SET
                 kind = excluded.kind, created = excluded.created, modified = excluded.modified,
                 withdrawn = excluded.withdrawn, valid_until = excluded.valid_until,
                 position = excluded.position
             WHERE threatbus_current.modified < excluded.modified",
            &[&c_ids, &c_kinds, &c_created, &c_modified, &c_withdrawn, &c_valid_until, &c_position],
        )?;
        tx.commit()?;
        let inserted = inserted.len() as u64;
        Ok(WriteCounts {
            current: current_count,
            history: inserted.saturating_sub(current_count),
            repeated: records.len() as u64 - inserted,
        })
    }

    fn snapshot(
        &mut self,
        kind: Kind,
        since: i64,
        now: i64,
        each: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<u64, StoreError> {
        let sql = match kind {
            Kind::Indicator => {
                "SELECT v.json FROM threatbus_current c JOIN threatbus_versions v ON v.position = c.position
                 WHERE c.kind = 0 AND NOT c.withdrawn AND c.modified >= $1
                   AND (c.valid_until IS NULL OR c.valid_until > $2)
                 ORDER BY c.modified"
            }
            Kind::Sighting => {
                "SELECT v.json FROM threatbus_current c JOIN threatbus_versions v ON v.position = c.position
                 WHERE c.kind = 1 AND c.created >= $1 AND $2::int8 IS NOT NULL
                 ORDER BY c.created"
            }
        };
        stream(&mut self.client, sql, &[&since, &now], each)
    }

    fn versions(
        &mut self,
        keys: &[(String, i64)],
    ) -> Result<Vec<Option<bytes::Bytes>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = keys.iter().map(|(id, _)| id.as_str()).collect();
        let modified: Vec<i64> = keys.iter().map(|(_, m)| *m).collect();
        let rows = self.client.query(
            "SELECT k.n, v.json FROM unnest($1::text[], $2::int8[]) WITH ORDINALITY AS k(id, modified, n)
             JOIN threatbus_versions v ON v.id = k.id AND v.modified = k.modified",
            &[&ids, &modified],
        )?;
        let mut found = vec![None; keys.len()];
        for row in rows {
            let n: i64 = row.get(0);
            let json: Vec<u8> = row.get(1);
            if let Some(slot) = usize::try_from(n - 1).ok().and_then(|i| found.get_mut(i)) {
                *slot = Some(bytes::Bytes::from(json));
            }
        }
        Ok(found)
    }

    fn export(
        &mut self,
        since: i64,
        all_versions: bool,
        each: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<u64, StoreError> {
        let sql = if all_versions {
            "SELECT json FROM threatbus_versions WHERE modified >= $1 ORDER BY position"
        } else {
            "SELECT v.json FROM threatbus_current c JOIN threatbus_versions v ON v.position = c.position
             WHERE c.modified >= $1 ORDER BY c.position"
        };
        stream(&mut self.client, sql, &[&since], each)
    }

    fn stats(&mut self, now: i64) -> Result<Stats, StoreError> {
        let row = self.client.query_one(
            "SELECT
                 count(*) FILTER (WHERE kind = 0 AND NOT withdrawn AND (valid_until IS NULL OR valid_until > $1)),
                 count(*) FILTER (WHERE kind = 0 AND withdrawn),
                 count(*) FILTER (WHERE kind = 0 AND NOT withdrawn AND valid_until IS NOT NULL AND valid_until <= $1),
                 count(*) FILTER (WHERE kind = 1),
                 (SELECT count(*) FROM threatbus_versions)
             FROM threatbus_current",
            &[&now],
        )?;
        Ok(Stats {
            indicators_active: count(row.get(0)),
            indicators_withdrawn: count(row.get(1)),
            indicators_expired: count(row.get(2)),
            sightings: count(row.get(3)),
            versions: count(row.get(4)),
        })
    }

    fn list(&mut self, listing: &Listing) -> Result<Vec<Listed>, StoreError> {
        let Some(versions) = version_condition(
            listing.versions,
            "threatbus_versions",
            "threatbus_current",
            "v.modified = ANY($4)",
        ) else {
            return Ok(Vec::new());
        };
        let json = if listing.with_json {
            "v.json"
        } else {
            "NULL::bytea"
        };
        let ids_clause = if listing.ids.is_empty() {
            "$3::text[] IS NULL"
        } else {
            "v.id = ANY($3)"
        };
        let sql = format!(
            "SELECT v.id, v.modified, v.added, {json} FROM threatbus_versions v
             WHERE v.kind = $1 AND v.added > $2 AND {ids_clause} AND ($4::int8[] IS NULL OR TRUE)
               AND {versions}
             ORDER BY v.added LIMIT $5"
        );
        let ids: Option<Vec<&str>> =
            (!listing.ids.is_empty()).then(|| listing.ids.iter().map(String::as_str).collect());
        let at: Option<&Vec<i64>> =
            (!listing.versions.at.is_empty()).then_some(&listing.versions.at);
        let kind = listing.kind.code() as i16;
        let limit = i64::try_from(listing.limit).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(&sql, &[&kind, &listing.added_after, &ids, &at, &limit])?;
        Ok(rows
            .iter()
            .map(|row| {
                let json: Option<Vec<u8>> = row.get(3);
                Listed {
                    id: row.get(0),
                    modified: row.get(1),
                    added: row.get(2),
                    json: json.map(bytes::Bytes::from),
                }
            })
            .collect())
    }

    fn feed_cursor(&mut self, feed: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .client
            .query_opt(
                "SELECT cursor FROM threatbus_feed_cursors WHERE feed = $1",
                &[&feed],
            )?
            .map(|row| row.get(0)))
    }

    fn set_feed_cursor(&mut self, feed: &str, cursor: &str) -> Result<(), StoreError> {
        self.client.execute(
            "INSERT INTO threatbus_feed_cursors (feed, cursor, updated) VALUES ($1, $2, $3)
             ON CONFLICT (feed) DO UPDATE SET cursor = excluded.cursor, updated = excluded.updated",
            &[&feed, &cursor, &now_micros()],
        )?;
        Ok(())
    }

    fn span(&mut self) -> Result<Option<(i64, i64)>, StoreError> {
        let row = self.client.query_one(
            "SELECT min(modified), max(modified) FROM threatbus_current",
            &[],
        )?;
        let oldest: Option<i64> = row.get(0);
        let newest: Option<i64> = row.get(1);
        Ok(oldest.zip(newest))
    }

    fn prune(&mut self, before: i64) -> Result<u64, StoreError> {
        let mut tx = self.client.transaction()?;
        tx.execute(
            "DELETE FROM threatbus_current WHERE modified < $1",
            &[&before],
        )?;
        let removed = tx.execute(
            "DELETE FROM threatbus_versions v WHERE v.modified < $1
               AND NOT EXISTS (SELECT 1 FROM threatbus_current c WHERE c.position = v.position)",
            &[&before],
        )?;
        tx.commit()?;
        Ok(removed)
    }

    fn bytes_on_disk(&mut self) -> Result<u64, StoreError> {
        self.table_bytes()
    }
}

impl PgStore {
    fn table_bytes(&mut self) -> Result<u64, StoreError> {
        let row = self.client.query_one(
            "SELECT pg_total_relation_size('threatbus_versions') + pg_total_relation_size('threatbus_current')",
            &[],
        )?;
        Ok(count(row.get(0)))
    }
}

/// Runs `sql` and hands out the first column of each row as it arrives.
fn stream(
    client: &mut Client,
    sql: &str,
    params: &[&(dyn ::postgres::types::ToSql + Sync)],
    each: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<u64, StoreError> {
    use ::postgres::fallible_iterator::FallibleIterator;
    let mut rows = client.query_raw(sql, params.iter().copied())?;
    let mut handed = 0;
    while let Some(row) = rows.next()? {
        let json: &[u8] = row.get(0);
        handed += 1;
        if !each(json) {
            break;
        }
    }
    Ok(handed)
}
