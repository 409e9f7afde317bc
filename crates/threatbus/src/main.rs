//! `threatbus`: the command-line entry point. Loads the configuration, builds every plugin
//! (so that every config error surfaces before any socket is bound), sets up logging, then runs
//! the bus until SIGINT, SIGTERM or another terminating signal (SIGHUP reopens the log file). Subcommands: `check` validates a configuration, `publish`
//! and `tail` talk to a running bus through its ZeroMQ app.

#![forbid(unsafe_code)]

mod check;
mod config;
mod logging;
mod metrics_http;
mod registry;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use threatbus_core::Bus;
use threatbus_core::config::ConfigError;
use tokio_util::sync::CancellationToken;

/// Threat Bus: a pub/sub broker for STIX 2.1 threat intelligence.
///
/// Without a subcommand, runs the bus. Without --config, reads config.yaml or config.yml from
/// the working directory; if neither exists, runs the embedded default (in-memory backbone,
/// ZeroMQ app on 127.0.0.1:13370-13372). Environment variables THREATBUS_<SECTION>__<KEY>=value
/// override any setting, e.g. THREATBUS_PLUGINS__APPS__ZMQ__HOST=0.0.0.0.
#[derive(Debug, Parser)]
#[command(name = "threatbus", version, after_help = AFTER_HELP)]
struct Cli {
    /// Path to the configuration file (must end in `yaml` or `yml`).
    #[arg(short, long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

const AFTER_HELP: &str = "Examples:
  threatbus                               run with ./config.yaml (or the embedded default)
  threatbus -c /etc/threatbus/config.yaml run with that file
  threatbus check -c config.yaml          validate, print the effective config (secrets masked)
  threatbus tail stix2/indicator          print what a running bus publishes on a topic
  threatbus publish indicators.json       publish STIX objects through a running bus
  threatbus store stats                   what the intel store holds

Documentation: README.md and docs/ (configuration.md, deploy.md, metrics.md, tools.md).";

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the bus (what `threatbus` does without a subcommand).
    Run,
    /// Load and validate the whole configuration (every plugin section, environment overrides
    /// applied) without binding anything; print the effective configuration with secrets
    /// masked. Exits 0 if it is valid, 1 with every error listed if not.
    Check,
    /// Publish STIX 2.1 indicators and sightings (JSON objects, one per line or concatenated,
    /// arrays or bundles) from a file or standard input through a running bus's ZeroMQ app.
    Publish(tools::PublishArgs),
    /// Subscribe to a topic of a running bus through its ZeroMQ app (optionally with a
    /// snapshot) and print every object that arrives, one JSON object per line.
    Tail(tools::TailArgs),
    /// Work on the intel store the configuration names: stats, export, import, prune.
    Store(tools::store::StoreArgs),
}

pub(crate) fn report_config_errors(errors: &[ConfigError]) {
    eprintln!("threatbus: invalid config:");
    for error in errors {
        eprintln!("  {error}");
    }
}

