//! Broker's binary encoding of data values (`format::bin::v1`, spec §6): writing a [`Data`]
//! to bytes and reading it back.
//!
//! A value is a one-byte type tag and a body. Integers are fixed-width big-endian; lengths and
//! counts are "varbytes" (little-endian base 128, at most 32 bits); addresses are always 16
//! bytes (IPv4 mapped into IPv6) and a subnet's prefix length counts from the IPv6 address,
//! so an IPv4 `/8` is stored as 104. Times are nanoseconds in an `i64`. Infinities and NaN use
//! the bit patterns of CAF's portable packer, not IEEE's.
//!
//! Decoding is strict, as Broker's is: unknown tags, a duplicate set element or table key,
//! lengths beyond the input and (for a whole value) trailing bytes are errors. It also bounds
//! what Broker does not: container depth ([`MAX_DEPTH`]) and varbytes longer than 5 bytes.

use std::collections::{BTreeMap, BTreeSet};

use super::{Address, Data, Port, Protocol, Subnet};
use crate::error::DecodeError;

/// Containers nested deeper than this are rejected when decoding.
pub const MAX_DEPTH: usize = 64;

/// Type tags (spec §6.1).
mod tag {
    pub const NONE: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const COUNT: u8 = 0x02;
    pub const INTEGER: u8 = 0x03;
    pub const REAL: u8 = 0x04;
    pub const STRING: u8 = 0x05;
    pub const ADDRESS: u8 = 0x06;
    pub const SUBNET: u8 = 0x07;
    pub const PORT: u8 = 0x08;
    pub const TIMESTAMP: u8 = 0x09;
    pub const TIMESPAN: u8 = 0x0A;
    pub const ENUM_VALUE: u8 = 0x0B;
    pub const SET: u8 = 0x0C;
    pub const TABLE: u8 = 0x0D;
    pub const VECTOR: u8 = 0x0E;
}

/// CAF's bit patterns for the special reals (spec §6.3): note that +∞ is IEEE's −∞ pattern
/// and the other way round.
const PACKED_POSITIVE_INFINITY: u64 = 0xFFF0_0000_0000_0000;
const PACKED_NEGATIVE_INFINITY: u64 = 0x7FF0_0000_0000_0000;
const PACKED_NAN: u64 = 0xFFFF_FFFF_FFFF_FFFF;

impl Data {
    /// The type tag written before the value.
    pub fn tag(&self) -> u8 {
        match self {
            Self::None => tag::NONE,
            Self::Boolean(_) => tag::BOOLEAN,
            Self::Count(_) => tag::COUNT,
            Self::Integer(_) => tag::INTEGER,
            Self::Real(_) => tag::REAL,
            Self::String(_) => tag::STRING,
            Self::Address(_) => tag::ADDRESS,
            Self::Subnet(_) => tag::SUBNET,
            Self::Port(_) => tag::PORT,
            Self::Timestamp(_) => tag::TIMESTAMP,
            Self::Timespan(_) => tag::TIMESPAN,
            Self::EnumValue(_) => tag::ENUM_VALUE,
            Self::Set(_) => tag::SET,
            Self::Table(_) => tag::TABLE,
            Self::Vector(_) => tag::VECTOR,
        }
    }

    /// The value's encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Appends the value's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.tag());
        match self {
            Self::None => {}
            Self::Boolean(value) => out.push(u8::from(*value)),
            Self::Count(value) => out.extend_from_slice(&value.to_be_bytes()),
            Self::Integer(value) | Self::Timestamp(value) | Self::Timespan(value) => {
                out.extend_from_slice(&value.to_be_bytes())
            }
            Self::Real(value) => out.extend_from_slice(&pack_real(*value).to_be_bytes()),
            Self::String(bytes) => encode_bytes(bytes, out),
            Self::EnumValue(name) => encode_bytes(name.as_bytes(), out),
            Self::Address(address) => out.extend_from_slice(&address.0),
            Self::Subnet(subnet) => {
                out.extend_from_slice(&subnet.address.0);
                out.push(subnet.raw_length);
            }
            Self::Port(port) => {
                out.extend_from_slice(&port.number.to_be_bytes());
                out.push(port.protocol as u8);
            }
            Self::Set(elements) => {
                encode_count(elements.len(), out);
                for element in elements {
                    element.encode(out);
                }
            }
            Self::Table(entries) => {
                encode_count(entries.len(), out);
                for (key, value) in entries {
                    key.encode(out);
                    value.encode(out);
                }
            }
            Self::Vector(elements) => {
                encode_count(elements.len(), out);
                for element in elements {
                    element.encode(out);
                }
            }
        }
    }

    /// Decodes one value that must fill `bytes` exactly.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let value = reader.data(0)?;
        reader.finish()?;
        Ok(value)
    }
}

