//! The syntax tree of a STIX 2.1 pattern.
//!
//! The tree keeps what a pattern means, not how it was spelled: parentheses become the shape of
//! the tree, `==` is [`Test::Equal`] like `=`, `<>` is [`Test::NotEqual`] like `!=`, a quoted
//! property name `'name'` is the same [`PathStep::Key`] as `name`, and string literals hold their
//! decoded text. Runs of the same operator are flat lists (`a AND b AND c` is one
//! [`ObservationExpression::And`] with three operands), so long patterns make wide trees, not
//! deep ones. Numbers, binary, hex and timestamp literals keep their text as written (a sign `+`
//! included), so nothing is lost to rounding or range limits.
//!
//! [`Pattern`]'s `Display` prints a pattern that parses back to the same tree (see
//! [`super::printer`]). That holds for every tree the parser produces; a tree built by hand must
//! respect the invariants documented on each type (lists of operands have at least two
//! elements, identifiers and literal texts are well formed).

/// A whole pattern: one observation expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The top-level observation expression.
    pub observation: ObservationExpression,
}

/// Observation expressions: `[…]`, combined with `AND`, `OR`, `FOLLOWEDBY` and qualified.
///
/// Precedence from loosest to tightest: `FOLLOWEDBY`, `OR`, `AND`, qualifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservationExpression {
    /// `[ comparison expression ]`.
    Observation(ComparisonExpression),
    /// `a AND b AND …` (two or more operands).
    And(Vec<ObservationExpression>),
    /// `a OR b OR …` (two or more operands).
    Or(Vec<ObservationExpression>),
    /// `a FOLLOWEDBY b FOLLOWEDBY …` (two or more operands).
    FollowedBy(Vec<ObservationExpression>),
    /// An expression with one or more qualifiers, in the order written.
    Qualified {
        /// What the qualifiers apply to.
        expression: Box<ObservationExpression>,
        /// `WITHIN`, `REPEATS`, `START … STOP` (at least one).
        qualifiers: Vec<Qualifier>,
    },
}

/// A qualifier on an observation expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qualifier {
    /// `WITHIN n SECONDS`; `seconds` is a non-negative integer or float as written
    /// (`5`, `+5`, `0.5`, `.5`).
    Within {
        /// The number of seconds as written.
        seconds: String,
    },
    /// `REPEATS n TIMES`; `times` is a non-negative integer as written (`2`, `+2`).
    Repeats {
        /// The number of repetitions as written.
        times: String,
    },
    /// `START t'…' STOP t'…'`; both hold the timestamp text between the quotes.
    StartStop {
        /// The start timestamp, e.g. `2020-01-01T00:00:00Z`.
        start: String,
        /// The stop timestamp.
        stop: String,
    },
}

impl Qualifier {
    /// The qualifier's keyword: `WITHIN`, `REPEATS` or `START`.
    pub fn keyword(&self) -> &'static str {
        match self {
            Self::Within { .. } => "WITHIN",
            Self::Repeats { .. } => "REPEATS",
            Self::StartStop { .. } => "START",
        }
    }
}

/// Comparison expressions inside `[…]`: comparisons combined with `AND` and `OR` (`AND` binds
/// tighter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComparisonExpression {
    /// One comparison (boxed: it is the largest node, and small nodes keep the parser's
    /// recursion cheap).
    Comparison(Box<Comparison>),
    /// `a AND b AND …` (two or more operands).
    And(Vec<ComparisonExpression>),
    /// `a OR b OR …` (two or more operands).
    Or(Vec<ComparisonExpression>),
}

/// A comparison of one object path: `path [NOT] op value`, or `[NOT] EXISTS path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// The object path compared.
    pub path: ObjectPath,
    /// Whether the comparison is negated with `NOT`.
    pub negated: bool,
    /// The operator and its operand.
    pub test: Test,
}

/// A comparison operator with its operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    /// `=` (also spelled `==`), any literal.
    Equal(Literal),
    /// `!=` (also spelled `<>`), any literal.
    NotEqual(Literal),
    /// `<`, any literal except a boolean.
    Less(Literal),
    /// `<=`, any literal except a boolean.
    LessOrEqual(Literal),
    /// `>`, any literal except a boolean.
    Greater(Literal),
    /// `>=`, any literal except a boolean.
    GreaterOrEqual(Literal),
    /// `IN (…)`, a possibly empty list of literals.
    In(Vec<Literal>),
    /// `LIKE 'pattern'`.
    Like(String),
    /// `MATCHES 'regex'`.
    Matches(String),
    /// `ISSUBSET 'cidr'`.
    IsSubset(String),
    /// `ISSUPERSET 'cidr'`.
    IsSuperset(String),
    /// `EXISTS` (written before the path).
    Exists,
}

impl Test {
    /// The operator as the printer writes it (`=`, `!=`, `IN`, `EXISTS`, …).
    pub fn operator(&self) -> &'static str {
        match self {
            Self::Equal(_) => "=",
            Self::NotEqual(_) => "!=",
            Self::Less(_) => "<",
            Self::LessOrEqual(_) => "<=",
            Self::Greater(_) => ">",
            Self::GreaterOrEqual(_) => ">=",
            Self::In(_) => "IN",
            Self::Like(_) => "LIKE",
            Self::Matches(_) => "MATCHES",
            Self::IsSubset(_) => "ISSUBSET",
            Self::IsSuperset(_) => "ISSUPERSET",
            Self::Exists => "EXISTS",
        }
    }
}

/// An object path: `type:property.key[0].'quoted key'[*]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectPath {
    /// The cyber-observable object type (`file`, `ipv4-addr`, `x-custom`), as written; it
    /// matches `[a-zA-Z_][a-zA-Z0-9_-]*` and is not a keyword.
    pub object_type: String,
    /// The first property name (decoded if it was quoted).
    pub property: String,
    /// Further steps: keys and list indices.
    pub steps: Vec<PathStep>,
}

/// A step after the first property of an object path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathStep {
    /// `.key` or `.'quoted key'`, decoded.
    Key(String),
    /// `[n]`: an integer as written (`0`, `+1`, `-1`).
    Index(String),
    /// `[*]`: any element.
    AnyIndex,
}

/// A literal value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    /// An integer as written: optional sign, then `0` or digits without a leading zero.
    Integer(String),
    /// A float as written: optional sign, digits, `.`, at least one digit.
    Float(String),
    /// A string, decoded (`\'` and `\\` already turned into `'` and `\`).
    String(String),
    /// `true` or `false`.
    Bool(bool),
    /// `b'…'`: the base64 text between the quotes.
    Binary(String),
    /// `h'…'`: the hex digits between the quotes, as written.
    Hex(String),
    /// `t'…'`: the timestamp text between the quotes, e.g. `2020-01-01T00:00:00Z`.
    Timestamp(String),
}

impl Literal {
    /// The text of a string literal; `None` for other kinds.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value of an integer literal that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Integer(text) => text.parse().ok(),
            _ => None,
        }
    }

    /// The value of a boolean literal.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }
}
