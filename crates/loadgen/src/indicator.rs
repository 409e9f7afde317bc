//! The indicators the generator publishes: realistic STIX 2.1 Indicator frames built once as
//! templates and then patched in place.
//!
//! A frame is `<topic> <json>`. Everything that changes from one message to the next has a
//! fixed-width slot in the template: the tail of the id, the pattern's value, `x_loadgen_seq` and
//! `x_loadgen_sent_ns`. Numbers are right-aligned with leading spaces, which JSON allows between
//! tokens, so no slot ever changes the frame's length. Sending a message is then a few byte writes
//! and no allocation or serialisation on our side: the send timestamp is spliced in last, just
//! before the frame goes to the socket.
//!
//! The pattern kind cycles with the sequence number through an IPv4 address, a domain name, a URL
//! and an MD5 file hash: all valid STIX 2.1 point patterns, as the bus validates them.

use anyhow::{Context as _, bail};

/// Width of the `x_loadgen_seq` slot: sequence numbers below 10^9.
const SEQ_WIDTH: usize = 9;
/// Width of the `x_loadgen_sent_ns` slot: nanoseconds since the epoch have 19 digits until 2286.
const SENT_NS_WIDTH: usize = 19;
/// Hex digits of the per-message token in ids, domain names, URLs and hashes (48 bits).
const TOKEN_HEX: usize = 12;
/// Width of the varying part of the IPv4 address: three octets of `100`..=`255`.
const IPV4_WIDTH: usize = 11;
/// The largest sequence number a slot can hold.
pub const MAX_SEQ: u64 = 999_999_999;

/// Text the description is cut from; it contains no characters JSON would escape.
const FILLER: &str = "Synthetic indicator published by threatbus-loadgen to measure the bus; \
    the text only pads the object to a realistic size. ";

/// What every indicator of a run shares.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Identifies this run, so that frames of other producers on the same bus are told apart.
    pub run_id: u32,
    /// The topic frames are published on, e.g. `stix2/indicator`.
    pub topic: String,
    /// Target size of the JSON object in bytes; the description pads up to it.
    pub json_size: usize,
    /// `created`, `modified` and `valid_from`, e.g. `2024-05-01T12:00:00.123Z`.
    pub timestamp: String,
}

/// The four kinds of point pattern, used in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternKind {
    Ipv4,
    Domain,
    Url,
    FileMd5,
}

impl PatternKind {
    const ALL: [Self; 4] = [Self::Ipv4, Self::Domain, Self::Url, Self::FileMd5];

    /// The pattern around the value slot, and the placeholder filling the slot.
    fn parts(self, run_id: u32) -> (String, String, String) {
        let token = "0".repeat(TOKEN_HEX);
        match self {
            Self::Ipv4 => (
                "[ipv4-addr:value = '10.".into(),
                "100.100.100".into(),
                "']".into(),
            ),
            Self::Domain => (
                "[domain-name:value = 'h".into(),
                token,
                ".example.com']".into(),
            ),
            Self::Url => (
                "[url:value = 'http://h".into(),
                token,
                ".example.net/']".into(),
            ),
            Self::FileMd5 => (
                format!("[file:hashes.MD5 = '{run_id:08x}a5a5a5a5a5a5"),
                token,
                "']".into(),
            ),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "C2 server address",
            Self::Domain => "Phishing domain",
            Self::Url => "Malware download URL",
            Self::FileMd5 => "Dropper sample",
        }
    }
}

/// One frame with fixed-width slots at known offsets.
#[derive(Debug, Clone)]
pub struct FrameTemplate {
    bytes: Vec<u8>,
    json_start: usize,
    kind: PatternKind,
    id_tail: usize,
    value: usize,
    seq: usize,
    sent_ns: usize,
}

impl FrameTemplate {
    /// Builds the template of one kind for one publisher.
    fn build(spec: &RunSpec, publisher: u16, kind: PatternKind, probe: bool) -> Self {
        let bare = Self::assemble(spec, publisher, kind, probe, None);
        // `"description":"",` adds 17 bytes around the text.
        let room = spec.json_size.saturating_sub(bare.json().len() + 17);
        if room == 0 {
            return bare;
        }
        let mut description: String = FILLER.chars().cycle().take(room).collect();
        if description.ends_with(' ') {
            description.pop();
            description.push('.');
        }
        Self::assemble(spec, publisher, kind, probe, Some(&description))
    }

