//! Bus messages and their JSON encodings.
//!
//! A [`Message`] is parsed and validated once where it enters the bus and then shared: cloning
//! is a reference-count increment, and its canonical JSON bytes are computed once and kept
//! beside the parsed form, so fanning a message out to N subscribers never re-serialises it.
//!
//! Encodings (upstream spec §2.2/§2.3):
//! * `{"type":"snapshotrequest","snapshot_type":1|2,"snapshot_id":"…","snapshot":<seconds>}`
//! * `{"type":"snapshotenvelope","snapshot_type":1|2,"snapshot_id":"…","body":{…STIX…}}`

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use jiff::SignedDuration;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use thiserror::Error;
use threatbus_stix::{Indicator, Sighting, StixError, StixObject};

use crate::budget::{Charge, Chargeable, MemoryBudget};
use crate::topic;

/// The kind of data a snapshot asks for (`snapshot_type` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Wire value 1.
    Indicator = 1,
    /// Wire value 2.
    Sighting = 2,
}

impl MessageType {
    fn from_wire(value: &Value) -> Option<Self> {
        match value.as_i64()? {
            1 => Some(Self::Indicator),
            2 => Some(Self::Sighting),
            _ => None,
        }
    }
}

/// "Send me what you have of `snapshot_type` from the last `snapshot`", fanned out to every
/// app that can answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRequest {
    pub snapshot_type: MessageType,
    pub snapshot_id: String,
    /// How far back to look. Printed as whole seconds (truncated toward zero); may be negative.
    pub snapshot: SignedDuration,
}

/// One answer to a snapshot request. Only its `body` reaches the requester.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotEnvelope {
    pub snapshot_type: MessageType,
    pub snapshot_id: String,
    /// The Indicator or Sighting, itself a ready-to-send message.
    pub body: Message,
}

/// What a message carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Indicator(Indicator),
    Sighting(Sighting),
    SnapshotRequest(SnapshotRequest),
    SnapshotEnvelope(SnapshotEnvelope),
}

impl Body {
    /// The routing topic, derived from the type alone.
    pub fn topic(&self) -> &'static str {
        topic::ALL[self.topic_index()]
    }

    /// Index of [`Body::topic`] in [`topic::ALL`].
    pub fn topic_index(&self) -> usize {
        match self {
            Self::Indicator(_) => 0,
            Self::Sighting(_) => 1,
            Self::SnapshotRequest(_) => 2,
            Self::SnapshotEnvelope(_) => 3,
        }
    }

    /// The last path segment of the topic (`indicator`, `sighting`, `snapshotrequest`,
    /// `snapshotenvelope`), which is also the `type` of the JSON object.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Indicator(_) => "indicator",
            Self::Sighting(_) => "sighting",
            Self::SnapshotRequest(_) => "snapshotrequest",
            Self::SnapshotEnvelope(_) => "snapshotenvelope",
        }
    }
}

/// A validated message with its canonical JSON, shared by reference.
#[derive(Clone)]
pub struct Message(Arc<Inner>);

struct Inner {
    body: Body,
    json: Bytes,
    /// The memory budget this message counts against while it is alive, once queued.
    charge: std::sync::OnceLock<Charge>,
}

/// Why bytes could not become a message.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("expected a JSON object")]
    NotAnObject,
    #[error("invalid STIX object: {0}")]
    Stix(#[from] StixError),
    #[error("unexpected message type {0:?}")]
    UnexpectedType(String),
    #[error("{kind}: missing or invalid `{key}`")]
    Field {
        kind: &'static str,
        key: &'static str,
    },
}

impl Message {
    /// Wraps a body, serialising it once.
    pub fn new(body: Body) -> Self {
        let mut json = encode(&body);
        // The serialiser grows its buffer by doubling; a queued message should not carry the
        // spare half around.
        json.shrink_to_fit();
        let json = Bytes::from(json);
        Self(Arc::new(Inner {
            body,
            json,
            charge: std::sync::OnceLock::new(),
        }))
    }

    /// What the message is estimated to cost in memory while queued: its JSON, its parsed form
    /// (about twice the JSON) and 256 bytes of bookkeeping.
    pub fn cost(&self) -> usize {
        self.0.json.len().saturating_mul(3).saturating_add(256)
    }

    /// Whether the message already counts against a memory budget.
    pub fn is_charged(&self) -> bool {
        self.0.charge.get().is_some()
    }

    /// Wraps a STIX object.
    pub fn from_stix(object: StixObject) -> Self {
        Self::new(match object {
            StixObject::Indicator(i) => Body::Indicator(i),
            StixObject::Sighting(s) => Body::Sighting(s),
        })
    }

