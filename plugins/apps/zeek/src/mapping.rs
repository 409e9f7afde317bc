//! Between bus messages and the `Tenzir::*` events of `threatbus.zeek` (spec `upstream.md`
//! §5.2–§5.4).
//!
//! * A STIX Indicator whose pattern is a point IoC on one of the object paths Zeek's intel
//!   framework knows becomes `intel(Intelligence{ts, id, intel_type, indicator, operation})`,
//!   the record as a 5-slot vector. Everything else is not sent.
//! * `sighting(ts, intel_id, context)` becomes a STIX Sighting of `intel_id`, `last_seen` = `ts`,
//!   the context as `x_threatbus_sighting_context`.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};
use threatbus_broker::Data;
use threatbus_broker::zeek::Event;
use threatbus_core::{Body, Message};
use threatbus_stix::{Indicator, Operation, Sighting, StixId, Timestamp, pattern};

/// Zeek's `Intel::Type` for the object path of a point IoC (spec §5.3), in its normalised text:
/// `file:hashes.md5` and `file:hashes.'MD5'` are `file:hashes.MD5` (upstream compared the
/// text as written and dropped those).
fn intel_type(path: &str) -> Option<&'static str> {
    Some(match path {
        "domain-name:value" => "DOMAIN",
        "email-addr:value" => "EMAIL",
        "file:name" => "FILE_NAME",
        "file:hashes.MD5"
        | "file:hashes.'SHA-1'"
        | "file:hashes.'SHA-256'"
        | "file:hashes.'SHA-512'"
        | "file:hashes.'SHA3-256'"
        | "file:hashes.'SHA3-512'"
        | "file:hashes.SSDEEP"
        | "file:hashes.TLSH" => "FILE_HASH",
        "ipv4-addr:value" | "ipv6-addr:value" => "ADDR",
        "software:name" => "SOFTWARE",
        "url:value" => "URL",
        "user:user_id" | "user:account_login" => "USER_NAME",
        "x509-certificate:hashes.'SHA-1'" => "CERT_HASH",
        _ => return None,
    })
}

/// Why an indicator is not sent to Zeek (for the debug log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSent {
    /// The pattern is not one equality comparison of one object path with one value.
    NotAPointIoc,
    /// The object path has no Zeek intel type.
    UnmappedPath(String),
    /// The value is not a string.
    NotAString(String),
}

/// The `intel` event for an indicator (`namespace` is the module namespace, e.g. `Tenzir`).
pub fn intel_event(indicator: &Indicator, namespace: &str) -> Result<Event, NotSent> {
    let ioc = pattern::point_ioc(&indicator.pattern).ok_or(NotSent::NotAPointIoc)?;
    let path = ioc.path.to_string();
    let Some(mut kind) = intel_type(&path) else {
        return Err(NotSent::UnmappedPath(path));
    };
    let Some(value) = ioc.value.as_str() else {
        return Err(NotSent::NotAString(path));
    };
    let value = match kind {
        "URL" => strip_scheme(value),
        "ADDR" if looks_like_subnet(value) => {
            kind = "SUBNET";
            value.to_owned()
        }
        _ => value.to_owned(),
    };
    let operation = match indicator.update() {
        Some(Operation::Remove) => "REMOVE",
        Some(Operation::Edit) | None => "ADD",
    };
    let created = i64::try_from(indicator.created.as_nanosecond()).unwrap_or(i64::MAX);
    let record = Data::Vector(vec![
        Data::Timestamp(created),
        Data::string(indicator.id.as_str()),
        Data::string(kind),
        Data::string(value),
        Data::string(operation),
    ]);
    Ok(Event::new(event_name(namespace, "intel"), vec![record]))
}

/// `<namespace>::<name>`, or just `name` with an empty namespace.
pub fn event_name(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}::{name}")
    }
}

/// The event name without a leading `<namespace>::` (both forms are accepted, as upstream).
pub fn local_name<'a>(namespace: &str, name: &'a str) -> &'a str {
    if namespace.is_empty() {
        return name;
    }
    name.strip_prefix(namespace)
        .and_then(|rest| rest.strip_prefix("::"))
        .unwrap_or(name)
}

