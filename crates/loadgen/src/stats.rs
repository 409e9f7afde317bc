//! Delivery bookkeeping of one subscriber (duplicates, reordering, loss) and latency percentiles.

use serde::Serialize;

/// What happened to one received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// First time this (publisher, seq) arrived.
    New,
    /// Seen before.
    Duplicate,
    /// A publisher or sequence number this run never sent.
    Unexpected,
}

/// Tracks which messages of each publisher a subscriber has seen.
#[derive(Debug)]
pub struct DeliveryTracker {
    publishers: Vec<PublisherTrack>,
    /// Messages received, duplicates included.
    pub received: u64,
    /// Distinct messages received.
    pub unique: u64,
    /// Messages received more than once (each extra copy counts).
    pub duplicates: u64,
    /// Messages that arrived after a higher sequence number of the same publisher.
    pub reordered: u64,
    /// Messages with a publisher or sequence number outside this run.
    pub unexpected: u64,
    expected: u64,
}

#[derive(Debug)]
struct PublisherTrack {
    /// One bit per sequence number.
    seen: Vec<u64>,
    count: u64,
    highest: Option<u64>,
}

impl DeliveryTracker {
    /// A tracker for publishers that send `counts[i]` messages each, numbered from 0.
    pub fn new(counts: &[u64]) -> Self {
        let publishers = counts
            .iter()
            .map(|&count| PublisherTrack {
                seen: vec![0; count.div_ceil(64) as usize],
                count,
                highest: None,
            })
            .collect();
        Self {
            publishers,
            received: 0,
            unique: 0,
            duplicates: 0,
            reordered: 0,
            unexpected: 0,
            expected: counts.iter().sum(),
        }
    }

    /// Records the arrival of message `seq` of `publisher`.
    pub fn record(&mut self, publisher: u64, seq: u64) -> Delivery {
        self.received += 1;
        let track = usize::try_from(publisher)
            .ok()
            .and_then(|i| self.publishers.get_mut(i))
            .filter(|track| seq < track.count);
        let Some(track) = track else {
            self.unexpected += 1;
            return Delivery::Unexpected;
        };
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if track.seen[word] & bit != 0 {
            self.duplicates += 1;
            return Delivery::Duplicate;
        }
        track.seen[word] |= bit;
        self.unique += 1;
        match track.highest {
            Some(highest) if seq < highest => self.reordered += 1,
            _ => track.highest = Some(seq),
        }
        Delivery::New
    }

    /// Whether every message of the run has arrived.
    pub fn is_complete(&self) -> bool {
        self.unique == self.expected
    }

    /// Messages sent but never received.
    pub fn lost(&self) -> u64 {
        self.expected - self.unique
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub samples: u64,
    /// Median.
    pub p50_us: u32,
    /// 90th percentile.
    pub p90_us: u32,
    /// 99th percentile.
    pub p99_us: u32,
    /// Largest sample.
    pub max_us: u32,
    /// Arithmetic mean.
    pub mean_us: f64,
}

impl LatencySummary {
    /// Exact nearest-rank percentiles of `samples`, which it sorts; `None` when empty.
    pub fn from_samples(samples: &mut [u32]) -> Option<Self> {
        let last = *samples.iter().max()?;
        samples.sort_unstable();
        let rank = |percent: u64| {
            let n = samples.len() as u64;
            // Nearest rank: the smallest value with at least `percent`% of samples at or below.
            let rank = (percent * n).div_ceil(100).max(1);
            samples[(rank - 1) as usize]
        };
        let sum: u64 = samples.iter().map(|&s| u64::from(s)).sum();
        Some(Self {
            samples: samples.len() as u64,
            p50_us: rank(50),
            p90_us: rank(90),
            p99_us: rank(99),
            max_us: last,
            mean_us: sum as f64 / samples.len() as f64,
        })
    }
}

/// Latency from send and receive times in nanoseconds, as whole microseconds (saturating; a
/// receive stamped before the send, possible only across clock steps, counts as 0).
pub fn latency_us(sent_ns: u64, received_ns: u64) -> u32 {
    u32::try_from(received_ns.saturating_sub(sent_ns) / 1000).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_duplicates_reordering_loss_and_strangers() {
        let mut tracker = DeliveryTracker::new(&[100, 3]);
        for seq in [0, 1, 2, 5, 4, 4, 3, 6] {
            tracker.record(0, seq);
        }
        assert_eq!(tracker.record(1, 0), Delivery::New);
        assert_eq!(tracker.record(1, 0), Delivery::Duplicate);
        assert_eq!(tracker.record(1, 3), Delivery::Unexpected);
        assert_eq!(tracker.record(2, 0), Delivery::Unexpected);
        assert_eq!(tracker.received, 12);
        assert_eq!(tracker.unique, 8);
        assert_eq!(tracker.duplicates, 2);
        // 4 after 5, and 3 after 5: both older than the highest seen.
        assert_eq!(tracker.reordered, 2);
        assert_eq!(tracker.unexpected, 2);
        assert_eq!(tracker.lost(), 103 - 8);
        assert!(!tracker.is_complete());
    }

    #[test]
    fn complete_when_every_message_arrived_once_in_any_order() {
        let mut tracker = DeliveryTracker::new(&[65, 0, 2]);
        for seq in (0..65).rev() {
            assert_eq!(tracker.record(0, seq), Delivery::New);
        }
        assert_eq!(tracker.record(1, 0), Delivery::Unexpected);
        tracker.record(2, 1);
        assert!(!tracker.is_complete());
        tracker.record(2, 0);
        assert!(tracker.is_complete());
        assert_eq!(tracker.lost(), 0);
        assert_eq!(tracker.reordered, 64 + 1);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut samples: Vec<u32> = (1..=1000).rev().collect();
        let summary = LatencySummary::from_samples(&mut samples).unwrap();
        assert_eq!(
            (
                summary.p50_us,
                summary.p90_us,
                summary.p99_us,
                summary.max_us
            ),
            (500, 900, 990, 1000)
        );
        assert_eq!(summary.samples, 1000);
        assert!((summary.mean_us - 500.5).abs() < 1e-9);

        let mut few = vec![7, 3];
        let summary = LatencySummary::from_samples(&mut few).unwrap();
        assert_eq!((summary.p50_us, summary.p99_us, summary.max_us), (3, 7, 7));
        let mut one = vec![42];
        let summary = LatencySummary::from_samples(&mut one).unwrap();
        assert_eq!((summary.p50_us, summary.p90_us), (42, 42));
        assert!(LatencySummary::from_samples(&mut []).is_none());
    }

    #[test]
    fn latency_is_whole_microseconds_and_saturates() {
        assert_eq!(latency_us(1_000, 3_999), 2);
        assert_eq!(latency_us(5_000, 1_000), 0);
        assert_eq!(latency_us(0, u64::MAX), u32::MAX);
    }
}
