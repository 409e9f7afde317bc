//! Opening AMQP connections: address resolution, optional TLS with our own rustls settings,
//! heartbeat and connect timeout; and the backoff between attempts.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Channel, Connection, ConnectionProperties, Event};
pub use threatbus_net::Backoff;
use threatbus_net::tls::TlsSettings;
use tokio_stream::Stream;

use crate::config::{RabbitMqConfig, TlsConfig};
use crate::error::RabbitMqError;

/// How long closing a connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection's events (errors, blocked and unblocked publishing).
pub type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// An open connection with one channel, prepared for its work.
pub struct Opened<T> {
    pub connection: Connection,
    pub channel: Channel,
    pub events: Events,
    /// What preparing the channel produced.
    pub prepared: T,
}

/// Closes a connection (and with it its channels), giving up after [`CLOSE_TIMEOUT`].
pub async fn close(connection: &Connection, role: &str) {
    let closing = connection.close(200, "OK".into());
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        tracing::debug!("closing the {role} connection timed out");
    }
}

/// Everything needed to open a connection, prepared once (reading CA files and the system
/// trust store costs milliseconds; a reused TLS connector can also resume sessions).
#[derive(Clone)]
pub struct Connector {
    uri: AMQPUri,
    tls: Option<RustlsConnector>,
    timeout: Duration,
    /// `host:port` for messages.
    endpoint: String,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("endpoint", &self.endpoint)
            .field("vhost", &self.uri.vhost)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Prepares connections as configured; fails if the TLS files cannot be used.
    pub fn new(config: &RabbitMqConfig) -> Result<Self, RabbitMqError> {
        let tls = if config.tls.enabled {
            Some(tls_connector(&config.tls)?)
        } else {
            None
        };
        let uri = AMQPUri {
            scheme: if tls.is_some() {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: config.username.clone(),
                    password: config.password.clone(),
                },
                host: config.host.clone(),
                port: config.port,
            },
            vhost: config.vhost.clone(),
            query: AMQPQueryString {
                heartbeat: Some(config.heartbeat),
                ..AMQPQueryString::default()
            },
        };
        Ok(Self {
            uri,
            tls,
            timeout: config.connect_timeout,
            endpoint: config.endpoint(),
        })
    }

    /// `host:port` of the server.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Opens one connection; `name` shows in RabbitMQ's connection list.
    pub async fn connect(&self, name: &str) -> Result<Connection, RabbitMqError> {
        let context = format!("connecting to RabbitMQ at {}", self.endpoint);
        let attempt = async {
            let host = self.uri.authority.host.clone();
            let port = self.uri.authority.port;
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|err| RabbitMqError::from_lapin(&context, err.into()))?
                .collect();
            let tls = self.tls.clone();
            let runtime = lapin::runtime::default_runtime()
                .map_err(|err| RabbitMqError::from_lapin(&context, err))?;
            let properties =
                ConnectionProperties::default().with_connection_name(name.to_owned().into());
            Connection::connector(
                self.uri.clone(),
                runtime,
                async move |_uri, runtime| {
                    let stream = AsyncTcpStream::connect(&runtime, addresses.clone()).await?;
                    match &tls {
                        None => Ok(stream),
                        Some(connector) => Ok(stream.into_rustls(connector, &host).await?),
                    }
                },
                properties,
            )
            .await
            .map_err(|err| RabbitMqError::from_lapin(&context, err))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(RabbitMqError::Timeout {
                context,
                timeout: self.timeout,
            }),
        }
    }

    /// Opens a connection for `role` (`publisher` or `consumer`: it names the connection in
    /// RabbitMQ's list, with the queue) and a channel on it, and prepares the channel with
    /// `prepare` (declarations, confirms, consuming). If a step fails, the connection is
    /// closed again.
    pub async fn open<T>(
        &self,
        role: &str,
        queue: &str,
        prepare: impl AsyncFnOnce(&Channel) -> Result<T, RabbitMqError>,
    ) -> Result<Opened<T>, RabbitMqError> {
        let connection = self.connect(&format!("threatbus {role} ({queue})")).await?;
        let events: Events = Box::pin(connection.events_listener());
        let ready = async {
            let channel = connection.create_channel().await.map_err(|err| {
                RabbitMqError::from_lapin(format!("opening a {role} channel"), err)
            })?;
            let prepared = prepare(&channel).await?;
            Ok((channel, prepared))
        };
        match ready.await {
            Ok((channel, prepared)) => Ok(Opened {
                connection,
                channel,
                events,
                prepared,
            }),
            Err(err) => {
                close(&connection, role).await;
                Err(err)
            }
        }
    }
}

/// Builds the TLS client settings: trusted roots from `ca_file` or the system store, an
/// optional client certificate, and (only if asked) no server verification.
fn tls_connector(tls: &TlsConfig) -> Result<RustlsConnector, RabbitMqError> {
    if !tls.verify {
        tracing::warn!(
            "TLS certificate verification is off (tls.verify: false): the server is not authenticated"
        );
    }
    let client_auth = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        _ => None,
    };
    let settings = TlsSettings {
        verify: tls.verify,
        ca_file: tls.ca_file.as_deref(),
        client_auth,
    };
    let config = threatbus_net::tls::client_config(&settings).map_err(|err| {
        let key = match err.field {
            "ca_file" => "tls.ca_file",
            "cert_file" => "tls.cert_file",
            "key_file" => "tls.key_file",
            _ => "tls",
        };
        RabbitMqError::Tls {
            key,
            message: err.message,
        }
    })?;
    Ok(RustlsConnector::from(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_tls_files_are_named() {
        let tls = TlsConfig {
            enabled: true,
            ca_file: Some("/nonexistent/ca.pem".into()),
            verify: true,
            cert_file: None,
            key_file: None,
        };
        let err = tls_connector(&tls).unwrap_err().to_string();
        assert!(err.starts_with("tls.ca_file"), "{err}");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn unverified_tls_needs_no_roots() {
        let tls = TlsConfig {
            enabled: true,
            ca_file: None,
            verify: false,
            cert_file: None,
            key_file: None,
        };
        assert!(tls_connector(&tls).is_ok());
    }
}
