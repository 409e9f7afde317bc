//! TAXII 2.1 as Threat Bus speaks it, shared by the TAXII server app and the TAXII feed client
//! app.
//!
//! The crate holds what both sides of the protocol need and nothing that does I/O: the media
//! types and the `Accept` / `Content-Type` checks ([`media`]), the query-string filters of the
//! GET endpoints ([`query`]), the JSON resources ([`resources`]), the envelope that carries STIX
//! objects in both directions without parsing them into a tree ([`envelope`]) and the
//! microsecond timestamps of `date_added` ([`time`]).

#![forbid(unsafe_code)]

pub mod envelope;
pub mod media;
pub mod query;
pub mod resources;
pub mod time;

pub use envelope::{Envelope, EnvelopeError, parse_envelope, write_envelope};
pub use media::{STIX_MEDIA_TYPE, TAXII_MEDIA_TYPE, accepts_taxii, is_taxii_content_type};
pub use query::{Filters, QueryError, VersionMatch, parse_query};
pub use resources::{
    ApiRoot, Collection, Collections, Discovery, ErrorMessage, Manifest, ManifestRecord, Status,
    StatusDetails, StatusKind, Versions,
};
