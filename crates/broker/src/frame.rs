//! Frames and the messages they carry (spec §2–§5).
//!
//! Every frame is a big-endian `u32` length and that many bytes. During the handshake
//! (phases 1 and 2) a frame's first byte is a message tag; afterwards every frame is an
//! [`Envelope`]: sender and receiver endpoint ids, a type, a TTL, a topic and a payload.

use crate::data::{Reader, encode_bytes, encode_varbyte};
use crate::error::DecodeError;
use crate::id::EndpointId;

/// "ZEEK": the magic number of every handshake message.
pub const MAGIC: u32 = 0x5A45_454B;

/// The only protocol version there is.
pub const VERSION: u8 = 1;

/// The largest frame Broker itself accepts (CAF's limit); peers should set a far smaller one.
pub const MAX_FRAME_LENGTH: usize = i32::MAX as usize - 4;

/// The TTL Broker writes into envelopes (it never enforces it).
pub const DEFAULT_TTL: u16 = 16;

/// The topic of ping, pong and routing-update envelopes.
pub const INTERNAL_TOPIC: &str = "<$>";

/// Where the length prefix of the next frame says it ends.
///
/// Returns `Ok(None)` while `buffer` does not yet hold the whole frame, and the frame's payload
/// and total size (prefix included) once it does. A length above `max` is an error: the
/// connection cannot be read any further.
pub fn split_frame(buffer: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, DecodeError> {
    let Some(prefix) = buffer.get(..4) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if length > max.min(MAX_FRAME_LENGTH) {
        return Err(DecodeError::FrameTooLarge {
            length: length as u64,
            max: max.min(MAX_FRAME_LENGTH),
        });
    }
    match buffer.get(4..4 + length) {
        Some(payload) => Ok(Some((payload, 4 + length))),
        None => Ok(None),
    }
}

/// Appends a frame with `payload` (the length prefix first).
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    append_frame(out, |out| out.extend_from_slice(payload));
}

/// Appends a frame whose payload `write_payload` appends: the one place that writes a length
/// prefix (a payload above `u32::MAX` bytes, which no message of this crate comes near, gets
/// the prefix `u32::MAX`).
fn append_frame(out: &mut Vec<u8>, write_payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    write_payload(out);
    let length = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
}

/// A subscription list: topic prefixes (spec §4).
pub type Filter = Vec<Vec<u8>>;

/// Whether `topic` starts with one of the filter's prefixes (byte-wise, no separator logic).
pub fn filter_matches(filter: &Filter, topic: &[u8]) -> bool {
    filter.iter().any(|prefix| topic.starts_with(prefix))
}

fn encode_filter(filter: &Filter, out: &mut Vec<u8>) {
    encode_varbyte(u32::try_from(filter.len()).unwrap_or(u32::MAX), out);
    for prefix in filter {
        encode_bytes(prefix, out);
    }
}

fn decode_filter(reader: &mut Reader<'_>) -> Result<Filter, DecodeError> {
    let count = reader.varbyte("a filter")?;
    if count as usize > reader.rest().len() {
        return Err(DecodeError::LengthExceedsInput {
            what: "a filter",
            length: u64::from(count),
            remaining: reader.rest().len(),
        });
    }
    (0..count)
        .map(|_| reader.bytes("a filter entry").map(<[u8]>::to_vec))
        .collect()
}

/// Tags of the handshake messages (spec §3.1).
mod tag {
    pub const HELLO: u8 = 6;
    pub const PROBE: u8 = 7;
    pub const VERSION_SELECT: u8 = 8;
    pub const DROP_CONN: u8 = 9;
    pub const ORIGINATOR_SYN: u8 = 10;
    pub const RESPONDER_SYN_ACK: u8 = 11;
    pub const ORIGINATOR_ACK: u8 = 12;
}

/// Broker's error codes that a DROP_CONN carries (spec §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DropCode {
    PeerIncompatible = 2,
    /// Not sent by Broker itself (it ignores such a peer silently); the bus names the reason.
    PeerInvalid = 3,
    InvalidMessage = 20,
    ShuttingDown = 28,
    WrongMagicNumber = 38,
    RedundantConnection = 39,
    LogicError = 40,
}

