//! Zeek events as Broker data (spec §7): `vector[count 1, count 1, vector[name, args,
//! metadata?]]`.

use crate::data::Data;
use crate::error::DecodeError;

/// Version of Zeek's message format, the first element of every Zeek message.
const PROTOCOL_VERSION: u64 = 1;

/// Message type of an event, the second element (others are Zeek-internal: logs, batches).
const EVENT: u64 = 1;

/// One Zeek event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The fully qualified name, e.g. `Tenzir::intel`.
    pub name: String,
    /// The arguments, each typed strictly as the handler's parameter (a record is a vector with
    /// one slot per field).
    pub args: Vec<Data>,
    /// Metadata entries `[count key, value]`; key 1 is the network timestamp. Zeek 8 sends
    /// none unless configured to.
    pub metadata: Vec<(u64, Data)>,
}

impl Event {
    pub fn new(name: impl Into<String>, args: Vec<Data>) -> Self {
        Self {
            name: name.into(),
            args,
            metadata: Vec::new(),
        }
    }

    /// The event as a data value. Metadata is written only if there is some.
    pub fn to_data(&self) -> Data {
        let mut body = vec![
            Data::string(self.name.as_str()),
            Data::Vector(self.args.clone()),
        ];
        if !self.metadata.is_empty() {
            let entries = self
                .metadata
                .iter()
                .map(|(key, value)| Data::Vector(vec![Data::Count(*key), value.clone()]))
                .collect();
            body.push(Data::Vector(entries));
        }
        Data::Vector(vec![
            Data::Count(PROTOCOL_VERSION),
            Data::Count(EVENT),
            Data::Vector(body),
        ])
    }

