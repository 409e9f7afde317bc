//! The client side of the ZeroMQ app's protocol, for programs that talk to a running bus
//! (`threatbus tail`, `threatbus publish`, the load generator):
//!
//! * [`ManageClient`]: the manage socket (REQ/REP, one JSON object each way): subscribe,
//!   heartbeat, unsubscribe;
//! * [`connect_subscriber`]: a SUB socket on the bus's pub socket that returns once it is
//!   connected, so that what the bus sends next is not lost to the "slow joiner";
//! * [`Publisher`]: an XPUB socket on the bus's sub socket that sends nothing before the bus has
//!   subscribed, drops nothing at its high-water mark and flushes what it queued when closed.
//!
//! Every error says what failed and at which endpoint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use thiserror::Error;

/// `tcp://host:port` for a host as a user gives it: [`crate::tcp_endpoint`], also accepting an
/// IPv6 address that is already in brackets (`[::1]`).
pub fn endpoint(host: &str, port: u16) -> String {
    let host = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    crate::tcp_endpoint(host, port)
}

/// A subscription granted by the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The p2p topic the bus tags this subscription's frames with.
    pub p2p_topic: String,
    /// Port of the bus's PUB socket (where subscribers connect).
    pub pub_port: u16,
    /// Port of the bus's SUB socket (where publishers connect).
    pub sub_port: u16,
}

/// What is wrong with a manage reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplyProblem {
    /// `status` is there but not `success`.
    #[error("status {0:?}")]
    Status(String),
    #[error("no status")]
    NoStatus,
    #[error("no usable p2p topic")]
    NoP2pTopic,
    #[error("`{0}` is not a port number")]
    BadPort(&'static str),
}

/// Why talking to the bus failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// A ZeroMQ call failed.
    #[error("cannot {action} the {socket} socket {endpoint}: {error}")]
    Socket {
        /// E.g. `connect to`, `send to`.
        action: &'static str,
        /// `manage`, `pub` or `sub`: the bus's socket at the other end.
        socket: &'static str,
        endpoint: String,
        /// Not a `source`: the message has it already.
        error: zmq::Error,
    },
    /// A manage request got no reply in time.
    #[error(
        "no reply from the manage socket {endpoint} within {} (is a bus listening there?)",
        seconds(*timeout)
    )]
    NoReply { endpoint: String, timeout: Duration },
    /// A manage reply that is not JSON.
    #[error("the manage socket {endpoint} replied with something that is not JSON: {reply:?}")]
    NotJson { endpoint: String, reply: String },
    /// The bus answered a request with an error status.
    #[error("the manage socket {endpoint} refused the {request} request: {reply}")]
    Refused {
        request: &'static str,
        endpoint: String,
        reply: String,
    },
    /// A reply that does not have the shape the protocol gives it.
    #[error("bad {request} reply from the manage socket {endpoint}: {problem}: {reply}")]
    BadReply {
        request: &'static str,
        endpoint: String,
        problem: ReplyProblem,
        reply: String,
    },
    /// The SUB socket did not complete a connection to the bus's pub socket in time.
    #[error(
        "could not connect to the pub socket {endpoint} within {} (is a bus listening there?)",
        seconds(*timeout)
    )]
    NotConnected { endpoint: String, timeout: Duration },
    /// Nothing at the sub socket's endpoint subscribed to what we are about to send.
    #[error(
        "no subscription from the sub socket {endpoint} within {} (is a bus listening there?)",
        seconds(*timeout)
    )]
    NotSubscribed { endpoint: String, timeout: Duration },
    /// The bus took no frame for a whole send timeout.
    #[error(
        "the sub socket {endpoint} took no message for {} (has the bus stopped reading?)",
        seconds(*timeout)
    )]
    SendTimeout { endpoint: String, timeout: Duration },
}

/// `5 s`, `0.5 s`.
fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.0} s")
    } else {
        format!("{secs} s")
    }
}

/// A ZeroMQ timeout option in milliseconds, saturating.
fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

