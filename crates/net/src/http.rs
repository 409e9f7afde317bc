//! A small HTTP/1.1 client for the REST APIs plugins call (MISP, CIFv3).
//!
//! One client talks to one base URL (`http://` or `https://host[:port][/prefix]`) over one
//! kept-alive connection, opened on first use and again whenever the server closed it. Each
//! request, from connecting to the last byte of the answer, has a deadline, and an answer
//! larger than the configured cap is refused instead of filling memory. Requests are sent one
//! at a time (a plugin that needs parallel calls makes several clients).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Scheme, Uri};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::tls::{self, TlsError, TlsSettings};

/// The client cannot be set up from its settings.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error("{url:?} is not a usable URL: {reason}")]
    Url { url: String, reason: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A default header whose value cannot be sent.
#[derive(Debug, Error)]
#[error("the value for the {name} header is not a valid header value")]
pub struct HeaderError {
    pub name: &'static str,
}

/// A request that did not get an answer.
#[derive(Debug, Error)]
pub enum HttpError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {address} failed: {source}")]
    Tls {
        address: String,
        source: std::io::Error,
    },
    #[error("HTTP exchange with {address} failed: {source}")]
    Exchange {
        address: String,
        source: hyper::Error,
    },
    #[error("no complete answer from {address} within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("the answer from {address} is larger than {limit} bytes")]
    TooLarge { address: String, limit: usize },
    #[error("invalid request: {0}")]
    Request(String),
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// A header's value as text, if present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The start of the body as text, for log lines.
    pub fn preview(&self, max: usize) -> String {
        let end = self.body.len().min(max);
        let mut text = String::from_utf8_lossy(&self.body[..end]).into_owned();
        if self.body.len() > max {
            text.push('…');
        }
        text
    }
}

/// Limits of a client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deadline of one request, from connecting to the last byte of the answer.
    pub timeout: Duration,
    /// The largest answer body accepted.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_body: 64 << 20,
        }
    }
}

/// A client for one base URL.
pub struct HttpClient {
    host: String,
    port: u16,
    /// `host[:port]` as the URL spelled it, for the `Host` header.
    authority: HeaderValue,
    /// The URL's path without a trailing `/`; request paths are appended to it.
    base_path: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    limits: Limits,
    /// Headers sent with every request.
    headers: Vec<(http::HeaderName, HeaderValue)>,
    connection: Option<SendRequest<Full<Bytes>>>,
}

impl HttpClient {
    /// A client for `base_url`; `tls` applies to `https://` URLs only.
    pub fn new(base_url: &str, tls: &TlsSettings<'_>, limits: Limits) -> Result<Self, SetupError> {
        let bad = |reason: &str| SetupError::Url {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = base_url
            .trim()
            .parse()
            .map_err(|err: http::uri::InvalidUri| {
                bad(&format!("{err} (expected e.g. https://misp.example.org)"))
            })?;
        let secure = match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTPS => true,
            Some(scheme) if *scheme == Scheme::HTTP => false,
            Some(_) => return Err(bad("the scheme must be http or https")),
            None => return Err(bad("no scheme: write http://… or https://…")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user names and passwords do not belong in the URL"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = authority
            .port_u16()
            .unwrap_or(if secure { 443 } else { 80 });
        if uri.query().is_some() {
            return Err(bad("a query string does not belong in the base URL"));
        }
        let tls = if secure {
            let config = tls::client_config(tls)?;
            let name = ServerName::try_from(host.clone())
                .map_err(|err| bad(&format!("the host is not a valid TLS server name: {err}")))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self {
            authority: HeaderValue::from_str(authority.as_str())
                .map_err(|err| bad(&err.to_string()))?,
            host,
            port,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            tls,
            limits,
            headers: Vec::new(),
            connection: None,
        })
    }

    /// Sends `name: value` with every request. Fails for a value that cannot be a header
    /// (e.g. one with a line break).
    pub fn default_header(&mut self, name: &'static str, value: &str) -> Result<(), HeaderError> {
        let value = HeaderValue::from_str(value).map_err(|_| HeaderError { name })?;
        self.headers
            .push((http::HeaderName::from_static(name), value));
        Ok(())
    }

    /// `host:port`, for log lines.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The full URL of `path`, for log lines.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!(
            "{scheme}://{}{}{path}",
            self.authority.to_str().unwrap_or("?"),
            self.base_path
        )
    }

