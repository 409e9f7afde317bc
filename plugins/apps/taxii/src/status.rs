//! The status resources of recent `add objects` requests, kept in memory so that a client can
//! fetch one again under its id. The newest [`KEPT`] are kept; statuses do not survive a
//! restart (every request is complete when it is answered, so a status is only ever a record).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use threatbus_taxii::Status;

/// Statuses kept.
pub const KEPT: usize = 10_000;

/// The statuses kept, oldest first.
#[derive(Default)]
pub struct StatusLog {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Status>,
    order: VecDeque<String>,
}

impl StatusLog {
    /// Keeps `status`, forgetting the oldest one beyond [`KEPT`].
    pub fn keep(&self, status: Status) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.order.push_back(status.id.clone());
        inner.by_id.insert(status.id.clone(), status);
        while inner.order.len() > KEPT {
            if let Some(old) = inner.order.pop_front() {
                inner.by_id.remove(&old);
            }
        }
    }

    /// The status with this id, if it is still kept.
    pub fn get(&self, id: &str) -> Option<Status> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.by_id.get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use threatbus_taxii::StatusKind;

    fn status(id: usize) -> Status {
        Status {
            id: format!("s{id}"),
            status: StatusKind::Complete,
            request_timestamp: None,
            total_count: 0,
            success_count: 0,
            successes: Vec::new(),
            failure_count: 0,
            failures: Vec::new(),
            pending_count: 0,
            pendings: Vec::new(),
        }
    }

    #[test]
    fn the_newest_are_kept() {
        let log = StatusLog::default();
        for id in 0..KEPT + 2 {
            log.keep(status(id));
        }
        assert!(log.get("s0").is_none() && log.get("s1").is_none());
        assert!(log.get("s2").is_some());
        assert_eq!(
            log.get(&format!("s{}", KEPT + 1)).unwrap().id,
            format!("s{}", KEPT + 1)
        );
    }
}