    /// Writes the JSON by hand, recording where each slot starts. Every string is ASCII without
    /// quotes or backslashes, so nothing needs escaping.
    fn assemble(
        spec: &RunSpec,
        publisher: u16,
        kind: PatternKind,
        probe: bool,
        description: Option<&str>,
    ) -> Self {
        let (before, placeholder, after) = kind.parts(spec.run_id);
        let mut out = Vec::with_capacity(spec.json_size + spec.topic.len() + 64);
        let push = |out: &mut Vec<u8>, text: &str| out.extend_from_slice(text.as_bytes());
        push(&mut out, &spec.topic);
        push(&mut out, " ");
        let json_start = out.len();
        // The id: run, publisher and probe flag are constant; the last 12 hex digits are the
        // message's token. Version 4 and variant bits make it a valid RFC 4122 UUID.
        push(
            &mut out,
            &format!(
                r#"{{"type":"indicator","spec_version":"2.1","id":"indicator--{:08x}-{:04x}-4{:03x}-8000-"#,
                spec.run_id,
                publisher,
                u8::from(probe),
            ),
        );
        let id_tail = out.len();
        push(&mut out, &"0".repeat(TOKEN_HEX));
        let ts = &spec.timestamp;
        push(
            &mut out,
            &format!(
                r#"","created":"{ts}","modified":"{ts}","name":"{}","#,
                kind.name()
            ),
        );
        if let Some(text) = description {
            push(&mut out, &format!(r#""description":"{text}","#));
        }
        push(&mut out, r#""pattern":""#);
        push(&mut out, &before);
        let value = out.len();
        push(&mut out, &placeholder);
        push(&mut out, &after);
        push(
            &mut out,
            &format!(
                r#"","pattern_type":"stix","valid_from":"{ts}","labels":["malicious-activity"],"x_loadgen_run":{},"x_loadgen_pub":{publisher},"#,
                spec.run_id
            ),
        );
        if probe {
            push(&mut out, r#""x_loadgen_probe":true,"#);
        }
        push(&mut out, r#""x_loadgen_seq":"#);
        let seq = out.len();
        push(&mut out, &" ".repeat(SEQ_WIDTH));
        push(&mut out, r#","x_loadgen_sent_ns":"#);
        let sent_ns = out.len();
        push(&mut out, &" ".repeat(SENT_NS_WIDTH - 1));
        push(&mut out, "0}");
        let mut template = Self {
            bytes: out,
            json_start,
            kind,
            id_tail,
            value,
            seq,
            sent_ns,
        };
        template.set_seq(0, 0);
        template
    }

    /// Fills in the id, pattern value and sequence number of message `seq`.
    fn set_seq(&mut self, publisher: u16, seq: u64) {
        let token = (u64::from(publisher) << 36) | (seq & ((1 << 36) - 1));
        write_hex(
            &mut self.bytes[self.id_tail..self.id_tail + TOKEN_HEX],
            token,
        );
        match self.kind {
            PatternKind::Ipv4 => {
                let spread = seq.wrapping_add(u64::from(publisher) << 20);
                let slot = &mut self.bytes[self.value..self.value + IPV4_WIDTH];
                for (i, octet) in [spread / (156 * 156), spread / 156, spread]
                    .into_iter()
                    .enumerate()
                {
                    write_right_aligned(&mut slot[i * 4..i * 4 + 3], 100 + octet % 156);
                }
            }
            PatternKind::Domain | PatternKind::Url | PatternKind::FileMd5 => {
                write_hex(&mut self.bytes[self.value..self.value + TOKEN_HEX], token);
            }
        }
        write_right_aligned(&mut self.bytes[self.seq..self.seq + SEQ_WIDTH], seq);
    }

    /// Splices the send time into the frame; call it just before sending.
    pub fn stamp(&mut self, sent_ns: u64) {
        write_right_aligned(
            &mut self.bytes[self.sent_ns..self.sent_ns + SENT_NS_WIDTH],
            sent_ns,
        );
    }

    /// The whole frame, `<topic> <json>`.
    pub fn frame(&self) -> &[u8] {
        &self.bytes
    }

    /// The JSON part of the frame.
    pub fn json(&self) -> &[u8] {
        &self.bytes[self.json_start..]
    }
}

/// Makes the frames of one publisher: one template per pattern kind and one for probes.
#[derive(Debug, Clone)]
pub struct IndicatorFactory {
    publisher: u16,
    templates: Vec<FrameTemplate>,
    probe: FrameTemplate,
}

impl IndicatorFactory {
    /// Builds and checks the templates of `publisher`.
    pub fn new(spec: &RunSpec, publisher: u16) -> anyhow::Result<Self> {
        let templates: Vec<_> = PatternKind::ALL
            .into_iter()
            .map(|kind| FrameTemplate::build(spec, publisher, kind, false))
            .collect();
        let probe = FrameTemplate::build(spec, publisher, PatternKind::Ipv4, true);
        for template in templates.iter().chain([&probe]) {
            serde_json::from_slice::<serde_json::Value>(template.json()).with_context(|| {
                format!(
                    "the indicator template is not valid JSON: {}",
                    String::from_utf8_lossy(template.frame())
                )
            })?;
        }
        if spec.topic.contains(' ') {
            bail!("--topic must not contain a space, got {:?}", spec.topic);
        }
        Ok(Self {
            publisher,
            templates,
            probe,
        })
    }

    /// The frame of measured message `seq`, ready but for [`FrameTemplate::stamp`].
    pub fn message(&mut self, seq: u64) -> &mut FrameTemplate {
        let kinds = self.templates.len() as u64;
        let template = &mut self.templates[(seq % kinds) as usize];
        template.set_seq(self.publisher, seq);
        template
    }

    /// The frame of probe `seq` (marked `x_loadgen_probe`), ready but for the stamp.
    pub fn probe(&mut self, seq: u64) -> &mut FrameTemplate {
        self.probe.set_seq(self.publisher, seq);
        &mut self.probe
    }

    /// Size of the JSON of each pattern kind, for the report.
    pub fn json_sizes(&self) -> impl Iterator<Item = usize> + '_ {
        self.templates.iter().map(|t| t.json().len())
    }
}

/// Writes `value` as lower-case hex filling `slot` (higher digits are cut off).
fn write_hex(slot: &mut [u8], mut value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in slot.iter_mut().rev() {
        *byte = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// Writes `value` in decimal, right-aligned in `slot` with leading spaces. A value too wide for
/// the slot keeps its lowest digits (callers bound their values).
fn write_right_aligned(slot: &mut [u8], mut value: u64) {
    let mut i = slot.len();
    loop {
        i -= 1;
        slot[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 || i == 0 {
            break;
        }
    }
    slot[..i].fill(b' ');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn spec(size: usize) -> RunSpec {
        RunSpec {
            run_id: 0xdead_beef,
            topic: "stix2/indicator".into(),
            json_size: size,
            timestamp: "2024-05-01T12:00:00.123Z".into(),
        }
    }

    fn parse(template: &FrameTemplate) -> Value {
        serde_json::from_slice(template.json()).unwrap()
    }

    #[test]
    fn slots_write_fixed_width() {
        let mut slot = *b"xxxxx";
        write_right_aligned(&mut slot, 42);
        assert_eq!(&slot, b"   42");
        write_right_aligned(&mut slot, 0);
        assert_eq!(&slot, b"    0");
        write_right_aligned(&mut slot, 99999);
        assert_eq!(&slot, b"99999");
        let mut hex = *b"xxxxxx";
        write_hex(&mut hex, 0xab_cdef);
        assert_eq!(&hex, b"abcdef");
        write_hex(&mut hex, 0x1f);
        assert_eq!(&hex, b"00001f");
    }

    #[test]
    fn messages_are_valid_json_of_the_target_size_with_unique_ids() {
        let mut factory = IndicatorFactory::new(&spec(500), 3).unwrap();
        let mut ids = std::collections::HashSet::new();
        let mut kinds = std::collections::HashSet::new();
        for seq in [0, 1, 2, 3, 4, 5, 6, 7, 1_000_003, MAX_SEQ] {
            let frame = factory.message(seq);
            frame.stamp(1_714_564_800_123_456_789);
            assert!(frame.frame().starts_with(b"stix2/indicator {"));
            assert_eq!(frame.json().len(), 500, "{seq}");
            let json = parse(frame);
            assert_eq!(json["type"], "indicator");
            assert_eq!(json["spec_version"], "2.1");
            assert_eq!(json["pattern_type"], "stix");
            assert_eq!(json["created"], "2024-05-01T12:00:00.123Z");
            assert_eq!(json["x_loadgen_seq"], seq);
            assert_eq!(json["x_loadgen_pub"], 3);
            assert_eq!(json["x_loadgen_run"], 0xdead_beef_u32);
            assert_eq!(json["x_loadgen_sent_ns"], 1_714_564_800_123_456_789_u64);
            assert!(json.get("x_loadgen_probe").is_none());
            assert!(ids.insert(json["id"].as_str().unwrap().to_owned()));
            kinds.insert(json["pattern"].as_str().unwrap()[..6].to_owned());
        }
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        let probe = factory.probe(0);
        probe.stamp(5);
        let json = parse(probe);
        assert_eq!(json["x_loadgen_probe"], true);
        assert_eq!(json["x_loadgen_sent_ns"], 5);
        assert!(!ids.contains(json["id"].as_str().unwrap()));
    }

    #[test]
    fn patterns_cycle_through_point_kinds() {
        let mut factory = IndicatorFactory::new(&spec(450), 0).unwrap();
        let patterns: Vec<String> = (0..4)
            .map(|seq| {
                parse(factory.message(seq))["pattern"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(patterns[0], "[ipv4-addr:value = '10.100.100.100']");
        assert_eq!(
            patterns[1],
            "[domain-name:value = 'h000000000001.example.com']"
        );
        assert_eq!(
            patterns[2],
            "[url:value = 'http://h000000000002.example.net/']"
        );
        assert_eq!(
            patterns[3],
            "[file:hashes.MD5 = 'deadbeefa5a5a5a5a5a5000000000003']"
        );
        let ip = parse(factory.message(24_496))["pattern"].clone();
        assert_eq!(ip, "[ipv4-addr:value = '10.101.101.104']");
    }

    #[test]
    fn small_sizes_drop_the_description() {
        let mut factory = IndicatorFactory::new(&spec(10), 0).unwrap();
        let json = parse(factory.message(1));
        assert!(json.get("description").is_none());
        // Without a description the objects are about 450 bytes.
        assert!(factory.json_sizes().all(|size| (440..470).contains(&size)));
        let mut factory = IndicatorFactory::new(&spec(2000), 0).unwrap();
        assert!(factory.json_sizes().all(|size| size == 2000));
        assert_eq!(factory.message(9).json().len(), 2000);
    }

    #[test]
    fn topics_with_spaces_are_refused() {
        let mut bad = spec(450);
        bad.topic = "stix2/indicator x".into();
        assert!(IndicatorFactory::new(&bad, 0).is_err());
    }

    /// The bus must accept every kind of message: ids, timestamps and patterns are checked by
    /// the same code the bus runs at its edge.
    #[test]
    fn the_bus_accepts_the_indicators() {
        let mut factory = IndicatorFactory::new(&spec(450), 65535).unwrap();
        for seq in (0..8).chain([MAX_SEQ]) {
            let frame = factory.message(seq);
            frame.stamp(1_714_564_800_123_456_789);
            if let Err(err) = threatbus_core::Message::from_stix_json(frame.json()) {
                panic!("{err}: {}", String::from_utf8_lossy(frame.json()));
            }
        }
        let probe = factory.probe(7);
        assert!(threatbus_core::Message::from_stix_json(probe.json()).is_ok());
    }
}