    /// Sends one request and reads the whole answer, whatever its status.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&'static str, &str)],
        body: Bytes,
    ) -> Result<Response, HttpError> {
        let timeout = self.limits.timeout;
        match tokio::time::timeout(timeout, self.exchange(method, path, headers, body)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => {
                self.connection = None;
                Err(err)
            }
            Err(_) => {
                self.connection = None;
                Err(HttpError::Timeout {
                    address: self.address(),
                    timeout,
                })
            }
        }
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&'static str, &str)],
        body: Bytes,
    ) -> Result<Response, HttpError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_path))
            .header(http::header::HOST, self.authority.clone())
            .header(http::header::CONTENT_LENGTH, body.len());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|err| HttpError::Request(err.to_string()))?;
        let address = self.address();
        let sender = self.ready_connection().await?;
        let answer = sender
            .send_request(request)
            .await
            .map_err(|source| HttpError::Exchange {
                address: address.clone(),
                source,
            })?;
        let status = answer.status();
        let headers = answer.headers().clone();
        let limit = self.limits.max_body;
        let body = Limited::new(answer.into_body(), limit)
            .collect()
            .await
            .map_err(|err| match err.downcast::<hyper::Error>() {
                Ok(source) => HttpError::Exchange {
                    address: address.clone(),
                    source: *source,
                },
                Err(err) if err.is::<LengthLimitError>() => HttpError::TooLarge {
                    address: address.clone(),
                    limit,
                },
                Err(err) => HttpError::Request(err.to_string()),
            })?
            .to_bytes();
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// The kept-alive connection if it is still usable, else a new one.
    async fn ready_connection(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, HttpError> {
        let usable = match self.connection.as_mut() {
            Some(sender) if !sender.is_closed() => sender.ready().await.is_ok(),
            _ => false,
        };
        if !usable {
            self.connection = Some(self.connect().await?);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| HttpError::Request("no connection".into()))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, HttpError> {
        let address = self.address();
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| HttpError::Connect {
                address: address.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let handshake_failed = |source| HttpError::Exchange {
            address: address.clone(),
            source,
        };
        match &self.tls {
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| HttpError::Tls {
                        address: address.clone(),
                        source,
                    })?;
                let (sender, connection) = http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(handshake_failed)?;
                tokio::spawn(drive(connection, address.clone()));
                Ok(sender)
            }
            None => {
                let (sender, connection) = http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(handshake_failed)?;
                tokio::spawn(drive(connection, address.clone()));
                Ok(sender)
            }
        }
    }
}

/// Runs a connection until it closes.
async fn drive(connection: impl std::future::Future<Output = hyper::Result<()>>, address: String) {
    if let Err(err) = connection.await {
        tracing::debug!(%address, error = %err, "HTTP connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn client(url: &str) -> Result<HttpClient, SetupError> {
        HttpClient::new(url, &TlsSettings::default(), Limits::default())
    }

    #[test]
    fn base_urls() {
        let plain = client("http://localhost:8080/misp/").unwrap();
        assert_eq!(plain.address(), "localhost:8080");
        assert_eq!(
            plain.url("/sightings/add"),
            "http://localhost:8080/misp/sightings/add"
        );
        let secure = client("https://[::1]").unwrap();
        assert_eq!(secure.address(), "::1:443");
        assert_eq!(secure.url("/ping"), "https://[::1]/ping");
        for (bad, why) in [
            ("localhost:5000", "scheme"),
            ("ftp://x", "http or https"),
            ("http://", "not a usable URL"),
            ("http://user:pw@host", "passwords"),
            ("http://host/?a=b", "query"),
            ("", "not a usable URL"),
        ] {
            let err = client(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    /// A one-shot server: reads one request (up to the end of its headers plus the announced
    /// body), answers `reply`, and hands back what it read.
    async fn serve_once(reply: &'static [u8]) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                let n = socket.read(&mut buffer).await.unwrap();
                seen.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&seen).to_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if seen.len() >= end + 4 + length {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            socket.write_all(reply).await.unwrap();
            seen
        });
        (url, task)
    }

    #[tokio::test]
    async fn sends_headers_and_body_and_reads_the_answer() {
        let (url, server) =
            serve_once(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 13\r\n\r\n{\"message\":1}")
                .await;
        let mut client = client(&format!("{url}/base")).unwrap();
        client.default_header("authorization", "KEY").unwrap();
        let answer = client
            .request(
                Method::POST,
                "/sightings/add",
                &[("content-type", "application/json")],
                Bytes::from_static(b"{\"id\":\"x\"}"),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert_eq!(&answer.body[..], b"{\"message\":1}");
        let request = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(
            request.starts_with("POST /base/sightings/add HTTP/1.1\r\n"),
            "{request}"
        );
        let lower = request.to_lowercase();
        assert!(lower.contains("authorization: key\r\n"), "{request}");
        assert!(
            lower.contains("content-type: application/json\r\n"),
            "{request}"
        );
        assert!(
            lower.contains(&format!("host: {}\r\n", &url[7..])),
            "{request}"
        );
        assert!(request.ends_with("\r\n\r\n{\"id\":\"x\"}"), "{request}");
    }

    #[tokio::test]
    async fn big_answers_and_silence_are_errors() {
        let (url, _server) = serve_once(
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789",
        )
        .await;
        let limits = Limits {
            timeout: Duration::from_secs(5),
            max_body: 10,
        };
        let mut small = HttpClient::new(&url, &TlsSettings::default(), limits).unwrap();
        let err = small
            .request(Method::GET, "/", &[], Bytes::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, HttpError::TooLarge { limit: 10, .. }),
            "{err}"
        );

        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let limits = Limits {
            timeout: Duration::from_millis(200),
            max_body: 10,
        };
        let mut client = HttpClient::new(&url, &TlsSettings::default(), limits).unwrap();
        let err = client
            .request(Method::GET, "/ping", &[], Bytes::new())
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Timeout { .. }), "{err}");
        drop(silent);

        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let mut client = HttpClient::new(&url, &TlsSettings::default(), limits).unwrap();
        let err = client
            .request(Method::GET, "/ping", &[], Bytes::new())
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Connect { .. }), "{err}");
    }
}
