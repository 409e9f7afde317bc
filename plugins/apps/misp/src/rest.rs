//! Bodies of the REST calls to MISP (spec `upstream.md` §6.6, §6.7).
//!
//! * `POST <host>/sightings/add`: `{"id": <attribute uuid>, "source"?: …, "type": "0",
//!   "timestamp": "<epoch seconds>"}` for a STIX Sighting of `indicator--<uuid>`. The time is
//!   `last_seen` when the sighting has one (upstream always sent `created`).
//! * `POST <host>/attributes/restSearch`: one query per combination of a filter entry's `orgs`
//!   and `types`, its `tags` as `{"OR": [...]}`, `to_ids: true`, `from` = now − snapshot, a page
//!   at a time.

use jiff::SignedDuration;
use serde_json::{Map, Value, json};
use threatbus_stix::Sighting;

use crate::filter::FilterEntry;

/// `type` of a MISP sighting that confirms the indicator (a true positive).
const SIGHTING_TYPE: &str = "0";

/// The prefix of the indicator ids this app makes from attribute uuids.
const INDICATOR_PREFIX: &str = "indicator--";

/// The body of `/sightings/add` for a STIX Sighting; `None` if it is not the sighting of an
/// indicator (`sighting_of_ref` of another type).
pub fn sighting_body(sighting: &Sighting) -> Option<Value> {
    let uuid = sighting
        .sighting_of_ref
        .as_str()
        .strip_prefix(INDICATOR_PREFIX)?;
    let seen = sighting.last_seen.unwrap_or(sighting.created);
    let seconds = seen.as_nanosecond().div_euclid(1_000_000_000);
    let mut body = Map::new();
    body.insert("id".into(), uuid.into());
    if let Some(source) = sighting.extra.get_str("x_threatbus_source") {
        body.insert("source".into(), source.into());
    }
    body.insert("type".into(), SIGHTING_TYPE.into());
    body.insert("timestamp".into(), seconds.to_string().into());
    Some(Value::Object(body))
}

/// The restSearch queries for a snapshot of `age` before `now_seconds` (Unix time), one per
/// combination of org and type in each filter entry (all attributes with `to_ids` for no
/// filter). [`paged`] asks for one page of a query's answer.
pub fn search_queries(filter: &[FilterEntry], age: SignedDuration, now_seconds: f64) -> Vec<Value> {
    let from = now_seconds - age.as_secs_f64();
    let everything = [FilterEntry::default()];
    let entries = if filter.is_empty() {
        &everything[..]
    } else {
        filter
    };
    let mut queries = Vec::new();
    for entry in entries {
        let orgs: Vec<Option<&String>> = if entry.orgs.is_empty() {
            vec![None]
        } else {
            entry.orgs.iter().map(Some).collect()
        };
        let types: Vec<Option<&String>> = if entry.types.is_empty() {
            vec![None]
        } else {
            entry.types.iter().map(Some).collect()
        };
        for org in &orgs {
            for kind in &types {
                let mut query = Map::new();
                query.insert("returnFormat".into(), "json".into());
                if let Some(org) = org {
                    query.insert("org".into(), (*org).clone().into());
                }
                if let Some(kind) = kind {
                    query.insert("type".into(), (*kind).clone().into());
                }
                if !entry.tags.is_empty() {
                    query.insert("tags".into(), json!({"OR": entry.tags}));
                }
                query.insert("to_ids".into(), true.into());
                query.insert("from".into(), json!(from));
                queries.push(Value::Object(query));
            }
        }
    }
    queries
}

/// `query` asking for page `page` (from 1) of `limit` attributes.
pub fn paged(query: &Value, limit: u32, page: u32) -> Value {
    let mut query = query.clone();
    if let Value::Object(map) = &mut query {
        map.insert("limit".into(), limit.into());
        map.insert("page".into(), page.into());
    }
    query
}

