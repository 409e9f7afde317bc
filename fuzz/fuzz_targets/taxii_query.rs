//! Feeds arbitrary text (bytes read as lossy UTF-8) to the TAXII query-string parser
//! (`threatbus_taxii::parse_query`): nothing may panic; accepted filters keep `limit` at 1 or
//! more, `next` non-empty and at most 1,000 values per `match[...]` parameter; a refusal's
//! message starts with the parameter it names, and quotes at most 100 characters of the value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use threatbus_taxii::query::{MAX_MATCH_VALUES, MAX_QUERY_LENGTH, QueryError};

fuzz_target!(|bytes: &[u8]| {
    let query = String::from_utf8_lossy(bytes);
    match threatbus_taxii::parse_query(&query) {
        Ok(filters) => {
            assert!(query.len() <= MAX_QUERY_LENGTH);
            assert!(filters.limit.is_none_or(|limit| limit >= 1));
            assert!(filters.next.as_ref().is_none_or(|next| !next.is_empty()));
            assert!(filters.ids.len() <= MAX_MATCH_VALUES);
            assert!(filters.types.len() <= MAX_MATCH_VALUES);
            assert!(filters.spec_versions.len() <= MAX_MATCH_VALUES);
            assert!(filters.versions.at.len() <= MAX_MATCH_VALUES);
            assert!(
                filters
                    .ignored
                    .iter()
                    .all(|name| name.chars().count() <= 100)
            );
        }
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("{}: ", error.parameter())),
                "{message}"
            );
            match &error {
                QueryError::TooLong { limit, .. } => {
                    assert!(query.len() > MAX_QUERY_LENGTH);
                    assert!(message.contains(&limit.to_string()));
                }
                QueryError::Invalid { value, .. } | QueryError::Repeated { value, .. } => {
                    assert!(value.chars().count() <= 100);
                }
                QueryError::Encoding { parameter, value } => {
                    assert!(parameter.chars().count() <= 100 && value.chars().count() <= 100);
                }
                QueryError::TooManyValues { limit, .. } => assert_eq!(*limit, MAX_MATCH_VALUES),
            }
        }
    }
});