/// Upstream's `ADDR` → `SUBNET` rule: at least one character on each side of a `/`.
fn looks_like_subnet(value: &str) -> bool {
    value
        .find('/')
        .is_some_and(|slash| slash > 0 && slash + 1 < value.len())
}

/// Removes a URL's `<scheme>://` as upstream did after re-serialising the URL with Python's
/// `urlparse(...).geturl()`: the scheme is matched case-insensitively, and an empty fragment
/// (`#`) and then an empty query (`?`) at the end are dropped. A value without a scheme is
/// unchanged.
fn strip_scheme(url: &str) -> String {
    let rest = match url.find("://") {
        Some(end)
            if end > 0
                && url[..end].starts_with(|c: char| c.is_ascii_alphabetic())
                && url[..end]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            &url[end + 3..]
        }
        _ => return url.to_owned(),
    };
    let rest = rest.strip_suffix('#').unwrap_or(rest);
    let rest = rest.strip_suffix('?').unwrap_or(rest);
    rest.to_owned()
}

/// Why a `sighting` event could not become a Sighting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadSighting {
    #[error("expected 3 arguments (ts: time, intel_id: string, context: table), got {0}")]
    ArgumentCount(usize),
    #[error("argument {index} must be a {expected}, got a {got}")]
    ArgumentType {
        index: usize,
        expected: &'static str,
        got: &'static str,
    },
    #[error("intel_id {0:?} is not a STIX id: {1}")]
    BadId(String, &'static str),
    #[error("the timestamp {0} ns is out of range")]
    BadTime(i64),
}

/// The Sighting for a `sighting(ts, intel_id, context)` event's arguments.
pub fn sighting_message(args: &[Data]) -> Result<Message, BadSighting> {
    let [ts, intel_id, context] = args else {
        return Err(BadSighting::ArgumentCount(args.len()));
    };
    let wrong = |index, expected, got: &Data| BadSighting::ArgumentType {
        index,
        expected,
        got: got.type_name(),
    };
    let Data::Timestamp(ns) = ts else {
        return Err(wrong(0, "timestamp", ts));
    };
    let Some(id) = intel_id.as_str() else {
        return Err(wrong(1, "string", intel_id));
    };
    let Data::Table(context) = context else {
        return Err(wrong(2, "table", context));
    };
    let id = StixId::parse(id).map_err(|why| BadSighting::BadId(id.to_owned(), why))?;
    let seen = zeek_time(*ns).ok_or(BadSighting::BadTime(*ns))?;
    let mut sighting = Sighting::new(id, Some(seen));
    sighting
        .extra
        .insert("x_threatbus_sighting_context", &table_to_json(context));
    Ok(Message::new(Body::Sighting(sighting)))
}

/// A Zeek `time` (ns since the epoch) as a STIX timestamp, if it is in range.
fn zeek_time(ns: i64) -> Option<Timestamp> {
    let nanos = ns.rem_euclid(1_000_000_000) as i32;
    Timestamp::from_unix(ns.div_euclid(1_000_000_000), nanos)
}

/// A Zeek table as JSON: an object when every key is a string, else a list of `[key, value]`.
fn table_to_json(table: &BTreeMap<Data, Data>) -> Value {
    if table.keys().all(|key| key.as_str().is_some()) {
        let map: Map<String, Value> = table
            .iter()
            .filter_map(|(key, value)| Some((key.as_str()?.to_owned(), to_json(value))))
            .collect();
        Value::Object(map)
    } else {
        Value::Array(
            table
                .iter()
                .map(|(key, value)| Value::Array(vec![to_json(key), to_json(value)]))
                .collect(),
        )
    }
}

