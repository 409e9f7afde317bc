//! The properties of a STIX object that the bus does not interpret.
//!
//! They are kept in the order received, each value as the JSON text it arrived as: nothing is
//! parsed into a tree, so holding and re-sending an object costs one small allocation per
//! property, and numbers, escapes and nested objects come out exactly as they went in.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Properties the bus does not interpret (`name`, `labels`, custom `x_*`, extensions, …), in the
/// order received; each value is its JSON text. Keys are unique.
#[derive(Debug, Clone, Default)]
pub struct Properties {
    entries: Vec<(Box<str>, Box<RawValue>)>,
}

impl PartialEq for Properties {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|((k1, v1), (k2, v2))| k1 == k2 && v1.get() == v2.get())
    }
}

/// A JSON value as text. Serialising a `Value` cannot fail (every map key is a string).
fn raw(value: &Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| {
        // Unreachable for a `Value`; keep the property rather than lose it.
        RawValue::from_string("null".to_owned()).unwrap_or_default()
    })
}

/// Up to this many properties, duplicate keys are found by comparing every pair.
const LINEAR_DEDUP: usize = 32;

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many properties there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The JSON text of `key`'s value.
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.entries
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }

    /// `key`'s value if it is a JSON string.
    pub fn get_str(&self, key: &str) -> Option<String> {
        serde_json::from_str(self.get(key)?.get()).ok()
    }

    /// `key`'s value as a JSON tree.
    pub fn get_value(&self, key: &str) -> Option<Value> {
        serde_json::from_str(self.get(key)?.get()).ok()
    }

    /// Sets `key` to `value`: in place if the key exists, else at the end.
    pub fn insert(&mut self, key: impl Into<String>, value: &Value) {
        let key = key.into();
        let value = raw(value);
        match self.entries.iter_mut().find(|(k, _)| **k == *key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key.into_boxed_str(), value)),
        }
    }

    /// Removes `key`, keeping the order of the others; returns its JSON text.
    pub fn remove(&mut self, key: &str) -> Option<Box<RawValue>> {
        let position = self.entries.iter().position(|(k, _)| &**k == key)?;
        Some(self.entries.remove(position).1)
    }

    /// The properties in order, each with its JSON text.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawValue)> {
        self.entries.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The properties as a JSON object.
    pub fn to_map(&self) -> Map<String, Value> {
        self.iter()
            .filter_map(|(k, v)| Some((k.to_owned(), serde_json::from_str(v.get()).ok()?)))
            .collect()
    }

    /// Appends without looking for an existing key; [`Properties::dedup`] must follow.
    pub(crate) fn push_raw(&mut self, key: Box<str>, value: Box<RawValue>) {
        self.entries.push((key, value));
    }

    /// Appends a parsed value without looking for an existing key.
    pub(crate) fn push_value(&mut self, key: Box<str>, value: &Value) {
        self.entries.push((key, raw(value)));
    }

    /// Inserts at `position` (clamped to the end) without looking for an existing key.
    pub(crate) fn insert_value_at(&mut self, position: usize, key: &str, value: &Value) {
        let position = position.min(self.entries.len());
        self.entries.insert(position, (key.into(), raw(value)));
    }

    /// Makes keys unique as a JSON object reader does: the last value wins, at the position of
    /// the first occurrence.
    pub(crate) fn dedup(&mut self) {
        let len = self.entries.len();
        let mut first_of: Vec<Option<usize>> = vec![None; len];
        if len <= LINEAR_DEDUP {
            for (i, first) in first_of.iter_mut().enumerate() {
                *first = (0..i).find(|&j| self.entries[j].0 == self.entries[i].0);
            }
        } else {
            let mut seen: std::collections::HashMap<&str, usize> =
                std::collections::HashMap::with_capacity(len);
            for (i, (key, _)) in self.entries.iter().enumerate() {
                match seen.get(&**key) {
                    Some(&j) => first_of[i] = Some(j),
                    None => {
                        seen.insert(key, i);
                    }
                }
            }
        }
        if first_of.iter().all(Option::is_none) {
            return;
        }
        let mut entries: Vec<Option<(Box<str>, Box<RawValue>)>> = std::mem::take(&mut self.entries)
            .into_iter()
            .map(Some)
            .collect();
        for (i, first) in first_of.iter().enumerate() {
            if let Some(j) = *first
                && let Some((_, value)) = entries[i].take()
                && let Some(first) = entries[j].as_mut()
            {
                first.1 = value;
            }
        }
        self.entries = entries.into_iter().flatten().collect();
    }

    /// Writes every property into a serde map being serialised.
    pub(crate) fn serialize_into<M: serde::ser::SerializeMap>(
        &self,
        map: &mut M,
    ) -> Result<(), M::Error> {
        for (key, value) in &self.entries {
            map.serialize_entry(&**key, &**value)?;
        }
        Ok(())
    }
}

impl Serialize for Properties {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        self.serialize_into(&mut map)?;
        map.end()
    }
}

impl From<Map<String, Value>> for Properties {
    fn from(map: Map<String, Value>) -> Self {
        let mut properties = Self::new();
        for (key, value) in &map {
            properties.push_value(key.as_str().into(), value);
        }
        properties
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(pairs: &[(&str, &str)]) -> Properties {
        let mut p = Properties::new();
        for (k, v) in pairs {
            p.push_raw((*k).into(), RawValue::from_string((*v).to_owned()).unwrap());
        }
        p
    }

    #[test]
    fn duplicate_keys_keep_the_first_place_and_the_last_value() {
        let mut p = parsed(&[("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("b", "5")]);
        p.dedup();
        let got: Vec<_> = p.iter().map(|(k, v)| (k, v.get())).collect();
        assert_eq!(got, [("a", "3"), ("b", "5"), ("c", "4")]);
    }

    #[test]
    fn many_duplicates_are_found_without_comparing_every_pair() {
        let pairs: Vec<(String, String)> = (0..1000)
            .map(|i| (format!("k{}", i % 100), i.to_string()))
            .collect();
        let borrowed: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut p = parsed(&borrowed);
        p.dedup();
        assert_eq!(p.len(), 100);
        assert_eq!(p.get("k7").map(RawValue::get), Some("907"));
        assert_eq!(p.iter().next().map(|(k, _)| k), Some("k0"));
    }

    #[test]
    fn values_are_kept_as_sent_and_read_on_demand() {
        let p = parsed(&[
            ("x_big", "123456789012345678901234567890"),
            ("x_text", r#""caf\u00e9""#),
            ("labels", r#"[ "a", "b" ]"#),
        ]);
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"x_big":123456789012345678901234567890,"x_text":"caf\u00e9","labels":[ "a", "b" ]}"#
        );
        assert_eq!(p.get_str("x_text").as_deref(), Some("café"));
        assert_eq!(p.get_str("labels"), None);
        assert_eq!(p.get_value("labels"), Some(json!(["a", "b"])));
        assert_eq!(
            p.to_map()["x_big"].to_string(),
            "123456789012345678901234567890"
        );
    }

    #[test]
    fn insert_replaces_in_place_and_remove_keeps_order() {
        let mut p = Properties::from(
            json!({"a": 1, "b": 2, "c": 3})
                .as_object()
                .cloned()
                .unwrap(),
        );
        p.insert("b", &json!({"n": [1]}));
        p.insert("d", &json!(null));
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"a":1,"b":{"n":[1]},"c":3,"d":null}"#
        );
        assert_eq!(p.remove("a").map(|v| v.get().to_owned()), Some("1".into()));
        let keys: Vec<_> = p.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "c", "d"]);
        assert_eq!(p, p.clone());
    }
}
