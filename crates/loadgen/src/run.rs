//! One run: subscribe, connect, warm up, measure, unsubscribe, and turn the threads' outcomes
//! into a [`Report`].

use std::sync::atomic::Ordering;
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use threatbus_zmq_client::client::{ManageClient, Subscription, endpoint};

use crate::control::{Control, Phase};
use crate::indicator::{IndicatorFactory, MAX_SEQ, RunSpec};
use crate::now_ns;
use crate::procfs::{ProcessProbe, ProcessSample};
use crate::publisher::{self, PublisherOutcome, PublisherPlan};
use crate::report::{BusFigures, Report, RunConfig, SubscriberRow};
use crate::stats::LatencySummary;
use crate::subscriber::{self, SubscriberOutcome, SubscriberPlan};

/// After the warm-up, measuring starts once no probe has arrived for this long: probes still
/// queued in a slow bus would otherwise delay the first measured messages.
const DRAIN_QUIET: Duration = Duration::from_millis(50);
/// How often the main thread looks at progress and samples the bus.
const TICK: Duration = Duration::from_millis(20);
/// Receive timeout of subscriber sockets: how quickly they notice the stop flag when idle.
const SUBSCRIBER_POLL_MS: i32 = 100;
/// Send timeout of publisher sockets: how quickly a publisher waiting for room notices an abort.
const PUBLISHER_WAIT_MS: i32 = 100;
/// Receive buffer of a stalled subscriber, in messages and in kernel socket bytes.
const STALL_HWM: i32 = 1;
const STALL_RCVBUF: i32 = 4096;

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

/// The bus samples of a run.
#[derive(Debug, Clone, Copy)]
struct BusSamples {
    peak_rss_kib: u64,
    last: ProcessSample,
    /// At the start of measuring.
    measure_start: (Instant, ProcessSample),
    /// At the last tick that saw progress.
    last_progress: (Instant, ProcessSample),
}

impl BusSamples {
    fn figures(&self, probe: &ProcessProbe, pid: u32, start: ProcessSample) -> BusFigures {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let cpu_s = probe.seconds(
            self.last_progress
                .1
                .cpu_ticks
                .saturating_sub(self.measure_start.1.cpu_ticks),
        );
        let window_s = (self.last_progress.0 - self.measure_start.0).as_secs_f64();
        BusFigures {
            pid,
            rss_start_mib: mib(start.rss_kib),
            rss_peak_mib: mib(self.peak_rss_kib.max(start.rss_kib)),
            hwm_mib: mib(self.last.hwm_kib),
            cpu_s,
            window_s,
            cpu_percent: if window_s > 0.0 {
                cpu_s / window_s * 100.0
            } else {
                0.0
            },
        }
    }
}

/// Samples the bus while the main thread waits.
struct BusWatch<'a> {
    probe: Option<&'a ProcessProbe>,
    samples: Option<BusSamples>,
    /// Set when the bus process could no longer be read: it has exited.
    gone: bool,
}

impl BusWatch<'_> {
    /// Samples now, unless there is no bus to watch.
    fn sample(&mut self, progressed: bool, measure_started: bool) {
        let Some(probe) = self.probe else { return };
        let Ok(sample) = probe.sample() else {
            self.gone = true;
            return;
        };
        let now = Instant::now();
        let samples = self.samples.get_or_insert(BusSamples {
            peak_rss_kib: sample.rss_kib,
            last: sample,
            measure_start: (now, sample),
            last_progress: (now, sample),
        });
        samples.peak_rss_kib = samples.peak_rss_kib.max(sample.rss_kib);
        samples.last = sample;
        if !measure_started {
            samples.measure_start = (now, sample);
            samples.last_progress = (now, sample);
        } else if progressed {
            samples.last_progress = (now, sample);
        }
    }
}

