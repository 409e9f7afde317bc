//! The embedded engine on files of its own: STIX versioning, snapshots, retention, reopening,
//! and the files it refuses to touch.

mod common;

use std::path::{Path, PathBuf};

use common::{NOW, indicator, not_live, ns, sighting};
use rusqlite::Connection;
use serde_json::json;
use threatbus_store::sqlite::{APPLICATION_ID, SCHEMA_VERSION};
use threatbus_store::{Kind, SqliteStore};

/// A fresh directory for one test.
fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "threatbus-store-{name}-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn snapshot(store: &SqliteStore, kind: Kind, since: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    store
        .snapshot(kind, ns(since), ns(NOW), |json| {
            out.push(serde_json::from_slice(json).unwrap());
            true
        })
        .unwrap();
    out
}

#[test]
fn versions_follow_stix_rules_and_snapshots_pick_current_live_indicators() {
    let dir = dir("versions");
    let mut store = SqliteStore::open(&dir.join("store")).unwrap();
    let v2 = indicator(1, "2030-01-05T00:00:00.000Z", json!({"name": "second"}));
    let v1 = indicator(1, "2030-01-04T00:00:00.000Z", json!({"name": "first"}));
    let counts = store.write(std::slice::from_ref(&v2)).unwrap();
    assert_eq!((counts.current, counts.history, counts.repeated), (1, 0, 0));
    // An older version arriving late is history; the same version again is a no-op.
    let counts = store.write(&[v1, v2.clone()]).unwrap();
    assert_eq!((counts.current, counts.history, counts.repeated), (0, 1, 1));
    let mut more = not_live();
    more.extend([
        indicator(
            5,
            "2030-01-07T00:00:00.000Z",
            json!({"valid_until": "2030-02-01T00:00:00Z"}),
        ),
        indicator(6, "2029-12-01T00:00:00.000Z", json!({})),
        sighting(1, "2030-01-08T00:00:00.000Z"),
        sighting(2, "2029-12-01T00:00:00.000Z"),
    ]);
    store.write(&more).unwrap();
    // A later REMOVE withdraws what was live.
    let live = snapshot(&store, Kind::Indicator, "2030-01-02T00:00:00.000Z");
    let names: Vec<_> = live
        .iter()
        .map(|o| o["id"].as_str().unwrap()[35..].to_owned())
        .collect();
    assert_eq!(names, ["000000000001", "000000000005"]);
    assert_eq!(live[0]["name"], "second");
    // Byte for byte what was written.
    let mut bytes = Vec::new();
    store
        .snapshot(
            Kind::Indicator,
            ns("2030-01-05T00:00:00.000Z"),
            ns(NOW),
            |json| {
                bytes.push(json.to_vec());
                true
            },
        )
        .unwrap();
    assert_eq!(bytes[0], v2.json.as_ref());
    let sightings = snapshot(&store, Kind::Sighting, "2030-01-02T00:00:00.000Z");
    assert_eq!(sightings.len(), 1);
    store
        .write(&[indicator(
            1,
            "2030-01-08T00:00:00.000Z",
            json!({"x_threatbus_update": "REMOVE"}),
        )])
        .unwrap();
    let live = snapshot(&store, Kind::Indicator, "2030-01-02T00:00:00.000Z");
    assert_eq!(live.len(), 1);
    let stats = store.stats(ns(NOW)).unwrap();
    assert_eq!(
        (
            stats.indicators_active,
            stats.indicators_withdrawn,
            stats.indicators_expired,
            stats.sightings,
            stats.versions
        ),
        (2, 3, 1, 2, 10)
    );
    // Retention: everything modified before the cut goes, with its history.
    let pruned = store.prune(ns("2030-01-05T12:00:00.000Z")).unwrap();
    assert_eq!(
        pruned, 4,
        "v1 and v2 of #1? no: #1's current is newer; #6, sighting 2, #1 v1, #1 v2"
    );
    let stats = store.stats(ns(NOW)).unwrap();
    assert_eq!(stats.versions, 6);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_store_survives_reopening_and_a_second_writer_is_refused() {
    let dir = dir("reopen");
    let path = dir.join("store");
    {
        let mut store = SqliteStore::open(&path).unwrap();
        store
            .write(&[indicator(1, "2030-01-05T00:00:00.000Z", json!({}))])
            .unwrap();
        let second = SqliteStore::open(&path).unwrap_err().to_string();
        assert!(second.contains("locked by another process"), "{second}");
        assert!(second.contains(&path.display().to_string()), "{second}");
        // A reader may look while the writer holds the store.
        let reader = SqliteStore::open_reader(&path).unwrap();
        assert_eq!(
            snapshot(&reader, Kind::Indicator, "2030-01-01T00:00:00.000Z").len(),
            1
        );
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        snapshot(&store, Kind::Indicator, "2030-01-01T00:00:00.000Z").len(),
        1
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn files_that_are_not_our_store_are_refused_and_left_untouched() {
    let dir = dir("refused");
    type Make = Box<dyn Fn(&Path)>;
    let cases: [(&str, Make, &str); 4] = [
        (
            "text",
            Box::new(|p| {
                std::fs::write(p, "not a database at all, just text\n".repeat(200)).unwrap()
            }),
            "not a Threat Bus store",
        ),
        (
            "newer",
            Box::new(|p| {
                let c = Connection::open(p).unwrap();
                c.pragma_update(None, "application_id", APPLICATION_ID)
                    .unwrap();
                c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                    .unwrap();
            }),
            "written by a newer Threat Bus",
        ),
        (
            "other",
            Box::new(|p| {
                let c = Connection::open(p).unwrap();
                c.execute_batch("CREATE TABLE t (x)").unwrap();
            }),
            "not a Threat Bus store",
        ),
        (
            "foreign",
            Box::new(|p| {
                let c = Connection::open(p).unwrap();
                c.pragma_update(None, "application_id", 42).unwrap();
            }),
            "another program",
        ),
    ];
    for (name, make, expected) in cases {
        let path = dir.join(name);
        make(&path);
        let before = std::fs::read(&path).unwrap();
        let err = SqliteStore::open(&path).unwrap_err().to_string();
        assert!(err.contains(expected), "{name}: {err}");
        assert!(err.contains(&path.display().to_string()), "{name}: {err}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "{name} was changed");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn listings_page_in_the_order_versions_were_added() {
    let dir = dir("listing");
    let mut store = SqliteStore::open(&dir.join("store")).unwrap();
    common::listing_scenario(&mut store);
    // A reopened store continues after the greatest `added` it has.
    let greatest = store
        .list(&threatbus_store::Listing {
            kind: Kind::Indicator,
            added_after: i64::MIN,
            ids: &[],
            versions: &threatbus_store::VersionSelect::all(),
            limit: 100,
            with_json: false,
        })
        .unwrap()
        .last()
        .unwrap()
        .added;
    drop(store);
    let mut store = SqliteStore::open(&dir.join("store")).unwrap();
    store
        .write(&[indicator(9, "2030-01-09T00:00:00.000Z", json!({}))])
        .unwrap();
    let listed = common::list_all(
        &mut store,
        Kind::Indicator,
        &["indicator--00000000-0000-4000-8000-000000000009".to_owned()],
        &threatbus_store::VersionSelect::last(),
        10,
    );
    assert_eq!(listed, ["009@2030-01-09"]);
    let nine = store
        .list(&threatbus_store::Listing {
            kind: Kind::Indicator,
            added_after: greatest,
            ids: &[],
            versions: &threatbus_store::VersionSelect::all(),
            limit: 100,
            with_json: false,
        })
        .unwrap();
    assert_eq!(nine.len(), 1);
    assert!(nine[0].added > greatest);
}

#[test]
fn a_version_1_store_is_migrated_with_added_times_in_storage_order() {
    let dir = dir("migrate");
    let path = dir.join("store");
    {
        // The schema as version 1 wrote it, with two versions in it.
        let c = Connection::open(&path).unwrap();
        c.execute_batch(&format!(
            "CREATE TABLE versions (position INTEGER PRIMARY KEY, id TEXT NOT NULL,
                 modified INTEGER NOT NULL, kind INTEGER NOT NULL, json BLOB NOT NULL,
                 UNIQUE (id, modified));
             CREATE TABLE current (id TEXT PRIMARY KEY, kind INTEGER NOT NULL,
                 created INTEGER NOT NULL, modified INTEGER NOT NULL, withdrawn INTEGER NOT NULL,
                 valid_until INTEGER, position INTEGER NOT NULL) WITHOUT ROWID;
             PRAGMA user_version = 1; PRAGMA application_id = {APPLICATION_ID};"
        ))
        .unwrap();
        for (n, modified) in [
            (1, "2030-01-02T00:00:00.000Z"),
            (2, "2030-01-01T00:00:00.000Z"),
        ] {
            let record = indicator(n, modified, json!({}));
            c.execute(
                "INSERT INTO versions (id, modified, kind, json) VALUES (?1, ?2, 0, ?3)",
                rusqlite::params![record.id, record.modified, record.json.as_ref()],
            )
            .unwrap();
            c.execute(
                "INSERT INTO current VALUES (?1, 0, 0, ?2, 0, NULL, last_insert_rowid())",
                rusqlite::params![record.id, record.modified],
            )
            .unwrap();
        }
    }
    let before = threatbus_store::listing::now_micros();
    let mut store = SqliteStore::open(&path).unwrap();
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(
        common::list_all(
            &mut store,
            Kind::Indicator,
            &[],
            &threatbus_store::VersionSelect::last(),
            1
        ),
        ["001@2030-01-02", "002@2030-01-01"]
    );
    // New versions come after the migrated ones.
    store
        .write(&[indicator(3, "2030-01-03T00:00:00.000Z", json!({}))])
        .unwrap();
    let listed = store
        .list(&threatbus_store::Listing {
            kind: Kind::Indicator,
            added_after: i64::MIN,
            ids: &[],
            versions: &threatbus_store::VersionSelect::all(),
            limit: 10,
            with_json: false,
        })
        .unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed[0].added >= before - 1 && listed[1].added == listed[0].added + 1);
    assert!(listed[2].added > listed[1].added);
}

#[test]
fn feed_cursors_are_kept_beside_a_running_writer_and_survive_reopening() {
    let dir = dir("cursors");
    let path = dir.join("store");
    let writer = SqliteStore::open(&path).unwrap();
    // A side connection works while the writer holds the lock.
    let mut side = threatbus_store::Location::File(path.clone())
        .open_side()
        .unwrap();
    common::cursor_scenario(side.as_mut());
    drop((side, writer));
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.feed_cursor("isac").unwrap().as_deref(), Some("a"));
    // There is nothing to open beside a store that does not exist.
    assert!(
        threatbus_store::Location::File(dir.join("absent"))
            .open_side()
            .is_err()
    );
}

#[test]
fn versions_are_read_back_by_id_and_modified() {
    let dir = dir("versions-by-key");
    let mut store = SqliteStore::open(&dir.join("store")).unwrap();
    common::versions_by_key_scenario(&mut store);
    // And beside the writer, as the catch-up worker reads them.
    let mut reader = threatbus_store::Location::File(dir.join("store"))
        .open_reader()
        .unwrap();
    common::versions_by_key_scenario_read_only(reader.as_mut());
}
