//! Reads the frames the bus publishes to a subscriber: `<p2p topic><suffix> <json>`.
//!
//! Only the generator's own custom properties are needed, so instead of parsing the whole object
//! the JSON is scanned for `"x_loadgen_` keys and their values are read in place. This works
//! whatever the bus does to the object on the way: our bus re-encodes it compactly, the Python
//! original writes `"key": value` with a space, and either may reorder the properties.

use memchr::memmem;

/// The generator's properties found in one indicator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadgenFields {
    /// `x_loadgen_run`: the run that sent it.
    pub run: Option<u64>,
    /// `x_loadgen_pub`: the publisher index.
    pub publisher: Option<u64>,
    /// `x_loadgen_seq`: the sequence number, per publisher.
    pub seq: Option<u64>,
    /// `x_loadgen_sent_ns`: send time, nanoseconds since the epoch.
    pub sent_ns: Option<u64>,
    /// `x_loadgen_probe`: a warm-up probe rather than a measured message.
    pub probe: bool,
}

/// What a received frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// An indicator; its generator fields (all `None` for a foreign indicator).
    Indicator(LoadgenFields),
    /// Anything else the bus sends a subscription (sightings, snapshot requests).
    Other,
}

/// Why a frame could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// No space between topic and payload, or the topic is shorter than the p2p topic.
    NoTopic,
    /// A `x_loadgen_` property whose value is not what the generator writes.
    BadValue,
}

/// Reads frames of one subscription; holds the searcher so each frame costs one scan.
#[derive(Debug)]
pub struct FrameReader {
    p2p_len: usize,
    keys: memmem::Finder<'static>,
}

const KEY_PREFIX: &[u8] = b"\"x_loadgen_";

impl FrameReader {
    /// A reader for frames of a subscription whose p2p topic has `p2p_len` bytes.
    pub fn new(p2p_len: usize) -> Self {
        Self {
            p2p_len,
            keys: memmem::Finder::new(KEY_PREFIX),
        }
    }

    /// Classifies `frame` and, for an indicator, extracts the generator's fields.
    pub fn read(&self, frame: &[u8]) -> Result<Frame, FrameError> {
        let space = memchr::memchr(b' ', frame).ok_or(FrameError::NoTopic)?;
        if space < self.p2p_len {
            return Err(FrameError::NoTopic);
        }
        if &frame[self.p2p_len..space] != b"indicator" {
            return Ok(Frame::Other);
        }
        let json = &frame[space + 1..];
        let mut fields = LoadgenFields::default();
        for hit in self.keys.find_iter(json) {
            let name_start = hit + KEY_PREFIX.len();
            let Some(name_len) = memchr::memchr(b'"', &json[name_start..]) else {
                break;
            };
            let name = &json[name_start..name_start + name_len];
            let rest = &json[name_start + name_len + 1..];
            let slot = match name {
                b"run" => &mut fields.run,
                b"pub" => &mut fields.publisher,
                b"seq" => &mut fields.seq,
                b"sent_ns" => &mut fields.sent_ns,
                b"probe" => {
                    fields.probe = read_bool(rest)?;
                    continue;
                }
                _ => continue,
            };
            *slot = Some(read_number(rest)?);
        }
        Ok(Frame::Indicator(fields))
    }
}

/// The bytes after `:` and any whitespace that follow a key's closing quote.
fn value_after_colon(rest: &[u8]) -> Result<&[u8], FrameError> {
    let rest = rest.trim_ascii_start();
    let rest = rest.strip_prefix(b":").ok_or(FrameError::BadValue)?;
    Ok(rest.trim_ascii_start())
}

/// Reads a non-negative JSON integer.
fn read_number(rest: &[u8]) -> Result<u64, FrameError> {
    let value = value_after_colon(rest)?;
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return Err(FrameError::BadValue);
    }
    value[..digits].iter().try_fold(0u64, |acc, digit| {
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u64::from(digit - b'0')))
            .ok_or(FrameError::BadValue)
    })
}

