//! Calls to MISP's REST API: the connectivity check, sightings, attribute searches.
//!
//! Every call carries `Authorization: <key>` and `Accept: application/json` (as PyMISP sends
//! them). What MISP answers is sorted into three outcomes: accepted; [`CallError::Unavailable`]
//! (network trouble, timeouts, `429`, `5xx`, and refused credentials, which an operator can fix
//! without restarting the bus): worth retrying; and [`CallError::Rejected`] (any other refusal,
//! e.g. a sighting for an attribute MISP does not know): retrying would not help.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;
use threatbus_net::http::{HttpClient, Limits, Response, SetupError};
use threatbus_net::tls::TlsSettings;

use crate::ApiConfig;
use crate::rest;

/// How much of an answer goes into a log line.
const PREVIEW: usize = 300;

/// Why a call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// MISP could not be reached or could not serve the call now; try again later.
    #[error("{0}")]
    Unavailable(String),
    /// MISP refused the call; the text includes its answer.
    #[error("{0}")]
    Rejected(String),
}

/// A client for one MISP.
pub struct MispApi {
    client: HttpClient,
}

impl MispApi {
    /// A client for `api.host` with its TLS settings; nothing is sent yet.
    pub fn new(config: &ApiConfig) -> Result<Self, SetupError> {
        let tls = TlsSettings {
            verify: config.ssl,
            ca_file: config.ca_file.as_deref(),
            client_auth: None,
        };
        let mut client = HttpClient::new(&config.host, &tls, Limits::default())?;
        let headers = [
            ("authorization", config.key.as_str()),
            ("accept", "application/json"),
            (
                "user-agent",
                concat!("threatbus/", env!("CARGO_PKG_VERSION")),
            ),
        ];
        for (name, value) in headers {
            client
                .default_header(name, value)
                .map_err(|err| SetupError::Url {
                    url: config.host.clone(),
                    reason: err.to_string(),
                })?;
        }
        Ok(Self { client })
    }

    /// The full URL of an API path, for log lines.
    pub fn url(&self, path: &str) -> String {
        self.client.url(path)
    }

    /// `GET /servers/getVersion`: whether MISP answers and takes the key. Returns the version
    /// MISP reports.
    pub async fn check(&mut self) -> Result<String, CallError> {
        let answer = self.call(Method::GET, "/servers/getVersion", None).await?;
        let document = json_object(&answer)?;
        Ok(document
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned())
    }

    /// `POST /sightings/add` with a body made by [`rest::sighting_body`].
    pub async fn add_sighting(&mut self, body: &Value) -> Result<(), CallError> {
        let answer = self
            .call(Method::POST, "/sightings/add", Some(body))
            .await?;
        let document = json_object(&answer)?;
        // MISP answers a stored sighting with the sighting (`{"Sighting": {...}}`) or, in older
        // versions, with `saved`/`success`; a refusal carries `message`, `errors` or `saved:
        // false`.
        let saved = document.get("Sighting").is_some()
            || document.get("success").and_then(Value::as_bool) == Some(true)
            || document.get("saved").and_then(Value::as_bool) == Some(true);
        let refused = document.get("errors").is_some_and(|e| !e.is_null())
            || document.get("saved").and_then(Value::as_bool) == Some(false);
        if saved && !refused {
            Ok(())
        } else {
            Err(CallError::Rejected(format!(
                "MISP did not store the sighting: {}",
                answer.preview(PREVIEW)
            )))
        }
    }

    /// `POST /attributes/restSearch` with one (paged) query; the attributes found.
    pub async fn search(&mut self, query: &Value) -> Result<Vec<Value>, CallError> {
        let answer = self
            .call(Method::POST, "/attributes/restSearch", Some(query))
            .await?;
        let document: Value = serde_json::from_slice(&answer.body).map_err(|err| {
            CallError::Rejected(format!(
                "MISP's search answer is not JSON ({err}): {}",
                answer.preview(PREVIEW)
            ))
        })?;
        rest::search_attributes(&document)
            .cloned()
            .map_err(CallError::Rejected)
    }

    /// Sends a call and sorts out failures by status.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, CallError> {
        let (headers, payload): (&[(&'static str, &str)], Bytes) = match body {
            Some(body) => (
                &[("content-type", "application/json")],
                Bytes::from(body.to_string()),
            ),
            None => (&[], Bytes::new()),
        };
        let answer = self
            .client
            .request(method, path, headers, payload)
            .await
            .map_err(|err| CallError::Unavailable(err.to_string()))?;
        let status = answer.status;
        if status.is_success() {
            return Ok(answer);
        }
        let text = format!(
            "{} answered HTTP {status}: {}",
            self.client.url(path),
            answer.preview(PREVIEW)
        );
        // MISP answers both refused credentials and refused content (`saveFailResponse`:
        // `{"saved": false, "errors": ...}`) with 403; only the first is worth a retry.
        let refused_content = serde_json::from_slice::<Value>(&answer.body).is_ok_and(|doc| {
            doc.get("saved").and_then(Value::as_bool) == Some(false)
                || doc.get("errors").is_some_and(|e| !e.is_null())
        });
        let retry = status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error()
            || ((status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN)
                && !refused_content);
        Err(if retry {
            CallError::Unavailable(text)
        } else {
            CallError::Rejected(text)
        })
    }
}

/// The answer as a JSON object, or why it is not one.
fn json_object(answer: &Response) -> Result<serde_json::Map<String, Value>, CallError> {
    match serde_json::from_slice(&answer.body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(CallError::Rejected(format!(
            "MISP's answer is not a JSON object: {}",
            answer.preview(PREVIEW)
        ))),
    }
}
