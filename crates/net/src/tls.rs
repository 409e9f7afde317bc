//! TLS settings (rustls with ring), one way for every plugin: client settings, and the
//! settings of a listener that serves TLS.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use thiserror::Error;

/// What to trust and how to authenticate.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsSettings<'a> {
    /// Check the server's certificate chain and that it names the host.
    pub verify: bool,
    /// PEM file with the certificate authorities to trust; `None`: the system's trust store.
    pub ca_file: Option<&'a Path>,
    /// PEM files with a client certificate chain and its private key.
    pub client_auth: Option<(&'a Path, &'a Path)>,
}

/// A TLS setting that cannot be used. `field` is the setting's key within the plugin's TLS
/// section (`ca_file`, `cert_file`, `key_file`, or `verify` for the trust store itself), so the
/// plugin can name the full config key.
#[derive(Debug, Error)]
#[error("{field}: {message}")]
pub struct TlsError {
    pub field: &'static str,
    pub message: String,
}

impl TlsError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Builds the settings of a TLS listener from a PEM certificate chain (the server's
/// certificate first) and its PEM private key; errors name `certificate` or `key`.
pub fn server_config(certificate: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let chain = read_certificates(certificate, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|err| {
        TlsError::new(
            "key",
            format!(
                "cannot read a PEM private key from {}: {err}",
                key.display()
            ),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::new("certificate", format!("TLS setup failed: {err}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| {
            TlsError::new(
                "key",
                format!("the key does not fit the certificate, or is not usable: {err}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Builds the rustls client settings. Without verification the connection is encrypted but
/// the server is not authenticated; a warning says so.
pub fn client_config(settings: &TlsSettings<'_>) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::new("verify", format!("TLS setup failed: {err}")))?;
    let builder = if settings.verify {
        builder.with_root_certificates(roots(settings.ca_file)?)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    };
    match settings.client_auth {
        Some((cert, key)) => {
            let chain = read_certificates(cert, "cert_file")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|err| {
                TlsError::new(
                    "key_file",
                    format!("cannot read a private key from {}: {err}", key.display()),
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| TlsError::new("cert_file", format!("unusable with key_file: {err}")))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = read_certificates(path, "ca_file")?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsError::new(
                    "ca_file",
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
                return Err(TlsError::new(
                    "ca_file",
                    "not set, and the system's trust store has no CA certificates",
                ));
            }
        }
    }
    Ok(roots)
}

fn read_certificates(
    path: &Path,
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |err: &dyn std::fmt::Display| {
        TlsError::new(
            field,
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

/// Accepts any server certificate (verification turned off) but still checks the handshake
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_files_are_named() {
        let settings = TlsSettings {
            verify: true,
            ca_file: Some(Path::new("/nonexistent/ca.pem")),
            client_auth: None,
        };
        let err = client_config(&settings).unwrap_err();
        assert_eq!(err.field, "ca_file");
        assert!(err.message.contains("/nonexistent/ca.pem"), "{err}");
        let settings = TlsSettings {
            verify: false,
            ca_file: None,
            client_auth: Some((Path::new("/nonexistent/c.pem"), Path::new("/k.pem"))),
        };
        assert_eq!(client_config(&settings).unwrap_err().field, "cert_file");
    }

    #[test]
    fn unverified_tls_needs_no_roots() {
        assert!(client_config(&TlsSettings::default()).is_ok());
    }
}
