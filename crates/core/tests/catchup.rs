//! Catch-up: a subscriber that cannot take a message now gets it later from the source, in
//! routing order, with its topics as they were when each message was routed. The source here
//! is a map the test fills (the store's own engines are tested in threatbus-store and, with the
//! real binary, in the black-box tests).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{indicator, recv, subscriber};
use serde_json::{Value, json};
use threatbus_core::{
    BusConfig, BusHandle, CatchUpKey, CatchUpReader, CatchUpSource, Message, Totals,
};

/// What the store would hold: JSON by (id, modified), plus whether it is held.
#[derive(Default)]
struct Memory {
    versions: Mutex<HashMap<(String, i64), Bytes>>,
    held: AtomicBool,
    holds: AtomicUsize,
    fetched: AtomicUsize,
}

impl Memory {
    fn put(&self, message: &Message) {
        let key = CatchUpKey::of(message).unwrap();
        self.versions
            .lock()
            .unwrap()
            .insert((key.id(), key.modified()), message.json().clone());
    }
}

struct Source(Arc<Memory>);

impl CatchUpSource for Source {
    fn open(&self) -> Result<Box<dyn CatchUpReader>, String> {
        Ok(Box::new(Reader(self.0.clone())))
    }
    fn hold(&self, held: bool) {
        self.0.held.store(held, Ordering::SeqCst);
        self.0.holds.fetch_add(1, Ordering::SeqCst);
    }
}

struct Reader(Arc<Memory>);

impl CatchUpReader for Reader {
    fn fetch(&mut self, keys: &[CatchUpKey]) -> Result<Vec<Option<Bytes>>, String> {
        self.0.fetched.fetch_add(keys.len(), Ordering::SeqCst);
        let versions = self.0.versions.lock().unwrap();
        Ok(keys
            .iter()
            .map(|key| versions.get(&(key.id(), key.modified())).cloned())
            .collect())
    }
}

struct Running {
    bus: BusHandle,
    memory: Arc<Memory>,
    inner: common::Running,
}

async fn start(config: BusConfig) -> Running {
    let memory = Arc::new(Memory::default());
    let inner = common::start(config, Some(Arc::new(Source(memory.clone())))).await;
    Running {
        bus: inner.bus.clone(),
        memory,
        inner,
    }
}

impl Running {
    /// Publishes `message` after putting it where the source finds it (as the store would,
    /// shortly after routing).
    async fn publish(&self, message: Message) {
        self.memory.put(&message);
        self.bus.publish(message).await.unwrap();
    }

    async fn stop(self) {
        self.inner.stop().await;
    }
}

