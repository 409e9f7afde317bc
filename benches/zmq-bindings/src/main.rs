//! PUB -> SUB throughput of libzmq (`zmq` crate) against the pure-Rust `zeromq` crate, shaped
//! like the Threat Bus ZeroMQ app: one bound PUB socket, K connected SUB sockets, each with its
//! own 32-letter topic, frames `<topic> <json>` of 500 bytes. See README.md.
//!
//! The parent process runs every measured run in a fresh child process (so peak RSS and CPU
//! time belong to that run alone), prints every run and the medians, then runs the checks.

mod checks;
mod common;
mod libzmq;
mod purerust;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Options, RunResult};

const USAGE: &str = "\
usage: zmq-bindings-bench [options]
  --frames N        frames per subscriber (200000)
  --size B          frame size in bytes (500)
  --subs LIST       subscriber counts, comma-separated (1,4)
  --runs R          runs per configuration (3)
  --bindings LIST   zmq,zeromq,zeromq-window (all three)
  --hwm H           libzmq SNDHWM/RCVHWM in frames, XPUB_NODROP is on (100000)
  --window W        zeromq-window: in-flight frames per subscriber (0 = 90000/K, so that K*W
                    stays under the crate's fixed 100000-frame PUB queue)
  --threads T       tokio worker threads for zeromq (2)
  --idle-ms MS      a subscriber stops after this long without a frame once the publisher is done (2000)
  --no-checks       skip the interop and oversized-frame checks
  --checks-only     run only the checks";

struct Args {
    opts: Options,
    subs: Vec<usize>,
    runs: usize,
    bindings: Vec<String>,
    checks: bool,
    bench: bool,
    child: Option<String>,
    oversize: Option<(String, u64, u64)>,
}

fn parse_args() -> Args {
    let mut args = Args {
        opts: Options {
            frames: 200_000,
            size: 500,
            subs: 1,
            hwm: 100_000,
            window: 0,
            threads: 2,
            idle: Duration::from_millis(2000),
        },
        subs: vec![1, 4],
        runs: 3,
        bindings: vec!["zmq".into(), "zeromq".into(), "zeromq-window".into()],
        checks: true,
        bench: true,
        child: None,
        oversize: None,
    };
    let mut it = std::env::args().skip(1);
    let fail = |msg: String| -> ! {
        eprintln!("{msg}\n{USAGE}");
        std::process::exit(2)
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| fail(format!("{flag} needs a value")));
        let num = |v: String| v.parse::<u64>().unwrap_or_else(|_| fail(format!("bad number {v}")));
        match flag.as_str() {
            "--frames" => args.opts.frames = num(value()),
            "--size" => args.opts.size = num(value()) as usize,
            "--subs" => args.subs = value().split(',').map(|s| num(s.to_string()) as usize).collect(),
            "--runs" => args.runs = num(value()) as usize,
            "--bindings" => args.bindings = value().split(',').map(str::to_string).collect(),
            "--hwm" => args.opts.hwm = num(value()) as i32,
            "--window" => args.opts.window = num(value()) as usize,
            "--threads" => args.opts.threads = num(value()) as usize,
            "--idle-ms" => args.opts.idle = Duration::from_millis(num(value())),
            "--no-checks" => args.checks = false,
            "--checks-only" => args.bench = false,
            // Internal: one run, in a child process.
            "--child" => {
                args.child = Some(value());
                args.opts.subs = num(value()) as usize;
            }
            "--oversize" => {
                let binding = value();
                let (claim, stream) = (num(value()), num(value()));
                args.oversize = Some((binding, claim, stream));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            other => fail(format!("unknown option {other}")),
        }
    }
    for b in &args.bindings {
        if !["zmq", "zeromq", "zeromq-window"].contains(&b.as_str()) {
            fail(format!("unknown binding {b}"));
        }
    }
    args
}

/// Runs this binary again with `extra` arguments; returns its stdout, or why it failed.
fn run_child(extra: &[String], timeout: Duration) -> Result<String, String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {}s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).ok();
    child.stderr.take().unwrap().read_to_string(&mut err).ok();
    if status.success() {
        Ok(out)
    } else {
        // The first line says why (a panic message, or "memory allocation of N bytes failed").
        let err = err.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string();
        Err(format!("child exited with {status}{}", if err.is_empty() { String::new() } else { format!(": {err}") }))
    }
}

