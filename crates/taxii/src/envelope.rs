//! The TAXII 2.1 envelope (spec section 3.7), read and written without turning the STIX
//! objects in it into a JSON tree.
//!
//! [`parse_envelope`] reads what a client POSTs (or what a server answers the feed client): it
//! checks the envelope's shape and keeps each object as its raw JSON text. [`write_envelope`]
//! writes an answer by concatenating objects that are already JSON (from the store).
//!
//! In the spec every envelope property is optional: a missing `more` means `false` and
//! `objects`, when present, holds one or more objects. So an envelope without objects is written
//! as `{"more":false}`, never with an empty `objects` list; `more` is always written so that
//! clients need not know its default.

use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;

/// A parsed envelope; each object is kept as the JSON text it arrived as.
#[derive(Debug)]
pub struct Envelope {
    /// Whether more objects match (fetch them with `next`).
    pub more: bool,
    /// The value of the `next` parameter that fetches the following page.
    pub next: Option<String>,
    /// The objects, each a JSON object, as raw JSON.
    pub objects: Vec<Box<RawValue>>,
}

/// Why a body is not a TAXII envelope. The messages tell a client what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    /// The body is not JSON (or not UTF-8); the text is the parser's.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not an object.
    #[error("the envelope must be a JSON object")]
    NotAnObject,
    /// The envelope object is malformed in another way (e.g. a key given twice); the text is
    /// the parser's.
    #[error("invalid envelope: {0}")]
    Invalid(String),
    /// `more` is present but not `true` or `false`.
    #[error("`more` must be a boolean")]
    MoreNotBoolean,
    /// `next` is present but not a string.
    #[error("`next` must be a string")]
    NextNotString,
    /// `objects` is present but not an array.
    #[error("`objects` must be an array")]
    ObjectsNotArray,
    /// An element of `objects` (its index) is not a JSON object.
    #[error("`objects[{0}]` is not a JSON object")]
    ObjectNotAnObject(usize),
}

/// The envelope's properties as raw JSON, to be checked one by one. `null` reads as absent.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow, default)]
    more: Option<&'a RawValue>,
    #[serde(borrow, default)]
    next: Option<&'a RawValue>,
    #[serde(borrow, default)]
    objects: Option<&'a RawValue>,
}

/// Whether a raw JSON value is an object (raw values carry no surrounding whitespace).
fn is_object(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
}

/// Parses an envelope body: a JSON object whose `objects`, if present, is an array of JSON
/// objects, whose `more`, if present, is a boolean and whose `next`, if present, is a string.
/// Other keys are ignored; `null` counts as absent.
///
/// The objects are checked against the JSON grammar only: a string in one may hold a lone
/// UTF-16 surrogate escape (`"\uD800"`), which the grammar allows but no Rust string can hold.
/// Such an object passes here and is refused when the object itself is parsed, so that one bad
/// object does not cost the others in the envelope.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, EnvelopeError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| EnvelopeError::NotJson(format!("invalid UTF-8: {e}")))?;
    let whole: &RawValue =
        serde_json::from_str(text).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    if !is_object(whole) {
        return Err(EnvelopeError::NotAnObject);
    }
    let raw: RawEnvelope<'_> =
        serde_json::from_str(whole.get()).map_err(|e| EnvelopeError::Invalid(e.to_string()))?;
    let more = match raw.more {
        None => false,
        Some(value) => {
            serde_json::from_str::<bool>(value.get()).map_err(|_| EnvelopeError::MoreNotBoolean)?
        }
    };
    let next = match raw.next {
        None => None,
        Some(value) => Some(
            serde_json::from_str::<String>(value.get())
                .map_err(|_| EnvelopeError::NextNotString)?,
        ),
    };
    let objects = match raw.objects {
        None => Vec::new(),
        Some(value) => {
            if !value.get().starts_with('[') {
                return Err(EnvelopeError::ObjectsNotArray);
            }
            let elements: Vec<Box<RawValue>> = serde_json::from_str(value.get())
                .map_err(|e| EnvelopeError::Invalid(e.to_string()))?;
            if let Some(index) = elements.iter().position(|element| !is_object(element)) {
                return Err(EnvelopeError::ObjectNotAnObject(index));
            }
            elements
        }
    };
    Ok(Envelope {
        more,
        next,
        objects,
    })
}

/// Appends an envelope to `out`: `{"more":…,"next":"…","objects":[…]}`, `next` only when given
/// (JSON-escaped), `objects` only when there is at least one. Each object's bytes are copied as
/// they are, so they must be JSON objects (the store's canonical JSON); an empty item is
/// skipped so that the output stays valid JSON.
pub fn write_envelope(
    out: &mut Vec<u8>,
    more: bool,
    next: Option<&str>,
    objects: impl IntoIterator<Item = impl AsRef<[u8]>>,
) {
    out.extend_from_slice(if more {
        b"{\"more\":true"
    } else {
        b"{\"more\":false"
    });
    if let Some(next) = next {
        out.extend_from_slice(b",\"next\":");
        write_json_string(out, next);
    }
    let mut first = true;
    for object in objects {
        let object = object.as_ref();
        if object.is_empty() {
            continue;
        }
        out.extend_from_slice(if first { b",\"objects\":[" } else { b"," });
        first = false;
        out.extend_from_slice(object);
    }
    if !first {
        out.push(b']');
    }
    out.push(b'}');
}

