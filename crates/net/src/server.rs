//! A small HTTP/1.1 server for the bus's own listeners (the metrics listener, the TAXII app):
//! plain or TLS, with the limits a listener reachable by careless or hostile clients needs.
//!
//! * A request's headers must arrive within [`ServerLimits::header_timeout`], and may not be
//!   larger than [`ServerLimits::max_header_bytes`] (hyper answers 431).
//! * At most [`ServerLimits::max_connections`] connections are held. When a new one arrives
//!   and every place is taken, the oldest connection that is not in the middle of answering a
//!   request (a slow client still sending headers, or an idle keep-alive connection) is closed
//!   to make room, so a new client never waits for a slow one. Only when every held connection
//!   is being answered is the new one turned away.
//! * A TLS handshake must finish within the header timeout too.
//! * On shutdown, idle connections close at once and busy ones after their answer, within a
//!   second.
//!
//! Lines about clients are throttled: a flood of bad connections must not flood the log.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections held at once (see the module header for what happens beyond).
    pub max_connections: usize,
    /// A request's headers (and a TLS handshake) must arrive within this.
    pub header_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; at least 8192.
    pub max_header_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: Duration::from_secs(3),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// Who sent a request.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub address: SocketAddr,
}

/// Serves `listener` until `stop` fires, answering every request with `answer`; `name` names
/// the listener in log lines.
pub async fn serve<A, F>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ServerLimits,
    stop: CancellationToken,
    answer: A,
) where
    A: Fn(Request<Incoming>, Client) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let held = Arc::new(Connections::new(limits.max_connections));
    let client_log = Arc::new(Mutex::new(threatbus_core::throttle::LogThrottle::default()));
    let allow_line = move || {
        client_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow()
    };
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, address) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::debug!(listener = name, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(place) = held.admit() else {
            if let Some(suppressed) = allow_line() {
                tracing::debug!(
                    listener = name,
                    suppressed,
                    "every connection is answering a request; new one closed"
                );
            }
            continue;
        };
        let answer = answer.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        let allow_line = allow_line.clone();
        tasks.spawn(async move {
            let client = Client { address };
            match tls {
                None => connection(stream, client, limits, place, stop, answer, allow_line).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            connection(stream, client, limits, place, stop, answer, allow_line)
                                .await
                        }
                        Ok(Err(err)) => {
                            if let Some(suppressed) = allow_line() {
                                tracing::debug!(listener = name, client = %address, error = %err, suppressed, "TLS handshake failed");
                            }
                        }
                        Err(_) => {
                            if let Some(suppressed) = allow_line() {
                                tracing::debug!(listener = name, client = %address, suppressed, "TLS handshake timed out");
                            }
                        }
                    }
                }
            }
        });
    }
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), tasks.wait()).await;
}

/// Serves one connection until it ends, is evicted, or the listener stops.
async fn connection<S, A, F>(
    stream: S,
    client: Client,
    limits: ServerLimits,
    place: Place,
    stop: CancellationToken,
    answer: A,
    allow_line: impl Fn() -> Option<u64>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Fn(Request<Incoming>, Client) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let connections = place.connections.clone();
    let id = place.id;
    let service = hyper::service::service_fn(move |request| {
        let answer = answer.clone();
        let connections = connections.clone();
        async move {
            connections.set_busy(id, true);
            let response = answer(request, client).await;
            connections.set_busy(id, false);
            Ok::<_, Infallible>(response)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result
                && let Some(suppressed) = allow_line()
            {
                tracing::debug!(client = %client.address, error = %err, suppressed, "connection ended with an error");
            }
        }
        // Closed to make room for a new client: dropping the connection closes it.
        _ = place.evict.cancelled() => {}
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), connection.as_mut()).await;
        }
    }
    drop(place);
}

/// The connections held, oldest first, and whether each is answering a request now.
struct Connections {
    max: usize,
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
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            table: Mutex::default(),
        }
    }

    fn table(&self) -> MutexGuard<'_, ConnectionTable> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a new connection, closing the oldest idle one if every place is taken;
    /// `None` if every held connection is answering a request right now.
    fn admit(self: &Arc<Self>) -> Option<Place> {
        let mut table = self.table();
        if table.held.len() >= self.max {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_closes_the_oldest_idle_one_when_full() {
        const MAX: usize = 8;
        let held = Arc::new(Connections::new(MAX));
        let mut places: Vec<Place> = (0..MAX).map(|_| held.admit().unwrap()).collect();
        // The two oldest are answering requests: the third oldest is the one to go.
        held.set_busy(places[0].id, true);
        held.set_busy(places[1].id, true);
        let newcomer = held.admit().unwrap();
        assert!(!places[0].evict.is_cancelled() && !places[1].evict.is_cancelled());
        assert!(places[2].evict.is_cancelled());
        assert!(places[3..].iter().all(|p| !p.evict.is_cancelled()));
        assert_eq!(held.table().held.len(), MAX);
        // Its task ends and gives the place back (already taken over: nothing changes).
        drop(places.remove(2));
        assert_eq!(held.table().held.len(), MAX);
        // When every held connection is busy, a new one is turned away.
        for place in places.iter().chain([&newcomer]) {
            held.set_busy(place.id, true);
        }
        assert!(held.admit().is_none());
        // A place given back is free again.
        drop(newcomer);
        assert!(held.admit().is_some());
    }
}
