//! What a Zeek connection runs over: TLS or plain TCP, chosen by its first byte.
//!
//! The connecting side always speaks first (spec `zeek-broker.md` §10.2): a TLS ClientHello
//! starts with `0x16`, a Broker HELLO frame with `00 00 00 17`. TLS is anonymous ECDH by
//! default (`AECDH-AES256-SHA@SECLEVEL=0`, TLS 1.2, P-384, no certificates: what Zeek does
//! unless it is given certificates) or certificate-based with verification of both sides.
//! rustls has no anonymous suites, hence OpenSSL here.

use std::pin::Pin;

use openssl::error::ErrorStack;
use openssl::ssl::{Ssl, SslContext, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
use thiserror::Error;
use threatbus_core::config::ConfigError;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::{KEY, ZeekConfig};

/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

/// The one cipher suite of Zeek's anonymous mode.
const ANONYMOUS_CIPHERS: &str = "AECDH-AES256-SHA@SECLEVEL=0";

/// Broker's cipher list for certificate mode.
const CERTIFICATE_CIPHERS: &str = "HIGH:!aNULL:!MD5";

/// A byte stream to a peer, TLS or not.
pub trait PeerIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PeerIo for T {}

/// Why an accepted connection got neither TLS nor plain TCP.
#[derive(Debug, Error)]
pub enum AcceptError {
    /// Closed before its first byte (a port check, say).
    #[error("closed before sending anything")]
    ClosedBeforeSending,
    /// Plain TCP, which `allow_plain: false` refuses.
    #[error("a plain TCP connection, but allow_plain is false")]
    PlainNotAllowed,
    /// Waiting for the first byte failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// OpenSSL could not set up the connection's TLS state.
    #[error(transparent)]
    TlsSetup(#[from] ErrorStack),
    /// The TLS handshake with the peer failed.
    #[error("TLS handshake failed")]
    TlsHandshake(#[source] openssl::ssl::Error),
}

/// How connections are secured, prepared once.
pub struct Transport {
    tls: SslContext,
    certificate_mode: bool,
    allow_plain: bool,
}

/// How a connection ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    AnonymousTls,
    CertificateTls,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain => "plain TCP",
            Self::AnonymousTls => "anonymous TLS",
            Self::CertificateTls => "TLS with certificates",
        })
    }
}

impl Transport {
    /// Prepares the TLS settings; fails (naming the key) if a configured file is unusable.
    pub fn new(config: &ZeekConfig) -> Result<Self, ConfigError> {
        let setup = |what: &str, err: openssl::error::ErrorStack| {
            ConfigError::new(format!("{KEY}.tls"), format!("{what}: {err}"))
        };
        let mut builder = SslContext::builder(SslMethod::tls_server())
            .map_err(|err| setup("OpenSSL setup failed", err))?;
        builder
            .set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(|err| setup("OpenSSL setup failed", err))?;
        let certificate_mode = config.tls.is_some();
        match &config.tls {
            None => {
                builder
                    .set_max_proto_version(Some(SslVersion::TLS1_2))
                    .and_then(|()| builder.set_cipher_list(ANONYMOUS_CIPHERS))
                    .and_then(|()| builder.set_groups_list("P-384"))
                    .map_err(|err| setup("anonymous TLS is not available", err))?;
                builder.set_verify(SslVerifyMode::NONE);
            }
            Some(files) => {
                let file_error = |key: &str, path: &std::path::Path, err| {
                    ConfigError::new(
                        format!("{KEY}.tls.{key}"),
                        format!("cannot use {}: {err}", path.display()),
                    )
                };
                builder
                    .set_certificate_chain_file(&files.cert_file)
                    .map_err(|err| file_error("cert_file", &files.cert_file, err))?;
                builder
                    .set_private_key_file(&files.key_file, SslFiletype::PEM)
                    .map_err(|err| file_error("key_file", &files.key_file, err))?;
                builder
                    .check_private_key()
                    .map_err(|err| file_error("key_file", &files.key_file, err))?;
                builder
                    .set_ca_file(&files.ca_file)
                    .map_err(|err| file_error("ca_file", &files.ca_file, err))?;
                builder
                    .set_cipher_list(CERTIFICATE_CIPHERS)
                    .map_err(|err| setup("OpenSSL setup failed", err))?;
                builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
            }
        }
        Ok(Self {
            tls: builder.build(),
            certificate_mode,
            allow_plain: config.allow_plain,
        })
    }

    /// Sets up TLS or plain TCP on an accepted connection, by its first byte.
    pub async fn accept(&self, stream: TcpStream) -> Result<(Box<dyn PeerIo>, Kind), AcceptError> {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await? == 0 {
            return Err(AcceptError::ClosedBeforeSending);
        }
        if first[0] != TLS_HANDSHAKE {
            if !self.allow_plain {
                return Err(AcceptError::PlainNotAllowed);
            }
            return Ok((Box::new(stream), Kind::Plain));
        }
        let ssl = Ssl::new(&self.tls)?;
        let mut tls = SslStream::new(ssl, stream)?;
        Pin::new(&mut tls)
            .accept()
            .await
            .map_err(AcceptError::TlsHandshake)?;
        let kind = if self.certificate_mode {
            Kind::CertificateTls
        } else {
            Kind::AnonymousTls
        };
        Ok((Box::new(tls), kind))
    }
}