/// A message of the handshake (phases 1 and 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    Hello {
        sender: EndpointId,
        min_version: u8,
        max_version: u8,
    },
    Probe,
    VersionSelect {
        sender: EndpointId,
        version: u8,
    },
    DropConn {
        sender: EndpointId,
        code: u8,
        description: Vec<u8>,
    },
    OriginatorSyn(Filter),
    ResponderSynAck(Filter),
    OriginatorAck,
}

impl Handshake {
    /// The frame payload (without the length prefix).
    pub fn to_payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_payload(&mut out);
        out
    }

    /// The whole frame: the length prefix, then the payload.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut out = Vec::new();
        append_frame(&mut out, |out| self.write_payload(out));
        out
    }

    /// Appends the frame payload to `out`.
    fn write_payload(&self, out: &mut Vec<u8>) {
        match self {
            Self::Hello {
                sender,
                min_version,
                max_version,
            } => {
                out.push(tag::HELLO);
                out.extend_from_slice(&MAGIC.to_be_bytes());
                out.extend_from_slice(sender.as_bytes());
                out.extend_from_slice(&[*min_version, *max_version]);
            }
            Self::Probe => {
                out.push(tag::PROBE);
                out.extend_from_slice(&MAGIC.to_be_bytes());
            }
            Self::VersionSelect { sender, version } => {
                out.push(tag::VERSION_SELECT);
                out.extend_from_slice(&MAGIC.to_be_bytes());
                out.extend_from_slice(sender.as_bytes());
                out.push(*version);
            }
            Self::DropConn {
                sender,
                code,
                description,
            } => {
                out.push(tag::DROP_CONN);
                out.extend_from_slice(&MAGIC.to_be_bytes());
                out.extend_from_slice(sender.as_bytes());
                out.push(*code);
                encode_bytes(description, out);
            }
            Self::OriginatorSyn(filter) => {
                out.push(tag::ORIGINATOR_SYN);
                encode_filter(filter, out);
            }
            Self::ResponderSynAck(filter) => {
                out.push(tag::RESPONDER_SYN_ACK);
                encode_filter(filter, out);
            }
            Self::OriginatorAck => out.push(tag::ORIGINATOR_ACK),
        }
    }

    /// Reads one handshake message that fills `payload` exactly.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(payload);
        let tag = match reader.u8("a message tag") {
            Ok(tag) => tag,
            Err(_) => return Err(DecodeError::EmptyFrame),
        };
        let magic = |reader: &mut Reader<'_>| match reader.u32("the magic number")? {
            MAGIC => Ok(()),
            other => Err(DecodeError::WrongMagic(other)),
        };
        let message = match tag {
            tag::HELLO => {
                magic(&mut reader)?;
                let sender = EndpointId::from_bytes(reader.array("an endpoint id")?);
                let min_version = reader.u8("a version")?;
                let max_version = reader.u8("a version")?;
                Self::Hello {
                    sender,
                    min_version,
                    max_version,
                }
            }
            tag::PROBE => {
                magic(&mut reader)?;
                Self::Probe
            }
            tag::VERSION_SELECT => {
                magic(&mut reader)?;
                let sender = EndpointId::from_bytes(reader.array("an endpoint id")?);
                let version = reader.u8("a version")?;
                Self::VersionSelect { sender, version }
            }
            tag::DROP_CONN => {
                magic(&mut reader)?;
                let sender = EndpointId::from_bytes(reader.array("an endpoint id")?);
                let code = reader.u8("an error code")?;
                let description = reader.bytes("a description")?.to_vec();
                Self::DropConn {
                    sender,
                    code,
                    description,
                }
            }
            tag::ORIGINATOR_SYN => Self::OriginatorSyn(decode_filter(&mut reader)?),
            tag::RESPONDER_SYN_ACK => Self::ResponderSynAck(decode_filter(&mut reader)?),
            tag::ORIGINATOR_ACK => Self::OriginatorAck,
            other => return Err(DecodeError::UnknownMessageTag(other)),
        };
        reader.finish()?;
        Ok(message)
    }
}

