//! A STIX Indicator → the indicator CIF is sent (spec `upstream.md` §7.2).
//!
//! Only new point IoCs on nine object paths are for CIF: an indicator with any
//! `x_threatbus_update` is skipped (CIF only adds), so is a pattern that is not one comparison
//! of one path with one string, and a path outside the table below. The value must have the
//! CIF type its path stands for ([`crate::itype`]); `file:hashes.SSDEEP` is on upstream's list
//! but CIF has no type for it, so it is skipped as the CIF SDK drops it.
//!
//! The body is the JSON the CIF SDK (cifsdk 3.0.8 with csirtg_indicator 1.0.13) sends, its
//! keys in the SDK's order: `indicator`, `itype`, `tlp`, `group`, `count`, `tags` (left out
//! when empty), `confidence`, `uuid` (random), `lasttime` (the indicator's `created`, with six
//! fractional digits), compressed in the zlib format (HTTP `Content-Encoding: deflate`).

use std::io::Write;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::ZlibEncoder;
use serde::{Serialize, Serializer};
use threatbus_stix::{Indicator, Timestamp, pattern};

use crate::config::Cif3Config;
use crate::itype::{self, Itype};

/// What CIF makes of an object path's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRule {
    /// Values must be of this CIF type.
    Takes(Itype),
    /// On upstream's list, but CIF has no type for its values.
    NoCifType,
}

/// The object paths upstream sent to CIF (normalised text, see
/// `threatbus_stix::pattern::point_ioc`), and the type their values must have.
pub fn path_rule(path: &str) -> Option<PathRule> {
    Some(match path {
        "ipv4-addr:value" => PathRule::Takes(Itype::Ipv4),
        "ipv6-addr:value" => PathRule::Takes(Itype::Ipv6),
        "domain-name:value" => PathRule::Takes(Itype::Fqdn),
        "email-addr:value" => PathRule::Takes(Itype::Email),
        "url:value" => PathRule::Takes(Itype::Url),
        "file:hashes.MD5" => PathRule::Takes(Itype::Md5),
        "file:hashes.'SHA-1'" => PathRule::Takes(Itype::Sha1),
        "file:hashes.'SHA-256'" => PathRule::Takes(Itype::Sha256),
        "file:hashes.SSDEEP" => PathRule::NoCifType,
        _ => return None,
    })
}

/// Why an indicator is not sent to CIF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// It carries `x_threatbus_update` (any value): CIF only adds indicators.
    #[error("it carries x_threatbus_update (CIF only adds indicators)")]
    Update,
    /// Not a STIX pattern comparing one object path with one string.
    #[error("its pattern is not a STIX comparison of one object path with one string")]
    NotPointIoc,
    /// The object path is not one CIF takes.
    #[error("CIF does not take the object path {0}")]
    UnsupportedPath(String),
    /// The path is on upstream's list, but CIF has no type for its values (SSDEEP).
    #[error("CIF has no indicator type for {0} values")]
    NoCifType(String),
    /// The value is not of the type its path stands for.
    #[error("{path} value {value:?} is not what CIF takes as {expected} ({})", reading(.found))]
    ValueDoesNotFit {
        path: String,
        value: String,
        expected: Itype,
        found: Option<Itype>,
    },
}

fn reading(found: &Option<Itype>) -> String {
    match found {
        Some(itype) => format!("CIF would read it as {itype}"),
        None => "CIF has no type for it".into(),
    }
}

/// [`Skip`] without its details, to count by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    Update,
    NotPointIoc,
    UnsupportedPath,
    NoCifType,
    ValueDoesNotFit,
}

impl SkipReason {
    /// Every reason, in the order of [`SkipReason::index`].
    pub const ALL: [SkipReason; 5] = [
        Self::Update,
        Self::NotPointIoc,
        Self::UnsupportedPath,
        Self::NoCifType,
        Self::ValueDoesNotFit,
    ];

    /// Position in [`SkipReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl Skip {
    pub fn reason(&self) -> SkipReason {
        match self {
            Self::Update => SkipReason::Update,
            Self::NotPointIoc => SkipReason::NotPointIoc,
            Self::UnsupportedPath(_) => SkipReason::UnsupportedPath,
            Self::NoCifType(_) => SkipReason::NoCifType,
            Self::ValueDoesNotFit { .. } => SkipReason::ValueDoesNotFit,
        }
    }
}

/// The settings every indicator sent carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// Lower case, as the SDK sends it.
    pub tlp: String,
    /// Lower case, as the SDK sends it.
    pub group: String,
    /// As configured (the SDK keeps the case of listed tags).
    pub tags: Vec<String>,
    /// 0 already read as 5.
    pub confidence: f64,
}