fn sighting(n: u32) -> Message {
    let id = format!("sighting--00000000-0000-4000-8000-{n:012}");
    Message::from_json(
        json!({
            "type": "sighting", "spec_version": "2.1", "id": id,
            "created": "2020-06-23T12:34:56.000Z", "modified": "2020-06-23T12:34:56.000Z",
            "sighting_of_ref": "indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc", "x_seq": n
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

fn seq(message: &Message) -> u64 {
    let value: Value = serde_json::from_slice(message.json()).unwrap();
    value["x_seq"].as_u64().unwrap()
}

/// Waits until `check` holds (the worker runs on a thread of its own).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 5 s");
}

fn gauge(bus: &BusHandle, line_start: &str) -> Option<i64> {
    bus.metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_gets_everything_once_in_order_then_live() {
    let r = start(BusConfig {
        queue_capacity: 8,
        ..BusConfig::default()
    })
    .await;
    let mut slow = subscriber(&r.bus, &["stix2/indicator"]).await;
    let mut reader = subscriber(&r.bus, &["stix2/indicator"]).await;
    for n in 0..500 {
        r.publish(indicator(n)).await;
        assert_eq!(seq(&recv(&mut reader).await), u64::from(n));
    }
    assert!(r.memory.held.load(Ordering::SeqCst), "the source is held");
    r.bus.refresh_gauges().await.unwrap();
    assert_eq!(
        gauge(&r.bus, "threatbus_subscribers_behind{app=\"probe\"}"),
        Some(1)
    );
    for n in 0..500 {
        assert_eq!(seq(&recv(&mut slow).await), n, "in routing order");
    }
    // Caught up: live again, nothing kept for it, the source released.
    eventually("released", || !r.memory.held.load(Ordering::SeqCst)).await;
    let fetched = r.memory.fetched.load(Ordering::SeqCst);
    r.publish(indicator(500)).await;
    assert_eq!(seq(&recv(&mut slow).await), 500);
    assert_eq!(
        r.memory.fetched.load(Ordering::SeqCst),
        fetched,
        "live again: not read from the source"
    );
    assert!(slow.try_recv().is_none(), "no duplicate");
    let totals = Totals::read(r.bus.metrics());
    assert_eq!(totals.dropped_queue_full, 0);
    assert_eq!(totals.dropped_catch_up, 0);
    assert_eq!(
        totals.replayed, 492,
        "all but the 8 queued before it fell behind"
    );
    r.bus.refresh_gauges().await.unwrap();
    assert_eq!(gauge(&r.bus, "threatbus_catch_up_journal_entries"), Some(0));
    assert_eq!(
        gauge(&r.bus, "threatbus_subscribers_behind{app=\"probe\"}"),
        Some(0)
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_behind_subscriber_gets_the_topics_it_had_when_each_message_was_routed() {
    let r = start(BusConfig {
        queue_capacity: 4,
        ..BusConfig::default()
    })
    .await;
    let mut slow = subscriber(&r.bus, &["stix2/indicator"]).await;
    // Sees everything, so that the test knows what has been routed.
    let mut witness = subscriber(&r.bus, &["stix2"]).await;
    // Behind after four indicators; then sightings it does not want yet, then it subscribes
    // to sightings too, then both kinds.
    for n in 0..10 {
        r.publish(indicator(n)).await;
        recv(&mut witness).await;
    }
    for n in 100..105 {
        r.publish(sighting(n)).await;
        recv(&mut witness).await;
    }
    r.bus
        .subscribe(slow.id, vec!["stix2/sighting".into()], None)
        .await
        .unwrap();
    for n in 10..15 {
        r.publish(indicator(n)).await;
        r.publish(sighting(n + 100)).await;
        recv(&mut witness).await;
        recv(&mut witness).await;
    }
    r.bus
        .unsubscribe(slow.id, vec!["stix2/indicator".into()])
        .await
        .unwrap();
    r.publish(indicator(15)).await;
    r.publish(sighting(115)).await;
    let mut got = Vec::new();
    while got.len() < 21 {
        got.push(seq(&recv(&mut slow).await));
    }
    let mut expected: Vec<u64> = (0..10).collect();
    for n in 10..15 {
        expected.extend([n, n + 100]);
    }
    expected.push(115);
    assert_eq!(got, expected);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(slow.try_recv().is_none(), "nothing else: {got:?}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_not_stored_yet_is_waited_for() {
    let r = start(BusConfig {
        queue_capacity: 4,
        ..BusConfig::default()
    })
    .await;
    let mut slow = subscriber(&r.bus, &["stix2/indicator"]).await;
    for n in 0..10 {
        r.publish(indicator(n)).await;
    }
    // Routed, but the store has not taken these yet.
    let late: Vec<Message> = (10..20).map(indicator).collect();
    for message in &late {
        r.bus.publish(message.clone()).await.unwrap();
    }
    for n in 0..10 {
        assert_eq!(seq(&recv(&mut slow).await), n);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(slow.try_recv().is_none(), "nothing skipped ahead");
    for message in &late {
        r.memory.put(message);
    }
    for n in 10..20 {
        assert_eq!(seq(&recv(&mut slow).await), n);
    }
    assert_eq!(Totals::read(r.bus.metrics()).dropped_catch_up, 0);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_behind_longer_than_the_timeout_is_given_up_and_counted() {
    let r = start(BusConfig {
        queue_capacity: 4,
        catch_up_timeout: Duration::from_secs(1),
        ..BusConfig::default()
    })
    .await;
    let mut dead = subscriber(&r.bus, &["stix2/indicator"]).await;
    for n in 0..50 {
        r.publish(indicator(n)).await;
    }
    eventually("given up", || {
        Totals::read(r.bus.metrics()).dropped_catch_up == 46
    })
    .await;
    assert!(!r.memory.held.load(Ordering::SeqCst));
    // Plain drop_newest from now on: what it reads is what was queued, then live messages.
    for n in 0..4 {
        assert_eq!(seq(&recv(&mut dead).await), n);
    }
    r.publish(indicator(50)).await;
    assert_eq!(seq(&recv(&mut dead).await), 50);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_zero_timeout_catch_up_is_off() {
    let r = start(BusConfig {
        queue_capacity: 4,
        catch_up_timeout: Duration::ZERO,
        ..BusConfig::default()
    })
    .await;
    let stalled = subscriber(&r.bus, &["stix2/indicator"]).await;
    for n in 0..20 {
        r.publish(indicator(n)).await;
    }
    let mut marker = subscriber(&r.bus, &["stix2/indicator"]).await;
    r.publish(indicator(99)).await;
    // (It may get some of the 20 first: they can still be on their way through the backbone.)
    while seq(&recv(&mut marker).await) != 99 {}
    assert_eq!(Totals::read(r.bus.metrics()).dropped_queue_full, 17);
    assert_eq!(r.memory.holds.load(Ordering::SeqCst), 0);
    drop(stalled);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_version_that_no_longer_reads_is_skipped_and_counted() {
    let r = start(BusConfig {
        queue_capacity: 4,
        ..BusConfig::default()
    })
    .await;
    let mut slow = subscriber(&r.bus, &["stix2/indicator"]).await;
    for n in 0..20 {
        r.publish(indicator(n)).await;
    }
    // The store's copy of #10 is damaged.
    let damaged = CatchUpKey::of(&indicator(10)).unwrap();
    r.memory.versions.lock().unwrap().insert(
        (damaged.id(), damaged.modified()),
        Bytes::from_static(b"{\"type\":\"indicator\"}"),
    );
    let mut got = Vec::new();
    while got.len() < 19 {
        got.push(seq(&recv(&mut slow).await));
    }
    let expected: Vec<u64> = (0..20).filter(|n| *n != 10).collect();
    assert_eq!(got, expected);
    eventually("counted", || {
        Totals::read(r.bus.metrics()).dropped_catch_up == 1
    })
    .await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_gives_up_the_subscriber_furthest_behind() {
    // The journal may take a quarter of the budget: 512 entries here.
    let r = start(BusConfig {
        queue_capacity: 4,
        memory_budget: 512 * 48 * 4,
        ..BusConfig::default()
    })
    .await;
    let dead = subscriber(&r.bus, &["stix2/indicator"]).await;
    let mut reader = subscriber(&r.bus, &["stix2/indicator"]).await;
    for n in 0..1000 {
        r.publish(indicator(n)).await;
        assert_eq!(seq(&recv(&mut reader).await), u64::from(n));
    }
    let text = r.bus.metrics().render();
    let given_up: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "threatbus_dropped_messages_total{plugin=\"probe\",reason=\"catch_up_limit\"} ",
            )?
            .parse()
            .ok()
        })
        .unwrap_or(0);
    assert!(given_up >= 500, "{given_up} given up:\n{text}");
    r.bus.refresh_gauges().await.unwrap();
    let journal = gauge(&r.bus, "threatbus_catch_up_journal_entries").unwrap();
    assert!(journal <= 512, "{journal} entries");
    drop(dead);
    r.stop().await;
}
