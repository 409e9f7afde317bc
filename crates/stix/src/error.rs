//! Why a JSON object is not a STIX 2.1 object the bus accepts.

use thiserror::Error;

use crate::pattern::PatternError;

/// A STIX object failed validation. Every variant names the property and the offending value.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StixError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("expected a JSON object")]
    NotAnObject,
    #[error("missing required property `{0}`")]
    Missing(&'static str),
    #[error("property `{property}`: expected {expected}, got {got}")]
    WrongType {
        property: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("unsupported object type {0:?} (expected \"indicator\" or \"sighting\")")]
    UnsupportedType(String),
    #[error("property `type`: expected {expected:?}, got {got:?}")]
    TypeMismatch { expected: &'static str, got: String },
    #[error("property `spec_version`: expected \"2.1\", got {0}")]
    SpecVersion(String),
    #[error("property `{property}`: invalid identifier {value:?}: {reason}")]
    Id {
        property: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("property `{property}`: invalid timestamp {value:?}: {reason}")]
    Timestamp {
        property: &'static str,
        value: String,
        reason: crate::timestamp::TimestampError,
    },
    #[error("property `pattern`: invalid STIX pattern {pattern:?}: {reason}")]
    Pattern {
        pattern: String,
        reason: PatternError,
    },
}
