//! Capped exponential backoff with jitter, and the bookkeeping of a streak of failed attempts.

use std::time::{Duration, Instant};

use rand::Rng;

/// Waits `min` after the first failure, doubling per further failure up to `max`; each wait
/// is shortened by up to 20 % at random so that many clients do not retry in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The wait before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::rng().random_range(0.8..=1.0);
        delay.mul_f64(jitter)
    }

    /// Back to the shortest wait after an attempt that worked.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// How often a streak of failures is logged again after its first line.
pub const REPEAT_LOG: Duration = Duration::from_secs(30);

/// A streak of failed attempts at a call to an outside service: how long to wait before the
/// next one, and whether to log this failure (the first of a streak, then at most every
/// [`REPEAT_LOG`]), so that an outage of hours is a few log lines, not thousands.
#[derive(Debug, Clone)]
pub struct FailureStreak {
    backoff: Backoff,
    failures: u64,
    since: Option<Instant>,
    last_log: Option<Instant>,
}

impl FailureStreak {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            failures: 0,
            since: None,
            last_log: None,
        }
    }

    /// Records a failure: the wait before the next attempt, and whether to log this one.
    pub fn failed(&mut self) -> (Duration, bool) {
        let now = Instant::now();
        self.failures += 1;
        self.since.get_or_insert(now);
        let log = self
            .last_log
            .is_none_or(|at| now.duration_since(at) >= REPEAT_LOG);
        if log {
            self.last_log = Some(now);
        }
        (self.backoff.next_delay(), log)
    }

    /// Records a success: the number of failures and the duration of the streak it ends, if
    /// there was one.
    pub fn succeeded(&mut self) -> Option<(u64, Duration)> {
        self.backoff.reset();
        self.last_log = None;
        let failures = std::mem::take(&mut self.failures);
        self.since.take().map(|since| (failures, since.elapsed()))
    }

    /// Failures in the current streak.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_logs_its_first_failure_and_reports_its_length() {
        let mut streak = FailureStreak::new(Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(300),
        ));
        assert_eq!(streak.succeeded(), None);
        let (first, log_first) = streak.failed();
        let (second, log_second) = streak.failed();
        let (third, _) = streak.failed();
        assert!(log_first && !log_second);
        assert!(first <= Duration::from_millis(100) && second > Duration::from_millis(100));
        assert!(third <= Duration::from_millis(300) && third >= Duration::from_millis(240));
        assert_eq!(streak.failures(), 3);
        let (failures, _) = streak.succeeded().unwrap();
        assert_eq!(failures, 3);
        assert_eq!(streak.failures(), 0);
        // A new streak logs its first failure again and starts from the shortest wait.
        let (delay, log) = streak.failed();
        assert!(log && delay <= Duration::from_millis(100));
    }

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay()).collect();
        let upper = [100, 200, 400, 500, 500];
        for (delay, upper) in delays.iter().zip(upper) {
            let upper = Duration::from_millis(upper);
            assert!(
                *delay <= upper && *delay >= upper.mul_f64(0.8),
                "{delays:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn a_cap_below_the_minimum_is_the_minimum() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(10));
        backoff.next_delay();
        assert!(backoff.next_delay() >= Duration::from_millis(80));
    }
}
