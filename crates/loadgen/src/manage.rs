//! The client side of the manage protocol (REQ/REP, one JSON object each way).

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};

/// A subscription granted by the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The p2p topic the bus tags this subscription's frames with.
    pub p2p_topic: String,
    /// Port of the bus's PUB socket (where subscribers connect).
    pub pub_port: u16,
    /// Port of the bus's SUB socket (where publishers connect).
    pub sub_port: u16,
}

/// A REQ socket connected to the bus's manage port.
pub struct ManageClient {
    socket: zmq::Socket,
    endpoint: String,
}

impl ManageClient {
    /// Connects to `endpoint`; replies must come within `timeout`.
    pub fn connect(
        context: &zmq::Context,
        endpoint: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let socket = context.socket(zmq::REQ)?;
        let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        socket.set_rcvtimeo(millis)?;
        socket.set_sndtimeo(millis)?;
        socket.set_linger(0)?;
        socket.set_ipv6(true)?;
        socket
            .connect(endpoint)
            .with_context(|| format!("cannot connect to the manage socket {endpoint}"))?;
        Ok(Self {
            socket,
            endpoint: endpoint.to_owned(),
        })
    }

    /// Subscribes to `topic` without a snapshot.
    pub fn subscribe(&self, topic: &str) -> anyhow::Result<Subscription> {
        let reply = self.request(&json!({"action": "subscribe", "topic": topic, "snapshot": 0}))?;
        parse_subscribe_reply(&reply)
            .with_context(|| format!("bad subscribe reply from {}: {reply}", self.endpoint))
    }

    /// Ends the subscription with `p2p_topic`.
    pub fn unsubscribe(&self, p2p_topic: &str) -> anyhow::Result<()> {
        let reply = self.request(&json!({"action": "unsubscribe", "topic": p2p_topic}))?;
        match reply.get("status").and_then(Value::as_str) {
            Some("success") => Ok(()),
            _ => bail!("bad unsubscribe reply from {}: {reply}", self.endpoint),
        }
    }

    fn request(&self, request: &Value) -> anyhow::Result<Value> {
        self.socket
            .send(request.to_string().as_bytes(), 0)
            .map_err(|err| anyhow!("cannot send to the manage socket {}: {err}", self.endpoint))?;
        let reply = match self.socket.recv_bytes(0) {
            Ok(reply) => reply,
            Err(zmq::Error::EAGAIN) => bail!(
                "no reply from the manage socket {} (is a bus listening there?)",
                self.endpoint
            ),
            Err(err) => bail!("manage socket {}: {err}", self.endpoint),
        };
        serde_json::from_slice(&reply).with_context(|| {
            format!(
                "the manage socket {} replied with something that is not JSON: {:?}",
                self.endpoint,
                String::from_utf8_lossy(&reply)
            )
        })
    }
}

/// Reads `{"topic": P, "pub_port": N, "sub_port": N, "status": "success"}`.
pub fn parse_subscribe_reply(reply: &Value) -> anyhow::Result<Subscription> {
    match reply.get("status").and_then(Value::as_str) {
        Some("success") => {}
        Some(status) => bail!("status {status:?}"),
        None => bail!("no status"),
    }
    let p2p_topic = reply
        .get("topic")
        .and_then(Value::as_str)
        .filter(|topic| !topic.is_empty() && !topic.contains(' '))
        .ok_or_else(|| anyhow!("no usable p2p topic"))?;
    let port = |key: &str| {
        reply
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|port| u16::try_from(port).ok())
            .filter(|&port| port != 0)
            .ok_or_else(|| anyhow!("`{key}` is not a port number"))
    };
    Ok(Subscription {
        p2p_topic: p2p_topic.to_owned(),
        pub_port: port("pub_port")?,
        sub_port: port("sub_port")?,
    })
}

/// `tcp://host:port`, with brackets around an IPv6 address.
pub fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("tcp://[{host}]:{port}")
    } else {
        format!("tcp://{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_successful_reply() {
        let reply =
            json!({"topic": "abc", "pub_port": 13371, "sub_port": 13372, "status": "success"});
        assert_eq!(
            parse_subscribe_reply(&reply).unwrap(),
            Subscription {
                p2p_topic: "abc".into(),
                pub_port: 13371,
                sub_port: 13372
            }
        );
    }

    #[test]
    fn refuses_errors_and_malformed_replies() {
        for (reply, expected) in [
            (json!({"status": "error"}), "error"),
            (json!({"status": "unknown request"}), "unknown request"),
            (json!({"topic": "abc"}), "no status"),
            (
                json!({"status": "success", "pub_port": 1, "sub_port": 2}),
                "p2p topic",
            ),
            (
                json!({"status": "success", "topic": "", "pub_port": 1, "sub_port": 2}),
                "p2p topic",
            ),
            (
                json!({"status": "success", "topic": "a", "pub_port": "1", "sub_port": 2}),
                "pub_port",
            ),
            (
                json!({"status": "success", "topic": "a", "pub_port": 1, "sub_port": 70000}),
                "sub_port",
            ),
        ] {
            let err = parse_subscribe_reply(&reply).unwrap_err().to_string();
            assert!(err.contains(expected), "{reply}: {err}");
        }
    }

    #[test]
    fn endpoints_bracket_ipv6() {
        assert_eq!(endpoint("127.0.0.1", 1), "tcp://127.0.0.1:1");
        assert_eq!(endpoint("::1", 2), "tcp://[::1]:2");
        assert_eq!(endpoint("localhost", 3), "tcp://localhost:3");
    }
}
