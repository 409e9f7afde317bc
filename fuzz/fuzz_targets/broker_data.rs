//! The payload of a Broker data envelope, as a Zeek peer can send it: one data value and the
//! Zeek event in it. Nothing may panic, and whatever decodes must encode to bytes that decode
//! to the same value again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use threatbus_broker::data::Data;
use threatbus_broker::zeek::Event;

fuzz_target!(|bytes: &[u8]| {
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
