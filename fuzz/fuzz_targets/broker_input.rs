//! Everything a Zeek peer can send the bus over Broker: frame splitting, handshake messages,
//! envelopes, data values and Zeek events. Nothing may panic, and whatever decodes must encode
//! to bytes that decode to the same value again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use threatbus_broker::data::Data;
use threatbus_broker::frame::{Envelope, Handshake, split_frame};
use threatbus_broker::zeek::Event;

fuzz_target!(|bytes: &[u8]| {
    // A stream of frames, as read from a socket.
    let mut rest = bytes;
    while let Ok(Some((payload, used))) = split_frame(rest, 1 << 16) {
        if let Ok(message) = Handshake::decode(payload) {
            assert_eq!(Handshake::decode(&message.to_payload()).ok(), Some(message));
        }
        if let Ok(envelope) = Envelope::decode(payload) {
            assert_eq!(Envelope::decode(&envelope.to_payload()).ok(), Some(envelope));
        }
        rest = &rest[used..];
    }
    // The payload of a data envelope.
    if let Ok(value) = Data::decode(bytes) {
        let encoded = value.to_bytes();
        let again = Data::decode(&encoded).expect("an encoding decodes");
        assert!(again == value);
        assert_eq!(again.to_bytes(), encoded);
        if let Ok(Some(event)) = Event::from_data(value) {
            let back = Event::decode(&event.to_bytes()).expect("an event's encoding decodes");
            assert_eq!(back.map(|event| event.to_bytes()), Some(event.to_bytes()));
        }
    }
});
