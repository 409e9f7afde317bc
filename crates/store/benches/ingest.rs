//! Store ingest and snapshot read rates, both engines: `cargo bench -p threatbus-store --bench
//! ingest [-- N]` (default 200,000 indicators). Records are built before the clock starts; the
//! writes go in batches of 4096, as the bus's writer commits them. The PostgreSQL figures need
//! the server on 127.0.0.1:5432 (user postgres); without it they are skipped with a line.

use std::time::Instant;

use postgres::{Client, NoTls};
use threatbus_core::{Body, Message, MessageType, SnapshotEnvelope};
use threatbus_store::{Kind, Location, Record};

const BATCH: usize = 4096;
const ADMIN: &str = "postgresql://postgres@127.0.0.1:5432/postgres";

fn records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let json = format!(
                r#"{{"type":"indicator","spec_version":"2.1","id":"indicator--00000000-0000-4000-8000-{i:012}","created":"2026-01-01T00:00:00.000Z","modified":"2026-01-01T00:00:00.000Z","pattern":"[ipv4-addr:value = '10.{}.{}.{}']","pattern_type":"stix","valid_from":"2026-01-01T00:00:00Z","name":"benchmark indicator {i}","labels":["malicious-activity"]}}"#,
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            );
            let message = Message::from_stix_json(json.as_bytes()).expect("valid indicator");
            Record::from_message(&message).expect("an indicator")
        })
        .collect()
}

fn measure(name: &str, location: &Location, records: &[Record]) {
    let mut store = location.open_writer().expect("store opens");
    let started = Instant::now();
    for batch in records.chunks(BATCH) {
        store.write(batch).expect("write");
    }
    let ingest = started.elapsed().as_secs_f64();
    let mut reader = location.open_reader().expect("reader opens");
    let started = Instant::now();
    let mut bytes = 0usize;
    let read = reader
        .snapshot(Kind::Indicator, 0, i64::MAX, &mut |json| {
            bytes += json.len();
            true
        })
        .expect("snapshot");
    let snapshot = started.elapsed().as_secs_f64();
    // What the service does per answered object besides reading it: decode the stored JSON
    // into a message and wrap it in an envelope.
    let started = Instant::now();
    for record in records {
        let body = Message::from_stix_json(&record.json).expect("stored JSON decodes");
        let _ = Message::new(Body::SnapshotEnvelope(SnapshotEnvelope {
            snapshot_type: MessageType::Indicator,
            snapshot_id: "bench".into(),
            body,
        }));
    }
    let wrap = started.elapsed().as_secs_f64();
    let disk = store.bytes_on_disk().unwrap_or(0);
    println!(
        "{name:<11} {:>9} indicators  ingest {:>9.0}/s  snapshot read {:>9.0}/s ({read} objects, {} MiB JSON)  decode+envelope {:>9.0}/s  disk {} bytes/indicator",
        records.len(),
        records.len() as f64 / ingest,
        read as f64 / snapshot,
        bytes >> 20,
        records.len() as f64 / wrap,
        disk / records.len().max(1) as u64,
    );
}

/// redb (pure Rust key-value store) with the same data model, for the engine choice: versions by
/// (id, modified), current by id, and the (kind, modified, id) index the snapshot scans — what
/// SQLite's two secondary indexes give for free, written by hand. Bench only.
mod redb_engine {
    use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
    use threatbus_store::Record;

    const VERSIONS: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("versions");
    const CURRENT: TableDefinition<&str, (u8, i64, bool, Option<i64>)> =
        TableDefinition::new("current");
    const BY_MODIFIED: TableDefinition<(u8, i64, &str), ()> = TableDefinition::new("by_modified");

    pub fn write(db: &Database, records: &[Record]) -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        {
            let mut versions = txn.open_table(VERSIONS)?;
            let mut current = txn.open_table(CURRENT)?;
            let mut index = txn.open_table(BY_MODIFIED)?;
            for r in records {
                let id = r.id.as_str();
                if versions.get((id, r.modified))?.is_some() {
                    continue;
                }
                versions.insert((id, r.modified), r.json.as_ref())?;
                let previous = current.get(id)?.map(|g| g.value());
                if previous.is_some_and(|p| p.1 > r.modified) {
                    continue;
                }
                if let Some(p) = previous {
                    index.remove((p.0, p.1, id))?;
                }
                let kind = r.kind.code() as u8;
                current.insert(id, (kind, r.modified, r.withdrawn, r.valid_until))?;
                index.insert((kind, r.modified, id), ())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub fn snapshot(
        db: &Database,
        since: i64,
        now: i64,
        mut each: impl FnMut(&[u8]),
    ) -> Result<u64, redb::Error> {
        let txn = db.begin_read()?;
        let versions = txn.open_table(VERSIONS)?;
        let current = txn.open_table(CURRENT)?;
        let index = txn.open_table(BY_MODIFIED)?;
        let mut n = 0;
        for entry in index.range((0u8, since, "")..(1u8, i64::MIN, ""))? {
            let (key, _) = entry?;
            let (_, modified, id) = key.value();
            let Some(row) = current.get(id)? else {
                continue;
            };
            let (_, _, withdrawn, valid_until) = row.value();
            if withdrawn || valid_until.is_some_and(|v| v <= now) {
                continue;
            }
            if let Some(json) = versions.get((id, modified))? {
                each(json.value());
                n += 1;
            }
        }
        Ok(n)
    }
}

fn measure_redb(records: &[Record], dir: &std::path::Path) {
    let path = dir.join("store.redb");
    let db = redb::Database::create(&path).expect("redb opens");
    let started = Instant::now();
    for batch in records.chunks(BATCH) {
        redb_engine::write(&db, batch).expect("redb write");
    }
    let ingest = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut bytes = 0usize;
    let read =
        redb_engine::snapshot(&db, 0, i64::MAX, |json| bytes += json.len()).expect("redb snapshot");
    let snapshot = started.elapsed().as_secs_f64();
    let disk = std::fs::metadata(&path).map_or(0, |m| m.len());
    println!(
        "{:<11} {:>9} indicators  ingest {:>9.0}/s  snapshot read {:>9.0}/s ({read} objects, {} MiB JSON)  disk {} bytes/indicator",
        "redb",
        records.len(),
        records.len() as f64 / ingest,
        read as f64 / snapshot,
        bytes >> 20,
        disk / records.len().max(1) as u64,
    );
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(200_000);
    println!("building {n} records…");
    let records = records(n);
    let dir = std::env::temp_dir().join(format!("threatbus-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    measure("embedded", &Location::File(dir.join("store")), &records);
    measure_redb(&records, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    match Client::connect(ADMIN, NoTls) {
        Ok(mut admin) => {
            let db = format!("threatbus_bench_{}", std::process::id());
            admin
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .expect("create database");
            measure(
                "postgresql",
                &Location::Postgres(format!("postgresql://postgres@127.0.0.1:5432/{db}")),
                &records,
            );
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        }
        Err(err) => println!("postgresql  skipped: no server on 127.0.0.1:5432 ({err})"),
    }
}
