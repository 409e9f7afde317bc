//! The optional HTTP listener of the `metrics` section: `/metrics` (Prometheus text format),
//! `/health` (liveness) and `/ready` (backbone connected, every app bound or started).
//!
//! It runs as a bus service: it starts and stops with the apps but counts as none of them.
//! Requests are small GETs from a scraper or an orchestrator's probe; anything else gets a 4xx.
//! The listener must answer a probe even while slow or idle clients hold connections (a probe
//! that times out gets a healthy bus restarted), so:
//!
//! * a request's headers must arrive within [`HEADER_TIMEOUT`];
//! * at most [`MAX_CONNECTIONS`] are held; when a new one arrives and every place is taken,
//!   the oldest connection that is not in the middle of answering a request (a slow client
//!   still sending headers, or an idle keep-alive connection) is closed to make room, so a new
//!   client never waits for a slow one. Only when every held connection is being answered is
//!   the new one turned away.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::{Value, json};
use threatbus_core::{App, BoxFuture, BusHandle, PluginError, Shutdown};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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

/// The connections held, oldest first, and whether each is answering a request now.
#[derive(Default)]
struct Connections {
    table: Mutex<ConnectionTable>,
}

#[derive(Default)]
struct ConnectionTable {
    next_id: u64,
    /// By id, which grows with time: the first entry is the oldest.
    held: BTreeMap<u64, Held>,
}

struct Held {
    busy: bool,
    evict: CancellationToken,
}

/// One connection's place; dropping it gives the place back.
struct Place {
    connections: Arc<Connections>,
    id: u64,
    evict: CancellationToken,
}

impl Connections {
    fn table(&self) -> std::sync::MutexGuard<'_, ConnectionTable> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a new connection, closing the oldest idle one if every place is taken;
    /// `None` if every held connection is answering a request right now.
    fn admit(self: &Arc<Self>) -> Option<Place> {
        let mut table = self.table();
        if table.held.len() >= MAX_CONNECTIONS {
            let idle = table
                .held
                .iter()
                .find(|(_, held)| !held.busy)
                .map(|(id, _)| *id)?;
            if let Some(held) = table.held.remove(&idle) {
                held.evict.cancel();
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let evict = CancellationToken::new();
        table.held.insert(
            id,
            Held {
                busy: false,
                evict: evict.clone(),
            },
        );
        Some(Place {
            connections: self.clone(),
            id,
            evict,
        })
    }

    fn set_busy(&self, id: u64, busy: bool) {
        if let Some(held) = self.table().held.get_mut(&id) {
            held.busy = busy;
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.connections.table().held.remove(&self.id);
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
    let held = Arc::new(Connections::default());
    // Lines about clients are throttled: a flood of bad connections must not flood the log.
    let client_log = Arc::new(std::sync::Mutex::new(
        threatbus_core::throttle::LogThrottle::default(),
    ));
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::debug!(error = %err, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let allow_line = {
            let client_log = client_log.clone();
            move || {
                client_log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .allow()
            }
        };
        let Some(place) = held.admit() else {
            if let Some(suppressed) = allow_line() {
                tracing::debug!(
                    suppressed,
                    "metrics listener: every connection is answering a request; new one closed"
                );
            }
            continue;
        };
        let bus = bus.clone();
        let stop = shutdown.stop.clone();
        tasks.spawn(async move {
            let connections = place.connections.clone();
            let id = place.id;
            let service = hyper::service::service_fn(move |request| {
                let bus = bus.clone();
                let connections = connections.clone();
                async move {
                    connections.set_busy(id, true);
                    let response = answer(&bus, &request).await;
                    connections.set_busy(id, false);
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result
                        && let Some(suppressed) = allow_line()
                    {
                        tracing::debug!(error = %err, suppressed, "metrics listener: connection ended with an error");
                    }
                }
                // Closed to make room for a new client: dropping the connection closes it.
                _ = place.evict.cancelled() => {}
                _ = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            drop(place);
        });
    }
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), tasks.wait()).await;
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
    fn a_new_connection_closes_the_oldest_idle_one_when_full() {
        let held = Arc::new(Connections::default());
        let mut places: Vec<Place> = (0..MAX_CONNECTIONS)
            .map(|_| held.admit().unwrap())
            .collect();
        // The two oldest are answering requests: the third oldest is the one to go.
        held.set_busy(places[0].id, true);
        held.set_busy(places[1].id, true);
        let newcomer = held.admit().unwrap();
        assert!(!places[0].evict.is_cancelled() && !places[1].evict.is_cancelled());
        assert!(places[2].evict.is_cancelled());
        assert!(places[3..].iter().all(|p| !p.evict.is_cancelled()));
        assert_eq!(held.table().held.len(), MAX_CONNECTIONS);
        // Its task ends and gives the place back (already taken over: nothing changes).
        drop(places.remove(2));
        assert_eq!(held.table().held.len(), MAX_CONNECTIONS);
        // When every held connection is busy, a new one is turned away.
        for place in places.iter().chain([&newcomer]) {
            held.set_busy(place.id, true);
        }
        assert!(held.admit().is_none());
        // A place given back is free again.
        drop(newcomer);
        assert!(held.admit().is_some());
    }

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
