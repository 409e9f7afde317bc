//! `threatbus-loadgen`: drives a running Threat Bus through its ZeroMQ app protocol and reports
//! throughput, latency, loss and the bus's memory and CPU.
//!
//! K subscribers subscribe through the manage socket, each on its own thread with its own SUB
//! socket; P publishers send N STIX 2.1 indicators to the bus's sub socket. Probes warm every
//! connection up first (ZeroMQ drops what a SUB socket is not yet connected for), so the figures
//! cover only the measured indicators. Works against any bus speaking the protocol, including
//! the Python Threat Bus.

mod control;
mod frame;
mod indicator;
mod procfs;
mod publisher;
mod report;
mod run;
mod stats;
mod subscriber;

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;

/// Load generator for Threat Bus: K subscribers and P publishers over the ZeroMQ app protocol.
///
/// Subscribes K times through the manage socket, warms every connection up with probe
/// indicators, publishes N STIX 2.1 indicators and reports per-subscriber throughput, loss,
/// duplicates, reordering, latency percentiles and, with --bus-pid, the bus's peak RSS and CPU.
/// Exits 0 when the run completed (loss is a figure, not an error), 1 on errors such as an
/// unreachable bus or a bad reply.
#[derive(Debug, Parser)]
#[command(name = "threatbus-loadgen", version)]
struct Args {
    /// Host of the bus; its pub and sub ports are reached on the same host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Manage (REQ/REP) port of the bus; the pub and sub ports come from its subscribe reply.
    #[arg(long, default_value_t = 13370)]
    manage: u16,
    /// Port to publish to (the sub port of the bus instance the publishers talk to). Default:
    /// the sub port of the bus at --manage. Point it at another instance on the same RabbitMQ
    /// exchange to measure throughput between instances.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    publish_port: Option<u16>,
    /// Measured subscribers, each on its own thread and SUB socket.
    #[arg(short = 'k', long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    subscribers: u16,
    /// Publishers, each on its own thread and PUB socket; they share the messages and the rate.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    publishers: u16,
    /// Indicators per run, in total (split across the publishers).
    #[arg(short = 'n', long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    messages: u64,
    /// Overall rate in indicators per second; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0.0, value_parser = non_negative)]
    rate: f64,
    /// Topic to subscribe to and publish on.
    #[arg(long, default_value = "stix2/indicator")]
    topic: String,
    /// Target size of an indicator's JSON in bytes: a description pads the objects up to it.
    /// Without a description they are about 450 to 470 bytes, depending on the pattern kind.
    #[arg(long, default_value_t = 450)]
    size: usize,
    /// Process id of the bus: sample its RSS (VmRSS, VmHWM) and CPU time during the run.
    #[arg(long, value_name = "PID")]
    bus_pid: Option<u32>,
    /// Also print the report as one JSON object (on the last line).
    #[arg(long)]
    json: bool,
    /// Seconds to wait for replies, for the warm-up, and for stragglers after the last send
    /// (the run ends when no subscriber has received anything for this long).
    #[arg(long, default_value_t = 10.0, value_parser = positive)]
    timeout: f64,
    /// High-water mark of the generator's own sockets, in messages; 0 = unlimited. At the mark
    /// a publisher waits for room (it never drops); a subscriber stops reading from the bus,
    /// which then drops at its own send buffer.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..))]
    hwm: i32,
    /// Extra subscribers that subscribe and connect with a tiny receive buffer but never read
    /// (for the bounded-memory test); they are not in the figures.
    #[arg(long, default_value_t = 0)]
    stall: u16,
    /// ZeroMQ I/O threads of the generator.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=16))]
    io_threads: i32,
}

fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(format!("expected a number of at least 0, got {text:?}")),
    }
}

fn positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 && value < 1e6 => Ok(value),
        _ => Err(format!(
            "expected a positive number of seconds, got {text:?}"
        )),
    }
}

/// Nanoseconds since the Unix epoch: the clock of `x_loadgen_sent_ns`, comparable between
/// processes on one host.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = run::Settings {
        host: args.host,
        manage: args.manage,
        publish_port: args.publish_port,
        subscribers: args.subscribers.into(),
        publishers: args.publishers.into(),
        messages: args.messages,
        rate: args.rate,
        topic: args.topic,
        json_size: args.size,
        bus_pid: args.bus_pid,
        timeout: Duration::from_secs_f64(args.timeout),
        hwm: args.hwm,
        stall: args.stall.into(),
        io_threads: args.io_threads,
    };
    match run::execute(&settings) {
        Ok(report) => {
            print!("{}", report.to_table());
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(json) => println!("{json}"),
                    Err(err) => {
                        eprintln!("threatbus-loadgen: cannot encode the report: {err}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("threatbus-loadgen: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_has_the_documented_defaults() {
        Args::command().debug_assert();
        let args = Args::try_parse_from(["threatbus-loadgen"]).unwrap();
        assert_eq!(
            (args.host.as_str(), args.manage, args.subscribers),
            ("127.0.0.1", 13370, 1)
        );
        assert_eq!(
            (args.publishers, args.messages, args.rate, args.size),
            (1, 100_000, 0.0, 450)
        );
        assert_eq!((args.timeout, args.hwm, args.stall), (10.0, 0, 0));
        assert_eq!(args.publish_port, None);
        let args = Args::try_parse_from([
            "threatbus-loadgen",
            "-k",
            "16",
            "-n",
            "5000",
            "--rate",
            "10000",
            "--bus-pid",
            "42",
        ])
        .unwrap();
        assert_eq!(
            (args.subscribers, args.messages, args.rate, args.bus_pid),
            (16, 5000, 10_000.0, Some(42))
        );
        for bad in [
            &["-k", "0"][..],
            &["--rate", "-1"],
            &["--rate", "inf"],
            &["--timeout", "0"],
            &["--hwm", "-1"],
            &["-n", "0"],
            &["--publish-port", "0"],
        ] {
            let argv = std::iter::once("threatbus-loadgen").chain(bad.iter().copied());
            assert!(Args::try_parse_from(argv).is_err(), "{bad:?} accepted");
        }
    }
}
