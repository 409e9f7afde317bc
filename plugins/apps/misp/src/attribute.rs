//! A MISP attribute notification → a STIX 2.1 Indicator (spec `upstream.md` §6.3, §6.4).
//!
//! The document is `{"Attribute": {...}, "Event": {...}, "action": "add" | "edit" | "delete"}`.
//! The indicator's id is `indicator--<Attribute.uuid>`, its pattern comes from the type table
//! (compound `a|b` types become `[pa] AND [pb]`), `created` is the attribute's timestamp in UTC.
//!
//! What the action and `to_ids` mean:
//!
//! | action | to_ids | result |
//! |---|---|---|
//! | add | true | indicator |
//! | add | false | nothing |
//! | edit | true | indicator (an update) |
//! | edit | false | indicator with `x_threatbus_update: REMOVE` |
//! | delete | either | indicator with `x_threatbus_update: REMOVE` (upstream: an add, or nothing) |

use serde_json::{Map, Value};
use threatbus_stix::{Indicator, Timestamp};

/// Why an attribute did not become an indicator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// Not an error: an attribute not meant for detection (`add` with `to_ids: false`).
    #[error("not for detection (to_ids is false)")]
    NotForDetection,
    #[error("no {0}")]
    Missing(&'static str),
    #[error("{field} is not valid: {value}")]
    Invalid { field: &'static str, value: String },
    #[error("MISP type {0:?} has no STIX pattern")]
    UnmappedType(String),
    #[error("the resulting indicator is not valid: {0}")]
    BadIndicator(String),
}

/// What MISP did to the attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Add,
    Edit,
    Delete,
}

impl Action {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "add" => Some(Self::Add),
            "edit" => Some(Self::Edit),
            "delete" => Some(Self::Delete),
            _ => None,
        }
    }
}

/// A string constant of a pattern: quoted, `\` and `'` escaped.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The comparison for one (non-compound) MISP type and value, without brackets.
fn comparison(kind: &str, value: &str) -> Result<String, Skip> {
    let path = match kind {
        "ip" | "ip-src" | "ip-dst" => "ipv4-addr:value",
        "hostname" | "domain" => "domain-name:value",
        "mac-address" | "mac-eui-64" => "mac-addr:value",
        "email" | "email-src" | "email-dst" | "eppn" => "email-addr:value",
        "url" | "uri" => "url:value",
        "x509-fingerprint-md5" => "x509-certificate:hashes.MD5",
        "x509-fingerprint-sha1" => "x509-certificate:hashes.'SHA-1'",
        "x509-fingerprint-sha256" => "x509-certificate:hashes.'SHA-256'",
        "AS" => {
            let number: u64 = value.trim().parse().map_err(|_| Skip::Invalid {
                field: "value of an AS attribute",
                value: value.to_owned(),
            })?;
            return Ok(format!("autonomous-system:number = {number}"));
        }
        "stix2-pattern" => {
            let inner = value
                .strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .unwrap_or(value);
            return Ok(inner.to_owned());
        }
        other => return Err(Skip::UnmappedType(other.to_owned())),
    };
    Ok(format!("{path} = {}", quote(value)))
}

/// The STIX pattern for a MISP type and value, compound types included.
pub fn pattern(kind: &str, value: &str) -> Result<String, Skip> {
    match (kind.split_once('|'), value.split_once('|')) {
        (Some((kind_a, kind_b)), Some((value_a, value_b))) => Ok(format!(
            "[{}] AND [{}]",
            comparison(kind_a, value_a)?,
            comparison(kind_b, value_b)?
        )),
        (Some(_), None) => Err(Skip::Invalid {
            field: "value of a compound attribute",
            value: value.to_owned(),
        }),
        (None, _) => Ok(format!("[{}]", comparison(kind, value)?)),
    }
}

/// A MISP boolean: JSON `true`/`false`, or the `"1"`/`"0"`/`1`/`0` MISP also writes.
fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_u64().map(|n| n != 0),
        Value::String(s) => match s.as_str() {
            "1" | "true" | "True" => Some(true),
            "0" | "false" | "False" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A field as text (MISP writes numbers as strings, sometimes as numbers).
fn text(attribute: &Map<String, Value>, field: &'static str) -> Result<String, Skip> {
    match attribute.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(Skip::Missing(field)),
        Some(other) => Err(Skip::Invalid {
            field,
            value: other.to_string(),
        }),
    }
}

