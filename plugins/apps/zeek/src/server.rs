//! The listener: accepts Zeek connections and runs one [`crate::peer`] task for each.

use std::sync::Arc;

use threatbus_broker::EndpointId;
use threatbus_core::{BusHandle, PluginError, Shutdown};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::peer::{self, PeerSettings};
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
            PluginError(format!(
                "{KEY}: cannot listen on {}:{}: {err}",
                config.host, config.port
            ))
        })?;
    let address = listener.local_addr().map_or_else(
        |_| format!("{}:{}", config.host, config.port),
        |a| a.to_string(),
    );
    let settings = Arc::new(PeerSettings {
        own_id: own_endpoint_id(),
        namespace: config.module_namespace.clone(),
        max_frame_size: config.max_frame_size,
        ping_interval: config.ping_interval,
        handshake_timeout: config.handshake_timeout,
    });
    tracing::info!(
        %address,
        endpoint_id = %settings.own_id,
        allow_plain = config.allow_plain,
        tls = if config.tls.is_some() { "certificates" } else { "anonymous" },
        "Zeek app listening for Broker peers"
    );
    bus.set_ready(true);
    let transport = Arc::new(transport);
    let peers = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.stop_input.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    peers.spawn(peer::serve(
                        stream,
                        remote,
                        transport.clone(),
                        settings.clone(),
                        bus.clone(),
                        shutdown.stop.clone(),
                    ));
                }
                Err(err) => {
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

/// A random endpoint id for this process (never the nil id).
fn own_endpoint_id() -> EndpointId {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] |= 1;
    EndpointId(bytes)
}