/// A real's 8 bytes as CAF packs them.
fn pack_real(value: f64) -> u64 {
    if value.is_nan() {
        PACKED_NAN
    } else if value == f64::INFINITY {
        PACKED_POSITIVE_INFINITY
    } else if value == f64::NEG_INFINITY {
        PACKED_NEGATIVE_INFINITY
    } else {
        value.to_bits()
    }
}

/// The real that CAF's bytes stand for. Any IEEE NaN pattern is read as (the one) NaN too.
fn unpack_real(bits: u64) -> f64 {
    match bits {
        PACKED_POSITIVE_INFINITY => f64::INFINITY,
        PACKED_NEGATIVE_INFINITY => f64::NEG_INFINITY,
        _ => match f64::from_bits(bits) {
            value if value.is_nan() => f64::NAN,
            value => value,
        },
    }
}

/// Appends a varbyte (spec §6.2). Broker writes at most 32 bits: longer lengths cannot be
/// expressed, so callers keep what they encode below 2^32 (frames are far smaller).
pub fn encode_varbyte(value: u32, out: &mut Vec<u8>) {
    let mut rest = value;
    loop {
        let low = (rest & 0x7F) as u8;
        rest >>= 7;
        if rest == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn encode_count(count: usize, out: &mut Vec<u8>) {
    encode_varbyte(u32::try_from(count).unwrap_or(u32::MAX), out);
}

/// A varbyte length followed by the bytes.
pub fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    encode_count(bytes.len(), out);
    out.extend_from_slice(bytes);
}

/// Reads values from a byte slice, front to back.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    /// Errors unless everything was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.bytes.len() {
            0 => Ok(()),
            left => Err(DecodeError::TrailingBytes(left)),
        }
    }

    pub fn take(&mut self, count: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < count {
            return Err(DecodeError::Truncated {
                what,
                needed: count - self.bytes.len(),
            });
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, what)?;
        let mut array = [0; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// A varbyte of at most 5 bytes whose value fits in 32 bits.
    pub fn varbyte(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let mut value: u64 = 0;
        for index in 0..5 {
            let byte = self.u8(what)?;
            value |= u64::from(byte & 0x7F) << (7 * index);
            if byte & 0x80 == 0 {
                return u32::try_from(value).map_err(|_| DecodeError::VarbyteTooLong);
            }
        }
        Err(DecodeError::VarbyteTooLong)
    }

    /// A varbyte count of elements that each take at least `min_size` bytes: checked against
    /// what is left before anything is allocated.
    fn count(&mut self, what: &'static str, min_size: usize) -> Result<usize, DecodeError> {
        let count = self.varbyte(what)?;
        let needed = u64::from(count) * min_size as u64;
        if needed > self.bytes.len() as u64 {
            return Err(DecodeError::LengthExceedsInput {
                what,
                length: u64::from(count),
                remaining: self.bytes.len(),
            });
        }
        Ok(count as usize)
    }

    /// A varbyte length and that many bytes.
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let length = self.count(what, 1)?;
        self.take(length, what)
    }

    /// One data value; `depth` counts the containers around it.
    pub fn data(&mut self, depth: usize) -> Result<Data, DecodeError> {
        let value = match self.u8("a type tag")? {
            tag::NONE => Data::None,
            tag::BOOLEAN => Data::Boolean(self.u8("a boolean")? != 0),
            tag::COUNT => Data::Count(self.u64("a count")?),
            tag::INTEGER => Data::Integer(self.i64("an integer")?),
            tag::REAL => Data::Real(unpack_real(self.u64("a real")?)),
            tag::STRING => Data::String(self.bytes("a string")?.to_vec()),
            tag::ADDRESS => Data::Address(Address(self.array("an address")?)),
            tag::SUBNET => {
                let address = Address(self.array("a subnet")?);
                let raw_length = self.u8("a subnet length")?;
                if raw_length > 128 {
                    return Err(DecodeError::SubnetLength(raw_length));
                }
                Data::Subnet(Subnet {
                    address,
                    raw_length,
                })
            }
            tag::PORT => {
                let number = self.u16("a port")?;
                let protocol = match self.u8("a port protocol")? {
                    0 => Protocol::Unknown,
                    1 => Protocol::Tcp,
                    2 => Protocol::Udp,
                    3 => Protocol::Icmp,
                    other => return Err(DecodeError::UnknownProtocol(other)),
                };
                Data::Port(Port { number, protocol })
            }
            tag::TIMESTAMP => Data::Timestamp(self.i64("a timestamp")?),
            tag::TIMESPAN => Data::Timespan(self.i64("a timespan")?),
            tag::ENUM_VALUE => {
                let name = self.bytes("an enum value")?;
                let name = std::str::from_utf8(name).map_err(|_| {
                    DecodeError::Shape("an enum value name that is not UTF-8".into())
                })?;
                Data::EnumValue(name.to_owned())
            }
            tag::SET => {
                let depth = nested(depth)?;
                let count = self.count("a set", 1)?;
                let mut elements = BTreeSet::new();
                for _ in 0..count {
                    if !elements.insert(self.data(depth)?) {
                        return Err(DecodeError::Duplicate("element", "set"));
                    }
                }
                Data::Set(elements)
            }
            tag::TABLE => {
                let depth = nested(depth)?;
                let count = self.count("a table", 2)?;
                let mut entries = BTreeMap::new();
                for _ in 0..count {
                    let key = self.data(depth)?;
                    let value = self.data(depth)?;
                    if entries.insert(key, value).is_some() {
                        return Err(DecodeError::Duplicate("key", "table"));
                    }
                }
                Data::Table(entries)
            }
            tag::VECTOR => {
                let depth = nested(depth)?;
                let count = self.count("a vector", 1)?;
                let mut elements = Vec::with_capacity(count);
                for _ in 0..count {
                    elements.push(self.data(depth)?);
                }
                Data::Vector(elements)
            }
            other => return Err(DecodeError::UnknownTag(other)),
        };
        Ok(value)
    }
}

