//! The RabbitMQ backbone against the real server on 127.0.0.1:5672 (guest/guest), driven
//! through whole buses. Every test uses its own exchange and queue names and removes them at
//! the end. A test fails, never skips, when the server is unreachable.
//!
//! Connection failures are produced with a small TCP proxy between the bus and the server that
//! can refuse connections and cut the open ones, so that reconnects are tested without
//! restarting the shared server (the black-box tests do that).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::SignedDuration;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};
use threatbus_core::{
    App, Body, BoxFuture, Bus, BusConfig, BusError, BusHandle, Carrier, Message, MessageType,
    PluginError, Shutdown, SnapshotEnvelope, SubscriberOptions, SubscriberReceiver,
};
use threatbus_rabbitmq::{RabbitMq, RabbitMqStats};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const BROKER: &str = "127.0.0.1:5672";
const BROKER_PORT: u16 = 5672;

// --------------------------------------------------------------------------------- helpers

/// A connection of the test itself, for preparing and inspecting broker objects.
async fn admin() -> (Connection, Channel) {
    let uri = format!("amqp://guest:guest@{BROKER}/%2f");
    let connection = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .unwrap_or_else(|err| {
            panic!("these tests need RabbitMQ on {BROKER} with user guest/guest: {err}")
        });
    let channel = connection.create_channel().await.expect("admin channel");
    (connection, channel)
}

fn unique(what: &str) -> String {
    format!(
        "tb-test-{what}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// The config section of one instance.
fn section(exchange: &str, suffix: &str, port: u16) -> Value {
    json!({
        "host": "127.0.0.1", "port": port, "username": "guest", "password": "guest",
        "exchange_name": exchange,
        "queue": {"name_suffix": suffix},
        "reconnect": {"min_delay": 0.05, "max_delay": 0.5},
        "connect_timeout": 5,
        "flush_timeout": 5,
    })
}

/// The names of a test with one instance, and the removal of its broker objects afterwards.
struct OneQueue {
    exchange: String,
    suffix: String,
    queue: String,
    _cleanup: Cleanup,
}

impl OneQueue {
    async fn new(what: &str) -> Self {
        let exchange = unique(what);
        let suffix = unique(&what[..1]);
        let queue = queue_of(&suffix);
        let _cleanup = Cleanup::prepare(&exchange, std::slice::from_ref(&queue)).await;
        Self {
            exchange,
            suffix,
            queue,
            _cleanup,
        }
    }
}

fn queue_of(suffix: &str) -> String {
    format!("threatbus.{suffix}")
}

/// Removes what a test created (also the leftovers of a failed earlier run of that test).
async fn cleanup(exchange: &str, queues: &[String]) {
    let (connection, channel) = admin().await;
    for queue in queues {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = channel
        .exchange_delete(exchange.into(), Default::default())
        .await;
    let _ = connection.close(200, "OK".into()).await;
}

/// Removes a test's exchange and queues when dropped, also when the test fails (on a thread
/// of its own: `Drop` cannot await).
struct Cleanup {
    exchange: String,
    queues: Vec<String>,
}

impl Cleanup {
    /// Removes leftovers of an earlier failed run and returns the guard.
    async fn prepare(exchange: &str, queues: &[String]) -> Self {
        cleanup(exchange, queues).await;
        Self {
            exchange: exchange.to_owned(),
            queues: queues.to_vec(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let exchange = std::mem::take(&mut self.exchange);
        let queues = std::mem::take(&mut self.queues);
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(async {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), cleanup(&exchange, &queues))
                            .await;
                });
            }
        })
        .join();
    }
}

/// An app that hands its bus handle to the test and idles until shutdown.
struct Probe(oneshot::Sender<BusHandle>);

impl App for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn run(
        self: Box<Self>,
        bus: BusHandle,
        shutdown: Shutdown,
    ) -> BoxFuture<Result<(), PluginError>> {
        Box::pin(async move {
            let _ = self.0.send(bus);
            shutdown.stop.cancelled().await;
            Ok(())
        })
    }
}

/// A running bus instance with the RabbitMQ backbone.
struct Instance {
    bus: BusHandle,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), BusError>>,
    stats: Arc<RabbitMqStats>,
}

/// Test logs: `RUST_LOG=threatbus_rabbitmq=debug cargo test ... -- --nocapture`.
fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

