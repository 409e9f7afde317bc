//! The JSON resources of TAXII 2.1 (spec sections 4 and 5), with the property names of the
//! spec.
//!
//! Serializing leaves out absent optional properties. Deserializing is tolerant, because the
//! feed client reads these from other servers: unknown properties are ignored and a missing
//! optional list or `more` reads as empty or `false`. Timestamps are `String`s already
//! formatted (see [`crate::time`]).

use serde::{Deserialize, Serialize};

/// The server's discovery resource (`GET /taxii2/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// A human-readable name of the server.
    pub title: String,
    /// What the server is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Who to contact about the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// The URL of the default API root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The URLs of the API roots this server has.
    #[serde(default)]
    pub api_roots: Vec<String>,
}

/// An API root's information (`GET <api-root>/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiRoot {
    /// A human-readable name of the API root.
    pub title: String,
    /// What the API root is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The TAXII versions it supports, as media types (e.g. [`crate::TAXII_MEDIA_TYPE`]).
    pub versions: Vec<String>,
    /// The largest request body, in bytes, the API root accepts.
    pub max_content_length: u64,
}

/// One collection's information.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collection {
    /// The collection's identifier (a UUID), the path segment of its URLs.
    pub id: String,
    /// A human-readable name of the collection.
    pub title: String,
    /// What the collection holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A human-readable alternative to the id in URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Whether the requester may read objects from the collection.
    pub can_read: bool,
    /// Whether the requester may add objects to the collection.
    pub can_write: bool,
    /// The media types of the objects in the collection (e.g. [`crate::STIX_MEDIA_TYPE`]).
    #[serde(default)]
    pub media_types: Vec<String>,
}

/// The list of collections of an API root (`GET <api-root>/collections/`).
///
/// The spec lets a server leave `collections` out when there are none; this one always writes
/// it (an empty list is simpler for clients) and reads its absence as an empty list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collections {
    /// The collections the requester can see.
    #[serde(default)]
    pub collections: Vec<Collection>,
}

/// One object version in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    /// The STIX id of the object.
    pub id: String,
    /// When the server added this version to the collection.
    pub date_added: String,
    /// The version: the object's `modified` (or `created`) timestamp.
    pub version: String,
    /// The media type of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// A page of a collection's manifest (`GET .../manifest/`).
///
/// `objects` is left out when empty: the spec gives it one or more records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Whether more records match (fetch them with `next`).
    #[serde(default)]
    pub more: bool,
    /// The value of the `next` parameter that fetches the following page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The records of this page.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ManifestRecord>,
}

/// A page of an object's versions (`GET .../objects/{id}/versions/`).
///
/// `versions` is left out when empty: the spec gives it one or more versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// Whether more versions match (fetch them with `next`).
    #[serde(default)]
    pub more: bool,
    /// The value of the `next` parameter that fetches the following page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The versions of this page, as timestamps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
}

/// Whether the server has finished processing the objects a status is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusKind {
    /// Every object was processed (successfully or not).
    Complete,
    /// Some objects are still being processed.
    Pending,
}

/// The status of a request that added objects (the answer to `POST .../objects/` and
/// `GET <api-root>/status/{id}/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The identifier of this status resource.
    pub id: String,
    /// Whether processing has finished.
    pub status: StatusKind,
    /// When the server received the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timestamp: Option<String>,
    /// How many objects the request carried.
    pub total_count: u64,
    /// How many were added.
    pub success_count: u64,
    /// The objects that were added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub successes: Vec<StatusDetails>,
    /// How many were refused.
    pub failure_count: u64,
    /// The objects that were refused, each with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<StatusDetails>,
    /// How many are still being processed.
    pub pending_count: u64,
    /// The objects still being processed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pendings: Vec<StatusDetails>,
}