    /// Decodes any bus message, dispatching on its `type`. STIX objects and envelopes are read
    /// without a JSON tree, exactly as [`Message::from_stix_json`] and
    /// [`Message::from_envelope_json`] read them, so every way in gives the same encoding.
    pub fn from_json(json: &[u8]) -> Result<Self, DecodeError> {
        match peek_type(json).as_deref() {
            Some("indicator") | Some("sighting") => Self::from_stix_json(json),
            Some("snapshotenvelope") => Self::from_envelope_json(json),
            _ => Self::from_value(parse_json(json)?),
        }
    }

    /// Decodes an Indicator or a Sighting; anything else is an error.
    pub fn from_stix_json(json: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self::from_stix(StixObject::from_slice(json)?))
    }

    /// An Indicator or a Sighting this bus encoded and validated before, read back from its
    /// store: `json` is kept as it is (no new encoding, so it is byte for byte what was routed)
    /// and the indicator's pattern is not checked again.
    pub fn from_stored_json(json: Bytes) -> Result<Self, DecodeError> {
        let body = match StixObject::from_stored_slice(&json)? {
            StixObject::Indicator(i) => Body::Indicator(i),
            StixObject::Sighting(s) => Body::Sighting(s),
        };
        Ok(Self(Arc::new(Inner {
            body,
            json,
            charge: std::sync::OnceLock::new(),
        })))
    }

    /// Decodes a snapshot envelope; anything else is an error.
    pub fn from_envelope_json(json: &[u8]) -> Result<Self, DecodeError> {
        // The body stays JSON text until it is read as a STIX object, as on every other way in.
        let raw: HashMap<String, Box<RawValue>> = match serde_json::from_slice(json) {
            Ok(raw) => raw,
            Err(err) if err.is_data() => return Err(DecodeError::NotAnObject),
            Err(err) => return Err(DecodeError::Json(err.to_string())),
        };
        let value = |key: &str| {
            raw.get(key)
                .and_then(|v| serde_json::from_str::<Value>(v.get()).ok())
        };
        match value("type").as_ref().and_then(Value::as_str) {
            Some("snapshotenvelope") => {}
            other => return Err(DecodeError::UnexpectedType(other.unwrap_or("").to_owned())),
        }
        let mut head = Map::new();
        for key in ["snapshot_type", "snapshot_id"] {
            if let Some(v) = value(key) {
                head.insert(key.to_owned(), v);
            }
        }
        let body = match raw.get("body") {
            Some(body) if body.get().starts_with('{') => {
                Message::from_stix(StixObject::from_slice(body.get().as_bytes())?)
            }
            _ => {
                return Err(DecodeError::Field {
                    kind: "snapshotenvelope",
                    key: "body",
                });
            }
        };
        envelope(&head, body)
    }

    /// Decodes any bus message from a parsed JSON value.
    pub fn from_value(value: Value) -> Result<Self, DecodeError> {
        let Value::Object(map) = value else {
            return Err(DecodeError::NotAnObject);
        };
        match map.get("type").and_then(Value::as_str) {
            Some("indicator") | Some("sighting") => {
                Ok(Self::from_stix(StixObject::from_value(Value::Object(map))?))
            }
            Some("snapshotrequest") => decode_request(map),
            Some("snapshotenvelope") => decode_envelope(map),
            other => Err(DecodeError::UnexpectedType(other.unwrap_or("").to_owned())),
        }
    }

    /// The parsed message.
    pub fn body(&self) -> &Body {
        &self.0.body
    }

    /// The canonical JSON encoding, computed once.
    pub fn json(&self) -> &Bytes {
        &self.0.json
    }

    /// The routing topic.
    pub fn topic(&self) -> &'static str {
        self.0.body.topic()
    }

    /// Whether two handles point at the same shared message (no comparison of contents).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.ptr_eq(other) || self.0.body == other.0.body
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0.body, f)
    }
}

