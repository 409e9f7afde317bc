//! Apps → bus: decodes frames from the SUB socket and publishes them.
//!
//! A frame is `<topic> <json>`, split at the first space. Topics starting with `stix2/` carry a
//! STIX 2.1 Indicator or Sighting (routed by its type, whatever the topic says); the topic
//! `threatbus/snapshotenvelope` carries a snapshot envelope. Anything else is logged, counted
//! and dropped; the bus keeps serving.

use threatbus_core::throttle::LogThrottle;
use threatbus_core::{BusHandle, Message};

use crate::error::{FrameError, ZmqAppError};
use tokio_util::sync::CancellationToken;

/// The prefixes the SUB socket subscribes to.
pub(crate) const SUBSCRIBED_PREFIXES: [&str; 2] = ["stix2/", "threatbus/snapshotenvelope"];

/// Decodes one frame into a bus message.
pub fn decode_frame(frame: &[u8]) -> Result<Message, FrameError> {
    let space = frame
        .iter()
        .position(|b| *b == b' ')
        .ok_or(FrameError::NoSpace)?;
    let (topic, payload) = (&frame[..space], &frame[space + 1..]);
    if std::str::from_utf8(topic).is_err() {
        return Err(FrameError::TopicNotUtf8);
    }
    if topic.starts_with(b"stix2/") {
        Ok(Message::from_stix_json(payload)?)
    } else if topic == b"threatbus/snapshotenvelope" {
        Ok(Message::from_envelope_json(payload)?)
    } else {
        Err(FrameError::UnexpectedTopic)
    }
}

/// The topic of a frame, for log lines.
fn topic_of(frame: &[u8]) -> String {
    let end = frame
        .iter()
        .position(|b| *b == b' ')
        .unwrap_or(frame.len())
        .min(64);
    String::from_utf8_lossy(&frame[..end]).into_owned()
}

/// Receives until `stop` fires or the bus stops.
pub(crate) fn run(
    socket: zmq::Socket,
    bus: BusHandle,
    stop: CancellationToken,
) -> Result<(), ZmqAppError> {
    let mut throttle = LogThrottle::default();
    let mut reject = |topic: String, reason: &dyn std::fmt::Display| {
        bus.record_rejected_input();
        if let Some(suppressed) = throttle.allow() {
            tracing::warn!(
                topic,
                %reason,
                suppressed,
                "dropped invalid message from a ZeroMQ app"
            );
        }
    };
    // One reused message buffer: ZeroMQ hands over its bytes without a copy into a Vec.
    let mut frame = zmq::Message::new();
    while threatbus_zmq_client::recv_until_stopped(&socket, &mut frame, &stop).map_err(
        |source| ZmqAppError::Socket {
            socket: "sub",
            source,
        },
    )? {
        if frame.get_more() {
            let topic = topic_of(&frame);
            while frame.get_more() {
                if let Err(err) = socket.recv(&mut frame, 0) {
                    tracing::debug!(error = %err, "could not read the rest of a multi-part message");
                    break;
                }
            }
            reject(topic, &"multi-part message");
            continue;
        }
        match decode_frame(&frame) {
            Ok(message) => {
                tracing::trace!(topic = message.topic(), "received from a ZeroMQ app");
                if bus.blocking_publish(message).is_err() {
                    break;
                }
            }
            Err(reason) => reject(topic_of(&frame), &reason),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDICATOR: &str = r#"{"type":"indicator","spec_version":"2.1","id":"indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc","created":"2020-06-23T12:34:56.000Z","modified":"2020-06-23T12:34:56.000Z","pattern":"[ipv4-addr:value = '6.6.6.6']","pattern_type":"stix"}"#;

    #[test]
    fn routes_by_object_type_not_by_topic() {
        let sighting = r#"{"type":"sighting","spec_version":"2.1","id":"sighting--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc","sighting_of_ref":"indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc"}"#;
        let message = decode_frame(format!("stix2/indicator {sighting}").as_bytes()).unwrap();
        assert_eq!(message.topic(), "stix2/sighting");
        let message = decode_frame(format!("stix2/whatever {INDICATOR}").as_bytes()).unwrap();
        assert_eq!(message.topic(), "stix2/indicator");
    }

    #[test]
    fn rejects_garbage_frames() {
        let envelope = format!(
            r#"{{"type":"snapshotenvelope","snapshot_type":1,"snapshot_id":"x","body":{INDICATOR}}}"#
        );
        assert!(decode_frame(format!("threatbus/snapshotenvelope {envelope}").as_bytes()).is_ok());
        for bad in [
            "stix2/indicator".to_owned(),
            "stix2/indicator {nope".to_owned(),
            "stix2/indicator []".to_owned(),
            format!("threatbus/snapshotenvelopeX {envelope}"),
            format!("threatbus/snapshotenvelope {INDICATOR}"),
            format!("stix2/indicator {envelope}"),
            "stix2/indicator {\"type\":\"malware\"}".to_owned(),
        ] {
            assert!(decode_frame(bad.as_bytes()).is_err(), "{bad} accepted");
        }
        assert!(decode_frame(b"stix2/indicator \xff\xfe").is_err());
        assert!(decode_frame(format!("stix2/\u{fffd} {INDICATOR}").as_bytes()).is_ok());
        let mut non_utf8 = b"stix2/\xff\xfe ".to_vec();
        non_utf8.extend_from_slice(INDICATOR.as_bytes());
        assert!(decode_frame(&non_utf8).is_err());
    }
}
