//! Reading individual properties out of a JSON object, for the object types in
//! [`crate::object`].
//!
//! [`Fields`] splits an object into the properties the bus reads (of either object type) and
//! every other property, kept in the order received and as the JSON text it arrived as. The
//! `take_*` and `require_*` helpers take one property out and validate it, naming the property
//! in their errors.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::{Properties, StixError, StixId, Timestamp};

/// Describes a JSON value's type for error messages, with the value itself when it is short.
pub(crate) fn describe(value: &Value) -> String {
    let text = value.to_string();
    if text.len() <= 80 {
        text
    } else {
        format!("{}…", text.chars().take(80).collect::<String>())
    }
}

/// The properties the bus reads, of either object type.
const KNOWN: [&str; 11] = [
    "type",
    "spec_version",
    "id",
    "created",
    "modified",
    "pattern",
    "pattern_type",
    "valid_from",
    "sighting_of_ref",
    "first_seen",
    "last_seen",
];

/// A JSON object split into the properties the bus reads (each with the number of other
/// properties that preceded it) and every other property, in order. Properties read by the
/// other object type go back among the others, at their place, when the object is built.
pub(crate) struct Fields {
    /// Value, number of other properties before it, and arrival order.
    known: [Option<(Value, usize, usize)>; KNOWN.len()],
    extra: Properties,
    arrivals: usize,
}

impl Fields {
    fn new() -> Self {
        Self {
            known: Default::default(),
            extra: Properties::new(),
            arrivals: 0,
        }
    }

    fn known_index(key: &str) -> Option<usize> {
        KNOWN.iter().position(|k| *k == key)
    }

    fn set_known(&mut self, index: usize, value: Value) {
        self.known[index] = Some((value, self.extra.len(), self.arrivals));
        self.arrivals += 1;
    }

    pub(crate) fn from_map(map: Map<String, Value>) -> Self {
        let mut fields = Self::new();
        for (key, value) in map {
            match Self::known_index(&key) {
                Some(index) => fields.set_known(index, value),
                None => fields.extra.push_value(key.into_boxed_str(), &value),
            }
        }
        fields
    }

    fn index(key: &str) -> usize {
        KNOWN.iter().position(|k| *k == key).unwrap_or(0)
    }

    pub(crate) fn peek(&self, key: &str) -> Option<&Value> {
        self.known[Self::index(key)].as_ref().map(|(v, _, _)| v)
    }

    pub(crate) fn take(&mut self, key: &str) -> Option<Value> {
        self.known[Self::index(key)].take().map(|(v, _, _)| v)
    }

    /// Every property not taken, in the order received, keys made unique (last value wins).
    pub(crate) fn into_extra(mut self) -> Properties {
        let mut left: Vec<(usize, usize, usize)> = self
            .known
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| {
                entry
                    .as_ref()
                    .map(|(_, position, arrival)| (*arrival, *position, index))
            })
            .collect();
        left.sort_unstable();
        for (inserted, (_, position, index)) in left.into_iter().enumerate() {
            if let Some((value, _, _)) = self.known[index].take() {
                self.extra
                    .insert_value_at(position + inserted, KNOWN[index], &value);
            }
        }
        self.extra.dedup();
        self.extra
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;

        impl<'de> serde::de::Visitor<'de> for FieldsVisitor {
            type Value = Fields;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Fields, A::Error> {
                let mut fields = Fields::new();
                while let Some(key) = map.next_key::<String>()? {
                    match Fields::known_index(&key) {
                        Some(index) => fields.set_known(index, map.next_value::<Value>()?),
                        // Kept as text: no tree is built for what the bus does not read.
                        None => fields
                            .extra
                            .push_raw(key.into_boxed_str(), map.next_value::<Box<RawValue>>()?),
                    }
                }
                Ok(fields)
            }
        }

        deserializer.deserialize_map(FieldsVisitor)
    }
}

fn take_string(map: &mut Fields, key: &'static str) -> Result<Option<String>, StixError> {
    match map.take(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(StixError::WrongType {
            property: key,
            expected: "a string",
            got: describe(&other),
        }),
    }
}

pub(crate) fn require_string(map: &mut Fields, key: &'static str) -> Result<String, StixError> {
    take_string(map, key)?.ok_or(StixError::Missing(key))
}

pub(crate) fn take_timestamp(
    map: &mut Fields,
    key: &'static str,
) -> Result<Option<Timestamp>, StixError> {
    take_string(map, key)?
        .map(|s| {
            Timestamp::parse(&s).map_err(|reason| StixError::Timestamp {
                property: key,
                value: s,
                reason,
            })
        })
        .transpose()
}

pub(crate) fn take_id(map: &mut Fields, key: &'static str) -> Result<StixId, StixError> {
    let value = require_string(map, key)?;
    StixId::parse(&value).map_err(|reason| StixError::Id {
        property: key,
        value,
        reason,
    })
}