/// IPv6 must be switched on per socket to reach an IPv6 address; IPv4-only otherwise, so that
/// a host name resolves to the IPv4 address the bus usually binds.
fn is_ipv6(endpoint: &str) -> bool {
    endpoint.contains('[')
}

fn socket_error(
    action: &'static str,
    socket: &'static str,
    endpoint: &str,
) -> impl FnOnce(zmq::Error) -> ClientError {
    let endpoint = endpoint.to_owned();
    move |error| ClientError::Socket {
        action,
        socket,
        endpoint,
        error,
    }
}

/// A REQ socket connected to the bus's manage socket.
///
/// A request that gets no reply in time leaves the socket unusable (REQ waits for that reply
/// for ever), so it is replaced by a fresh one: the next request works again once the bus
/// answers, also after a restart of the bus.
pub struct ManageClient {
    context: zmq::Context,
    socket: zmq::Socket,
    endpoint: String,
    timeout: Duration,
}

impl ManageClient {
    /// Connects to `endpoint`; replies must come within `timeout`.
    pub fn connect(
        context: &zmq::Context,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            socket: Self::open(context, endpoint, timeout)?,
            context: context.clone(),
            endpoint: endpoint.to_owned(),
            timeout,
        })
    }

    fn open(
        context: &zmq::Context,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<zmq::Socket, ClientError> {
        let setup = || -> zmq::Result<zmq::Socket> {
            let socket = context.socket(zmq::REQ)?;
            socket.set_rcvtimeo(millis(timeout))?;
            socket.set_sndtimeo(millis(timeout))?;
            socket.set_linger(0)?;
            socket.set_ipv6(is_ipv6(endpoint))?;
            Ok(socket)
        };
        let socket = setup().map_err(socket_error("open", "manage", endpoint))?;
        socket
            .connect(endpoint)
            .map_err(socket_error("connect to", "manage", endpoint))?;
        Ok(socket)
    }

    /// Changes how long a reply may take.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let fail = |error| socket_error("configure", "manage", &self.endpoint)(error);
        self.socket.set_rcvtimeo(millis(timeout)).map_err(fail)?;
        self.socket.set_sndtimeo(millis(timeout)).map_err(fail)?;
        self.timeout = timeout;
        Ok(())
    }

    /// The manage endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Subscribes to the topic prefix `topic` and asks for `snapshot_days` days of history (0:
    /// none). The empty topic subscribes to everything: it is sent as `[""]`, since the bus
    /// reads a bare empty topic as no topic at all.
    pub fn subscribe(
        &mut self,
        topic: &str,
        snapshot_days: u32,
    ) -> Result<Subscription, ClientError> {
        let topic = if topic.is_empty() {
            json!([""])
        } else {
            json!(topic)
        };
        let reply = self
            .request(&json!({"action": "subscribe", "topic": topic, "snapshot": snapshot_days}))?;
        parse_subscribe_reply(&reply)
            .map_err(|problem| self.reply_error("subscribe", problem, &reply))
    }

    /// Ends the subscription with `p2p_topic`. A bus that does not know it (any more) answers
    /// with an error: [`ClientError::Refused`].
    pub fn unsubscribe(&mut self, p2p_topic: &str) -> Result<(), ClientError> {
        let reply = self.request(&json!({"action": "unsubscribe", "topic": p2p_topic}))?;
        match status(&reply) {
            Ok(()) => Ok(()),
            Err(problem) => Err(self.reply_error("unsubscribe", problem, &reply)),
        }
    }

    /// Tells the bus the subscription with `p2p_topic` is still in use (a bus with
    /// `subscription_timeout` forgets silent ones). `Ok(false)`: the bus does not know it (any
    /// more), for example after a restart; subscribe again.
    pub fn heartbeat(&mut self, p2p_topic: &str) -> Result<bool, ClientError> {
        let reply = self.request(&json!({"action": "heartbeat", "topic": p2p_topic}))?;
        match status(&reply) {
            Ok(()) => Ok(true),
            Err(ReplyProblem::Status(status)) if status == "error" => Ok(false),
            Err(problem) => Err(self.reply_error("heartbeat", problem, &reply)),
        }
    }

    /// Sends one request and waits for its reply.
    pub fn request(&mut self, request: &Value) -> Result<Value, ClientError> {
        let sent = self.socket.send(request.to_string().as_bytes(), 0);
        let reply = sent.and_then(|()| self.socket.recv_bytes(0));
        let reply = match reply {
            Ok(reply) => reply,
            Err(zmq::Error::EAGAIN) => {
                // Without its reply this socket cannot send again.
                if let Ok(fresh) = Self::open(&self.context, &self.endpoint, self.timeout) {
                    self.socket = fresh;
                }
                return Err(ClientError::NoReply {
                    endpoint: self.endpoint.clone(),
                    timeout: self.timeout,
                });
            }
            Err(error) => {
                return Err(socket_error("talk to", "manage", &self.endpoint)(error));
            }
        };
        serde_json::from_slice(&reply).map_err(|_| ClientError::NotJson {
            endpoint: self.endpoint.clone(),
            reply: String::from_utf8_lossy(&reply[..reply.len().min(200)]).into_owned(),
        })
    }

    fn reply_error(
        &self,
        request: &'static str,
        problem: ReplyProblem,
        reply: &Value,
    ) -> ClientError {
        let endpoint = self.endpoint.clone();
        let reply = reply.to_string();
        match problem {
            ReplyProblem::Status(_) => ClientError::Refused {
                request,
                endpoint,
                reply,
            },
            problem => ClientError::BadReply {
                request,
                endpoint,
                problem,
                reply,
            },
        }
    }
}

