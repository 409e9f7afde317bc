//! Capped exponential backoff with jitter.

use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