/// The attributes of a restSearch answer (`{"response": {"Attribute": [...]}}`, or without the
/// `response` wrapper); an error text for anything else, e.g. MISP's `{"message": ...}`.
pub fn search_attributes(answer: &Value) -> Result<&Vec<Value>, String> {
    let inner = answer.get("response").unwrap_or(answer);
    match inner.get("Attribute") {
        Some(Value::Array(attributes)) => Ok(attributes),
        _ => Err(match answer.get("message").and_then(Value::as_str) {
            Some(message) => format!("MISP answered: {message}"),
            None => {
                // At most 200 characters (not bytes: a cut must not split a character).
                let text: String = answer.to_string().chars().take(200).collect();
                format!("MISP answered without attributes: {text}")
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use threatbus_stix::{StixId, Timestamp};

    fn sighting(last_seen: Option<Timestamp>) -> Sighting {
        let id = StixId::parse("indicator--5e1f2787-fcfc-4718-a58a-00b4c0a82f06").unwrap();
        let mut sighting = Sighting::new(id, last_seen);
        sighting.created = Timestamp::parse("2020-01-15T16:09:05.000Z").unwrap();
        sighting
    }

    #[test]
    fn sighting_bodies_carry_the_uuid_source_and_time() {
        let mut with_source = sighting(None);
        with_source
            .extra
            .insert("x_threatbus_source", &Value::from("VAST"));
        assert_eq!(
            sighting_body(&with_source).unwrap(),
            json!({"id": "5e1f2787-fcfc-4718-a58a-00b4c0a82f06", "source": "VAST", "type": "0", "timestamp": "1579104545"})
        );
        // last_seen wins over created.
        let seen = Timestamp::parse("2021-03-01T11:53:55.5Z").unwrap();
        assert_eq!(
            sighting_body(&sighting(Some(seen))).unwrap(),
            json!({"id": "5e1f2787-fcfc-4718-a58a-00b4c0a82f06", "type": "0", "timestamp": "1614599635"})
        );
        let of_malware = Sighting::new(
            StixId::parse("malware--5e1f2787-fcfc-4718-a58a-00b4c0a82f06").unwrap(),
            None,
        );
        assert_eq!(sighting_body(&of_malware), None);
    }

    #[test]
    fn queries_combine_orgs_and_types_and_or_the_tags() {
        let filter: Vec<FilterEntry> = serde_json::from_value(json!([
            {"orgs": ["1", "2"], "types": ["domain", "ip-src"], "tags": ["foo", "bar"]},
            {"types": ["url"]}
        ]))
        .unwrap();
        let queries = search_queries(&filter, SignedDuration::from_hours(24), 1_000_000.0);
        assert_eq!(queries.len(), 5);
        assert_eq!(
            queries[0],
            json!({"returnFormat": "json", "org": "1", "type": "domain", "tags": {"OR": ["foo", "bar"]},
                   "to_ids": true, "from": 913_600.0})
        );
        assert_eq!(queries[3]["org"], "2");
        assert_eq!(queries[3]["type"], "ip-src");
        assert_eq!(
            queries[4],
            json!({"returnFormat": "json", "type": "url", "to_ids": true, "from": 913_600.0})
        );
        let all = search_queries(&[], SignedDuration::from_secs(10), 100.0);
        assert_eq!(
            all,
            [json!({"returnFormat": "json", "to_ids": true, "from": 90.0})]
        );
        assert_eq!(
            paged(&all[0], 10, 3),
            json!({"returnFormat": "json", "to_ids": true, "from": 90.0, "limit": 10, "page": 3})
        );
    }

    #[test]
    fn answers_with_and_without_attributes() {
        let wrapped = json!({"response": {"Attribute": [{"id": "1"}]}});
        assert_eq!(search_attributes(&wrapped).unwrap().len(), 1);
        let bare = json!({"Attribute": []});
        assert!(search_attributes(&bare).unwrap().is_empty());
        let error = json!({"name": "Not Found", "message": "Invalid API key", "url": "/x"});
        assert_eq!(
            search_attributes(&error).unwrap_err(),
            "MISP answered: Invalid API key"
        );
        assert!(search_attributes(&json!([1, 2])).is_err());
        // Found by fuzzing: a long answer cut in the middle of a multi-byte character.
        let long = json!({"Ettribute": "\u{eeee}".repeat(300)});
        let err = search_attributes(&long).unwrap_err();
        assert!(
            err.ends_with('\u{eeee}') && err.chars().count() < 250,
            "{err}"
        );
    }
}
