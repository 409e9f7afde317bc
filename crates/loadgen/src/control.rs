//! State the main thread shares with the publisher and subscriber threads.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Publishers send probes until every subscriber has one from every publisher.
    Warmup,
    /// Probes stop; those still in flight arrive and are ignored.
    Drain,
    /// Publishers send the measured indicators.
    Measure,
    /// Something failed: everybody stops.
    Abort,
}

/// Counters and flags shared by all threads of a run.
#[derive(Debug, Default)]
pub struct Control {
    phase: AtomicU8,
    /// (subscriber, publisher) pairs for which the subscriber has received a probe.
    pub probe_pairs: AtomicUsize,
    /// Probes received by all subscribers so far.
    pub probes_received: AtomicU64,
    /// Measured messages received by all subscribers so far (updated in batches).
    pub deliveries: AtomicU64,
    /// Subscribers that have received every measured message.
    pub complete: AtomicUsize,
    /// Set when subscribers should stop waiting for more.
    pub stop: AtomicBool,
}

impl Control {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Warmup,
            1 => Phase::Drain,
            2 => Phase::Measure,
            _ => Phase::Abort,
        }
    }

    /// Moves the run to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        let value = match phase {
            Phase::Warmup => 0,
            Phase::Drain => 1,
            Phase::Measure => 2,
            Phase::Abort => 3,
        };
        self.phase.store(value, Ordering::Release);
    }

    /// Whether subscribers should stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip() {
        let control = Control::default();
        assert_eq!(control.phase(), Phase::Warmup);
        for phase in [Phase::Drain, Phase::Measure, Phase::Abort, Phase::Warmup] {
            control.set_phase(phase);
            assert_eq!(control.phase(), phase);
        }
    }
}
