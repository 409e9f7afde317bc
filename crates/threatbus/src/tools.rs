//! The operator tools `threatbus publish` and `threatbus tail`, clients of a running bus's
//! ZeroMQ app, and `threatbus store`, which works on the intel store (see docs/tools.md and
//! docs/store.md).
//!
//! Where the bus is: `--host`, `--manage` and `--sub`; without them the values of the
//! `plugins.apps.zmq` section of the file given with `-c` (a wildcard bind address such as
//! `0.0.0.0` becomes the loopback address), else 127.0.0.1, 13370 and 13372.

mod input;
#[cfg(feature = "zmq")]
mod publish;
pub mod store;
#[cfg(feature = "zmq")]
mod tail;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `threatbus publish`.
#[derive(Debug, clap::Args)]
#[command(after_help = PUBLISH_HELP)]
pub struct PublishArgs {
    /// File with the STIX objects; `-` or none reads standard input. JSON values one after
    /// another (one per line, concatenated or pretty-printed): each an Indicator or Sighting,
    /// an array of them, or a STIX bundle.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Host of the bus [default: from -c, else 127.0.0.1].
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Port of the bus's sub socket, where apps publish [default: from -c, else 13372].
    #[arg(long, value_name = "PORT")]
    pub sub: Option<u16>,
    /// Seconds to wait for the bus to take the connection, and for room to send.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Skip objects of other STIX types (identities, relationships, … in a bundle) instead of
    /// refusing the input; the bus carries only Indicators and Sightings.
    #[arg(long)]
    pub skip_other_types: bool,
    /// Only read and validate the input; publish nothing.
    #[arg(long)]
    pub dry_run: bool,
}

const PUBLISH_HELP: &str =
    "Every object is validated as the bus validates it before anything is sent; \
if any is invalid, every problem is listed and nothing is published (exit status 1).

Examples:
  threatbus publish indicators.ndjson
  threatbus publish --host 10.0.0.5 --sub 13372 bundle.json
  echo '{\"type\": \"indicator\", …}' | threatbus publish
  threatbus -c config.yaml publish --dry-run export.json";

/// Arguments of `threatbus tail`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = TAIL_HELP)]
pub struct TailArgs {
    /// The topic to subscribe to (prefix match): `stix2` (Indicators and Sightings),
    /// `stix2/indicator`, `stix2/sighting`; `""` for everything.
    #[arg(value_name = "TOPIC", default_value = "stix2")]
    pub topic: String,
    /// Host of the bus [default: from -c, else 127.0.0.1].
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Port of the bus's manage socket [default: from -c, else 13370].
    #[arg(long, value_name = "PORT")]
    pub manage: Option<u16>,
    /// Ask the apps that keep history (other ZeroMQ apps, MISP) for this many days of it.
    #[arg(long, value_name = "DAYS", default_value_t = 0)]
    pub snapshot: u32,
    /// Exit after printing this many objects.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Exit when no object has arrived for this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub idle: Option<Duration>,
    /// Seconds to wait for a reply from the manage socket and for the connection to the pub
    /// socket.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Seconds between heartbeats (0: none), which keep the subscription alive on a bus with
    /// `subscription_timeout` [default: 5, or less if -c has a shorter subscription_timeout].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub heartbeat: Option<Duration>,
}

const TAIL_HELP: &str =
    "Standard output carries only the objects, one JSON object per line, exactly as \
the bus sent them; status lines go to standard error. Stops on SIGINT or SIGTERM (or after \
--count / --idle), unsubscribes and exits 0.

Examples:
  threatbus tail
  threatbus tail stix2/sighting --snapshot 30
  threatbus tail stix2/indicator --count 10 | jq -r .pattern
  threatbus -c config.yaml tail --idle 60 > feed.ndjson";

/// A number of seconds, fractions allowed.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of seconds, got {text:?}"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("expected a number of seconds, got {text:?}"))
}

/// A number of seconds greater than zero.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_seconds(text)? {
        Duration::ZERO => Err("must be more than 0 seconds".into()),
        duration => Ok(duration),
    }
}

/// Where the bus is.
#[cfg_attr(not(feature = "zmq"), allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Eq)]
struct BusAddress {
    host: String,
    manage: u16,
    sub: u16,
    /// `subscription_timeout` of the config given with -c.
    subscription_timeout: Option<Duration>,
}

#[cfg_attr(not(feature = "zmq"), allow(dead_code))]
impl BusAddress {
    const DEFAULT_HOST: &str = "127.0.0.1";
    const DEFAULT_MANAGE: u16 = 13370;
    const DEFAULT_SUB: u16 = 13372;
}

/// The bus address: flags, else the config given with -c, else the defaults. Config errors are
/// printed.
#[cfg(feature = "zmq")]
fn resolve(
    config: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    host: Option<&str>,
    manage: Option<u16>,
    sub: Option<u16>,
) -> Result<BusAddress, ExitCode> {
    let from_config = match config {
        None => None,
        Some(path) => Some(zmq_section(path, env).map_err(|errors| {
            crate::report_config_errors(&errors);
            ExitCode::FAILURE
        })?),
    };
    let address = match from_config {
        Some(zmq) => BusAddress {
            host: connectable(&zmq.host),
            manage: zmq.manage,
            sub: zmq.sub_port,
            subscription_timeout: zmq.subscription_timeout.map(Duration::from_secs),
        },
        None => BusAddress {
            host: BusAddress::DEFAULT_HOST.into(),
            manage: BusAddress::DEFAULT_MANAGE,
            sub: BusAddress::DEFAULT_SUB,
            subscription_timeout: None,
        },
    };
    Ok(BusAddress {
        host: host.map_or(address.host, str::to_owned),
        manage: manage.unwrap_or(address.manage),
        sub: sub.unwrap_or(address.sub),
        ..address
    })
}

