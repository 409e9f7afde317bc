//! Broker's data values (spec §6): [`Data`] and the address, subnet and port types it holds.
//!
//! Values are held as Broker stores them: addresses are always 16 bytes (IPv4 mapped into
//! IPv6) and a subnet's prefix length counts from the IPv6 address, so an IPv4 `/8` is stored as
//! 104; times are nanoseconds in an `i64`. Equality and ordering compare the type first, then
//! the value, which is also the order Broker writes sets and tables in.
//!
//! The binary encoding (`format::bin::v1`) is in the `codec` submodule: [`Data::encode`],
//! [`Data::to_bytes`] and [`Data::decode`], and the pieces the frames use too ([`Reader`],
//! [`encode_varbyte`], [`encode_bytes`], [`MAX_DEPTH`]), re-exported here.

mod codec;

pub use codec::{MAX_DEPTH, Reader, encode_bytes, encode_varbyte};

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP address as Broker stores it: 16 bytes, IPv4 as `::ffff:a.b.c.d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 16]);

impl Address {
    /// The IPv4 address, if this is an IPv4-mapped address.
    pub fn to_ipv4(&self) -> Option<Ipv4Addr> {
        Ipv6Addr::from(self.0).to_ipv4_mapped()
    }

    pub fn to_ip(&self) -> IpAddr {
        match self.to_ipv4() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(self.0)),
        }
    }
}

impl From<IpAddr> for Address {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => Self(v6.octets()),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_ip().fmt(f)
    }
}

/// An IP network: an address and the prefix length counted over all 128 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    pub address: Address,
    /// Prefix length over the 16-byte address: an IPv4 `/n` is `n + 96`.
    pub raw_length: u8,
}

impl Subnet {
    /// A subnet from an address and its prefix length as written (`10.0.0.0/8` → 8). `None`
    /// if the length is too long for the address family.
    pub fn new(ip: IpAddr, length: u8) -> Option<Self> {
        let (max, offset) = match ip {
            IpAddr::V4(_) => (32, 96),
            IpAddr::V6(_) => (128, 0),
        };
        (length <= max).then(|| Self {
            address: Address::from(ip),
            raw_length: length + offset,
        })
    }

    /// The prefix length as written for the address's family.
    pub fn length(&self) -> u8 {
        match self.address.to_ipv4() {
            Some(_) if self.raw_length >= 96 => self.raw_length - 96,
            _ => self.raw_length,
        }
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.length())
    }
}

/// A port's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Unknown = 0,
    Tcp = 1,
    Udp = 2,
    Icmp = 3,
}

/// A transport-layer port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    pub number: u16,
    pub protocol: Protocol,
}

/// One Broker data value.
///
/// Equality and ordering compare the type first, then the value (`Count(1)` ≠ `Integer(1)`),
/// with reals in IEEE total order (all NaNs equal); sets and tables keep their elements in that order, which is
/// also the order Broker writes them in.
#[derive(Debug, Clone)]
pub enum Data {
    None,
    Boolean(bool),
    Count(u64),
    Integer(i64),
    Real(f64),
    /// Raw bytes; Zeek strings need not be UTF-8.
    String(Vec<u8>),
    Address(Address),
    Subnet(Subnet),
    Port(Port),
    /// Nanoseconds since the Unix epoch (Zeek `time`).
    Timestamp(i64),
    /// Nanoseconds (Zeek `interval`).
    Timespan(i64),
    /// A fully qualified enum name such as `Intel::ADDR`.
    EnumValue(String),
    Set(BTreeSet<Data>),
    Table(BTreeMap<Data, Data>),
    /// Also records (one slot per field), events and other composite Zeek values.
    Vector(Vec<Data>),
}

impl Data {
    /// A string value from text.
    pub fn string(text: impl Into<String>) -> Self {
        Self::String(text.into().into_bytes())
    }

    /// The text of a string value, if it is one and valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }

    /// What kind of value this is, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Boolean(_) => "boolean",
            Self::Count(_) => "count",
            Self::Integer(_) => "integer",
            Self::Real(_) => "real",
            Self::String(_) => "string",
            Self::Address(_) => "address",
            Self::Subnet(_) => "subnet",
            Self::Port(_) => "port",
            Self::Timestamp(_) => "timestamp",
            Self::Timespan(_) => "timespan",
            Self::EnumValue(_) => "enum value",
            Self::Set(_) => "set",
            Self::Table(_) => "table",
            Self::Vector(_) => "vector",
        }
    }

    fn rank(&self) -> u8 {
        self.tag()
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Data {}

impl PartialOrd for Data {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Data {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::None, Self::None) => Ordering::Equal,
            (Self::Boolean(a), Self::Boolean(b)) => a.cmp(b),
            (Self::Count(a), Self::Count(b)) => a.cmp(b),
            (Self::Integer(a), Self::Integer(b))
            | (Self::Timestamp(a), Self::Timestamp(b))
            | (Self::Timespan(a), Self::Timespan(b)) => a.cmp(b),
            (Self::Real(a), Self::Real(b)) => compare_reals(*a, *b),
            (Self::String(a), Self::String(b)) => a.cmp(b),
            (Self::EnumValue(a), Self::EnumValue(b)) => a.cmp(b),
            (Self::Address(a), Self::Address(b)) => a.cmp(b),
            (Self::Subnet(a), Self::Subnet(b)) => a.cmp(b),
            (Self::Port(a), Self::Port(b)) => a.cmp(b),
            (Self::Set(a), Self::Set(b)) => a.cmp(b),
            (Self::Table(a), Self::Table(b)) => a.cmp(b),
            (Self::Vector(a), Self::Vector(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// IEEE total order, except that every NaN is one value above all numbers: NaNs share one
/// encoding, and a NaN's sign must not move it among the numbers (that would make sets decode
/// in another order than they were read).
fn compare_reals(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.total_cmp(&b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn subnet_lengths_are_ipv6_relative() {
        let v4 = Subnet::new(ip("10.0.0.0"), 8).unwrap();
        assert_eq!((v4.raw_length, v4.length()), (104, 8));
        assert_eq!(v4.to_string(), "10.0.0.0/8");
        let v6 = Subnet::new(ip("2001:db8::"), 32).unwrap();
        assert_eq!((v6.raw_length, v6.length()), (32, 32));
        assert!(Subnet::new(ip("10.0.0.0"), 33).is_none());
    }
}
