//! Hash algorithm names and the value check the reference validator applies to them.
//!
//! The reference validator checks every comparison whose object path contains a `hashes` key
//! and ends in a key naming a known algorithm: the compared value (its literal text with every
//! `'` removed) must look like a hash of that algorithm. Algorithm names are compared after
//! upper-casing and removing `-` and `'`, so `MD5`, `md5`, `'SHA-256'`, `sha256` all name an
//! algorithm. Point-IoC extraction uses the same table to normalise hash keys to the STIX
//! vocabulary's spelling.

use super::ast::{Comparison, Literal, ObjectPath, PathStep, Test};
use super::error::PatternErrorKind;

/// What a value of an algorithm must look like.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Only hex digits, one of these lengths.
    Hex(&'static [usize], &'static str),
    /// 1 to 128 characters out of `a-z A-Z 0-9 / + : .`.
    Ssdeep,
    /// Not checked.
    Unchecked,
}

/// A hash algorithm the bus knows by name.
#[derive(Debug)]
pub(crate) struct HashAlgorithm {
    /// Upper case, without `-`: the key the name is looked up by.
    folded: &'static str,
    /// The spelling of the STIX 2.1 hash-algorithm vocabulary (or the reference validator's).
    pub(crate) canonical: &'static str,
    shape: Shape,
}

const ALGORITHMS: &[HashAlgorithm] = &[
    algorithm("MD5", "MD5", Shape::Hex(&[32], "32 hex digits")),
    // The reference validator's MD6 expression lacks grouping and accepts any value that
    // starts with 32 hex digits; we check the lengths it meant (see docs/compatibility.md).
    algorithm(
        "MD6",
        "MD6",
        Shape::Hex(
            &[32, 40, 56, 64, 96, 128],
            "32, 40, 56, 64, 96 or 128 hex digits",
        ),
    ),
    algorithm(
        "RIPEMD160",
        "RIPEMD-160",
        Shape::Hex(&[40], "40 hex digits"),
    ),
    algorithm("SHA1", "SHA-1", Shape::Hex(&[40], "40 hex digits")),
    algorithm("SHA224", "SHA-224", Shape::Hex(&[56], "56 hex digits")),
    algorithm("SHA256", "SHA-256", Shape::Hex(&[64], "64 hex digits")),
    algorithm("SHA384", "SHA-384", Shape::Hex(&[96], "96 hex digits")),
    algorithm("SHA512", "SHA-512", Shape::Hex(&[128], "128 hex digits")),
    algorithm("SHA3224", "SHA3-224", Shape::Hex(&[56], "56 hex digits")),
    algorithm("SHA3256", "SHA3-256", Shape::Hex(&[64], "64 hex digits")),
    algorithm("SHA3384", "SHA3-384", Shape::Hex(&[96], "96 hex digits")),
    algorithm("SHA3512", "SHA3-512", Shape::Hex(&[128], "128 hex digits")),
    algorithm("SSDEEP", "SSDEEP", Shape::Ssdeep),
    algorithm(
        "WHIRLPOOL",
        "WHIRLPOOL",
        Shape::Hex(&[128], "128 hex digits"),
    ),
    // In the STIX vocabulary but not checked by the reference validator.
    algorithm("TLSH", "TLSH", Shape::Unchecked),
];

const fn algorithm(folded: &'static str, canonical: &'static str, shape: Shape) -> HashAlgorithm {
    HashAlgorithm {
        folded,
        canonical,
        shape,
    }
}

/// The algorithm a hash key names, comparing as the reference validator does: upper case
/// (full Unicode mapping, like Python's `str.upper`), without `-` and `'`.
pub(crate) fn algorithm_named(key: &str) -> Option<&'static HashAlgorithm> {
    let folded: String = key
        .to_uppercase()
        .chars()
        .filter(|&c| c != '-' && c != '\'')
        .collect();
    ALGORITHMS.iter().find(|a| a.folded == folded)
}

impl HashAlgorithm {
    /// Checks `text`, the value as the reference sees it (quotes removed).
    fn check(&self, text: String) -> Result<(), PatternErrorKind> {
        let (ok, shape) = match self.shape {
            Shape::Unchecked => return Ok(()),
            Shape::Hex(lengths, shape) => (
                lengths.contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit()),
                shape,
            ),
            Shape::Ssdeep => (
                (1..=128).contains(&text.len())
                    && text.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'/' | b'+' | b':' | b'.')
                    }),
                "1 to 128 characters of a-z, A-Z, 0-9, /, +, :, .",
            ),
        };
        if ok {
            Ok(())
        } else {
            Err(PatternErrorKind::InvalidHash {
                algorithm: self.canonical,
                shape,
                value: text,
            })
        }
    }
}

