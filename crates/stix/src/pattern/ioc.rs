//! Point IoCs: patterns that say "this one object path equals this one value".
//!
//! Zeek, CIF and MISP can only use indicators of this shape (`[domain-name:value =
//! 'evil.com']`). Upstream decided by inspecting the parse and then cut the value out of the
//! pattern text; we decide on the syntax tree:
//!
//! * the pattern is one `[…]` observation (any parentheses around it or inside it are fine),
//!   without qualifiers and without `AND`/`OR`/`FOLLOWEDBY` between observations;
//! * the observation holds exactly one comparison — `[a:b = 'x' OR a:b = 'y']` is not a point
//!   IoC, whatever the object types (upstream accepted same-type compounds);
//! * the operator is `=` (or `==`), not negated; the value is any literal;
//! * string values are decoded (`\'` → `'`, `\\` → `\`);
//! * the object path is normalised (see [`ObjectPath::normalized`]), so that
//!   `file:hashes.md5`, `file:hashes.'MD5'` and `file:hashes.MD5` give the same path, printed
//!   `file:hashes.MD5`.

use std::str::FromStr;

use super::ast::{
    Comparison, ComparisonExpression, Literal, ObjectPath, ObservationExpression, PathStep,
    Pattern, Test,
};
use super::error::PatternError;
use super::hashes::algorithm_named;
use super::parser::parse_object_path;

/// One object path compared for equality with one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointIoc {
    /// The normalised object path; its `Display` is the canonical text (`domain-name:value`,
    /// `file:hashes.MD5`, `file:hashes.'SHA-256'`), and `path.object_type` is the object type.
    pub path: ObjectPath,
    /// The value compared with; [`Literal::as_str`] gives a string value, decoded.
    pub value: Literal,
}

impl Pattern {
    /// The point IoC this pattern is, if it is one (see [`point_ioc`] for the rules).
    pub fn point_ioc(&self) -> Option<PointIoc> {
        let ObservationExpression::Observation(ComparisonExpression::Comparison(comparison)) =
            &self.observation
        else {
            return None;
        };
        let Comparison {
            path,
            negated: false,
            test: Test::Equal(value),
        } = &**comparison
        else {
            return None;
        };
        Some(PointIoc {
            path: path.normalized(),
            value: value.clone(),
        })
    }
}

impl ObjectPath {
    /// The path with hash algorithm names spelled as the STIX 2.1 vocabulary spells them: a key
    /// directly after a `hashes` key that names a known algorithm, compared without regard to
    /// case and hyphens (`md5`, `'MD5'`, `sha256`, `'sha-256'`), becomes `MD5`, `SHA-256`, ….
    /// Other keys, the object type and indices stay as they are.
    pub fn normalized(&self) -> ObjectPath {
        let mut previous_key = Some(self.property.as_str());
        let steps = self
            .steps
            .iter()
            .map(|step| {
                let after_hashes = previous_key == Some("hashes");
                match step {
                    PathStep::Key(key) => {
                        previous_key = Some(key);
                        match algorithm_named(key) {
                            Some(algorithm) if after_hashes => {
                                PathStep::Key(algorithm.canonical.to_owned())
                            }
                            _ => step.clone(),
                        }
                    }
                    _ => {
                        previous_key = None;
                        step.clone()
                    }
                }
            })
            .collect();
        ObjectPath {
            object_type: self.object_type.clone(),
            property: self.property.clone(),
            steps,
        }
    }
}

impl FromStr for ObjectPath {
    type Err = PatternError;

    /// Parses an object path such as `file:hashes.'SHA-256'` (not normalised).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_object_path(text)
    }
}

/// The point IoC `pattern` is: `Some` if it is a valid STIX 2.1 pattern of the form
/// `[type:path = value]`, `None` otherwise.
///
/// * One `[…]` observation (parentheses, white space and comments around it are fine), no
///   qualifiers, no `AND`/`OR`/`FOLLOWEDBY` between observations.
/// * Exactly one comparison inside: `[a:b = 'x' OR a:b = 'y']` is not a point IoC.
/// * The operator is `=` (or `==`), not negated; the value is any literal, strings decoded.
/// * The path is normalised with [`ObjectPath::normalized`]; its `Display` is the text apps
///   match on (`file:hashes.MD5`, `file:hashes.'SHA-256'`, `domain-name:value`).
///
/// ```
/// use threatbus_stix::pattern::point_ioc;
///
/// let ioc = point_ioc("[file:hashes.'md5' = 'd41d8cd98f00b204e9800998ecf8427e']").unwrap();
/// assert_eq!(ioc.path.to_string(), "file:hashes.MD5");
/// assert_eq!(ioc.value.as_str(), Some("d41d8cd98f00b204e9800998ecf8427e"));
/// assert!(point_ioc("[domain-name:value = 'a.com' OR domain-name:value = 'b.com']").is_none());
/// ```
pub fn point_ioc(pattern: &str) -> Option<PointIoc> {
    pattern.parse::<Pattern>().ok()?.point_ioc()
}

/// Whether `pattern` is a point IoC: a valid STIX 2.1 pattern that compares one object path for
/// equality with one value. Same as `point_ioc(pattern).is_some()`.
pub fn is_point_ioc(pattern: &str) -> bool {
    point_ioc(pattern).is_some()
}