impl BusWatch<'_> {
    /// Fails once the watched bus has exited.
    fn check_alive(&self, settings: &Settings) -> anyhow::Result<()> {
        if self.gone {
            bail!(
                "the bus process {} exited during the run",
                settings.bus_pid.unwrap_or(0)
            );
        }
        Ok(())
    }
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
        .map(|_| {
            let mut socket = context.socket(zmq::PUB)?;
            socket.set_sndhwm(settings.hwm)?;
            if settings.hwm > 0 {
                // A full send buffer then blocks the publisher instead of dropping frames: the
                // generator itself never loses messages.
                set_no_drop(&mut socket)?;
            }
            socket.set_sndtimeo(PUBLISHER_WAIT_MS)?;
            socket.set_linger(0)?;
            socket.set_ipv6(true)?;
            socket
                .connect(&publish_endpoint)
                .with_context(|| format!("cannot connect to the sub socket {publish_endpoint}"))?;
            Ok(socket)
        })
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

    let mut watch = BusWatch {
        probe: bus,
        samples: None,
        gone: false,
    };
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

/// Sets `ZMQ_XPUB_NODROP` (it applies to PUB sockets too): at the high-water mark `send` waits
/// for room instead of silently dropping the frame.
fn set_no_drop(socket: &mut zmq::Socket) -> anyhow::Result<()> {
    threatbus_zmq_client::set_nodrop(socket)
        .map_err(|err| anyhow::anyhow!("cannot set ZMQ_XPUB_NODROP on the publisher socket: {err}"))
}

/// Waits for a thread; a panic becomes an error.
fn join<T>(name: &str, handle: ScopedJoinHandle<'_, anyhow::Result<T>>) -> anyhow::Result<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err(anyhow!("a {name} thread panicked")))
}

