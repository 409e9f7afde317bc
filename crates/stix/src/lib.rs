//! STIX 2.1 objects as Threat Bus carries them.
//!
//! The bus reads only a handful of properties of an Indicator or a Sighting (its id, timestamps,
//! pattern, the object it sights). Everything else, including custom `x_*` properties and vendor
//! extensions, is kept verbatim (as its JSON text, in order) so that an object survives
//! receive → route → send unchanged. STIX patterns are parsed and validated where an
//! Indicator enters the bus, and apps extract point IoCs from them ([`pattern`]). This crate
//! does no I/O.

#![forbid(unsafe_code)]

mod error;
mod fields;
mod id;
mod object;
pub mod pattern;
mod properties;
mod timestamp;

pub use error::StixError;
pub use id::StixId;
pub use object::{Indicator, MatchType, Operation, Sighting, StixObject};
pub use properties::Properties;
pub use timestamp::{Timestamp, TimestampError};

/// The only `spec_version` the bus accepts.
pub const SPEC_VERSION: &str = "2.1";
