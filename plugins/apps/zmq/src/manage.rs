//! The management protocol: JSON requests on the REP socket, one JSON reply each.
//!
//! Requests carry `action` (`subscribe`, `unsubscribe`, `heartbeat`), `topic` (a string, a list
//! of strings, or the p2p topic handed out on subscribe) and `snapshot` (days, default 0).
//! Decoding follows upstream's order exactly (spec §3.2): the payload is parsed, then `snapshot`
//! is converted with Python's `int()` semantics for *every* action, and only then is the action
//! looked at. Unlike upstream, a list subscription is validated as a whole before anything is
//! subscribed, so a bad element leaves nothing behind.

use serde_json::{Map, Value, json};

/// A decoded management request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Subscribe to every topic; `snapshot_days` 0 means no snapshot.
    Subscribe {
        topics: Vec<String>,
        snapshot_days: i64,
    },
    /// Forget the subscription behind this p2p topic.
    Unsubscribe { p2p_topic: String },
    /// Is the subscription behind this p2p topic still known?
    Heartbeat { p2p_topic: String },
}

/// A reply other than a successful subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    /// `{"status": "error"}`
    Error,
    /// `{"status": "unknown request"}`
    UnknownRequest,
}

impl Status {
    /// The reply's JSON text.
    pub fn to_json(self) -> String {
        let status = match self {
            Self::Success => "success",
            Self::Error => "error",
            Self::UnknownRequest => "unknown request",
        };
        json!({ "status": status }).to_string()
    }
}

/// The reply to a successful subscription.
pub fn subscribed_reply(p2p_topic: &str, pub_port: u16, sub_port: u16) -> String {
    json!({
        "topic": p2p_topic,
        "pub_port": pub_port,
        "sub_port": sub_port,
        "status": "success",
    })
    .to_string()
}

/// What one management request may carry (the `max_*` keys of `plugins.apps.zmq`), so that
/// a request's cost to the bus is bounded whoever sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one request.
    pub max_request_size: usize,
    /// Bytes of one topic.
    pub max_topic_length: usize,
    /// Topics in one subscribe request.
    pub max_topics_per_request: usize,
}

/// Why a request is refused: upstream's error replies, or a limit, named in the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Status(Status),
    /// `{"status": "error", "reason": "..."}`: which limit the request exceeds, or what failed.
    WithReason(String),
}

impl Refusal {
    /// The reply's JSON text.
    pub fn to_json(&self) -> String {
        match self {
            Self::Status(status) => status.to_json(),
            Self::WithReason(reason) => json!({ "status": "error", "reason": reason }).to_string(),
        }
    }
}

/// Decodes a request within `limits`: the size is checked before anything is parsed, topics
/// after.
pub fn decode_within(payload: &[u8], limits: &Limits) -> Result<Request, Refusal> {
    if payload.len() > limits.max_request_size {
        return Err(Refusal::WithReason(format!(
            "request of {} bytes exceeds max_request_size ({} bytes)",
            payload.len(),
            limits.max_request_size
        )));
    }
    let request = decode(payload).map_err(Refusal::Status)?;
    if let Request::Subscribe { topics, .. } = &request {
        if topics.len() > limits.max_topics_per_request {
            return Err(Refusal::WithReason(format!(
                "{} topics exceed max_topics_per_request ({})",
                topics.len(),
                limits.max_topics_per_request
            )));
        }
        if let Some(long) = topics.iter().find(|t| t.len() > limits.max_topic_length) {
            return Err(Refusal::WithReason(format!(
                "a topic of {} bytes exceeds max_topic_length ({} bytes)",
                long.len(),
                limits.max_topic_length
            )));
        }
    }
    Ok(request)
}

/// Decodes a request, or says which error reply it gets.
pub fn decode(payload: &[u8]) -> Result<Request, Status> {
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(payload) else {
        return Err(Status::Error);
    };
    let snapshot_days = match request.get("snapshot") {
        None => 0,
        Some(value) => python_int(value).ok_or(Status::Error)?,
    };
    match request.get("action").and_then(Value::as_str) {
        Some("subscribe") => {
            let topic = truthy_topic(&request)?;
            let topics = match topic {
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned).ok_or(Status::Error))
                    .collect::<Result<_, _>>()?,
                _ => return Err(Status::Error),
            };
            Ok(Request::Subscribe {
                topics,
                snapshot_days,
            })
        }
        Some("unsubscribe") => Ok(Request::Unsubscribe {
            p2p_topic: p2p_topic(&request)?,
        }),
        Some("heartbeat") => Ok(Request::Heartbeat {
            p2p_topic: p2p_topic(&request)?,
        }),
        _ => Err(Status::UnknownRequest),
    }
}

