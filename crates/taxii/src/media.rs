//! TAXII 2.1 media types and the two header checks every endpoint makes: does the client's
//! `Accept` header allow a TAXII 2.1 answer, and is a request body's `Content-Type` TAXII 2.1.
//!
//! Type, subtype and parameter names compare case-insensitively; spaces are allowed around
//! every separator; a parameter value may be quoted.

/// The media type of every TAXII 2.1 resource, envelopes included.
pub const TAXII_MEDIA_TYPE: &str = "application/taxii+json;version=2.1";

/// The media type of STIX 2.1 content, as a collection advertises it in `media_types`.
pub const STIX_MEDIA_TYPE: &str = "application/stix+json;version=2.1";

/// One media type or media range split into its parts (type and subtype lower-cased, parameter
/// names lower-cased, values unquoted).
struct MediaType<'a> {
    essence: String,
    params: Vec<(String, &'a str)>,
}

impl<'a> MediaType<'a> {
    /// Splits `text` (`type/subtype; name=value; ...`). Parameters without `=` are skipped.
    fn parse(text: &'a str) -> Self {
        let mut parts = text.split(';');
        let essence = parts
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .split('/')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("/");
        let params = parts
            .filter_map(|param| {
                let (name, value) = param.split_once('=')?;
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                Some((name.trim().to_ascii_lowercase(), value.trim()))
            })
            .collect();
        Self { essence, params }
    }

    fn param(&self, name: &str) -> Option<&'a str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| *value)
    }

    /// `application/taxii+json` with no `version` parameter or with `version=2.1`.
    fn is_taxii_21(&self) -> bool {
        self.essence == "application/taxii+json" && self.param("version").is_none_or(|v| v == "2.1")
    }

    /// A media range with `q=0` (the client refuses it). A malformed `q` counts as accepting.
    fn refused(&self) -> bool {
        self.param("q")
            .and_then(|q| q.parse::<f64>().ok())
            .is_some_and(|q| q == 0.0)
    }
}

/// Whether an `Accept` header allows a TAXII 2.1 answer: true when the header is absent or has
/// no media range, or when any range not refused with `q=0` is `*/*`, `application/*`,
/// `application/taxii+json` without a version or `application/taxii+json` with `version=2.1`.
pub fn accepts_taxii(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return true;
    };
    let mut any_range = false;
    for range in accept.split(',') {
        if range.trim().is_empty() {
            continue;
        }
        any_range = true;
        let range = MediaType::parse(range);
        if range.refused() {
            continue;
        }
        if range.essence == "*/*" || range.essence == "application/*" || range.is_taxii_21() {
            return true;
        }
    }
    !any_range
}

/// Whether a request's `Content-Type` is TAXII 2.1: `application/taxii+json` with no version or
/// `version=2.1`; other parameters (such as `charset`) are ignored. An absent header is not.
pub fn is_taxii_content_type(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|value| MediaType::parse(value).is_taxii_21())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_absent_or_empty_allows_taxii() {
        assert!(accepts_taxii(None));
        assert!(accepts_taxii(Some("")));
        assert!(accepts_taxii(Some("  ")));
        assert!(accepts_taxii(Some(" , ")));
    }

    #[test]
    fn accept_matching_ranges() {
        for accept in [
            "application/taxii+json;version=2.1",
            "application/taxii+json",
            "Application/TAXII+JSON; Version=2.1",
            "application/taxii+json; version=\"2.1\"",
            "application/taxii+json ; version = 2.1 ; q=0.5",
            "*/*",
            "application/*",
            "text/html, */*;q=0.1",
            "application/json, application/taxii+json;version=2.1;q=0.9",
            "application/taxii+json;version=2.0, application/taxii+json;version=2.1",
            "application / taxii+json",
            "application/taxii+json;q=oops",
        ] {
            assert!(accepts_taxii(Some(accept)), "{accept:?} refused");
        }
    }

    #[test]
    fn accept_refusing_ranges() {
        for accept in [
            "application/taxii+json;version=2.0",
            "application/json",
            "text/html",
            "application/stix+json;version=2.1",
            "*/*;q=0",
            "application/taxii+json;version=2.1;q=0.0",
            "text/html, application/*;q=0",
            "application/taxii+json;version=\"2.0\"",
            "application/taxii+json;version=",
            "application",
        ] {
            assert!(!accepts_taxii(Some(accept)), "{accept:?} accepted");
        }
    }

    #[test]
    fn content_type() {
        assert!(is_taxii_content_type(Some(TAXII_MEDIA_TYPE)));
        assert!(is_taxii_content_type(Some("application/taxii+json")));
        assert!(is_taxii_content_type(Some(
            "application/taxii+json; charset=utf-8; version=\"2.1\""
        )));
        assert!(is_taxii_content_type(Some(
            "APPLICATION/Taxii+Json;VERSION=2.1"
        )));
        assert!(!is_taxii_content_type(None));
        assert!(!is_taxii_content_type(Some("")));
        assert!(!is_taxii_content_type(Some(
            "application/taxii+json;version=2.0"
        )));
        assert!(!is_taxii_content_type(Some("application/json")));
        assert!(!is_taxii_content_type(Some(STIX_MEDIA_TYPE)));
        assert!(!is_taxii_content_type(Some("*/*")));
    }
}
