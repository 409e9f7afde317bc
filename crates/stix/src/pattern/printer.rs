//! Prints syntax trees as pattern text that parses back to the same tree.
//!
//! The printer writes the canonical spelling (`=`, `!=`, single spaces around operators, `'…'`
//! strings escaped with `\'` and `\\`) and adds parentheses only where the tree needs them:
//! around an operand whose operator binds as loosely as or looser than its parent's (a nested
//! list of the same operator stays a nested list), around a qualified expression's operand
//! unless it is a plain `[…]`, and around a `[…]` that carries the same qualifier kind twice
//! (the reference validator rejects that without parentheses). Property names are written bare
//! when they are identifiers that are not keywords, quoted otherwise.

use std::fmt::{self, Display, Formatter, Write};

use super::ast::{
    Comparison, ComparisonExpression, Literal, ObjectPath, ObservationExpression, PathStep,
    Pattern, Qualifier, Test,
};
use super::lexer::Keyword;

impl Display for Pattern {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.observation.fmt(f)
    }
}

/// How tightly an observation expression binds; higher binds tighter.
fn observation_binding(expression: &ObservationExpression) -> u8 {
    match expression {
        ObservationExpression::FollowedBy(_) => 1,
        ObservationExpression::Or(_) => 2,
        ObservationExpression::And(_) => 3,
        ObservationExpression::Qualified { .. } => 4,
        ObservationExpression::Observation(_) => 5,
    }
}

/// Writes `items` separated by `keyword`, parenthesising each item that binds at most as
/// tightly as `binding`.
fn write_list<T: Display>(
    f: &mut Formatter<'_>,
    items: &[T],
    keyword: &str,
    needs_parentheses: impl Fn(&T) -> bool,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            write!(f, " {keyword} ")?;
        }
        if needs_parentheses(item) {
            write!(f, "({item})")?;
        } else {
            write!(f, "{item}")?;
        }
    }
    Ok(())
}

impl Display for ObservationExpression {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let looser_or_equal = |binding: u8| move |e: &Self| observation_binding(e) <= binding;
        match self {
            Self::Observation(comparison) => write!(f, "[{comparison}]"),
            Self::And(items) => write_list(f, items, "AND", looser_or_equal(3)),
            Self::Or(items) => write_list(f, items, "OR", looser_or_equal(2)),
            Self::FollowedBy(items) => write_list(f, items, "FOLLOWEDBY", looser_or_equal(1)),
            Self::Qualified {
                expression,
                qualifiers,
            } => {
                let repeated_kind = qualifiers
                    .iter()
                    .enumerate()
                    .any(|(i, q)| qualifiers[..i].iter().any(|p| p.keyword() == q.keyword()));
                let plain_observation = matches!(**expression, Self::Observation(_));
                if plain_observation && !repeated_kind {
                    write!(f, "{expression}")?;
                } else {
                    write!(f, "({expression})")?;
                }
                for qualifier in qualifiers {
                    write!(f, " {qualifier}")?;
                }
                Ok(())
            }
        }
    }
}

impl Display for Qualifier {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Within { seconds } => write!(f, "WITHIN {seconds} SECONDS"),
            Self::Repeats { times } => write!(f, "REPEATS {times} TIMES"),
            Self::StartStop { start, stop } => write!(f, "START t'{start}' STOP t'{stop}'"),
        }
    }
}

impl Display for ComparisonExpression {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Comparison(comparison) => comparison.fmt(f),
            Self::And(items) => {
                write_list(f, items, "AND", |e| matches!(e, Self::And(_) | Self::Or(_)))
            }
            Self::Or(items) => write_list(f, items, "OR", |e| matches!(e, Self::Or(_))),
        }
    }
}

impl Display for Comparison {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let not = if self.negated { "NOT " } else { "" };
        let operator = self.test.operator();
        match &self.test {
            Test::Exists => write!(f, "{not}EXISTS {}", self.path),
            Test::Equal(value)
            | Test::NotEqual(value)
            | Test::Less(value)
            | Test::LessOrEqual(value)
            | Test::Greater(value)
            | Test::GreaterOrEqual(value) => write!(f, "{} {not}{operator} {value}", self.path),
            Test::In(values) => {
                write!(f, "{} {not}IN (", self.path)?;
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{value}")?;
                }
                f.write_char(')')
            }
            Test::Like(s) | Test::Matches(s) | Test::IsSubset(s) | Test::IsSuperset(s) => {
                write!(f, "{} {not}{operator} ", self.path)?;
                write_string(f, s)
            }
        }
    }
}

/// Writes `'text'` with `'` and `\` escaped.
fn write_string(f: &mut Formatter<'_>, text: &str) -> fmt::Result {
    f.write_char('\'')?;
    for c in text.chars() {
        if c == '\'' || c == '\\' {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    f.write_char('\'')
}

/// Whether a property name can be written without quotes: an identifier that the lexer does
/// not read as a keyword, a boolean or the start of a literal.
fn is_bare_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && Keyword::from_word(key).is_none()
        && key != "true"
        && key != "false"
}

fn write_key(f: &mut Formatter<'_>, key: &str) -> fmt::Result {
    if is_bare_key(key) {
        f.write_str(key)
    } else {
        write_string(f, key)
    }
}

impl Display for ObjectPath {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.object_type)?;
        write_key(f, &self.property)?;
        for step in &self.steps {
            step.fmt(f)?;
        }
        Ok(())
    }
}

impl Display for PathStep {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(key) => {
                f.write_char('.')?;
                write_key(f, key)
            }
            Self::Index(index) => write!(f, "[{index}]"),
            Self::AnyIndex => f.write_str("[*]"),
        }
    }
}

impl Display for Literal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Integer(text) | Self::Float(text) => f.write_str(text),
            Self::String(text) => write_string(f, text),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Binary(text) => write!(f, "b'{text}'"),
            Self::Hex(text) => write!(f, "h'{text}'"),
            Self::Timestamp(text) => write!(f, "t'{text}'"),
        }
    }
}
