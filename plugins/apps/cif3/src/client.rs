//! The calls to CIF's REST API, with the headers the CIF SDK sends (`Authorization: Token
//! token=…`, `Accept: application/vnd.cif.v3+json`), and what each answer means for the
//! caller: done, rejected for good, or worth another attempt.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;
use threatbus_core::config::ConfigError;
use threatbus_net::http::{HttpClient, HttpError, Limits, Response, SetupError};
use threatbus_net::tls::TlsSettings;

use crate::config::{ApiConfig, KEY};

/// CIF's media type for API version 3.
const CIF_V3: &str = "application/vnd.cif.v3+json";

/// How much of an answer's body a log line shows.
const PREVIEW: usize = 300;

/// Why CIF did not answer a ping as hoped.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("CIF refused the token (401 Unauthorized): {0}")]
    Unauthorized(String),
    #[error("CIF answered {status}: {message}")]
    Status { status: StatusCode, message: String },
}

/// What CIF made of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (201, or any other 2xx).
    Accepted,
    /// Refused for good (4xx other than 408 and 429, 3xx): sending it again would not help.
    Rejected { status: StatusCode, message: String },
    /// Not served now (network error, timeout, 408, 429, 5xx): try again later.
    Retry { reason: String },
}

/// A client of one CIF server.
pub struct CifClient {
    http: HttpClient,
}

impl CifClient {
    /// A client for `api`; checks the URL, the token and the TLS settings, connects nowhere.
    pub fn new(api: &ApiConfig) -> Result<Self, ConfigError> {
        let key = |name: &str| format!("{KEY}.api.{name}");
        let https = api.host.trim().to_ascii_lowercase().starts_with("https:");
        if let Some(ca_file) = &api.ca_file {
            let unused = if !https {
                Some("is only used for an https:// api.host")
            } else if !api.ssl {
                Some("is not used when api.ssl is false (no verification)")
            } else {
                None
            };
            if let Some(why) = unused {
                return Err(ConfigError::new(
                    key("ca_file"),
                    format!("{why}, got {:?}", ca_file.display().to_string()),
                ));
            }
        }
        let tls = TlsSettings {
            verify: api.ssl,
            ca_file: api.ca_file.as_deref(),
            client_auth: None,
        };
        let limits = Limits {
            timeout: Duration::from_secs(30),
            max_body: 1 << 20,
        };
        let mut http = HttpClient::new(&api.host, &tls, limits).map_err(|err| match err {
            SetupError::Url { .. } => ConfigError::new(key("host"), err.to_string()),
            SetupError::Tls(tls) => {
                let field = if tls.field == "verify" {
                    "ssl"
                } else {
                    tls.field
                };
                ConfigError::new(key(field), tls.message)
            }
        })?;
        // The token is not repeated in the message: it is a secret.
        http.default_header("authorization", &format!("Token token={}", api.token))
            .map_err(|_| {
                ConfigError::new(
                    key("token"),
                    "must not contain line breaks or other control characters",
                )
            })?;
        let agent = concat!("threatbus/", env!("CARGO_PKG_VERSION"));
        for (name, value) in [("accept", CIF_V3), ("user-agent", agent)] {
            http.default_header(name, value)
                .map_err(|err| ConfigError::new(KEY, err.to_string()))?;
        }
        Ok(Self { http })
    }

    /// The URL of `path` on the server, for log lines.
    pub fn url(&self, path: &str) -> String {
        self.http.url(path)
    }

    /// `GET /ping`: whether CIF answers and takes the token.
    pub async fn ping(&mut self) -> Result<(), PingError> {
        let response = self
            .http
            .request(Method::GET, "/ping", &[], Bytes::new())
            .await?;
        match response.status {
            status if status.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED => Err(PingError::Unauthorized(message(&response))),
            status => Err(PingError::Status {
                status,
                message: message(&response),
            }),
        }
    }

    /// `POST /indicators` with `body`, the indicator's JSON, deflate-compressed.
    pub async fn submit(&mut self, body: Bytes) -> Outcome {
        let headers = [
            ("content-type", "application/json"),
            ("content-encoding", "deflate"),
        ];
        match self
            .http
            .request(Method::POST, "/indicators", &headers, body)
            .await
        {
            Ok(response) => judge(&response),
            Err(err @ HttpError::Request(_)) => Outcome::Rejected {
                status: StatusCode::BAD_REQUEST,
                message: err.to_string(),
            },
            Err(err) => Outcome::Retry {
                reason: err.to_string(),
            },
        }
    }
}

/// What an answer to a submission means.
fn judge(response: &Response) -> Outcome {
    let status = response.status;
    if status.is_success() {
        Outcome::Accepted
    } else if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Outcome::Retry {
            reason: format!("CIF answered {status}: {}", message(response)),
        }
    } else {
        Outcome::Rejected {
            status,
            message: message(response),
        }
    }
}

