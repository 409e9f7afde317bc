//! Routing topics and the prefix rule that matches subscriptions against them.
//!
//! A message's routing topic follows from its type alone, never from where it came from
//! (an app may send a Sighting on the ZeroMQ topic `stix2/indicator`; it is still routed as
//! `stix2/sighting`). A subscription `S` receives a message with routing topic `T` iff `T`
//! starts with `S` as a plain string: `stix2/ind` matches `stix2/indicator`, `stix2` matches both
//! STIX topics, and the empty string matches everything.

/// Routing topic of STIX Indicators.
pub const INDICATOR: &str = "stix2/indicator";
/// Routing topic of STIX Sightings.
pub const SIGHTING: &str = "stix2/sighting";
/// Routing topic of snapshot requests.
pub const SNAPSHOT_REQUEST: &str = "threatbus/snapshotrequest";
/// Routing topic of snapshot envelopes.
pub const SNAPSHOT_ENVELOPE: &str = "threatbus/snapshotenvelope";

/// Every routing topic, in the order of [`crate::message::Body::topic_index`].
pub const ALL: [&str; 4] = [INDICATOR, SIGHTING, SNAPSHOT_REQUEST, SNAPSHOT_ENVELOPE];

/// Whether a subscription to `subscription` receives messages routed on `topic`.
pub fn matches(subscription: &str, topic: &str) -> bool {
    topic.starts_with(subscription)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rule_is_a_plain_string_prefix() {
        assert!(matches("stix2/indicator", INDICATOR));
        assert!(matches("stix2/ind", INDICATOR));
        assert!(matches("stix2", INDICATOR));
        assert!(matches("stix2", SIGHTING));
        assert!(matches("stix2/", SIGHTING));
        assert!(matches("", SNAPSHOT_REQUEST));
        assert!(matches("threatbus", SNAPSHOT_ENVELOPE));
        assert!(!matches("stix2/indicator/", INDICATOR));
        assert!(!matches("stix2/sighting", INDICATOR));
        assert!(!matches("TOPIC", INDICATOR));
        assert!(!matches("Stix2", INDICATOR));
    }
}