impl Defaults {
    pub fn from_config(config: &Cif3Config) -> Self {
        Self {
            tlp: config.tlp.trim().to_lowercase(),
            group: config.group.trim().to_lowercase(),
            tags: config.tags.clone(),
            confidence: config.effective_confidence(),
        }
    }
}

/// An indicator as CIF is sent it; serialises to the SDK's JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CifIndicator<'a> {
    pub indicator: String,
    #[serde(serialize_with = "itype_name")]
    pub itype: Itype,
    pub tlp: &'a str,
    pub group: &'a str,
    pub count: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub tags: &'a [String],
    pub confidence: f64,
    pub uuid: String,
    pub lasttime: String,
}

fn itype_name<S: Serializer>(itype: &Itype, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(itype.as_str())
}

/// The CIF indicator for `indicator`, or why there is none.
pub fn to_cif<'a>(indicator: &Indicator, defaults: &'a Defaults) -> Result<CifIndicator<'a>, Skip> {
    if indicator.extra.get("x_threatbus_update").is_some() {
        return Err(Skip::Update);
    }
    if indicator.pattern_type != "stix" {
        return Err(Skip::NotPointIoc);
    }
    let ioc = pattern::point_ioc(&indicator.pattern).ok_or(Skip::NotPointIoc)?;
    let path = ioc.path.to_string();
    let expected = match path_rule(&path) {
        Some(PathRule::Takes(itype)) => itype,
        Some(PathRule::NoCifType) => return Err(Skip::NoCifType(path)),
        None => return Err(Skip::UnsupportedPath(path)),
    };
    let value = ioc.value.as_str().ok_or(Skip::NotPointIoc)?;
    let found = itype::detect(value);
    if found != Some(expected) {
        return Err(Skip::ValueDoesNotFit {
            path,
            value: value.to_owned(),
            expected,
            found,
        });
    }
    Ok(CifIndicator {
        indicator: itype::normalize(value, expected),
        itype: expected,
        tlp: &defaults.tlp,
        group: &defaults.group,
        count: 1,
        tags: &defaults.tags,
        confidence: defaults.confidence,
        uuid: uuid::Uuid::new_v4().to_string(),
        lasttime: lasttime(&indicator.created),
    })
}

/// `created` as the SDK writes times: `YYYY-MM-DDTHH:MM:SS.ffffffZ`, UTC, six fractional
/// digits (finer precision is cut off; Python's datetime holds microseconds).
pub fn lasttime(created: &Timestamp) -> String {
    let text = created.to_stix_string(9);
    match text.split_once('.') {
        Some((seconds, fraction)) => match fraction.get(..6) {
            Some(micros) => format!("{seconds}.{micros}Z"),
            None => text.clone(),
        },
        None => text,
    }
}

/// The request body for `indicator`: its JSON, zlib-compressed.
pub fn request_body(indicator: &CifIndicator<'_>) -> std::io::Result<Bytes> {
    let json = serde_json::to_vec(indicator)?;
    deflate(&json).map(Bytes::from)
}

