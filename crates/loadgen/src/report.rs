//! The result of a run: a table for people and one JSON object for scripts.

use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::LatencySummary;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was asked for.
    pub config: RunConfig,
    /// Seconds from the first probe until every subscriber had one from every publisher.
    pub warmup_s: f64,
    /// Seconds from then until probes stopped arriving, when measuring started.
    pub drain_s: f64,
    /// Probes sent during the warm-up.
    pub probes_sent: u64,
    /// Measured indicators sent.
    pub sent: u64,
    /// Seconds from the first to the last measured send.
    pub send_s: f64,
    /// `sent / send_s`.
    pub send_rate: f64,
    /// Seconds from the first measured send to the last measured receive.
    pub duration_s: f64,
    /// One row per (measured) subscriber.
    pub subscribers: Vec<SubscriberRow>,
    /// Distinct measured messages received, all subscribers.
    pub deliveries: u64,
    /// `deliveries / duration_s`.
    pub deliveries_per_s: f64,
    /// Sum of the subscribers' losses.
    pub lost: u64,
    /// Sum of the subscribers' duplicates.
    pub duplicates: u64,
    /// Sum of the subscribers' reordered messages.
    pub reordered: u64,
    /// Latency over all deliveries.
    pub latency: Option<LatencySummary>,
    /// The bus process, with `--bus-pid`.
    pub bus: Option<BusFigures>,
    /// CPU seconds the generator itself used during the run.
    pub generator_cpu_s: f64,
    /// Whether every subscriber received every message before the timeout.
    pub complete: bool,
}

/// The run's settings.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// The bus's manage endpoint.
    pub manage: String,
    /// The bus's PUB port (from the subscribe reply).
    pub pub_port: u16,
    /// The SUB port the publishers sent to (from the subscribe reply, or --publish-port).
    pub sub_port: u16,
    /// Measured subscribers.
    pub subscribers: usize,
    /// Publishers.
    pub publishers: usize,
    /// Measured indicators in total.
    pub messages: u64,
    /// Target rate in messages per second; 0 = as fast as possible.
    pub rate: f64,
    /// Topic subscribed to and published on.
    pub topic: String,
    /// Size of the indicators' JSON in bytes (smallest and largest of the pattern kinds).
    pub json_bytes: (usize, usize),
    /// High-water mark of the generator's sockets; 0 = unlimited.
    pub hwm: i32,
    /// Subscribers that subscribe but never read.
    pub stalled: usize,
}

/// One subscriber's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberRow {
    /// Index among the measured subscribers.
    pub index: usize,
    /// Distinct measured messages received.
    pub received: u64,
    /// `received` over the time from the first measured send to this subscriber's last receive.
    pub throughput: f64,
    /// Messages sent but not received.
    pub lost: u64,
    /// Extra copies received.
    pub duplicates: u64,
    /// Messages older than one already received from the same publisher.
    pub reordered: u64,
    /// Indicators not from this run, frames other than indicators and unreadable frames.
    pub ignored: u64,
    /// This subscriber's latency.
    pub latency: Option<LatencySummary>,
}

/// The bus process's resources during the run.
#[derive(Debug, Clone, Serialize)]
pub struct BusFigures {
    /// Its process id.
    pub pid: u32,
    /// RSS when the run started, MiB.
    pub rss_start_mib: f64,
    /// Largest RSS sampled during the run, MiB.
    pub rss_peak_mib: f64,
    /// `VmHWM` at the end (peak since the bus started), MiB.
    pub hwm_mib: f64,
    /// CPU seconds (user + system) from the first measured send to the last progress.
    pub cpu_s: f64,
    /// The window `cpu_s` covers, seconds.
    pub window_s: f64,
    /// `cpu_s / window_s` in percent (above 100 with several busy threads).
    pub cpu_percent: f64,
}

/// Writes `value` with `,` between groups of three digits.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn ms(us: u32) -> String {
    format!("{:.3}", f64::from(us) / 1000.0)
}

fn rate(rate: f64) -> String {
    if rate > 0.0 {
        format!("{} msg/s", thousands(rate.round() as u64))
    } else {
        "unlimited".into()
    }
}

