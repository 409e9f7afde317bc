//! Endpoint ids (spec §3.3): 16 bytes that name a Broker endpoint.
//!
//! Broker takes any 16 bytes off the wire, but it only *reports* a peer whose id is an RFC 4122
//! UUID of version 1 to 5: with any other id the handshake bytes complete, pings are answered,
//! and the peer is silently never added (no `peer_added`, so `threatbus.zeek` never
//! subscribes). Hence two types:
//!
//! * [`EndpointId`]: whatever 16 bytes a frame carries (the nil id of a broadcast envelope, a
//!   peer's id that may or may not be valid); [`EndpointId::check`] says whether Broker would
//!   accept it.
//! * [`OwnEndpointId`]: the id this side announces. It can only be made valid (a random
//!   version-4 UUID, or a checked one), so no caller can make the bus invisible to Zeek.

use std::fmt;

/// The 16 bytes of an endpoint id as they travel. Ordering is byte-wise (`memcmp`), which
/// decides the handshake roles.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EndpointId([u8; 16]);

/// Why Broker would ignore a peer with this id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEndpointId {
    /// The all-zero id, which Broker reserves for "no endpoint".
    #[error("the nil id")]
    Nil,
    /// An id whose UUID version (high nibble of byte 6) is not 1 to 5.
    #[error("UUID version {0}, but Broker only accepts versions 1 to 5")]
    Version(u8),
}

impl EndpointId {
    /// The all-zero id: "no receiver" (broadcast) in envelopes; never an endpoint's own.
    pub const NIL: Self = Self([0; 16]);

    /// The id in a frame, as it is (valid or not).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    pub fn is_nil(&self) -> bool {
        *self == Self::NIL
    }

    /// The UUID version: the high nibble of byte 6.
    pub fn version(&self) -> u8 {
        self.0[6] >> 4
    }

    /// Whether Broker reports an endpoint with this id as a peer: any non-nil id whose UUID
    /// version is 1 to 5 (the variant bits do not matter, spec §3.3).
    pub fn check(&self) -> Result<(), InvalidEndpointId> {
        if self.is_nil() {
            return Err(InvalidEndpointId::Nil);
        }
        match self.version() {
            1..=5 => Ok(()),
            other => Err(InvalidEndpointId::Version(other)),
        }
    }
}

impl fmt::Display for EndpointId {
    /// The UUID form, bytes in order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if matches!(index, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndpointId({self})")
    }
}

/// The id this endpoint announces: always one Broker accepts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OwnEndpointId(EndpointId);

impl OwnEndpointId {
    /// A fresh random id for this process: an RFC 4122 version-4 UUID (122 bits from the
    /// operating system's random source, version nibble 4, variant `10`), as Broker gives
    /// itself a random UUID. Never nil.
    pub fn random() -> Self {
        Self(EndpointId(*uuid::Uuid::new_v4().as_bytes()))
    }

    /// A given id, if Broker would accept it (tests and tools that need a fixed one).
    pub fn new(id: EndpointId) -> Result<Self, InvalidEndpointId> {
        id.check().map(|()| Self(id))
    }

    /// The id as it goes on the wire.
    pub const fn id(&self) -> EndpointId {
        self.0
    }
}

impl fmt::Display for OwnEndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_version(version: u8) -> EndpointId {
        let mut bytes = [0x11; 16];
        bytes[6] = (version << 4) | 0x1;
        EndpointId(bytes)
    }

    /// Spec §3.3, as verified against Broker 2.8: versions 1–5 are peers, 0 and 6–15 are not.
    #[test]
    fn broker_accepts_uuid_versions_one_to_five_only() {
        for version in 0..16u8 {
            let verdict = with_version(version).check();
            if (1..=5).contains(&version) {
                assert_eq!(verdict, Ok(()), "version {version}");
            } else {
                assert_eq!(
                    verdict,
                    Err(InvalidEndpointId::Version(version)),
                    "version {version}"
                );
            }
        }
        assert_eq!(EndpointId::NIL.check(), Err(InvalidEndpointId::Nil));
        // The variant bits do not matter.
        let mut bytes = *with_version(4).as_bytes();
        bytes[8] = 0x00;
        assert_eq!(EndpointId(bytes).check(), Ok(()));
    }

    #[test]
    fn own_ids_are_random_version_four_uuids() {
        let ids: Vec<OwnEndpointId> = (0..1000).map(|_| OwnEndpointId::random()).collect();
        for id in &ids {
            let bytes = id.id().as_bytes().to_owned();
            assert_eq!(bytes[6] >> 4, 4, "{id}");
            assert_eq!(bytes[8] >> 6, 0b10, "{id}");
            assert_eq!(id.id().check(), Ok(()));
        }
        let distinct: std::collections::HashSet<_> = ids.iter().map(|id| id.id()).collect();
        assert_eq!(distinct.len(), ids.len());
        // Random bits elsewhere: the first byte takes many values over 1000 draws.
        let first: std::collections::HashSet<_> =
            ids.iter().map(|id| id.id().as_bytes()[0]).collect();
        assert!(first.len() > 100, "{}", first.len());
    }

    #[test]
    fn an_own_id_cannot_be_invalid() {
        assert_eq!(
            OwnEndpointId::new(with_version(0)),
            Err(InvalidEndpointId::Version(0))
        );
        assert_eq!(
            OwnEndpointId::new(with_version(7)),
            Err(InvalidEndpointId::Version(7))
        );
        assert_eq!(
            OwnEndpointId::new(EndpointId::NIL),
            Err(InvalidEndpointId::Nil)
        );
        let id = OwnEndpointId::new(with_version(5)).unwrap();
        assert_eq!(id.id(), with_version(5));
        assert_eq!(id.to_string(), "11111111-1111-5111-1111-111111111111");
    }
}
