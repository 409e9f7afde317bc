//! `threatbus tail`: subscribes through the manage socket, prints every Indicator and Sighting
//! that arrives on the pub socket (one JSON object per line on standard output), sends
//! heartbeats, and unsubscribes when done or on SIGINT/SIGTERM.
//!
//! The ZeroMQ loop runs on a blocking thread and receives with a short timeout, so that it sees
//! the stop signal set by the signal watcher on the (current-thread) tokio runtime.

use std::borrow::Cow;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::de::IgnoredAny;
use threatbus_core::topic;
use threatbus_zmq_client::client::{
    ClientError, ManageClient, Subscription, connect_subscriber, endpoint,
};
use threatbus_zmq_client::zmq;
use tokio_util::sync::CancellationToken;

use super::{BusAddress, TailArgs};

/// Heartbeat interval unless the config asks for less.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a receive waits before the loop looks at the stop signal, heartbeat and idle time.
const POLL: Duration = Duration::from_millis(100);
/// Reply timeout of the final unsubscribe when the bus has stopped answering heartbeats.
const QUICK_TIMEOUT: Duration = Duration::from_secs(1);

pub fn run(address: &BusAddress, args: &TailArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("threatbus tail: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let heartbeat = match args.heartbeat {
        Some(Duration::ZERO) => None,
        Some(interval) => Some(interval),
        None => Some(
            address
                .subscription_timeout
                .map_or(DEFAULT_HEARTBEAT, |timeout| {
                    (timeout / 2).min(DEFAULT_HEARTBEAT)
                }),
        ),
    };
    let settings = Settings {
        address: address.clone(),
        args: args.clone(),
        heartbeat,
    };
    runtime.block_on(async move {
        let stop = CancellationToken::new();
        // The first SIGINT/SIGTERM stops the loop, a second one exits at once.
        if let Err(err) = crate::watch_signals(stop.clone(), crate::OnHangup::Stop) {
            eprintln!("threatbus tail: cannot watch signals: {err:#}");
            return ExitCode::FAILURE;
        }
        let worker = tokio::task::spawn_blocking(move || tail(&settings, &stop));
        worker.await.unwrap_or_else(|_| {
            eprintln!("threatbus tail: the receive loop crashed");
            ExitCode::FAILURE
        })
    })
}

struct Settings {
    address: BusAddress,
    args: TailArgs,
    heartbeat: Option<Duration>,
}

/// Why the receive loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Stopped,
    Count,
    Idle,
    /// Standard output was closed (`| head`).
    OutputClosed,
}

fn tail(settings: &Settings, stop: &CancellationToken) -> ExitCode {
    let Settings { address, args, .. } = settings;
    let context = zmq::Context::new();
    let manage_endpoint = endpoint(&address.host, address.manage);
    let subscribed = ManageClient::connect(&context, &manage_endpoint, args.timeout)
        .and_then(|mut manage| Ok((manage.subscribe(&args.topic, args.snapshot)?, manage)));
    let (subscription, mut manage) = match subscribed {
        Ok(subscribed) => subscribed,
        Err(err) => {
            eprintln!("threatbus tail: {err}");
            return ExitCode::FAILURE;
        }
    };
    let pub_endpoint = endpoint(&address.host, subscription.pub_port);
    let socket = match connect_subscriber(
        &context,
        &pub_endpoint,
        &subscription.p2p_topic,
        args.timeout,
        POLL,
    ) {
        Ok(socket) => socket,
        Err(err) => {
            eprintln!("threatbus tail: {err}");
            let _ = manage.unsubscribe(&subscription.p2p_topic);
            return ExitCode::FAILURE;
        }
    };
    let what = match args.topic.as_str() {
        "" => "everything".to_owned(),
        topic => topic.to_owned(),
    };
    let snapshot = match args.snapshot {
        0 => String::new(),
        days => format!(", asked for a snapshot of {days} day(s)"),
    };
    eprintln!(
        "threatbus tail: subscribed to {what} as {} on {pub_endpoint}{snapshot}",
        subscription.p2p_topic
    );
    if ![topic::INDICATOR, topic::SIGHTING]
        .iter()
        .any(|routing| topic::matches(&args.topic, routing))
    {
        eprintln!(
            "threatbus tail: warning: {what:?} matches neither {} nor {}: nothing will be printed",
            topic::INDICATOR,
            topic::SIGHTING
        );
    }
    let mut session = Session {
        socket,
        subscription,
        pub_endpoint,
        printed: 0,
        bus_silent: false,
    };
    let end = session.receive(settings, &mut manage, stop);
    let p2p_topic = &session.subscription.p2p_topic;
    if let (Ok(End::Idle), Some(idle)) = (&end, args.idle) {
        eprintln!(
            "threatbus tail: nothing for {} s: stopping",
            idle.as_secs_f64()
        );
    }
    if session.bus_silent {
        let _ = manage.set_timeout(QUICK_TIMEOUT.min(args.timeout));
    }
    match manage.unsubscribe(p2p_topic) {
        Ok(()) => eprintln!(
            "threatbus tail: unsubscribed {p2p_topic} after {} object(s)",
            session.printed
        ),
        Err(ClientError::Refused { .. }) => eprintln!(
            "threatbus tail: the bus had forgotten subscription {p2p_topic} already ({} object(s))",
            session.printed
        ),
        Err(err) => eprintln!("threatbus tail: warning: could not unsubscribe: {err}"),
    }
    match end {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("threatbus tail: {err:#}");
            ExitCode::FAILURE
        }
    }
}

