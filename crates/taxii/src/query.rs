//! The query string of the TAXII 2.1 GET endpoints (spec section 3: filtering and
//! pagination), parsed into [`Filters`].
//!
//! [`parse_query`] takes the raw, still percent-encoded query of the request URI and decodes it
//! itself (`%5B` → `[`, `+` → space). It bounds its work: the query string is at most
//! [`MAX_QUERY_LENGTH`] bytes and each `match[...]` parameter holds at most
//! [`MAX_MATCH_VALUES`] values. Every error names the parameter and the offending value, so the
//! server can hand it to the client as is.

use thiserror::Error;
use threatbus_stix::{StixId, Timestamp};

/// The longest query string accepted, in bytes (before percent-decoding).
pub const MAX_QUERY_LENGTH: usize = 16 * 1024;

/// The most values one `match[...]` parameter may hold (over all its repetitions).
pub const MAX_MATCH_VALUES: usize = 1_000;

/// How much of an offending value an error message quotes, in characters.
const MAX_QUOTED_CHARS: usize = 100;

/// The filters and pagination of a GET request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// `added_after`: only objects added to the collection after this instant.
    pub added_after: Option<Timestamp>,
    /// `limit`: the most objects (or records) the client wants in this page; at least 1. Not
    /// capped here (a number too large for `usize` reads as `usize::MAX`).
    pub limit: Option<usize>,
    /// `next`: the opaque token of the page to fetch, as the server gave it.
    pub next: Option<String>,
    /// `match[id]`: STIX ids (`type--uuid`); empty means any.
    pub ids: Vec<String>,
    /// `match[type]`: STIX object types; empty means any.
    pub types: Vec<String>,
    /// `match[version]`: which versions of each object.
    pub versions: VersionMatch,
    /// `match[spec_version]`: STIX spec versions such as `2.1`; empty means any.
    pub spec_versions: Vec<String>,
    /// The names of parameters this parser does not know (ignored, kept for logging), each at
    /// most 100 characters and listed once.
    pub ignored: Vec<String>,
}

/// The `match[version]` filter: any combination of the latest version, the first version, all
/// versions and versions at given instants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMatch {
    /// `last`: the most recent version of each object.
    pub last: bool,
    /// `first`: the earliest version of each object.
    pub first: bool,
    /// `all`: every version.
    pub all: bool,
    /// Timestamps: the versions whose `modified` (or `created`) is one of these.
    pub at: Vec<Timestamp>,
}

impl Default for VersionMatch {
    /// Without `match[version]` the spec asks for the latest version only.
    fn default() -> Self {
        Self {
            last: true,
            first: false,
            all: false,
            at: Vec::new(),
        }
    }
}

impl VersionMatch {
    /// Whether this is the default (latest version only), i.e. what no `match[version]` means.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Why a query string was refused. The message names the parameter and quotes the value
/// (at most 100 characters of it).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueryError {
    /// The query string is longer than [`MAX_QUERY_LENGTH`].
    #[error("query string: {length} bytes, more than the limit of {limit} bytes")]
    TooLong {
        /// Its length in bytes.
        length: usize,
        /// [`MAX_QUERY_LENGTH`].
        limit: usize,
    },
    /// A name or value is not valid percent-encoded UTF-8.
    #[error("{parameter}: invalid percent-encoding or UTF-8 in {value:?}")]
    Encoding {
        /// The parameter's name (as written, if the name itself is the culprit).
        parameter: String,
        /// The offending text, still encoded.
        value: String,
    },
    /// A value is not what the parameter takes.
    #[error("{parameter}: expected {expected}, got {value:?}")]
    Invalid {
        /// The parameter's name.
        parameter: &'static str,
        /// What it takes.
        expected: &'static str,
        /// The offending value (or list item), decoded.
        value: String,
    },
    /// A parameter that takes one value was given twice.
    #[error("{parameter}: given more than once (second value {value:?})")]
    Repeated {
        /// The parameter's name.
        parameter: &'static str,
        /// The second value, decoded.
        value: String,
    },
    /// A `match[...]` parameter holds more than [`MAX_MATCH_VALUES`] values.
    #[error("{parameter}: more than the limit of {limit} values")]
    TooManyValues {
        /// The parameter's name.
        parameter: &'static str,
        /// [`MAX_MATCH_VALUES`].
        limit: usize,
    },
}

