//! Opening AMQP connections: address resolution, optional TLS with our own rustls settings,
//! heartbeat and connect timeout; and the backoff between attempts.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Channel, Connection, ConnectionProperties, Event};
use rand::Rng;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_stream::Stream;

use crate::config::{RabbitMqConfig, ReconnectConfig, TlsConfig};
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| tls_error("tls", format!("TLS setup failed: {err}")))?;
    let builder = if tls.verify {
        let mut roots = RootCertStore::empty();
        match &tls.ca_file {
            Some(path) => {
                let certs = read_certificates(path, "tls.ca_file")?;
                let (added, _ignored) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(tls_error(
                        "tls.ca_file",
                        format!("{} holds no usable CA certificate", path.display()),
                    ));
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                for err in &native.errors {
                    tracing::warn!(error = %err, "could not read part of the system's trust store");
                }
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    return Err(tls_error(
                        "tls.ca_file",
                        "not set, and the system's trust store has no CA certificates".into(),
                    ));
                }
            }
        }
        builder.with_root_certificates(roots)
    } else {
        tracing::warn!(
            "TLS certificate verification is off (tls.verify: false): the server is not authenticated"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    };
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certificates(cert, "tls.cert_file")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|err| {
                tls_error(
                    "tls.key_file",
                    format!("cannot read a private key from {}: {err}", key.display()),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|err| {
                tls_error(
                    "tls.cert_file",
                    format!("unusable with tls.key_file: {err}"),
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(RustlsConnector::from(config))
}

fn tls_error(key: &'static str, message: String) -> RabbitMqError {
    RabbitMqError::Tls { key, message }
}

fn read_certificates(
    path: &std::path::Path,
    key: &'static str,
) -> Result<Vec<CertificateDer<'static>>, RabbitMqError> {
    let bad = |err: &dyn std::fmt::Display| {
        tls_error(
            key,
            format!(
                "cannot read PEM certificates from {}: {err}",
                path.display()
            ),
        )
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| bad(&err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| bad(&err))?;
    if certs.is_empty() {
        return Err(bad(&"no certificate found"));
    }
    Ok(certs)
}

/// Accepts any server certificate (`tls.verify: false`) but still checks the handshake
/// signatures, so the connection is encrypted, just not authenticated.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Capped exponential backoff with jitter: `min_delay`, doubling per failure up to
/// `max_delay`, each wait shortened by up to 20 % at random.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(config: &ReconnectConfig) -> Self {
        Self {
            min: config.min_delay,
            max: config.max_delay,
            next: config.min_delay,
        }
    }

    /// The wait before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::rng().random_range(0.8..=1.0);
        delay.mul_f64(jitter)
    }

    /// Back to `min_delay` after a connection that worked.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(&ReconnectConfig {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        });
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay()).collect();
        let upper = [100, 200, 400, 500, 500];
        for (delay, upper) in delays.iter().zip(upper) {
            let upper = Duration::from_millis(upper);
            assert!(
                *delay <= upper && *delay >= upper.mul_f64(0.8),
                "{delays:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

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