/// Compresses `data` in the zlib format, what HTTP calls `deflate` and what Python's
/// `zlib.compress` writes.
pub fn deflate(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = ZlibEncoder::new(
        Vec::with_capacity(data.len() / 2 + 16),
        Compression::default(),
    );
    encoder.write_all(data)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use serde_json::{Value, json};
    use std::io::Read;
    use threatbus_stix::StixObject;

    fn defaults() -> Defaults {
        Defaults {
            tlp: "amber".into(),
            group: "everyone".into(),
            tags: vec!["Malware".into(), "threatbus".into()],
            confidence: 7.5,
        }
    }

    fn indicator(pattern: &str, extra: Value) -> Indicator {
        let mut object = json!({
            "type": "indicator", "spec_version": "2.1",
            "id": "indicator--46b3f973-5c03-41fc-9efe-49598a267a35",
            "created": "2021-03-01T11:53:55.123456789Z",
            "modified": "2021-03-01T11:53:55.123Z",
            "pattern": pattern, "pattern_type": "stix", "valid_from": "2021-03-01T11:53:55Z"
        });
        if let (Value::Object(object), Value::Object(extra)) = (&mut object, extra) {
            object.extend(extra);
        }
        match StixObject::from_value(object) {
            Ok(StixObject::Indicator(indicator)) => indicator,
            other => panic!("{other:?}"),
        }
    }

    fn sent(pattern: &str) -> Result<(String, Itype), Skip> {
        let defaults = defaults();
        to_cif(&indicator(pattern, json!({})), &defaults).map(|c| (c.indicator, c.itype))
    }

    #[test]
    fn every_supported_path_maps_to_its_type() {
        let md5 = "D41D8CD98F00B204E9800998ECF8427E";
        let sha1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
        let sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let cases = [
            ("[ipv4-addr:value = '010.0.0.1']", "10.0.0.1", Itype::Ipv4),
            (
                "[ipv4-addr:value = '10.0.0.0/8']",
                "10.0.0.0/8",
                Itype::Ipv4,
            ),
            (
                "[ipv6-addr:value = '2001:DB8::1']",
                "2001:db8::1",
                Itype::Ipv6,
            ),
            (
                "[domain-name:value = 'Evil.Example.COM']",
                "evil.example.com",
                Itype::Fqdn,
            ),
            (
                "[email-addr:value = 'Bad@Example.org']",
                "bad@example.org",
                Itype::Email,
            ),
            (
                "[url:value = 'HTTPS://Evil.example.com/Login/']",
                "https://Evil.example.com/Login",
                Itype::Url,
            ),
            (
                &*format!("[file:hashes.MD5 = '{md5}']"),
                &*md5.to_lowercase(),
                Itype::Md5,
            ),
            (
                &*format!("[file:hashes.md5 = '{md5}']"),
                &*md5.to_lowercase(),
                Itype::Md5,
            ),
            (
                &*format!("[file:hashes.'SHA-1' = '{sha1}']"),
                sha1,
                Itype::Sha1,
            ),
            (
                &*format!("[file:hashes.sha1 = '{sha1}']"),
                sha1,
                Itype::Sha1,
            ),
            (
                &*format!("[file:hashes.'SHA-256' = '{sha256}']"),
                sha256,
                Itype::Sha256,
            ),
            (
                "([url:value = 'http://evil.com/it\\'s'])",
                "http://evil.com/it's",
                Itype::Url,
            ),
        ];
        for (pattern, value, itype) in cases {
            assert_eq!(sent(pattern), Ok((value.to_owned(), itype)), "{pattern}");
        }
    }

    #[test]
    fn what_cif_does_not_get() {
        let ssdeep = "3:AXGBicFlgVNhBGcL6wCrFQEv:AXGHsNhxLsr2C";
        let cases = [
            (
                "[mac-addr:value = 'de:ad:be:ef:00:01']".to_owned(),
                Skip::UnsupportedPath("mac-addr:value".into()),
            ),
            (
                "[file:name = 'evil.exe']".into(),
                Skip::UnsupportedPath("file:name".into()),
            ),
            (
                format!("[file:hashes.'SHA-512' = '{}']", "ab".repeat(64)),
                Skip::UnsupportedPath("file:hashes.'SHA-512'".into()),
            ),
            (
                format!("[file:hashes.SSDEEP = '{ssdeep}']"),
                Skip::NoCifType("file:hashes.SSDEEP".into()),
            ),
            (
                "[ipv4-addr:value = '1.2.3.4' OR ipv4-addr:value = '5.6.7.8']".into(),
                Skip::NotPointIoc,
            ),
            (
                "[ipv4-addr:value = '1.2.3.4'] AND [domain-name:value = 'evil.com']".into(),
                Skip::NotPointIoc,
            ),
            ("[ipv4-addr:value != '1.2.3.4']".into(), Skip::NotPointIoc),
            (
                "[ipv4-addr:value = '1.2.3.4'] WITHIN 5 SECONDS".into(),
                Skip::NotPointIoc,
            ),
            (
                "[autonomous-system:number = 1234]".into(),
                Skip::UnsupportedPath("autonomous-system:number".into()),
            ),
            ("[ipv4-addr:value = 1234]".into(), Skip::NotPointIoc),
            (
                "[domain-name:value = '1.2.3.4']".into(),
                Skip::ValueDoesNotFit {
                    path: "domain-name:value".into(),
                    value: "1.2.3.4".into(),
                    expected: Itype::Fqdn,
                    found: Some(Itype::Ipv4),
                },
            ),
            (
                "[domain-name:value = 'localhost']".into(),
                Skip::ValueDoesNotFit {
                    path: "domain-name:value".into(),
                    value: "localhost".into(),
                    expected: Itype::Fqdn,
                    found: None,
                },
            ),
            (
                "[ipv4-addr:value = '1.2.3.999']".into(),
                Skip::ValueDoesNotFit {
                    path: "ipv4-addr:value".into(),
                    value: "1.2.3.999".into(),
                    expected: Itype::Ipv4,
                    found: Some(Itype::Fqdn),
                },
            ),
            (
                "[url:value = 'evil.com/login']".into(),
                Skip::ValueDoesNotFit {
                    path: "url:value".into(),
                    value: "evil.com/login".into(),
                    expected: Itype::Url,
                    found: None,
                },
            ),
        ];
        for (pattern, skip) in cases {
            assert_eq!(sent(&pattern), Err(skip), "{pattern}");
        }
        let defaults = defaults();
        for update in ["REMOVE", "EDIT", "anything"] {
            let removal = indicator(
                "[domain-name:value = 'evil.com']",
                json!({"x_threatbus_update": update}),
            );
            assert_eq!(to_cif(&removal, &defaults), Err(Skip::Update), "{update}");
        }
        let mut sigma = indicator("[domain-name:value = 'evil.com']", json!({}));
        sigma.pattern_type = "sigma".into();
        assert_eq!(to_cif(&sigma, &defaults), Err(Skip::NotPointIoc));
        let mismatch = Skip::ValueDoesNotFit {
            path: "domain-name:value".into(),
            value: "1.2.3.4".into(),
            expected: Itype::Fqdn,
            found: Some(Itype::Ipv4),
        };
        assert_eq!(
            mismatch.to_string(),
            "domain-name:value value \"1.2.3.4\" is not what CIF takes as fqdn (CIF would read it as ipv4)"
        );
    }

    #[test]
    fn body_is_the_sdks_json_in_its_order() {
        let defaults = defaults();
        let cif = to_cif(
            &indicator("[domain-name:value = 'Evil.com']", json!({})),
            &defaults,
        )
        .unwrap();
        let uuid = cif.uuid.clone();
        assert!(
            uuid::Uuid::parse_str(&uuid).is_ok_and(|u| u.get_version_num() == 4),
            "{uuid}"
        );
        let expected = format!(
            r#"{{"indicator":"evil.com","itype":"fqdn","tlp":"amber","group":"everyone","count":1,"tags":["Malware","threatbus"],"confidence":7.5,"uuid":"{uuid}","lasttime":"2021-03-01T11:53:55.123456Z"}}"#
        );
        assert_eq!(serde_json::to_string(&cif).unwrap(), expected);

        let plain = Defaults {
            tags: Vec::new(),
            confidence: 5.0,
            ..defaults
        };
        let cif = to_cif(
            &indicator("[ipv4-addr:value = '6.6.6.6']", json!({})),
            &plain,
        )
        .unwrap();
        let text = serde_json::to_string(&cif).unwrap();
        assert!(!text.contains("tags"), "{text}");
        assert!(
            text.contains(r#""count":1,"confidence":5.0,"uuid""#),
            "{text}"
        );
        // Every indicator gets its own uuid, as with the SDK.
        let again = to_cif(
            &indicator("[ipv4-addr:value = '6.6.6.6']", json!({})),
            &plain,
        )
        .unwrap();
        assert_ne!(again.uuid, cif.uuid);
    }

    #[test]
    fn lasttime_has_six_fractional_digits_in_utc() {
        for (created, expected) in [
            ("2020-06-23T12:34:56Z", "2020-06-23T12:34:56.000000Z"),
            ("2020-06-23T12:34:56.1Z", "2020-06-23T12:34:56.100000Z"),
            ("2020-06-23T12:34:56.123Z", "2020-06-23T12:34:56.123000Z"),
            ("2020-06-23T12:34:56.123456Z", "2020-06-23T12:34:56.123456Z"),
            (
                "2020-06-23T12:34:56.999999999Z",
                "2020-06-23T12:34:56.999999Z",
            ),
            ("1969-12-31T23:59:59.5Z", "1969-12-31T23:59:59.500000Z"),
        ] {
            let timestamp = Timestamp::parse(created).unwrap();
            assert_eq!(lasttime(&timestamp), expected, "{created}");
        }
    }

    #[test]
    fn the_body_is_zlib_compressed_json() {
        let defaults = defaults();
        let cif = to_cif(
            &indicator("[url:value = 'http://evil.com/a?b=c']", json!({})),
            &defaults,
        )
        .unwrap();
        let body = request_body(&cif).unwrap();
        // The zlib header (CMF 0x78), as Python's zlib.compress writes it.
        assert_eq!(body[0], 0x78);
        assert_eq!((u16::from(body[0]) << 8 | u16::from(body[1])) % 31, 0);
        let mut json = String::new();
        ZlibDecoder::new(&body[..])
            .read_to_string(&mut json)
            .unwrap();
        assert_eq!(json, serde_json::to_string(&cif).unwrap());
        let value: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["indicator"], "http://evil.com/a?b=c");
        assert_eq!(value["itype"], "url");

        let big = "threat intel ".repeat(1000);
        let packed = deflate(big.as_bytes()).unwrap();
        assert!(packed.len() < big.len() / 10);
        let mut unpacked = Vec::new();
        ZlibDecoder::new(&packed[..])
            .read_to_end(&mut unpacked)
            .unwrap();
        assert_eq!(unpacked, big.as_bytes());
    }
}
