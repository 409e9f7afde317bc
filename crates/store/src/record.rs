//! What the store keeps of a routed message: the canonical JSON bytes, and the few fields the
//! versioning rules and the snapshot queries need, read once from the parsed body.

use bytes::Bytes;
use threatbus_core::stix::{Operation, Timestamp};
use threatbus_core::{Body, Message};

/// The two kinds of object the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Indicator,
    Sighting,
}

impl Kind {
    /// The value stored in the `kind` column.
    pub fn code(self) -> i64 {
        match self {
            Self::Indicator => 0,
            Self::Sighting => 1,
        }
    }

    /// The STIX type name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Indicator => "indicator",
            Self::Sighting => "sighting",
        }
    }
}

/// One version of one object, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub kind: Kind,
    /// The STIX id.
    pub id: String,
    /// Nanoseconds since the Unix epoch.
    pub created: i64,
    /// Nanoseconds since the Unix epoch: the version.
    pub modified: i64,
    /// An indicator whose `x_threatbus_update` is `REMOVE` or whose `revoked` is true.
    pub withdrawn: bool,
    /// An indicator's `valid_until`, in nanoseconds since the Unix epoch.
    pub valid_until: Option<i64>,
    /// The object exactly as the bus publishes it (shared with the message, not copied).
    pub json: Bytes,
}

/// Nanoseconds since the epoch, saturating (STIX timestamps fit easily).
pub fn nanos(timestamp: &Timestamp) -> i64 {
    i64::try_from(timestamp.as_nanosecond()).unwrap_or(i64::MAX)
}

impl Record {
    /// The record of an Indicator or a Sighting; `None` for snapshot requests and envelopes.
    pub fn from_message(message: &Message) -> Option<Self> {
        let json = message.json().clone();
        match message.body() {
            Body::Indicator(indicator) => {
                let revoked = indicator
                    .extra
                    .get_value("revoked")
                    .is_some_and(|v| v.as_bool() == Some(true));
                let valid_until = indicator
                    .extra
                    .get_str("valid_until")
                    .and_then(|text| Timestamp::parse(&text).ok())
                    .map(|t| nanos(&t));
                Some(Self {
                    kind: Kind::Indicator,
                    id: indicator.id.to_string(),
                    created: nanos(&indicator.created),
                    modified: nanos(&indicator.modified),
                    withdrawn: revoked || indicator.update() == Some(Operation::Remove),
                    valid_until,
                    json,
                })
            }
            Body::Sighting(sighting) => Some(Self {
                kind: Kind::Sighting,
                id: sighting.id.to_string(),
                created: nanos(&sighting.created),
                modified: nanos(&sighting.modified),
                withdrawn: false,
                valid_until: None,
                json,
            }),
            Body::SnapshotRequest(_) | Body::SnapshotEnvelope(_) => None,
        }
    }
}