/// The indicator for an attribute and what was done to it.
pub fn indicator(attribute: &Map<String, Value>, action: Action) -> Result<Indicator, Skip> {
    let to_ids = match attribute.get("to_ids") {
        None | Some(Value::Null) => return Err(Skip::Missing("to_ids")),
        Some(value) => boolean(value).ok_or_else(|| Skip::Invalid {
            field: "to_ids",
            value: value.to_string(),
        })?,
    };
    let remove = match (action, to_ids) {
        (Action::Add, false) => return Err(Skip::NotForDetection),
        (Action::Add, true) | (Action::Edit, true) => false,
        (Action::Edit, false) | (Action::Delete, _) => true,
    };
    let timestamp = text(attribute, "timestamp")?;
    let seconds: i64 = timestamp.parse().map_err(|_| Skip::Invalid {
        field: "timestamp",
        value: timestamp.clone(),
    })?;
    let created = Timestamp::from_unix(seconds, 0).ok_or(Skip::Invalid {
        field: "timestamp",
        value: timestamp,
    })?;
    let uuid = text(attribute, "uuid")?;
    let kind = text(attribute, "type")?;
    let value = text(attribute, "value")?;
    let now = Timestamp::now().to_stix_string(3);
    let mut object = Map::new();
    object.insert("type".into(), "indicator".into());
    object.insert("spec_version".into(), "2.1".into());
    object.insert("id".into(), format!("indicator--{uuid}").into());
    object.insert("created".into(), created.to_stix_string(3).into());
    object.insert("modified".into(), now.clone().into());
    object.insert("pattern".into(), pattern(&kind, &value)?.into());
    object.insert("pattern_type".into(), "stix".into());
    object.insert("valid_from".into(), now.into());
    if remove {
        object.insert("x_threatbus_update".into(), "REMOVE".into());
    }
    Indicator::from_map(object).map_err(|err| Skip::BadIndicator(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attribute(kind: &str, value: &str, to_ids: Value) -> Map<String, Value> {
        let Value::Object(map) = json!({
            "id": "1", "event_id": "1", "object_id": "0", "object_relation": null,
            "category": "Network activity", "type": kind, "value": value, "to_ids": to_ids,
            "uuid": "5e1f2787-fcfc-4718-a58a-00b4c0a82f06", "timestamp": "1579104545",
            "distribution": "5", "sharing_group_id": "0", "comment": "", "deleted": false,
            "disable_correlation": false, "Sighting": [], "Tag": []
        }) else {
            unreachable!()
        };
        map
    }

    /// Spec §6.8 fixture 1 and its variants.
    #[test]
    fn the_fixture_attribute_and_its_variants() {
        let compound = indicator(
            &attribute("domain|ip", "example.com|example.com", json!(true)),
            Action::Add,
        )
        .unwrap();
        assert_eq!(
            compound.id.as_str(),
            "indicator--5e1f2787-fcfc-4718-a58a-00b4c0a82f06"
        );
        assert_eq!(
            compound.pattern,
            "[domain-name:value = 'example.com'] AND [ipv4-addr:value = 'example.com']"
        );
        // created is the attribute's timestamp, in UTC (upstream: the host's local time).
        assert_eq!(
            compound.created.to_stix_string(3),
            "2020-01-15T16:09:05.000Z"
        );
        assert_eq!(compound.pattern_type, "stix");
        let domain = indicator(
            &attribute("domain", "example.com", json!(true)),
            Action::Add,
        )
        .unwrap();
        assert_eq!(domain.pattern, "[domain-name:value = 'example.com']");
        assert!(
            domain
                .extra
                .iter()
                .all(|(key, _)| !key.starts_with("x_threatbus"))
        );
        let removed = indicator(
            &attribute("domain", "example.com", json!(false)),
            Action::Edit,
        )
        .unwrap();
        assert_eq!(
            removed.extra.get_str("x_threatbus_update").as_deref(),
            Some("REMOVE")
        );
    }

    #[test]
    fn the_action_matrix_with_deletions_fixed() {
        let cases = [
            (Action::Add, true, Some(false)),
            (Action::Add, false, None),
            (Action::Edit, true, Some(false)),
            (Action::Edit, false, Some(true)),
            (Action::Delete, true, Some(true)),
            (Action::Delete, false, Some(true)),
        ];
        for (action, to_ids, expected) in cases {
            let got = indicator(&attribute("domain", "x.org", json!(to_ids)), action);
            match expected {
                None => assert_eq!(
                    got.unwrap_err(),
                    Skip::NotForDetection,
                    "{action:?} {to_ids}"
                ),
                Some(remove) => {
                    let flag = got.unwrap().extra.get_str("x_threatbus_update");
                    assert_eq!(flag.is_some(), remove, "{action:?} {to_ids}");
                }
            }
        }
        // MISP's string booleans mean what they say (upstream counted "0" as true).
        let zero = indicator(&attribute("domain", "x.org", json!("0")), Action::Add);
        assert_eq!(zero.unwrap_err(), Skip::NotForDetection);
        assert!(indicator(&attribute("domain", "x.org", json!("1")), Action::Add).is_ok());
        assert_eq!(
            indicator(&attribute("domain", "x.org", Value::Null), Action::Add).unwrap_err(),
            Skip::Missing("to_ids")
        );
    }

    /// Spec §6.4, row by row.
    #[test]
    fn the_type_table() {
        let mapped = [
            ("ip", "1.2.3.4", "[ipv4-addr:value = '1.2.3.4']"),
            ("ip-src", "1.2.3.4", "[ipv4-addr:value = '1.2.3.4']"),
            ("ip-dst", "::1", "[ipv4-addr:value = '::1']"),
            ("hostname", "h.example", "[domain-name:value = 'h.example']"),
            (
                "domain",
                "example.com",
                "[domain-name:value = 'example.com']",
            ),
            (
                "mac-address",
                "00:11:22:33:44:55",
                "[mac-addr:value = '00:11:22:33:44:55']",
            ),
            (
                "mac-eui-64",
                "00:11:22:ff:fe:33:44:55",
                "[mac-addr:value = '00:11:22:ff:fe:33:44:55']",
            ),
            ("email", "a@b.c", "[email-addr:value = 'a@b.c']"),
            ("email-src", "a@b.c", "[email-addr:value = 'a@b.c']"),
            ("email-dst", "a@b.c", "[email-addr:value = 'a@b.c']"),
            ("eppn", "a@b.c", "[email-addr:value = 'a@b.c']"),
            ("url", "http://x/y", "[url:value = 'http://x/y']"),
            ("uri", "/y?z", "[url:value = '/y?z']"),
            ("AS", "1234", "[autonomous-system:number = 1234]"),
            ("stix2-pattern", "[file:name = 'a']", "[file:name = 'a']"),
            ("stix2-pattern", "file:name = 'a'", "[file:name = 'a']"),
            (
                "x509-fingerprint-md5",
                "d41d8cd98f00b204e9800998ecf8427e",
                "[x509-certificate:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427e']",
            ),
            (
                "x509-fingerprint-sha1",
                "da39a3ee5e6b4b0d3255bfef95601890afd80709",
                "[x509-certificate:hashes.'SHA-1' = 'da39a3ee5e6b4b0d3255bfef95601890afd80709']",
            ),
            (
                "x509-fingerprint-sha256",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "[x509-certificate:hashes.'SHA-256' = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855']",
            ),
            (
                "domain|ip",
                "example.com|1.2.3.4",
                "[domain-name:value = 'example.com'] AND [ipv4-addr:value = '1.2.3.4']",
            ),
            (
                "domain",
                "it's\\here",
                "[domain-name:value = 'it\\'s\\\\here']",
            ),
        ];
        for (kind, value, expected) in mapped {
            let got = indicator(&attribute(kind, value, json!(true)), Action::Add)
                .unwrap_or_else(|err| panic!("{kind} {value}: {err}"));
            assert_eq!(got.pattern, expected, "{kind}");
        }
        let unmapped = [
            "port",
            "user-agent",
            "http-method",
            "snort",
            "pattern-in-file",
            "filename-pattern",
            "pattern-in-traffic",
            "attachment",
            "comment",
            "text",
            "ja3-fingerprint-md5",
            "jarm-fingerprint",
            "hassh-md5",
            "hasshserver-md5",
            "other",
            "hex",
            "cookie",
            "bro",
            "zeek",
            "community-id",
            "email-subject",
            "favicon-mmh3",
            "no-such-type",
        ];
        for kind in unmapped {
            let got = indicator(&attribute(kind, "x", json!(true)), Action::Add);
            assert_eq!(got.unwrap_err(), Skip::UnmappedType(kind.into()), "{kind}");
        }
        for (kind, value) in [
            ("ip-dst|port", "1.2.3.4|80"),
            ("hostname|port", "h|80"),
            ("AS", "AS123"),
            ("x509-fingerprint-md5", "fooo"),
            ("stix2-pattern", "[not a pattern"),
            ("domain|ip", "no-separator"),
        ] {
            assert!(
                indicator(&attribute(kind, value, json!(true)), Action::Add).is_err(),
                "{kind} {value}"
            );
        }
    }

    #[test]
    fn missing_fields_are_named() {
        for field in ["uuid", "type", "value", "timestamp"] {
            let mut map = attribute("domain", "x.org", json!(true));
            map.remove(field);
            assert_eq!(
                indicator(&map, Action::Add).unwrap_err(),
                Skip::Missing(field)
            );
        }
        let mut empty = attribute("domain", "", json!(true));
        assert_eq!(
            indicator(&empty, Action::Add).unwrap_err(),
            Skip::Missing("value")
        );
        empty.insert("value".into(), json!("x.org"));
        empty.insert("timestamp".into(), json!("yesterday"));
        assert!(matches!(
            indicator(&empty, Action::Add),
            Err(Skip::Invalid {
                field: "timestamp",
                ..
            })
        ));
        assert_eq!(Action::parse("INVALID_ACTION"), None);
    }
}
