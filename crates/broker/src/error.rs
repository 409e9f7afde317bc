//! Why bytes from a peer could not be read.

/// A frame, handshake message, envelope or data value that is not valid Broker v1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a value.
    #[error("truncated: {what} needs {needed} more byte(s)")]
    Truncated { what: &'static str, needed: usize },
    /// A data value has an unknown type tag.
    #[error("unknown data type tag {0:#04x}")]
    UnknownTag(u8),
    /// A varbyte length or count does not fit in 32 bits or uses more than 5 bytes.
    #[error("varbyte value longer than 5 bytes or above 2^32 - 1")]
    VarbyteTooLong,
    /// A length or count promises more than the input holds.
    #[error("{what} of {length} exceeds the {remaining} byte(s) left")]
    LengthExceedsInput {
        what: &'static str,
        length: u64,
        remaining: usize,
    },
    /// A port with a protocol number Broker does not know.
    #[error("unknown port protocol {0}")]
    UnknownProtocol(u8),
    /// A subnet whose prefix length is above 128.
    #[error("subnet prefix length {0} above 128")]
    SubnetLength(u8),
    /// The same element twice in a set, or the same key twice in a table.
    #[error("duplicate {0} in a {1}")]
    Duplicate(&'static str, &'static str),
    /// Containers nested deeper than the limit.
    #[error("containers nested deeper than {0} levels")]
    TooDeep(usize),
    /// Bytes left over after a value that must fill its frame.
    #[error("{0} byte(s) left over after the value")]
    TrailingBytes(usize),
    /// A frame whose length prefix is above the configured maximum.
    #[error("frame of {length} bytes exceeds the maximum of {max}")]
    FrameTooLarge { length: u64, max: usize },
    /// An empty frame where the handshake needs one.
    #[error("empty frame during the handshake")]
    EmptyFrame,
    /// A handshake message with the wrong magic number.
    #[error("wrong magic number {0:#010x}")]
    WrongMagic(u32),
    /// A handshake message with an unknown tag.
    #[error("invalid message type tag {0}")]
    UnknownMessageTag(u8),
    /// An envelope with an unknown type.
    #[error("unknown envelope type {0}")]
    UnknownEnvelopeType(u8),
    /// A value of another shape than expected (e.g. a Zeek event that is not `[1, 1, [...]]`).
    #[error("{0}")]
    Shape(String),
}
