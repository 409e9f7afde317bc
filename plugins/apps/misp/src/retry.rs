//! Waiting between attempts at calls MISP could not serve.

use std::time::{Duration, Instant};

use threatbus_net::Backoff;
use tokio_util::sync::CancellationToken;

/// How often a failure streak is logged again.
const LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Waits between attempts at a call MISP could not serve, logging the first failure of a
/// streak at ERROR and later ones at most every 30 s.
pub struct Retry {
    backoff: Backoff,
    failing_since: Option<Instant>,
    last_log: Option<Instant>,
    failures: u64,
}

impl Retry {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            failing_since: None,
            last_log: None,
            failures: 0,
        }
    }

    /// The call worked: logs recovery after a failure streak.
    pub fn succeeded(&mut self) {
        if let Some(since) = self.failing_since.take() {
            tracing::info!(
                failures = self.failures,
                seconds = since.elapsed().as_secs(),
                "MISP is reachable again"
            );
        }
        self.failures = 0;
        self.last_log = None;
        self.backoff.reset();
    }

    /// Logs the failure and waits; false if `stop` fired meanwhile.
    pub async fn wait(&mut self, what: &str, reason: &str, stop: &CancellationToken) -> bool {
        self.failures += 1;
        let now = Instant::now();
        self.failing_since.get_or_insert(now);
        let delay = self.backoff.next_delay();
        let due = self
            .last_log
            .is_none_or(|at| now.duration_since(at) >= LOG_INTERVAL);
        if due {
            self.last_log = Some(now);
            tracing::error!(%reason, failures = self.failures, retry_in_ms = delay.as_millis() as u64, "{what} failed; retrying");
        }
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}