impl Report {
    /// The human-readable table.
    pub fn to_table(&self) -> String {
        let c = &self.config;
        let mut out = String::new();
        let (small, large) = c.json_bytes;
        let size = if small == large {
            format!("{small} B")
        } else {
            format!("{small}-{large} B")
        };
        let hwm = match c.hwm {
            0 => "unlimited".to_owned(),
            hwm => thousands(hwm.unsigned_abs().into()),
        };
        let _ = writeln!(
            out,
            "bus       {} (pub {}, publishing to sub {})",
            c.manage, c.pub_port, c.sub_port
        );
        let _ = writeln!(
            out,
            "config    {} subscriber(s), {} publisher(s), {} indicators of {size} on {}, rate {}, hwm {hwm}, {} stalled",
            c.subscribers,
            c.publishers,
            thousands(c.messages),
            c.topic,
            rate(c.rate),
            c.stalled,
        );
        let _ = writeln!(
            out,
            "warm-up   {:.3} s, {} probe(s) until every subscriber had one from every publisher; \
             drained in {:.3} s",
            self.warmup_s, self.probes_sent, self.drain_s
        );
        let _ = writeln!(
            out,
            "sent      {} in {:.3} s = {}",
            thousands(self.sent),
            self.send_s,
            rate(self.send_rate)
        );
        let _ = writeln!(
            out,
            "duration  {:.3} s from the first measured send to the last receive{}",
            self.duration_s,
            if self.complete {
                ""
            } else {
                " (incomplete: timed out waiting for stragglers)"
            }
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:>10} {:>12} {:>12} {:>10} {:>6} {:>8} {:>10} {:>10} {:>10}",
            "subscriber",
            "received",
            "msg/s",
            "lost",
            "dup",
            "reorder",
            "p50 ms",
            "p99 ms",
            "max ms"
        );
        for row in &self.subscribers {
            let (p50, p99, max) = row.latency.map_or_else(
                || ("-".into(), "-".into(), "-".into()),
                |l| (ms(l.p50_us), ms(l.p99_us), ms(l.max_us)),
            );
            let _ = writeln!(
                out,
                "{:>10} {:>12} {:>12} {:>10} {:>6} {:>8} {p50:>10} {p99:>10} {max:>10}",
                row.index,
                thousands(row.received),
                thousands(row.throughput.round() as u64),
                thousands(row.lost),
                row.duplicates,
                row.reordered,
            );
        }
        let ignored: u64 = self.subscribers.iter().map(|row| row.ignored).sum();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "total     {} deliveries = {} deliveries/s; lost {}, duplicates {}, reordered {}{}",
            thousands(self.deliveries),
            thousands(self.deliveries_per_s.round() as u64),
            thousands(self.lost),
            self.duplicates,
            self.reordered,
            if ignored > 0 {
                format!(", {ignored} other frame(s) ignored")
            } else {
                String::new()
            }
        );
        match &self.latency {
            Some(l) => {
                let _ = writeln!(
                    out,
                    "latency   p50 {} ms, p90 {} ms, p99 {} ms, max {} ms, mean {:.3} ms ({} samples)",
                    ms(l.p50_us),
                    ms(l.p90_us),
                    ms(l.p99_us),
                    ms(l.max_us),
                    l.mean_us / 1000.0,
                    thousands(l.samples)
                );
            }
            None => {
                let _ = writeln!(out, "latency   - (nothing received)");
            }
        }
        if let Some(bus) = &self.bus {
            let _ = writeln!(
                out,
                "bus pid   {}: RSS {:.1} MiB at start, peak {:.1} MiB sampled (VmHWM {:.1} MiB); CPU {:.2} s in {:.2} s = {:.0} %",
                bus.pid,
                bus.rss_start_mib,
                bus.rss_peak_mib,
                bus.hwm_mib,
                bus.cpu_s,
                bus.window_s,
                bus.cpu_percent
            );
        }
        let _ = writeln!(
            out,
            "loadgen   CPU {:.2} s; {} stalled subscriber(s), not in the figures above",
            self.generator_cpu_s, c.stalled
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(p50: u32, p99: u32) -> LatencySummary {
        LatencySummary {
            samples: 200_000,
            p50_us: p50,
            p90_us: p50 * 2,
            p99_us: p99,
            max_us: p99 * 3,
            mean_us: 1234.5,
        }
    }

    fn report() -> Report {
        Report {
            config: RunConfig {
                manage: "tcp://127.0.0.1:13370".into(),
                pub_port: 13371,
                sub_port: 13372,
                subscribers: 2,
                publishers: 1,
                messages: 100_000,
                rate: 0.0,
                topic: "stix2/indicator".into(),
                json_bytes: (450, 450),
                hwm: 0,
                stalled: 1,
            },
            warmup_s: 0.2,
            drain_s: 0.05,
            probes_sent: 12,
            sent: 100_000,
            send_s: 0.5,
            send_rate: 200_000.0,
            duration_s: 0.8,
            subscribers: vec![
                SubscriberRow {
                    index: 0,
                    received: 100_000,
                    throughput: 125_000.4,
                    lost: 0,
                    duplicates: 0,
                    reordered: 0,
                    ignored: 0,
                    latency: Some(latency(1500, 4200)),
                },
                SubscriberRow {
                    index: 1,
                    received: 99_990,
                    throughput: 124_987.5,
                    lost: 10,
                    duplicates: 2,
                    reordered: 3,
                    ignored: 4,
                    latency: None,
                },
            ],
            deliveries: 199_990,
            deliveries_per_s: 249_987.5,
            lost: 10,
            duplicates: 2,
            reordered: 3,
            latency: Some(latency(1500, 4200)),
            bus: Some(BusFigures {
                pid: 4242,
                rss_start_mib: 10.0,
                rss_peak_mib: 33.25,
                hwm_mib: 40.0,
                cpu_s: 1.2,
                window_s: 0.8,
                cpu_percent: 150.0,
            }),
            generator_cpu_s: 0.9,
            complete: false,
        }
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn table_shows_every_figure() {
        let table = report().to_table();
        for expected in [
            "tcp://127.0.0.1:13370 (pub 13371, publishing to sub 13372)",
            "2 subscriber(s), 1 publisher(s), 100,000 indicators of 450 B on stix2/indicator, rate unlimited, hwm unlimited, 1 stalled",
            "warm-up   0.200 s, 12 probe(s) until every subscriber had one from every publisher; drained in 0.050 s",
            "sent      100,000 in 0.500 s = 200,000 msg/s",
            "(incomplete: timed out",
            "199,990 deliveries = 249,988 deliveries/s; lost 10, duplicates 2, reordered 3, 4 other frame(s) ignored",
            "p50 1.500 ms, p90 3.000 ms, p99 4.200 ms, max 12.600 ms, mean 1.234 ms (200,000 samples)",
            "peak 33.2 MiB sampled (VmHWM 40.0 MiB); CPU 1.20 s in 0.80 s = 150 %",
            "1 stalled subscriber(s)",
        ] {
            assert!(
                table.contains(expected),
                "{expected:?} missing from\n{table}"
            );
        }
        let rows: Vec<&str> = table
            .lines()
            .skip_while(|line| !line.trim_start().starts_with("subscriber"))
            .skip(1)
            .take(2)
            .collect();
        let columns: Vec<&str> = rows[0].split_whitespace().collect();
        assert_eq!(
            columns,
            [
                "0", "100,000", "125,000", "0", "0", "0", "1.500", "4.200", "12.600"
            ]
        );
        let columns: Vec<&str> = rows[1].split_whitespace().collect();
        assert_eq!(
            columns,
            ["1", "99,990", "124,988", "10", "2", "3", "-", "-", "-"]
        );
    }

    #[test]
    fn table_marks_complete_runs_and_omits_missing_bus_figures() {
        let mut report = report();
        report.complete = true;
        report.bus = None;
        report.config.rate = 10_000.0;
        report.config.hwm = 1000;
        let table = report.to_table();
        assert!(!table.contains("incomplete"), "{table}");
        assert!(!table.contains("bus pid"), "{table}");
        assert!(table.contains("rate 10,000 msg/s, hwm 1,000"), "{table}");
    }

    #[test]
    fn json_has_stable_field_names() {
        let json = serde_json::to_value(report()).unwrap();
        assert_eq!(json["config"]["subscribers"], 2);
        assert_eq!(json["subscribers"][1]["lost"], 10);
        assert_eq!(json["latency"]["p99_us"], 4200);
        assert_eq!(json["bus"]["rss_peak_mib"], 33.25);
        assert_eq!(json["deliveries_per_s"], 249_987.5);
        assert_eq!(json["complete"], false);
    }
}
