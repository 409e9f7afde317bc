//! `threatbus store`: operator commands on the intel store named by the configuration.
//!
//! `stats` and `export` read: they work on a stopped bus's store and on a running bus's too (a
//! consistent view as of their start). `import` and `prune` write: they need the store to
//! themselves and say so when a bus holds it.

use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use threatbus_core::Message;
use threatbus_store::{Location, Record, StoreConfig, StoreError, WriteCounts};

use super::input;
use crate::config;

/// `threatbus store …`
#[derive(Debug, clap::Args)]
#[command(after_help = STORE_HELP)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Objects by type and state, versions, oldest and newest, size on disk.
    Stats,
    /// Write stored objects to standard output: one JSON object per line, or a STIX bundle.
    Export(ExportArgs),
    /// Read STIX objects (as `threatbus publish` reads them) into the store, validated like
    /// bus input. Needs the store to itself (stop the bus first).
    Import(ImportArgs),
    /// Remove what is older than `store.retention` now (the bus also does this hourly). Needs
    /// the store to itself (stop the bus first).
    Prune,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Only objects modified in the last DAYS days.
    #[arg(long, value_name = "DAYS")]
    pub since: Option<u32>,
    /// Every version, not only the current one of each object.
    #[arg(long)]
    pub all_versions: bool,
    /// One STIX 2.1 bundle instead of one object per line.
    #[arg(long)]
    pub bundle: bool,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// File with the STIX objects; `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: String,
}

const STORE_HELP: &str = "The store is the one the configuration names (`store.path`; the \
embedded default's is ./threatbus-store). stats and export work while a bus runs on it; import \
and prune need it to themselves.

Examples:
  threatbus -c config.yaml store stats
  threatbus store export --since 30 > intel.ndjson
  threatbus store export --all-versions --bundle > backup.json
  threatbus store import backup.json";

