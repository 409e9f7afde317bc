//! STIX identifiers: `<object-type>--<UUID>`.

use std::fmt;
use std::sync::Arc;

/// A syntactically valid STIX identifier such as `indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc`.
///
/// The text is kept exactly as received (cheap to clone); the object type is the part before `--`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StixId(Arc<str>);

impl StixId {
    /// Validates `value` as `<type>--<uuid>`: the type is 3–250 characters of lower-case ASCII
    /// letters, digits and `-`, the UUID is in its canonical hyphenated form.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let Some((ty, uuid)) = value.split_once("--") else {
            return Err("expected `<type>--<uuid>`");
        };
        if ty.len() < 3 || ty.len() > 250 {
            return Err("object type must be 3 to 250 characters");
        }
        if !ty
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("object type may only hold a-z, 0-9 and '-'");
        }
        if uuid.len() != 36 || uuid::Uuid::try_parse(uuid).is_err() {
            return Err("the part after `--` is not a UUID");
        }
        Ok(Self(Arc::from(value)))
    }

    /// A new random (version 4) identifier for `object_type`.
    pub fn new_random(object_type: &str) -> Self {
        Self(Arc::from(format!(
            "{object_type}--{}",
            uuid::Uuid::new_v4()
        )))
    }

    /// The identifier as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The object type, e.g. `indicator`.
    pub fn object_type(&self) -> &str {
        self.0.split_once("--").map_or("", |(ty, _)| ty)
    }
}

impl fmt::Display for StixId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StixId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_canonical_ids() {
        let id = StixId::parse("indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc").unwrap();
        assert_eq!(id.object_type(), "indicator");
        assert!(StixId::parse("x-vendor-thing--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc").is_ok());
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "indicator",
            "indicator--",
            "indicator--1234",
            "Indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc",
            "ab--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc",
            "indicator--df0f9a0ec3b64f53b0cf5e9c454ee0cc",
            "indicator--{df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc}",
            "indicator-df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc",
        ] {
            assert!(StixId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn random_ids_are_valid() {
        let id = StixId::new_random("sighting");
        assert_eq!(StixId::parse(id.as_str()).unwrap(), id);
    }
}