impl Instance {
    async fn start(section: Value) -> Self {
        init_logging();
        let backbone = RabbitMq::build(&section).expect("valid config");
        let stats = backbone.stats();
        let (tx, rx) = oneshot::channel();
        let config = BusConfig {
            shutdown_timeout: Duration::from_secs(10),
            ..BusConfig::default()
        };
        let bus = Bus::new(
            config,
            Carrier::Backbone(Box::new(backbone)),
            vec![Box::new(Probe(tx))],
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(bus.run(shutdown.clone()));
        Self {
            bus: rx.await.expect("probe app started"),
            shutdown,
            task,
            stats,
        }
    }

    async fn stop(self) -> Arc<RabbitMqStats> {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("bus stops within 20 s")
            .expect("bus task");
        result.expect("bus stops cleanly");
        self.stats
    }
}

/// Starts a bus that must fail; returns its error.
async fn start_failing(section: Value) -> BusError {
    let instance = Instance::start(section).await;
    match tokio::time::timeout(Duration::from_secs(15), instance.task).await {
        Ok(Ok(Err(err))) => err,
        Ok(Ok(Ok(()))) => panic!("the bus stopped without an error"),
        Ok(Err(err)) => panic!("bus task: {err}"),
        Err(_) => panic!("the bus kept running instead of failing"),
    }
}

async fn subscriber(bus: &BusHandle, topics: &[&str]) -> SubscriberReceiver {
    let rx = bus
        .add_subscriber(SubscriberOptions::default())
        .await
        .expect("add subscriber");
    bus.subscribe(rx.id, topics.iter().map(|t| t.to_string()).collect(), None)
        .await
        .expect("subscribe");
    rx
}

async fn recv(rx: &mut SubscriberReceiver, within: Duration) -> Message {
    tokio::time::timeout(within, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("a message within {within:?}"))
        .expect("queue open")
}

/// Receives `n` messages and returns their `x_seq`.
async fn recv_sequence(rx: &mut SubscriberReceiver, n: usize, within: Duration) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        let message = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "received {} of {n} messages within {within:?}; last: {:?}",
                    seen.len(),
                    seen.last()
                )
            })
            .expect("queue open");
        seen.push(sequence_of(&message));
    }
    seen
}

fn sequence_of(message: &Message) -> u64 {
    let json: Value = serde_json::from_slice(message.json()).expect("JSON");
    json["x_seq"].as_u64().expect("x_seq")
}

/// Nothing more arrives within `quiet`.
async fn assert_silent(rx: &mut SubscriberReceiver, quiet: Duration) {
    if let Ok(Some(extra)) = tokio::time::timeout(quiet, rx.recv()).await {
        panic!("unexpected extra message {extra:?}");
    }
}

fn indicator(n: u64) -> Message {
    let id = format!("indicator--00000000-0000-4000-8000-{n:012}");
    Message::from_json(
        json!({
            "type": "indicator", "spec_version": "2.1", "id": id,
            "created": "2020-06-23T12:34:56.000Z", "modified": "2020-06-23T12:34:56.000Z",
            "pattern": "[ipv4-addr:value = '6.6.6.6']", "pattern_type": "stix",
            "pattern_version": "2.1", "valid_from": "2020-06-23T12:34:56.000Z",
            "x_seq": n, "x_vendor": {"nested": [1, 2.50, "ü"]}
        })
        .to_string()
        .as_bytes(),
    )
    .expect("valid indicator")
}

fn sighting() -> Message {
    Message::from_json(
        json!({
            "type": "sighting", "spec_version": "2.1",
            "id": "sighting--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc",
            "created": "2020-06-23T12:34:56.000Z", "modified": "2020-06-23T12:34:56.000Z",
            "sighting_of_ref": "indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc",
            "x_threatbus_source": "zeek"
        })
        .to_string()
        .as_bytes(),
    )
    .expect("valid sighting")
}

/// Waits until `queue` exists and has a consumer (the instance consuming it is ready).
async fn wait_for_consumer(queue: &str) {
    let (connection, _) = admin().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // A failed passive declare closes the channel: use a fresh one each time.
        let channel = connection.create_channel().await.expect("channel");
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        if declared.is_ok_and(|q| q.consumer_count() > 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no consumer on queue {queue} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = connection.close(200, "OK".into()).await;
}

/// Publishes a raw body to the exchange, as a foreign publisher would.
async fn publish_raw(channel: &Channel, exchange: &str, body: &[u8], message_id: Option<&str>) {
    let mut properties = BasicProperties::default();
    if let Some(id) = message_id {
        properties = properties.with_message_id(id.into());
    }
    channel
        .basic_publish(
            exchange.into(),
            "".into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .expect("raw publish");
}

/// Declares the exchange as upstream does, so raw publishes before a bus starts are routed.
/// Declares `queue` with `options` and binds it to `exchange`, as a test's own observer.
async fn declare_bound_queue(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    options: QueueDeclareOptions,
) {
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .unwrap_or_else(|err| panic!("declaring queue {queue}: {err}"));
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|err| panic!("binding queue {queue} to {exchange}: {err}"));
}

async fn declare_upstream_exchange(channel: &Channel, exchange: &str) {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");
}

// ------------------------------------------------------------------------------ the proxy

/// A TCP proxy to the server that can refuse new connections, cut open ones, or freeze them
/// (stop forwarding but keep them open, like a network that silently drops everything).
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<Link>>>,
    acceptor: JoinHandle<()>,
}

/// One proxied connection.
struct Link {
    task: JoinHandle<()>,
    frozen: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(up: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let up = Arc::new(AtomicBool::new(up));
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let acceptor = tokio::spawn({
            let up = up.clone();
            let links = links.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let frozen = Arc::new(AtomicBool::new(false));
                    let task = tokio::spawn(forward(client, frozen.clone()));
                    links.lock().expect("links").push(Link { task, frozen });
                }
            }
        });
        Self {
            port,
            up,
            links,
            acceptor,
        }
    }

    /// Refuses (`false`) or forwards (`true`) new connections.
    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    /// Closes every open connection abruptly, both ways.
    fn cut(&self) {
        for link in self.links.lock().expect("links").drain(..) {
            link.task.abort();
        }
    }

    /// Stops forwarding on every open connection without closing it; new ones work.
    fn freeze(&self) {
        for link in self.links.lock().expect("links").iter() {
            link.frozen.store(true, Ordering::SeqCst);
        }
    }
}

