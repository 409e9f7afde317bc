//! The listener: accepts Zeek connections and runs one [`crate::peer`] task for each, within
//! two caps: connections held at once (`max_connections`) and connections still in TLS or the
//! Broker handshake (`max_handshakes`). A connection over either cap is closed at once, so a
//! flood on the Zeek port cannot exhaust file descriptors or memory.

use std::sync::Arc;

use threatbus_broker::OwnEndpointId;
use threatbus_core::throttle::LogThrottle;
use threatbus_core::{BusHandle, PluginError, Shutdown};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::metrics::{Refusal, Refusals};
use crate::peer::{self, PeerSettings, Permits};
use crate::transport::Transport;
use crate::{KEY, ZeekConfig};

/// Listens until `shutdown.stop_input`, then lets the peers say goodbye and waits for them.
pub async fn run(
    config: ZeekConfig,
    transport: Transport,
    bus: BusHandle,
    shutdown: Shutdown,
) -> Result<(), PluginError> {
    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .await
        .map_err(|err| {
            PluginError::new(
                format!("{KEY}: cannot listen on {}:{}", config.host, config.port),
                err,
            )
        })?;
    let address = listener.local_addr().map_or_else(
        |_| format!("{}:{}", config.host, config.port),
        |a| a.to_string(),
    );
    // The app's metrics render from the start (the peer gauge at 0).
    bus.metrics().register(crate::metrics::METRICS);
    bus.metrics().gauge(&crate::metrics::ZEEK_PEERS, &[]);
    let settings = Arc::new(PeerSettings {
        own_id: OwnEndpointId::random(),
        namespace: config.module_namespace.clone(),
        max_frame_size: config.max_frame_size,
        ping_interval: config.ping_interval,
        handshake_timeout: config.handshake_timeout,
        p2p_timeout: config.p2p_timeout,
        refusals: Refusals::new(&bus),
        setup_log: std::sync::Mutex::new(LogThrottle::default()),
    });
    tracing::info!(
        %address,
        endpoint_id = %settings.own_id,
        allow_plain = config.allow_plain,
        tls = if config.tls.is_some() { "certificates" } else { "anonymous" },
        max_connections = config.max_connections,
        max_handshakes = config.max_handshakes,
        "Zeek app listening for Broker peers"
    );
    bus.set_ready(true);
    let transport = Arc::new(transport);
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let handshakes = Arc::new(Semaphore::new(config.max_handshakes));
    let mut refusal_log = LogThrottle::default();
    let peers = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.stop_input.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let permits = match (
                        connections.clone().try_acquire_owned(),
                        handshakes.clone().try_acquire_owned(),
                    ) {
                        (Ok(connection), Ok(handshake)) => Permits { connection, handshake },
                        (connection, _) => {
                            // Dropping the stream closes it; the permit we may hold goes too.
                            drop(stream);
                            let (reason, limit, key) = if connection.is_err() {
                                (Refusal::MaxConnections, config.max_connections, "max_connections")
                            } else {
                                (Refusal::MaxHandshakes, config.max_handshakes, "max_handshakes")
                            };
                            settings.refusals.count(reason);
                            if let Some(suppressed) = refusal_log.allow() {
                                tracing::warn!(
                                    peer = %remote,
                                    limit,
                                    suppressed,
                                    "Zeek connection refused: {KEY}.{key} reached"
                                );
                            }
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    peers.spawn(peer::serve(
                        stream,
                        remote,
                        permits,
                        transport.clone(),
                        settings.clone(),
                        bus.clone(),
                        shutdown.stop.clone(),
                    ));
                }
                Err(err) => {
                    // Typically out of file descriptors: wait instead of spinning.
                    tracing::warn!(error = %err, "accepting a Zeek connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
    drop(listener);
    peers.close();
    peers.wait().await;
    tracing::info!("Zeek app stopped");
    Ok(())
}