/// Appends `text` as a JSON string literal.
fn write_json_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &byte in text.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x00..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
            }
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const INDICATOR: &str = r#"{"type":"indicator","spec_version":"2.1","id":"indicator--29aba82c-5393-42a8-9edb-6a2cb1df070b","created":"2026-12-06T13:59:59.000Z","modified":"2026-12-06T13:59:59.000Z","pattern":"[ipv4-addr:value = '10.0.0.1']","pattern_type":"stix","valid_from":"2026-12-06T13:59:59.000Z","x_big":123456789012345678901234567890}"#;

    #[test]
    fn parses_objects_verbatim() {
        let body =
            format!(r#" {{ "more" : true, "next":"p2", "objects": [ {INDICATOR} , {{}} ] }} "#);
        let envelope = parse_envelope(body.as_bytes()).unwrap();
        assert!(envelope.more);
        assert_eq!(envelope.next.as_deref(), Some("p2"));
        assert_eq!(envelope.objects.len(), 2);
        assert_eq!(envelope.objects[0].get(), INDICATOR);
        assert_eq!(envelope.objects[1].get(), "{}");
    }

    #[test]
    fn optional_properties() {
        for body in [
            "{}",
            r#"{"more":null,"next":null,"objects":null}"#,
            r#"{"x":[1,{"y":2}]}"#,
        ] {
            let envelope = parse_envelope(body.as_bytes()).unwrap();
            assert!(!envelope.more, "{body}");
            assert_eq!(envelope.next, None, "{body}");
            assert!(envelope.objects.is_empty(), "{body}");
        }
        assert!(
            parse_envelope(br#"{"objects":[]}"#)
                .unwrap()
                .objects
                .is_empty()
        );
    }

    #[test]
    fn errors_say_what_to_fix() {
        let cases: &[(&[u8], EnvelopeError)] = &[
            (b"[]", EnvelopeError::NotAnObject),
            (b"\"objects\"", EnvelopeError::NotAnObject),
            (b"null", EnvelopeError::NotAnObject),
            (br#"{"more":"yes"}"#, EnvelopeError::MoreNotBoolean),
            (br#"{"more":1}"#, EnvelopeError::MoreNotBoolean),
            (br#"{"next":5}"#, EnvelopeError::NextNotString),
            (br#"{"objects":{}}"#, EnvelopeError::ObjectsNotArray),
            (br#"{"objects":"[]"}"#, EnvelopeError::ObjectsNotArray),
            (
                br#"{"objects":[{},{},{},[]]}"#,
                EnvelopeError::ObjectNotAnObject(3),
            ),
            (br#"{"objects":[1]}"#, EnvelopeError::ObjectNotAnObject(0)),
        ];
        for (body, expected) in cases {
            assert_eq!(
                parse_envelope(body).unwrap_err(),
                *expected,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            EnvelopeError::ObjectNotAnObject(3).to_string(),
            "`objects[3]` is not a JSON object"
        );
        for body in [&b""[..], b"{", b"{\"objects\":[}", b"\xff{}", b"{} {}"] {
            let error = parse_envelope(body).unwrap_err();
            assert!(matches!(error, EnvelopeError::NotJson(_)), "{error:?}");
            assert!(error.to_string().starts_with("not JSON: "));
        }
        assert!(matches!(
            parse_envelope(br#"{"objects":[],"objects":[]}"#),
            Err(EnvelopeError::Invalid(_))
        ));
    }

    #[test]
    fn lone_surrogates_pass_to_the_object_parser() {
        // Found by fuzzing (taxii_envelope): grammatical JSON that does not parse into a tree.
        let body = br#"{"objects":[{"pattern":"\uD884x"},{}]}"#;
        let envelope = parse_envelope(body).unwrap();
        assert_eq!(envelope.objects.len(), 2);
        assert_eq!(envelope.objects[0].get(), r#"{"pattern":"\uD884x"}"#);
        assert!(serde_json::from_str::<Value>(envelope.objects[0].get()).is_err());
        // Outside `objects` the values are decoded, and refused.
        assert!(matches!(
            parse_envelope(br#"{"next":"\uD884x"}"#),
            Err(EnvelopeError::NextNotString)
        ));
    }

    #[test]
    fn writes_valid_json() {
        let mut out = Vec::new();
        write_envelope(&mut out, false, None, std::iter::empty::<&[u8]>());
        assert_eq!(out, b"{\"more\":false}");

        out.clear();
        write_envelope(&mut out, true, Some("a\"b\\c\n\u{1}é"), [INDICATOR, "{}"]);
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["more"], true);
        assert_eq!(value["next"], "a\"b\\c\n\u{1}é");
        assert_eq!(value["objects"].as_array().unwrap().len(), 2);
        assert_eq!(value["objects"][1], json!({}));

        out.clear();
        write_envelope(&mut out, false, Some(""), ["", "{}", ""]);
        assert_eq!(out, b"{\"more\":false,\"next\":\"\",\"objects\":[{}]}");
    }

    #[test]
    fn write_then_parse_round_trips() {
        let objects = [INDICATOR.to_owned(), r#"{"type":"sighting"}"#.to_owned()];
        let mut out = b"garbage before is kept: ".to_vec();
        let start = out.len();
        write_envelope(&mut out, true, Some("next-page"), &objects);
        let envelope = parse_envelope(&out[start..]).unwrap();
        assert!(envelope.more);
        assert_eq!(envelope.next.as_deref(), Some("next-page"));
        let texts: Vec<&str> = envelope.objects.iter().map(|o| o.get()).collect();
        assert_eq!(texts, objects);

        let mut again = Vec::new();
        write_envelope(
            &mut again,
            envelope.more,
            envelope.next.as_deref(),
            envelope.objects.iter().map(|o| o.get()),
        );
        assert_eq!(again, &out[start..]);
    }
}
