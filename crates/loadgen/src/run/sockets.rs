//! The generator's ZeroMQ sockets: a SUB socket per subscription (measured or stalled) and a
//! PUB socket per publisher, with the options a run needs.

use anyhow::Context as _;
use threatbus_zmq_client::client::{Subscription, endpoint};

/// Receive timeout of subscriber sockets: how quickly they notice the stop flag when idle.
pub(super) const SUBSCRIBER_POLL_MS: i32 = 100;
/// Send timeout of publisher sockets: how quickly a publisher waiting for room notices an abort.
const PUBLISHER_WAIT_MS: i32 = 100;
/// Receive buffer of a stalled subscriber, in messages and in kernel socket bytes.
pub(super) const STALL_HWM: i32 = 1;
pub(super) const STALL_RCVBUF: i32 = 4096;

/// Opens a PUB socket connected to the bus's sub socket at `publish_endpoint`.
pub(super) fn open_publisher(
    context: &zmq::Context,
    publish_endpoint: &str,
    hwm: i32,
) -> anyhow::Result<zmq::Socket> {
    let mut socket = context.socket(zmq::PUB)?;
    socket.set_sndhwm(hwm)?;
    if hwm > 0 {
        // A full send buffer then blocks the publisher instead of dropping frames: the
        // generator itself never loses messages.
        set_no_drop(&mut socket)?;
    }
    socket.set_sndtimeo(PUBLISHER_WAIT_MS)?;
    socket.set_linger(0)?;
    socket.set_ipv6(true)?;
    socket
        .connect(publish_endpoint)
        .with_context(|| format!("cannot connect to the sub socket {publish_endpoint}"))?;
    Ok(socket)
}

/// Sets `ZMQ_XPUB_NODROP` (it applies to PUB sockets too): at the high-water mark `send` waits
/// for room instead of silently dropping the frame.
fn set_no_drop(socket: &mut zmq::Socket) -> anyhow::Result<()> {
    threatbus_zmq_client::set_nodrop(socket)
        .map_err(|err| anyhow::anyhow!("cannot set ZMQ_XPUB_NODROP on the publisher socket: {err}"))
}

/// Opens a SUB socket for `subscription` and subscribes it to its p2p topic.
pub(super) fn open_subscriber(
    context: &zmq::Context,
    host: &str,
    subscription: &Subscription,
    hwm: i32,
    kernel_buffer: Option<i32>,
    timeout_ms: i32,
) -> anyhow::Result<zmq::Socket> {
    let socket = context.socket(zmq::SUB)?;
    socket.set_rcvhwm(hwm)?;
    if let Some(bytes) = kernel_buffer {
        socket.set_rcvbuf(bytes)?;
    }
    socket.set_rcvtimeo(timeout_ms)?;
    socket.set_linger(0)?;
    socket.set_ipv6(true)?;
    let address = endpoint(host, subscription.pub_port);
    socket
        .connect(&address)
        .with_context(|| format!("cannot connect to the pub socket {address}"))?;
    socket.set_subscribe(subscription.p2p_topic.as_bytes())?;
    Ok(socket)
}
