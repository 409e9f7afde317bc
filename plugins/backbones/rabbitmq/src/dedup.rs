//! Recognising messages that reach this instance a second time.
//!
//! At-least-once delivery repeats a message in two cases: the publisher resends what the
//! server had not confirmed when the connection broke, and the server redelivers what this
//! consumer had not acknowledged. Our publishers stamp every message with a `message_id` of the
//! form `<publisher id>.<sequence number>`, the sequence counting up per publisher (one per bus
//! process) and kept across reconnects; resends reuse it. One publisher's messages reach a
//! queue in the order they were published, so a sequence number not above the last one seen
//! from that publisher is a repeat.
//!
//! Messages without such an id (from upstream's Python backbone) are never taken for repeats.

use std::collections::{HashMap, VecDeque};

/// Builds the `message_id` of a message.
pub fn message_id(publisher: &str, sequence: u64) -> String {
    format!("{publisher}.{sequence}")
}

/// Splits a `message_id` made by [`message_id`].
fn parse(message_id: &str) -> Option<(&str, u64)> {
    let (publisher, sequence) = message_id.rsplit_once('.')?;
    if publisher.is_empty() {
        return None;
    }
    Some((publisher, sequence.parse().ok()?))
}

/// The highest sequence number seen per publisher, for a bounded number of publishers (the
/// least recently added is forgotten first).
#[derive(Debug)]
pub struct RepeatFilter {
    last_seen: HashMap<String, u64>,
    order: VecDeque<String>,
    capacity: usize,
}

impl RepeatFilter {
    pub fn new(capacity: usize) -> Self {
        Self {
            last_seen: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Whether the message with this `message_id` was seen before; records it if not.
    pub fn is_repeat(&mut self, message_id: Option<&str>) -> bool {
        let Some((publisher, sequence)) = message_id.and_then(parse) else {
            return false;
        };
        if let Some(last) = self.last_seen.get_mut(publisher) {
            if sequence <= *last {
                return true;
            }
            *last = sequence;
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.last_seen.remove(&oldest);
        }
        self.order.push_back(publisher.to_owned());
        self.last_seen.insert(publisher.to_owned(), sequence);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_recognised_per_publisher() {
        let mut filter = RepeatFilter::new(8);
        let a = |n| message_id("a", n);
        let b = |n| message_id("b", n);
        assert!(!filter.is_repeat(Some(&a(1))));
        assert!(!filter.is_repeat(Some(&a(2))));
        assert!(!filter.is_repeat(Some(&b(1))));
        // A resend after a reconnect starts again at the first unconfirmed message.
        assert!(filter.is_repeat(Some(&a(2))));
        assert!(filter.is_repeat(Some(&a(1))));
        assert!(!filter.is_repeat(Some(&a(3))));
        // A gap (messages dropped by x-max-length) is not a repeat.
        assert!(!filter.is_repeat(Some(&a(10))));
    }

    #[test]
    fn foreign_ids_are_never_repeats() {
        let mut filter = RepeatFilter::new(8);
        for id in [None, Some("x"), Some("abc"), Some(".5"), Some("a.b")] {
            assert!(!filter.is_repeat(id));
            assert!(!filter.is_repeat(id));
        }
        // UUID-like publisher ids containing dots still work.
        assert!(!filter.is_repeat(Some("a.b.1")));
        assert!(filter.is_repeat(Some("a.b.1")));
    }

    #[test]
    fn the_oldest_publisher_is_forgotten() {
        let mut filter = RepeatFilter::new(2);
        assert!(!filter.is_repeat(Some("a.1")));
        assert!(!filter.is_repeat(Some("b.1")));
        assert!(!filter.is_repeat(Some("c.1")));
        assert!(!filter.is_repeat(Some("a.1")), "a was forgotten");
        assert!(filter.is_repeat(Some("c.1")));
    }
}