/// Opens a SUB socket for `subscription` and subscribes it to its p2p topic.
fn open_subscriber(
    context: &zmq::Context,
    host: &str,
    subscription: &Subscription,
    hwm: i32,
    kernel_buffer: Option<i32>,
    timeout_ms: i32,
) -> anyhow::Result<zmq::Socket> {
    let socket = context.socket(zmq::SUB)?;
    socket.set_rcvhwm(hwm)?;
    if let Some(bytes) = kernel_buffer {
        socket.set_rcvbuf(bytes)?;
    }
    socket.set_rcvtimeo(timeout_ms)?;
    socket.set_linger(0)?;
    socket.set_ipv6(true)?;
    let address = endpoint(host, subscription.pub_port);
    socket
        .connect(&address)
        .with_context(|| format!("cannot connect to the pub socket {address}"))?;
    socket.set_subscribe(subscription.p2p_topic.as_bytes())?;
    Ok(socket)
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

/// Turns the outcomes into the report.
fn build_report(
    config: RunConfig,
    timeline: &Timeline,
    publishers: &[PublisherOutcome],
    subscribers: Vec<SubscriberOutcome>,
) -> Report {
    let first_send = publishers.iter().filter_map(|p| p.first_send_ns).min();
    let last_send = publishers.iter().filter_map(|p| p.last_send_ns).max();
    let seconds = |from: Option<u64>, to: Option<u64>| match (from, to) {
        (Some(from), Some(to)) => to.saturating_sub(from) as f64 / 1e9,
        _ => 0.0,
    };
    let per_second = |count: u64, seconds: f64| {
        if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        }
    };
    let sent = publishers.iter().map(|p| p.sent).sum();
    let send_s = seconds(first_send, last_send);
    let last_receive = subscribers.iter().filter_map(|s| s.last_receive_ns).max();
    let duration_s = seconds(first_send, last_receive);

    let mut rows = Vec::with_capacity(subscribers.len());
    let mut all_latencies: Vec<u32> = Vec::new();
    for (index, mut outcome) in subscribers.into_iter().enumerate() {
        let tracker = &outcome.tracker;
        rows.push(SubscriberRow {
            index,
            received: tracker.unique,
            throughput: per_second(tracker.unique, seconds(first_send, outcome.last_receive_ns)),
            lost: tracker.lost(),
            duplicates: tracker.duplicates,
            reordered: tracker.reordered,
            ignored: outcome.foreign + outcome.other + outcome.malformed + tracker.unexpected,
            latency: LatencySummary::from_samples(&mut outcome.latencies_us),
        });
        if all_latencies.is_empty() {
            all_latencies = outcome.latencies_us;
        } else {
            all_latencies.extend_from_slice(&outcome.latencies_us);
        }
    }
    let deliveries = rows.iter().map(|row| row.received).sum();
    Report {
        config,
        warmup_s: timeline.warmup.as_secs_f64(),
        drain_s: timeline.drain.as_secs_f64(),
        probes_sent: publishers.iter().map(|p| p.probes).sum(),
        sent,
        send_s,
        send_rate: per_second(sent, send_s),
        duration_s,
        deliveries,
        deliveries_per_s: per_second(deliveries, duration_s),
        lost: rows.iter().map(|row| row.lost).sum(),
        duplicates: rows.iter().map(|row| row.duplicates).sum(),
        reordered: rows.iter().map(|row| row.reordered).sum(),
        latency: LatencySummary::from_samples(&mut all_latencies),
        subscribers: rows,
        bus: None,
        generator_cpu_s: 0.0,
        complete: timeline.complete,
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
    use crate::stats::DeliveryTracker;

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

    #[test]
    fn report_measures_from_the_first_send_to_each_last_receive() {
        let config = RunConfig {
            manage: String::new(),
            pub_port: 1,
            sub_port: 2,
            subscribers: 2,
            publishers: 2,
            messages: 4,
            rate: 0.0,
            topic: "stix2/indicator".into(),
            json_bytes: (450, 450),
            hwm: 0,
            stalled: 0,
        };
        let publisher = |first: u64, last: u64| PublisherOutcome {
            sent: 2,
            probes: 3,
            first_send_ns: Some(first),
            last_send_ns: Some(last),
            socket: zmq::Context::new().socket(zmq::PUB).unwrap(),
        };
        let publishers = [
            publisher(1_000_000_000, 1_250_000_000),
            publisher(1_100_000_000, 1_500_000_000),
        ];
        let subscriber = |seqs: &[(u64, u64)], last: u64, latencies: Vec<u32>| {
            let mut tracker = DeliveryTracker::new(&[2, 2]);
            for &(publisher, seq) in seqs {
                tracker.record(publisher, seq);
            }
            SubscriberOutcome {
                tracker,
                latencies_us: latencies,
                last_receive_ns: Some(last),
                probes: 1,
                foreign: 0,
                other: 1,
                malformed: 0,
            }
        };
        let subscribers = vec![
            subscriber(
                &[(0, 0), (0, 1), (1, 0), (1, 1)],
                3_000_000_000,
                vec![10, 20, 30, 4000],
            ),
            subscriber(&[(0, 1), (0, 0), (0, 0)], 2_000_000_000, vec![5, 6]),
        ];
        let timeline = Timeline {
            warmup: Duration::from_millis(250),
            drain: Duration::from_millis(50),
            complete: false,
        };
        let report = build_report(config, &timeline, &publishers, subscribers);
        assert_eq!(report.sent, 4);
        assert_eq!(report.probes_sent, 6);
        assert!((report.send_s - 0.5).abs() < 1e-9);
        assert!((report.duration_s - 2.0).abs() < 1e-9);
        assert_eq!(report.deliveries, 6);
        assert!((report.deliveries_per_s - 3.0).abs() < 1e-9);
        assert!((report.subscribers[0].throughput - 2.0).abs() < 1e-9);
        assert!((report.subscribers[1].throughput - 2.0).abs() < 1e-9);
        assert_eq!(report.subscribers[1].lost, 2);
        assert_eq!(report.subscribers[1].duplicates, 1);
        assert_eq!(report.subscribers[1].reordered, 1);
        assert_eq!(report.subscribers[1].ignored, 1);
        assert_eq!(
            (report.lost, report.duplicates, report.reordered),
            (2, 1, 1)
        );
        let latency = report.latency.unwrap();
        assert_eq!(
            (latency.samples, latency.max_us, latency.p50_us),
            (6, 4000, 10)
        );
        assert_eq!(report.subscribers[0].latency.unwrap().p99_us, 4000);
        assert!(!report.complete);
    }
}