/// Runs `threatbus store …`.
pub fn run(
    config_path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    args: &StoreArgs,
) -> ExitCode {
    let store = match store_config(config_path, env) {
        Ok(store) => store,
        Err(code) => return code,
    };
    let location = store.location();
    let result = match &args.command {
        StoreCommand::Stats => stats(&location),
        StoreCommand::Export(export) => self::export(&location, export),
        StoreCommand::Import(import) => self::import(&location, import),
        StoreCommand::Prune => prune(&location, store.retention),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("threatbus store: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The `store` section of the configuration, or the exit code after saying what is wrong.
fn store_config(
    config_path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<StoreConfig, ExitCode> {
    let (config, errors) = config::read(config_path, env).map_err(|errors| {
        crate::report_config_errors(&errors);
        ExitCode::FAILURE
    })?;
    if !errors.is_empty() {
        crate::report_config_errors(&errors);
        return Err(ExitCode::FAILURE);
    }
    config.store.ok_or_else(|| {
        eprintln!(
            "threatbus store: the configuration has no `store` section (add `store: {{path: threatbus-store}}`)"
        );
        ExitCode::FAILURE
    })
}

/// A store error in words, with what to do when a bus holds the store.
fn explain(err: StoreError) -> String {
    let text = err.to_string();
    if text.contains("locked by another process") {
        format!("{text}; stop the bus first (or send objects through it with `threatbus publish`)")
    } else {
        text
    }
}

fn now_nanos() -> i64 {
    i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX)
}

fn format_nanos(nanos: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .map_or_else(|_| nanos.to_string(), |t| format!("{t:.3}"))
}

/// A store to read: it must exist (a reader never creates one).
fn reader(location: &Location) -> Result<Box<dyn threatbus_store::Engine>, String> {
    if let Location::File(path) = location
        && !path.exists()
    {
        return Err(format!("{}: no store there yet", path.display()));
    }
    location.open_reader().map_err(explain)
}

fn stats(location: &Location) -> Result<(), String> {
    let mut store = reader(location)?;
    let stats = store.stats(now_nanos()).map_err(explain)?;
    let span = store.span().map_err(explain)?;
    let objects = stats.indicators_active
        + stats.indicators_withdrawn
        + stats.indicators_expired
        + stats.sightings;
    let bytes = store.bytes_on_disk().map_err(explain)?;
    let document = serde_json::json!({
        "store": location.describe(),
        "indicators": {
            "active": stats.indicators_active,
            "withdrawn": stats.indicators_withdrawn,
            "expired": stats.indicators_expired,
        },
        "sightings": stats.sightings,
        "objects": objects,
        "versions": stats.versions,
        "oldest_modified": span.map(|(oldest, _)| format_nanos(oldest)),
        "newest_modified": span.map(|(_, newest)| format_nanos(newest)),
        "bytes_on_disk": bytes,
        "bytes_per_version": bytes.checked_div(stats.versions).unwrap_or(0),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&document).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn export(location: &Location, args: &ExportArgs) -> Result<(), String> {
    let mut store = reader(location)?;
    let since = args.since.map_or(i64::MIN, |days| {
        now_nanos().saturating_sub(i64::from(days) * 86_400 * 1_000_000_000)
    });
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut failed = None;
    let mut first = true;
    if args.bundle {
        let id = format!("bundle--{}", uuid::Uuid::new_v4());
        if let Err(err) = write!(out, "{{\"type\":\"bundle\",\"id\":\"{id}\",\"objects\":[") {
            return Err(format!("cannot write the export: {err}"));
        }
    }
    let exported = store
        .export(since, args.all_versions, &mut |json| {
            let written = if args.bundle {
                let separator: &[u8] = if first { b"" } else { b"," };
                out.write_all(separator).and_then(|()| out.write_all(json))
            } else {
                out.write_all(json).and_then(|()| out.write_all(b"\n"))
            };
            first = false;
            match written {
                Ok(()) => true,
                Err(err) => {
                    failed = Some(err);
                    false
                }
            }
        })
        .map_err(explain)?;
    if args.bundle
        && failed.is_none()
        && let Err(err) = out.write_all(b"]}\n")
    {
        failed = Some(err);
    }
    if let Some(err) = failed.or_else(|| out.flush().err()) {
        return Err(format!("cannot write the export: {err}"));
    }
    eprintln!(
        "threatbus store: exported {exported} objects from {}",
        location.describe()
    );
    Ok(())
}

/// How often import reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Records written per transaction.
const IMPORT_BATCH: usize = 10_000;

fn import(location: &Location, args: &ImportArgs) -> Result<(), String> {
    let mut text = String::new();
    let read = if args.file == "-" {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(&args.file).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map_err(|err| format!("cannot read {}: {err}", args.file))?;
    let parsed = input::parse(&text, true);
    for problem in &parsed.problems {
        eprintln!("threatbus store: {}: skipped: {problem}", args.file);
    }
    let mut store = location.open_writer().map_err(explain)?;
    let total = parsed.objects.len();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut counts = WriteCounts::default();
    let mut done = 0usize;
    for chunk in parsed.objects.chunks(IMPORT_BATCH) {
        let records: Vec<Record> = chunk
            .iter()
            .filter_map(|object| Message::from_stix_json(object.json.as_bytes()).ok())
            .filter_map(|message| Record::from_message(&message))
            .collect();
        let written = store.write(&records).map_err(explain)?;
        counts.current += written.current;
        counts.history += written.history;
        counts.repeated += written.repeated;
        done += chunk.len();
        if last_report.elapsed() >= PROGRESS_EVERY {
            eprintln!("threatbus store: imported {done} of {total} objects");
            last_report = Instant::now();
        }
    }
    eprintln!(
        "threatbus store: imported {total} objects into {} in {:.1} s: {} current, {} older versions kept as history, {} already stored; {} skipped as invalid",
        location.describe(),
        started.elapsed().as_secs_f64(),
        counts.current,
        counts.history,
        counts.repeated,
        parsed.problems.len(),
    );
    Ok(())
}

fn prune(location: &Location, retention_days: u64) -> Result<(), String> {
    let mut store = location.open_writer().map_err(explain)?;
    let retention =
        i64::try_from(retention_days.saturating_mul(86_400 * 1_000_000_000)).unwrap_or(i64::MAX);
    let pruned = store
        .prune(now_nanos().saturating_sub(retention))
        .map_err(explain)?;
    eprintln!(
        "threatbus store: pruned {pruned} versions older than {retention_days} days from {}",
        location.describe()
    );
    Ok(())
}