/// The `type` of a JSON object (the last one, as a JSON reader takes duplicates), read without
/// building a tree; `None` if the text is not an object or has no string `type`.
fn peek_type(json: &[u8]) -> Option<String> {
    struct TypeOf;
    impl<'de> serde::de::Visitor<'de> for TypeOf {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "type" {
                    found = match map.next_value::<Value>()? {
                        Value::String(ty) => Some(ty),
                        _ => None,
                    };
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    serde::Deserializer::deserialize_map(&mut deserializer, TypeOf)
        .ok()
        .flatten()
}

fn parse_json(json: &[u8]) -> Result<Value, DecodeError> {
    serde_json::from_slice(json).map_err(|e| DecodeError::Json(e.to_string()))
}

fn decode_common(
    map: &Map<String, Value>,
    kind: &'static str,
) -> Result<(MessageType, String), DecodeError> {
    let snapshot_type = map
        .get("snapshot_type")
        .and_then(MessageType::from_wire)
        .ok_or(DecodeError::Field {
            kind,
            key: "snapshot_type",
        })?;
    let snapshot_id = map
        .get("snapshot_id")
        .and_then(Value::as_str)
        .ok_or(DecodeError::Field {
            kind,
            key: "snapshot_id",
        })?;
    Ok((snapshot_type, snapshot_id.to_owned()))
}

fn decode_request(map: Map<String, Value>) -> Result<Message, DecodeError> {
    const KIND: &str = "snapshotrequest";
    let (snapshot_type, snapshot_id) = decode_common(&map, KIND)?;
    let missing = DecodeError::Field {
        kind: KIND,
        key: "snapshot",
    };
    let snapshot = match map.get("snapshot") {
        Some(Value::Number(n)) if n.is_i64() => SignedDuration::from_secs(n.as_i64().unwrap_or(0)),
        Some(Value::Number(n)) => n
            .as_f64()
            .and_then(|secs| SignedDuration::try_from_secs_f64(secs).ok())
            .ok_or(missing)?,
        _ => return Err(missing),
    };
    Ok(Message::new(Body::SnapshotRequest(SnapshotRequest {
        snapshot_type,
        snapshot_id,
        snapshot,
    })))
}

fn decode_envelope(mut map: Map<String, Value>) -> Result<Message, DecodeError> {
    let body = match map.remove("body") {
        Some(body @ Value::Object(_)) => Message::from_stix(StixObject::from_value(body)?),
        _ => {
            return Err(DecodeError::Field {
                kind: "snapshotenvelope",
                key: "body",
            });
        }
    };
    envelope(&map, body)
}

/// An envelope from its `snapshot_type`/`snapshot_id` and its decoded body.
fn envelope(head: &Map<String, Value>, body: Message) -> Result<Message, DecodeError> {
    let (snapshot_type, snapshot_id) = decode_common(head, "snapshotenvelope")?;
    Ok(Message::new(Body::SnapshotEnvelope(SnapshotEnvelope {
        snapshot_type,
        snapshot_id,
        body,
    })))
}

/// Serialises a body. Envelopes splice in their body's already-encoded JSON.
fn encode(body: &Body) -> Vec<u8> {
    // Serialising these types into a Vec cannot fail: every map key is a string.
    match body {
        Body::Indicator(i) => serde_json::to_vec(i).unwrap_or_default(),
        Body::Sighting(s) => serde_json::to_vec(s).unwrap_or_default(),
        Body::SnapshotRequest(r) => {
            let value = serde_json::json!({
                "type": "snapshotrequest",
                "snapshot_type": r.snapshot_type as u8,
                "snapshot_id": r.snapshot_id,
                "snapshot": r.snapshot.as_secs(),
            });
            value.to_string().into_bytes()
        }
        Body::SnapshotEnvelope(e) => {
            let head = serde_json::json!({
                "type": "snapshotenvelope",
                "snapshot_type": e.snapshot_type as u8,
                "snapshot_id": e.snapshot_id,
            })
            .to_string();
            let body = e.body.json();
            let mut out = Vec::with_capacity(head.len() + body.len() + 8);
            out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
            out.extend_from_slice(b",\"body\":");
            out.extend_from_slice(body);
            out.push(b'}');
            out
        }
    }
}

impl Chargeable for Message {
    fn cost(&self) -> usize {
        Message::cost(self)
    }

    fn is_charged(&self) -> bool {
        Message::is_charged(self)
    }

    fn charge(&self, budget: Arc<MemoryBudget>) {
        let bytes = self.cost();
        self.0.charge.get_or_init(|| {
            budget.add(bytes);
            Charge { budget, bytes }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const INDICATOR_ID: &str = "indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc";

    #[test]
    fn a_stored_message_keeps_its_bytes_and_reads_as_the_routed_one() {
        let routed = Message::from_value(json!({
            "type": "indicator", "spec_version": "2.1", "id": INDICATOR_ID,
            "created": "2020-06-23T12:34:56.000Z", "modified": "2020-06-23T12:34:56.000Z",
            "pattern": "[ipv4-addr:value = '6.6.6.6']", "pattern_type": "stix", "x_a": [1, 2]
        }))
        .unwrap();
        let stored = Message::from_stored_json(routed.json().clone()).unwrap();
        assert!(
            stored.json().as_ptr() == routed.json().as_ptr(),
            "the bytes are kept"
        );
        assert_eq!(stored, routed);
        // Validated once, on the way in: not again.
        let odd = Bytes::from_static(br#"{"type":"indicator","spec_version":"2.1","id":"indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc","created":"2020-06-23T12:34:56.000Z","modified":"2020-06-23T12:34:56.000Z","pattern":"not a pattern","pattern_type":"stix"}"#);
        assert!(Message::from_stix_json(&odd).is_err());
        assert_eq!(Message::from_stored_json(odd.clone()).unwrap().json(), &odd);
        // Still only Indicators and Sightings.
        assert!(Message::from_stored_json(Bytes::from_static(b"{\"type\":\"note\"}")).is_err());
    }

    fn indicator() -> Value {
        json!({
            "type": "indicator", "spec_version": "2.1", "id": INDICATOR_ID,
            "created": "2020-06-23T12:34:56.000Z", "modified": "2020-06-23T12:34:56.000Z",
            "pattern": "[ipv4-addr:value = '6.6.6.6']", "pattern_type": "stix2"
        })
    }

    fn sighting() -> Value {
        json!({
            "type": "sighting", "spec_version": "2.1",
            "id": "sighting--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc",
            "created": "2020-06-23T12:34:56.000Z", "modified": "2020-06-23T12:34:56.000Z",
            "sighting_of_ref": INDICATOR_ID,
            "x_threatbus_sighting_context": {"ts": 1593866400.1, "uid": "CKzgfA", "id.orig_h": null, "nested": {"list": [1, {"a": "b"}]}},
            "x_threatbus_indicator": indicator(),
            "x_threatbus_source": "VAST"
        })
    }

    fn json_of(message: &Message) -> Value {
        serde_json::from_slice(message.json()).unwrap()
    }

    /// 42 days 23 hours 13 minutes 37 seconds, upstream's fixture duration.
    const FIXTURE_SECONDS: i64 = 42 * 86400 + 23 * 3600 + 13 * 60 + 37;

    #[test]
    fn every_way_in_gives_the_same_encoding() {
        // Found by fuzzing: the generic decoder normalised a `\uXXXX` escape that the STIX
        // decoder kept, so re-decoding our own encoding changed it.
        let indicator = r#"{"type":"indicator","spec_version":"2.1","id":"indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc","created":"2020-06-23T12:34:56.000Z","modified":"2020-06-23T12:34:56.000Z","pattern":"[ipv4-addr:value = '6.6.6.6']","pattern_type":"stix","x_text":"caf\u00e9","x_list":[ 1, 2 ],"x_n":1e83}"#;
        let stix = Message::from_stix_json(indicator.as_bytes()).unwrap();
        let any = Message::from_json(indicator.as_bytes()).unwrap();
        assert_eq!(any.json(), stix.json());
        assert!(
            String::from_utf8_lossy(stix.json())
                .contains(r#""x_text":"caf\u00e9","x_list":[ 1, 2 ],"x_n":1e83"#)
        );
        let envelope = format!(
            r#"{{"type":"snapshotenvelope","snapshot_type":1,"snapshot_id":"s","body":{indicator}}}"#
        );
        for decoded in [
            Message::from_json(envelope.as_bytes()).unwrap(),
            Message::from_envelope_json(envelope.as_bytes()).unwrap(),
        ] {
            let Body::SnapshotEnvelope(e) = decoded.body() else {
                panic!("not an envelope")
            };
            assert_eq!(e.body.json(), stix.json());
            assert_eq!(
                Message::from_json(decoded.json()).unwrap().json(),
                decoded.json()
            );
        }
        assert!(matches!(
            Message::from_envelope_json(b"[1]"),
            Err(DecodeError::NotAnObject)
        ));
        assert!(
            Message::from_envelope_json(
                br#"{"type":"snapshotenvelope","snapshot_type":1,"snapshot_id":"s","body":[1]}"#
            )
            .is_err()
        );
    }

    #[test]
    fn snapshot_request_encoding_matches_upstream() {
        let message = Message::new(Body::SnapshotRequest(SnapshotRequest {
            snapshot_type: MessageType::Sighting,
            snapshot_id: "SNAPSHOT_UUID".into(),
            snapshot: SignedDuration::from_secs(FIXTURE_SECONDS),
        }));
        assert_eq!(
            json_of(&message),
            json!({"type": "snapshotrequest", "snapshot_type": 2, "snapshot_id": "SNAPSHOT_UUID", "snapshot": 3712417})
        );
        assert_eq!(message.topic(), "threatbus/snapshotrequest");
        let decoded = Message::from_json(message.json()).unwrap();
        assert_eq!(decoded, message);
    }

    #[test]
    fn snapshot_request_decodes_float_seconds_and_truncates_on_output() {
        let decoded = Message::from_json(
            br#"{"snapshot": 3712417.9, "snapshot_id": "SNAPSHOT_UUID", "snapshot_type": 2, "type": "snapshotrequest"}"#,
        )
        .unwrap();
        let Body::SnapshotRequest(request) = decoded.body() else {
            panic!("not a request")
        };
        assert_eq!(request.snapshot.as_millis(), 3_712_417_900);
        assert_eq!(json_of(&decoded)["snapshot"], 3712417);
        let negative = Message::from_json(
            br#"{"type":"snapshotrequest","snapshot_type":1,"snapshot_id":"x","snapshot":-2592000.5}"#,
        )
        .unwrap();
        assert_eq!(json_of(&negative)["snapshot"], -2592000);
    }

    #[test]
    fn snapshot_request_needs_every_key() {
        for bad in [
            json!({"type": "snapshotrequest", "snapshot_id": "a", "snapshot": 1}),
            json!({"type": "snapshotrequest", "snapshot_type": 1, "snapshot": 1}),
            json!({"type": "snapshotrequest", "snapshot_type": 1, "snapshot_id": "a"}),
            json!({"type": "snapshotrequest", "snapshot_type": 3, "snapshot_id": "a", "snapshot": 1}),
            json!({"type": "snapshotrequest", "snapshot_type": 1, "snapshot_id": 5, "snapshot": 1}),
            json!({"type": "snapshotrequest", "snapshot_type": 1, "snapshot_id": "a", "snapshot": "1"}),
        ] {
            assert!(Message::from_value(bad.clone()).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn snapshot_envelopes_encode_like_upstream_and_round_trip() {
        for (body, snapshot_type) in [(indicator(), 1), (sighting(), 2)] {
            let value = json!({"type": "snapshotenvelope", "snapshot_type": snapshot_type, "snapshot_id": "SNAPSHOT_UUID", "body": body});
            let message = Message::from_json(value.to_string().as_bytes()).unwrap();
            assert_eq!(json_of(&message), value);
            assert_eq!(message.topic(), "threatbus/snapshotenvelope");
            let Body::SnapshotEnvelope(envelope) = message.body() else {
                panic!("not an envelope")
            };
            assert_eq!(json_of(&envelope.body), body);
            assert_eq!(Message::from_json(message.json()).unwrap(), message);
        }
    }

    #[test]
    fn sighting_context_and_nested_indicator_survive() {
        let message = Message::from_stix_json(sighting().to_string().as_bytes()).unwrap();
        let out = json_of(&message);
        assert_eq!(
            out["x_threatbus_sighting_context"],
            sighting()["x_threatbus_sighting_context"]
        );
        assert_eq!(out["x_threatbus_indicator"], indicator());
        assert_eq!(out["x_threatbus_source"], "VAST");
        assert_eq!(message.topic(), "stix2/sighting");
    }

    #[test]
    fn envelope_needs_snapshot_type_id_and_a_stix_body() {
        for bad in [
            json!({"type": "snapshotenvelope", "snapshot_id": "a", "body": indicator()}),
            json!({"type": "snapshotenvelope", "snapshot_type": 1, "body": indicator()}),
            json!({"type": "snapshotenvelope", "snapshot_type": 1, "snapshot_id": "a"}),
            json!({"type": "snapshotenvelope", "snapshot_type": 1, "snapshot_id": "a", "body": "x"}),
            json!({"type": "snapshotenvelope", "snapshot_type": 1, "snapshot_id": "a", "body": {"type": "malware"}}),
        ] {
            assert!(Message::from_value(bad.clone()).is_err(), "{bad} accepted");
        }
        assert!(Message::from_envelope_json(indicator().to_string().as_bytes()).is_err());
        assert!(
            Message::from_stix_json(
                br#"{"type":"snapshotrequest","snapshot_type":1,"snapshot_id":"a","snapshot":1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn routing_topics_follow_the_type() {
        let indicator = Message::from_json(indicator().to_string().as_bytes()).unwrap();
        assert_eq!(indicator.topic(), "stix2/indicator");
        assert_eq!(indicator.body().kind(), "indicator");
        let clone = indicator.clone();
        assert!(clone.ptr_eq(&indicator));
        assert!(Message::from_json(b"[]").is_err());
        assert!(Message::from_json(b"{\"type\":\"foo\"}").is_err());
    }
}
