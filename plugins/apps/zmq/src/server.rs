//! Binds the three sockets, runs the manage and receive threads and the publisher task, and
//! stops them in order on shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jiff::SignedDuration;
use rand::Rng;
use threatbus_core::queue::{SubscriberId, SubscriberOptions};
use threatbus_core::throttle::{LogThrottle, bounded, bounded_list};
use threatbus_core::{BusHandle, PluginError, Shutdown};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{SubscribeError, ZmqAppError};
use crate::manage::{self, Refusal, Request, Status};
use crate::{ZmqConfig, publisher, receiver};

/// How often the socket threads look at the shutdown token.
pub(crate) const POLL_INTERVAL_MS: i32 = 100;
/// Requests ZeroMQ buffers per manage connection.
const MANAGE_RECEIVE_HWM: i32 = 16;
/// How long closing sockets may wait for unsent frames.
const LINGER_MS: i32 = 500;

pub(crate) async fn run(
    config: ZmqConfig,
    bus: BusHandle,
    shutdown: Shutdown,
) -> Result<(), PluginError> {
    let context = zmq::Context::new();
    let sockets = Sockets::bind(&context, &config).map_err(PluginError::from_error)?;
    tracing::info!(
        manage = %config.endpoint(sockets.manage_port),
        r#pub = %config.endpoint(sockets.pub_port),
        sub = %config.endpoint(sockets.sub_port),
        "ZeroMQ app listening"
    );
    bus.set_ready(true);
    let (failures_tx, mut failures) = mpsc::unbounded_channel::<ZmqAppError>();
    let (outlets_tx, outlets_rx) = mpsc::unbounded_channel();

    let (expired_tx, expired_rx) = std::sync::mpsc::channel();
    let publisher = tokio::spawn(publisher::run(
        sockets.publish,
        outlets_rx,
        publisher::ListenerPolicy {
            bus: bus.clone(),
            listener_timeout: Duration::from_secs(config.listener_timeout),
            expired: expired_tx,
        },
        shutdown.stop.clone(),
    ));
    let expirations = |reason: &str| {
        bus.metrics()
            .counter(&crate::metrics::ZMQ_EXPIRED, &[reason])
    };
    let manager = Manager {
        bus: bus.clone(),
        outlets: outlets_tx,
        pub_port: sockets.pub_port,
        sub_port: sockets.sub_port,
        timeout: config.subscription_timeout.map(Duration::from_secs),
        limits: config.limits(),
        max_subscriptions: config.max_subscriptions,
        subscriptions: HashMap::new(),
        logs: ManageLogs::default(),
        unheard: expired_rx,
        expired_no_listener: expirations("no_listener"),
        expired_no_heartbeat: expirations("no_heartbeat"),
    };
    let threads = [
        spawn_thread("zmq-manage", failures_tx.clone(), {
            let (socket, stop) = (sockets.manage, shutdown.stop_input.clone());
            move || manage_loop(socket, manager, stop)
        }),
        spawn_thread("zmq-receive", failures_tx, {
            let (socket, stop) = (sockets.receive, shutdown.stop_input.clone());
            move || receiver::run(socket, bus, stop)
        }),
    ];

    let mut result = Ok(());
    tokio::select! {
        _ = shutdown.stop.cancelled() => {
            let _ = publisher.await;
        }
        Some(failure) = failures.recv() => {
            // The bus stops everything once this app returns; do not wait for the publisher,
            // which only finishes on the bus's stop signal.
            result = Err(PluginError::from_error(failure));
            shutdown.stop_input.cancel();
            publisher.abort();
        }
    }
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads.into_iter().flatten() {
            let _ = thread.join();
        }
        // Waits up to the sockets' linger time for unsent frames.
        drop(context);
    })
    .await;
    tracing::debug!("ZeroMQ app stopped");
    result
}