struct Session {
    socket: zmq::Socket,
    subscription: Subscription,
    pub_endpoint: String,
    printed: u64,
    /// The last heartbeat got no reply.
    bus_silent: bool,
}

impl Session {
    fn receive(
        &mut self,
        settings: &Settings,
        manage: &mut ManageClient,
        stop: &CancellationToken,
    ) -> anyhow::Result<End> {
        let args = &settings.args;
        let mut out = std::io::stdout().lock();
        let mut last_object = Instant::now();
        let mut next_heartbeat = settings.heartbeat.map(|interval| Instant::now() + interval);
        let mut frame = zmq::Message::new();
        loop {
            if stop.is_cancelled() {
                return Ok(End::Stopped);
            }
            if args.idle.is_some_and(|idle| last_object.elapsed() >= idle) {
                return Ok(End::Idle);
            }
            if let (Some(due), Some(interval)) = (next_heartbeat, settings.heartbeat)
                && Instant::now() >= due
            {
                self.heartbeat(settings, manage);
                next_heartbeat = Some(Instant::now() + interval);
            }
            match self.socket.recv(&mut frame, 0) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => continue,
                Err(err) => anyhow::bail!("receiving from {} failed: {err}", self.pub_endpoint),
            }
            if frame.get_more() {
                while frame.get_more() && self.socket.recv(&mut frame, 0).is_ok() {}
                eprintln!("threatbus tail: warning: skipped a multi-part frame");
                continue;
            }
            let Some(line) = self.object(&frame) else {
                continue;
            };
            let written = out
                .write_all(&line)
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush());
            match written {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Ok(End::OutputClosed);
                }
                Err(err) => anyhow::bail!("cannot write to standard output: {err}"),
            }
            self.printed += 1;
            last_object = Instant::now();
            if args.count.is_some_and(|count| self.printed >= count) {
                return Ok(End::Count);
            }
        }
    }

    /// The JSON of an Indicator or Sighting frame, as one line; `None` for anything else
    /// (snapshot requests of other subscribers, foreign frames).
    fn object<'f>(&self, frame: &'f [u8]) -> Option<Cow<'f, [u8]>> {
        let rest = frame.strip_prefix(self.subscription.p2p_topic.as_bytes())?;
        let space = rest.iter().position(|&b| b == b' ')?;
        let (suffix, payload) = (&rest[..space], &rest[space + 1..]);
        if suffix != b"indicator" && suffix != b"sighting" {
            return None;
        }
        if payload.iter().any(|&b| b == b'\n' || b == b'\r') {
            // Valid JSON has line breaks only between tokens: re-encode it on one line.
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) {
                return Some(Cow::Owned(value.to_string().into_bytes()));
            }
        } else if serde_json::from_slice::<IgnoredAny>(payload).is_ok() {
            return Some(Cow::Borrowed(payload));
        }
        eprintln!("threatbus tail: warning: skipped a frame whose payload is not JSON");
        None
    }

    fn heartbeat(&mut self, settings: &Settings, manage: &mut ManageClient) {
        match manage.heartbeat(&self.subscription.p2p_topic) {
            Ok(true) => {
                if self.bus_silent {
                    eprintln!("threatbus tail: the manage socket answers again");
                    self.bus_silent = false;
                }
            }
            Ok(false) => {
                self.bus_silent = false;
                self.resubscribe(settings, manage);
            }
            Err(err) => {
                if !self.bus_silent {
                    eprintln!("threatbus tail: warning: heartbeat failed: {err}");
                    self.bus_silent = true;
                }
            }
        }
    }

    /// The bus no longer knows the subscription (a restart, or an expiry): subscribe again,
    /// without a snapshot.
    fn resubscribe(&mut self, settings: &Settings, manage: &mut ManageClient) {
        let old = self.subscription.p2p_topic.clone();
        let renewed = manage
            .subscribe(&settings.args.topic, 0)
            .map_err(anyhow::Error::from)
            .and_then(|new| match self.switch_to(&settings.address.host, &new) {
                Ok(()) => Ok(new),
                Err(err) => {
                    let _ = manage.unsubscribe(&new.p2p_topic);
                    Err(err.into())
                }
            });
        match renewed {
            Ok(new) => {
                eprintln!(
                    "threatbus tail: the bus no longer knew subscription {old} (restarted?); \
                     subscribed again as {} (without a snapshot)",
                    new.p2p_topic
                );
                self.subscription = new;
            }
            Err(err) => eprintln!(
                "threatbus tail: warning: the bus no longer knows subscription {old} and \
                 subscribing again failed: {err:#}"
            ),
        }
    }

    /// Points the SUB socket at a new subscription.
    fn switch_to(&mut self, host: &str, new: &Subscription) -> zmq::Result<()> {
        let new_endpoint = endpoint(host, new.pub_port);
        if new_endpoint != self.pub_endpoint {
            self.socket.connect(&new_endpoint)?;
            let _ = self.socket.disconnect(&self.pub_endpoint);
            self.pub_endpoint = new_endpoint;
        }
        self.socket.set_subscribe(new.p2p_topic.as_bytes())?;
        let _ = self
            .socket
            .set_unsubscribe(self.subscription.p2p_topic.as_bytes());
        Ok(())
    }
}
