//! The MISP app (`plugins.apps.misp`), work in progress: the mappings between MISP and the bus,
//! without I/O yet.
//!
//! * [`attribute`]: a MISP attribute notification → a STIX Indicator (type table, compound
//!   types, escaping, the `to_ids` / action matrix).
//! * [`filter`]: which attributes pass the configured `filter`.
//! * [`rest`]: the bodies of the REST calls to MISP: a sighting (`/sightings/add`) and the
//!   snapshot searches (`/attributes/restSearch`).
//!
//! The feed (ZeroMQ SUB to MISP), the REST client and the app itself are still to come; the app
//! is not registered in the binary yet.

pub mod attribute;
pub mod filter;
pub mod rest;
