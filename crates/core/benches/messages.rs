//! Cost of a message's way into the bus: decoding and validating a STIX indicator as it arrives
//! (parse, validate, serialise once), and what fan-out costs per subscriber (one `Arc` clone).
//! Measured with `std::time` (no harness).
//!
//! Run: `cargo bench -p threatbus-core --bench messages`. Prints the mean time per message.

use std::hint::black_box;
use std::time::{Duration, Instant};

use threatbus_core::Message;

/// A realistic indicator of about 450 bytes, as vast-threatbus or the OpenCTI connector send.
fn indicator(n: u32) -> Vec<u8> {
    format!(
        r#"{{"type":"indicator","spec_version":"2.1","id":"indicator--00000000-0000-4000-8000-{n:012}","created":"2024-03-01T10:20:30.123Z","modified":"2024-03-01T10:20:30.123Z","name":"C2 server of campaign {n}","description":"Observed in phishing wave {n}; block at the perimeter.","pattern":"[ipv4-addr:value = '10.{a}.{b}.{c}']","pattern_type":"stix","pattern_version":"2.1","valid_from":"2024-03-01T10:20:30Z","labels":["malicious-activity","c2"],"confidence":80,"x_opencti_score":75,"x_threatbus_update":"EDIT"}}"#,
        a = n % 256,
        b = (n / 256) % 256,
        c = (n / 65536) % 256,
    )
    .into_bytes()
}

fn measure(name: &str, count: usize, budget: Duration, mut f: impl FnMut(usize)) {
    for i in 0..count.min(1000) {
        f(i);
    }
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < budget {
        for i in 0..count {
            f(i);
        }
        done += count;
    }
    let per = start.elapsed() / done as u32;
    println!(
        "{name:<48} {:>8.0} ns/message  ({:.0} messages/s on one core)",
        per.as_nanos() as f64,
        1e9 / per.as_nanos() as f64
    );
}

fn main() {
    let inputs: Vec<Vec<u8>> = (0..1000).map(indicator).collect();
    println!("indicator JSON: {} bytes", inputs[0].len());
    // THREATBUS_BENCH_MS shortens the run, e.g. under valgrind --tool=callgrind.
    let budget = Duration::from_millis(
        std::env::var("THREATBUS_BENCH_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(2000),
    );
    measure(
        "decode + validate + encode (Message::from_stix_json)",
        inputs.len(),
        budget,
        |i| {
            black_box(Message::from_stix_json(black_box(&inputs[i])).ok());
        },
    );
    measure(
        "parse to serde_json::Value only",
        inputs.len(),
        budget,
        |i| {
            black_box(serde_json::from_slice::<serde_json::Value>(black_box(&inputs[i])).ok());
        },
    );
    let messages: Vec<Message> = inputs
        .iter()
        .filter_map(|j| Message::from_stix_json(j).ok())
        .collect();
    measure(
        "fan-out copy (Message::clone)",
        messages.len(),
        budget,
        |i| {
            black_box(black_box(&messages[i]).clone());
        },
    );
    report_memory(&inputs);
}

/// Resident memory of this process in bytes, from /proc/self/statm (Linux).
fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// What a queued message costs in memory: the parsed form plus the canonical JSON. Queues are
/// bounded in messages, so this turns `bus.queue_capacity` into bytes.
fn report_memory(inputs: &[Vec<u8>]) {
    const HELD: usize = 100_000;
    let Some(before) = resident_bytes() else {
        return;
    };
    let held: Vec<Message> = (0..HELD)
        .filter_map(|i| Message::from_stix_json(&inputs[i % inputs.len()]).ok())
        .collect();
    if let Some(after) = resident_bytes() {
        println!(
            "{:<48} {:>8} bytes/message held (resident, {} messages)",
            "memory of a decoded message",
            after.saturating_sub(before) / held.len().max(1),
            held.len()
        );
    }
    black_box(held);
}
