//! Lossless STIX 2.1 Indicator and Sighting.
//!
//! Parsing takes the properties the bus understands out of the JSON object, validates them and
//! keeps every other property, in the order received and as the JSON text it arrived as, in
//! `extra`. Serialising writes the known properties first (`type`, `spec_version`, `id`,
//! `created`, `modified`, …) and then `extra`. Reading and validating single properties is in
//! [`crate::fields`].

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::fields::{Fields, describe, require_string, take_id, take_timestamp};
use crate::{Properties, SPEC_VERSION, StixError, StixId, Timestamp, pattern};

/// `x_threatbus_update` on an Indicator: absent means a new indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// The indicator changed; treat it as an add.
    Edit,
    /// Withdraw the indicator.
    Remove,
}

/// `x_threatbus_match_type` on a Sighting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    Live,
    Retro,
}

/// A STIX 2.1 Indicator.
#[derive(Debug, Clone, PartialEq)]
pub struct Indicator {
    pub id: StixId,
    pub created: Timestamp,
    pub modified: Timestamp,
    pub pattern: String,
    pub pattern_type: String,
    pub valid_from: Option<Timestamp>,
    /// Every other property (`name`, `labels`, custom `x_*`, extensions, …).
    pub extra: Properties,
}

/// A STIX 2.1 Sighting.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    pub id: StixId,
    pub created: Timestamp,
    pub modified: Timestamp,
    pub sighting_of_ref: StixId,
    pub first_seen: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
    /// Every other property (`count`, `x_threatbus_sighting_context`, …).
    pub extra: Properties,
}

/// An object the bus carries as a message body.
#[derive(Debug, Clone, PartialEq)]
pub enum StixObject {
    Indicator(Indicator),
    Sighting(Sighting),
}

impl StixObject {
    /// Parses an Indicator or a Sighting, deciding by its `type` property.
    pub fn from_value(value: Value) -> Result<Self, StixError> {
        let Value::Object(map) = value else {
            return Err(StixError::NotAnObject);
        };
        Self::from_fields(Fields::from_map(map))
    }

    /// Parses JSON text holding an Indicator or a Sighting. Reads the text in one pass, without
    /// building an intermediate JSON tree for the properties the bus reads.
    pub fn from_slice(json: &[u8]) -> Result<Self, StixError> {
        let fields: Fields =
            serde_json::from_slice(json).map_err(|e| StixError::Json(e.to_string()))?;
        Self::from_fields(fields)
    }

    /// Like [`StixObject::from_slice`], for an object this bus validated before (read back
    /// from its store): the indicator's pattern is not checked again.
    pub fn from_stored_slice(json: &[u8]) -> Result<Self, StixError> {
        let fields: Fields =
            serde_json::from_slice(json).map_err(|e| StixError::Json(e.to_string()))?;
        match fields.peek("type").and_then(Value::as_str) {
            Some("indicator") => Indicator::read(fields, false).map(Self::Indicator),
            _ => Self::from_fields(fields),
        }
    }

    fn from_fields(fields: Fields) -> Result<Self, StixError> {
        match fields.peek("type").and_then(Value::as_str) {
            Some("indicator") => Indicator::from_fields(fields).map(Self::Indicator),
            Some("sighting") => Sighting::from_fields(fields).map(Self::Sighting),
            Some(other) => Err(StixError::UnsupportedType(other.to_owned())),
            None => Err(StixError::Missing("type")),
        }
    }

    /// The object's identifier.
    pub fn id(&self) -> &StixId {
        match self {
            Self::Indicator(i) => &i.id,
            Self::Sighting(s) => &s.id,
        }
    }
}

/// The properties every STIX Domain Object and Relationship Object shares.
struct Common {
    id: StixId,
    created: Timestamp,
    modified: Timestamp,
}

impl Common {
    /// Takes and validates `type`, `spec_version`, `id`, `created`, `modified` out of `map`.
    /// Like the reference library, a missing `created` becomes the current time and a missing
    /// `modified` becomes `created`.
    fn take(map: &mut Fields, expected_type: &'static str) -> Result<Self, StixError> {
        let ty = require_string(map, "type")?;
        if ty != expected_type {
            return Err(StixError::TypeMismatch {
                expected: expected_type,
                got: ty,
            });
        }
        match map.take("spec_version") {
            Some(Value::String(v)) if v == SPEC_VERSION => {}
            Some(other) => return Err(StixError::SpecVersion(describe(&other))),
            None => return Err(StixError::Missing("spec_version")),
        }
        let id = take_id(map, "id")?;
        if id.object_type() != expected_type {
            return Err(StixError::Id {
                property: "id",
                value: id.to_string(),
                reason: "the identifier's type does not match the object's `type`",
            });
        }
        let created = take_timestamp(map, "created")?.unwrap_or_else(Timestamp::now);
        let modified = take_timestamp(map, "modified")?.unwrap_or(created);
        Ok(Self {
            id,
            created,
            modified,
        })
    }

