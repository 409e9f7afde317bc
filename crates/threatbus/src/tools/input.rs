//! Reading STIX 2.1 input for `threatbus publish`: a stream of JSON values (one per line,
//! concatenated or pretty-printed), each an object, an array of objects or a STIX bundle.
//! Every object is validated exactly as the bus validates what apps send
//! ([`Message::from_stix_json`]); the text of valid ones is kept as given.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use threatbus_core::{Body, Message};

/// A valid object, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object<'a> {
    /// `stix2/indicator` or `stix2/sighting`.
    pub topic: &'static str,
    pub is_indicator: bool,
    /// The object's JSON text as it stands in the input.
    pub json: &'a str,
}

/// Something wrong with the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line where it starts.
    pub line: usize,
    /// The object's number in the input (1-based), if the problem is with an object.
    pub object: Option<usize>,
    /// The object's `id`, if it has a string one.
    pub id: Option<String>,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(number) = self.object {
            write!(f, ", object {number}")?;
        }
        if let Some(id) = &self.id {
            write!(f, " ({id})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// What the input holds.
#[derive(Debug, Default)]
pub struct Parsed<'a> {
    pub objects: Vec<Object<'a>>,
    pub problems: Vec<Problem>,
    /// Objects of other types, skipped because the caller asked to.
    pub skipped: usize,
}

impl Parsed<'_> {
    pub fn indicators(&self) -> usize {
        self.objects.iter().filter(|o| o.is_indicator).count()
    }
}

/// The few keys looked at before validation.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type")]
    kind: Option<Value>,
    id: Option<Value>,
    #[serde(borrow)]
    objects: Option<&'a RawValue>,
}

struct Reader<'a> {
    text: &'a str,
    /// Byte offsets of the line starts.
    lines: Vec<usize>,
    skip_other_types: bool,
    parsed: Parsed<'a>,
    /// Objects seen so far (valid or not).
    numbered: usize,
}

/// Reads and validates everything in `text`; a syntax error does not stop the reading, which
/// goes on at the next line that starts with `{` or `[` (the next value of line-delimited
/// input, or of pretty-printed values one after another).
pub fn parse(text: &str, skip_other_types: bool) -> Parsed<'_> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let mut reader = Reader {
        text,
        lines,
        skip_other_types,
        parsed: Parsed::default(),
        numbered: 0,
    };
    let mut base = 0;
    'resync: while base < text.len() {
        let mut stream = serde_json::Deserializer::from_str(&text[base..]).into_iter::<&RawValue>();
        for value in stream.by_ref() {
            match value {
                Ok(value) => reader.top_level(value),
                Err(err) => {
                    let line = reader.line_at(base) + err.line().saturating_sub(1);
                    let reason = err.to_string();
                    let location = format!(" at line {} column {}", err.line(), err.column());
                    let reason = reason.strip_suffix(&location).unwrap_or(&reason);
                    let reason = format!("not JSON (column {}): {reason}", err.column());
                    reader.problem(line, None, None, reason);
                    // Go on at the next line that starts a value.
                    let after = base + stream.byte_offset();
                    let rest = &text[after..];
                    let start = after + (rest.len() - rest.trim_start().len());
                    let next = reader
                        .lines
                        .iter()
                        .copied()
                        .find(|&at| at > start && text[at..].starts_with(['{', '[']));
                    match next {
                        Some(next) => {
                            base = next;
                            continue 'resync;
                        }
                        None => break 'resync,
                    }
                }
            }
        }
        break;
    }
    reader.parsed
}

impl<'a> Reader<'a> {
    /// 1-based line of a byte offset.
    fn line_at(&self, offset: usize) -> usize {
        self.lines.partition_point(|&start| start <= offset)
    }

    /// 1-based line of a value borrowed from the text.
    fn line_of(&self, value: &RawValue) -> usize {
        let offset = (value.get().as_ptr() as usize).saturating_sub(self.text.as_ptr() as usize);
        self.line_at(offset)
    }

