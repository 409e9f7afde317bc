//! The client side of Threat Bus's ZeroMQ protocol, and the socket helpers every ZeroMQ user in
//! the workspace shares: the ZeroMQ app (server side), the MISP app's ZeroMQ feed, the operator
//! tools (`threatbus tail`, `threatbus publish`) and the load generator depend on this crate,
//! not on each other.

pub mod client;

/// The `zmq` crate this crate's sockets and contexts come from.
pub use zmq;

/// `tcp://host:port` for ZeroMQ, with brackets around an IPv6 address.
pub fn tcp_endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("tcp://[{host}]:{port}")
    } else {
        format!("tcp://{host}:{port}")
    }
}

/// Waits for the next message on a socket that has a receive timeout, until `stop` fires:
/// `Ok(true)` when `frame` holds one, `Ok(false)` when stopped (or the context is ending).
pub fn recv_until_stopped(
    socket: &zmq::Socket,
    frame: &mut zmq::Message,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<bool, zmq::Error> {
    while !stop.is_cancelled() {
        match socket.recv(frame, 0) {
            Ok(()) => return Ok(true),
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => continue,
            Err(zmq::Error::ETERM) => return Ok(false),
            Err(err) => return Err(err),
        }
    }
    Ok(false)
}

/// Sets `ZMQ_XPUB_NODROP` on a PUB or XPUB socket (a PUB socket is an XPUB socket inside
/// libzmq; the `zmq` crate has no setter for it): at a peer's high-water mark, `send` fails
/// with `EAGAIN` (or waits, without `DONTWAIT`) instead of silently dropping the frame. Only the
/// peers a frame's topic matches are checked.
pub fn set_nodrop(socket: &mut zmq::Socket) -> zmq::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the socket handle is live for the call (we hold `&mut` to its owner), and the
    // value is a C int that outlives the call, with its size passed alongside.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            zmq_sys::ZMQ_XPUB_NODROP as libc::c_int,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of::<libc::c_int>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: reads the calling thread's libzmq error number.
        Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_bracket_ipv6_hosts() {
        assert_eq!(tcp_endpoint("127.0.0.1", 1), "tcp://127.0.0.1:1");
        assert_eq!(tcp_endpoint("::1", 1), "tcp://[::1]:1");
        assert_eq!(client::endpoint("[::1]", 2), "tcp://[::1]:2");
    }
}
