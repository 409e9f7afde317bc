//! The native wire protocol of Zeek's Broker library (version 1, Broker 2.3 and later, i.e.
//! Zeek 5.0 through 9.x), with no Threat Bus knowledge: what a peer needs to talk to Zeek
//! without the C++ library.
//!
//! * [`data`]: Broker's binary data values (`format::bin::v1`), encoded and decoded strictly.
//! * [`frame`]: the length-prefixed frames, the handshake messages and the envelopes of the
//!   peering phase.
//! * [`handshake`]: the peering handshake, for both TCP roles.
//! * [`id`]: endpoint ids, and which of them Broker accepts.
//! * [`zeek`]: Zeek events as Broker data.
//!
//! The byte layouts follow `shared/spec/zeek-broker.md` (section numbers in the comments refer
//! to it). Everything here is sans-I/O: byte slices in, values out, and the other way round.

#![forbid(unsafe_code)]

pub mod data;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod id;
pub mod zeek;

pub use data::{Address, Data, Port, Protocol, Subnet};
pub use error::DecodeError;
pub use id::{EndpointId, InvalidEndpointId, OwnEndpointId};
