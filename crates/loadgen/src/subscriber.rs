//! A subscriber thread: reads its SUB socket, counts probes during the warm-up and measures
//! every indicator of the run after it.

use std::sync::atomic::Ordering;

use anyhow::bail;

use crate::control::Control;
use crate::frame::{Frame, FrameReader};
use crate::now_ns;
use crate::stats::{Delivery, DeliveryTracker, latency_us};

/// Latency samples reserved up front (32 MiB); larger runs grow the vector as they go.
const PREALLOCATED_SAMPLES: u64 = 8 << 20;
/// Every this many frames, progress goes to the shared counter and the stop flag is read.
const CHECK_EVERY: u32 = 256;

/// What one subscriber expects.
#[derive(Debug, Clone)]
pub struct SubscriberPlan {
    /// Length of the subscription's p2p topic.
    pub p2p_len: usize,
    /// This run's id; indicators of other runs or producers are counted as foreign.
    pub run_id: u64,
    /// Measured messages of each publisher.
    pub counts: Vec<u64>,
}

/// What one subscriber received.
#[derive(Debug)]
pub struct SubscriberOutcome {
    /// Duplicates, reordering and loss.
    pub tracker: DeliveryTracker,
    /// Latency of each distinct measured message, µs.
    pub latencies_us: Vec<u32>,
    /// Time of the last distinct measured message, ns since the epoch.
    pub last_receive_ns: Option<u64>,
    /// Probes received (warm-up and stragglers).
    pub probes: u64,
    /// Indicators not sent by this run.
    pub foreign: u64,
    /// Frames other than indicators (snapshot requests, sightings).
    pub other: u64,
    /// Frames that could not be read.
    pub malformed: u64,
}

/// Receives until every measured message has arrived or the main thread says stop. The socket
/// must have a receive timeout so that the stop flag is seen while nothing arrives.
pub fn run(
    socket: &zmq::Socket,
    plan: &SubscriberPlan,
    control: &Control,
) -> anyhow::Result<SubscriberOutcome> {
    let reader = FrameReader::new(plan.p2p_len);
    let expected: u64 = plan.counts.iter().sum();
    let mut outcome = SubscriberOutcome {
        tracker: DeliveryTracker::new(&plan.counts),
        latencies_us: Vec::with_capacity(
            usize::try_from(expected.min(PREALLOCATED_SAMPLES)).unwrap_or(0),
        ),
        last_receive_ns: None,
        probes: 0,
        foreign: 0,
        other: 0,
        malformed: 0,
    };
    let mut probe_seen = vec![false; plan.counts.len()];
    // Distinct measured messages not yet added to `control.deliveries`, and frames since the
    // stop flag was last looked at.
    let (mut unreported, mut unchecked) = (0, 0);
    let mut message = zmq::Message::new();
    loop {
        match socket.recv(&mut message, 0) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                control.deliveries.fetch_add(unreported, Ordering::Relaxed);
                unreported = 0;
                if control.stopping() {
                    break;
                }
                continue;
            }
            Err(zmq::Error::ETERM) => break,
            Err(err) => bail!("subscriber socket failed: {err}"),
        }
        let received_ns = now_ns();
        unchecked += 1;
        if unchecked == CHECK_EVERY {
            control.deliveries.fetch_add(unreported, Ordering::Relaxed);
            (unreported, unchecked) = (0, 0);
            if control.stopping() {
                break;
            }
        }
        let fields = match reader.read(&message) {
            Ok(Frame::Indicator(fields)) => fields,
            Ok(Frame::Other) => {
                outcome.other += 1;
                continue;
            }
            Err(_) => {
                outcome.malformed += 1;
                continue;
            }
        };
        let (Some(publisher), Some(seq), true) = (
            fields.publisher,
            fields.seq,
            fields.run == Some(plan.run_id),
        ) else {
            outcome.foreign += 1;
            continue;
        };
        if fields.probe {
            outcome.probes += 1;
            control.probes_received.fetch_add(1, Ordering::Relaxed);
            if let Some(seen) = usize::try_from(publisher)
                .ok()
                .and_then(|i| probe_seen.get_mut(i))
                .filter(|seen| !**seen)
            {
                *seen = true;
                control.probe_pairs.fetch_add(1, Ordering::AcqRel);
            }
            continue;
        }
        if outcome.tracker.record(publisher, seq) == Delivery::New {
            let sent_ns = fields.sent_ns.unwrap_or(received_ns);
            outcome.latencies_us.push(latency_us(sent_ns, received_ns));
            outcome.last_receive_ns = Some(received_ns);
            unreported += 1;
            if outcome.tracker.is_complete() {
                control.complete.fetch_add(1, Ordering::AcqRel);
                break;
            }
        }
    }
    control.deliveries.fetch_add(unreported, Ordering::Relaxed);
    Ok(outcome)
}
