//! Test objects both engines' tests store.

#![allow(dead_code)]

use serde_json::json;
use threatbus_core::Message;
use threatbus_store::Record;

/// "Now" for the snapshot queries of these tests.
pub const NOW: &str = "2030-01-10T00:00:00.000Z";

/// Nanoseconds since the epoch of a STIX timestamp.
pub fn ns(text: &str) -> i64 {
    i64::try_from(
        threatbus_core::stix::Timestamp::parse(text)
            .unwrap()
            .as_nanosecond(),
    )
    .unwrap()
}

/// Indicator number `n`, version `modified`, with `extra` properties.
pub fn indicator(n: u32, modified: &str, extra: serde_json::Value) -> Record {
    let mut object = json!({
        "type": "indicator", "spec_version": "2.1",
        "id": format!("indicator--00000000-0000-4000-8000-{n:012}"),
        "created": "2030-01-01T00:00:00.000Z", "modified": modified,
        "pattern": format!("[ipv4-addr:value = '10.0.0.{n}']"), "pattern_type": "stix",
        "valid_from": "2030-01-01T00:00:00Z"
    });
    if let (Some(object), Some(extra)) = (object.as_object_mut(), extra.as_object()) {
        object.extend(extra.clone());
    }
    Record::from_message(&Message::from_stix_json(object.to_string().as_bytes()).unwrap()).unwrap()
}

/// Indicators 2 to 4, none of which a snapshot at [`NOW`] answers with: #2 withdrawn by
/// `x_threatbus_update: REMOVE`, #3 by `revoked`, #4 expired (`valid_until` before `NOW`).
pub fn not_live() -> Vec<Record> {
    vec![
        indicator(
            2,
            "2030-01-06T00:00:00.000Z",
            json!({"x_threatbus_update": "REMOVE"}),
        ),
        indicator(3, "2030-01-06T00:00:00.000Z", json!({"revoked": true})),
        indicator(
            4,
            "2030-01-06T00:00:00.000Z",
            json!({"valid_until": "2030-01-09T00:00:00Z"}),
        ),
    ]
}

/// Sighting number `n`, created at `created`.
pub fn sighting(n: u32, created: &str) -> Record {
    let object = json!({
        "type": "sighting", "spec_version": "2.1",
        "id": format!("sighting--00000000-0000-4000-8000-{n:012}"),
        "created": created, "modified": created,
        "sighting_of_ref": "indicator--00000000-0000-4000-8000-000000000001"
    });
    Record::from_message(&Message::from_stix_json(object.to_string().as_bytes()).unwrap()).unwrap()
}

/// One listed version as `id-suffix@modified` (e.g. `001@2030-01-05`), for short assertions.
fn short(listed: &threatbus_store::Listed) -> String {
    let day = jiff::Timestamp::from_nanosecond(i128::from(listed.modified))
        .unwrap()
        .strftime("%Y-%m-%d")
        .to_string();
    format!("{}@{day}", &listed.id[listed.id.len() - 3..])
}

/// Lists every version `select` picks, a page of `limit` at a time, following the cursor as
/// the TAXII server does; checks that `added` strictly increases and the JSON is the object.
pub fn list_all(
    store: &mut dyn threatbus_store::Engine,
    kind: threatbus_store::Kind,
    ids: &[String],
    select: &threatbus_store::VersionSelect,
    limit: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = i64::MIN;
    loop {
        let page = store
            .list(&threatbus_store::Listing {
                kind,
                added_after: after,
                ids,
                versions: select,
                limit,
                with_json: true,
            })
            .unwrap();
        for listed in &page {
            assert!(listed.added > after, "added must grow: {listed:?}");
            after = listed.added;
            let value: serde_json::Value =
                serde_json::from_slice(listed.json.as_ref().unwrap()).unwrap();
            assert_eq!(value["id"], listed.id.as_str());
            out.push(short(listed));
        }
        if page.len() < limit {
            return out;
        }
    }
}

