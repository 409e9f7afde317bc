//! What both bindings share: options, frame layout, per-subscriber tallies, resource usage.

use std::time::{Duration, Instant};

/// Length of a subscriber's topic, like the bus's p2p topics.
pub const TOPIC_LEN: usize = 32;
/// Where the 10-digit sequence number sits in a data frame: `<topic> {"seq":NNNNNNNNNN,...`.
const SEQ_OFFSET: usize = TOPIC_LEN + 1 + 7;
const SEQ_DIGITS: usize = 10;
/// The byte that tells a probe (`{"probe":1}`) from a data frame (`{"seq":...`).
const KIND_OFFSET: usize = TOPIC_LEN + 3;

#[derive(Clone, Debug)]
pub struct Options {
    pub frames: u64,
    pub size: usize,
    pub subs: usize,
    /// libzmq SNDHWM and RCVHWM (frames).
    pub hwm: i32,
    /// In-flight frames per subscriber for `zeromq-window`.
    pub window: usize,
    /// tokio worker threads for the `zeromq` bindings.
    pub threads: usize,
    /// A subscriber gives up after this long without a frame.
    pub idle: Duration,
}

/// The 32-letter topic of subscriber `k` (fixed pseudo-random letters, so runs are alike).
pub fn topic(k: usize) -> String {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (k as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (0..TOPIC_LEN)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let letters = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
            letters[(state % letters.len() as u64) as usize] as char
        })
        .collect()
}

/// A data frame of `size` bytes for `topic`, sequence number 0; see [`set_seq`].
pub fn data_template(topic: &str, size: usize) -> Vec<u8> {
    let head = format!("{topic} {{\"seq\":{:0width$},\"pad\":\"", 0, width = SEQ_DIGITS);
    let tail = "\"}";
    assert!(size >= head.len() + tail.len(), "frame size too small: at least {}", head.len() + tail.len());
    let mut frame = head.into_bytes();
    frame.resize(size - tail.len(), b'x');
    frame.extend_from_slice(tail.as_bytes());
    debug_assert_eq!(frame.len(), size);
    frame
}

pub fn probe_frame(topic: &str) -> Vec<u8> {
    format!("{topic} {{\"probe\":1}}").into_bytes()
}