fn nested(depth: usize) -> Result<usize, DecodeError> {
    if depth >= MAX_DEPTH {
        return Err(DecodeError::TooDeep(MAX_DEPTH));
    }
    Ok(depth + 1)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|byte| u8::from_str_radix(byte, 16).unwrap())
            .collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The small encodings listed in spec §6.1.
    #[test]
    fn golden_encodings_from_the_spec() {
        let cases = [
            (
                Data::Subnet(Subnet::new(ip("10.0.0.0"), 8).unwrap()),
                "07 00 00 00 00 00 00 00 00 00 00 ff ff 0a 00 00 00 68",
            ),
            (
                Data::Port(Port {
                    number: 443,
                    protocol: Protocol::Tcp,
                }),
                "08 01 bb 01",
            ),
            (Data::Integer(-2), "03 ff ff ff ff ff ff ff fe"),
            (Data::Real(1.5), "04 3f f8 00 00 00 00 00 00"),
            (
                Data::EnumValue("Intel::ADDR".into()),
                "0b 0b 49 6e 74 65 6c 3a 3a 41 44 44 52",
            ),
            (Data::None, "00"),
            (Data::Boolean(true), "01 01"),
            (Data::Count(u64::MAX), "02 ff ff ff ff ff ff ff ff"),
            (Data::string("hé"), "05 03 68 c3 a9"),
            (
                Data::Address(Address::from(ip("192.168.1.2"))),
                "06 00 00 00 00 00 00 00 00 00 00 ff ff c0 a8 01 02",
            ),
            (
                Data::Address(Address::from(ip("2001:db8::1"))),
                "06 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01",
            ),
            (Data::Timespan(-1), "0a ff ff ff ff ff ff ff ff"),
            (
                Data::Timestamp(1_700_000_000_123_456_789),
                "09 17 97 9c fe 3d 85 cd 15",
            ),
            (
                Data::Set([Data::Count(2), Data::Count(1)].into()),
                "0c 02 02 00 00 00 00 00 00 00 01 02 00 00 00 00 00 00 00 02",
            ),
            (
                Data::Table([(Data::string("a"), Data::None)].into()),
                "0d 01 05 01 61 00",
            ),
            (Data::Vector(vec![]), "0e 00"),
        ];
        for (value, bytes) in cases {
            assert_eq!(value.to_bytes(), hex(bytes), "{value:?}");
            assert_eq!(Data::decode(&hex(bytes)).unwrap(), value, "{bytes}");
        }
    }

    #[test]
    fn special_reals_use_cafs_patterns() {
        let cases = [
            (f64::INFINITY, "04 ff f0 00 00 00 00 00 00"),
            (f64::NEG_INFINITY, "04 7f f0 00 00 00 00 00 00"),
            (f64::NAN, "04 ff ff ff ff ff ff ff ff"),
            (-0.0, "04 80 00 00 00 00 00 00 00"),
        ];
        for (value, bytes) in cases {
            assert_eq!(Data::Real(value).to_bytes(), hex(bytes));
            let Data::Real(back) = Data::decode(&hex(bytes)).unwrap() else {
                panic!("not a real");
            };
            assert_eq!(back.to_bits(), value.to_bits(), "{bytes}");
        }
    }

    /// Found by fuzzing: a NaN with its sign bit set sorted below the numbers, the same NaN
    /// re-encoded (as CAF's one NaN pattern) above them, so a set changed order.
    #[test]
    fn every_nan_is_one_value_above_the_numbers() {
        let negative_nan = f64::from_bits(0xFFFF_FFFF_FFFF_FFFE);
        let set = Data::Set([Data::Real(1.5), Data::Real(negative_nan), Data::Real(-1.0)].into());
        let Data::Set(elements) = &set else {
            unreachable!()
        };
        assert!(matches!(elements.last(), Some(Data::Real(x)) if x.is_nan()));
        let again = Data::decode(&set.to_bytes()).unwrap();
        assert_eq!(again, set);
        assert_eq!(again.to_bytes(), set.to_bytes());
        let Data::Real(read) = Data::decode(&hex("04 ff ff ff ff ff ff ff fe")).unwrap() else {
            unreachable!()
        };
        assert_eq!(read.to_bits(), f64::NAN.to_bits());
        assert_eq!(Data::Real(f64::NAN), Data::Real(negative_nan));
    }

    #[test]
    fn varbytes_are_base_128_and_capped() {
        let mut out = Vec::new();
        for value in [127, 128, 300, u32::MAX] {
            out.clear();
            encode_varbyte(value, &mut out);
            assert_eq!(Reader::new(&out).varbyte("x").unwrap(), value);
        }
        out.clear();
        encode_varbyte(300, &mut out);
        assert_eq!(out, [0xac, 0x02]);
        // Above 32 bits, and more than five bytes.
        let too_big = [0xff, 0xff, 0xff, 0xff, 0x1f];
        assert_eq!(
            Reader::new(&too_big).varbyte("x"),
            Err(DecodeError::VarbyteTooLong)
        );
        let too_long = [0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(
            Reader::new(&too_long).varbyte("x"),
            Err(DecodeError::VarbyteTooLong)
        );
    }

    #[test]
    fn strict_decoding() {
        let rejected = [
            ("0f", "unknown tag"),
            ("02 00 00", "truncated count"),
            ("05 05 61", "string longer than the input"),
            ("0e ff ff ff ff 0f", "vector count above the input"),
            ("08 00 50 04", "unknown protocol"),
            (
                "07 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 81",
                "subnet /129",
            ),
            (
                "0c 02 02 00 00 00 00 00 00 00 01 02 00 00 00 00 00 00 00 01",
                "duplicate element",
            ),
            ("0d 02 05 01 61 00 05 01 61 01 01", "duplicate key"),
            ("00 00", "trailing bytes"),
            ("0b 01 ff", "enum name not UTF-8"),
        ];
        for (bytes, why) in rejected {
            assert!(Data::decode(&hex(bytes)).is_err(), "accepted: {why}");
        }
        // count 1 and integer 1 are different keys.
        let mixed = "0c 02 02 00 00 00 00 00 00 00 01 03 00 00 00 00 00 00 00 01";
        assert!(matches!(Data::decode(&hex(mixed)), Ok(Data::Set(s)) if s.len() == 2));
        // Any non-zero byte is true.
        assert_eq!(Data::decode(&[1, 7]).unwrap(), Data::Boolean(true));
    }

    #[test]
    fn nesting_is_bounded() {
        let mut deep = [0x0e, 0x01].repeat(MAX_DEPTH);
        deep.extend([0x0e, 0x00]);
        assert_eq!(Data::decode(&deep), Err(DecodeError::TooDeep(MAX_DEPTH)));
        let mut ok = [0x0e, 0x01].repeat(MAX_DEPTH - 1);
        ok.extend([0x0e, 0x00]);
        assert!(Data::decode(&ok).is_ok());
    }
}