/// One object in a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetails {
    /// The STIX id of the object.
    pub id: String,
    /// The object's version (its `modified` or `created` timestamp).
    pub version: String,
    /// What happened to it, e.g. why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The body of an error answer (HTTP 4xx or 5xx).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// A short human-readable summary.
    pub title: String,
    /// What went wrong, in more detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// An identifier of this occurrence, for the server's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
    /// A server-specific code of the kind of error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The HTTP status code, as a string (e.g. `"404"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<String>,
    /// A URL with more about the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_details: Option<String>,
    /// Further server-specific details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use serde::de::DeserializeOwned;
    use serde_json::json;

    use super::*;

    /// Serializes `value`, checks the JSON is `expected` and that it reads back as `value`.
    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(
        value: &T,
        expected: serde_json::Value,
    ) {
        let text = serde_json::to_string(value).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json, expected);
        assert_eq!(&serde_json::from_str::<T>(&text).unwrap(), value);
    }

    #[test]
    fn discovery() {
        let full = Discovery {
            title: "Threat Bus".into(),
            description: Some("STIX 2.1 from the bus".into()),
            contact: Some("soc@example.com".into()),
            default: Some("https://bus.example.com/api1/".into()),
            api_roots: vec!["https://bus.example.com/api1/".into()],
        };
        round_trip(
            &full,
            json!({
                "title": "Threat Bus",
                "description": "STIX 2.1 from the bus",
                "contact": "soc@example.com",
                "default": "https://bus.example.com/api1/",
                "api_roots": ["https://bus.example.com/api1/"],
            }),
        );
        let bare = Discovery {
            title: "t".into(),
            description: None,
            contact: None,
            default: None,
            api_roots: vec![],
        };
        round_trip(&bare, json!({"title": "t", "api_roots": []}));
        let read: Discovery = serde_json::from_str(r#"{"title":"t","x_other":1}"#).unwrap();
        assert_eq!(read, bare);
    }

    #[test]
    fn api_root() {
        let root = ApiRoot {
            title: "api1".into(),
            description: None,
            versions: vec![crate::TAXII_MEDIA_TYPE.into()],
            max_content_length: 10_485_760,
        };
        round_trip(
            &root,
            json!({
                "title": "api1",
                "versions": ["application/taxii+json;version=2.1"],
                "max_content_length": 10_485_760,
            }),
        );
        assert!(serde_json::from_str::<ApiRoot>(r#"{"title":"a","versions":[]}"#).is_err());
    }

    #[test]
    fn collections() {
        let collection = Collection {
            id: "91a7b528-80eb-42ed-a74d-c6fbd5a26116".into(),
            title: "Indicators".into(),
            description: Some("from the bus".into()),
            alias: Some("indicators".into()),
            can_read: true,
            can_write: false,
            media_types: vec![crate::STIX_MEDIA_TYPE.into()],
        };
        let list = Collections {
            collections: vec![collection],
        };
        round_trip(
            &list,
            json!({"collections": [{
                "id": "91a7b528-80eb-42ed-a74d-c6fbd5a26116",
                "title": "Indicators",
                "description": "from the bus",
                "alias": "indicators",
                "can_read": true,
                "can_write": false,
                "media_types": ["application/stix+json;version=2.1"],
            }]}),
        );
        round_trip(&Collections::default(), json!({"collections": []}));
        assert_eq!(
            serde_json::from_str::<Collections>("{}").unwrap(),
            Collections::default()
        );
    }

    #[test]
    fn manifest() {
        let manifest = Manifest {
            more: true,
            next: Some("abc".into()),
            objects: vec![ManifestRecord {
                id: "indicator--29aba82c-5393-42a8-9edb-6a2cb1df070b".into(),
                date_added: "2026-12-06T14:00:00.123456Z".into(),
                version: "2026-12-06T13:59:59.000Z".into(),
                media_type: Some(crate::STIX_MEDIA_TYPE.into()),
            }],
        };
        round_trip(
            &manifest,
            json!({
                "more": true,
                "next": "abc",
                "objects": [{
                    "id": "indicator--29aba82c-5393-42a8-9edb-6a2cb1df070b",
                    "date_added": "2026-12-06T14:00:00.123456Z",
                    "version": "2026-12-06T13:59:59.000Z",
                    "media_type": "application/stix+json;version=2.1",
                }],
            }),
        );
        round_trip(&Manifest::default(), json!({"more": false}));
        assert_eq!(
            serde_json::from_str::<Manifest>("{}").unwrap(),
            Manifest::default()
        );
    }

    #[test]
    fn versions() {
        let versions = Versions {
            more: false,
            next: None,
            versions: vec!["2026-12-06T13:59:59.000Z".into()],
        };
        round_trip(
            &versions,
            json!({"more": false, "versions": ["2026-12-06T13:59:59.000Z"]}),
        );
        round_trip(&Versions::default(), json!({"more": false}));
    }

    #[test]
    fn status() {
        let detail = |id: &str, message: Option<&str>| StatusDetails {
            id: id.into(),
            version: "2026-12-06T13:59:59.000Z".into(),
            message: message.map(Into::into),
        };
        let status = Status {
            id: "2d086da7-4bdc-4f91-900e-d77486753710".into(),
            status: StatusKind::Complete,
            request_timestamp: Some("2026-12-06T14:00:00.123456Z".into()),
            total_count: 2,
            success_count: 1,
            successes: vec![detail(
                "indicator--29aba82c-5393-42a8-9edb-6a2cb1df070b",
                None,
            )],
            failure_count: 1,
            failures: vec![detail(
                "indicator--9a5d1e4c-53c3-4d5b-9f4e-5b6b5a1c2d3e",
                Some("property `pattern`: invalid STIX pattern"),
            )],
            pending_count: 0,
            pendings: vec![],
        };
        round_trip(
            &status,
            json!({
                "id": "2d086da7-4bdc-4f91-900e-d77486753710",
                "status": "complete",
                "request_timestamp": "2026-12-06T14:00:00.123456Z",
                "total_count": 2,
                "success_count": 1,
                "successes": [{
                    "id": "indicator--29aba82c-5393-42a8-9edb-6a2cb1df070b",
                    "version": "2026-12-06T13:59:59.000Z",
                }],
                "failure_count": 1,
                "failures": [{
                    "id": "indicator--9a5d1e4c-53c3-4d5b-9f4e-5b6b5a1c2d3e",
                    "version": "2026-12-06T13:59:59.000Z",
                    "message": "property `pattern`: invalid STIX pattern",
                }],
                "pending_count": 0,
            }),
        );
        let pending = Status {
            id: "x".into(),
            status: StatusKind::Pending,
            request_timestamp: None,
            total_count: 1,
            success_count: 0,
            successes: vec![],
            failure_count: 0,
            failures: vec![],
            pending_count: 1,
            pendings: vec![detail(
                "indicator--29aba82c-5393-42a8-9edb-6a2cb1df070b",
                None,
            )],
        };
        let json = serde_json::to_value(&pending).unwrap();
        assert_eq!(json["status"], "pending");
        assert!(json.get("successes").is_none());
        assert!(
            serde_json::from_str::<Status>(
                r#"{"id":"x","status":"done","total_count":0,"success_count":0,"failure_count":0,"pending_count":0}"#
            )
            .is_err()
        );
    }

    #[test]
    fn error_message() {
        let mut details = serde_json::Map::new();
        details.insert("parameter".into(), json!("limit"));
        let error = ErrorMessage {
            title: "Bad query".into(),
            description: Some("limit: expected a positive whole number, got \"0\"".into()),
            error_id: Some("e1".into()),
            error_code: Some("query".into()),
            http_status: Some("400".into()),
            external_details: Some("https://example.com/errors/query".into()),
            details: Some(details),
        };
        round_trip(
            &error,
            json!({
                "title": "Bad query",
                "description": "limit: expected a positive whole number, got \"0\"",
                "error_id": "e1",
                "error_code": "query",
                "http_status": "400",
                "external_details": "https://example.com/errors/query",
                "details": {"parameter": "limit"},
            }),
        );
        let bare = ErrorMessage {
            title: "Not Found".into(),
            description: None,
            error_id: None,
            error_code: None,
            http_status: None,
            external_details: None,
            details: None,
        };
        round_trip(&bare, json!({"title": "Not Found"}));
    }
}