/// The literal's text as the reference validator checks it: as written, with every `'`
/// removed (so a string's escapes `\'` and `\\` leave `\` and `\\`).
fn reference_text(literal: &Literal) -> String {
    match literal {
        Literal::String(s) => s.replace('\\', "\\\\").replace('\'', "\\"),
        Literal::Integer(t) | Literal::Float(t) => t.clone(),
        Literal::Bool(b) => b.to_string(),
        Literal::Binary(t) => format!("b{t}"),
        Literal::Hex(t) => format!("h{t}"),
        Literal::Timestamp(t) => format!("t{t}"),
    }
}

/// The algorithm whose values `path` holds, if the reference validator checks it: the path has
/// a key `hashes` anywhere and ends in a key naming a known algorithm.
fn checked_algorithm(path: &ObjectPath) -> Option<&'static HashAlgorithm> {
    let mut keys = std::iter::once(path.property.as_str()).chain(path.steps.iter().filter_map(
        |step| match step {
            PathStep::Key(key) => Some(key.as_str()),
            _ => None,
        },
    ));
    if !keys.any(|key| key == "hashes") {
        return None;
    }
    let last = match path.steps.last() {
        None => path.property.as_str(),
        Some(PathStep::Key(key)) => key,
        // The reference validator crashes on an index here; an index names no algorithm.
        Some(PathStep::Index(_) | PathStep::AnyIndex) => return None,
    };
    algorithm_named(last)
}

/// Applies the reference validator's hash check to one comparison.
///
/// Deviation: for `IN (…)` the reference checks the text of the whole list (`(a,b)`), which
/// never looks like a hash, so it rejects every `IN` on a hash; we check each element.
pub(crate) fn check_comparison(comparison: &Comparison) -> Result<(), PatternErrorKind> {
    let Some(algorithm) = checked_algorithm(&comparison.path) else {
        return Ok(());
    };
    match &comparison.test {
        Test::Equal(value)
        | Test::NotEqual(value)
        | Test::Less(value)
        | Test::LessOrEqual(value)
        | Test::Greater(value)
        | Test::GreaterOrEqual(value) => algorithm.check(reference_text(value)),
        Test::In(values) => values
            .iter()
            .try_for_each(|value| algorithm.check(reference_text(value))),
        Test::Like(s) | Test::Matches(s) | Test::IsSubset(s) | Test::IsSuperset(s) => {
            algorithm.check(reference_text(&Literal::String(s.clone())))
        }
        Test::Exists => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_without_case_hyphens_and_quotes() {
        for (key, canonical) in [
            ("MD5", "MD5"),
            ("md5", "MD5"),
            ("SHA-256", "SHA-256"),
            ("sha256", "SHA-256"),
            ("Sha3-512", "SHA3-512"),
            ("ripemd-160", "RIPEMD-160"),
            ("tlsh", "TLSH"),
            ("ssdeep", "SSDEEP"),
            // Python's upper() maps the long s to S, and so does Rust's to_uppercase.
            ("\u{17f}ha1", "SHA-1"),
        ] {
            assert_eq!(
                algorithm_named(key).map(|a| a.canonical),
                Some(canonical),
                "{key}"
            );
        }
        assert!(algorithm_named("SHA_256").is_none());
        assert!(algorithm_named("x_custom").is_none());
    }

    #[test]
    fn values_are_checked_as_the_reference_sees_them() {
        let md5 = algorithm_named("MD5").unwrap();
        assert!(md5.check("d41d8cd98f00b204e9800998ecf8427e".into()).is_ok());
        assert!(md5.check("D41D8CD98F00B204E9800998ECF8427E".into()).is_ok());
        assert!(md5.check("d41d8cd98f00b204e9800998ecf8427".into()).is_err());
        assert!(
            md5.check("d41d8cd98f00b204e9800998ecf8427e\n".into())
                .is_err()
        );
        let md6 = algorithm_named("MD6").unwrap();
        assert!(
            md6.check("d41d8cd98f00b204e9800998ecf8427eXYZ".into())
                .is_err()
        );
        let ssdeep = algorithm_named("SSDEEP").unwrap();
        assert!(
            ssdeep
                .check("3:AXGBicFlgVNhBGcL6wCrFQEv:AXGHsNhxLsr2C".into())
                .is_ok()
        );
        assert!(ssdeep.check(String::new()).is_err());
        assert!(ssdeep.check("a b".into()).is_err());
        assert_eq!(
            reference_text(&Literal::String("a'b\\c".into())),
            "a\\b\\\\c"
        );
        assert_eq!(reference_text(&Literal::Hex("00".into())), "h00");
    }
}