    fn problem(&mut self, line: usize, object: Option<usize>, id: Option<String>, reason: String) {
        self.parsed.problems.push(Problem {
            line,
            object,
            id,
            reason,
        });
    }

    /// A value of the stream: an object, a bundle or an array of them.
    fn top_level(&mut self, value: &'a RawValue) {
        match value.get().as_bytes().first() {
            Some(b'[') => match serde_json::from_str::<Vec<&RawValue>>(value.get()) {
                Ok(items) => {
                    for item in items {
                        if item.get().starts_with('[') {
                            self.numbered += 1;
                            let line = self.line_of(item);
                            self.problem(
                                line,
                                Some(self.numbered),
                                None,
                                "expected a STIX object, got an array inside an array".into(),
                            );
                        } else {
                            self.object_or_bundle(item);
                        }
                    }
                }
                // Not expected: the text is a JSON array.
                Err(err) => {
                    let line = self.line_of(value);
                    self.problem(line, None, None, err.to_string());
                }
            },
            _ => self.object_or_bundle(value),
        }
    }

    fn object_or_bundle(&mut self, value: &'a RawValue) {
        let peeked = peek(value);
        let is_bundle = peeked
            .as_ref()
            .is_some_and(|p| p.kind.as_ref().and_then(Value::as_str) == Some("bundle"));
        if !is_bundle {
            return self.object(value, peeked);
        }
        let line = self.line_of(value);
        let items = peeked
            .and_then(|p| p.objects)
            .and_then(|objects| serde_json::from_str::<Vec<&RawValue>>(objects.get()).ok());
        match items {
            Some(items) => {
                for item in items {
                    self.object(item, peek(item));
                }
            }
            None => self.problem(
                line,
                None,
                id_of(value),
                "a bundle without an `objects` array".into(),
            ),
        }
    }

    fn object(&mut self, value: &'a RawValue, peek: Option<Peek<'_>>) {
        self.numbered += 1;
        let number = Some(self.numbered);
        let line = self.line_of(value);
        if !value.get().starts_with('{') {
            let reason = format!("expected a STIX object, got {}", describe(value));
            return self.problem(line, number, None, reason);
        }
        // What the peek could not read, validation reports.
        let id = peek
            .as_ref()
            .and_then(|p| p.id.as_ref()?.as_str())
            .map(str::to_owned);
        let kind = peek.as_ref().and_then(|p| p.kind.as_ref()?.as_str());
        if self.skip_other_types && kind.is_some_and(|k| k != "indicator" && k != "sighting") {
            self.parsed.skipped += 1;
            return;
        }
        match Message::from_stix_json(value.get().as_bytes()) {
            Ok(message) => self.parsed.objects.push(Object {
                topic: message.topic(),
                is_indicator: matches!(message.body(), Body::Indicator(_)),
                json: value.get(),
            }),
            Err(err) => {
                let reason = match kind {
                    Some(kind) if kind != "indicator" && kind != "sighting" => {
                        format!("{err}; --skip-other-types skips such objects")
                    }
                    _ => err.to_string(),
                };
                self.problem(line, number, id, reason);
            }
        }
    }
}

/// `type`, `id` and `objects` of an object; `None` for anything that is not an object.
fn peek(value: &RawValue) -> Option<Peek<'_>> {
    if !value.get().starts_with('{') {
        return None;
    }
    serde_json::from_str(value.get()).ok()
}

fn id_of(value: &RawValue) -> Option<String> {
    peek(value)?.id?.as_str().map(str::to_owned)
}

