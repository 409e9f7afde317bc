//! Test objects both engines' tests store.

#![allow(dead_code)]

use serde_json::json;
use threatbus_core::Message;
use threatbus_store::Record;

/// "Now" for the snapshot queries of these tests.
pub const NOW: &str = "2030-01-10T00:00:00.000Z";

/// Nanoseconds since the epoch of a STIX timestamp.
pub fn ns(text: &str) -> i64 {
    i64::try_from(
        threatbus_core::stix::Timestamp::parse(text)
            .unwrap()
            .as_nanosecond(),
    )
    .unwrap()
}

/// Indicator number `n`, version `modified`, with `extra` properties.
pub fn indicator(n: u32, modified: &str, extra: serde_json::Value) -> Record {
    let mut object = json!({
        "type": "indicator", "spec_version": "2.1",
        "id": format!("indicator--00000000-0000-4000-8000-{n:012}"),
        "created": "2030-01-01T00:00:00.000Z", "modified": modified,
        "pattern": format!("[ipv4-addr:value = '10.0.0.{n}']"), "pattern_type": "stix",
        "valid_from": "2030-01-01T00:00:00Z"
    });
    if let (Some(object), Some(extra)) = (object.as_object_mut(), extra.as_object()) {
        object.extend(extra.clone());
    }
    Record::from_message(&Message::from_stix_json(object.to_string().as_bytes()).unwrap()).unwrap()
}

/// Indicators 2 to 4, none of which a snapshot at [`NOW`] answers with: #2 withdrawn by
/// `x_threatbus_update: REMOVE`, #3 by `revoked`, #4 expired (`valid_until` before `NOW`).
pub fn not_live() -> Vec<Record> {
    vec![
        indicator(
            2,
            "2030-01-06T00:00:00.000Z",
            json!({"x_threatbus_update": "REMOVE"}),
        ),
        indicator(3, "2030-01-06T00:00:00.000Z", json!({"revoked": true})),
        indicator(
            4,
            "2030-01-06T00:00:00.000Z",
            json!({"valid_until": "2030-01-09T00:00:00Z"}),
        ),
    ]
}

/// Sighting number `n`, created at `created`.
pub fn sighting(n: u32, created: &str) -> Record {
    let object = json!({
        "type": "sighting", "spec_version": "2.1",
        "id": format!("sighting--00000000-0000-4000-8000-{n:012}"),
        "created": created, "modified": created,
        "sighting_of_ref": "indicator--00000000-0000-4000-8000-000000000001"
    });
    Record::from_message(&Message::from_stix_json(object.to_string().as_bytes()).unwrap()).unwrap()
}