/// Copies both ways between `client` and the server until either side closes; while `frozen`,
/// forwards nothing (what arrives meanwhile is dropped, as by a broken network).
async fn forward(client: TcpStream, frozen: Arc<AtomicBool>) {
    let Ok(server) = TcpStream::connect(BROKER).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = pipe(client_read, server_write, frozen.clone()) => {}
        _ = pipe(server_read, client_write, frozen) => {}
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) if frozen.load(Ordering::SeqCst) => {}
            Ok(n) => {
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.acceptor.abort();
    }
}

/// A TLS-terminating proxy in front of the server, with the test certificates in `tests/tls`
/// (signed by `ca.pem` for `localhost` and `127.0.0.1`). Counts completed and failed handshakes.
struct TlsProxy {
    port: u16,
    handshakes: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    acceptor: JoinHandle<()>,
}

fn tls_fixture(name: &str) -> String {
    format!("{}/tests/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

impl TlsProxy {
    async fn start() -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(tls_fixture("server.pem"))
            .expect("server.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("server certificate");
        let key = PrivateKeyDer::from_pem_file(tls_fixture("server.key")).expect("server.key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server TLS config");
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TLS proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (handshakes, refused) = (Arc::<AtomicUsize>::default(), Arc::<AtomicUsize>::default());
        let acceptor = tokio::spawn({
            let (handshakes, refused) = (handshakes.clone(), refused.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (tls, handshakes, refused) =
                        (tls.clone(), handshakes.clone(), refused.clone());
                    tokio::spawn(async move {
                        let Ok(mut client) = tls.accept(client).await else {
                            refused.fetch_add(1, Ordering::SeqCst);
                            return;
                        };
                        handshakes.fetch_add(1, Ordering::SeqCst);
                        if let Ok(mut server) = TcpStream::connect(BROKER).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            }
        });
        Self {
            port,
            handshakes,
            refused,
            acceptor,
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

// ---------------------------------------------------------------------------------- tests

/// Upstream's `test_rabbitmq` round trip, for all four message kinds, end to end through the
/// server: indicator and sighting to a subscriber; a snapshot request (issued by the core for a
/// subscription with a snapshot) to an app that answers snapshots; its envelope back to the
/// requester. A raw queue on the same exchange sees upstream's wire format.
#[tokio::test]
async fn round_trip_of_all_four_message_kinds() {
    let exchange = unique("roundtrip");
    let suffix = unique("a");
    let wire_queue = unique("wire");
    let _cleanup = Cleanup::prepare(&exchange, &[queue_of(&suffix), wire_queue.clone()]).await;

    let (connection, channel) = admin().await;
    declare_upstream_exchange(&channel, &exchange).await;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    declare_bound_queue(&channel, &wire_queue, &exchange, exclusive).await;

    let instance = Instance::start(section(&exchange, &suffix, BROKER_PORT)).await;
    let bus = &instance.bus;
    let mut stix = subscriber(bus, &["stix2"]).await;
    let mut answerer = bus
        .add_subscriber(SubscriberOptions {
            label: "answers snapshots".into(),
            snapshot_requests: true,
            ..Default::default()
        })
        .await
        .expect("answerer");

    let sent_indicator = indicator(1);
    let sent_sighting = sighting();
    bus.publish(sent_indicator.clone()).await.expect("publish");
    bus.publish(sent_sighting.clone()).await.expect("publish");
    let within = Duration::from_secs(10);
    let got = recv(&mut stix, within).await;
    assert_eq!(got, sent_indicator);
    assert_eq!(got.json(), sent_indicator.json());
    let got = recv(&mut stix, within).await;
    assert_eq!(got, sent_sighting);

    // Snapshot request, issued by the core through the backbone.
    let mut requester = bus
        .add_subscriber(SubscriberOptions::default())
        .await
        .expect("requester");
    let snapshot_id = bus
        .subscribe(
            requester.id,
            vec!["stix2/indicator".into()],
            Some(SignedDuration::from_hours(24 * 30)),
        )
        .await
        .expect("subscribe with snapshot")
        .expect("a snapshot id");
    let request = recv(&mut answerer, within).await;
    let Body::SnapshotRequest(body) = request.body() else {
        panic!("expected a snapshot request, got {request:?}");
    };
    assert_eq!(body.snapshot_id, snapshot_id);
    assert_eq!(body.snapshot_type, MessageType::Indicator);
    assert_eq!(body.snapshot, SignedDuration::from_hours(24 * 30));

    // The answer travels back as an envelope; only its body reaches the requester.
    let answer = indicator(2);
    let envelope = Message::new(Body::SnapshotEnvelope(SnapshotEnvelope {
        snapshot_type: MessageType::Indicator,
        snapshot_id: snapshot_id.clone(),
        body: answer.clone(),
    }));
    bus.publish(envelope.clone())
        .await
        .expect("publish envelope");
    assert_eq!(recv(&mut requester, within).await, answer);

    // The wire: upstream's JSON bodies, dispatched on `type`, plus our properties.
    let mut bodies = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while bodies.len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "wire queue got {bodies:?}"
        );
        match channel
            .basic_get(wire_queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            Some(got) => {
                let properties = &got.delivery.properties;
                assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
                assert!(properties.message_id().is_some());
                bodies.push(got.delivery.data.clone());
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let types: Vec<String> = bodies
        .iter()
        .map(|b| {
            serde_json::from_slice::<Value>(b).expect("JSON body")["type"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        types,
        [
            "indicator",
            "sighting",
            "snapshotrequest",
            "snapshotenvelope"
        ]
    );
    assert_eq!(bodies[0], sent_indicator.json().as_ref());
    assert_eq!(bodies[1], sent_sighting.json().as_ref());
    assert_eq!(bodies[3], envelope.json().as_ref());
    let request_json: Value = serde_json::from_slice(&bodies[2]).expect("JSON");
    assert_eq!(
        request_json,
        json!({"type": "snapshotrequest", "snapshot_type": 1, "snapshot_id": snapshot_id, "snapshot": 2592000})
    );

    let stats = instance.stop().await;
    assert_eq!(RabbitMqStats::get(&stats.confirmed), 4);
    assert_eq!(RabbitMqStats::get(&stats.received), 4);
    let _ = connection.close(200, "OK".into()).await;
}

/// Bodies that are not bus messages are logged, counted and acknowledged; consumption goes on.
#[tokio::test]
async fn malformed_messages_do_not_stop_consumption() {
    let OneQueue {
        exchange,
        suffix,
        queue,
        _cleanup,
    } = OneQueue::new("garbage").await;
    let instance = Instance::start(section(&exchange, &suffix, BROKER_PORT)).await;
    let mut rx = subscriber(&instance.bus, &["stix2/indicator"]).await;
    wait_for_consumer(&queue).await;

    let (connection, channel) = admin().await;
    let garbage: [&[u8]; 7] = [
        b"not json",
        b"",
        b"\xff\xfe\x00binary",
        br#"{"no": "type"}"#,
        br#"{"type": "malware", "id": "malware--1"}"#,
        br#"{"type": "indicator", "id": "indicator--nonsense"}"#,
        br#"{"type": "snapshotrequest", "snapshot_type": 9}"#,
    ];
    for body in garbage {
        publish_raw(&channel, &exchange, body, None).await;
    }
    let valid = indicator(7);
    publish_raw(&channel, &exchange, valid.json(), None).await;
    assert_eq!(recv(&mut rx, Duration::from_secs(10)).await, valid);
    assert_silent(&mut rx, Duration::from_millis(200)).await;

    let stats = instance.stop().await;
    assert_eq!(RabbitMqStats::get(&stats.undecodable), garbage.len() as u64);
    // Everything was acknowledged: nothing is left in the queue.
    let left = channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue still exists");
    assert_eq!(left.message_count(), 0);
    let _ = connection.close(200, "OK".into()).await;
}

/// With `batch_messages`, a burst travels as few AMQP messages, each holding several bus
/// messages one per line; the consumer unpacks them in order, skips bad lines (counting them)
/// and still reads single messages as upstream sends them.
#[tokio::test]
async fn batches_carry_several_messages_and_bad_lines_are_skipped() {
    let exchange = unique("batch");
    let suffix = unique("bt");
    let queue = queue_of(&suffix);
    let observer = unique("observer");
    let _cleanup = Cleanup::prepare(&exchange, &[queue.clone(), observer.clone()]).await;
    let mut config = section(&exchange, &suffix, BROKER_PORT);
    config["batch_messages"] = json!(100);
    let instance = Instance::start(config).await;
    let mut rx = subscriber(&instance.bus, &["stix2/indicator"]).await;
    wait_for_consumer(&queue).await;
    // A queue of the test's own on the exchange sees the AMQP messages as they travel.
    let (connection, channel) = admin().await;
    declare_bound_queue(
        &channel,
        &observer,
        &exchange,
        QueueDeclareOptions::default(),
    )
    .await;

    const N: u64 = 1000;
    let messages: Vec<Message> = (1..=N).map(indicator).collect();
    for message in &messages {
        instance
            .bus
            .publish(message.clone())
            .await
            .expect("publish");
    }
    let expected: Vec<u64> = (1..=N).collect();
    assert_eq!(
        recv_sequence(&mut rx, N as usize, Duration::from_secs(30)).await,
        expected
    );

    // What travelled: fewer AMQP messages than bus messages, the multi-message ones marked as
    // batches; their lines, in order, are the bus messages' JSON.
    let mut lines = Vec::new();
    let mut amqp_messages = 0;
    let mut batches = 0;
    while (lines.len() as u64) < N {
        let got = channel
            .basic_get(observer.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        let Some(got) = got else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        amqp_messages += 1;
        let content_type = got
            .properties
            .content_type()
            .as_ref()
            .map(|t| t.to_string());
        let body = got.delivery.data.clone();
        if body.contains(&b'\n') {
            batches += 1;
            assert_eq!(content_type.as_deref(), Some("application/x-ndjson"));
        } else {
            assert_eq!(content_type.as_deref(), Some("application/json"));
        }
        lines.extend(body.split(|b| *b == b'\n').map(<[u8]>::to_vec));
    }
    assert!(
        amqp_messages < N && batches > 0,
        "{amqp_messages} AMQP messages, {batches} batches for {N} bus messages"
    );
    let sent: Vec<Vec<u8>> = messages.iter().map(|m| m.json().to_vec()).collect();
    assert_eq!(lines, sent);

    // A batch from elsewhere with bad lines among good ones: the good ones arrive in order.
    let (first, second) = (indicator(N + 1), indicator(N + 2));
    let mut body = first.json().to_vec();
    body.extend_from_slice(b"\nnot json\n\n{\"type\": \"malware\"}\n");
    body.extend_from_slice(second.json());
    channel
        .basic_publish(
            exchange.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_content_type("application/x-ndjson".into()),
        )
        .await
        .expect("raw publish");
    // The same lines without the batch content type are one undecodable body.
    publish_raw(&channel, &exchange, &body, None).await;
    assert_eq!(recv(&mut rx, Duration::from_secs(10)).await, first);
    assert_eq!(recv(&mut rx, Duration::from_secs(10)).await, second);
    assert_silent(&mut rx, Duration::from_millis(300)).await;

    let stats = instance.stop().await;
    assert_eq!(
        RabbitMqStats::get(&stats.confirmed),
        N,
        "{}",
        stats.summary()
    );
    assert_eq!(
        RabbitMqStats::get(&stats.received),
        N + 2,
        "{}",
        stats.summary()
    );
    assert_eq!(
        RabbitMqStats::get(&stats.undecodable),
        3,
        "{}",
        stats.summary()
    );
    let _ = connection.close(200, "OK".into()).await;
}

/// TLS with verification (the default once enabled): the bus trusts the server's certificate
/// through `tls.ca_file`, checks it is issued for `host`, and works as over plain AMQP.
#[tokio::test]
async fn tls_with_a_trusted_server_certificate_works() {
    let OneQueue {
        exchange,
        suffix,
        queue,
        _cleanup,
    } = OneQueue::new("tls").await;
    let proxy = TlsProxy::start().await;
    let mut config = section(&exchange, &suffix, proxy.port);
    config["host"] = json!("localhost");
    config["tls"] = json!({"enabled": true, "ca_file": tls_fixture("ca.pem")});
    let instance = Instance::start(config).await;
    let mut rx = subscriber(&instance.bus, &["stix2/indicator"]).await;
    wait_for_consumer(&queue).await;
    let sent = indicator(1);
    instance.bus.publish(sent.clone()).await.expect("publish");
    assert_eq!(recv(&mut rx, Duration::from_secs(10)).await, sent);
    let stats = instance.stop().await;
    assert_eq!(RabbitMqStats::get(&stats.confirmed), 1);
    // Publisher and consumer each came through the TLS proxy, nothing was refused.
    assert_eq!(proxy.handshakes.load(Ordering::SeqCst), 2);
    assert_eq!(proxy.refused.load(Ordering::SeqCst), 0);
}

/// A server whose certificate the configured CA did not sign is not talked to (the bus keeps
/// retrying and its apps keep working); `tls.verify: false` talks to it anyway.
#[tokio::test]
async fn tls_refuses_a_server_the_ca_did_not_sign() {
    let OneQueue {
        exchange,
        suffix,
        queue,
        _cleanup,
    } = OneQueue::new("tls-bad").await;
    let proxy = TlsProxy::start().await;
    let mut config = section(&exchange, &suffix, proxy.port);
    config["host"] = json!("localhost");
    config["tls"] = json!({"enabled": true, "ca_file": tls_fixture("other-ca.pem")});
    let instance = Instance::start(config.clone()).await;
    let mut rx = subscriber(&instance.bus, &["stix2/indicator"]).await;
    instance.bus.publish(indicator(1)).await.expect("publish");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while proxy.refused.load(Ordering::SeqCst) < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bus did not retry"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.handshakes.load(Ordering::SeqCst), 0);
    assert_silent(&mut rx, Duration::from_millis(200)).await;
    let stats = instance.stop().await;
    assert_eq!(RabbitMqStats::get(&stats.confirmed), 0);
    assert_eq!(RabbitMqStats::get(&stats.unconfirmed_at_stop), 1);

    config["tls"]["verify"] = json!(false);
    let instance = Instance::start(config).await;
    let mut rx = subscriber(&instance.bus, &["stix2/indicator"]).await;
    wait_for_consumer(&queue).await;
    let sent = indicator(2);
    instance.bus.publish(sent.clone()).await.expect("publish");
    assert_eq!(recv(&mut rx, Duration::from_secs(10)).await, sent);
    instance.stop().await;
    assert_eq!(proxy.handshakes.load(Ordering::SeqCst), 2);
}

/// An exchange that exists with other flags fails the bus once, with a message naming it;
/// no endless reconnect loop. Same for a queue with other arguments.
#[tokio::test]
async fn mismatched_existing_objects_fail_once_with_a_clear_error() {
    let OneQueue {
        exchange,
        suffix,
        queue,
        _cleanup,
    } = OneQueue::new("mismatch").await;
    let (connection, channel) = admin().await;
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("durable exchange");
    let err = start_failing(section(&exchange, &suffix, BROKER_PORT))
        .await
        .to_string();
    assert!(err.contains(&format!("{exchange:?}")), "{err}");
    assert!(err.contains("PRECONDITION_FAILED"), "{err}");
    assert!(err.contains("durable"), "{err}");
    cleanup(&exchange, std::slice::from_ref(&queue)).await;

    // A queue with other arguments (x-queue-mode default where the config says lazy).
    let mut arguments = FieldTable::default();
    arguments.insert(
        ShortString::from("x-queue-mode"),
        AMQPValue::LongString(LongString::from("default")),
    );
    let channel = connection.create_channel().await.expect("channel");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .expect("queue with other arguments");
    let err = start_failing(section(&exchange, &suffix, BROKER_PORT))
        .await
        .to_string();
    assert!(err.contains(&format!("{queue:?}")), "{err}");
    assert!(err.contains("x-queue-mode"), "{err}");
    let _ = connection.close(200, "OK".into()).await;
}

/// A refused login and an unknown virtual host are configuration errors, not reasons to retry
/// forever.
#[tokio::test]
async fn refused_login_and_unknown_vhost_fail_the_bus() {
    let exchange = unique("login");
    let suffix = unique("l");
    let mut bad_password = section(&exchange, &suffix, BROKER_PORT);
    bad_password["password"] = json!("wrong");
    let err = start_failing(bad_password).await.to_string();
    assert!(err.contains("ACCESS_REFUSED"), "{err}");

    let mut bad_vhost = section(&exchange, &suffix, BROKER_PORT);
    bad_vhost["vhost"] = json!(unique("no-such-vhost"));
    let err = start_failing(bad_vhost).await.to_string();
    assert!(
        err.contains("vhost") || err.contains("NOT_ALLOWED"),
        "{err}"
    );
}

/// Two instances with their own queues on one exchange: a stream published at one reaches the
/// subscribers of both, each message once, in order.
#[tokio::test]
async fn two_instances_each_receive_every_message_once_in_order() {
    let exchange = unique("pair");
    let (suffix_a, suffix_b) = (unique("a"), unique("b"));
    let queues = [queue_of(&suffix_a), queue_of(&suffix_b)];
    let _cleanup = Cleanup::prepare(&exchange, &queues).await;
    let a = Instance::start(section(&exchange, &suffix_a, BROKER_PORT)).await;
    let b = Instance::start(section(&exchange, &suffix_b, BROKER_PORT)).await;
    let mut at_a = subscriber(&a.bus, &["stix2/indicator"]).await;
    let mut at_b = subscriber(&b.bus, &["stix2"]).await;
    wait_for_consumer(&queues[0]).await;
    wait_for_consumer(&queues[1]).await;

    const N: u64 = 2000;
    let publishing = {
        let bus = a.bus.clone();
        tokio::spawn(async move {
            for n in 1..=N {
                bus.publish(indicator(n)).await.expect("publish");
            }
        })
    };
    let expected: Vec<u64> = (1..=N).collect();
    let within = Duration::from_secs(30);
    assert_eq!(recv_sequence(&mut at_a, N as usize, within).await, expected);
    assert_eq!(recv_sequence(&mut at_b, N as usize, within).await, expected);
    publishing.await.expect("publisher task");
    assert_silent(&mut at_a, Duration::from_millis(300)).await;
    assert_silent(&mut at_b, Duration::from_millis(10)).await;

    let stats_b = b.stop().await;
    let stats_a = a.stop().await;
    assert_eq!(RabbitMqStats::get(&stats_a.confirmed), N);
    assert_eq!(RabbitMqStats::get(&stats_a.received), N);
    assert_eq!(RabbitMqStats::get(&stats_b.received), N);
}

/// A tiny confirm window is full most of the time: publishing must resume whenever confirms
/// free it, also after the last message came in (a regression: the publisher once waited
/// forever with messages buffered and none awaiting a confirm).
#[tokio::test]
async fn a_full_confirm_window_never_stalls_publishing() {
    let OneQueue {
        exchange,
        suffix,
        queue: _,
        _cleanup,
    } = OneQueue::new("window").await;
    let mut config = section(&exchange, &suffix, BROKER_PORT);
    config["confirm_window"] = json!(2);
    let instance = Instance::start(config).await;
    let mut rx = subscriber(&instance.bus, &["stix2/indicator"]).await;
    const N: u64 = 3000;
    for n in 1..=N {
        instance.bus.publish(indicator(n)).await.expect("publish");
    }
    let expected: Vec<u64> = (1..=N).collect();
    assert_eq!(
        recv_sequence(&mut rx, N as usize, Duration::from_secs(30)).await,
        expected
    );
    let stats = instance.stop().await;
    assert_eq!(RabbitMqStats::get(&stats.confirmed), N);
}

/// The bus starts while RabbitMQ is unreachable, takes messages meanwhile and delivers them in
/// order once it can connect.
#[tokio::test]
async fn starts_without_rabbitmq_and_flushes_the_buffer_later() {
    let OneQueue {
        exchange,
        suffix,
        queue: _,
        _cleanup,
    } = OneQueue::new("late").await;
    let proxy = Proxy::start(false).await;
    let instance = Instance::start(section(&exchange, &suffix, proxy.port)).await;
    let mut rx = subscriber(&instance.bus, &["stix2/indicator"]).await;
    for n in 1..=100 {
        instance.bus.publish(indicator(n)).await.expect("publish");
    }
    assert_silent(&mut rx, Duration::from_millis(500)).await;
    assert!(!instance.task.is_finished(), "the bus keeps running");

    proxy.set_up(true);
    let expected: Vec<u64> = (1..=100).collect();
    assert_eq!(
        recv_sequence(&mut rx, 100, Duration::from_secs(15)).await,
        expected
    );
    instance.stop().await;
}

/// While disconnected, the publish buffer is bounded: the newest messages beyond it are
/// dropped and counted; the older ones arrive.
#[tokio::test]
async fn a_full_buffer_drops_the_newest_and_counts_them() {
    let OneQueue {
        exchange,
        suffix,
        queue: _,
        _cleanup,
    } = OneQueue::new("full").await;
    let proxy = Proxy::start(false).await;
    let mut config = section(&exchange, &suffix, proxy.port);
    config["publish_buffer"] = json!(10);
    let instance = Instance::start(config).await;
    let mut rx = subscriber(&instance.bus, &["stix2/indicator"]).await;
    for n in 1..=25 {
        instance.bus.publish(indicator(n)).await.expect("publish");
    }
    // Let the backbone take them all in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while RabbitMqStats::get(&instance.stats.dropped_buffer_full) < 15 {
        assert!(tokio::time::Instant::now() < deadline, "drops not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.set_up(true);
    let expected: Vec<u64> = (1..=10).collect();
    assert_eq!(
        recv_sequence(&mut rx, 10, Duration::from_secs(15)).await,
        expected
    );
    assert_silent(&mut rx, Duration::from_millis(300)).await;
    let stats = instance.stop().await;
    assert_eq!(RabbitMqStats::get(&stats.dropped_buffer_full), 15);
}

/// Connections cut again and again mid-stream: every message arrives, in order, none twice
/// (unconfirmed messages are sent again and the repeats recognised by `message_id`).
#[tokio::test]
async fn cut_connections_lose_nothing_and_repeat_nothing() {
    cut_connections_mid_stream(1).await;
}

/// The same with batches: a batch sent again keeps its contents and its `message_id`, so the
/// consumer recognises it as a whole.
#[tokio::test]
async fn cut_connections_lose_nothing_and_repeat_nothing_with_batches() {
    cut_connections_mid_stream(64).await;
}

async fn cut_connections_mid_stream(batch_messages: usize) {
    let OneQueue {
        exchange,
        suffix,
        queue: _,
        _cleanup,
    } = OneQueue::new("cut").await;
    let proxy = Proxy::start(true).await;
    let mut config = section(&exchange, &suffix, proxy.port);
    config["batch_messages"] = json!(batch_messages);
    let instance = Instance::start(config).await;
    let mut rx = subscriber(&instance.bus, &["stix2/indicator"]).await;

    const N: u64 = 3000;
    let publishing = {
        let bus = instance.bus.clone();
        tokio::spawn(async move {
            for n in 1..=N {
                bus.publish(indicator(n)).await.expect("publish");
                if n % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    let mut seen = Vec::new();
    for round in 1..=5 {
        let more = recv_sequence(&mut rx, 300, Duration::from_secs(30)).await;
        seen.extend(more);
        proxy.cut();
        if round % 2 == 0 {
            // Stay away a little, so that publishes pile up in the buffer.
            proxy.set_up(false);
            tokio::time::sleep(Duration::from_millis(200)).await;
            proxy.set_up(true);
        }
    }
    let rest = N as usize - seen.len();
    seen.extend(recv_sequence(&mut rx, rest, Duration::from_secs(30)).await);
    publishing.await.expect("publisher task");
    assert_silent(&mut rx, Duration::from_millis(500)).await;
    let expected: Vec<u64> = (1..=N).collect();
    assert_eq!(seen, expected);

    let stats = instance.stop().await;
    // A cut may come while a half is still away (the subscriber reads from its local queue),
    // so fewer than two reconnects per cut are possible.
    assert!(
        RabbitMqStats::get(&stats.reconnects) >= 1,
        "{}",
        stats.summary()
    );
    assert_eq!(
        RabbitMqStats::get(&stats.confirmed),
        N,
        "{}",
        stats.summary()
    );
}

/// Connections that hang without failing (a network silently dropping everything): the
/// publisher gives up on them after `confirm_timeout`, the consumer after missed heartbeats,
/// and every message still arrives once, in order.
#[tokio::test]
async fn hung_connections_are_replaced() {
    let OneQueue {
        exchange,
        suffix,
        queue: _,
        _cleanup,
    } = OneQueue::new("hung").await;
    let proxy = Proxy::start(true).await;
    let mut config = section(&exchange, &suffix, proxy.port);
    config["confirm_timeout"] = json!(1);
    config["heartbeat"] = json!(1);
    let instance = Instance::start(config).await;
    let mut rx = subscriber(&instance.bus, &["stix2/indicator"]).await;
    for n in 1..=50 {
        instance.bus.publish(indicator(n)).await.expect("publish");
    }
    let mut seen = recv_sequence(&mut rx, 50, Duration::from_secs(10)).await;
    proxy.freeze();
    for n in 51..=100 {
        instance.bus.publish(indicator(n)).await.expect("publish");
    }
    seen.extend(recv_sequence(&mut rx, 50, Duration::from_secs(20)).await);
    assert_eq!(seen, (1..=100).collect::<Vec<u64>>());
    assert_silent(&mut rx, Duration::from_millis(300)).await;
    let stats = instance.stop().await;
    assert!(
        RabbitMqStats::get(&stats.reconnects) >= 2,
        "{}",
        stats.summary()
    );
}

/// The same `message_id` twice (a publisher's resend) reaches subscribers once; messages
/// without ids (upstream's publisher) are never suppressed.
#[tokio::test]
async fn repeated_message_ids_are_delivered_once() {
    let OneQueue {
        exchange,
        suffix,
        queue,
        _cleanup,
    } = OneQueue::new("repeat").await;
    let instance = Instance::start(section(&exchange, &suffix, BROKER_PORT)).await;
    let mut rx = subscriber(&instance.bus, &["stix2/indicator"]).await;
    wait_for_consumer(&queue).await;
    let (connection, channel) = admin().await;
    let first = indicator(1);
    let second = indicator(2);
    publish_raw(&channel, &exchange, first.json(), Some("publisher-x.1")).await;
    publish_raw(&channel, &exchange, first.json(), Some("publisher-x.1")).await;
    publish_raw(&channel, &exchange, second.json(), Some("publisher-x.2")).await;
    publish_raw(&channel, &exchange, first.json(), None).await;
    publish_raw(&channel, &exchange, first.json(), None).await;
    let got = recv_sequence(&mut rx, 4, Duration::from_secs(10)).await;
    assert_eq!(got, [1, 2, 1, 1]);
    assert_silent(&mut rx, Duration::from_millis(300)).await;
    let stats = instance.stop().await;
    assert_eq!(RabbitMqStats::get(&stats.repeats), 1);
    let _ = connection.close(200, "OK".into()).await;
}

/// Shutdown right after a burst: everything is confirmed before the connection closes, and
/// another instance receives all of it.
#[tokio::test]
async fn shutdown_flushes_what_was_published() {
    let exchange = unique("flush");
    let (suffix_a, suffix_b) = (unique("a"), unique("b"));
    let queues = [queue_of(&suffix_a), queue_of(&suffix_b)];
    let _cleanup = Cleanup::prepare(&exchange, &queues).await;
    let b = Instance::start(section(&exchange, &suffix_b, BROKER_PORT)).await;
    let mut at_b = subscriber(&b.bus, &["stix2/indicator"]).await;
    wait_for_consumer(&queues[1]).await;
    let a = Instance::start(section(&exchange, &suffix_a, BROKER_PORT)).await;
    const N: u64 = 1000;
    for n in 1..=N {
        a.bus.publish(indicator(n)).await.expect("publish");
    }
    let stats_a = a.stop().await;
    assert_eq!(
        RabbitMqStats::get(&stats_a.confirmed),
        N,
        "{}",
        stats_a.summary()
    );
    assert_eq!(RabbitMqStats::get(&stats_a.unconfirmed_at_stop), 0);
    let expected: Vec<u64> = (1..=N).collect();
    assert_eq!(
        recv_sequence(&mut at_b, N as usize, Duration::from_secs(20)).await,
        expected
    );
    b.stop().await;
}

/// Runs `rabbitmqctl` (the server's management tool), failing the test if it fails.
fn rabbitmqctl(args: &[&str]) {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("rabbitmqctl {args:?}: {err} (is RabbitMQ installed?)"));
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// With `on_undecodable: reject`, a message that is not a bus message is rejected without
/// requeueing, so RabbitMQ dead-letters it when a policy gives the queue a dead-letter exchange.
#[tokio::test]
async fn rejected_messages_are_dead_lettered() {
    let exchange = unique("reject");
    let suffix = unique("r");
    let queue = queue_of(&suffix);
    let dead_letters = unique("dlx");
    let dead_queue = unique("dlq");
    let _cleanup = Cleanup::prepare(&exchange, std::slice::from_ref(&queue)).await;
    let _dead_cleanup = Cleanup::prepare(&dead_letters, std::slice::from_ref(&dead_queue)).await;
    let (connection, channel) = admin().await;
    declare_upstream_exchange(&channel, &dead_letters).await;
    declare_bound_queue(
        &channel,
        &dead_queue,
        &dead_letters,
        QueueDeclareOptions::default(),
    )
    .await;
    let policy = unique("policy");
    let definition = format!(r#"{{"dead-letter-exchange":"{dead_letters}"}}"#);
    rabbitmqctl(&[
        "set_policy",
        &policy,
        &format!("^{queue}$"),
        &definition,
        "--apply-to",
        "queues",
    ]);

    let mut config = section(&exchange, &suffix, BROKER_PORT);
    config["on_undecodable"] = json!("reject");
    let instance = Instance::start(config).await;
    let mut rx = subscriber(&instance.bus, &["stix2/indicator"]).await;
    wait_for_consumer(&queue).await;
    publish_raw(&channel, &exchange, b"garbage", None).await;
    let valid = indicator(1);
    publish_raw(&channel, &exchange, valid.json(), None).await;
    assert_eq!(recv(&mut rx, Duration::from_secs(10)).await, valid);
    let stats = instance.stop().await;
    rabbitmqctl(&["clear_policy", &policy]);
    assert_eq!(RabbitMqStats::get(&stats.undecodable), 1);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let dead = loop {
        if let Some(got) = channel
            .basic_get(dead_queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            break got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing was dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead.delivery.data, b"garbage");
    let _ = connection.close(200, "OK".into()).await;
}
