//! Listing stored versions in the order the store added them, a page at a time: what the TAXII
//! server serves (`date_added` order, `added_after` and `next` paging, `match[...]` filters).
//!
//! Every version gets its `added` time when it is first stored: server time in microseconds
//! since the epoch, strictly increasing across the whole store (a version stored in the same
//! microsecond as the one before, or after the clock stepped back, gets the previous value plus
//! one). So "added after X" is a stable cursor: a version not yet seen is always added after
//! every version already seen.

use bytes::Bytes;

use crate::record::Kind;

/// Which versions of each object a listing includes (TAXII `match[version]`); several may be
/// asked for together, and a version is listed if any of them selects it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionSelect {
    /// The newest version of each object.
    pub last: bool,
    /// The oldest version of each object the store still has.
    pub first: bool,
    /// Every version.
    pub all: bool,
    /// The versions whose `modified` is one of these (nanoseconds since the epoch).
    pub at: Vec<i64>,
}

impl VersionSelect {
    /// The newest version of each object only (TAXII's default).
    pub fn last() -> Self {
        Self {
            last: true,
            ..Self::default()
        }
    }

    /// Every version.
    pub fn all() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    /// Whether nothing at all is selected.
    pub fn is_empty(&self) -> bool {
        !self.last && !self.first && !self.all && self.at.is_empty()
    }
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Listing<'a> {
    pub kind: Kind,
    /// Only versions added strictly after this (microseconds since the epoch); `i64::MIN` for
    /// all.
    pub added_after: i64,
    /// Only these objects (STIX ids); empty for any.
    pub ids: &'a [String],
    pub versions: &'a VersionSelect,
    /// At most this many versions.
    pub limit: usize,
    /// Whether to read the objects themselves, or only their ids and versions (a manifest).
    pub with_json: bool,
}

/// One listed version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The STIX id.
    pub id: String,
    /// The version: `modified`, nanoseconds since the epoch.
    pub modified: i64,
    /// When the store added this version: microseconds since the epoch.
    pub added: i64,
    /// The object as stored, if the listing asked for it.
    pub json: Option<Bytes>,
}

/// Microseconds since the epoch, now.
pub fn now_micros() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

/// The `added` time of the next version stored after one added at `last`: now, or `last` + 1
/// µs if now is not later (the same microsecond, or a clock that stepped back).
pub fn next_added(last: i64) -> i64 {
    now_micros().max(last.saturating_add(1))
}

/// The SQL condition selecting `versions` of the row `v` (an alias of the versions table) in
/// `current` (the current-version table's name), with `at` as the parameter holding the
/// timestamps; `None` if nothing is selected. `at_list` is how the dialect tests membership.
pub(crate) fn version_condition(
    versions: &VersionSelect,
    versions_table: &str,
    current_table: &str,
    at_list: &str,
) -> Option<String> {
    if versions.all {
        return Some("TRUE".into());
    }
    let mut any = Vec::new();
    if versions.last {
        any.push(format!(
            "EXISTS (SELECT 1 FROM {current_table} c WHERE c.id = v.id AND c.position = v.position)"
        ));
    }
    if versions.first {
        any.push(format!(
            "v.modified = (SELECT min(w.modified) FROM {versions_table} w WHERE w.id = v.id)"
        ));
    }
    if !versions.at.is_empty() {
        any.push(at_list.to_owned());
    }
    if any.is_empty() {
        None
    } else {
        Some(format!("({})", any.join(" OR ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_times_strictly_increase_even_when_the_clock_does_not() {
        let far_future = now_micros() + 3_600_000_000;
        assert_eq!(next_added(far_future), far_future + 1);
        let now = now_micros();
        assert!(next_added(0) >= now);
        assert_eq!(next_added(i64::MAX), i64::MAX);
    }

    #[test]
    fn version_conditions_combine_with_or() {
        let none = VersionSelect::default();
        assert!(none.is_empty());
        assert_eq!(version_condition(&none, "vt", "ct", "AT"), None);
        assert_eq!(
            version_condition(&VersionSelect::all(), "vt", "ct", "AT").as_deref(),
            Some("TRUE")
        );
        let both = VersionSelect {
            first: true,
            at: vec![1],
            ..VersionSelect::last()
        };
        let sql = version_condition(&both, "vt", "ct", "AT").unwrap();
        assert!(
            sql.contains("FROM ct c") && sql.contains("FROM vt w"),
            "{sql}"
        );
        assert_eq!(sql.matches(" OR ").count(), 2, "{sql}");
        assert!(sql.ends_with("OR AT)"), "{sql}");
    }
}
