//! Keeps the log from being an amplifier for what comes from outside: [`LogThrottle`] lets a
//! burst of lines of one kind through and counts the rest, and [`bounded`] cuts a value from
//! outside to [`LOG_VALUE_MAX`] bytes of text, so that neither a flood of requests nor one huge
//! value turns into megabytes of log.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The most bytes of a value from outside (a topic, an event argument, a request) that a log
/// line prints; the rest is replaced by a note of how much was cut.
pub const LOG_VALUE_MAX: usize = 200;

/// `text` as it may appear in a log line: at most [`LOG_VALUE_MAX`] bytes (cut at a character
/// boundary), followed by `…(N more bytes)` if it was longer.
pub fn bounded(text: &str) -> Cow<'_, str> {
    if text.len() <= LOG_VALUE_MAX {
        return Cow::Borrowed(text);
    }
    let mut end = LOG_VALUE_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}…({} more bytes)",
        &text[..end],
        text.len() - end
    ))
}

/// Bytes from outside as text for a log line: UTF-8 where they are, `\xNN` where not, bounded
/// like [`bounded`].
pub fn bounded_bytes(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(LOG_VALUE_MAX)];
    let mut out = String::with_capacity(shown.len() + 24);
    for chunk in shown.utf8_chunks() {
        out.push_str(chunk.valid());
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    if bytes.len() > shown.len() {
        let _ = write!(out, "…({} more bytes)", bytes.len() - shown.len());
    }
    out
}

/// A list of values from outside as one bounded text: `[a, b, c]`, cut like [`bounded`].
pub fn bounded_list<S: AsRef<str>>(items: &[S]) -> String {
    let mut out = String::from("[");
    for (index, item) in items.iter().enumerate() {
        if out.len() > LOG_VALUE_MAX {
            let _ = write!(out, " …({} more)", items.len() - index);
            break;
        }
        if index > 0 {
            out.push_str(", ");
        }
        out.push_str(&bounded(item.as_ref()));
    }
    out.push(']');
    out
}

/// Lets through the first few events of each interval and counts the rest, so that the next
/// line that gets through can say how many were suppressed.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    burst: u32,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl LogThrottle {
    /// At most `burst` lines per `interval`.
    pub fn new(burst: u32, interval: Duration) -> Self {
        Self {
            interval,
            burst,
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Whether to log this event. If so, returns how many earlier events were suppressed.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.interval)
        {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

impl Default for LogThrottle {
    /// Ten lines per five seconds.
    fn default() -> Self {
        Self::new(10, Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_from_outside_are_cut_to_a_bounded_text() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(1000);
        let cut = bounded(&long);
        assert!(cut.len() < LOG_VALUE_MAX + 30, "{}", cut.len());
        assert!(cut.ends_with("…(1800 more bytes)"), "{cut}");
        assert_eq!(bounded_bytes(b"ok\xff\x00"), "ok\\xff\u{0}");
        let bytes = vec![b'a'; 900_000];
        assert!(bounded_bytes(&bytes).ends_with("…(899800 more bytes)"));
        let many: Vec<String> = (0..5000).map(|i| format!("topic{i}")).collect();
        let list = bounded_list(&many);
        assert!(list.len() < 2 * LOG_VALUE_MAX, "{}", list.len());
        assert!(
            list.starts_with("[topic0, topic1") && list.ends_with("more)]"),
            "{list}"
        );
        assert_eq!(bounded_list(&["a", "b"]), "[a, b]");
    }

    #[test]
    fn lets_a_burst_through_then_counts() {
        let mut throttle = LogThrottle::new(2, Duration::from_secs(3600));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        let mut fast = LogThrottle::new(1, Duration::ZERO);
        assert_eq!(fast.allow(), Some(0));
        assert_eq!(fast.allow(), Some(0));
    }
}