/// The `plugins.apps.zmq` section of the config file, validated.
#[cfg(feature = "zmq")]
fn zmq_section(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<threatbus_zmq::ZmqConfig, Vec<threatbus_core::config::ConfigError>> {
    use threatbus_core::config::ConfigError;
    let config = crate::config::load(Some(path), env)?;
    let (_, section) = config
        .apps
        .iter()
        .find(|(name, _)| name == "zmq")
        .ok_or_else(|| {
            vec![ConfigError::new(
                "plugins.apps.zmq",
                format!(
                    "not configured in {}: publish and tail talk to the bus's ZeroMQ app",
                    path.display()
                ),
            )]
        })?;
    threatbus_zmq::ZmqConfig::from_section(section).map_err(|e| vec![e])
}

/// The address to connect to for a bind address: a wildcard means this machine.
#[cfg_attr(not(feature = "zmq"), allow(dead_code))]
fn connectable(bind: &str) -> String {
    match bind.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) if ip.is_unspecified() => "127.0.0.1".into(),
        Ok(std::net::IpAddr::V6(ip)) if ip.is_unspecified() => "::1".into(),
        _ if bind == "*" => "127.0.0.1".into(),
        _ => bind.to_owned(),
    }
}

/// Runs `threatbus publish`.
#[cfg(feature = "zmq")]
pub fn publish(
    config: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    args: &PublishArgs,
) -> ExitCode {
    resolve(config, env, args.host.as_deref(), None, args.sub)
        .map_or_else(|code| code, |address| publish::run(&address, args))
}

/// Runs `threatbus tail`.
#[cfg(feature = "zmq")]
pub fn tail(
    config: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    args: &TailArgs,
) -> ExitCode {
    resolve(config, env, args.host.as_deref(), args.manage, None)
        .map_or_else(|code| code, |address| tail::run(&address, args))
}

#[cfg(not(feature = "zmq"))]
pub fn publish(_: Option<&Path>, _: impl IntoIterator, _: &PublishArgs) -> ExitCode {
    without_zmq("publish")
}

#[cfg(not(feature = "zmq"))]
pub fn tail(_: Option<&Path>, _: impl IntoIterator, _: &TailArgs) -> ExitCode {
    without_zmq("tail")
}

#[cfg(not(feature = "zmq"))]
fn without_zmq(tool: &str) -> ExitCode {
    eprintln!("threatbus {tool}: this binary was built without the zmq feature");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_timeouts() {
        assert_eq!(parse_seconds("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").is_err());
        assert!(parse_seconds("inf").is_err());
        assert!(parse_timeout("0").is_err());
        assert_eq!(parse_timeout("1.5"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn wildcard_bind_addresses_mean_this_machine() {
        assert_eq!(connectable("0.0.0.0"), "127.0.0.1");
        assert_eq!(connectable("::"), "::1");
        assert_eq!(connectable("0:0:0:0:0:0:0:0"), "::1");
        assert_eq!(connectable("*"), "127.0.0.1");
        assert_eq!(connectable("10.1.2.3"), "10.1.2.3");
        assert_eq!(connectable("bus.example.org"), "bus.example.org");
    }

    #[cfg(feature = "zmq")]
    #[test]
    fn flags_win_over_the_config_which_wins_over_the_defaults() {
        let dir = std::env::temp_dir().join(format!("threatbus-tools-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(
            &path,
            "plugins:\n  backbones:\n    inmem: {}\n  apps:\n    zmq:\n      host: 0.0.0.0\n      manage: 1\n      pub: 2\n      sub: 3\n      subscription_timeout: 4\n",
        )
        .unwrap();
        let none = Vec::<(String, String)>::new;
        let defaults = resolve(None, none(), None, None, None).unwrap();
        assert_eq!(
            defaults,
            BusAddress {
                host: "127.0.0.1".into(),
                manage: 13370,
                sub: 13372,
                subscription_timeout: None
            }
        );
        let from_file = resolve(Some(&path), none(), None, None, None).unwrap();
        assert_eq!(
            from_file,
            BusAddress {
                host: "127.0.0.1".into(),
                manage: 1,
                sub: 3,
                subscription_timeout: Some(Duration::from_secs(4))
            }
        );
        let flags = resolve(Some(&path), none(), Some("::1"), Some(7), Some(8)).unwrap();
        assert_eq!(
            (flags.host.as_str(), flags.manage, flags.sub),
            ("::1", 7, 8)
        );
        let env = vec![(
            "THREATBUS_PLUGINS__APPS__ZMQ__MANAGE".to_owned(),
            "9".to_owned(),
        )];
        assert_eq!(
            resolve(Some(&path), env, None, None, None).unwrap().manage,
            9
        );

        std::fs::write(
            &path,
            "plugins:\n  backbones:\n    inmem: {}\n  apps:\n    zmq:\n      host: 127.0.0.1\n",
        )
        .unwrap();
        assert!(resolve(Some(&path), none(), None, None, None).is_err());
        let errors = zmq_section(&path, none()).unwrap_err();
        assert!(errors[0].to_string().contains("manage"), "{errors:?}");
        std::fs::write(
            &path,
            "plugins:\n  backbones:\n    inmem: {}\n  apps:\n    misp: {}\n",
        )
        .unwrap();
        let errors = zmq_section(&path, none()).unwrap_err();
        assert!(
            errors[0].to_string().contains("not configured"),
            "{errors:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
