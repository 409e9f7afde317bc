//! The PostgreSQL engine against the server on 127.0.0.1:5432 (user `postgres`, trust auth):
//! each test works in a database of its own, dropped at the end.

mod common;

use common::{indicator, not_live, ns};
use postgres::{Client, NoTls};
use serde_json::json;
use threatbus_store::{Engine, Kind, Location, StoreError};

const ADMIN: &str = "postgresql://postgres@127.0.0.1:5432/postgres";

/// A scratch database, dropped when this goes.
struct Scratch {
    name: String,
}

impl Scratch {
    fn new(test: &str) -> Self {
        let name = format!(
            "threatbus_test_{test}_{}_{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond() % 1_000_000_000
        );
        let mut admin = Client::connect(ADMIN, NoTls).expect("PostgreSQL on 127.0.0.1:5432");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        Self { name }
    }

    fn location(&self) -> Location {
        Location::Postgres(format!(
            "postgresql://postgres@127.0.0.1:5432/{}",
            self.name
        ))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(ADMIN, NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn live(store: &mut dyn Engine) -> Vec<String> {
    let mut ids = Vec::new();
    store
        .snapshot(
            Kind::Indicator,
            ns("2030-01-01T00:00:00.000Z"),
            ns("2030-01-10T00:00:00.000Z"),
            &mut |json| {
                let value: serde_json::Value = serde_json::from_slice(json).unwrap();
                ids.push(format!(
                    "{}@{}",
                    &value["id"].as_str().unwrap()[44..],
                    value["modified"].as_str().unwrap()
                ));
                true
            },
        )
        .unwrap();
    ids
}

#[test]
fn versions_withdrawals_and_shared_writers_as_in_the_embedded_store() {
    let scratch = Scratch::new("versions");
    let location = scratch.location();
    let mut first = location.open_writer().unwrap();
    // A second instance on the same database (as two bus instances on one backbone).
    let mut second = location.open_writer().unwrap();
    let v2 = indicator(1, "2030-01-05T00:00:00.000Z", json!({}));
    let v1 = indicator(1, "2030-01-04T00:00:00.000Z", json!({}));
    let counts = first.write(&[v2.clone(), v1.clone()]).unwrap();
    assert_eq!((counts.current, counts.history, counts.repeated), (1, 1, 0));
    // The other instance stores the same messages: nothing changes.
    let counts = second.write(&[v2.clone(), v1]).unwrap();
    assert_eq!((counts.current, counts.history, counts.repeated), (0, 0, 2));
    let mut more = not_live();
    more.extend([indicator(5, "2030-01-07T00:00:00.000Z", json!({}))]);
    first.write(&more).unwrap();
    assert_eq!(
        live(first.as_mut()),
        [
            "001@2030-01-05T00:00:00.000Z",
            "005@2030-01-07T00:00:00.000Z"
        ]
    );
    // Byte for byte.
    let mut bytes = Vec::new();
    first
        .export(ns("2030-01-05T00:00:00.000Z"), false, &mut |json| {
            bytes.push(json.to_vec());
            true
        })
        .unwrap();
    assert_eq!(bytes[0], v2.json.as_ref());
    let stats = second.stats(ns("2030-01-10T00:00:00.000Z")).unwrap();
    assert_eq!(
        (
            stats.indicators_active,
            stats.indicators_withdrawn,
            stats.indicators_expired,
            stats.versions
        ),
        (2, 2, 1, 6)
    );
    assert!(first.bytes_on_disk().unwrap() > 0);
    // #1 (current version of 01-05) goes with its history.
    assert_eq!(first.prune(ns("2030-01-05T12:00:00.000Z")).unwrap(), 2);
    assert_eq!(
        second
            .stats(ns("2030-01-10T00:00:00.000Z"))
            .unwrap()
            .versions,
        4
    );
    // A reader beside the writers, and a reopened writer, see the same.
    let mut reader = location.open_reader().unwrap();
    assert_eq!(live(reader.as_mut()), ["005@2030-01-07T00:00:00.000Z"]);
    drop(first);
    let mut again = location.open_writer().unwrap();
    assert_eq!(live(again.as_mut()).len(), 1);
}

#[test]
fn a_newer_schema_and_an_unreachable_server_are_refused_by_name() {
    let scratch = Scratch::new("refused");
    let location = scratch.location();
    drop(location.open_writer().unwrap());
    let Location::Postgres(url) = &location else {
        unreachable!()
    };
    let mut client = Client::connect(url, NoTls).unwrap();
    client
        .batch_execute("UPDATE threatbus_meta SET value = '99' WHERE key = 'schema_version'")
        .unwrap();
    let err = location.open_writer().err().unwrap().to_string();
    assert!(
        err.contains("schema version 99 was written by a newer Threat Bus"),
        "{err}"
    );
    assert!(
        err.contains(&format!("postgresql://127.0.0.1:5432/{}", scratch.name)),
        "{err}"
    );
    let nowhere = Location::Postgres("postgresql://tb:secret@127.0.0.1:1/nothing".into());
    let err = nowhere.open_writer().err().unwrap();
    assert!(matches!(err, StoreError::Open { .. }));
    let text = err.to_string();
    assert!(
        text.contains("cannot connect") && !text.contains("secret"),
        "{text}"
    );
}

#[test]
fn listings_page_in_the_order_versions_were_added_across_writers() {
    let scratch = Scratch::new("listing");
    let location = scratch.location();
    let mut first = location.open_writer().unwrap();
    common::listing_scenario(first.as_mut());
    // A second writer continues after everything the first committed.
    let mut second = location.open_writer().unwrap();
    second
        .write(&[indicator(9, "2030-01-09T00:00:00.000Z", json!({}))])
        .unwrap();
    let mut reader = location.open_reader().unwrap();
    let listed = common::list_all(
        reader.as_mut(),
        Kind::Indicator,
        &[],
        &threatbus_store::VersionSelect::all(),
        100,
    );
    assert_eq!(listed.len(), 7);
    assert_eq!(listed.last().unwrap(), "009@2030-01-09");
}

#[test]
fn a_version_1_database_is_migrated_with_added_times_in_storage_order() {
    let scratch = Scratch::new("migrate");
    let location = scratch.location();
    let Location::Postgres(url) = &location else {
        unreachable!()
    };
    let mut client = Client::connect(url, NoTls).unwrap();
    client
        .batch_execute(
            "CREATE TABLE threatbus_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO threatbus_meta VALUES ('schema_version', '1');
             CREATE TABLE threatbus_versions (position BIGSERIAL PRIMARY KEY, id TEXT NOT NULL,
                 modified BIGINT NOT NULL, kind SMALLINT NOT NULL, json BYTEA NOT NULL,
                 UNIQUE (id, modified));
             CREATE TABLE threatbus_current (id TEXT PRIMARY KEY, kind SMALLINT NOT NULL,
                 created BIGINT NOT NULL, modified BIGINT NOT NULL, withdrawn BOOLEAN NOT NULL,
                 valid_until BIGINT, position BIGINT NOT NULL);",
        )
        .unwrap();
    for (n, modified) in [
        (1, "2030-01-02T00:00:00.000Z"),
        (2, "2030-01-01T00:00:00.000Z"),
    ] {
        let record = indicator(n, modified, json!({}));
        let row = client
            .query_one(
                "INSERT INTO threatbus_versions (id, modified, kind, json) VALUES ($1, $2, 0, $3)
                 RETURNING position",
                &[&record.id, &record.modified, &record.json.as_ref()],
            )
            .unwrap();
        let position: i64 = row.get(0);
        client
            .execute(
                "INSERT INTO threatbus_current VALUES ($1, 0, 0, $2, false, NULL, $3)",
                &[&record.id, &record.modified, &position],
            )
            .unwrap();
    }
    let mut store = location.open_writer().unwrap();
    let version: String = client
        .query_one(
            "SELECT value FROM threatbus_meta WHERE key = 'schema_version'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        version,
        threatbus_store::postgres::SCHEMA_VERSION.to_string()
    );
    assert_eq!(
        common::list_all(
            store.as_mut(),
            Kind::Indicator,
            &[],
            &threatbus_store::VersionSelect::last(),
            1
        ),
        ["001@2030-01-02", "002@2030-01-01"]
    );
}

#[test]
fn feed_cursors_are_kept_as_in_the_embedded_store() {
    let scratch = Scratch::new("cursors");
    let location = scratch.location();
    drop(location.open_writer().unwrap());
    let mut side = location.open_side().unwrap();
    common::cursor_scenario(side.as_mut());
    let mut again = location.open_reader().unwrap();
    assert_eq!(again.feed_cursor("isac").unwrap().as_deref(), Some("a"));
}

#[test]
fn versions_are_read_back_by_id_and_modified_as_in_the_embedded_store() {
    let scratch = Scratch::new("versions_by_key");
    let location = scratch.location();
    let mut writer = location.open_writer().unwrap();
    common::versions_by_key_scenario(writer.as_mut());
    let mut reader = location.open_reader().unwrap();
    common::versions_by_key_scenario_read_only(reader.as_mut());
}