/// Starts a socket thread; its error, if any, ends the app.
fn spawn_thread(
    name: &str,
    failures: mpsc::UnboundedSender<ZmqAppError>,
    body: impl FnOnce() -> Result<(), ZmqAppError> + Send + 'static,
) -> Option<JoinHandle<()>> {
    let reporter = failures.clone();
    let thread_name = name.to_owned();
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            // A panic must not leave the app running without this thread: report it, and the
            // bus stops with an error instead of silently ignoring a socket.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    let _ = reporter.send(err);
                }
                Err(_) => {
                    let _ = reporter.send(ZmqAppError::Panicked(thread_name));
                }
            }
        });
    spawned
        .map_err(|source| {
            failures.send(ZmqAppError::Thread {
                name: name.to_owned(),
                source,
            })
        })
        .ok()
}

struct Sockets {
    manage: zmq::Socket,
    publish: zmq::Socket,
    receive: zmq::Socket,
    manage_port: u16,
    pub_port: u16,
    sub_port: u16,
}

impl Sockets {
    /// Creates, configures and binds the three sockets. Options must be set before `bind`:
    /// ZeroMQ copies them into the listener, so later changes do not reach accepted peers.
    fn bind(context: &zmq::Context, config: &ZmqConfig) -> Result<Self, ZmqAppError> {
        let open = |kind: zmq::SocketType,
                    name: &'static str,
                    port: u16,
                    configure: &dyn Fn(&mut zmq::Socket) -> zmq::Result<()>|
         -> Result<(zmq::Socket, u16), ZmqAppError> {
            let endpoint = config.endpoint(port);
            let fail = |source: zmq::Error| ZmqAppError::Bind {
                socket: name,
                endpoint: endpoint.clone(),
                source,
            };
            let mut socket = context.socket(kind).map_err(fail)?;
            socket.set_linger(LINGER_MS).map_err(fail)?;
            socket.set_ipv6(config.is_ipv6()).map_err(fail)?;
            configure(&mut socket).map_err(fail)?;
            socket.bind(&endpoint).map_err(fail)?;
            let bound = socket
                .get_last_endpoint()
                .ok()
                .and_then(Result::ok)
                .and_then(|e| e.rsplit(':').next().and_then(|p| p.parse().ok()))
                .unwrap_or(port);
            Ok((socket, bound))
        };
        let (manage, manage_port) = open(zmq::REP, "manage", config.manage, &|socket| {
            socket.set_rcvtimeo(POLL_INTERVAL_MS)?;
            socket.set_sndtimeo(1000)?;
            // Requests are rare and answered one at a time: a client that sends without
            // waiting for replies is held back by TCP after a few, instead of piling up
            // requests (and memory) in the bus.
            socket.set_rcvhwm(MANAGE_RECEIVE_HWM)?;
            socket.set_maxmsgsize(config.max_message_size)
        })?;
        // XPUB: a PUB socket that also reports the apps' subscriptions (see publisher.rs).
        let (publish, pub_port) = open(zmq::XPUB, "pub", config.pub_port, &|socket| {
            socket.set_sndhwm(config.send_hwm)?;
            // A full app buffer makes the send fail rather than drop the frame silently; the
            // publisher then holds that app's frames (see publisher.rs).
            threatbus_zmq_client::set_nodrop(socket)
        })?;
        let (receive, sub_port) = open(zmq::SUB, "sub", config.sub_port, &|socket| {
            socket.set_rcvtimeo(POLL_INTERVAL_MS)?;
            socket.set_rcvhwm(config.receive_hwm)?;
            socket.set_maxmsgsize(config.max_message_size)?;
            for prefix in receiver::SUBSCRIBED_PREFIXES {
                socket.set_subscribe(prefix.as_bytes())?;
            }
            Ok(())
        })?;
        Ok(Self {
            manage,
            publish,
            receive,
            manage_port,
            pub_port,
            sub_port,
        })
    }
}