/// Broker data as JSON, the way a person would write it: numbers as numbers, addresses,
/// subnets, ports and times as their text, containers as arrays (tables as above).
fn to_json(data: &Data) -> Value {
    match data {
        Data::None => Value::Null,
        Data::Boolean(value) => Value::Bool(*value),
        Data::Count(value) => Value::Number((*value).into()),
        Data::Integer(value) => Value::Number((*value).into()),
        Data::Real(value) => Number::from_f64(*value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string())),
        Data::String(bytes) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        Data::Address(address) => Value::String(address.to_string()),
        Data::Subnet(subnet) => Value::String(subnet.to_string()),
        Data::Port(port) => {
            let protocol = match port.protocol {
                threatbus_broker::Protocol::Tcp => "tcp",
                threatbus_broker::Protocol::Udp => "udp",
                threatbus_broker::Protocol::Icmp => "icmp",
                threatbus_broker::Protocol::Unknown => "?",
            };
            Value::String(format!("{}/{protocol}", port.number))
        }
        Data::Timestamp(ns) => match zeek_time(*ns) {
            Some(time) => Value::String(time.to_stix_string(0)),
            None => Value::Number((*ns).into()),
        },
        // Seconds, as a number.
        Data::Timespan(ns) => Number::from_f64(*ns as f64 / 1e9)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Data::EnumValue(name) => Value::String(name.clone()),
        Data::Set(elements) => Value::Array(elements.iter().map(to_json).collect()),
        Data::Vector(elements) => Value::Array(elements.iter().map(to_json).collect()),
        Data::Table(table) => table_to_json(table),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn indicator(pattern: &str, extra: Value) -> Indicator {
        let mut object = json!({
            "type": "indicator", "spec_version": "2.1",
            "id": "indicator--46b3f973-5c03-41fc-9efe-49598a267a35",
            "created": "2020-06-23T12:34:56.789Z", "modified": "2020-06-23T12:34:56.789Z",
            "pattern": pattern, "pattern_type": "stix", "valid_from": "2020-06-23T12:34:56.789Z",
        });
        let (Value::Object(mut base), Value::Object(extra)) = (object.take(), extra) else {
            unreachable!()
        };
        base.extend(extra);
        Indicator::from_map(base).unwrap()
    }

    fn record(event: &Event) -> Vec<String> {
        let [Data::Vector(slots)] = event.args.as_slice() else {
            panic!("not one record: {event:?}");
        };
        slots
            .iter()
            .skip(1)
            .map(|slot| slot.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn every_mapped_path_becomes_intel_with_its_type() {
        let cases = [
            ("[domain-name:value = 'evil.com']", "DOMAIN", "evil.com"),
            ("[email-addr:value = 'a@b.c']", "EMAIL", "a@b.c"),
            ("[file:name = 'x.exe']", "FILE_NAME", "x.exe"),
            (
                "[file:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427e']",
                "FILE_HASH",
                "d41d8cd98f00b204e9800998ecf8427e",
            ),
            (
                "[file:hashes.'SHA-1' = 'da39a3ee5e6b4b0d3255bfef95601890afd80709']",
                "FILE_HASH",
                "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            ),
            ("[ipv4-addr:value = '6.6.6.6']", "ADDR", "6.6.6.6"),
            ("[ipv6-addr:value = '::1']", "ADDR", "::1"),
            ("[ipv4-addr:value = '10.0.0.0/8']", "SUBNET", "10.0.0.0/8"),
            ("[ipv6-addr:value = '::1/128']", "SUBNET", "::1/128"),
            ("[software:name = 'nginx']", "SOFTWARE", "nginx"),
            (
                "[url:value = 'http://example.com/foo']",
                "URL",
                "example.com/foo",
            ),
            ("[url:value = 'HTTPS://x.com/?']", "URL", "x.com/"),
            (
                "[url:value = 'example.com/no-scheme']",
                "URL",
                "example.com/no-scheme",
            ),
            ("[user:user_id = 'root']", "USER_NAME", "root"),
            ("[user:account_login = 'admin']", "USER_NAME", "admin"),
            (
                "[x509-certificate:hashes.'SHA-1' = 'da39a3ee5e6b4b0d3255bfef95601890afd80709']",
                "CERT_HASH",
                "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            ),
        ];
        for (pattern, kind, value) in cases {
            let event = intel_event(&indicator(pattern, json!({})), "Tenzir").unwrap();
            assert_eq!(event.name, "Tenzir::intel");
            assert_eq!(
                record(&event),
                [
                    "indicator--46b3f973-5c03-41fc-9efe-49598a267a35",
                    kind,
                    value,
                    "ADD"
                ],
                "{pattern}"
            );
            let [Data::Vector(slots)] = event.args.as_slice() else {
                unreachable!()
            };
            // created, as Zeek time (ns).
            assert_eq!(slots[0], Data::Timestamp(1_592_915_696_789_000_000));
        }
    }

    #[test]
    fn compound_unmapped_and_non_string_patterns_are_not_sent() {
        let cases = [
            (
                "[ipv4-addr:value = '1.1.1.1' OR ipv4-addr:value = '2.2.2.2']",
                NotSent::NotAPointIoc,
            ),
            ("[ipv4-addr:value != '1.1.1.1']", NotSent::NotAPointIoc),
            (
                "[process:name = 'x']",
                NotSent::UnmappedPath("process:name".into()),
            ),
            ("[file:size = 5]", NotSent::UnmappedPath("file:size".into())),
        ];
        for (pattern, why) in cases {
            assert_eq!(
                intel_event(&indicator(pattern, json!({})), "Tenzir"),
                Err(why),
                "{pattern}"
            );
        }
    }

    #[test]
    fn removals_and_edits() {
        let remove = indicator(
            "[domain-name:value = 'x.org']",
            json!({"x_threatbus_update": "REMOVE"}),
        );
        assert_eq!(
            record(&intel_event(&remove, "Tenzir").unwrap())[3],
            "REMOVE"
        );
        let edit = indicator(
            "[domain-name:value = 'x.org']",
            json!({"x_threatbus_update": "EDIT"}),
        );
        assert_eq!(record(&intel_event(&edit, "Tenzir").unwrap())[3], "ADD");
    }

    #[test]
    fn namespaces() {
        assert_eq!(event_name("Tenzir", "intel"), "Tenzir::intel");
        assert_eq!(event_name("", "intel"), "intel");
        assert_eq!(local_name("Tenzir", "Tenzir::subscribe"), "subscribe");
        assert_eq!(local_name("Tenzir", "subscribe"), "subscribe");
        assert_eq!(local_name("", "Tenzir::subscribe"), "Tenzir::subscribe");
        assert_eq!(local_name("Tenzir", "Other::subscribe"), "Other::subscribe");
    }

    #[test]
    fn sightings_carry_the_id_time_and_context() {
        let args = [
            Data::Timestamp(1_700_000_000_123_456_789),
            Data::string("indicator--46b3f973-5c03-41fc-9efe-49598a267a35"),
            Data::Table(BTreeMap::from([
                (Data::string("noisy"), Data::Boolean(false)),
                (Data::string("hits"), Data::Count(3)),
            ])),
        ];
        let message = sighting_message(&args).unwrap();
        let json: Value = serde_json::from_slice(message.json()).unwrap();
        assert_eq!(json["type"], "sighting");
        assert_eq!(
            json["sighting_of_ref"],
            "indicator--46b3f973-5c03-41fc-9efe-49598a267a35"
        );
        assert_eq!(json["last_seen"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(
            json["x_threatbus_sighting_context"],
            json!({"noisy": false, "hits": 3})
        );
        assert!(sighting_message(&args[..2]).is_err());
        let mut bad = args.clone();
        bad[1] = Data::string("not-an-id");
        assert!(matches!(
            sighting_message(&bad),
            Err(BadSighting::BadId(..))
        ));
        bad = args.clone();
        bad[0] = Data::Count(1);
        assert!(matches!(
            sighting_message(&bad),
            Err(BadSighting::ArgumentType { index: 0, .. })
        ));
    }
}
