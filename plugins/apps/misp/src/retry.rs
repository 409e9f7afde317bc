//! Waiting between attempts at calls MISP could not serve.

use threatbus_net::{Backoff, FailureStreak};
use tokio_util::sync::CancellationToken;

/// Waits between attempts at a call MISP could not serve, logging the first failure of a
/// streak at ERROR and later ones at most every 30 s, and the recovery at INFO.
pub struct Retry {
    streak: FailureStreak,
}

impl Retry {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            streak: FailureStreak::new(backoff),
        }
    }

    /// The call worked: logs recovery after a failure streak.
    pub fn succeeded(&mut self) {
        if let Some((failures, duration)) = self.streak.succeeded() {
            tracing::info!(
                failures,
                seconds = duration.as_secs(),
                "MISP is reachable again"
            );
        }
    }

    /// Logs the failure and waits; false if `stop` fired meanwhile.
    pub async fn wait(&mut self, what: &str, reason: &str, stop: &CancellationToken) -> bool {
        let (delay, log) = self.streak.failed();
        if log {
            tracing::error!(%reason, failures = self.streak.failures(), retry_in_ms = delay.as_millis() as u64, "{what} failed; retrying");
        }
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}
