//! STIX 2.1 patterns: parsing, validation at the edge of the bus, and point-IoC extraction.
//!
//! [`parse`] turns pattern text into a typed syntax tree ([`Pattern`]) or says where and why it
//! is not a pattern ([`PatternError`]: byte offset and what was expected). It accepts exactly
//! what the OASIS reference validator (PyPI `stix2-patterns`, STIX 2.1 grammar) accepts — the
//! grammar with its upper-case keywords and lower-case `true`/`false`, comments, `==` and `<>`,
//! and its extra checks (hash value shapes, one qualifier of a kind per bracketed observation,
//! `[` first) — except for the reference's bugs listed in `docs/compatibility.md`.
//! A differential test against the reference runs over `tests/corpus/patterns.jsonl`.
//!
//! [`check`] is the hook where the bus validates indicators: only `pattern_type: stix` is
//! checked; other pattern languages (`suricata`, `sigma`, `yara`, `snort`, the non-standard
//! `stix2` upstream's tests use, …) pass unchecked.
//!
//! [`point_ioc`] answers what Zeek, CIF and MISP ask: "is this one equality on one object
//! path, and which path and value?"
//!
//! `Display` on [`Pattern`] prints text that parses back to the same tree.

mod ast;
mod error;
mod hashes;
mod ioc;
mod lexer;
mod parser;
mod printer;

use std::str::FromStr;

pub use ast::{
    Comparison, ComparisonExpression, Literal, ObjectPath, ObservationExpression, PathStep,
    Pattern, Qualifier, Test,
};
pub use error::{MAX_NESTING, PatternError, PatternErrorKind};
pub use ioc::{PointIoc, is_point_ioc, point_ioc};

/// Parses and validates a STIX 2.1 pattern.
pub fn parse(pattern: &str) -> Result<Pattern, PatternError> {
    parser::parse_pattern(pattern)
}

impl FromStr for Pattern {
    type Err = PatternError;

    /// Same as [`parse`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

/// Validates `pattern` if `pattern_type` is `stix` (compared exactly, as upstream did);
/// patterns of other types pass unchecked.
pub fn check(pattern: &str, pattern_type: &str) -> Result<(), PatternError> {
    if pattern_type == "stix" {
        parse(pattern).map(drop)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