/// Serves management requests until `stop` fires.
fn manage_loop(
    socket: zmq::Socket,
    mut manager: Manager,
    stop: CancellationToken,
) -> Result<(), ZmqAppError> {
    while !stop.is_cancelled() {
        manager.expire_silent_subscriptions();
        manager.expire_unheard_subscriptions();
        let payload = match socket.recv_bytes(0) {
            Ok(payload) => payload,
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => continue,
            Err(zmq::Error::ETERM) => break,
            Err(source) => {
                return Err(ZmqAppError::Socket {
                    socket: "manage",
                    source,
                });
            }
        };
        // Extra parts of a multi-part request are ignored; the reply answers the first.
        while socket.get_rcvmore().unwrap_or(false) {
            let _ = socket.recv_bytes(0);
        }
        let reply = manager.handle(&payload);
        if let Err(err) = socket.send(reply.as_bytes(), 0) {
            tracing::warn!(error = %err, "could not send a management reply");
        }
    }
    Ok(())
}

/// One p2p subscription.
struct Subscription {
    id: SubscriberId,
    topics: Vec<String>,
    last_seen: Instant,
}

/// The manage thread's state: p2p topic → subscription.
struct Manager {
    bus: BusHandle,
    outlets: mpsc::UnboundedSender<publisher::Outlet>,
    pub_port: u16,
    sub_port: u16,
    timeout: Option<Duration>,
    limits: manage::Limits,
    max_subscriptions: usize,
    subscriptions: HashMap<String, Subscription>,
    logs: ManageLogs,
    /// p2p topics no SUB socket has listened to for `listener_timeout` (from the publisher).
    unheard: std::sync::mpsc::Receiver<String>,
    expired_no_listener: threatbus_core::metrics::Counter,
    expired_no_heartbeat: threatbus_core::metrics::Counter,
}

/// One throttle per kind of line a manage client can cause, so a flood of one kind neither
/// fills the log nor hides the others.
struct ManageLogs {
    rejected: LogThrottle,
    failed: LogThrottle,
    subscribed: LogThrottle,
    unsubscribed: LogThrottle,
    unknown: LogThrottle,
}

impl Default for ManageLogs {
    fn default() -> Self {
        let burst = |n| LogThrottle::new(n, Duration::from_secs(5));
        Self {
            rejected: burst(10),
            failed: burst(10),
            // Each subscription is worth a line, but a subscribe loop is not worth thousands.
            subscribed: burst(50),
            unsubscribed: burst(50),
            unknown: burst(10),
        }
    }
}

impl Manager {
    fn handle(&mut self, payload: &[u8]) -> String {
        match manage::decode_within(payload, &self.limits) {
            Err(refusal) => {
                if let Some(suppressed) = self.logs.rejected.allow() {
                    let reason = match &refusal {
                        Refusal::Status(status) => format!("{status:?}"),
                        Refusal::WithReason(reason) => reason.clone(),
                    };
                    tracing::debug!(
                        request = %threatbus_core::throttle::bounded_bytes(payload),
                        %reason,
                        suppressed,
                        "rejected management request"
                    );
                }
                refusal.to_json()
            }
            Ok(Request::Subscribe {
                topics,
                snapshot_days,
            }) => self
                .subscribe(topics, snapshot_days)
                .unwrap_or_else(|refusal| {
                    if let Some(suppressed) = self.logs.failed.allow() {
                        let reason = match &refusal {
                            Refusal::Status(status) => format!("{status:?}"),
                            Refusal::WithReason(reason) => reason.clone(),
                        };
                        tracing::warn!(%reason, suppressed, "subscription failed");
                    }
                    refusal.to_json()
                }),
            Ok(Request::Unsubscribe { p2p_topic }) => {
                if self.remove_subscription(&p2p_topic, "ZeroMQ app unsubscribed") {
                    Status::Success.to_json()
                } else {
                    if let Some(suppressed) = self.logs.unknown.allow() {
                        tracing::debug!(p2p_topic = %bounded(&p2p_topic), suppressed, "unsubscribe for an unknown p2p topic");
                    }
                    Status::Error.to_json()
                }
            }
            Ok(Request::Heartbeat { p2p_topic }) => match self.subscriptions.get_mut(&p2p_topic) {
                Some(subscription) => {
                    subscription.last_seen = Instant::now();
                    Status::Success.to_json()
                }
                None => {
                    if let Some(suppressed) = self.logs.unknown.allow() {
                        tracing::debug!(p2p_topic = %bounded(&p2p_topic), suppressed, "heartbeat for an unknown p2p topic");
                    }
                    Status::Error.to_json()
                }
            },
        }
    }

