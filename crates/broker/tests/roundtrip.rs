//! Property tests: every data value, envelope and handshake message decodes to itself, and
//! decoding arbitrary bytes never panics.

use proptest::prelude::*;
use threatbus_broker::data::{Data, MAX_DEPTH};
use threatbus_broker::frame::{Envelope, EnvelopeType, Handshake, split_frame};
use threatbus_broker::zeek::Event;
use threatbus_broker::{Address, EndpointId, Port, Protocol, Subnet};

fn real() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        any::<u64>().prop_map(f64::from_bits),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::NAN),
        Just(-0.0),
    ]
}

fn leaf() -> impl Strategy<Value = Data> {
    prop_oneof![
        Just(Data::None),
        any::<bool>().prop_map(Data::Boolean),
        any::<u64>().prop_map(Data::Count),
        any::<i64>().prop_map(Data::Integer),
        real().prop_map(Data::Real),
        // Long enough for two-byte varbyte lengths now and then.
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Data::String),
        any::<[u8; 16]>().prop_map(|bytes| Data::Address(Address(bytes))),
        (any::<[u8; 16]>(), 0u8..=128).prop_map(|(bytes, raw_length)| {
            Data::Subnet(Subnet {
                address: Address(bytes),
                raw_length,
            })
        }),
        (any::<u16>(), 0u8..4).prop_map(|(number, protocol)| {
            let protocol = [
                Protocol::Unknown,
                Protocol::Tcp,
                Protocol::Udp,
                Protocol::Icmp,
            ][usize::from(protocol)];
            Data::Port(Port { number, protocol })
        }),
        any::<i64>().prop_map(Data::Timestamp),
        any::<i64>().prop_map(Data::Timespan),
        "[A-Za-z:_]{0,20}".prop_map(Data::EnumValue),
    ]
}

fn data() -> impl Strategy<Value = Data> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Data::Vector),
            proptest::collection::btree_set(inner.clone(), 0..8).prop_map(Data::Set),
            proptest::collection::btree_map(inner.clone(), inner, 0..8).prop_map(Data::Table),
        ]
    })
}

proptest! {
    #[test]
    fn data_round_trips(value in data()) {
        let bytes = value.to_bytes();
        let back = Data::decode(&bytes).expect("decodes");
        prop_assert!(back == value, "{value:?} came back as {back:?}");
        // Encoding is a fixed point (sets and tables are written in order).
        prop_assert_eq!(back.to_bytes(), bytes);
    }

    #[test]
    fn events_round_trip(name in "[A-Za-z:_]{1,30}", args in proptest::collection::vec(data(), 0..5),
                         with_time in any::<bool>(), ts in any::<i64>()) {
        let mut event = Event::new(name, args);
        if with_time {
            event.metadata.push((1, Data::Timestamp(ts)));
        }
        let back = Event::decode(&event.to_bytes()).expect("decodes").expect("an event");
        prop_assert_eq!(back.to_bytes(), event.to_bytes());
    }

    #[test]
    fn envelopes_round_trip(sender in any::<[u8; 16]>(), receiver in any::<[u8; 16]>(),
                            kind in 1u8..=5, ttl in any::<u16>(),
                            topic in proptest::collection::vec(any::<u8>(), 0..100),
                            payload in proptest::collection::vec(any::<u8>(), 0..200)) {
        let kind = [EnvelopeType::Data, EnvelopeType::Command, EnvelopeType::RoutingUpdate,
                    EnvelopeType::Ping, EnvelopeType::Pong][usize::from(kind - 1)];
        let envelope = Envelope {
            sender: EndpointId::from_bytes(sender), receiver: EndpointId::from_bytes(receiver), kind, ttl, topic, payload,
        };
        prop_assert_eq!(Envelope::decode(&envelope.to_payload()).expect("decodes"), envelope);
    }

    #[test]
    fn whole_frames_split_back(sender in any::<[u8; 16]>(),
                               topic in "[a-z/]{0,60}",
                               payload in proptest::collection::vec(any::<u8>(), 0..300),
                               filter in proptest::collection::vec(
                                   proptest::collection::vec(any::<u8>(), 0..50), 0..5)) {
        let envelope = Envelope::data(EndpointId::from_bytes(sender), &topic, payload);
        let frame = envelope.to_frame();
        let (inner, used) = split_frame(&frame, 1 << 20).expect("in bounds").expect("whole");
        prop_assert_eq!(used, frame.len());
        prop_assert_eq!(Envelope::decode(inner).expect("decodes"), envelope);
        let message = Handshake::OriginatorSyn(filter);
        let frame = message.to_frame();
        let (inner, used) = split_frame(&frame, 1 << 20).expect("in bounds").expect("whole");
        prop_assert_eq!(used, frame.len());
        prop_assert_eq!(Handshake::decode(inner).expect("decodes"), message);
    }

    #[test]
    fn filters_round_trip(filter in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..200), 0..10)) {
        for message in [Handshake::OriginatorSyn(filter.clone()), Handshake::ResponderSynAck(filter)] {
            prop_assert_eq!(Handshake::decode(&message.to_payload()).expect("decodes"), message);
        }
    }

    #[test]
    fn varbytes_round_trip_up_to_five_bytes(value in any::<u32>()) {
        let mut out = Vec::new();
        threatbus_broker::data::encode_varbyte(value, &mut out);
        prop_assert!(out.len() <= 5);
        prop_assert_eq!(out.len(), (32 - value.leading_zeros()).max(1).div_ceil(7) as usize);
        let mut reader = threatbus_broker::data::Reader::new(&out);
        prop_assert_eq!(reader.varbyte("x").expect("decodes"), value);
        prop_assert!(reader.finish().is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Data::decode(&bytes);
        let _ = Envelope::decode(&bytes);
        let _ = Handshake::decode(&bytes);
        let _ = Event::decode(&bytes);
    }
}

#[test]
fn depth_limit_applies_to_every_container_kind() {
    for opener in [[0x0e, 0x01], [0x0c, 0x01]] {
        let mut deep = opener.repeat(MAX_DEPTH + 1);
        deep.push(0x00);
        assert!(Data::decode(&deep).is_err());
    }
}