/// CIF's explanation: the `message` of a JSON body (as CIF sends with 400 and 422), else the
/// start of the body.
fn message(response: &Response) -> String {
    match serde_json::from_slice::<Value>(&response.body) {
        Ok(Value::Object(map)) => match map.get("message") {
            Some(Value::String(text)) => shorten(text),
            Some(other) => shorten(&other.to_string()),
            None => response.preview(PREVIEW),
        },
        _ => response.preview(PREVIEW),
    }
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(PREVIEW) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn api(host: &str) -> ApiConfig {
        ApiConfig {
            host: host.into(),
            token: "SECRET".into(),
            ssl: true,
            ca_file: None,
        }
    }

    fn response(status: u16, body: &str) -> Response {
        Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: Default::default(),
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn answers_are_judged_as_the_cif_sdk_does_with_retries_for_busy_servers() {
        assert_eq!(judge(&response(201, "{}")), Outcome::Accepted);
        assert_eq!(judge(&response(200, "")), Outcome::Accepted);
        for busy in [429, 408, 500, 502, 503, 504] {
            let outcome = judge(&response(busy, "busy"));
            assert!(
                matches!(&outcome, Outcome::Retry { reason } if reason.contains(&busy.to_string()) && reason.ends_with("busy")),
                "{busy}: {outcome:?}"
            );
        }
        assert_eq!(
            judge(&response(
                422,
                r#"{"message": "invalid indicator", "status": "failure"}"#
            )),
            Outcome::Rejected {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: "invalid indicator".into()
            }
        );
        let long = "x".repeat(1000);
        match judge(&response(400, &long)) {
            Outcome::Rejected { status, message } => {
                assert_eq!(status, StatusCode::BAD_REQUEST);
                assert_eq!(message.chars().count(), PREVIEW + 1, "{message}");
            }
            other => panic!("{other:?}"),
        }
        match judge(&response(401, &json!({"message": long}).to_string())) {
            Outcome::Rejected { message, .. } => assert!(message.ends_with("x…")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn settings_that_cannot_work_name_the_key() {
        let cases = [
            (
                api("localhost:5000"),
                "plugins.apps.cif3.api.host",
                "localhost:5000",
            ),
            (api("ftp://cif"), "plugins.apps.cif3.api.host", "ftp://cif"),
            (
                ApiConfig {
                    token: "a\nb".into(),
                    ..api("http://cif")
                },
                "plugins.apps.cif3.api.token",
                "line breaks",
            ),
            (
                ApiConfig {
                    ca_file: Some("/nonexistent/ca.pem".into()),
                    ..api("https://cif")
                },
                "plugins.apps.cif3.api.ca_file",
                "/nonexistent/ca.pem",
            ),
            (
                ApiConfig {
                    ca_file: Some("/etc/ca.pem".into()),
                    ..api("http://cif")
                },
                "plugins.apps.cif3.api.ca_file",
                "https://",
            ),
            (
                ApiConfig {
                    ca_file: Some("/etc/ca.pem".into()),
                    ssl: false,
                    ..api("https://cif")
                },
                "plugins.apps.cif3.api.ca_file",
                "api.ssl is false",
            ),
        ];
        for (api, key, text) in cases {
            let err = CifClient::new(&api).err().unwrap();
            assert_eq!(err.key, key, "{err}");
            assert!(err.message.contains(text), "{err}");
            assert!(!err.message.contains("SECRET"), "{err}");
        }
        assert!(CifClient::new(&api("http://localhost:5000/")).is_ok());
    }

    fn reply(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// A server that answers each request with the next of `replies` and hands back the
    /// requests it read (head and body).
    async fn server(replies: Vec<String>) -> (String, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut requests = Vec::new();
            let (mut socket, _) = listener.accept().await.unwrap();
            for reply in replies {
                let mut seen = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
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
                    let n = socket.read(&mut buffer).await.unwrap();
                    assert!(n > 0, "connection closed early");
                    seen.extend_from_slice(&buffer[..n]);
                }
                socket.write_all(reply.as_bytes()).await.unwrap();
                requests.push(seen);
            }
            requests
        });
        (url, task)
    }

    #[tokio::test]
    async fn ping_and_submit_send_cifs_headers() {
        let (url, server) = server(vec![
            reply("200 OK", r#"{"status": "success", "data": 1.5e9}"#),
            reply("201 Created", "{}"),
            reply("401 Unauthorized", r#"{"message": "unauthorized"}"#),
        ])
        .await;
        let mut client = CifClient::new(&ApiConfig {
            ssl: false,
            ..api(&url)
        })
        .unwrap();
        assert_eq!(client.url("/ping"), format!("{url}/ping"));
        client.ping().await.unwrap();
        assert_eq!(
            client.submit(Bytes::from_static(b"BODY")).await,
            Outcome::Accepted
        );
        let err = client.ping().await.unwrap_err();
        assert!(matches!(&err, PingError::Unauthorized(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "CIF refused the token (401 Unauthorized): unauthorized"
        );
        let requests = server.await.unwrap();
        let ping = String::from_utf8_lossy(&requests[0]).to_lowercase();
        assert!(ping.starts_with("get /ping http/1.1\r\n"), "{ping}");
        let post = String::from_utf8_lossy(&requests[1]).into_owned();
        let lower = post.to_lowercase();
        assert!(lower.starts_with("post /indicators http/1.1\r\n"), "{post}");
        for header in [
            "authorization: token token=secret\r\n",
            "accept: application/vnd.cif.v3+json\r\n",
            "content-type: application/json\r\n",
            "content-encoding: deflate\r\n",
            &format!("user-agent: threatbus/{}\r\n", env!("CARGO_PKG_VERSION")),
        ] {
            assert!(lower.contains(header), "{header:?} missing: {post}");
            if !header.starts_with("content") {
                assert!(ping.contains(header), "{header:?} missing: {ping}");
            }
        }
        assert!(post.contains("Token token=SECRET"), "{post}");
        assert!(post.ends_with("\r\n\r\nBODY"), "{post}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_worth_a_retry() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let mut client = CifClient::new(&api(&url)).unwrap();
        let err = client.ping().await.unwrap_err();
        assert!(
            matches!(err, PingError::Http(HttpError::Connect { .. })),
            "{err:?}"
        );
        assert!(err.to_string().contains("cannot connect"), "{err}");
        assert!(matches!(
            client.submit(Bytes::from_static(b"x")).await,
            Outcome::Retry { reason } if reason.contains("cannot connect")
        ));
    }
}