/// Reads `true` or `false`.
fn read_bool(rest: &[u8]) -> Result<bool, FrameError> {
    let value = value_after_colon(rest)?;
    if value.starts_with(b"true") {
        Ok(true)
    } else if value.starts_with(b"false") {
        Ok(false)
    } else {
        Err(FrameError::BadValue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P2P: &str = "abcdefghijklmnopqrstuvwxyzabcdef";

    fn read(frame: &str) -> Result<Frame, FrameError> {
        FrameReader::new(P2P.len()).read(frame.as_bytes())
    }

    #[test]
    fn reads_compact_json_as_our_bus_writes_it() {
        let frame = format!(
            r#"{P2P}indicator {{"type":"indicator","id":"indicator--x","x_loadgen_run":7,"x_loadgen_pub":2,"x_loadgen_seq":12345,"x_loadgen_sent_ns":1714564800123456789}}"#
        );
        assert_eq!(
            read(&frame),
            Ok(Frame::Indicator(LoadgenFields {
                run: Some(7),
                publisher: Some(2),
                seq: Some(12345),
                sent_ns: Some(1_714_564_800_123_456_789),
                probe: false,
            }))
        );
    }

    #[test]
    fn reads_spaced_reordered_json_as_python_writes_it() {
        let frame = format!(
            r#"{P2P}indicator {{"x_loadgen_sent_ns": 99, "type": "indicator", "x_loadgen_probe": true, "x_loadgen_seq":    3 , "x_loadgen_pub": 0, "x_loadgen_run" : 1}}"#
        );
        assert_eq!(
            read(&frame),
            Ok(Frame::Indicator(LoadgenFields {
                run: Some(1),
                publisher: Some(0),
                seq: Some(3),
                sent_ns: Some(99),
                probe: true,
            }))
        );
    }

    #[test]
    fn foreign_indicators_have_no_fields_and_other_kinds_are_other() {
        let foreign = format!(
            r#"{P2P}indicator {{"type":"indicator","x_loadgen_other":"ignored","pattern":"[x]"}}"#
        );
        assert_eq!(
            read(&foreign),
            Ok(Frame::Indicator(LoadgenFields::default()))
        );
        let request = format!(r#"{P2P}snapshotrequest {{"type":"snapshotrequest"}}"#);
        assert_eq!(read(&request), Ok(Frame::Other));
        let sighting = format!(r#"{P2P}sighting {{"x_loadgen_seq":1}}"#);
        assert_eq!(read(&sighting), Ok(Frame::Other));
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert_eq!(read(&format!("{P2P}indicator")), Err(FrameError::NoTopic));
        assert_eq!(read("short {}"), Err(FrameError::NoTopic));
        for bad in [
            r#"{"x_loadgen_seq":"12"}"#,
            r#"{"x_loadgen_seq":-1}"#,
            r#"{"x_loadgen_seq" 1}"#,
            r#"{"x_loadgen_seq":}"#,
            r#"{"x_loadgen_seq":123456789012345678901234}"#,
            r#"{"x_loadgen_seq":18446744073709551616}"#,
            r#"{"x_loadgen_probe":1}"#,
        ] {
            assert_eq!(
                read(&format!("{P2P}indicator {bad}")),
                Err(FrameError::BadValue),
                "{bad}"
            );
        }
        let max = format!(r#"{P2P}indicator {{"x_loadgen_seq":18446744073709551615}}"#);
        assert!(matches!(
            read(&max),
            Ok(Frame::Indicator(LoadgenFields {
                seq: Some(u64::MAX),
                ..
            }))
        ));
    }

    /// The frames the generator sends, after a compact re-encoding, read back exactly.
    #[test]
    fn reads_what_the_generator_sends() {
        use crate::indicator::{IndicatorFactory, RunSpec};
        let spec = RunSpec {
            run_id: 77,
            topic: "stix2/indicator".into(),
            json_size: 450,
            timestamp: "2024-05-01T12:00:00.123Z".into(),
        };
        let mut factory = IndicatorFactory::new(&spec, 5).unwrap();
        let frame = factory.message(4242);
        frame.stamp(1_714_564_800_000_000_001);
        let value: serde_json::Value = serde_json::from_slice(frame.json()).unwrap();
        let received = format!("{P2P}indicator {value}");
        assert_eq!(
            read(&received),
            Ok(Frame::Indicator(LoadgenFields {
                run: Some(77),
                publisher: Some(5),
                seq: Some(4242),
                sent_ns: Some(1_714_564_800_000_000_001),
                probe: false,
            }))
        );
        // Straight from the template, padded numbers and all.
        let raw = [P2P.as_bytes(), b"indicator ", frame.json()].concat();
        assert_eq!(FrameReader::new(P2P.len()).read(&raw), read(&received));
    }
}
