//! Which MISP attributes reach the bus (`filter`, spec `upstream.md` §6.5).
//!
//! `filter` is a list of entries; an attribute passes if **any** entry matches (an empty list
//! lets everything pass). An entry matches if **all** of its lists match: the creator org
//! (`Event.orgc_id`) is in `orgs`, the attribute's type is in `types`, and one of its tags is in
//! `tags`. An absent or empty list matches everything. Org ids match as text or as numbers, so
//! `1` and `"1"` are the same org.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One filter entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct FilterEntry {
    /// Creator organisations (`Event.orgc_id`), as ids.
    #[serde(deserialize_with = "org_ids")]
    pub orgs: Vec<String>,
    /// MISP attribute types.
    pub types: Vec<String>,
    /// Tag names.
    pub tags: Vec<String>,
}

fn org_ids<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let values = Vec::<Value>::deserialize(deserializer)?;
    values
        .into_iter()
        .map(|value| match value {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(serde::de::Error::custom(format!(
                "expected an organisation id (a number or a string), got {other}"
            ))),
        })
        .collect()
}

/// The tag names of an attribute (`Attribute.Tag[].name`; tags without a name are ignored).
pub fn tags(attribute: &Map<String, Value>) -> BTreeSet<String> {
    let Some(Value::Array(tags)) = attribute.get("Tag") else {
        return BTreeSet::new();
    };
    tags.iter()
        .filter_map(|tag| tag.get("name")?.as_str().map(str::to_owned))
        .collect()
}

/// An org id as text without leading zeros when it is a number (`"01"` and `1` are one org).
fn normal_org(id: &str) -> String {
    match id.trim().parse::<u64>() {
        Ok(n) => n.to_string(),
        Err(_) => id.to_owned(),
    }
}