    fn subscribe(&mut self, topics: Vec<String>, snapshot_days: i64) -> Result<String, Refusal> {
        if self.subscriptions.len() >= self.max_subscriptions {
            return Err(Refusal::WithReason(format!(
                "the ZeroMQ app holds max_subscriptions ({}) subscriptions",
                self.max_subscriptions
            )));
        }
        self.add_subscription(topics, snapshot_days)
            .map_err(|err| Refusal::WithReason(err.to_string()))
    }

    fn add_subscription(
        &mut self,
        topics: Vec<String>,
        snapshot_days: i64,
    ) -> Result<String, SubscribeError> {
        let snapshot = match snapshot_days {
            0 => None,
            days => Some(
                days.checked_mul(86_400)
                    .map(SignedDuration::from_secs)
                    .ok_or(SubscribeError::SnapshotOutOfRange(days))?,
            ),
        };
        let p2p_topic = self.fresh_p2p_topic();
        let receiver = self.bus.blocking_add_subscriber(SubscriberOptions {
            label: p2p_topic.clone(),
            snapshot_requests: true,
            ..Default::default()
        })?;
        let id = receiver.id;
        let outlet = publisher::Outlet::new(Arc::from(p2p_topic.as_str()), receiver);
        if self.outlets.send(outlet).is_err() {
            let _ = self.bus.blocking_remove_subscriber(id);
            return Err(SubscribeError::PublisherStopped);
        }
        if let Err(err) = self.bus.blocking_subscribe(id, topics.clone(), snapshot) {
            let _ = self.bus.blocking_remove_subscriber(id);
            return Err(err.into());
        }
        if let Some(suppressed) = self.logs.subscribed.allow() {
            tracing::info!(
                p2p_topic,
                topics = %bounded_list(&topics),
                snapshot_days,
                suppressed,
                "ZeroMQ app subscribed"
            );
        }
        self.subscriptions.insert(
            p2p_topic.clone(),
            Subscription {
                id,
                topics,
                last_seen: Instant::now(),
            },
        );
        Ok(manage::subscribed_reply(
            &p2p_topic,
            self.pub_port,
            self.sub_port,
        ))
    }

    /// 32 random lower-case letters, unique among current subscriptions.
    fn fresh_p2p_topic(&self) -> String {
        let mut rng = rand::rng();
        loop {
            let topic: String = (0..32)
                .map(|_| char::from(rng.random_range(b'a'..=b'z')))
                .collect();
            if !self.subscriptions.contains_key(&topic) {
                return topic;
            }
        }
    }

    /// Removes a subscription and its bus subscriber, with a (throttled) line saying why;
    /// false if there is no such subscription.
    fn remove_subscription(&mut self, p2p_topic: &str, why: &str) -> bool {
        let Some(subscription) = self.subscriptions.remove(p2p_topic) else {
            return false;
        };
        let _ = self.bus.blocking_remove_subscriber(subscription.id);
        if let Some(suppressed) = self.logs.unsubscribed.allow() {
            tracing::info!(
                p2p_topic,
                topics = %bounded_list(&subscription.topics),
                suppressed,
                "{why}"
            );
        }
        true
    }

    /// Removes the subscriptions the publisher reports unheard.
    fn expire_unheard_subscriptions(&mut self) {
        while let Ok(p2p_topic) = self.unheard.try_recv() {
            if self.remove_subscription(
                &p2p_topic,
                "ZeroMQ subscription removed: no SUB socket listened to its p2p topic for listener_timeout",
            ) {
                self.expired_no_listener.inc();
            }
        }
    }

    fn expire_silent_subscriptions(&mut self) {
        let Some(timeout) = self.timeout else { return };
        let expired: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| s.last_seen.elapsed() > timeout)
            .map(|(topic, _)| topic.clone())
            .collect();
        for p2p_topic in expired {
            if self.remove_subscription(
                &p2p_topic,
                "ZeroMQ subscription expired: no heartbeat for subscription_timeout",
            ) {
                self.expired_no_heartbeat.inc();
            }
        }
    }
}
