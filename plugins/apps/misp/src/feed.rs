//! MISP's ZeroMQ feed → indicators on the bus (spec `upstream.md` §6.2).
//!
//! A SUB socket connects to MISP's publisher and subscribes to `misp_json_attribute`; ZeroMQ
//! reconnects by itself when MISP restarts. Each frame is `misp_json_attribute <json>`; the
//! document is filtered ([`crate::filter`]) and mapped ([`crate::attribute`]). A frame that is
//! not such a document is logged (throttled) and dropped; the feed goes on.

use serde_json::{Map, Value};
use threatbus_core::throttle::LogThrottle;
use threatbus_core::{Body, BusHandle, Message};
use threatbus_stix::Indicator;
use tokio_util::sync::CancellationToken;

use crate::attribute::{self, Action, Skip};
use crate::filter::{self, FilterEntry, Rejected};

/// The topic MISP publishes attribute notifications on.
pub const ATTRIBUTE_TOPIC: &str = "misp_json_attribute";

/// How often the receiving thread looks at the stop token, in milliseconds.
const POLL_MS: i32 = 100;

/// What a frame from the feed was.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Indicator(Box<Indicator>),
    /// A valid notification that is not for the bus (filtered out, `to_ids` false).
    Skipped(String),
}

/// Reads one frame of the feed.
pub fn decode(frame: &[u8], filters: &[FilterEntry]) -> Result<Decoded, String> {
    let json = match frame.iter().position(|b| *b == b' ') {
        Some(space) => &frame[space + 1..],
        None => return Err("no space between topic and document".into()),
    };
    let message: Map<String, Value> =
        serde_json::from_slice(json).map_err(|err| format!("not a JSON object: {err}"))?;
    match filter::passes(filters, &message) {
        Ok(()) => {}
        Err(Rejected::NoMatch) => return Ok(Decoded::Skipped("filtered out".into())),
        Err(Rejected::Incomplete(what)) => return Err(format!("no {what}")),
    }
    let action = message
        .get("action")
        .and_then(Value::as_str)
        .ok_or("no action")?;
    let action = Action::parse(action).ok_or_else(|| format!("unknown action {action:?}"))?;
    let attribute = message
        .get("Attribute")
        .and_then(Value::as_object)
        .ok_or("no Attribute")?;
    match attribute::indicator(attribute, action) {
        Ok(indicator) => Ok(Decoded::Indicator(Box::new(indicator))),
        Err(Skip::NotForDetection) => Ok(Decoded::Skipped(Skip::NotForDetection.to_string())),
        Err(err) => Err(err.to_string()),
    }
}

/// Receives from MISP until `stop` fires; runs on its own thread.
pub fn run(
    endpoint: String,
    filters: Vec<FilterEntry>,
    bus: BusHandle,
    stop: CancellationToken,
) -> Result<(), String> {
    let context = zmq::Context::new();
    let socket = context
        .socket(zmq::SUB)
        .map_err(|err| format!("ZeroMQ: {err}"))?;
    let prepared = socket
        .set_rcvtimeo(POLL_MS)
        .and_then(|()| socket.set_linger(0))
        .and_then(|()| socket.set_maxmsgsize(16 << 20))
        .and_then(|()| socket.set_subscribe(ATTRIBUTE_TOPIC.as_bytes()))
        .and_then(|()| socket.connect(&endpoint));
    prepared.map_err(|err| format!("connecting to MISP's ZeroMQ feed at {endpoint}: {err}"))?;
    tracing::info!(%endpoint, filters = filters.len(), "MISP feed connecting");
    let mut throttle = LogThrottle::default();
    let (mut published, mut skipped, mut invalid) = (0u64, 0u64, 0u64);
    let mut frame = zmq::Message::new();
    while threatbus_zmq_client::recv_until_stopped(&socket, &mut frame, &stop)
        .map_err(|err| format!("MISP feed socket failed: {err}"))?
    {
        match decode(&frame, &filters) {
            Ok(Decoded::Indicator(indicator)) => {
                tracing::debug!(id = %indicator.id.as_str(), pattern = %indicator.pattern, "indicator from MISP");
                if bus
                    .blocking_publish(Message::new(Body::Indicator(*indicator)))
                    .is_err()
                {
                    break;
                }
                published += 1;
            }
            Ok(Decoded::Skipped(why)) => {
                skipped += 1;
                tracing::debug!(reason = %why, "MISP attribute not published");
            }
            Err(why) => {
                invalid += 1;
                bus.record_rejected_input();
                if let Some(suppressed) = throttle.allow() {
                    let preview =
                        String::from_utf8_lossy(&frame[..frame.len().min(200)]).into_owned();
                    tracing::warn!(reason = %why, frame = %preview, suppressed, "dropped an attribute from MISP");
                }
            }
        }
    }
    tracing::info!(published, skipped, invalid, "MISP feed stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Spec §6.8 fixture 3, the integration test's frame.
    fn frame(action: &str, kind: &str, to_ids: bool) -> Vec<u8> {
        let document = json!({
            "Attribute": {
                "id": "15", "event_id": "1", "object_id": "0", "object_relation": null,
                "category": "Network activity", "type": kind, "value1": "example.com",
                "value2": "", "to_ids": to_ids, "uuid": "5e1f2787-fcfc-4718-a58a-00b4c0a82f06",
                "timestamp": "1614599635", "distribution": "5", "sharing_group_id": "0",
                "comment": "", "deleted": false, "disable_correlation": false,
                "first_seen": null, "last_seen": null, "value": "example.com", "Tag": []
            },
            "Event": {"id": "1", "org_id": "1", "orgc_id": "1", "Orgc": {"id": "1", "name": "ORGNAME"}},
            "action": action
        });
        format!("{ATTRIBUTE_TOPIC} {document}").into_bytes()
    }

    #[test]
    fn the_fixture_frame_becomes_the_expected_indicator() {
        let Ok(Decoded::Indicator(indicator)) = decode(&frame("add", "domain", true), &[]) else {
            panic!("no indicator");
        };
        assert_eq!(
            indicator.id.as_str(),
            "indicator--5e1f2787-fcfc-4718-a58a-00b4c0a82f06"
        );
        assert_eq!(indicator.pattern, "[domain-name:value = 'example.com']");
        assert_eq!(indicator.pattern_type, "stix");
        assert_eq!(
            indicator.created.to_stix_string(3),
            "2021-03-01T11:53:55.000Z"
        );
    }

    #[test]
    fn skips_and_garbage() {
        let only_urls: Vec<FilterEntry> =
            serde_json::from_value(json!([{"types": ["url"]}])).unwrap();
        assert!(matches!(
            decode(&frame("add", "domain", true), &only_urls),
            Ok(Decoded::Skipped(_))
        ));
        assert!(matches!(
            decode(&frame("add", "domain", false), &[]),
            Ok(Decoded::Skipped(_))
        ));
        for bad in [
            b"misp_json_attribute".to_vec(),
            b"misp_json_attribute not json".to_vec(),
            b"misp_json_attribute [1]".to_vec(),
            b"misp_json_attribute {\"Attribute\": {}, \"Event\": {}}".to_vec(),
            frame("INVALID_ACTION", "domain", true),
            frame("add", "port", true),
            b"misp_json_attribute \xff\xfe".to_vec(),
        ] {
            assert!(
                decode(&bad, &[]).is_err(),
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
    }
}
