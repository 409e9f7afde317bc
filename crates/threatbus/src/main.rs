//! `threatbus`: the command-line entry point. Loads the configuration, builds every plugin
//! (so that every config error surfaces before any socket is bound), sets up logging, then runs
//! the bus until SIGINT or SIGTERM.

mod config;
mod logging;
mod registry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use threatbus_core::Bus;
use threatbus_core::config::ConfigError;
use tokio_util::sync::CancellationToken;

/// Threat Bus: a pub/sub broker for STIX 2.1 threat intelligence.
///
/// Without --config, reads config.yaml or config.yml from the working directory; if neither
/// exists, runs the embedded default (in-memory backbone, ZeroMQ app on 127.0.0.1:13370-13372).
/// Environment variables THREATBUS_<SECTION>__<KEY>=value override any setting.
#[derive(Debug, Parser)]
#[command(name = "threatbus", version)]
struct Cli {
    /// Path to the configuration file (must end in `yaml` or `yml`).
    #[arg(short, long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn report_config_errors(errors: &[ConfigError]) {
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
    let config = match config::load(cli.config.as_deref(), env) {
        Ok(config) => config,
        Err(errors) => {
            report_config_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    let plugins = match registry::build(&config) {
        Ok(plugins) => plugins,
        Err(errors) => {
            report_config_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    if let Err(err) = logging::init(&config.logging) {
        eprintln!("threatbus: {err:#}");
        return ExitCode::FAILURE;
    }
    match &config.source {
        config::Source::File(path) => {
            tracing::info!(path = %path.display(), "loaded configuration")
        }
        config::Source::Embedded => tracing::info!(
            "no config.yaml or config.yml in the working directory: running the embedded default (in-memory backbone, ZeroMQ app on 127.0.0.1 ports 13370/13371/13372)"
        ),
    }
    for key in &config.ignored_keys {
        tracing::warn!(key, "ignoring unknown top-level configuration key");
    }
    for note in &plugins.notes {
        tracing::info!("{note}");
    }
    let console = config.logging.console;
    match run(config, plugins) {
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

fn run(config: config::Config, plugins: registry::Plugins) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("threatbus")
        .build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        watch_signals(shutdown.clone())?;
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "Threat Bus starting");
        let bus = Bus::new(config.bus, plugins.backbone, plugins.apps);
        bus.run(shutdown).await?;
        tracing::info!("Threat Bus stopped");
        Ok(())
    })
}

/// SIGINT or SIGTERM starts a graceful shutdown; a second one exits at once.
fn watch_signals(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        let mut received = 0;
        loop {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
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