/// `topic` if present and truthy in Python's sense, else "unknown request".
fn truthy_topic(request: &Map<String, Value>) -> Result<&Value, Status> {
    let topic = request.get("topic").ok_or(Status::UnknownRequest)?;
    let truthy = match topic {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    };
    if truthy {
        Ok(topic)
    } else {
        Err(Status::UnknownRequest)
    }
}

fn p2p_topic(request: &Map<String, Value>) -> Result<String, Status> {
    truthy_topic(request)?
        .as_str()
        .map(str::to_owned)
        .ok_or(Status::Error)
}

/// Python's `int(value)` for a JSON value: integers as they are, floats truncated toward zero,
/// booleans as 0/1, strings holding a decimal integer (surrounding whitespace, a sign and
/// `_` between digits allowed). Everything else fails.
fn python_int(value: &Value) -> Option<i64> {
    match value {
        Value::Bool(b) => Some(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Some(i),
            None => {
                let f = n.as_f64()?;
                (f.is_finite() && f.abs() < 9.0e15).then(|| f.trunc() as i64)
            }
        },
        Value::String(s) => {
            let s = s.trim();
            let (sign, digits) = match s.strip_prefix('-') {
                Some(rest) => (-1, rest),
                None => (1, s.strip_prefix('+').unwrap_or(s)),
            };
            let well_formed = !digits.is_empty()
                && !digits.starts_with('_')
                && !digits.ends_with('_')
                && !digits.contains("__")
                && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_');
            if !well_formed {
                return None;
            }
            digits
                .replace('_', "")
                .parse::<i64>()
                .ok()
                .map(|n| sign * n)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_json(value: Value) -> Result<Request, Status> {
        decode(value.to_string().as_bytes())
    }

    #[test]
    fn limits_are_checked_and_named_in_the_reply() {
        let limits = Limits {
            max_request_size: 200,
            max_topic_length: 20,
            max_topics_per_request: 3,
        };
        let within = |value: Value| decode_within(value.to_string().as_bytes(), &limits);
        assert!(within(json!({"action": "subscribe", "topic": ["a", "b", "c"]})).is_ok());
        let reason = |refusal: Result<Request, Refusal>| match refusal {
            Err(Refusal::WithReason(reason)) => reason,
            other => panic!("{other:?}"),
        };
        let too_many = reason(within(
            json!({"action": "subscribe", "topic": ["a", "b", "c", "d"]}),
        ));
        assert_eq!(too_many, "4 topics exceed max_topics_per_request (3)");
        let too_long = reason(within(
            json!({"action": "subscribe", "topic": "x".repeat(21)}),
        ));
        assert_eq!(
            too_long,
            "a topic of 21 bytes exceeds max_topic_length (20 bytes)"
        );
        let too_big = reason(decode_within(&[b' '; 201], &limits));
        assert_eq!(
            too_big,
            "request of 201 bytes exceeds max_request_size (200 bytes)"
        );
        let reply: Value =
            serde_json::from_str(&Refusal::WithReason(too_big.clone()).to_json()).unwrap();
        assert_eq!(reply, json!({"status": "error", "reason": too_big}));
        // Other refusals keep upstream's replies.
        assert_eq!(
            decode_within(b"FOO", &limits),
            Err(Refusal::Status(Status::Error))
        );
        assert_eq!(
            Refusal::Status(Status::UnknownRequest).to_json(),
            r#"{"status":"unknown request"}"#
        );
    }

    #[test]
    fn every_error_row_of_the_protocol_table() {
        assert_eq!(decode(b"FOO"), Err(Status::Error));
        assert_eq!(decode(b""), Err(Status::Error));
        assert_eq!(decode(b"\xff\xfe"), Err(Status::Error));
        for not_object in [json!([1]), json!(5), json!("subscribe"), json!(null)] {
            assert_eq!(decode_json(not_object), Err(Status::Error));
        }
        for bad_snapshot in [
            json!("FOO"),
            json!(null),
            json!({}),
            json!([]),
            json!("1.5"),
            json!(""),
        ] {
            for action in ["subscribe", "unsubscribe", "heartbeat", "FOO"] {
                let request = json!({"action": action, "topic": "x", "snapshot": bad_snapshot});
                assert_eq!(
                    decode_json(request),
                    Err(Status::Error),
                    "{bad_snapshot} with {action}"
                );
            }
        }
        assert_eq!(
            decode_json(json!({"action": "FOO"})),
            Err(Status::UnknownRequest)
        );
        assert_eq!(decode_json(json!({})), Err(Status::UnknownRequest));
        assert_eq!(
            decode_json(json!({"action": 5, "topic": "x"})),
            Err(Status::UnknownRequest)
        );
        for action in ["subscribe", "unsubscribe", "heartbeat"] {
            for falsy in [
                json!(""),
                json!([]),
                json!(null),
                json!(0),
                json!(false),
                json!({}),
            ] {
                let request = json!({"action": action, "topic": falsy});
                assert_eq!(
                    decode_json(request),
                    Err(Status::UnknownRequest),
                    "{action} {falsy}"
                );
            }
            assert_eq!(
                decode_json(json!({"action": action})),
                Err(Status::UnknownRequest)
            );
        }
        assert_eq!(
            decode_json(json!({"action": "subscribe", "topic": ["stix2/indicator", 5]})),
            Err(Status::Error)
        );
        assert_eq!(
            decode_json(json!({"action": "subscribe", "topic": 5})),
            Err(Status::Error)
        );
        assert_eq!(
            decode_json(json!({"action": "unsubscribe", "topic": ["a"]})),
            Err(Status::Error)
        );
        assert_eq!(
            decode_json(json!({"action": "heartbeat", "topic": 7})),
            Err(Status::Error)
        );
    }

    #[test]
    fn successful_requests_decode_like_upstream_message_mapping() {
        assert_eq!(
            decode_json(json!({"action": "subscribe", "topic": "stix2/indicator"})),
            Ok(Request::Subscribe {
                topics: vec!["stix2/indicator".into()],
                snapshot_days: 0
            })
        );
        assert_eq!(
            decode_json(json!({"action": "subscribe", "topic": "TOPIC", "snapshot": 17})),
            Ok(Request::Subscribe {
                topics: vec!["TOPIC".into()],
                snapshot_days: 17
            })
        );
        assert_eq!(
            decode_json(
                json!({"action": "subscribe", "topic": ["stix2/sighting", "stix2/indicator", ""]})
            ),
            Ok(Request::Subscribe {
                topics: vec!["stix2/sighting".into(), "stix2/indicator".into(), "".into()],
                snapshot_days: 0
            })
        );
        assert_eq!(
            decode_json(json!({"action": "unsubscribe", "topic": "abc"})),
            Ok(Request::Unsubscribe {
                p2p_topic: "abc".into()
            })
        );
        assert_eq!(
            decode_json(json!({"action": "heartbeat", "topic": "abc", "snapshot": 3})),
            Ok(Request::Heartbeat {
                p2p_topic: "abc".into()
            })
        );
    }

    #[test]
    fn snapshot_uses_python_int_conversion() {
        let days = |value: Value| match decode_json(
            json!({"action": "subscribe", "topic": "t", "snapshot": value}),
        ) {
            Ok(Request::Subscribe { snapshot_days, .. }) => Some(snapshot_days),
            _ => None,
        };
        assert_eq!(days(json!(30)), Some(30));
        assert_eq!(days(json!("30")), Some(30));
        assert_eq!(days(json!(" +30 ")), Some(30));
        assert_eq!(days(json!("1_000")), Some(1000));
        assert_eq!(days(json!(1.9)), Some(1));
        assert_eq!(days(json!(-1.9)), Some(-1));
        assert_eq!(days(json!(true)), Some(1));
        assert_eq!(days(json!(-30)), Some(-30));
        assert_eq!(days(json!("-30")), Some(-30));
        assert_eq!(days(json!("_1")), None);
        assert_eq!(days(json!("1__0")), None);
        assert_eq!(days(json!(1e300)), None);
    }

    #[test]
    fn replies_are_upstream_json() {
        let parse = |s: String| serde_json::from_str::<Value>(&s).unwrap();
        assert_eq!(parse(Status::Error.to_json()), json!({"status": "error"}));
        assert_eq!(
            parse(Status::UnknownRequest.to_json()),
            json!({"status": "unknown request"})
        );
        assert_eq!(
            parse(Status::Success.to_json()),
            json!({"status": "success"})
        );
        assert_eq!(
            parse(subscribed_reply("abc", 13371, 13372)),
            json!({"topic": "abc", "pub_port": 13371, "sub_port": 13372, "status": "success"})
        );
    }
}
