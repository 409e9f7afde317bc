//! Why a pattern is not a valid STIX 2.1 pattern, and where.

use thiserror::Error;

/// How deeply parentheses and brackets may nest. The reference validator gives up (with a
/// Python `RecursionError`) at about 250 nested observation parentheses; the limit bounds the
/// recursive parser's stack: at the limit it needs less than 256 KiB in a release build and
/// 640 KiB in a debug build, well within a 2 MiB thread stack.
pub const MAX_NESTING: usize = 256;

/// A pattern failed validation at byte `offset` of the pattern text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("at byte {offset}: {kind}")]
pub struct PatternError {
    /// Byte offset into the pattern where the problem starts.
    pub offset: usize,
    /// What is wrong.
    pub kind: PatternErrorKind,
}

/// What is wrong with a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatternErrorKind {
    /// The grammar wanted something else here.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What the grammar allows at this point, e.g. "`]`, `AND` or `OR`".
        expected: &'static str,
        /// What is there instead, e.g. "keyword `WITHIN`" or "end of pattern".
        found: String,
    },
    /// A value compared with a known hash algorithm's key does not look like such a hash.
    #[error("expected {algorithm} hash ({shape}), found {value:?}")]
    InvalidHash {
        /// The algorithm's name as the STIX vocabulary spells it, e.g. `SHA-256`.
        algorithm: &'static str,
        /// What such a hash looks like, e.g. "64 hex digits".
        shape: &'static str,
        /// The value's text (quotes removed), as the reference validator checks it.
        value: String,
    },
    /// A bracketed observation carries the same kind of qualifier twice.
    #[error(
        "expected at most one {keyword} qualifier on an observation in brackets, found a second one"
    )]
    DuplicateQualifier {
        /// `WITHIN`, `REPEATS` or `START`.
        keyword: &'static str,
    },
    /// The reference validator requires the text to start with `[` after any `(` and white
    /// space; a comment there is rejected.
    #[error("expected `(` or `[` before any comment, found a comment")]
    CommentBeforeFirstBracket,
    /// Parentheses and brackets nest deeper than [`MAX_NESTING`].
    #[error("expected at most {MAX_NESTING} nested parentheses and brackets, found more")]
    TooDeep,
}

impl PatternError {
    pub(crate) fn new(offset: usize, kind: PatternErrorKind) -> Self {
        Self { offset, kind }
    }
}
