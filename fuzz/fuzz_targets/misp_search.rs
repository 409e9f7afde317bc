//! Answers to MISP's restSearch (snapshots): nothing may panic, every attribute either maps or
//! is skipped, and an indicator made from one is valid STIX that the bus reads back unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use threatbus_core::{Body, Message};
use threatbus_misp::attribute::{self, Action};
use threatbus_misp::filter::{self, FilterEntry};
use threatbus_misp::rest;

fuzz_target!(|bytes: &[u8]| {
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return;
    };
    let Ok(attributes) = rest::search_attributes(&answer) else {
        return;
    };
    let filters = [FilterEntry {
        orgs: vec!["1".into()],
        types: vec!["domain".into()],
        tags: vec!["tlp:red".into()],
    }];
    for found in attributes {
        let Some(found) = found.as_object() else {
            continue;
        };
        let _ = filter::result_passes(&filters, found);
        if let Ok(indicator) = attribute::indicator(found, Action::Add) {
            let message = Message::new(Body::Indicator(indicator));
            let again = Message::from_json(message.json()).expect("the bus reads its own indicator");
            assert_eq!(again.json(), message.json());
        }
    }
});