/// What the TAXII server pages through, on any engine: versions in the order they were added,
/// `last`/`first`/`all`/timestamp selections, id filters, manifests without the JSON, and a
/// cursor that stays right while versions keep arriving.
pub fn listing_scenario(store: &mut dyn threatbus_store::Engine) {
    use threatbus_store::{Kind, Listing, VersionSelect};
    let before = threatbus_store::listing::now_micros();
    store
        .write(&[
            indicator(1, "2030-01-02T00:00:00.000Z", json!({})),
            indicator(2, "2030-01-02T00:00:00.000Z", json!({})),
            indicator(1, "2030-01-03T00:00:00.000Z", json!({})),
            sighting(1, "2030-01-02T00:00:00.000Z"),
        ])
        .unwrap();
    // A later batch: a new version of #2, and an old version of #1 arriving late.
    store
        .write(&[
            indicator(2, "2030-01-04T00:00:00.000Z", json!({})),
            indicator(1, "2030-01-01T00:00:00.000Z", json!({})),
        ])
        .unwrap();
    let none: &[String] = &[];
    let all = list_all(store, Kind::Indicator, none, &VersionSelect::all(), 2);
    assert_eq!(
        all,
        [
            "001@2030-01-02",
            "002@2030-01-02",
            "001@2030-01-03",
            "002@2030-01-04",
            "001@2030-01-01"
        ]
    );
    let last = list_all(store, Kind::Indicator, none, &VersionSelect::last(), 1);
    assert_eq!(last, ["001@2030-01-03", "002@2030-01-04"]);
    let first = VersionSelect {
        first: true,
        ..VersionSelect::default()
    };
    assert_eq!(
        list_all(store, Kind::Indicator, none, &first, 10),
        ["002@2030-01-02", "001@2030-01-01"]
    );
    let at = VersionSelect {
        at: vec![ns("2030-01-02T00:00:00.000Z")],
        ..VersionSelect::last()
    };
    assert_eq!(
        list_all(store, Kind::Indicator, none, &at, 10),
        [
            "001@2030-01-02",
            "002@2030-01-02",
            "001@2030-01-03",
            "002@2030-01-04"
        ]
    );
    assert!(list_all(store, Kind::Indicator, none, &VersionSelect::default(), 10).is_empty());
    let one = ["indicator--00000000-0000-4000-8000-000000000002".to_owned()];
    assert_eq!(
        list_all(store, Kind::Indicator, &one, &VersionSelect::all(), 1),
        ["002@2030-01-02", "002@2030-01-04"]
    );
    assert_eq!(
        list_all(store, Kind::Sighting, none, &VersionSelect::last(), 10),
        ["001@2030-01-02"]
    );
    // A manifest reads no objects; `added` is server time, in microseconds.
    let manifest = store
        .list(&Listing {
            kind: Kind::Indicator,
            added_after: i64::MIN,
            ids: none,
            versions: &VersionSelect::all(),
            limit: 100,
            with_json: false,
        })
        .unwrap();
    assert_eq!(manifest.len(), 5);
    assert!(manifest.iter().all(|listed| listed.json.is_none()));
    let after = threatbus_store::listing::now_micros();
    assert!(
        manifest
            .iter()
            .all(|listed| (before..=after).contains(&listed.added)),
        "{manifest:?} not within {before}..={after}"
    );
    // A cursor taken mid-way sees exactly what was added since, new versions included.
    let cursor = manifest[2].added;
    store
        .write(&[indicator(3, "2030-01-05T00:00:00.000Z", json!({}))])
        .unwrap();
    let since = store
        .list(&Listing {
            kind: Kind::Indicator,
            added_after: cursor,
            ids: none,
            versions: &VersionSelect::all(),
            limit: 100,
            with_json: false,
        })
        .unwrap();
    let since: Vec<String> = since.iter().map(short).collect();
    assert_eq!(
        since,
        ["002@2030-01-04", "001@2030-01-01", "003@2030-01-05"]
    );
}

/// Feed cursors: none at first, the saved one after, replaced by the next; per feed.
pub fn cursor_scenario(store: &mut dyn threatbus_store::Engine) {
    assert_eq!(store.feed_cursor("cert").unwrap(), None);
    store
        .set_feed_cursor("cert", "2030-01-01T00:00:00.000001Z")
        .unwrap();
    store.set_feed_cursor("isac", "a").unwrap();
    store
        .set_feed_cursor("cert", "2030-01-02T00:00:00.000002Z")
        .unwrap();
    assert_eq!(
        store.feed_cursor("cert").unwrap().as_deref(),
        Some("2030-01-02T00:00:00.000002Z")
    );
    assert_eq!(store.feed_cursor("isac").unwrap().as_deref(), Some("a"));
}

/// Versions read back by (id, modified), as catch-up asks for them: in the order asked, `None`
/// for what is not stored, history versions included.
#[allow(dead_code)]
pub fn versions_by_key_scenario(store: &mut dyn threatbus_store::Engine) {
    let old = indicator(1, "2030-01-04T00:00:00.000Z", serde_json::json!({}));
    let new = indicator(1, "2030-01-05T00:00:00.000Z", serde_json::json!({}));
    let other = sighting(2, "2030-01-04T00:00:00.000Z");
    store
        .write(&[new.clone(), old.clone(), other.clone()])
        .unwrap();
    let keys = vec![
        (other.id.clone(), other.modified),
        (new.id.clone(), new.modified),
        (new.id.clone(), new.modified + 1),
        (
            "indicator--00000000-0000-4000-8000-999999999999".to_owned(),
            new.modified,
        ),
        (old.id.clone(), old.modified),
        (new.id.clone(), new.modified),
    ];
    let found = store.versions(&keys).unwrap();
    assert_eq!(
        found,
        vec![
            Some(other.json.clone()),
            Some(new.json.clone()),
            None,
            None,
            Some(old.json.clone()),
            Some(new.json.clone()),
        ]
    );
    assert_eq!(
        store.versions(&[]).unwrap(),
        Vec::<Option<bytes::Bytes>>::new()
    );
}

/// What [`versions_by_key_scenario`] wrote, read on another connection.
#[allow(dead_code)]
pub fn versions_by_key_scenario_read_only(store: &mut dyn threatbus_store::Engine) {
    let new = indicator(1, "2030-01-05T00:00:00.000Z", serde_json::json!({}));
    let found = store
        .versions(&[(new.id.clone(), new.modified), (new.id.clone(), 0)])
        .unwrap();
    assert_eq!(found, vec![Some(new.json.clone()), None]);
}