/// `Ok` for `"status": "success"`.
fn status(reply: &Value) -> Result<(), ReplyProblem> {
    match reply.get("status").and_then(Value::as_str) {
        Some("success") => Ok(()),
        Some(status) => Err(ReplyProblem::Status(status.to_owned())),
        None => Err(ReplyProblem::NoStatus),
    }
}

/// Reads `{"topic": P, "pub_port": N, "sub_port": N, "status": "success"}`.
pub fn parse_subscribe_reply(reply: &Value) -> Result<Subscription, ReplyProblem> {
    status(reply)?;
    let p2p_topic = reply
        .get("topic")
        .and_then(Value::as_str)
        .filter(|topic| !topic.is_empty() && !topic.contains(' '))
        .ok_or(ReplyProblem::NoP2pTopic)?;
    let port = |key: &'static str| {
        reply
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|port| u16::try_from(port).ok())
            .filter(|&port| port != 0)
            .ok_or(ReplyProblem::BadPort(key))
    };
    Ok(Subscription {
        p2p_topic: p2p_topic.to_owned(),
        pub_port: port("pub_port")?,
        sub_port: port("sub_port")?,
    })
}

/// Distinct names for the monitor sockets of [`connect_subscriber`].
static MONITORS: AtomicU64 = AtomicU64::new(0);

