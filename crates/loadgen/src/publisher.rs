//! A publisher thread: warm-up probes, then its share of the measured indicators, paced or as
//! fast as the socket takes them.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::control::{Control, Phase};
use crate::indicator::IndicatorFactory;
use crate::now_ns;

/// How often a publisher sends a probe during the warm-up.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// A paced publisher sleeps at least this long, then sends everything due. At high rates the
/// messages of one tick go out back to back (3 at 10,000 msg/s): far fewer thread wake-ups, in
/// the generator and in the bus, than one per message, and each message is stamped when it is
/// actually sent, so latency figures are unaffected.
const PACING_TICK: Duration = Duration::from_micros(250);

/// What one publisher sends.
#[derive(Debug, Clone, Copy)]
pub struct PublisherPlan {
    /// Number of measured messages, numbered 0..count.
    pub count: u64,
    /// Messages per second; 0 sends as fast as possible.
    pub rate: f64,
}

/// What one publisher did. The socket is handed back so that frames still queued in it are not
/// discarded when the thread ends.
pub struct PublisherOutcome {
    /// Measured messages sent.
    pub sent: u64,
    /// Probes sent during the warm-up.
    pub probes: u64,
    /// Time of the first measured send, ns since the epoch.
    pub first_send_ns: Option<u64>,
    /// Time of the last measured send, ns since the epoch.
    pub last_send_ns: Option<u64>,
    /// The PUB socket, still connected.
    pub socket: zmq::Socket,
}

/// The send schedule of a paced publisher: message `i` is due `i / rate` seconds after the
/// start. The publisher sends whatever is due, then sleeps until the next message is, so a late
/// wake-up is caught up in one burst and the average rate stays exact.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    rate: f64,
    total: u64,
}

impl Schedule {
    /// `total` messages at `rate` per second (`rate` > 0).
    pub fn new(rate: f64, total: u64) -> Self {
        Self { rate, total }
    }

    /// How many messages should have been sent `elapsed` after the start.
    pub fn due(&self, elapsed: Duration) -> u64 {
        // The tiny slack keeps `due(due_at(i)) > i` despite floating-point rounding.
        let due = (elapsed.as_secs_f64() * self.rate + 1e-6).floor() as u64 + 1;
        due.min(self.total)
    }

    /// When message `index` is due, counted from the start.
    pub fn due_at(&self, index: u64) -> Duration {
        Duration::from_nanos((index as f64 * 1e9 / self.rate).ceil() as u64)
    }
}

/// Runs one publisher until its share is sent or the run is aborted.
pub fn run(
    socket: zmq::Socket,
    mut factory: IndicatorFactory,
    plan: PublisherPlan,
    control: &Control,
) -> anyhow::Result<PublisherOutcome> {
    let mut outcome = PublisherOutcome {
        sent: 0,
        probes: 0,
        first_send_ns: None,
        last_send_ns: None,
        socket,
    };
    // With a high-water mark the socket waits for room (see `run::sockets::set_no_drop`) in slices of
    // its send timeout, so that an aborted run does not hang here.
    let send = |socket: &zmq::Socket, frame: &[u8]| loop {
        match socket.send(frame, 0) {
            Err(zmq::Error::EINTR) => continue,
            Err(zmq::Error::EAGAIN) if control.phase() != Phase::Abort => continue,
            Err(zmq::Error::EAGAIN) => break Ok(()),
            result => break result.context("cannot publish to the bus's sub socket"),
        }
    };

    // Warm-up: probes until every subscriber has seen one from every publisher.
    loop {
        match control.phase() {
            Phase::Warmup => {}
            Phase::Drain => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            Phase::Measure => break,
            Phase::Abort => return Ok(outcome),
        }
        let probe = factory.probe(outcome.probes);
        probe.stamp(now_ns());
        send(&outcome.socket, probe.frame())?;
        outcome.probes += 1;
        std::thread::sleep(PROBE_INTERVAL);
    }

    if plan.count == 0 {
        return Ok(outcome);
    }
    outcome.first_send_ns = Some(now_ns());
    if plan.rate > 0.0 {
        set_fine_timer_slack();
        let schedule = Schedule::new(plan.rate, plan.count);
        let start = Instant::now();
        while outcome.sent < plan.count {
            let due = schedule.due(start.elapsed());
            while outcome.sent < due {
                let frame = factory.message(outcome.sent);
                frame.stamp(now_ns());
                send(&outcome.socket, frame.frame())?;
                outcome.sent += 1;
            }
            if outcome.sent < plan.count {
                if control.phase() == Phase::Abort {
                    break;
                }
                // No spinning: the generator shares the cores with the bus.
                let wait = schedule
                    .due_at(outcome.sent)
                    .saturating_sub(start.elapsed());
                std::thread::sleep(wait.max(PACING_TICK));
            }
        }
    } else {
        while outcome.sent < plan.count {
            let frame = factory.message(outcome.sent);
            frame.stamp(now_ns());
            send(&outcome.socket, frame.frame())?;
            outcome.sent += 1;
            if outcome.sent % 4096 == 0 && control.phase() == Phase::Abort {
                break;
            }
        }
    }
    outcome.last_send_ns = Some(now_ns());
    Ok(outcome)
}

/// Asks Linux to wake this thread within 1 µs of the requested time instead of the default
/// 50 µs, so short sleeps of a paced publisher keep to the schedule.
fn set_fine_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and only affects the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spreads_messages_evenly_and_stops_at_the_total() {
        let schedule = Schedule::new(10_000.0, 25);
        assert_eq!(schedule.due(Duration::ZERO), 1);
        assert_eq!(schedule.due(Duration::from_micros(99)), 1);
        assert_eq!(schedule.due(Duration::from_micros(100)), 2);
        // A late wake-up catches up in one burst.
        assert_eq!(schedule.due(Duration::from_micros(1050)), 11);
        assert_eq!(schedule.due(Duration::from_secs(5)), 25);
        assert_eq!(schedule.due_at(0), Duration::ZERO);
        assert_eq!(schedule.due_at(3), Duration::from_micros(300));
        // Every message is due no later than the schedule says.
        for index in 0..25 {
            assert!(schedule.due(schedule.due_at(index)) > index);
        }
    }
}
