//! Feeds arbitrary bytes to the TAXII envelope parser (`threatbus_taxii::parse_envelope`):
//! nothing may panic; every object of an accepted envelope is a JSON object (by the JSON
//! grammar: a string may hold a lone UTF-16 surrogate escape such as `"\uD884"`, which the
//! envelope passes on and the STIX parser refuses per object, so an object that does parse into
//! a tree must be an object); writing the parsed envelope back (`write_envelope`) gives JSON that
//! parses again to the same `more`, `next` and objects. Regression seeds:
//! `corpus/taxii_envelope/seed-lone-surrogate-*`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use threatbus_taxii::{parse_envelope, write_envelope};

fuzz_target!(|bytes: &[u8]| {
    let Ok(envelope) = parse_envelope(bytes) else {
        return;
    };
    for object in &envelope.objects {
        let text = object.get();
        assert!(text.starts_with('{') && text.ends_with('}'), "{text}");
        let alone: &RawValue = serde_json::from_str(text).expect("an object is JSON on its own");
        assert_eq!(alone.get(), text);
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
            assert!(value.is_object());
        }
    }
    let mut out = Vec::new();
    write_envelope(
        &mut out,
        envelope.more,
        envelope.next.as_deref(),
        envelope.objects.iter().map(|object| object.get()),
    );
    let again = parse_envelope(&out).expect("a written envelope parses");
    assert_eq!(again.more, envelope.more);
    assert_eq!(again.next, envelope.next);
    assert_eq!(again.objects.len(), envelope.objects.len());
    for (a, b) in again.objects.iter().zip(&envelope.objects) {
        assert_eq!(a.get(), b.get());
    }
});