impl QueryError {
    /// The parameter the error is about (`query string` for [`QueryError::TooLong`]).
    pub fn parameter(&self) -> &str {
        match self {
            Self::TooLong { .. } => "query string",
            Self::Encoding { parameter, .. } => parameter,
            Self::Invalid { parameter, .. }
            | Self::Repeated { parameter, .. }
            | Self::TooManyValues { parameter, .. } => parameter,
        }
    }
}

const ADDED_AFTER: &str = "added_after";
const LIMIT: &str = "limit";
const NEXT: &str = "next";
const MATCH_ID: &str = "match[id]";
const MATCH_TYPE: &str = "match[type]";
const MATCH_VERSION: &str = "match[version]";
const MATCH_SPEC_VERSION: &str = "match[spec_version]";

/// Parses the raw query string of a TAXII GET request (without the `?`; may be empty).
///
/// Parameters are separated by `&`; a parameter without `=` has an empty value. `added_after`,
/// `limit` and `next` may appear once; the values of a repeated `match[...]` parameter are
/// merged. List items are comma-separated and trimmed of spaces; an empty item is an error.
/// Unknown parameters are ignored and listed in [`Filters::ignored`].
pub fn parse_query(query: &str) -> Result<Filters, QueryError> {
    if query.len() > MAX_QUERY_LENGTH {
        return Err(QueryError::TooLong {
            length: query.len(),
            limit: MAX_QUERY_LENGTH,
        });
    }
    let mut filters = Filters::default();
    let mut versions_seen = false;
    // Values so far of match[id], match[type], match[version], match[spec_version].
    let mut counts = [0usize; 4];
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(raw_name).ok_or_else(|| QueryError::Encoding {
            parameter: quote(raw_name),
            value: quote(raw_name),
        })?;
        let value = decode(raw_value).ok_or_else(|| QueryError::Encoding {
            parameter: quote(&name),
            value: quote(raw_value),
        })?;
        match name.as_str() {
            ADDED_AFTER => {
                if filters.added_after.is_some() {
                    return Err(repeated(ADDED_AFTER, &value));
                }
                let timestamp = Timestamp::parse(&value)
                    .map_err(|_| invalid(ADDED_AFTER, "a UTC timestamp", &value))?;
                filters.added_after = Some(timestamp);
            }
            LIMIT => {
                if filters.limit.is_some() {
                    return Err(repeated(LIMIT, &value));
                }
                filters.limit = Some(parse_limit(&value)?);
            }
            NEXT => {
                if filters.next.is_some() {
                    return Err(repeated(NEXT, &value));
                }
                if value.is_empty() {
                    return Err(invalid(NEXT, "a non-empty token", &value));
                }
                filters.next = Some(value);
            }
            MATCH_ID => {
                for item in items(MATCH_ID, &value, &mut counts[0])? {
                    if StixId::parse(item).is_err() {
                        return Err(invalid(MATCH_ID, "a STIX id `<type>--<uuid>`", item));
                    }
                    filters.ids.push(item.to_owned());
                }
            }
            MATCH_TYPE => {
                for item in items(MATCH_TYPE, &value, &mut counts[1])? {
                    if !is_type_name(item) {
                        return Err(invalid(
                            MATCH_TYPE,
                            "a STIX type (3 to 250 characters of a-z, 0-9 and '-')",
                            item,
                        ));
                    }
                    filters.types.push(item.to_owned());
                }
            }
            MATCH_VERSION => {
                if !versions_seen {
                    versions_seen = true;
                    filters.versions.last = false;
                }
                for item in items(MATCH_VERSION, &value, &mut counts[2])? {
                    match item {
                        "last" => filters.versions.last = true,
                        "first" => filters.versions.first = true,
                        "all" => filters.versions.all = true,
                        _ => match Timestamp::parse(item) {
                            Ok(timestamp) => filters.versions.at.push(timestamp),
                            Err(_) => {
                                return Err(invalid(
                                    MATCH_VERSION,
                                    "\"last\", \"first\", \"all\" or a timestamp",
                                    item,
                                ));
                            }
                        },
                    }
                }
            }
            MATCH_SPEC_VERSION => {
                for item in items(MATCH_SPEC_VERSION, &value, &mut counts[3])? {
                    if !is_spec_version(item) {
                        return Err(invalid(
                            MATCH_SPEC_VERSION,
                            "a STIX spec version such as \"2.1\"",
                            item,
                        ));
                    }
                    filters.spec_versions.push(item.to_owned());
                }
            }
            _ => {
                let name = quote(&name);
                if !filters.ignored.contains(&name) {
                    filters.ignored.push(name);
                }
            }
        }
    }
    Ok(filters)
}