/// Connects a SUB socket to the bus's pub socket at `endpoint`, subscribes it to `p2p_topic`
/// and returns once the ZeroMQ handshake with the bus is done (and a moment more, for the
/// subscription to reach the bus), or fails after `timeout`. The socket has a receive timeout
/// of `poll`, so that a receive loop can look at other things in between.
pub fn connect_subscriber(
    context: &zmq::Context,
    endpoint: &str,
    p2p_topic: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<zmq::Socket, ClientError> {
    /// The subscription follows the handshake at once; this lets it arrive.
    const SETTLE: Duration = Duration::from_millis(100);
    let fail = |action| socket_error(action, "pub", endpoint);
    let monitor_endpoint = format!(
        "inproc://threatbus-client-monitor-{}",
        MONITORS.fetch_add(1, Ordering::Relaxed)
    );
    let setup = || -> zmq::Result<(zmq::Socket, zmq::Socket)> {
        let socket = context.socket(zmq::SUB)?;
        socket.set_rcvtimeo(millis(poll))?;
        socket.set_linger(0)?;
        socket.set_ipv6(is_ipv6(endpoint))?;
        socket.set_subscribe(p2p_topic.as_bytes())?;
        socket.monitor(
            &monitor_endpoint,
            zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32,
        )?;
        let monitor = context.socket(zmq::PAIR)?;
        monitor.set_linger(0)?;
        monitor.connect(&monitor_endpoint)?;
        Ok((socket, monitor))
    };
    let (mut socket, monitor) = setup().map_err(fail("open a client for"))?;
    let connected = socket
        .connect(endpoint)
        .map_err(fail("connect to"))
        .and_then(|()| wait_for_handshake(&monitor, endpoint, timeout));
    // Before the monitor's peer goes away: libzmq's I/O thread would block on the next event
    // (a reconnection) it could not deliver, and with it every socket of the context.
    let stopped = stop_monitor(&mut socket).map_err(fail("stop watching"));
    drop(monitor);
    connected?;
    stopped?;
    std::thread::sleep(SETTLE);
    Ok(socket)
}

/// Waits for `HANDSHAKE_SUCCEEDED` on a monitor socket.
fn wait_for_handshake(
    monitor: &zmq::Socket,
    endpoint: &str,
    timeout: Duration,
) -> Result<(), ClientError> {
    let fail = |action| socket_error(action, "pub", endpoint);
    let deadline = Instant::now() + timeout;
    loop {
        if !readable_before(monitor, deadline).map_err(fail("watch the connection to"))? {
            return Err(ClientError::NotConnected {
                endpoint: endpoint.to_owned(),
                timeout,
            });
        }
        // An event is two frames: event number (u16) and value (u32), then the endpoint.
        let event = monitor
            .recv_multipart(0)
            .map_err(fail("watch the connection to"))?;
        let number = event
            .first()
            .and_then(|frame| frame.get(..2))
            .map(|bytes| u16::from_ne_bytes([bytes[0], bytes[1]]));
        if number == Some(zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16) {
            return Ok(());
        }
    }
}

/// Whether `socket` has something to receive before `deadline`.
fn readable_before(socket: &zmq::Socket, deadline: Instant) -> zmq::Result<bool> {
    let left = deadline.saturating_duration_since(Instant::now());
    Ok(socket.poll(zmq::POLLIN, i64::from(millis(left)))? > 0)
}

/// Ends `zmq_socket_monitor` on a socket (the `zmq` crate cannot pass the NULL endpoint that
/// does this).
fn stop_monitor(socket: &mut zmq::Socket) -> zmq::Result<()> {
    // SAFETY: the socket handle is live for the call (we hold `&mut` to its owner); a NULL
    // endpoint is the documented way to stop monitoring.
    let rc = unsafe { zmq_sys::zmq_socket_monitor(socket.as_mut_ptr(), std::ptr::null(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: reads the calling thread's libzmq error number.
        Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
    }
}

/// An XPUB socket connected to the bus's sub socket, with its own ZeroMQ context.
///
/// [`Publisher::connect`] returns once the bus has subscribed to every topic to be sent
/// (before that, ZeroMQ would drop the frames). `ZMQ_XPUB_NODROP` is set, so at the
/// high-water mark [`Publisher::send`] waits for room instead of dropping; [`Publisher::close`]
/// waits (up to the linger time) until every queued frame has left.
pub struct Publisher {
    context: zmq::Context,
    socket: zmq::Socket,
    endpoint: String,
    send_timeout: Duration,
    linger: Duration,
}

impl Publisher {
    /// Connects to `endpoint` and waits up to `timeout` for subscriptions that cover every
    /// topic in `topics`. A send that finds no room for `timeout` fails; closing waits up to
    /// `linger` for unsent frames.
    pub fn connect(
        endpoint: &str,
        topics: &[&str],
        timeout: Duration,
        linger: Duration,
    ) -> Result<Self, ClientError> {
        let fail = |action| socket_error(action, "sub", endpoint);
        let context = zmq::Context::new();
        let setup = || -> zmq::Result<zmq::Socket> {
            let mut socket = context.socket(zmq::XPUB)?;
            crate::set_nodrop(&mut socket)?;
            socket.set_sndtimeo(millis(timeout))?;
            socket.set_linger(millis(linger))?;
            socket.set_ipv6(is_ipv6(endpoint))?;
            Ok(socket)
        };
        let socket = setup().map_err(fail("open a publisher for"))?;
        socket.connect(endpoint).map_err(fail("connect to"))?;
        let mut prefixes: Vec<Vec<u8>> = Vec::new();
        let covered = |prefixes: &[Vec<u8>]| {
            topics
                .iter()
                .all(|topic| prefixes.iter().any(|p| topic.as_bytes().starts_with(p)))
        };
        let deadline = Instant::now() + timeout;
        while !covered(&prefixes) {
            if !readable_before(&socket, deadline).map_err(fail("wait for a subscription from"))? {
                return Err(ClientError::NotSubscribed {
                    endpoint: endpoint.to_owned(),
                    timeout,
                });
            }
            // `\x01<prefix>` subscribes, `\x00<prefix>` unsubscribes.
            let message = socket
                .recv_bytes(0)
                .map_err(fail("wait for a subscription from"))?;
            match message.split_first() {
                Some((1, prefix)) => prefixes.push(prefix.to_vec()),
                Some((0, prefix)) => prefixes.retain(|p| p != prefix),
                _ => {}
            }
        }
        Ok(Self {
            context,
            socket,
            endpoint: endpoint.to_owned(),
            send_timeout: timeout,
            linger,
        })
    }

    /// The sub socket's endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends the frame `<topic> <json>`.
    pub fn send(&self, topic: &str, json: &[u8]) -> Result<(), ClientError> {
        let mut frame = Vec::with_capacity(topic.len() + 1 + json.len());
        frame.extend_from_slice(topic.as_bytes());
        frame.push(b' ');
        frame.extend_from_slice(json);
        self.socket.send(frame, 0).map_err(|source| match source {
            zmq::Error::EAGAIN => ClientError::SendTimeout {
                endpoint: self.endpoint.clone(),
                timeout: self.send_timeout,
            },
            source => socket_error("send to", "sub", &self.endpoint)(source),
        })
    }

    /// Closes the socket at once, dropping what is still queued.
    pub fn discard(self) {
        let _ = self.socket.set_linger(0);
    }

    /// Closes the socket and waits until every queued frame has been handed to the network,
    /// at most the linger time. `false`: the linger time ran out, frames may be lost.
    pub fn close(self) -> bool {
        let Self {
            context,
            socket,
            linger,
            ..
        } = self;
        let started = Instant::now();
        drop(socket);
        // Terminating the context blocks until the socket's queue is flushed or its linger
        // time is over.
        drop(context);
        started.elapsed() + Duration::from_millis(50) < linger
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_successful_reply() {
        let reply =
            json!({"topic": "abc", "pub_port": 13371, "sub_port": 13372, "status": "success"});
        assert_eq!(
            parse_subscribe_reply(&reply).unwrap(),
            Subscription {
                p2p_topic: "abc".into(),
                pub_port: 13371,
                sub_port: 13372
            }
        );
    }

    #[test]
    fn refuses_errors_and_malformed_replies() {
        for (reply, expected) in [
            (json!({"status": "error"}), "error"),
            (json!({"status": "unknown request"}), "unknown request"),
            (json!({"topic": "abc"}), "no status"),
            (
                json!({"status": "success", "pub_port": 1, "sub_port": 2}),
                "p2p topic",
            ),
            (
                json!({"status": "success", "topic": "", "pub_port": 1, "sub_port": 2}),
                "p2p topic",
            ),
            (
                json!({"status": "success", "topic": "a", "pub_port": "1", "sub_port": 2}),
                "pub_port",
            ),
            (
                json!({"status": "success", "topic": "a", "pub_port": 1, "sub_port": 70000}),
                "sub_port",
            ),
        ] {
            let err = parse_subscribe_reply(&reply).unwrap_err().to_string();
            assert!(err.contains(expected), "{reply}: {err}");
        }
    }

    #[test]
    fn endpoints_bracket_ipv6() {
        assert_eq!(endpoint("127.0.0.1", 1), "tcp://127.0.0.1:1");
        assert_eq!(endpoint("::1", 2), "tcp://[::1]:2");
        assert_eq!(endpoint("[::1]", 2), "tcp://[::1]:2");
        assert_eq!(endpoint("localhost", 3), "tcp://localhost:3");
        assert!(is_ipv6(&endpoint("::1", 2)));
        assert!(!is_ipv6(&endpoint("localhost", 2)));
        assert_eq!(seconds(Duration::from_secs(5)), "5 s");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5 s");
    }

    /// A REP socket on a free port that answers each request with `answer(request, n)` (after
    /// the delay it returns).
    fn fake_manage(
        context: &zmq::Context,
        answer: impl Fn(&Value, usize) -> (Duration, Value) + Send + 'static,
        requests: usize,
    ) -> (String, std::thread::JoinHandle<Vec<Value>>) {
        let socket = context.socket(zmq::REP).unwrap();
        socket.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = socket.get_last_endpoint().unwrap().unwrap();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for n in 0..requests {
                let request: Value =
                    serde_json::from_slice(&socket.recv_bytes(0).unwrap()).unwrap();
                let (delay, reply) = answer(&request, n);
                std::thread::sleep(delay);
                socket.send(reply.to_string().as_bytes(), 0).unwrap();
                seen.push(request);
            }
            seen
        });
        (endpoint, thread)
    }

    #[test]
    fn manage_requests_and_replies() {
        let context = zmq::Context::new();
        let (endpoint, server) = fake_manage(
            &context,
            |request, _| {
                let reply = match request["action"].as_str() {
                    Some("subscribe") => {
                        json!({"topic": "p2p", "pub_port": 11, "sub_port": 12, "status": "success"})
                    }
                    Some("heartbeat") if request["topic"] == "p2p" => json!({"status": "success"}),
                    _ => json!({"status": "error"}),
                };
                (Duration::ZERO, reply)
            },
            6,
        );
        let mut client =
            ManageClient::connect(&context, &endpoint, Duration::from_secs(5)).unwrap();
        let subscription = client.subscribe("stix2/indicator", 3).unwrap();
        assert_eq!(subscription.p2p_topic, "p2p");
        assert_eq!((subscription.pub_port, subscription.sub_port), (11, 12));
        client.subscribe("", 0).unwrap();
        assert!(client.heartbeat("p2p").unwrap());
        assert!(!client.heartbeat("other").unwrap());
        client.unsubscribe("p2p").unwrap_err();
        let err = client.unsubscribe("other").unwrap_err();
        assert!(matches!(err, ClientError::Refused { .. }), "{err}");
        assert!(err.to_string().contains(&endpoint), "{err}");
        let seen = server.join().unwrap();
        assert_eq!(
            seen[0],
            json!({"action": "subscribe", "topic": "stix2/indicator", "snapshot": 3})
        );
        assert_eq!(seen[1]["topic"], json!([""]));
        assert_eq!(seen[3], json!({"action": "heartbeat", "topic": "other"}));
    }

    #[test]
    fn no_reply_names_the_endpoint_and_the_next_request_still_works() {
        let context = zmq::Context::new();
        // The first request is answered too late (and wrongly), the second one at once.
        let (endpoint, server) = fake_manage(
            &context,
            |_, n| match n {
                0 => (Duration::from_millis(600), json!({"status": "error"})),
                _ => (Duration::ZERO, json!({"status": "success"})),
            },
            2,
        );
        let mut client =
            ManageClient::connect(&context, &endpoint, Duration::from_millis(300)).unwrap();
        let err = client.heartbeat("p2p").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no reply from the manage socket {endpoint} within 0.3 s (is a bus listening there?)"
            )
        );
        // The late reply to the first request must be discarded, not taken for the second's.
        client.set_timeout(Duration::from_secs(5)).unwrap();
        assert!(client.heartbeat("p2p").unwrap());
        server.join().unwrap();
    }

    #[test]
    fn publisher_waits_for_the_subscription_and_delivers_everything() {
        // A SUB socket has to be in use to take on new peers, as the bus's is: a thread
        // receives until it has every frame, subscribing when told to.
        let (endpoint_tx, endpoint_rx) = std::sync::mpsc::channel();
        let (subscribe_tx, subscribe_rx) = std::sync::mpsc::channel::<()>();
        let bus = std::thread::spawn(move || {
            let context = zmq::Context::new();
            let socket = context.socket(zmq::SUB).unwrap();
            socket.set_rcvtimeo(20).unwrap();
            socket.bind("tcp://127.0.0.1:*").unwrap();
            endpoint_tx
                .send(socket.get_last_endpoint().unwrap().unwrap())
                .unwrap();
            let mut frames = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while frames.len() < 5000 && Instant::now() < deadline {
                if subscribe_rx.try_recv().is_ok() {
                    socket.set_subscribe(b"stix2/").unwrap();
                }
                match socket.recv_bytes(0) {
                    Ok(frame) => frames.push(frame),
                    Err(zmq::Error::EAGAIN) => {}
                    Err(err) => panic!("{err}"),
                }
            }
            frames
        });
        let endpoint = endpoint_rx.recv().unwrap();

        // Nothing subscribed to `stix2/`: the publisher gives up, naming the endpoint.
        let err = Publisher::connect(
            &endpoint,
            &["stix2/indicator"],
            Duration::from_millis(300),
            Duration::from_secs(1),
        )
        .err()
        .unwrap();
        assert!(matches!(err, ClientError::NotSubscribed { .. }), "{err}");
        assert!(err.to_string().contains(&endpoint), "{err}");

        subscribe_tx.send(()).unwrap();
        let publisher = Publisher::connect(
            &endpoint,
            &["stix2/indicator", "stix2/sighting"],
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .unwrap();
        for i in 0..5000 {
            publisher
                .send("stix2/indicator", format!("{{\"n\":{i}}}").as_bytes())
                .unwrap();
        }
        assert!(publisher.close());
        let frames = bus.join().unwrap();
        assert_eq!(frames.len(), 5000);
        for (i, frame) in frames.iter().enumerate() {
            assert_eq!(
                frame,
                &format!("stix2/indicator {{\"n\":{i}}}").into_bytes()
            );
        }
    }

    #[test]
    fn subscriber_connects_or_names_the_endpoint() {
        let context = zmq::Context::new();
        let bus = context.socket(zmq::PUB).unwrap();
        bus.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = bus.get_last_endpoint().unwrap().unwrap();
        let socket = connect_subscriber(
            &context,
            &endpoint,
            "p2p",
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .unwrap();
        bus.send("p2pindicator {}", 0).unwrap();
        assert_eq!(socket.recv_bytes(0).unwrap(), b"p2pindicator {}");

        // The bus restarts: the SUB socket reconnects (a handshake the monitor no longer
        // reports), and the context's other sockets keep working.
        let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
        drop(bus);
        std::thread::sleep(Duration::from_millis(300));
        let bus = context.socket(zmq::PUB).unwrap();
        bus.bind(&endpoint).unwrap();
        socket.set_rcvtimeo(100).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            bus.send("p2pindicator {\"again\":1}", 0).unwrap();
            if let Ok(frame) = socket.recv_bytes(0) {
                assert_eq!(frame, b"p2pindicator {\"again\":1}");
                break;
            }
            assert!(Instant::now() < deadline, "no reconnection to port {port}");
        }
        let (manage_endpoint, server) = fake_manage(
            &context,
            |_, _| (Duration::ZERO, json!({"status": "success"})),
            1,
        );
        let mut client =
            ManageClient::connect(&context, &manage_endpoint, Duration::from_secs(5)).unwrap();
        assert!(client.heartbeat("p2p").unwrap());
        server.join().unwrap();

        let free = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let nowhere = super::endpoint("127.0.0.1", free);
        let err = connect_subscriber(
            &context,
            &nowhere,
            "p2p",
            Duration::from_millis(300),
            Duration::from_millis(100),
        )
        .err()
        .unwrap();
        assert!(matches!(err, ClientError::NotConnected { .. }), "{err}");
        assert!(err.to_string().contains(&nowhere), "{err}");
    }
}