/// What an envelope carries (spec §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EnvelopeType {
    /// One data value (a Zeek event, for Zeek).
    Data = 1,
    /// Data-store commands.
    Command = 2,
    /// The sender's complete new filter.
    RoutingUpdate = 3,
    Ping = 4,
    Pong = 5,
}

/// A message of the peering phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The sending hop's own id.
    pub sender: EndpointId,
    /// [`EndpointId::NIL`] for pub/sub, else one endpoint.
    pub receiver: EndpointId,
    pub kind: EnvelopeType,
    pub ttl: u16,
    pub topic: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Envelope {
    /// A data message to every subscriber of `topic`.
    pub fn data(sender: EndpointId, topic: &str, payload: Vec<u8>) -> Self {
        Self {
            sender,
            receiver: EndpointId::NIL,
            kind: EnvelopeType::Data,
            ttl: DEFAULT_TTL,
            topic: topic.as_bytes().to_vec(),
            payload,
        }
    }

    /// A ping, pong or routing update between two peers.
    pub fn internal(
        kind: EnvelopeType,
        sender: EndpointId,
        receiver: EndpointId,
        payload: Vec<u8>,
    ) -> Self {
        Self {
            sender,
            receiver,
            kind,
            ttl: DEFAULT_TTL,
            topic: INTERNAL_TOPIC.as_bytes().to_vec(),
            payload,
        }
    }

    /// A routing update announcing `filter`.
    pub fn routing_update(sender: EndpointId, receiver: EndpointId, filter: &Filter) -> Self {
        let mut payload = Vec::new();
        encode_filter(filter, &mut payload);
        Self::internal(EnvelopeType::RoutingUpdate, sender, receiver, payload)
    }

    /// The filter a routing update carries.
    pub fn filter(&self) -> Result<Filter, DecodeError> {
        let mut reader = Reader::new(&self.payload);
        let filter = decode_filter(&mut reader)?;
        reader.finish()?;
        Ok(filter)
    }

    /// The frame payload (without the length prefix).
    pub fn to_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload_length());
        self.write_payload(&mut out);
        out
    }

    /// The whole frame: the length prefix, then the payload.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.payload_length());
        append_frame(&mut out, |out| self.write_payload(out));
        out
    }

    /// The length of the frame payload (for the capacity of buffers).
    fn payload_length(&self) -> usize {
        37 + self.topic.len() + self.payload.len()
    }

    /// Appends the frame payload to `out`.
    fn write_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.sender.as_bytes());
        out.extend_from_slice(self.receiver.as_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.ttl.to_be_bytes());
        let topic_length = u16::try_from(self.topic.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&topic_length.to_be_bytes());
        out.extend_from_slice(&self.topic[..usize::from(topic_length)]);
        out.extend_from_slice(&self.payload);
    }

    /// Reads an envelope from a frame payload; the payload runs to the end of the frame.
    pub fn decode(frame: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(frame);
        let sender = EndpointId::from_bytes(reader.array("an envelope's sender")?);
        let receiver = EndpointId::from_bytes(reader.array("an envelope's receiver")?);
        let kind = match reader.u8("an envelope type")? {
            1 => EnvelopeType::Data,
            2 => EnvelopeType::Command,
            3 => EnvelopeType::RoutingUpdate,
            4 => EnvelopeType::Ping,
            5 => EnvelopeType::Pong,
            other => return Err(DecodeError::UnknownEnvelopeType(other)),
        };
        let ttl = reader.u16("a TTL")?;
        let topic_length = reader.u16("a topic length")?;
        let topic = reader.take(usize::from(topic_length), "a topic")?.to_vec();
        Ok(Self {
            sender,
            receiver,
            kind,
            ttl,
            topic,
            payload: reader.rest().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .filter(|part| *part != "|")
            .map(|byte| u8::from_str_radix(byte, 16).unwrap())
            .collect()
    }

    fn id(last: u8) -> EndpointId {
        let mut bytes = [0u8; 16];
        bytes[6] = 0x40;
        bytes[8] = 0x80;
        bytes[15] = last;
        EndpointId::from_bytes(bytes)
    }

    fn framed(message: &Handshake) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&message.to_payload(), &mut out);
        out
    }

    /// The example frames of spec §3.2 and §4.
    #[test]
    fn golden_handshake_frames() {
        let sender = id(1);
        assert_eq!(sender.to_string(), "00000000-0000-4000-8000-000000000001");
        let cases = [
            (
                Handshake::Hello {
                    sender,
                    min_version: 1,
                    max_version: 1,
                },
                "00 00 00 17 | 06 | 5a 45 45 4b | 00 00 00 00 00 00 40 00 80 00 00 00 00 00 00 01 | 01 | 01",
            ),
            (Handshake::Probe, "00 00 00 05 | 07 | 5a 45 45 4b"),
            (
                Handshake::VersionSelect { sender, version: 1 },
                "00 00 00 16 | 08 | 5a 45 45 4b | 00 00 00 00 00 00 40 00 80 00 00 00 00 00 00 01 | 01",
            ),
            (
                Handshake::OriginatorSyn(vec![
                    b"threatbus/manage".to_vec(),
                    b"stix2/sighting".to_vec(),
                ]),
                "00 00 00 22 | 0a | 02 | 10 74 68 72 65 61 74 62 75 73 2f 6d 61 6e 61 67 65 | 0e 73 74 69 78 32 2f 73 69 67 68 74 69 6e 67",
            ),
            (Handshake::OriginatorAck, "00 00 00 01 | 0c"),
        ];
        for (message, bytes) in cases {
            let bytes = hex(bytes);
            assert_eq!(framed(&message), bytes, "{message:?}");
            let (payload, used) = split_frame(&bytes, 1 << 20).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(Handshake::decode(payload).unwrap(), message);
        }
    }

    #[test]
    fn drop_conn_round_trips_with_the_length_broker_sends() {
        let message = Handshake::DropConn {
            sender: id(1),
            code: DropCode::PeerIncompatible as u8,
            description: b"unsupported versions offered".to_vec(),
        };
        let payload = message.to_payload();
        assert_eq!(payload.len(), 51);
        assert_eq!(Handshake::decode(&payload).unwrap(), message);
    }

    #[test]
    fn bad_handshake_messages_are_rejected() {
        assert_eq!(Handshake::decode(&[]), Err(DecodeError::EmptyFrame));
        assert_eq!(
            Handshake::decode(&hex("07 5a 45 45 4c")),
            Err(DecodeError::WrongMagic(0x5a45_454c))
        );
        assert_eq!(
            Handshake::decode(&hex("0d")),
            Err(DecodeError::UnknownMessageTag(13))
        );
        assert!(Handshake::decode(&hex("0c 00")).is_err(), "trailing byte");
        assert!(
            Handshake::decode(&hex("0a 05 01 61")).is_err(),
            "filter count"
        );
    }

    /// `to_frame` is the length prefix and `to_payload`, for both kinds of message, and
    /// `encode_frame` appends to what the buffer holds.
    #[test]
    fn whole_frames_are_prefix_and_payload() {
        let filter = vec![b"threatbus/manage".to_vec(), b"stix2/sighting".to_vec()];
        let handshakes = [
            Handshake::Hello {
                sender: id(1),
                min_version: 1,
                max_version: 1,
            },
            Handshake::Probe,
            Handshake::DropConn {
                sender: id(1),
                code: DropCode::InvalidMessage as u8,
                description: b"why".to_vec(),
            },
            Handshake::ResponderSynAck(filter.clone()),
            Handshake::OriginatorAck,
        ];
        for message in handshakes {
            assert_eq!(message.to_frame(), framed(&message), "{message:?}");
        }
        let envelopes = [
            Envelope::data(id(1), "stix2/indicator", b"payload".to_vec()),
            Envelope::internal(
                EnvelopeType::Ping,
                id(1),
                id(2),
                b"threatbus-ready".to_vec(),
            ),
            Envelope::routing_update(id(1), id(2), &filter),
            Envelope::data(id(1), "", Vec::new()),
        ];
        for envelope in envelopes {
            let mut expected = Vec::new();
            encode_frame(&envelope.to_payload(), &mut expected);
            assert_eq!(envelope.to_frame(), expected, "{envelope:?}");
        }
        let mut two = Vec::new();
        encode_frame(b"ab", &mut two);
        encode_frame(b"", &mut two);
        assert_eq!(two, [0, 0, 0, 2, b'a', b'b', 0, 0, 0, 0]);
    }

    #[test]
    fn frames_are_split_only_when_complete_and_bounded() {
        let mut bytes = Vec::new();
        encode_frame(b"abc", &mut bytes);
        assert_eq!(split_frame(&bytes[..3], 100).unwrap(), None);
        assert_eq!(split_frame(&bytes[..6], 100).unwrap(), None);
        assert_eq!(split_frame(&bytes, 100).unwrap(), Some((&b"abc"[..], 7)));
        assert!(matches!(
            split_frame(&[0, 0, 1, 0], 100),
            Err(DecodeError::FrameTooLarge { length: 256, .. })
        ));
    }

    /// The data envelope example of spec §5.1 and the routing update of §5.5.
    #[test]
    fn golden_envelopes() {
        let bus = id(1);
        let event = hex(
            "0e 03 02 00 00 00 00 00 00 00 01 02 00 00 00 00 00 00 00 01 0e 02 05 21
             54 65 6e 7a 69 72 3a 3a 73 75 62 73 63 72 69 70 74 69 6f 6e 5f 61 63 6b 6e 6f 77 6c 65 64 67 65 64
             0e 01 05 19 73 74 69 78 32 2f 69 6e 64 69 63 61 74 6f 72 61 62 63 64 65 66 67 68 69 6a",
        );
        let envelope = Envelope::data(bus, "threatbus/manage", event.clone());
        let mut frame = Vec::new();
        encode_frame(&envelope.to_payload(), &mut frame);
        let mut expected = hex("00 00 00 8b
             00 00 00 00 00 00 40 00 80 00 00 00 00 00 00 01
             00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
             01 00 10 00 10
             74 68 72 65 61 74 62 75 73 2f 6d 61 6e 61 67 65");
        expected.extend(&event);
        assert_eq!(frame, expected);
        assert_eq!(Envelope::decode(&frame[4..]).unwrap(), envelope);

        let zeek = EndpointId::from_bytes([0xab; 16]);
        let filter = vec![
            b"threatbus/manage".to_vec(),
            b"stix2/sighting".to_vec(),
            b"x".to_vec(),
        ];
        let update = Envelope::routing_update(bus, zeek, &filter);
        let payload = update.to_payload();
        assert_eq!(payload.len(), 0x4b);
        assert_eq!(&payload[32..40], &hex("03 00 10 00 03 3c 24 3e")[..]);
        assert_eq!(
            Envelope::decode(&payload).unwrap().filter().unwrap(),
            filter
        );
        assert!(filter_matches(&filter, b"stix2/sightings"));
        assert!(!filter_matches(&filter, b"stix2/indicator"));
    }

    #[test]
    fn short_or_unknown_envelopes_are_rejected() {
        assert!(Envelope::decode(&[0; 36]).is_err());
        let mut bad = vec![0; 37];
        bad[32] = 6;
        assert_eq!(
            Envelope::decode(&bad),
            Err(DecodeError::UnknownEnvelopeType(6))
        );
        let mut long_topic = vec![0; 37];
        long_topic[32] = 1;
        long_topic[36] = 5;
        assert!(Envelope::decode(&long_topic).is_err());
    }
}