    fn serialize_into<M: SerializeMap>(&self, map: &mut M, ty: &str) -> Result<(), M::Error> {
        map.serialize_entry("type", ty)?;
        map.serialize_entry("spec_version", SPEC_VERSION)?;
        map.serialize_entry("id", self.id.as_str())?;
        map.serialize_entry("created", &self.created.to_stix_string(3))?;
        map.serialize_entry("modified", &self.modified.to_stix_string(3))
    }
}

impl Indicator {
    /// Parses and validates an Indicator from a JSON object.
    pub fn from_map(map: Map<String, Value>) -> Result<Self, StixError> {
        Self::from_fields(Fields::from_map(map))
    }

    fn from_fields(map: Fields) -> Result<Self, StixError> {
        Self::read(map, true)
    }

    /// Reads the properties; checks the pattern only if `check_pattern`.
    fn read(mut map: Fields, check_pattern: bool) -> Result<Self, StixError> {
        let common = Common::take(&mut map, "indicator")?;
        let pattern = require_string(&mut map, "pattern")?;
        let pattern_type = require_string(&mut map, "pattern_type")?;
        if check_pattern {
            pattern::check(&pattern, &pattern_type).map_err(|reason| StixError::Pattern {
                pattern: pattern.clone(),
                reason,
            })?;
        }
        let valid_from = take_timestamp(&mut map, "valid_from")?;
        Ok(Self {
            id: common.id,
            created: common.created,
            modified: common.modified,
            pattern,
            pattern_type,
            valid_from,
            extra: map.into_extra(),
        })
    }

    /// A new indicator with a random id, `created` = `modified` = now.
    pub fn new(pattern: impl Into<String>, pattern_type: impl Into<String>) -> Self {
        let now = Timestamp::now();
        Self {
            id: StixId::new_random("indicator"),
            created: now,
            modified: now,
            pattern: pattern.into(),
            pattern_type: pattern_type.into(),
            valid_from: None,
            extra: Properties::new(),
        }
    }

    /// `x_threatbus_update`, if present and one of the known values.
    pub fn update(&self) -> Option<Operation> {
        match self.extra.get_str("x_threatbus_update")?.as_str() {
            "EDIT" => Some(Operation::Edit),
            "REMOVE" => Some(Operation::Remove),
            _ => None,
        }
    }
}

impl Sighting {
    /// Parses and validates a Sighting from a JSON object.
    pub fn from_map(map: Map<String, Value>) -> Result<Self, StixError> {
        Self::from_fields(Fields::from_map(map))
    }

    fn from_fields(mut map: Fields) -> Result<Self, StixError> {
        let common = Common::take(&mut map, "sighting")?;
        let sighting_of_ref = take_id(&mut map, "sighting_of_ref")?;
        let first_seen = take_timestamp(&mut map, "first_seen")?;
        let last_seen = take_timestamp(&mut map, "last_seen")?;
        Ok(Self {
            id: common.id,
            created: common.created,
            modified: common.modified,
            sighting_of_ref,
            first_seen,
            last_seen,
            extra: map.into_extra(),
        })
    }

    /// A new sighting of `sighting_of_ref` with a random id, `created` = `modified` = now.
    pub fn new(sighting_of_ref: StixId, last_seen: Option<Timestamp>) -> Self {
        let now = Timestamp::now();
        Self {
            id: StixId::new_random("sighting"),
            created: now,
            modified: now,
            sighting_of_ref,
            first_seen: None,
            last_seen,
            extra: Properties::new(),
        }
    }

    /// `x_threatbus_match_type`, if present and one of the known values.
    pub fn match_type(&self) -> Option<MatchType> {
        match self.extra.get_str("x_threatbus_match_type")?.as_str() {
            "LIVE" => Some(MatchType::Live),
            "RETRO" => Some(MatchType::Retro),
            _ => None,
        }
    }
}

impl Serialize for Indicator {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        Common {
            id: self.id.clone(),
            created: self.created,
            modified: self.modified,
        }
        .serialize_into(&mut map, "indicator")?;
        map.serialize_entry("pattern", &self.pattern)?;
        map.serialize_entry("pattern_type", &self.pattern_type)?;
        if let Some(valid_from) = &self.valid_from {
            map.serialize_entry("valid_from", &valid_from.to_stix_string(0))?;
        }
        self.extra.serialize_into(&mut map)?;
        map.end()
    }
}

