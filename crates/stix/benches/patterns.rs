//! Parsing speed of typical indicator patterns, measured with `std::time` (no harness).
//!
//! Run: `cargo bench -p threatbus-stix --bench patterns`. Prints the mean time per pattern for
//! each group; the goal for a point pattern (`[domain-name:value = 'evil.com']`) is under 2 µs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use threatbus_stix::pattern;

const POINT: &[&str] = &[
    "[ipv4-addr:value = '198.51.100.1']",
    "[domain-name:value = 'evil.example.com']",
    "[url:value = 'http://example.com/foo?query=bar']",
    "[file:hashes.'SHA-256' = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855']",
    "[file:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427e']",
    "[email-addr:value = 'admin@example.com']",
    "[autonomous-system:number = 64496]",
    "[x509-certificate:hashes.'SHA-1' = '6e6187d58483457f86eae49315a0a72d7543459a']",
];

const COMPOUND: &[&str] = &[
    "[domain-name:value = 'example.com'] AND [ipv4-addr:value = '203.0.113.7']",
    "[network-traffic:dst_ref.type = 'ipv4-addr' AND network-traffic:dst_ref.value = '203.0.113.33/32']",
    "[process:name = 'cmd.exe' AND process:parent_ref.name = 'winword.exe'] REPEATS 5 TIMES WITHIN 180 SECONDS",
    "([ipv4-addr:value = '203.0.113.1'] FOLLOWEDBY [domain-name:value = 'c2.example']) WITHIN 600 SECONDS",
    "[network-traffic:dst_port IN (80, 443, 8080)] START t'2020-01-01T00:00:00Z' STOP t'2020-01-02T00:00:00Z'",
];

/// A named measurement: the patterns and what to do with each (true = as expected).
type Group = (&'static str, &'static [&'static str], fn(&str) -> bool);

/// Runs `f` over `patterns` repeatedly for about `budget` and returns the mean per pattern.
fn measure(patterns: &[&str], budget: Duration, f: impl Fn(&str) -> bool) -> Duration {
    // Warm up caches and the allocator.
    for _ in 0..1000 {
        for p in patterns {
            black_box(f(black_box(p)));
        }
    }
    let mut runs: u32 = 0;
    let start = Instant::now();
    while start.elapsed() < budget {
        for _ in 0..1000 {
            for p in patterns {
                assert!(black_box(f(black_box(p))), "{p}");
            }
        }
        runs += 1000;
    }
    start.elapsed() / (runs * patterns.len() as u32)
}

fn main() {
    let budget = Duration::from_secs(2);
    let groups: [Group; 3] = [
        ("parse, point patterns", POINT, |p| {
            pattern::parse(p).is_ok()
        }),
        ("point_ioc, point patterns", POINT, |p| {
            pattern::point_ioc(p).is_some()
        }),
        ("parse, compound patterns", COMPOUND, |p| {
            pattern::parse(p).is_ok()
        }),
    ];
    for (name, patterns, f) in groups {
        let mean = measure(patterns, budget, f);
        println!("{name:<28} {:>8.0} ns/pattern", mean.as_nanos() as f64);
    }
}
