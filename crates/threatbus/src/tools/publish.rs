//! `threatbus publish`: reads and validates every object first, then sends them through an
//! XPUB socket that waits for the bus's subscription (so the first frames are not lost to the
//! slow joiner), drops nothing at the high-water mark and flushes before exiting.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::time::Duration;

use threatbus_zmq_client::client::{Publisher, endpoint};

use super::input::{self, Parsed};
use super::{BusAddress, PublishArgs};

/// How long closing may wait for queued frames to leave.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(address: &BusAddress, args: &PublishArgs) -> ExitCode {
    let (name, text) = match read(args) {
        Ok(read) => read,
        Err(err) => {
            eprintln!("threatbus publish: {err}");
            return ExitCode::FAILURE;
        }
    };
    let parsed = input::parse(&text, args.skip_other_types);
    if !parsed.problems.is_empty() {
        eprintln!(
            "threatbus publish: {} problem(s) in {name}; nothing published:",
            parsed.problems.len()
        );
        for problem in &parsed.problems {
            eprintln!("  {problem}");
        }
        return ExitCode::FAILURE;
    }
    let skipped = match parsed.skipped {
        0 => String::new(),
        n => format!("; skipped {n} object(s) of other types"),
    };
    if parsed.objects.is_empty() {
        eprintln!("threatbus publish: no STIX objects in {name}: nothing to publish{skipped}");
        return ExitCode::SUCCESS;
    }
    if args.dry_run {
        eprintln!(
            "threatbus publish: {} valid{skipped}; nothing published (--dry-run)",
            counts(&parsed)
        );
        return ExitCode::SUCCESS;
    }
    let target = endpoint(&address.host, address.sub);
    match send(&target, &parsed, args.timeout) {
        Ok(()) => {
            eprintln!(
                "threatbus publish: published {} to {target}{skipped}",
                counts(&parsed)
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("threatbus publish: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `3 objects (2 indicators, 1 sightings)`.
fn counts(parsed: &Parsed<'_>) -> String {
    let indicators = parsed.indicators();
    format!(
        "{} objects ({indicators} indicators, {} sightings)",
        parsed.objects.len(),
        parsed.objects.len() - indicators
    )
}

/// The input's name for messages, and its text.
fn read(args: &PublishArgs) -> anyhow::Result<(String, String)> {
    let mut bytes = Vec::new();
    let name = match args.file.as_deref() {
        Some(path) if path.as_os_str() != "-" => {
            bytes = std::fs::read(path)
                .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))?;
            path.display().to_string()
        }
        _ => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!(
                    "threatbus publish: reading STIX objects from standard input (end with Ctrl-D)"
                );
            }
            stdin
                .lock()
                .read_to_end(&mut bytes)
                .map_err(|err| anyhow::anyhow!("cannot read standard input: {err}"))?;
            "standard input".to_owned()
        }
    };
    let text = String::from_utf8(bytes).map_err(|err| {
        let at = err.utf8_error().valid_up_to();
        let line = err.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        anyhow::anyhow!("{name} is not UTF-8 text (line {line}, byte {at}); nothing published")
    })?;
    Ok((name, text))
}

fn send(target: &str, parsed: &Parsed<'_>, timeout: Duration) -> anyhow::Result<()> {
    let mut topics: Vec<&str> = parsed.objects.iter().map(|o| o.topic).collect();
    topics.sort_unstable();
    topics.dedup();
    let publisher = Publisher::connect(target, &topics, timeout, FLUSH_TIMEOUT)?;
    for (sent, object) in parsed.objects.iter().enumerate() {
        if let Err(err) = publisher.send(object.topic, object.json.as_bytes()) {
            publisher.discard();
            anyhow::bail!(
                "{err}; {sent} of {} objects were sent",
                parsed.objects.len()
            );
        }
    }
    if !publisher.close() {
        anyhow::bail!(
            "could not hand every object to {target} within {} s: some of the {} objects may not \
             have reached the bus",
            FLUSH_TIMEOUT.as_secs(),
            parsed.objects.len()
        );
    }
    Ok(())
}