pub fn set_seq(frame: &mut [u8], seq: u64) {
    let mut n = seq;
    for i in (0..SEQ_DIGITS).rev() {
        frame[SEQ_OFFSET + i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// What one subscriber saw.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub received: u64,
    /// Frames whose sequence number was not above the previous one (reordered or duplicated).
    pub out_of_order: u64,
    /// Frames that did not start with the subscriber's topic.
    pub wrong_topic: u64,
    /// When the last data frame arrived.
    pub last: Option<Instant>,
    next_seq: u64,
}

pub enum Frame {
    Probe,
    Data,
}

impl Tally {
    /// Classifies and counts one received frame.
    pub fn observe(&mut self, topic: &[u8], frame: &[u8]) -> Frame {
        if !frame.starts_with(topic) {
            self.wrong_topic += 1;
            return Frame::Data;
        }
        if frame.get(KIND_OFFSET) == Some(&b'p') {
            return Frame::Probe;
        }
        let seq = frame
            .get(SEQ_OFFSET..SEQ_OFFSET + SEQ_DIGITS)
            .map(|digits| digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
            .unwrap_or(u64::MAX);
        if seq < self.next_seq {
            self.out_of_order += 1;
        } else {
            self.next_seq = seq + 1;
        }
        self.received += 1;
        self.last = Some(Instant::now());
        Frame::Data
    }
}

/// Process CPU time (user + system) in seconds and peak RSS in KiB.
pub fn rusage() -> (f64, u64) {
    // SAFETY: getrusage writes a plain struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime) + secs(usage.ru_stime), usage.ru_maxrss as u64)
}

/// The outcome of one run, printed by the child as one `RESULT` line.
#[derive(Clone, Debug, Default)]
pub struct RunResult {
    pub binding: String,
    pub subs: usize,
    pub sent: u64,
    pub received: u64,
    pub out_of_order: u64,
    pub wrong_topic: u64,
    /// Seconds from the first data frame until the publisher's last send returned.
    pub pub_secs: f64,
    /// Seconds from the first data frame until the last one arrived anywhere.
    pub secs: f64,
    /// Slowest and mean subscriber rate (frames it received / its own time to its last frame).
    pub sub_rate_min: f64,
    pub sub_rate_mean: f64,
    pub total_rate: f64,
    /// Process CPU seconds over the measured phase.
    pub cpu_secs: f64,
    pub rss_kib: u64,
    pub warmup_ms: f64,
}

impl RunResult {
    pub fn from_tallies(
        binding: &str,
        opts: &Options,
        start: Instant,
        pub_done: Instant,
        tallies: &[Tally],
        cpu_before: f64,
        warmup: Duration,
    ) -> Self {
        let (cpu_after, rss_kib) = rusage();
        let elapsed = |t: &Tally| t.last.map_or(0.0, |last| (last - start).as_secs_f64());
        let rates: Vec<f64> = tallies
            .iter()
            .map(|t| if elapsed(t) > 0.0 { t.received as f64 / elapsed(t) } else { 0.0 })
            .collect();
        let secs = tallies.iter().map(elapsed).fold(0.0, f64::max);
        let received: u64 = tallies.iter().map(|t| t.received).sum();
        RunResult {
            binding: binding.to_string(),
            subs: opts.subs,
            sent: opts.frames * opts.subs as u64,
            received,
            out_of_order: tallies.iter().map(|t| t.out_of_order).sum(),
            wrong_topic: tallies.iter().map(|t| t.wrong_topic).sum(),
            pub_secs: (pub_done - start).as_secs_f64(),
            secs,
            sub_rate_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
            sub_rate_mean: rates.iter().sum::<f64>() / rates.len() as f64,
            total_rate: if secs > 0.0 { received as f64 / secs } else { 0.0 },
            cpu_secs: cpu_after - cpu_before,
            rss_kib,
            warmup_ms: warmup.as_secs_f64() * 1e3,
        }
    }

    pub fn to_line(&self) -> String {
        format!(
            "RESULT binding={} subs={} sent={} received={} ooo={} wrong_topic={} pub_secs={} secs={} \
             sub_rate_min={} sub_rate_mean={} total_rate={} cpu_secs={} rss_kib={} warmup_ms={}",
            self.binding,
            self.subs,
            self.sent,
            self.received,
            self.out_of_order,
            self.wrong_topic,
            self.pub_secs,
            self.secs,
            self.sub_rate_min,
            self.sub_rate_mean,
            self.total_rate,
            self.cpu_secs,
            self.rss_kib,
            self.warmup_ms
        )
    }

    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix("RESULT ")?;
        let mut r = RunResult::default();
        for field in rest.split(' ') {
            let (key, value) = field.split_once('=')?;
            let f = || value.parse::<f64>().ok();
            let u = || value.parse::<u64>().ok();
            match key {
                "binding" => r.binding = value.to_string(),
                "subs" => r.subs = u()? as usize,
                "sent" => r.sent = u()?,
                "received" => r.received = u()?,
                "ooo" => r.out_of_order = u()?,
                "wrong_topic" => r.wrong_topic = u()?,
                "pub_secs" => r.pub_secs = f()?,
                "secs" => r.secs = f()?,
                "sub_rate_min" => r.sub_rate_min = f()?,
                "sub_rate_mean" => r.sub_rate_mean = f()?,
                "total_rate" => r.total_rate = f()?,
                "cpu_secs" => r.cpu_secs = f()?,
                "rss_kib" => r.rss_kib = u()?,
                "warmup_ms" => r.warmup_ms = f()?,
                _ => {}
            }
        }
        Some(r)
    }
}