/// `a number`, `a string`, … for error messages.
fn describe(value: &RawValue) -> &'static str {
    match value.get().as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indicator(n: u32) -> String {
        format!(
            r#"{{"type":"indicator","spec_version":"2.1","id":"indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0{n:02}","created":"2020-06-23T12:34:56.000Z","modified":"2020-06-23T12:34:56.000Z","pattern":"[ipv4-addr:value = '6.6.6.{n}']","pattern_type":"stix","valid_from":"2020-06-23T12:34:56.000Z"}}"#
        )
    }

    const SIGHTING: &str = r#"{"type":"sighting","spec_version":"2.1","id":"sighting--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc","created":"2020-06-23T12:34:56.000Z","modified":"2020-06-23T12:34:56.000Z","sighting_of_ref":"indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee001"}"#;

    fn pretty(json: &str) -> String {
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(json).unwrap()).unwrap()
    }

    #[test]
    fn reads_lines_concatenations_pretty_values_arrays_and_bundles() {
        let text = format!(
            "{}\n{}{}\n\n{}\n[{}, {}]\n{{\"type\": \"bundle\", \"id\": \"bundle--1\", \"objects\": [{}, {SIGHTING}]}}\n",
            indicator(1),
            indicator(2),
            indicator(3),
            pretty(&indicator(4)),
            indicator(5),
            SIGHTING,
            indicator(6),
        );
        let parsed = parse(&text, false);
        assert_eq!(parsed.problems, []);
        assert_eq!(parsed.objects.len(), 8);
        assert_eq!(parsed.indicators(), 6);
        assert_eq!(parsed.objects[0].json, indicator(1));
        assert_eq!(parsed.objects[3].json, pretty(&indicator(4)));
        assert_eq!(parsed.objects[5].topic, "stix2/sighting");
        assert_eq!(parsed.objects[6].topic, "stix2/indicator");
        assert!(parse("", false).objects.is_empty());
        assert!(parse("  \n\u{feff}", false).problems.len() == 1);
        assert!(
            parse(&format!("\u{feff}{}", indicator(1)), false)
                .problems
                .is_empty()
        );
    }

    #[test]
    fn lists_every_problem_with_line_number_and_id() {
        let bad_pattern =
            indicator(7).replace("[ipv4-addr:value = '6.6.6.7']", "[ipv4-addr:value = ");
        let text = format!(
            "{}\nnot json at all\n{{\"type\": \"malware\", \"id\": \"malware--1\"}}\n{bad_pattern}\n42\n{}\n{{\"type\": \"bundle\"}}\n[[1]]\n",
            indicator(1),
            indicator(2),
        );
        let parsed = parse(&text, false);
        let problems: Vec<String> = parsed.problems.iter().map(ToString::to_string).collect();
        assert_eq!(parsed.objects.len(), 2, "{problems:#?}");
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(
            problems[0].starts_with("line 2: not JSON (column 2): "),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with("line 3, object 2 (malware--1): ")
                && problems[1].contains("--skip-other-types"),
            "{problems:#?}"
        );
        assert!(
            problems[2].starts_with(
                "line 4, object 3 (indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee007): "
            ) && problems[2].contains("pattern"),
            "{problems:#?}"
        );
        assert_eq!(
            problems[3],
            "line 5, object 4: expected a STIX object, got a number"
        );
        assert!(problems[4].starts_with("line 7: a bundle"), "{problems:#?}");
        assert!(
            problems[5].starts_with("line 8, object 6: "),
            "{problems:#?}"
        );

        let bundle = format!(
            "{{\"type\": \"bundle\", \"objects\": [{{\"type\": \"identity\"}}, {}]}}",
            indicator(1)
        );
        let skipped = parse(&bundle, true);
        assert_eq!((skipped.objects.len(), skipped.skipped), (1, 1));
        assert_eq!(skipped.problems, []);
    }

    #[test]
    fn a_syntax_error_inside_a_pretty_value_does_not_flood() {
        let broken = pretty(&indicator(1)).replace("\"pattern_type\"", "pattern_type");
        let text = format!("{broken}\n{}\n", pretty(&indicator(2)));
        let parsed = parse(&text, false);
        assert_eq!(parsed.problems.len(), 1, "{:#?}", parsed.problems);
        assert_eq!(parsed.objects.len(), 1);
        let unterminated = format!("{}\n{{\"type\": ", indicator(1));
        let parsed = parse(&unterminated, false);
        assert_eq!((parsed.objects.len(), parsed.problems.len()), (1, 1));
        assert_eq!(parsed.problems[0].line, 2);
    }
}
