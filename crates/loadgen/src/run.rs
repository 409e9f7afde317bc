//! One run: subscribe, connect, warm up, measure, unsubscribe, and turn the threads' outcomes
//! into a [`Report`].
//!
//! This module drives the run (the threads and the phases); three parts of it are submodules:
//! [`sockets`] opens the ZeroMQ sockets, [`watch`] samples the bus process while the run goes on
//! and [`outcomes`] turns what the threads measured into the report.

mod outcomes;
mod sockets;
mod watch;

use std::sync::atomic::Ordering;
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use threatbus_zmq_client::client::{ManageClient, Subscription, endpoint};

use crate::control::{Control, Phase};
use crate::indicator::{IndicatorFactory, MAX_SEQ, RunSpec};
use crate::now_ns;
use crate::procfs::ProcessProbe;
use crate::publisher::{self, PublisherOutcome, PublisherPlan};
use crate::report::{Report, RunConfig};
use crate::subscriber::{self, SubscriberOutcome, SubscriberPlan};

use outcomes::build_report;
use sockets::{STALL_HWM, STALL_RCVBUF, SUBSCRIBER_POLL_MS, open_publisher, open_subscriber};
use watch::{BusSamples, BusWatch};

/// After the warm-up, measuring starts once no probe has arrived for this long: probes still
/// queued in a slow bus would otherwise delay the first measured messages.
const DRAIN_QUIET: Duration = Duration::from_millis(50);
/// How often the main thread looks at progress and samples the bus.
const TICK: Duration = Duration::from_millis(20);

/// Everything the command line asks for.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Host of the bus.
    pub host: String,
    /// Manage port.
    pub manage: u16,
    /// Where the publishers send; `None`: the sub port from the subscribe reply.
    pub publish_port: Option<u16>,
    /// Measured subscribers (K).
    pub subscribers: usize,
    /// Publishers (P).
    pub publishers: usize,
    /// Indicators in total (N).
    pub messages: u64,
    /// Overall rate; 0 = unlimited.
    pub rate: f64,
    /// Topic to subscribe to and publish on.
    pub topic: String,
    /// Target JSON size of an indicator.
    pub json_size: usize,
    /// The bus's process id, to sample.
    pub bus_pid: Option<u32>,
    /// Reply, warm-up and straggler timeout.
    pub timeout: Duration,
    /// High-water mark of the generator's sockets; 0 = unlimited.
    pub hwm: i32,
    /// Subscribers that never read.
    pub stall: usize,
    /// ZeroMQ I/O threads.
    pub io_threads: i32,
}

/// Runs the whole measurement. Subscriptions made are removed again, also on errors.
pub fn execute(settings: &Settings) -> anyhow::Result<Report> {
    let bus = settings.bus_pid.map(ProcessProbe::new).transpose()?;
    let bus_start = bus.as_ref().map(ProcessProbe::sample).transpose()?;
    let own = ProcessProbe::own();
    let own_start = own.sample()?;

    let context = zmq::Context::new();
    context.set_io_threads(settings.io_threads)?;
    let manage_endpoint = endpoint(&settings.host, settings.manage);
    let mut manage = ManageClient::connect(&context, &manage_endpoint, settings.timeout)?;

    let mut subscriptions = Vec::with_capacity(settings.subscribers + settings.stall);
    let result = (|| {
        for _ in 0..settings.subscribers + settings.stall {
            subscriptions.push(manage.subscribe(&settings.topic, 0)?);
        }
        measure(settings, &context, &subscriptions, bus.as_ref())
    })();
    for (done, subscription) in subscriptions.iter().enumerate() {
        if let Err(err) = manage.unsubscribe(&subscription.p2p_topic) {
            // A REQ socket without its reply cannot send again: give up on the rest.
            eprintln!(
                "threatbus-loadgen: warning: {} subscription(s) left on the bus: {err:#}",
                subscriptions.len() - done
            );
            break;
        }
    }
    let (mut report, bus_samples) = result?;
    report.config.manage = manage_endpoint;
    report.generator_cpu_s =
        own.seconds(own.sample()?.cpu_ticks.saturating_sub(own_start.cpu_ticks));
    if let (Some(bus), Some(start), Some(samples)) = (&bus, bus_start, bus_samples) {
        report.bus = Some(samples.figures(bus, settings.bus_pid.unwrap_or(0), start));
    }
    Ok(report)
}

