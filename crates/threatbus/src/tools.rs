//! The operator tools `threatbus publish` and `threatbus tail`: clients of a running bus's
//! ZeroMQ app (work in progress).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `threatbus publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// File with the STIX objects; `-` or none reads standard input.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// Arguments of `threatbus tail`.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The topic to subscribe to (prefix match), e.g. `stix2/indicator`.
    #[arg(value_name = "TOPIC", default_value = "stix2")]
    pub topic: String,
}

/// Runs `threatbus publish`.
pub fn publish(
    _config: Option<&Path>,
    _env: impl IntoIterator<Item = (String, String)>,
    _args: &PublishArgs,
) -> ExitCode {
    eprintln!("threatbus publish: not built yet");
    ExitCode::FAILURE
}

/// Runs `threatbus tail`.
pub fn tail(
    _config: Option<&Path>,
    _env: impl IntoIterator<Item = (String, String)>,
    _args: &TailArgs,
) -> ExitCode {
    eprintln!("threatbus tail: not built yet");
    ExitCode::FAILURE
}
