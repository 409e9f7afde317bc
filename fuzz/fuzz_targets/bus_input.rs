//! Fuzzes what apps send the bus over ZeroMQ: a management request, a frame on the sub socket
//! and the JSON message decoder behind it. No input may panic; a decoded message must encode to
//! JSON that decodes again and encodes to the same bytes (the encoding is a fixed point; it may
//! differ from the input, e.g. snapshot seconds are truncated).

#![no_main]

use libfuzzer_sys::fuzz_target;
use threatbus_core::Message;
use threatbus_zmq::{manage, receiver};

fuzz_target!(|data: &[u8]| {
    let _ = manage::decode(data);
    if let Ok(message) = receiver::decode_frame(data) {
        assert_fixed_point(&message);
    }
    if let Ok(message) = Message::from_json(data) {
        assert_fixed_point(&message);
    }
});

fn assert_fixed_point(message: &Message) {
    let again = Message::from_json(message.json()).expect("our own encoding decodes");
    assert_eq!(again.json(), message.json());
    assert_eq!(again.topic(), message.topic());
}
