//! The optional HTTP listener of the `metrics` section: `/metrics` (Prometheus text format),
//! `/health` (liveness) and `/ready` (backbone connected, every app bound or started).
//!
//! It runs as a bus service: it starts and stops with the apps but counts as none of them.
//! Requests are small GETs from a scraper or an orchestrator's probe; anything else gets a 4xx.
//! The listener must answer a probe even while slow or idle clients hold connections (a probe
//! that times out gets a healthy bus restarted), so the listener keeps at most [`MAX_CONNECTIONS`], closing the oldest idle one to make room for a
//! new client, and gives a request's headers [`HEADER_TIMEOUT`] to arrive (the shared server
//! of `threatbus_net::server`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::{Value, json};
use threatbus_core::{App, BoxFuture, BusHandle, PluginError, Shutdown};
use threatbus_net::server::ServerLimits;
use tokio::net::TcpListener;

/// Connections held at once (see the module header for what happens beyond).
const MAX_CONNECTIONS: usize = 64;
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// The content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = threatbus_core::metrics::CONTENT_TYPE;

/// The `metrics` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where the listener binds; absent: no listener. A bare port binds to 127.0.0.1.
    #[serde(deserialize_with = "listen_address")]
    pub listen: Option<SocketAddr>,
}

impl MetricsConfig {
    /// The section as it is in effect, for `threatbus check`.
    pub fn to_json(&self) -> Value {
        json!({"listen": self.listen.map(|a| a.to_string())})
    }
}

/// `9090`, `"9090"`, `"127.0.0.1:9090"`, `"[::1]:9090"`, `"localhost:9090"` or null.
fn listen_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let value = Value::deserialize(deserializer)?;
    parse_listen(&value).map_err(de::Error::custom)
}

fn parse_listen(value: &Value) -> Result<Option<SocketAddr>, String> {
    let loopback = |port: u64| match u16::try_from(port) {
        Ok(port) if port > 0 => Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
        _ => Err(format!("port must be 1-65535, got {port}")),
    };
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => match threatbus_core::config::whole_number(value) {
            Some(port) => loopback(port).map(Some),
            None => Err(format!("expected a port or an address:port, got {n}")),
        },
        Value::String(text) => {
            let text = text.trim();
            if let Ok(port) = text.parse::<u64>() {
                return loopback(port).map(Some);
            }
            let text = match text.strip_prefix("localhost:") {
                Some(port) => format!("127.0.0.1:{port}"),
                None => text.to_owned(),
            };
            match text.parse::<SocketAddr>() {
                Ok(address) if address.port() > 0 => Ok(Some(address)),
                _ => Err(format!(
                    "expected a port (e.g. 9090) or an IP address with a port (e.g. \"127.0.0.1:9090\", \"[::1]:9090\"), got {text:?}"
                )),
            }
        }
        other => Err(format!("expected a port or an address:port, got {other}")),
    }
}

/// The listener, run as a bus service.
pub struct MetricsService {
    pub listen: SocketAddr,
}

impl App for MetricsService {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn run(
        self: Box<Self>,
        bus: BusHandle,
        shutdown: Shutdown,
    ) -> BoxFuture<Result<(), PluginError>> {
        Box::pin(serve(self.listen, bus, shutdown))
    }
}

async fn serve(listen: SocketAddr, bus: BusHandle, shutdown: Shutdown) -> Result<(), PluginError> {
    let listener = TcpListener::bind(listen).await.map_err(|err| {
        PluginError::new(format!("metrics.listen: cannot listen on {listen}"), err)
    })?;
    let address = listener.local_addr().unwrap_or(listen);
    tracing::info!(%address, "metrics listener serving /metrics, /health and /ready");
    if !address.ip().is_loopback() {
        tracing::warn!(%address, "metrics listener is reachable from other hosts: it has no authentication");
    }
    let limits = ServerLimits {
        max_connections: MAX_CONNECTIONS,
        header_timeout: HEADER_TIMEOUT,
        ..ServerLimits::default()
    };
    let answer = move |request: Request<Incoming>, _client| {
        let bus = bus.clone();
        async move { answer(&bus, &request).await }
    };
    threatbus_net::server::serve("metrics", listener, None, limits, shutdown.stop, answer).await;
    Ok(())
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

async fn answer(bus: &BusHandle, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET and HEAD\n".into(),
        );
        if let Ok(value) = "GET, HEAD".parse() {
            response.headers_mut().insert(hyper::header::ALLOW, value);
        }
        return response;
    }
    match request.uri().path() {
        "/metrics" => {
            // Queue depths are read now; if the bus is stopping, the last values stand.
            let _ = bus.refresh_gauges().await;
            text(StatusCode::OK, PROMETHEUS_TEXT, bus.metrics().render())
        }
        "/health" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/ready" => {
            let waiting = bus.metrics().not_ready();
            if waiting.is_empty() {
                text(StatusCode::OK, PLAIN, "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PLAIN,
                    format!("not ready: {}\n", waiting.join(", ")),
                )
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: try /metrics, /health or /ready\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_ports_and_addresses() {
        let parse = |v: Value| parse_listen(&v);
        assert_eq!(parse(Value::Null), Ok(None));
        assert_eq!(
            parse(json!(9090)),
            Ok(Some("127.0.0.1:9090".parse().unwrap()))
        );
        assert_eq!(
            parse(json!("9090")),
            Ok(Some("127.0.0.1:9090".parse().unwrap()))
        );
        assert_eq!(
            parse(json!("0.0.0.0:9100")),
            Ok(Some("0.0.0.0:9100".parse().unwrap()))
        );
        assert_eq!(
            parse(json!("[::1]:9100")),
            Ok(Some("[::1]:9100".parse().unwrap()))
        );
        assert_eq!(
            parse(json!("localhost:9100")),
            Ok(Some("127.0.0.1:9100".parse().unwrap()))
        );
        for bad in [
            json!(0),
            json!(70000),
            json!(-1),
            json!("host:x"),
            json!("example.org:80"),
            json!(true),
            json!("127.0.0.1:0"),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
        let err = parse(json!(70000)).unwrap_err();
        assert!(err.contains("70000"), "{err}");
    }
}