impl Serialize for Sighting {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        Common {
            id: self.id.clone(),
            created: self.created,
            modified: self.modified,
        }
        .serialize_into(&mut map, "sighting")?;
        map.serialize_entry("sighting_of_ref", self.sighting_of_ref.as_str())?;
        if let Some(first_seen) = &self.first_seen {
            map.serialize_entry("first_seen", &first_seen.to_stix_string(0))?;
        }
        if let Some(last_seen) = &self.last_seen {
            map.serialize_entry("last_seen", &last_seen.to_stix_string(0))?;
        }
        self.extra.serialize_into(&mut map)?;
        map.end()
    }
}

impl Serialize for StixObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Indicator(i) => i.serialize(serializer),
            Self::Sighting(s) => s.serialize(serializer),
        }
    }
}

/// Deserialises through a JSON map and the validating constructor, so a serde user gets the same
/// checks as the bus.
macro_rules! deserialize_via_map {
    ($ty:ty) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let map = Map::<String, Value>::deserialize(deserializer)?;
                Self::from_map(map).map_err(serde::de::Error::custom)
            }
        }
    };
}
deserialize_via_map!(Indicator);
deserialize_via_map!(Sighting);

impl<'de> Deserialize<'de> for StixObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_value(value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn indicator_json() -> Value {
        json!({
            "type": "indicator",
            "spec_version": "2.1",
            "id": "indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc",
            "created": "2020-06-23T12:34:56.123Z",
            "modified": "2020-06-23T12:34:56.123Z",
            "pattern": "[ipv4-addr:value = '6.6.6.6']",
            "pattern_type": "stix",
            "valid_from": "2020-06-23T12:34:56Z",
            "name": "Ünïcødé ☃",
            "x_vendor_score": 7,
            "x_nested": {"a": [1, null, {"b": true}], "z": 1.5},
            "extensions": {"extension-definition--d83fce45-ef58-4c6c-a3f4-1fbc32e98c6e": {"extension_type": "property-extension", "rank": 5}},
            "x_threatbus_update": "REMOVE"
        })
    }

    #[test]
    fn indicator_round_trips_losslessly() {
        let original = indicator_json();
        let parsed = StixObject::from_value(original.clone()).unwrap();
        let StixObject::Indicator(ind) = &parsed else {
            panic!("not an indicator")
        };
        assert_eq!(ind.update(), Some(Operation::Remove));
        let written = serde_json::to_value(&parsed).unwrap();
        assert_eq!(written, original);
        assert_eq!(StixObject::from_value(written).unwrap(), parsed);
    }

    #[test]
    fn properties_of_the_other_type_keep_their_place() {
        // `pattern` means nothing on a sighting: it stays a plain property, where it was.
        let text = r#"{"type":"sighting","spec_version":"2.1","id":"sighting--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc","created":"2020-06-23T12:34:56.000Z","modified":"2020-06-23T12:34:56.000Z","sighting_of_ref":"indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc","x_a":1,"pattern":"p","x_b":2,"valid_from":"v","pattern_type":5,"x_c":3}"#;
        let from_text = StixObject::from_slice(text.as_bytes()).unwrap();
        assert_eq!(serde_json::to_string(&from_text).unwrap(), text);
        let from_value = StixObject::from_value(serde_json::from_str(text).unwrap()).unwrap();
        assert_eq!(from_value, from_text);
        // Keys in another order than ours: known ones move to the front, the rest keep order.
        let shuffled = r#"{"x_z":0,"sighting_of_ref":"indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc","pattern":"p","id":"sighting--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc","spec_version":"2.1","type":"sighting","x_y":1}"#;
        let value =
            serde_json::to_value(StixObject::from_slice(shuffled.as_bytes()).unwrap()).unwrap();
        let keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "type",
                "spec_version",
                "id",
                "created",
                "modified",
                "sighting_of_ref",
                "x_z",
                "pattern",
                "x_y"
            ]
        );
    }

    #[test]
    fn numbers_in_custom_properties_survive_exactly() {
        // Integers beyond 64 bits and decimals that f64 cannot hold exactly must come out as
        // they went in (found by fuzzing: a float changed in its last digit).
        let text = r#"{"type":"indicator","spec_version":"2.1","id":"indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc","created":"2020-06-23T12:34:56.000Z","modified":"2020-06-23T12:34:56.000Z","pattern":"[ipv4-addr:value = '6.6.6.6']","pattern_type":"stix","x_big":123456789012345678901234567890,"x_float":7.7777777777777777777777777777777777771777e83,"x_small":0.1,"x_neg":-0.0}"#;
        let parsed = StixObject::from_slice(text.as_bytes()).unwrap();
        // Custom properties are kept as the text they arrived as: every digit, even the
        // exponent's spelling.
        assert_eq!(serde_json::to_string(&parsed).unwrap(), text);
    }

    #[test]
    fn known_properties_come_first_and_extras_keep_their_order() {
        let parsed = StixObject::from_value(indicator_json()).unwrap();
        let text = serde_json::to_string(&parsed).unwrap();
        let keys: Vec<_> = serde_json::from_str::<Map<String, Value>>(&text)
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "type",
                "spec_version",
                "id",
                "created",
                "modified",
                "pattern",
                "pattern_type",
                "valid_from",
                "name",
                "x_vendor_score",
                "x_nested",
                "extensions",
                "x_threatbus_update"
            ]
        );
    }

    #[test]
    fn created_and_modified_get_millisecond_precision() {
        let mut value = indicator_json();
        value["created"] = json!("2020-06-23T12:34:56Z");
        value.as_object_mut().unwrap().remove("modified");
        let written = serde_json::to_value(StixObject::from_value(value).unwrap()).unwrap();
        assert_eq!(written["created"], "2020-06-23T12:34:56.000Z");
        assert_eq!(written["modified"], "2020-06-23T12:34:56.000Z");
    }

    #[test]
    fn sighting_round_trips_with_nested_indicator_and_context() {
        let original = json!({
            "type": "sighting",
            "spec_version": "2.1",
            "id": "sighting--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc",
            "created": "2020-06-23T12:34:56.000Z",
            "modified": "2020-06-23T12:34:56.000Z",
            "sighting_of_ref": "indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc",
            "last_seen": "2020-06-23T12:35:00.5Z",
            "count": 3,
            "x_threatbus_sighting_context": {"ts": 1.5, "uid": "C1", "id": {"orig_h": null}, "list": [1, "a"]},
            "x_threatbus_indicator": indicator_json(),
            "x_threatbus_source": "VAST",
            "x_threatbus_match_type": "RETRO"
        });
        let parsed = StixObject::from_value(original.clone()).unwrap();
        let StixObject::Sighting(s) = &parsed else {
            panic!("not a sighting")
        };
        assert_eq!(s.match_type(), Some(MatchType::Retro));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), original);
    }

    #[test]
    fn rejects_what_upstream_rejects() {
        // (property, new value or None to remove it, text the error must contain)
        let cases: [(&str, Option<Value>, &str); 12] = [
            ("spec_version", None, "spec_version"),
            ("spec_version", Some(json!("2.0")), "spec_version"),
            ("type", Some(json!("malware")), "malware"),
            ("type", None, "type"),
            ("id", Some(json!("indicator--123")), "id"),
            (
                "id",
                Some(json!("sighting--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc")),
                "id",
            ),
            ("created", Some(json!("yesterday")), "created"),
            ("modified", Some(json!(5)), "modified"),
            ("pattern", None, "pattern"),
            ("pattern_type", None, "pattern_type"),
            ("pattern", Some(json!("Some string")), "pattern"),
            ("valid_from", Some(json!("2020")), "valid_from"),
        ];
        for (property, value, needle) in cases {
            let Value::Object(mut map) = indicator_json() else {
                unreachable!()
            };
            match value {
                Some(value) => map.insert(property.into(), value),
                None => map.shift_remove(property),
            };
            let err = StixObject::from_value(Value::Object(map)).unwrap_err();
            assert!(
                err.to_string().contains(needle),
                "{err} does not mention {needle}"
            );
        }
        assert_eq!(
            StixObject::from_value(json!([1])),
            Err(StixError::NotAnObject)
        );
        assert!(StixObject::from_slice(b"{nope").is_err());
    }

    #[test]
    fn sighting_needs_a_valid_reference() {
        let value = json!({
            "type": "sighting", "spec_version": "2.1",
            "id": "sighting--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc",
            "sighting_of_ref": "not-an-id"
        });
        let err = StixObject::from_value(value).unwrap_err();
        assert!(err.to_string().contains("sighting_of_ref"), "{err}");
    }

    #[test]
    fn invalid_stix_patterns_are_rejected_with_where_and_why() {
        for (pattern, needle) in [
            (
                "[ipv4-addr:value = ]",
                "at byte 19: expected a literal value",
            ),
            ("[file:hashes.MD5 = 'abc']", "at byte 19: expected MD5 hash"),
            ("[ipv4-addr:value = '1'] within 5 seconds", "at byte 24"),
        ] {
            let mut value = indicator_json();
            value["pattern"] = json!(pattern);
            let err = StixObject::from_value(value.clone()).unwrap_err();
            assert!(
                matches!(&err, StixError::Pattern { reason, .. } if reason.to_string().contains(needle)),
                "{pattern}: {err}"
            );
            // The same text under another pattern type passes unchecked.
            value["pattern_type"] = json!("stix2");
            assert!(StixObject::from_value(value).is_ok(), "{pattern}");
        }
    }

    #[test]
    fn non_stix_pattern_types_are_not_checked() {
        let mut value = indicator_json();
        value["pattern_type"] = json!("suricata");
        value["pattern"] = json!("alert tcp any any -> any any (msg:\"x\"; sid:1;)");
        assert!(StixObject::from_value(value).is_ok());
    }
}
