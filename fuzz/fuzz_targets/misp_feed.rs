//! Frames from MISP's ZeroMQ feed: nothing may panic, and an indicator made from one must be
//! valid STIX that the bus reads back as the same object.

#![no_main]

use libfuzzer_sys::fuzz_target;
use threatbus_core::{Body, Message};
use threatbus_misp::feed::{Decoded, decode};
use threatbus_misp::filter::FilterEntry;

fuzz_target!(|bytes: &[u8]| {
    let filters = [FilterEntry {
        orgs: vec!["1".into()],
        types: Vec::new(),
        tags: Vec::new(),
    }];
    for filter in [&filters[..], &[]] {
        if let Ok(Decoded::Indicator(indicator)) = decode(bytes, filter) {
            let message = Message::new(Body::Indicator(*indicator.clone()));
            let again = Message::from_json(message.json()).expect("the bus reads its own indicator");
            assert_eq!(again.json(), message.json());
        }
    }
});