/// An org id from a document, as a string or a number.
fn org_id(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(normal_org(s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Why a message was filtered out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// The message lacks what every message needs (`Event.orgc_id`, `Attribute.type`).
    Incomplete(&'static str),
    /// No filter entry matched.
    NoMatch,
}

/// Whether the attribute notification passes `filter`.
pub fn passes(filter: &[FilterEntry], message: &Map<String, Value>) -> Result<(), Rejected> {
    let attribute = message
        .get("Attribute")
        .and_then(Value::as_object)
        .ok_or(Rejected::Incomplete("Attribute"))?;
    let event = message
        .get("Event")
        .and_then(Value::as_object)
        .ok_or(Rejected::Incomplete("Event"))?;
    let org = org_id(event.get("orgc_id")).ok_or(Rejected::Incomplete("Event.orgc_id"))?;
    let kind = attribute
        .get("type")
        .and_then(Value::as_str)
        .ok_or(Rejected::Incomplete("Attribute.type"))?;
    if filter.is_empty() || matches_any(filter, Some(&org), kind, attribute) {
        Ok(())
    } else {
        Err(Rejected::NoMatch)
    }
}

/// Whether an attribute from a restSearch answer passes `filter` (applied again to what MISP
/// answered a snapshot search with). The creator org comes from the attribute's `Event`, if
/// MISP included it; without it only entries that name no orgs can match.
pub fn result_passes(filter: &[FilterEntry], attribute: &Map<String, Value>) -> bool {
    if filter.is_empty() {
        return true;
    }
    let org = org_id(
        attribute
            .get("Event")
            .and_then(|event| event.get("orgc_id")),
    );
    match attribute.get("type").and_then(Value::as_str) {
        Some(kind) => matches_any(filter, org.as_deref(), kind, attribute),
        None => false,
    }
}

fn matches_any(
    filter: &[FilterEntry],
    org: Option<&str>,
    kind: &str,
    attribute: &Map<String, Value>,
) -> bool {
    let tags = tags(attribute);
    let matches = |entry: &FilterEntry| {
        (entry.orgs.is_empty()
            || entry
                .orgs
                .iter()
                .any(|o| Some(normal_org(o).as_str()) == org))
            && (entry.types.is_empty() || entry.types.iter().any(|t| t == kind))
            && (entry.tags.is_empty() || entry.tags.iter().any(|t| tags.contains(t)))
    };
    filter.iter().any(matches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Spec §6.8 fixture 2 (org "1", type ip-src, tags foo and baz).
    fn message() -> Map<String, Value> {
        let Value::Object(map) = json!({
            "Attribute": {
                "id": "1", "event_id": "1", "object_id": "0", "object_relation": null,
                "category": "Network activity", "type": "ip-src", "value1": "6.6.6.6",
                "value2": "", "to_ids": true, "uuid": "5f7b2284-bdd8-4ef4-b457-032ac0a82f02",
                "timestamp": "1601906335", "distribution": "5", "sharing_group_id": "0",
                "comment": "", "deleted": false, "disable_correlation": false,
                "first_seen": null, "last_seen": null, "value": "6.6.6.6",
                "Tag": [
                    {"id": "3", "name": "baz", "colour": "#05ff00", "exportable": true},
                    {"id": "1", "name": "foo", "colour": "#ff0000", "exportable": true}
                ],
                "Sighting": []
            },
            "Event": {
                "id": "1", "date": "2020-10-05", "info": "evil",
                "uuid": "5f7b2277-1ebc-4101-9152-032ac0a82f02", "published": false,
                "analysis": "0", "threat_level_id": "1", "org_id": "3", "orgc_id": "1",
                "distribution": "1", "sharing_group_id": "0",
                "Orgc": {"id": "1", "uuid": "5f7b21ea-52a4-49f0-87df-032ac0a82f02", "name": "ORGNAME"}
            },
            "action": "edit"
        }) else {
            unreachable!()
        };
        map
    }

    fn filter(entries: Value) -> Vec<FilterEntry> {
        serde_json::from_value(entries).unwrap()
    }

    /// The positive and negative matrix of upstream's unit tests (spec §9.1), row by row.
    #[test]
    fn the_upstream_filter_matrix() {
        let pass = [
            json!([]),
            json!([{"orgs": ["1", "100"]}]),
            json!([{"tags": ["foo", "ASDF"]}]),
            json!([{"types": ["domain", "ip-src"]}]),
            json!([{"orgs": ["1"], "tags": ["foo"]}]),
            json!([{"orgs": ["1"], "types": ["ip-src"]}]),
            json!([{"tags": ["foo"], "types": ["ip-src"]}]),
            json!([{"orgs": ["1"], "tags": ["foo"], "types": ["ip-src"]}]),
            json!([{"orgs": ["1"]}, {"orgs": ["5"]}]),
            json!([{"orgs": ["1"]}, {"types": ["ASDF"]}]),
            json!([{"tags": ["foo"]}, {"types": ["ASDF"]}]),
            json!([{"tags": ["foo"]}, {"types": ["ip-src"]}]),
            json!([{"tags": ["baz"]}, {"org": ["1"]}]),
            // Org ids as numbers, as YAML writes them.
            json!([{"orgs": [1]}]),
        ];
        let reject = [
            json!([{"orgs": ["100"]}]),
            json!([{"tags": ["ASDF"]}]),
            json!([{"types": ["domain"]}]),
            json!([{"orgs": ["1"], "tags": ["ASDF"]}]),
            json!([{"types": ["ip-src"], "tags": ["ASDF"]}]),
            json!([{"orgs": ["1"], "types": ["domain"]}]),
            json!([{"tags": ["foo"], "types": ["domain"]}]),
            json!([{"types": ["src-ip"], "orgs": ["100"]}]),
            json!([{"tags": ["foo"], "orgs": ["100"]}]),
            json!([{"orgs": ["100"]}, {"orgs": ["5"]}]),
            json!([{"orgs": ["100"]}, {"types": ["ASDF"]}]),
            json!([{"tags": ["ASDF"]}, {"types": ["ASDF"]}]),
        ];
        for entries in pass {
            assert_eq!(
                passes(&filter(entries.clone()), &message()),
                Ok(()),
                "{entries}"
            );
        }
        for entries in reject {
            assert_eq!(
                passes(&filter(entries.clone()), &message()),
                Err(Rejected::NoMatch),
                "{entries}"
            );
        }
    }

    #[test]
    fn incomplete_messages_never_pass() {
        for (path, why) in [("Event", "Event"), ("Attribute", "Attribute")] {
            let mut map = message();
            map.remove(path);
            assert_eq!(passes(&[], &map), Err(Rejected::Incomplete(why)));
        }
        let mut map = message();
        map["Event"].as_object_mut().unwrap().remove("orgc_id");
        assert_eq!(
            passes(&[], &map),
            Err(Rejected::Incomplete("Event.orgc_id"))
        );
        // An integer orgc_id matches the string form.
        let mut map = message();
        map["Event"]["orgc_id"] = json!(1);
        assert_eq!(passes(&filter(json!([{"orgs": ["1"]}])), &map), Ok(()));
    }

    #[test]
    fn search_results_are_filtered_too() {
        let full = message();
        let mut attribute = full["Attribute"].as_object().unwrap().clone();
        // Without Event: only entries without orgs can match.
        assert!(result_passes(&[], &attribute));
        assert!(result_passes(
            &filter(json!([{"types": ["ip-src"]}])),
            &attribute
        ));
        assert!(!result_passes(
            &filter(json!([{"orgs": ["1"]}])),
            &attribute
        ));
        attribute.insert("Event".into(), json!({"id": "1", "orgc_id": "1"}));
        assert!(result_passes(
            &filter(json!([{"orgs": [1], "tags": ["foo"]}])),
            &attribute
        ));
        assert!(!result_passes(
            &filter(json!([{"orgs": ["2"]}])),
            &attribute
        ));
        assert!(!result_passes(
            &filter(json!([{"types": ["domain"]}])),
            &attribute
        ));
        assert!(!result_passes(
            &filter(json!([{"tags": ["bar"]}])),
            &attribute
        ));
        attribute.remove("type");
        assert!(!result_passes(
            &filter(json!([{"orgs": ["1"]}])),
            &attribute
        ));
    }

    #[test]
    fn tag_names() {
        let mut map = message();
        let attribute = map["Attribute"].as_object_mut().unwrap();
        assert_eq!(
            tags(attribute),
            BTreeSet::from(["baz".to_owned(), "foo".to_owned()])
        );
        attribute.insert("Tag".into(), json!([{"id": "7"}, {"name": 5}]));
        assert!(tags(attribute).is_empty());
        attribute.remove("Tag");
        assert!(tags(attribute).is_empty());
    }
}