/// `limit`: ASCII digits only, not zero; too large for `usize` saturates.
fn parse_limit(value: &str) -> Result<usize, QueryError> {
    let expected = "a positive whole number";
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(LIMIT, expected, value));
    }
    let limit = value.parse::<usize>().unwrap_or(usize::MAX);
    if limit == 0 {
        return Err(invalid(LIMIT, expected, value));
    }
    Ok(limit)
}

/// Splits a list value into trimmed items, adding them to `count` and refusing an empty item
/// or more than [`MAX_MATCH_VALUES`] in all.
fn items<'a>(
    parameter: &'static str,
    value: &'a str,
    count: &mut usize,
) -> Result<Vec<&'a str>, QueryError> {
    let mut list = Vec::new();
    for item in value.split(',') {
        let item = item.trim_matches(' ');
        if item.is_empty() {
            return Err(invalid(
                parameter,
                "a comma-separated list without empty items",
                value,
            ));
        }
        *count += 1;
        if *count > MAX_MATCH_VALUES {
            return Err(QueryError::TooManyValues {
                parameter,
                limit: MAX_MATCH_VALUES,
            });
        }
        list.push(item);
    }
    Ok(list)
}

/// A STIX object type: 3 to 250 characters of lower-case ASCII letters, digits and `-`.
fn is_type_name(item: &str) -> bool {
    (3..=250).contains(&item.len())
        && item
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A spec version: digits, a dot, digits (`2.1`).
fn is_spec_version(item: &str) -> bool {
    item.split_once('.').is_some_and(|(major, minor)| {
        [major, minor]
            .iter()
            .all(|part| (1..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Percent-decodes a query component (`+` is a space). `None` when an escape is not `%` and
/// two hex digits, or the decoded bytes are not UTF-8.
fn decode(text: &str) -> Option<String> {
    if !text.contains(['%', '+']) {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let high = hex_digit(*bytes.get(i + 1)?)?;
                let low = hex_digit(*bytes.get(i + 2)?)?;
                out.push(high << 4 | low);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The first 100 characters of `text`, for error messages and logs.
fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

fn invalid(parameter: &'static str, expected: &'static str, value: &str) -> QueryError {
    QueryError::Invalid {
        parameter,
        expected,
        value: quote(value),
    }
}

fn repeated(parameter: &'static str, value: &str) -> QueryError {
    QueryError::Repeated {
        parameter,
        value: quote(value),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ID1: &str = "indicator--29aba82c-5393-42a8-9edb-6a2cb1df070b";
    const ID2: &str = "sighting--9a5d1e4c-53c3-4d5b-9f4e-5b6b5a1c2d3e";

    fn error(query: &str) -> String {
        parse_query(query).unwrap_err().to_string()
    }

    #[test]
    fn empty_query_is_default() {
        for query in ["", "&", "&&"] {
            let filters = parse_query(query).unwrap();
            assert_eq!(filters, Filters::default());
            assert!(filters.versions.is_default());
            assert!(filters.versions.last);
        }
    }

    #[test]
    fn all_parameters() {
        let query = format!(
            "added_after=2026-12-06T14:00:00.123456Z&limit=50&next=abc%3D%3D\
             &match%5Bid%5D={ID1},{ID2}&match[type]=indicator,sighting\
             &match[version]=first,2026-12-06T13:59:59.000Z&match[spec_version]=2.1"
        );
        let filters = parse_query(&query).unwrap();
        assert_eq!(
            filters.added_after,
            Some(Timestamp::parse("2026-12-06T14:00:00.123456Z").unwrap())
        );
        assert_eq!(filters.limit, Some(50));
        assert_eq!(filters.next.as_deref(), Some("abc=="));
        assert_eq!(filters.ids, [ID1, ID2]);
        assert_eq!(filters.types, ["indicator", "sighting"]);
        assert!(!filters.versions.last && filters.versions.first && !filters.versions.all);
        assert_eq!(
            filters.versions.at,
            [Timestamp::parse("2026-12-06T13:59:59Z").unwrap()]
        );
        assert!(!filters.versions.is_default());
        assert_eq!(filters.spec_versions, ["2.1"]);
        assert!(filters.ignored.is_empty());
    }

    #[test]
    fn decodes_percent_and_plus() {
        let filters = parse_query("match%5btype%5d=indicator,+sighting&next=a+b%2Bc%20d").unwrap();
        assert_eq!(filters.types, ["indicator", "sighting"]);
        assert_eq!(filters.next.as_deref(), Some("a b+c d"));
        let filters = parse_query("next=%C3%A9").unwrap();
        assert_eq!(filters.next.as_deref(), Some("é"));
    }

    #[test]
    fn invalid_escapes_name_the_parameter() {
        assert_eq!(
            error("next=ab%zz"),
            r#"next: invalid percent-encoding or UTF-8 in "ab%zz""#
        );
        assert_eq!(
            error("limit=%"),
            r#"limit: invalid percent-encoding or UTF-8 in "%""#
        );
        assert_eq!(
            error("next=%ff"),
            r#"next: invalid percent-encoding or UTF-8 in "%ff""#
        );
        assert_eq!(
            error("match%5=1"),
            r#"match%5: invalid percent-encoding or UTF-8 in "match%5""#
        );
    }

    #[test]
    fn version_keywords_merge() {
        let filters = parse_query("match[version]=all&match[version]=last").unwrap();
        assert!(filters.versions.all && filters.versions.last && !filters.versions.first);
        let filters = parse_query("match[version]=last").unwrap();
        assert!(filters.versions.is_default());
        assert_eq!(
            error("match[version]=foo"),
            r#"match[version]: expected "last", "first", "all" or a timestamp, got "foo""#
        );
        assert_eq!(
            error("match[version]=LAST"),
            r#"match[version]: expected "last", "first", "all" or a timestamp, got "LAST""#
        );
    }

    #[test]
    fn match_lists_merge() {
        let filters = parse_query(&format!(
            "match[id]={ID1}&match[type]=indicator&match[id]={ID2}"
        ))
        .unwrap();
        assert_eq!(filters.ids, [ID1, ID2]);
        let filters = parse_query("match[spec_version]=2.1&match[spec_version]=2.0,2.1").unwrap();
        assert_eq!(filters.spec_versions, ["2.1", "2.0", "2.1"]);
    }

    #[test]
    fn match_list_errors() {
        assert_eq!(
            error("match[id]=indicator--nope"),
            r#"match[id]: expected a STIX id `<type>--<uuid>`, got "indicator--nope""#
        );
        assert_eq!(
            error("match[type]=Indicator"),
            r#"match[type]: expected a STIX type (3 to 250 characters of a-z, 0-9 and '-'), got "Indicator""#
        );
        assert_eq!(
            error("match[spec_version]=two"),
            r#"match[spec_version]: expected a STIX spec version such as "2.1", got "two""#
        );
        assert_eq!(
            error("match[type]=indicator,,sighting"),
            r#"match[type]: expected a comma-separated list without empty items, got "indicator,,sighting""#
        );
        assert!(error("match[id]=").starts_with("match[id]: "));
        assert!(error("match[version]").starts_with("match[version]: "));
    }

    #[test]
    fn limit() {
        assert_eq!(parse_query("limit=1").unwrap().limit, Some(1));
        assert_eq!(parse_query("limit=007").unwrap().limit, Some(7));
        assert_eq!(
            parse_query("limit=99999999999999999999999").unwrap().limit,
            Some(usize::MAX)
        );
        assert_eq!(
            error("limit=0"),
            r#"limit: expected a positive whole number, got "0""#
        );
        for bad in ["-1", "+1", "1.5", "ten", "", " 1", "1e3", "000"] {
            let query = format!("limit={}", bad.replace('+', "%2B").replace(' ', "%20"));
            assert_eq!(
                error(&query),
                format!("limit: expected a positive whole number, got {bad:?}"),
                "{query}"
            );
        }
    }

    #[test]
    fn added_after_and_next() {
        assert_eq!(
            error("added_after=yesterday"),
            r#"added_after: expected a UTC timestamp, got "yesterday""#
        );
        assert!(error("added_after=2026-12-06T14:00:00%2B01:00").starts_with("added_after: "));
        assert_eq!(
            error("next="),
            r#"next: expected a non-empty token, got """#
        );
        assert_eq!(error("next"), r#"next: expected a non-empty token, got """#);
    }

    #[test]
    fn single_parameters_may_not_repeat() {
        assert_eq!(
            error("limit=1&limit=2"),
            r#"limit: given more than once (second value "2")"#
        );
        assert!(error("next=a&next=b").starts_with("next: given more than once"));
        assert!(
            error("added_after=2026-12-06T14:00:00Z&added_after=2026-12-06T14:00:00Z")
                .starts_with("added_after: given more than once")
        );
    }

    #[test]
    fn unknown_parameters_are_ignored_and_listed() {
        let filters = parse_query("match[foo]=1&x=2&x=3&limit=5&bare").unwrap();
        assert_eq!(filters.ignored, ["match[foo]", "x", "bare"]);
        assert_eq!(filters.limit, Some(5));
        let long = "n".repeat(500);
        let filters = parse_query(&long).unwrap();
        assert_eq!(filters.ignored, ["n".repeat(100)]);
    }

    #[test]
    fn quoted_values_are_truncated() {
        let value = "x".repeat(300);
        let message = error(&format!("match[version]={value}"));
        assert!(
            message.ends_with(&format!("got \"{}\"", "x".repeat(100))),
            "{message}"
        );
        let value = "é".repeat(150);
        let message = error(&format!("limit={value}"));
        assert!(
            message.ends_with(&format!("got \"{}\"", "é".repeat(100))),
            "{message}"
        );
    }

    #[test]
    fn caps() {
        let types = vec!["indicator"; MAX_MATCH_VALUES].join(",");
        assert_eq!(
            parse_query(&format!("match[type]={types}"))
                .unwrap()
                .types
                .len(),
            MAX_MATCH_VALUES
        );
        assert_eq!(
            error(&format!("match[type]={types}&match[type]=sighting")),
            "match[type]: more than the limit of 1000 values"
        );
        let versions = vec!["all"; MAX_MATCH_VALUES + 1].join(",");
        assert_eq!(
            error(&format!("match[version]={versions}")),
            "match[version]: more than the limit of 1000 values"
        );
        let long = format!("next={}", "a".repeat(MAX_QUERY_LENGTH));
        let err = parse_query(&long).unwrap_err();
        assert_eq!(err.parameter(), "query string");
        assert_eq!(
            err.to_string(),
            "query string: 16389 bytes, more than the limit of 16384 bytes"
        );
        let exact = format!("next={}", "a".repeat(MAX_QUERY_LENGTH - 5));
        assert!(parse_query(&exact).is_ok());
    }

    /// The parameter an error names appears at the start of its message.
    fn check(query: &str) {
        match parse_query(query) {
            Ok(filters) => {
                assert!(filters.limit.is_none_or(|limit| limit >= 1));
                assert!(filters.ids.len() <= MAX_MATCH_VALUES);
                assert!(filters.types.len() <= MAX_MATCH_VALUES);
                assert!(filters.spec_versions.len() <= MAX_MATCH_VALUES);
                assert!(filters.versions.at.len() <= MAX_MATCH_VALUES);
                assert!(filters.next.as_ref().is_none_or(|next| !next.is_empty()));
            }
            Err(error) => {
                let message = error.to_string();
                assert!(
                    message.starts_with(&format!("{}: ", error.parameter())),
                    "{message}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(query in ".{0,300}") {
            check(&query);
        }

        #[test]
        fn query_shaped_text_never_panics(
            query in "((added_after|limit|next|match(\\[|%5B)(id|type|version|spec_version)(\\]|%5D)|x)=[-a-z0-9%+,.:TZ]{0,40}&?){0,6}"
        ) {
            check(&query);
        }

        #[test]
        fn valid_limits_parse(limit in 1usize..=1_000_000_000) {
            prop_assert_eq!(parse_query(&format!("limit={limit}")).unwrap().limit, Some(limit));
        }
    }
}