/// Connects the sockets, runs the threads and builds the report (without the parts
/// [`execute`] fills in).
fn measure(
    settings: &Settings,
    context: &zmq::Context,
    subscriptions: &[Subscription],
    bus: Option<&ProcessProbe>,
) -> anyhow::Result<(Report, Option<BusSamples>)> {
    let (measured, stalled) = subscriptions.split_at(settings.subscribers);
    let first = measured
        .first()
        .ok_or_else(|| anyhow!("no subscriber to measure"))?;
    let run_id = u32::try_from(now_ns() % u64::from(u32::MAX)).unwrap_or(1) ^ std::process::id();
    let spec = RunSpec {
        run_id,
        topic: settings.topic.clone(),
        json_size: settings.json_size,
        timestamp: stix_timestamp_now()?,
    };
    let counts = split(settings.messages, settings.publishers);
    if counts.iter().any(|&count| count > MAX_SEQ + 1) {
        bail!("too many messages per publisher");
    }
    let factories = (0..settings.publishers)
        .map(|index| IndicatorFactory::new(&spec, u16::try_from(index).unwrap_or(u16::MAX)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let json_sizes: Vec<usize> = factories[0].json_sizes().collect();
    let json_bytes = (
        json_sizes.iter().copied().min().unwrap_or(0),
        json_sizes.iter().copied().max().unwrap_or(0),
    );

    let subscriber_sockets = measured
        .iter()
        .map(|subscription| {
            open_subscriber(
                context,
                &settings.host,
                subscription,
                settings.hwm,
                None,
                SUBSCRIBER_POLL_MS,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Kept open (and unread) until the run is over.
    let _stalled_sockets = stalled
        .iter()
        .map(|subscription| {
            open_subscriber(
                context,
                &settings.host,
                subscription,
                STALL_HWM,
                Some(STALL_RCVBUF),
                -1,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let publish_port = settings.publish_port.unwrap_or(first.sub_port);
    let publish_endpoint = endpoint(&settings.host, publish_port);
    let publisher_sockets = (0..settings.publishers)
        .map(|_| open_publisher(context, &publish_endpoint, settings.hwm))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let control = Control::default();
    let subscriber_plans: Vec<SubscriberPlan> = measured
        .iter()
        .map(|subscription| SubscriberPlan {
            p2p_len: subscription.p2p_topic.len(),
            run_id: u64::from(run_id),
            counts: counts.clone(),
        })
        .collect();
    let rate_each = settings.rate / settings.publishers as f64;

    let mut watch = BusWatch::new(bus);
    let (timeline, subscriber_outcomes, publisher_outcomes) = std::thread::scope(|scope| {
        let control = &control;
        let subscribers: Vec<ScopedJoinHandle<anyhow::Result<SubscriberOutcome>>> =
            subscriber_sockets
                .into_iter()
                .zip(&subscriber_plans)
                .map(|(socket, plan)| {
                    scope.spawn(move || {
                        let outcome = subscriber::run(&socket, plan, control);
                        if outcome.is_err() {
                            control.set_phase(Phase::Abort);
                        }
                        outcome
                    })
                })
                .collect();
        let publishers: Vec<ScopedJoinHandle<anyhow::Result<PublisherOutcome>>> = publisher_sockets
            .into_iter()
            .zip(factories)
            .zip(&counts)
            .map(|((socket, factory), &count)| {
                let plan = PublisherPlan {
                    count,
                    rate: rate_each,
                };
                scope.spawn(move || {
                    let outcome = publisher::run(socket, factory, plan, control);
                    if outcome.is_err() {
                        control.set_phase(Phase::Abort);
                    }
                    outcome
                })
            })
            .collect();
        let timeline = drive(settings, control, &publishers, &mut watch);
        if timeline.is_err() {
            control.set_phase(Phase::Abort);
        }
        control.stop.store(true, Ordering::Relaxed);
        let subscribers: anyhow::Result<Vec<_>> = subscribers
            .into_iter()
            .map(|handle| join("subscriber", handle))
            .collect();
        let publishers: anyhow::Result<Vec<_>> = publishers
            .into_iter()
            .map(|handle| join("publisher", handle))
            .collect();
        (timeline, subscribers, publishers)
    });
    // Thread errors explain an abort better than the main thread's view of it.
    let publisher_outcomes = publisher_outcomes?;
    let subscriber_outcomes = subscriber_outcomes?;
    let timeline = timeline?;

    let config = RunConfig {
        manage: String::new(),
        pub_port: first.pub_port,
        sub_port: publish_port,
        subscribers: settings.subscribers,
        publishers: settings.publishers,
        messages: settings.messages,
        rate: settings.rate,
        topic: settings.topic.clone(),
        json_bytes,
        hwm: settings.hwm,
        stalled: settings.stall,
    };
    let report = build_report(config, &timeline, &publisher_outcomes, subscriber_outcomes);
    Ok((report, watch.samples))
}

/// Waits for a thread; a panic becomes an error.
fn join<T>(name: &str, handle: ScopedJoinHandle<'_, anyhow::Result<T>>) -> anyhow::Result<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err(anyhow!("a {name} thread panicked")))
}

/// When things happened, as seen by the main thread.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    warmup: Duration,
    drain: Duration,
    complete: bool,
}

/// The main thread's part: waits for the warm-up, starts the measurement and waits until every
/// subscriber has everything or nothing has arrived for `settings.timeout`.
fn drive(
    settings: &Settings,
    control: &Control,
    publishers: &[ScopedJoinHandle<'_, anyhow::Result<PublisherOutcome>>],
    watch: &mut BusWatch<'_>,
) -> anyhow::Result<Timeline> {
    let pairs = settings.subscribers * settings.publishers;
    let warmup_start = Instant::now();
    while control.probe_pairs.load(Ordering::Acquire) < pairs {
        if control.phase() == Phase::Abort {
            bail!("aborted during the warm-up");
        }
        if warmup_start.elapsed() > settings.timeout {
            bail!(
                "warm-up: after {:.1} s only {} of {pairs} subscriber/publisher pairs have received a \
                 probe indicator; does the bus at {} forward {:?} to its subscribers?",
                settings.timeout.as_secs_f64(),
                control.probe_pairs.load(Ordering::Acquire),
                settings.host,
                settings.topic,
            );
        }
        watch.sample(false, false);
        watch.check_alive(settings)?;
        std::thread::sleep(TICK / 4);
    }
    let warmup = warmup_start.elapsed();
    control.set_phase(Phase::Drain);
    let drain_start = Instant::now();
    let mut probes = control.probes_received.load(Ordering::Relaxed);
    let mut quiet_since = drain_start;
    while quiet_since.elapsed() < DRAIN_QUIET && drain_start.elapsed() < settings.timeout {
        std::thread::sleep(TICK / 4);
        let now = control.probes_received.load(Ordering::Relaxed);
        if now != probes {
            (probes, quiet_since) = (now, Instant::now());
        }
    }
    let drain = drain_start.elapsed();
    watch.sample(false, false);
    control.set_phase(Phase::Measure);

    let mut seen = 0;
    let mut last_progress = Instant::now();
    loop {
        std::thread::sleep(TICK);
        if control.phase() == Phase::Abort {
            bail!("aborted while measuring");
        }
        let deliveries = control.deliveries.load(Ordering::Relaxed);
        let progressed = deliveries != seen;
        if progressed {
            seen = deliveries;
            last_progress = Instant::now();
        }
        watch.sample(progressed, true);
        watch.check_alive(settings)?;
        if control.complete.load(Ordering::Acquire) == settings.subscribers {
            return Ok(Timeline {
                warmup,
                drain,
                complete: true,
            });
        }
        let sending = publishers.iter().any(|handle| !handle.is_finished());
        if !sending && last_progress.elapsed() > settings.timeout {
            return Ok(Timeline {
                warmup,
                drain,
                complete: false,
            });
        }
    }
}

/// `count` messages split over `parts` publishers as evenly as possible.
fn split(count: u64, parts: usize) -> Vec<u64> {
    let parts_u64 = parts as u64;
    (0..parts_u64)
        .map(|i| count / parts_u64 + u64::from(i < count % parts_u64))
        .collect()
}

/// Now as a STIX timestamp with milliseconds, e.g. `2024-05-01T12:00:00.123Z`.
fn stix_timestamp_now() -> anyhow::Result<String> {
    let now = jiff::Timestamp::now();
    let millis = jiff::Timestamp::from_millisecond(now.as_millisecond())?;
    Ok(format!("{millis:.3}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_messages_evenly() {
        assert_eq!(split(10, 3), [4, 3, 3]);
        assert_eq!(split(2, 4), [1, 1, 0, 0]);
        assert_eq!(split(100_000, 1), [100_000]);
    }

    #[test]
    fn timestamps_have_milliseconds() {
        let ts = stix_timestamp_now().unwrap();
        assert_eq!(ts.len(), "2024-05-01T12:00:00.123Z".len(), "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
    }
}