fn option_args(opts: &Options) -> Vec<String> {
    [
        ("--frames", opts.frames.to_string()),
        ("--size", opts.size.to_string()),
        ("--hwm", opts.hwm.to_string()),
        ("--window", opts.window.to_string()),
        ("--threads", opts.threads.to_string()),
        ("--idle-ms", opts.idle.as_millis().to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

const HEADER: &str = "binding        K  run      sent  received   loss%  sub msg/s(min)  sub msg/s(mean)  total frames/s  pub s  wall s  CPU s  CPU us/frame  peak RSS MiB";

fn row(r: &RunResult, run: &str) -> String {
    let loss = 100.0 * (r.sent - r.received.min(r.sent)) as f64 / r.sent as f64;
    format!(
        "{:<13} {:>2} {:>4} {:>9} {:>9} {:>7.3} {:>15.0} {:>16.0} {:>15.0} {:>6.2} {:>7.2} {:>6.2} {:>13.2} {:>13.1}{}",
        r.binding,
        r.subs,
        run,
        r.sent,
        r.received,
        loss,
        r.sub_rate_min,
        r.sub_rate_mean,
        r.total_rate,
        r.pub_secs,
        r.secs,
        r.cpu_secs,
        if r.received > 0 { r.cpu_secs * 1e6 / r.received as f64 } else { 0.0 },
        r.rss_kib as f64 / 1024.0,
        if r.out_of_order + r.wrong_topic > 0 {
            format!("  (out of order {}, wrong topic {})", r.out_of_order, r.wrong_topic)
        } else {
            String::new()
        }
    )
}

fn median_of(runs: &[RunResult]) -> RunResult {
    let m = |f: fn(&RunResult) -> f64| median(runs.iter().map(f).collect());
    RunResult {
        binding: runs[0].binding.clone(),
        subs: runs[0].subs,
        sent: runs[0].sent,
        received: m(|r| r.received as f64).round() as u64,
        out_of_order: m(|r| r.out_of_order as f64) as u64,
        wrong_topic: m(|r| r.wrong_topic as f64) as u64,
        pub_secs: m(|r| r.pub_secs),
        secs: m(|r| r.secs),
        sub_rate_min: m(|r| r.sub_rate_min),
        sub_rate_mean: m(|r| r.sub_rate_mean),
        total_rate: m(|r| r.total_rate),
        cpu_secs: m(|r| r.cpu_secs),
        rss_kib: m(|r| r.rss_kib as f64) as u64,
        warmup_ms: m(|r| r.warmup_ms),
    }
}

fn bench(args: &Args) {
    let o = &args.opts;
    println!(
        "PUB -> SUB over tcp://127.0.0.1: {} frames of {} B per subscriber, one unique 32-letter topic per subscriber \
         (N*K frames in all), {} runs each, every run in a fresh process.",
        o.frames, o.size, args.runs
    );
    println!(
        "zmq: libzmq 4.3.4 (zmq 0.10), 1 I/O thread, blocking send/recv on 1 thread per socket, SNDHWM=RCVHWM={}, XPUB_NODROP=1.",
        o.hwm
    );
    println!(
        "zeromq: zeromq 0.7 on tokio multi-thread ({} workers), 1 task per socket, no HWM/no-drop option (drops when its queue is full); \
         zeromq-window adds in-process back-pressure of {} frames per subscriber.",
        o.threads,
        if o.window == 0 { "90000/K".to_string() } else { o.window.to_string() }
    );
    if args.bindings.iter().any(|b| b == "zeromq-window") && args.subs.iter().any(|&k| k * o.window > 100_000) {
        println!("warning: window x subscribers exceeds the zeromq PUB's fixed 100000-frame queue; frames may drop");
    }
    println!("sub msg/s = frames a subscriber received / time from the first data frame sent to its last frame received;");
    println!("total frames/s = all frames received / time to the last frame anywhere; CPU = process user+sys over that phase.\n");

    let mut results: Vec<(String, usize, Vec<RunResult>)> = Vec::new();
    for &k in &args.subs {
        for b in &args.bindings {
            results.push((b.clone(), k, Vec::new()));
        }
    }
    println!("{HEADER}");
    for run in 1..=args.runs {
        for (binding, k, runs) in &mut results {
            let mut extra = vec!["--child".to_string(), binding.clone(), k.to_string()];
            extra.extend(option_args(&args.opts));
            match run_child(&extra, Duration::from_secs(400)) {
                Ok(out) => match out.lines().find_map(RunResult::parse) {
                    Some(r) => {
                        println!("{}", row(&r, &run.to_string()));
                        runs.push(r);
                    }
                    None => println!("{binding:<13} {k:>2} {run:>4}  no result: {out}"),
                },
                Err(e) => println!("{binding:<13} {k:>2} {run:>4}  FAILED: {e}"),
            }
        }
    }
    println!("\nMedians:\n{HEADER}");
    for (_, _, runs) in &results {
        if !runs.is_empty() {
            println!("{}", row(&median_of(runs), "med"));
        }
    }
    println!(
        "\nwarm-up (slow joiner, until every SUB got a probe), median ms: {}",
        results
            .iter()
            .filter(|(_, _, r)| !r.is_empty())
            .map(|(b, k, r)| format!("{b}/K={k}: {:.0}", median(r.iter().map(|x| x.warmup_ms).collect())))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn main() {
    let args = parse_args();
    if let Some(binding) = args.child.clone() {
        let mut args = args;
        if args.opts.window == 0 {
            args.opts.window = 90_000 / args.opts.subs.max(1);
        }
        let result = match binding.as_str() {
            "zmq" => libzmq::run(&args.opts),
            "zeromq" => purerust::run(&args.opts, false),
            _ => purerust::run(&args.opts, true),
        };
        println!("{}", result.to_line());
        // Skip socket teardown: the result is out.
        std::process::exit(0);
    }
    if let Some((binding, claim, stream)) = &args.oversize {
        checks::oversize(binding, *claim, *stream);
        std::process::exit(0);
    }
    if args.bench {
        bench(&args);
    }
    if args.checks {
        println!();
        checks::interop();
        println!("\nOversized frame from a peer (raw ZMTP 3.0 SUB handshake, then one frame header claiming a huge size):");
        for (binding, claim, stream) in [
            ("zmq", 4u64 << 30, 256u64 << 20),
            ("zeromq", 4u64 << 30, 256u64 << 20),
            ("zeromq", 1u64 << 40, 0),
        ] {
            let extra = ["--oversize".to_string(), binding.to_string(), claim.to_string(), stream.to_string()];
            let what = match run_child(&extra, Duration::from_secs(120)) {
                Ok(out) => out.lines().find(|l| l.starts_with("OVERSIZE")).unwrap_or("no output").to_string(),
                Err(e) => format!("OVERSIZE binding={binding} claim={claim}: process died: {e}"),
            };
            println!("  {what}");
        }
        println!("  (zmq PUB has ZMQ_MAXMSGSIZE = 1 MiB, as the bus sets it; zeromq has no such option.)");
    }
}