/// mimalloc: the hot path frees on another thread than it allocates (a message is decoded on
/// the intake thread and dropped after the last subscriber wrote it), where glibc's arenas
/// contend on a lock. See docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Like upstream, a `.env` file in the working directory provides environment variables
    // (without overriding ones already set).
    let _ = dotenvy::dotenv();
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    match cli.command {
        None | Some(Command::Run) => {}
        Some(Command::Check) => return check::run(cli.config.as_deref(), env),
        Some(Command::Publish(args)) => return tools::publish(cli.config.as_deref(), env, &args),
        Some(Command::Tail(args)) => return tools::tail(cli.config.as_deref(), env, &args),
        Some(Command::Store(args)) => {
            return tools::store::run(cli.config.as_deref(), env, &args);
        }
    }
    let (config, plugins) = match registry::load_and_build(cli.config.as_deref(), env) {
        Ok(loaded) => loaded,
        Err(errors) => {
            report_config_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    let log_file = match logging::init(&config.logging) {
        Ok(log_file) => log_file,
        Err(err) => {
            eprintln!("threatbus: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    match &config.source {
        config::Source::File(path) => {
            tracing::info!(path = %path.display(), "loaded configuration")
        }
        config::Source::Embedded => tracing::info!(
            "no config.yaml or config.yml in the working directory: running the embedded default (in-memory backbone, ZeroMQ app on 127.0.0.1 ports 13370/13371/13372, store in ./threatbus-store)"
        ),
    }
    for key in &config.ignored_keys {
        tracing::warn!(key, "ignoring unknown top-level configuration key");
    }
    for note in &plugins.notes {
        tracing::info!("{note}");
    }
    let console = config.logging.console;
    match run(config, plugins, log_file) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            if !console {
                eprintln!("threatbus: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(
    config: config::Config,
    plugins: registry::Plugins,
    log_file: Option<logging::LogFile>,
) -> anyhow::Result<()> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "Threat Bus starting");
    // The store opens before anything binds (a store that cannot be used stops the start), and
    // outside the runtime: the PostgreSQL client runs its own.
    let store = config
        .store
        .map(threatbus_store::StoreService::open)
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("threatbus")
        .build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        watch_signals(shutdown.clone(), OnHangup::ReopenLog(log_file))?;
        let mut bus = Bus::new(config.bus, plugins.backbone, plugins.apps);
        if let Some(store) = store {
            bus.set_catch_up(store.catch_up());
            bus.add_service(Box::new(store));
        }
        if let Some(listen) = config.metrics.listen {
            bus.add_service(Box::new(metrics_http::MetricsService { listen }));
        }
        let stop_summary = CancellationToken::new();
        let summary = tokio::spawn(logging::summarize(
            bus.metrics(),
            config.logging.summary_interval,
            stop_summary.clone(),
        ));
        let result = bus.run(shutdown).await;
        stop_summary.cancel();
        let _ = summary.await;
        result?;
        tracing::info!("Threat Bus stopped");
        Ok(())
    })
}

/// Signals that end the process by default and can be caught: each starts the same graceful
/// shutdown as SIGTERM (logged with its name), so that no stray signal kills the bus without a
/// drain. SIGHUP is not among them: it reopens the log file (log rotation).
const STOPPING_SIGNALS: &[(libc::c_int, &str)] = &[
    (libc::SIGINT, "SIGINT"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGPWR, "SIGPWR"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
    (libc::SIGSTKFLT, "SIGSTKFLT"),
];

/// What SIGHUP does.
pub(crate) enum OnHangup {
    /// The bus: reopen the log file, if there is one (log rotation).
    ReopenLog(Option<logging::LogFile>),
    /// A tool in a terminal that went away: stop like on SIGTERM.
    Stop,
}

/// Every signal of [`STOPPING_SIGNALS`] starts a graceful shutdown; a second one exits at once.
/// SIGHUP does what `on_hangup` says.
pub(crate) fn watch_signals(
    shutdown: CancellationToken,
    on_hangup: OnHangup,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    for &(number, name) in STOPPING_SIGNALS.iter().chain([&(libc::SIGHUP, "SIGHUP")]) {
        let mut stream = signal(SignalKind::from_raw(number))
            .map_err(|err| anyhow::anyhow!("cannot handle {name}: {err}"))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(name).is_err() {
                    return;
                }
            }
        });
    }
    tokio::spawn(async move {
        let mut received = 0;
        while let Some(name) = rx.recv().await {
            if let ("SIGHUP", OnHangup::ReopenLog(log_file)) = (name, &on_hangup) {
                match log_file.as_ref().map(logging::LogFile::reopen) {
                    Some(Ok(path)) => {
                        tracing::info!(signal = name, path = %path.display(), "reopened the log file")
                    }
                    Some(Err(err)) => tracing::error!(
                        signal = name,
                        error = %err,
                        "cannot reopen the log file; still writing to the old one"
                    ),
                    None => tracing::info!(
                        signal = name,
                        "no log file to reopen (logging.file is false); nothing to do"
                    ),
                }
                continue;
            }
            received += 1;
            if received == 1 {
                tracing::info!(
                    signal = name,
                    "stopping gracefully (send again to exit at once)"
                );
                shutdown.cancel();
            } else {
                tracing::warn!(signal = name, "second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}