    /// The encoded event: the payload of a data envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_data().to_bytes()
    }

    /// Reads an event from a data value, checking what Zeek checks. `Ok(None)` for a valid
    /// Zeek message that is not an event (a log write, a batch, …).
    pub fn from_data(data: Data) -> Result<Option<Self>, DecodeError> {
        let shape = |what: &str| DecodeError::Shape(format!("not a Zeek message: {what}"));
        let Data::Vector(outer) = data else {
            return Err(shape("not a vector"));
        };
        let mut outer = outer.into_iter();
        let (Some(version), Some(kind), Some(content)) = (outer.next(), outer.next(), outer.next())
        else {
            return Err(shape("fewer than three elements"));
        };
        match version {
            Data::Count(PROTOCOL_VERSION) => {}
            other => return Err(shape(&format!("format version {other:?}"))),
        }
        match kind {
            Data::Count(EVENT) => {}
            Data::Count(_) => return Ok(None),
            other => return Err(shape(&format!("message type {other:?}"))),
        }
        let Data::Vector(body) = content else {
            return Err(shape("the event is not a vector"));
        };
        let mut body = body.into_iter();
        let (Some(name), Some(Data::Vector(args))) = (body.next(), body.next()) else {
            return Err(shape("no event name and arguments"));
        };
        let Some(name) = name.as_str().map(str::to_owned) else {
            return Err(shape("the event name is not a UTF-8 string"));
        };
        let mut metadata = Vec::new();
        match body.next() {
            None => {}
            Some(Data::Vector(entries)) => {
                for entry in entries {
                    match entry {
                        Data::Vector(pair) if pair.len() == 2 => {
                            let mut pair = pair.into_iter();
                            if let (Some(Data::Count(key)), Some(value)) =
                                (pair.next(), pair.next())
                            {
                                metadata.push((key, value));
                                continue;
                            }
                            return Err(shape("a metadata key that is not a count"));
                        }
                        _ => return Err(shape("a metadata entry that is not a pair")),
                    }
                }
            }
            Some(_) => return Err(shape("metadata that is not a vector")),
        }
        Ok(Some(Self {
            name,
            args,
            metadata,
        }))
    }

    /// Decodes a data envelope's payload as an event (see [`Event::from_data`]).
    pub fn decode(payload: &[u8]) -> Result<Option<Self>, DecodeError> {
        Self::from_data(Data::decode(payload)?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const TS: i64 = 1_700_000_000_123_456_789;

    fn hex_with_text(parts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            if let Some(text) = part.strip_prefix('"') {
                out.extend_from_slice(text.trim_end_matches('"').as_bytes());
            } else {
                out.extend(
                    part.split_whitespace()
                        .map(|byte| u8::from_str_radix(byte, 16).unwrap()),
                );
            }
        }
        out
    }

    const HEAD: &str = "0e 03 02 00 00 00 00 00 00 00 01 02 00 00 00 00 00 00 00 01";

    /// The three Threat Bus payloads of spec §7.3, as a real Broker printed them.
    #[test]
    fn golden_threat_bus_events() {
        let intel = Event::new(
            "Tenzir::intel",
            vec![Data::Vector(vec![
                Data::Timestamp(TS),
                Data::string("indicator--1"),
                Data::string("DOMAIN"),
                Data::string("evil.com"),
                Data::string("ADD"),
            ])],
        );
        let intel_bytes = hex_with_text(&[
            HEAD,
            "0e 02 05 0d",
            "\"Tenzir::intel\"",
            "0e 01 0e 05 09 17 97 9c fe 3d 85 cd 15 05 0c",
            "\"indicator--1\"",
            "05 06",
            "\"DOMAIN\"",
            "05 08",
            "\"evil.com\"",
            "05 03",
            "\"ADD\"",
        ]);
        assert_eq!(intel.to_bytes(), intel_bytes);
        assert_eq!(Event::decode(&intel_bytes).unwrap(), Some(intel));

        let sighting_bytes = hex_with_text(&[
            HEAD,
            "0e 03 05 10",
            "\"Tenzir::sighting\"",
            "0e 03 09 17 97 9c fe 3d 85 cd 15 05 0c",
            "\"indicator--1\"",
            "0d 01 05 05",
            "\"noisy\"",
            "01 00 0e 01 0e 02 02 00 00 00 00 00 00 00 01 09 17 97 9c fe 3d 85 cd 15",
        ]);
        let sighting = Event::decode(&sighting_bytes).unwrap().unwrap();
        assert_eq!(sighting.name, "Tenzir::sighting");
        assert_eq!(
            sighting.args,
            vec![
                Data::Timestamp(TS),
                Data::string("indicator--1"),
                Data::Table(BTreeMap::from([(
                    Data::string("noisy"),
                    Data::Boolean(false)
                )])),
            ]
        );
        assert_eq!(sighting.metadata, vec![(1, Data::Timestamp(TS))]);
        assert_eq!(sighting.to_bytes(), sighting_bytes);

        let subscribe_bytes = hex_with_text(&[
            HEAD,
            "0e 02 05 11",
            "\"Tenzir::subscribe\"",
            "0e 02 05 0f",
            "\"stix2/indicator\"",
            "0a 00 00 00 00 00 00 00 00",
        ]);
        let subscribe = Event::decode(&subscribe_bytes).unwrap().unwrap();
        assert_eq!(
            subscribe,
            Event::new(
                "Tenzir::subscribe",
                vec![Data::string("stix2/indicator"), Data::Timespan(0)]
            )
        );
    }

    #[test]
    fn other_zeek_messages_are_not_events_and_garbage_is_an_error() {
        let log_write = Data::Vector(vec![Data::Count(1), Data::Count(3), Data::Vector(vec![])]);
        assert_eq!(Event::from_data(log_write).unwrap(), None);
        let bad = [
            Data::Count(1),
            Data::Vector(vec![Data::Count(1), Data::Count(1)]),
            Data::Vector(vec![Data::Integer(1), Data::Count(1), Data::Vector(vec![])]),
            Data::Vector(vec![Data::Count(1), Data::Count(1), Data::Vector(vec![])]),
            Data::Vector(vec![
                Data::Count(1),
                Data::Count(1),
                Data::Vector(vec![Data::Count(5), Data::Vector(vec![])]),
            ]),
            Data::Vector(vec![
                Data::Count(1),
                Data::Count(1),
                Data::Vector(vec![
                    Data::string("e"),
                    Data::Vector(vec![]),
                    Data::Vector(vec![Data::Vector(vec![Data::Integer(1), Data::None])]),
                ]),
            ]),
        ];
        for data in bad {
            assert!(Event::from_data(data.clone()).is_err(), "accepted {data:?}");
        }
        // An empty metadata vector is fine (Zeek 8's WebSocket example has one).
        let empty_meta = Data::Vector(vec![
            Data::Count(1),
            Data::Count(1),
            Data::Vector(vec![
                Data::string("e"),
                Data::Vector(vec![]),
                Data::Vector(vec![]),
            ]),
        ]);
        assert!(Event::from_data(empty_meta).unwrap().is_some());
    }
}
