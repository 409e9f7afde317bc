"""The TAXII 2.1 server app (`plugins.apps.taxii`), driven over real sockets with the real
client `taxii2-client` (and raw HTTP where the client hides the status or the headers).

The server serves the intel store: a bus here always has a `store` section. Writes through
TAXII go onto the bus (ZeroMQ subscribers get them live) and from there into the store.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import socket
import subprocess
import os
import time
import uuid
from pathlib import Path

import pytest
import requests
from taxii2client.exceptions import AccessError
from taxii2client.v21 import ApiRoot, Collection, Server, as_pages

from conftest import base_command, default_config, free_ports, serves_metrics, to_yaml
from tbclient import make_indicator, make_sighting
from test_store import backend, pg_database  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(not serves_metrics(), reason="the TAXII server is not in the Python original")

INDICATORS_ID = "3b8d8b4e-3f5a-4c1e-9c7d-1e2f3a4b5c61"
SIGHTINGS_ID = "3b8d8b4e-3f5a-4c1e-9c7d-1e2f3a4b5c62"
TAXII = "application/taxii+json;version=2.1"
STIX = "application/stix+json;version=2.1"
DATE_ADDED_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
TLS_DIR = Path(__file__).parent / "tls"

WRITER = ("writer", "w-Secret-4711")
READER = ("reader", "r-Secret-0815")
USERS = {WRITER[0]: {"password": WRITER[1], "write": True},
         READER[0]: {"password": READER[1], "write": False}}


# --------------------------------------------------------------------------- helpers


def taxii_bus(bus_factory, store, taxii=None, users=USERS, wait=True, port=None, metrics=False):
    """A bus with a store (a path or a `store` section) and the TAXII server on a free port
    (``bus.taxii_port``, ``bus.url``)."""
    manage, pub, sub, free = free_ports(4)
    port = port or free
    config = default_config(manage, pub, sub)
    config["store"] = dict(store) if isinstance(store, dict) else {"path": str(store)}
    section = {"port": port, **(taxii or {})}
    if users:
        section["users"] = users
    config["plugins"]["apps"]["taxii"] = section
    bus = bus_factory(config=config, ports=(manage, pub, sub), wait=wait,
                      wait_ports=[manage, pub, sub, port], metrics=metrics)
    bus.taxii_port = port
    scheme = "https" if "tls" in (taxii or {}) else "http"
    bus.url = f"{scheme}://127.0.0.1:{port}"
    return bus


def api_root(bus, user=WRITER, **kwargs) -> ApiRoot:
    return ApiRoot(f"{bus.url}/threatbus/", user=user and user[0], password=user and user[1], **kwargs)


def collection(bus, kind="indicators", user=WRITER, **kwargs) -> Collection:
    cid = INDICATORS_ID if kind == "indicators" else SIGHTINGS_ID
    return Collection(f"{bus.url}/threatbus/collections/{cid}/", user=user and user[0],
                      password=user and user[1], **kwargs)


def envelope(objects) -> dict:
    return {"objects": list(objects)}


def stamp(seconds: float = 0.0) -> str:
    """A STIX timestamp `seconds` from now, millisecond digits."""
    moment = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_stamp(text: str) -> dt.datetime:
    head, _, frac = text.rstrip("Z").partition(".")
    moment = dt.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
    return moment + dt.timedelta(microseconds=int((frac or "0").ljust(6, "0")[:6]))


def wait_until(predicate, timeout: float = 15, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        time.sleep(0.1)


def stored(coll: Collection, ids, timeout: float = 15, **filters) -> list[dict]:
    """Waits until the collection serves every id of `ids` (latest versions); their objects."""
    ids = list(ids)

    def check():
        objects = coll.get_objects(id=ids, **filters).get("objects", [])
        return objects if {o["id"] for o in objects} >= set(ids) else None

    return wait_until(check, timeout, f"{len(ids)} objects served by {coll.url}")


def record_headers(endpoint) -> list[requests.structures.CaseInsensitiveDict]:
    """The headers of every answer `endpoint`'s connection gets from now on, in order."""
    seen = []
    endpoint._conn.session.hooks["response"].append(lambda response, *a, **k: seen.append(response.headers))
    return seen


def raw(bus, method, path, user=WRITER, **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", 10)
    if user:
        kwargs.setdefault("auth", user)
    return requests.request(method, bus.url + path, **kwargs)


def assert_taxii_error(response: requests.Response, status: int):
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["Content-Type"] == TAXII, response.headers
    body = response.json()
    assert isinstance(body.get("title"), str) and body["title"], body
    assert body.get("http_status") == str(status), body
    return body


def run_cli(*args, timeout=30):
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("THREATBUS_")}
    return subprocess.run(base_command() + list(args), capture_output=True, text=True, env=env,
                          timeout=timeout)


# --------------------------------------------------------------------------- 1. discovery


def test_discovery_api_root_and_collections_with_fixed_ids_across_a_restart(bus_factory, tmp_path):
    store = tmp_path / "store"
    bus = taxii_bus(bus_factory, store, {"max_content_length": 123456})
    server = Server(f"{bus.url}/taxii2/", user=WRITER[0], password=WRITER[1])
    assert server.title == "Threat Bus"
    root_url = f"{bus.url}/threatbus/"
    assert [root.url for root in server.api_roots] == [root_url]
    assert server.default.url == root_url
    root = server.api_roots[0]
    assert root.title == "Threat Bus"
    assert root.max_content_length == 123456
    assert root.versions == [TAXII]
    by_id = {c.id: c for c in root.collections}
    assert set(by_id) == {INDICATORS_ID, SIGHTINGS_ID}
    assert by_id[INDICATORS_ID].title == "Indicators" and by_id[INDICATORS_ID].alias == "indicators"
    assert by_id[SIGHTINGS_ID].title == "Sightings" and by_id[SIGHTINGS_ID].alias == "sightings"
    for c in by_id.values():
        assert c.can_read is True and c.can_write is True
        assert c.media_types == [STIX]
    # A reader sees the same collections, not writable.
    reader_root = api_root(bus, READER)
    assert {c.id: c.can_write for c in reader_root.collections} == {INDICATORS_ID: False, SIGHTINGS_ID: False}
    # The API root's URL follows the Host the client asked for; a Host that is not a host and
    # port does not get into it.
    def discovered(host):
        answer = raw(bus, "GET", "/taxii2/", headers={"Host": host, "Accept": TAXII})
        assert answer.status_code == 200, answer.text
        return answer.json()["api_roots"]

    assert discovered("taxii.example.org:8443") == ["http://taxii.example.org:8443/threatbus/"]
    for hostile in ("evil.example/x", "user@evil.example", "evil.example?x"):
        assert discovered(hostile) == [root_url], hostile
    # The alias names the collection too.
    answer = raw(bus, "GET", "/threatbus/collections/sightings/", headers={"Accept": TAXII})
    assert answer.status_code == 200 and answer.json()["id"] == SIGHTINGS_ID
    # Something stored, to see it again after the restart.
    kept = make_indicator("10.1.1.1")
    status = by_id[INDICATORS_ID].add_objects(envelope([kept]))
    assert status.success_count == 1
    stored(by_id[INDICATORS_ID], [kept["id"]])

    bus.stop()
    again = taxii_bus(bus_factory, store)
    root = Server(f"{again.url}/taxii2/", user=WRITER[0], password=WRITER[1]).api_roots[0]
    assert {c.id: c.title for c in root.collections} == {INDICATORS_ID: "Indicators", SIGHTINGS_ID: "Sightings"}
    assert root.max_content_length == 10 * 1024 * 1024  # the default now
    indicators = next(c for c in root.collections if c.id == INDICATORS_ID)
    assert [o["id"] for o in indicators.get_object(kept["id"])["objects"]] == [kept["id"]]


# --------------------------------------------------------------------------- 2. + 3. paging


def test_paging_through_10000_indicators_in_date_added_order_then_polling_added_after(bus_factory, backend):
    bus = taxii_bus(bus_factory, backend, {"page_size": 700})
    coll = collection(bus)
    sent = [make_indicator(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", name=f"n{i}") for i in range(10_000)]
    started = time.monotonic()
    for first in range(0, len(sent), 1000):
        status = coll.add_objects(envelope(sent[first:first + 1000]))
        assert (status.status, status.success_count, status.failure_count) == ("complete", 1000, 0)
    wanted = {o["id"] for o in sent}

    # Wait for the store by polling as a TAXII client would: added_after the last date_added.
    seen: list[str] = []
    cursor = None

    def caught_up():
        nonlocal cursor
        while True:
            page = coll.get_manifest(added_after=cursor) if cursor else coll.get_manifest()
            records = page.get("objects", [])
            seen.extend(r["id"] for r in records)
            if records:
                cursor = records[-1]["date_added"]
            if not page.get("more"):
                return len(seen) >= len(sent)

    wait_until(caught_up, timeout=60, what="10,000 indicators in the store")
    assert sorted(seen) == sorted(wanted), "added_after polling saw an object twice or missed one"
    loaded = time.monotonic() - started

    for per_request, size in ((1000, 700), (500, 500)):
        headers = record_headers(coll)
        pages = list(as_pages(coll.get_objects, per_request=per_request))
        ids = [o["id"] for page in pages for o in page.get("objects", [])]
        assert len(ids) == len(set(ids)) == 10_000, (per_request, len(ids), len(set(ids)))
        assert set(ids) == wanted
        # Every page but the last is full: the server caps `limit` at its page size.
        assert [len(p["objects"]) for p in pages[:-1]] == [size] * (len(pages) - 1)
        assert len(pages) == -(-10_000 // size)
        assert [p["more"] for p in pages] == [True] * (len(pages) - 1) + [False]
        assert all("next" in p for p in pages[:-1]) and "next" not in pages[-1]
        # Same order as the objects were added (one envelope after another, in order).
        assert ids == [o["id"] for o in sent]
        bounds = [(h["X-TAXII-Date-Added-First"], h["X-TAXII-Date-Added-Last"]) for h in headers]
        assert len(bounds) == len(pages)
        for first, last in bounds:
            assert DATE_ADDED_RE.match(first) and DATE_ADDED_RE.match(last), (first, last)
            assert first < last
        for (_, last), (first, _) in zip(bounds, bounds[1:]):
            assert last < first, "pages overlap or go back in date_added"
        coll._conn.session.hooks["response"].clear()

    # The manifest pages the same way, its date_added never decreasing.
    records = [r for page in as_pages(coll.get_manifest, per_request=1000) for r in page["objects"]]
    assert [r["id"] for r in records] == [o["id"] for o in sent]
    dates = [r["date_added"] for r in records]
    assert dates == sorted(dates) and len(set(dates)) == len(dates)
    print(f"loading 10,000 indicators took {loaded:.1f}s")

    # 3. Polling: remember the last date_added, add more, ask for what came after.
    last_header = raw(bus, "GET", "/threatbus/collections/indicators/manifest/?limit=1&added_after="
                      + dates[-2]).headers["X-TAXII-Date-Added-Last"]
    assert last_header == dates[-1]
    assert coll.get_objects(added_after=last_header).get("objects", []) == []
    new = [make_indicator("192.0.2.1"), make_indicator("192.0.2.2"), make_indicator("192.0.2.3")]
    assert coll.add_objects(envelope(new)).success_count == 3
    stored(coll, [o["id"] for o in new])
    polled = coll.get_objects(added_after=last_header)
    assert sorted(o["id"] for o in polled["objects"]) == sorted(o["id"] for o in new)
    assert polled["more"] is False
    # With a limit the server pages the new ones too, from the same cursor.
    first = coll.get_objects(added_after=last_header, limit=2)
    assert len(first["objects"]) == 2 and first["more"] is True
    rest = coll.get_objects(added_after=last_header, limit=2, next=first["next"])
    assert [o["id"] for o in first["objects"] + rest["objects"]] == [o["id"] for o in new]
    assert rest["more"] is False


# --------------------------------------------------------------------------- 4. filters


def test_match_filters_versions_object_endpoints_and_the_manifest(bus_factory, tmp_path):
    bus = taxii_bus(bus_factory, tmp_path / "store")
    coll = collection(bus)
    created = stamp(-3600)
    v1 = make_indicator("10.2.0.1", created=created, modified=created, valid_from=created, name="v1")
    v2 = dict(v1, modified=stamp(-1800), name="v2")
    v3 = dict(v1, modified=stamp(-60), name="v3")
    other = make_indicator("10.2.0.2")
    # v3 arrives before v2: "last" is the greatest `modified`, not the latest arrival.
    status = coll.add_objects(envelope([v1, v3, v2, other]))
    assert status.success_count == 4, status.failures
    stored(coll, [v1["id"], other["id"]])
    wait_until(lambda: len(coll.object_versions(v1["id"])["versions"]) == 3, what="3 versions stored")
    sighting = make_sighting(v1["id"])
    assert collection(bus, "sightings").add_objects(envelope([sighting])).success_count == 1
    stored(collection(bus, "sightings"), [sighting["id"]])

    def names(**filters):
        return sorted(o.get("name", o["id"]) for o in coll.get_objects(**filters).get("objects", []))

    assert names(id=v1["id"]) == ["v3"]
    assert names(id=v1["id"], version="last") == ["v3"]
    assert names(id=v1["id"], version="first") == ["v1"]
    assert names(id=v1["id"], version="all") == ["v1", "v2", "v3"]
    assert names(id=v1["id"], version=v2["modified"]) == ["v2"]
    assert names(id=v1["id"], version=[v1["modified"], v3["modified"]]) == ["v1", "v3"]
    assert names(id=v1["id"], version="first,last") == ["v1", "v3"]
    assert names(id=[v1["id"], other["id"]]) == sorted(["v3", other["id"]])
    assert names(id=f"indicator--{uuid.uuid4()}") == []
    assert names(type="indicator") == sorted(["v3", other["id"]])
    assert names(type="sighting") == []
    assert names(type=["sighting", "indicator"]) == sorted(["v3", other["id"]])
    assert names(spec_version="2.1") == sorted(["v3", other["id"]])
    assert names(spec_version="2.0") == []
    assert names(id=v1["id"], version=stamp(-7200)) == []
    got = coll.get_objects(id=v1["id"], version="all")["objects"]
    assert {o["modified"] for o in got} == {v1["modified"], v2["modified"], v3["modified"]}
    assert next(o for o in got if o["name"] == "v2") == v2, "a stored version differs from the one sent"

    # Get an object, its versions.
    assert [o["name"] for o in coll.get_object(v1["id"])["objects"]] == ["v3"]
    assert sorted(o["name"] for o in coll.get_object(v1["id"], version="all")["objects"]) == ["v1", "v2", "v3"]
    assert [o["name"] for o in coll.get_object(v1["id"], version="first")["objects"]] == ["v1"]
    versions = coll.object_versions(v1["id"])
    assert sorted(versions["versions"]) == sorted([v1["modified"], v2["modified"], v3["modified"]])
    assert versions["more"] is False
    assert coll.object_versions(other["id"])["versions"] == [other["modified"]]
    for missing in (lambda: coll.get_object(f"indicator--{uuid.uuid4()}"),
                    lambda: coll.object_versions(f"indicator--{uuid.uuid4()}"),
                    lambda: collection(bus, "sightings").get_object(v1["id"])):
        with pytest.raises(requests.exceptions.HTTPError) as caught:
            missing()
        assert caught.value.response.status_code == 404

    # The manifest: one record per object (latest version), or per version.
    manifest = coll.get_manifest()["objects"]
    assert {r["id"]: r["version"] for r in manifest} == {v1["id"]: v3["modified"], other["id"]: other["modified"]}
    for record in manifest:
        assert record["media_type"] == STIX
        assert DATE_ADDED_RE.match(record["date_added"]), record
    everything = coll.get_manifest(version="all")["objects"]
    assert sorted(r["version"] for r in everything if r["id"] == v1["id"]) == sorted(
        [v1["modified"], v2["modified"], v3["modified"]])
    # date_added is when the store took the version: v1, then v3, then v2, then other.
    assert [r["version"] for r in everything] == [v1["modified"], v3["modified"], v2["modified"], other["modified"]]
    assert coll.get_manifest(type="sighting").get("objects", []) == []
    sightings = collection(bus, "sightings").get_manifest()["objects"]
    assert [(r["id"], r["version"]) for r in sightings] == [(sighting["id"], sighting["modified"])]


# --------------------------------------------------------------------------- 5. + 12. add objects


def test_add_objects_reports_each_object_and_publishes_the_valid_ones_on_both_stores(bus_factory, backend):
    bus = taxii_bus(bus_factory, backend)
    indicators_sub = bus.subscriber("stix2/indicator")
    sightings_sub = bus.subscriber("stix2/sighting")
    bus.sync(bus.publisher(), indicators_sub, sightings_sub)
    coll = collection(bus)
    good = [make_indicator("10.3.0.1"), make_indicator("10.3.0.2")]
    bad_pattern = make_indicator("10.3.0.3", pattern="[ipv4-addr:value = ")
    no_spec = make_indicator("10.3.0.4")
    del no_spec["spec_version"]
    wrong_kind = make_sighting(good[0]["id"])
    status = coll.add_objects(envelope([good[0], bad_pattern, wrong_kind, no_spec, good[1]]))
    assert status.status == "complete"
    assert (status.total_count, status.success_count, status.failure_count, status.pending_count) == (5, 2, 3, 0)
    assert [s["id"] for s in status.successes] == [o["id"] for o in good]
    assert [s["version"] for s in status.successes] == [o["modified"] for o in good]
    failures = {f["id"]: f for f in status.failures}
    assert set(failures) == {bad_pattern["id"], wrong_kind["id"], no_spec["id"]}
    for failure in failures.values():
        assert isinstance(failure.get("message"), str) and failure["message"], failure
    assert "indicator" in failures[wrong_kind["id"]]["message"], failures[wrong_kind["id"]]
    assert "pattern" in failures[bad_pattern["id"]]["message"].lower(), failures[bad_pattern["id"]]
    assert "spec_version" in failures[no_spec["id"]]["message"], failures[no_spec["id"]]

    # The status again, through the client and raw.
    again = api_root(bus).get_status(status.id)
    assert (again.status, again.total_count, again.success_count, again.failure_count) == ("complete", 5, 2, 3)
    assert {f["id"] for f in again.failures} == set(failures)
    answer = raw(bus, "GET", f"/threatbus/status/{status.id}/")
    assert answer.status_code == 200 and answer.headers["Content-Type"] == TAXII
    assert answer.json()["id"] == status.id and answer.json()["success_count"] == 2
    assert_taxii_error(raw(bus, "GET", f"/threatbus/status/{uuid.uuid4()}/"), 404)

    # Live on the bus: the valid ones, nothing else.
    got = indicators_sub.recv_n(2)
    assert [obj["id"] for _, obj in got] == [o["id"] for o in good]
    assert [obj for _, obj in got] == good
    indicators_sub.expect_nothing(0.5)
    sightings_sub.expect_nothing(0.3)
    # And served from the store later.
    assert sorted(o["id"] for o in stored(coll, [o["id"] for o in good])) == sorted(o["id"] for o in good)
    for refused in (bad_pattern, no_spec):
        assert coll.get_objects(id=refused["id"]).get("objects", []) == []
    assert collection(bus, "sightings").get_objects(id=wrong_kind["id"]).get("objects", []) == []

    # Sightings go to the sightings collection, and onto the bus as sightings.
    sightings = collection(bus, "sightings")
    fresh = [make_sighting(good[0]["id"]), make_sighting(good[1]["id"])]
    status = sightings.add_objects(envelope(fresh + [make_indicator("10.3.0.9")]))
    assert (status.success_count, status.failure_count) == (2, 1)
    assert [obj["id"] for _, obj in sightings_sub.recv_n(2)] == [o["id"] for o in fresh]
    stored(sightings, [o["id"] for o in fresh])


# --------------------------------------------------------------------------- 6. delete
    # The server's store connections close cleanly at shutdown (a PostgreSQL connection must not
    # be dropped on a runtime thread: that once made the bus exit 1).
    bus.signal(signal.SIGTERM)
    assert bus.wait_exit(15) == 0, bus.log_tail()
    assert "panicked" not in bus.log_tail()



def test_delete_withdraws_an_indicator_with_a_remove_version(bus_factory, tmp_path):
    bus = taxii_bus(bus_factory, tmp_path / "store")
    coll = collection(bus)
    target = make_indicator("10.4.0.1", created=stamp(-60), modified=stamp(-60))
    assert coll.add_objects(envelope([target])).success_count == 1
    stored(coll, [target["id"]])
    sub = bus.subscriber("stix2/indicator")
    bus.sync(bus.publisher(), sub)

    assert coll.delete_object(target["id"]) is None  # 2xx
    _, removal = sub.recv()
    assert removal["id"] == target["id"]
    assert removal["x_threatbus_update"] == "REMOVE"
    assert parse_stamp(removal["modified"]) > parse_stamp(target["modified"])
    assert {k: v for k, v in removal.items() if k not in ("modified", "x_threatbus_update")} == \
        {k: v for k, v in target.items() if k != "modified"}
    wait_until(lambda: len(coll.get_object(target["id"], version="all")["objects"]) == 2, what="2 versions")
    both = coll.get_object(target["id"], version="all")["objects"]
    assert sorted((o["modified"], o.get("x_threatbus_update")) for o in both) == sorted(
        [(target["modified"], None), (removal["modified"], "REMOVE")])
    assert coll.get_object(target["id"])["objects"][0]["x_threatbus_update"] == "REMOVE"
    # Deleting a withdrawn indicator again publishes nothing new.
    coll.delete_object(target["id"])
    sub.expect_nothing(0.5)

    with pytest.raises(requests.exceptions.HTTPError) as caught:
        coll.delete_object(f"indicator--{uuid.uuid4()}")
    assert caught.value.response.status_code == 404
    sighting = make_sighting(target["id"])
    sightings = collection(bus, "sightings")
    assert sightings.add_objects(envelope([sighting])).success_count == 1
    with pytest.raises(requests.exceptions.HTTPError) as caught:
        sightings.delete_object(sighting["id"])
    assert caught.value.response.status_code == 405
    assert_taxii_error(raw(bus, "DELETE", f"/threatbus/collections/sightings/objects/{sighting['id']}/"), 405)


# --------------------------------------------------------------------------- 7. auth + 11. access log


def test_basic_auth_readers_writers_and_the_access_log(bus_factory, tmp_path):
    bus = taxii_bus(bus_factory, tmp_path / "store")
    victim = make_indicator("10.5.0.1")
    assert collection(bus).add_objects(envelope([victim])).success_count == 1
    stored(collection(bus), [victim["id"]])

    # A reader reads ...
    reader = collection(bus, user=READER)
    assert [o["id"] for o in reader.get_objects()["objects"]] == [victim["id"]]
    assert reader.can_write is False
    # ... and the client will not write for it ...
    with pytest.raises(AccessError):
        reader.add_objects(envelope([make_indicator("10.5.0.2")]))
    # ... and the server refuses when made to.
    forced = collection(bus, user=READER, collection_info={
        "id": INDICATORS_ID, "title": "Indicators", "can_read": True, "can_write": True})
    for attempt in (lambda: forced.add_objects(envelope([make_indicator("10.5.0.3")])),
                    lambda: forced.delete_object(victim["id"])):
        with pytest.raises(requests.exceptions.HTTPError) as caught:
            attempt()
        assert caught.value.response.status_code == 403
        assert caught.value.response.json()["http_status"] == "403"
    assert [o.get("x_threatbus_update") for o in collection(bus).get_objects(id=victim["id"])["objects"]] == [None]

    # No or wrong credentials.
    for user in (None, (READER[0], "wrong"), ("nobody", READER[1]), (READER[0], READER[1] + "x")):
        answer = raw(bus, "GET", "/taxii2/", user=user)
        assert_taxii_error(answer, 401)
        assert answer.headers["WWW-Authenticate"].startswith("Basic "), answer.headers
    with pytest.raises(requests.exceptions.HTTPError) as caught:
        Server(f"{bus.url}/taxii2/").title
    assert caught.value.response.status_code == 401
    assert raw(bus, "GET", "/taxii2/", user=READER).status_code == 200

    # 11. One access log line per request: user, method, path, status.
    time.sleep(0.3)
    lines = [line for line in bus.log().splitlines() if "taxii request" in line]
    assert len([l for l in lines if "/taxii2/" in l]) == 5 + 1, lines  # 4 raw 401s, client 401, 200

    def line_for(method, path, status, user):
        return [l for l in lines
                if re.search(rf"\buser=\"?{re.escape(user)}\"?(\s|$)", l) and re.search(rf"\bmethod={method}\b", l)
                and re.search(rf"\bpath=\"?{re.escape(path)}\"?(\s|$)", l) and re.search(rf"\bstatus={status}\b", l)]

    objects_path = f"/threatbus/collections/{INDICATORS_ID}/objects/"
    assert len(line_for("POST", objects_path, 403, "reader")) == 1, lines
    assert len(line_for("DELETE", f"{objects_path}{victim['id']}/", 403, "reader")) == 1, lines
    assert len(line_for("POST", objects_path, 202, "writer")) == 1, lines
    assert len(line_for("GET", "/taxii2/", 401, "-")) == 5, lines
    assert len(line_for("GET", "/taxii2/", 200, "reader")) == 1, lines
    assert all(" INFO " in l or "INFO" in l.split("taxii request")[0] for l in lines), lines
    for secret in (READER[1], WRITER[1]):
        assert secret not in bus.log()


def test_without_users_everybody_reads_and_nobody_writes(bus_factory, tmp_path):
    bus = taxii_bus(bus_factory, tmp_path / "store", users=None)
    root = Server(f"{bus.url}/taxii2/").api_roots[0]
    assert {c.id: (c.can_read, c.can_write) for c in root.collections} == {
        INDICATORS_ID: (True, False), SIGHTINGS_ID: (True, False)}
    assert collection(bus, user=None).get_objects().get("objects", []) == []
    body = json.dumps(envelope([make_indicator("10.6.0.1")]))
    answer = raw(bus, "POST", "/threatbus/collections/indicators/objects/", user=None, data=body,
                 headers={"Content-Type": TAXII, "Accept": TAXII})
    assert_taxii_error(answer, 403)
    assert_taxii_error(raw(bus, "DELETE", f"/threatbus/collections/indicators/objects/indicator--{uuid.uuid4()}/",
                           user=None), 403)


# --------------------------------------------------------------------------- 8. TLS


def test_https_with_a_certificate_and_a_bad_certificate_path_stops_the_start(bus_factory, tmp_path, monkeypatch):
    # requests lets these override a session's `verify` (the client's CA file).
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    tls = {"certificate": str(TLS_DIR / "bus.pem"), "key": str(TLS_DIR / "bus.key")}
    bus = taxii_bus(bus_factory, tmp_path / "store", {"tls": tls})
    server = Server(f"{bus.url}/taxii2/", user=WRITER[0], password=WRITER[1], verify=str(TLS_DIR / "ca.pem"))
    assert server.title == "Threat Bus"
    assert [r.url for r in server.api_roots] == [f"https://127.0.0.1:{bus.taxii_port}/threatbus/"]
    coll = next(c for c in server.api_roots[0].collections if c.id == INDICATORS_ID)
    indicator = make_indicator("10.7.0.1")
    assert coll.add_objects(envelope([indicator])).success_count == 1
    stored(coll, [indicator["id"]])
    # Plain HTTP to the TLS port gets no TAXII answer.
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(f"http://127.0.0.1:{bus.taxii_port}/taxii2/", auth=WRITER, timeout=5)
    # Without the test CA the certificate is not trusted.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{bus.url}/taxii2/", auth=WRITER, timeout=5)
    assert bus.alive()

    broken = taxii_bus(bus_factory, tmp_path / "store2",
                       {"tls": {"certificate": str(tmp_path / "missing.pem"), "key": tls["key"]}}, wait=False)
    assert broken.wait_exit(15) not in (None, 0), broken.log_tail()
    assert "plugins.apps.taxii.tls.certificate" in broken.log(), broken.log_tail()


# --------------------------------------------------------------------------- 9. raw HTTP errors


def test_http_errors_are_taxii_error_messages(bus_factory, tmp_path):
    bus = taxii_bus(bus_factory, tmp_path / "store", {"max_content_length": 2000})
    objects = "/threatbus/collections/indicators/objects/"

    def post(body, content_type=TAXII, **kwargs):
        return raw(bus, "POST", objects, data=body, headers={"Content-Type": content_type, "Accept": TAXII}, **kwargs)

    assert_taxii_error(raw(bus, "GET", objects, headers={"Accept": "application/json"}), 406)
    assert_taxii_error(raw(bus, "GET", objects, headers={"Accept": "application/taxii+json;version=2.0"}), 406)
    ok = raw(bus, "GET", objects, headers={"Accept": "application/taxii+json"})
    assert ok.status_code == 200 and ok.headers["Content-Type"] == TAXII and ok.json()["more"] is False
    one = json.dumps(envelope([make_indicator("10.8.0.1")]))
    assert len(one) < 2000
    assert_taxii_error(post(one, content_type="application/json"), 415)
    assert_taxii_error(post(one, content_type=None), 415)
    assert_taxii_error(post(json.dumps(envelope([make_indicator(f"10.8.1.{i}") for i in range(10)]))), 413)
    # A chunked body without Content-Length is cut off at the limit too.
    big = json.dumps(envelope([make_indicator(f"10.8.2.{i}") for i in range(10)])).encode()
    assert_taxii_error(post((big[i:i + 500] for i in range(0, len(big), 500))), 413)
    assert_taxii_error(post("not json"), 400)
    assert_taxii_error(post("[1,2]"), 422)
    assert_taxii_error(post('{"objects": 5}'), 422)
    assert_taxii_error(post('{"objects": [1]}'), 422)
    accepted = post(one)
    assert accepted.status_code == 202 and accepted.json()["success_count"] == 1
    assert_taxii_error(raw(bus, "GET", "/threatbus/nowhere/"), 404)
    assert_taxii_error(raw(bus, "GET", "/elsewhere/taxii2/"), 404)
    assert_taxii_error(raw(bus, "GET", f"/threatbus/collections/{uuid.uuid4()}/objects/"), 404)
    put = raw(bus, "PUT", objects, data=one, headers={"Content-Type": TAXII})
    assert_taxii_error(put, 405)
    assert put.headers["Allow"] == "GET, POST"
    assert_taxii_error(raw(bus, "POST", "/threatbus/collections/", data="{}",
                           headers={"Content-Type": TAXII}), 405)
    for query in ("limit=0", "limit=many", "added_after=yesterday", "next=garbage", "match[version]=newest",
                  "match[id]=not-an-id", "added_after=2024-01-01T00:00:00Z&added_after=2024-01-02T00:00:00Z"):
        body = assert_taxii_error(raw(bus, "GET", f"{objects}?{query}"), 400)
        name = query.split("=")[0]
        assert name in body.get("description", ""), (query, body)
    assert_taxii_error(raw(bus, "GET", "/threatbus/collections/indicators/manifest/?next=garbage"), 400)


# --------------------------------------------------------------------------- 10. config


def test_without_a_store_the_bus_refuses_to_start_and_check_hides_passwords(bus_factory, tmp_path):
    manage, pub, sub, port = free_ports(4)
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["taxii"] = {"port": port, "users": USERS}
    bus = bus_factory(config=config, ports=(manage, pub, sub), wait=False)
    assert bus.wait_exit(15) not in (None, 0), bus.log_tail()
    log = bus.log()
    assert "plugins.apps.taxii" in log and "add a `store` section" in log, log[-3000:]

    config["store"] = {"path": str(tmp_path / "store")}
    path = tmp_path / "good.yaml"
    path.write_text(to_yaml(config) + "\n")
    done = run_cli("check", "-c", str(path))
    assert done.returncode == 0, done.stderr
    effective = json.loads(done.stdout)
    taxii = effective["plugins"]["apps"]["taxii"]
    assert taxii["port"] == port and taxii["page_size"] == 1000
    assert {name: user["write"] for name, user in taxii["users"].items()} == {"reader": False, "writer": True}
    assert {user["password"] for user in taxii["users"].values()} <= {"(set)", "********"}, taxii["users"]
    for secret in (READER[1], WRITER[1]):
        assert secret not in done.stdout and secret not in done.stderr
    assert "taxii" in done.stderr, done.stderr


def test_metrics_count_requests_objects_and_time(bus_factory, tmp_path):
    bus = taxii_bus(bus_factory, tmp_path / "store", metrics=True)
    coll = collection(bus)
    before = bus.metrics()
    valid = [make_indicator(f"10.9.0.{i}") for i in range(3)]
    status = coll.add_objects(envelope(valid + [{"type": "indicator", "id": "indicator--bad"}]))
    assert (status.success_count, status.failure_count) == (3, 1)
    stored(coll, [o["id"] for o in valid])
    assert raw(bus, "GET", "/threatbus/nowhere/").status_code == 404
    assert raw(bus, "GET", "/taxii2/", user=None).status_code == 401
    after = bus.metrics()
    assert after.delta(before, "threatbus_taxii_objects_accepted_total") == 3
    assert after.delta(before, "threatbus_taxii_objects_refused_total") == 1
    assert after.delta(before, "threatbus_taxii_objects_served_total") >= 3
    assert after.value("threatbus_taxii_requests_total", endpoint="objects", status="202") == 1
    assert after.value("threatbus_taxii_requests_total", endpoint="objects", status="200") >= 1
    assert after.value("threatbus_taxii_requests_total", endpoint="other", status="404") == 1
    assert after.value("threatbus_taxii_requests_total", endpoint="discovery", status="401") == 1
    answered = sum(v for k, v in after.items() if k.startswith("threatbus_taxii_requests_total{"))
    assert after["threatbus_taxii_request_duration_seconds_count"] == answered


def test_slow_and_idle_clients_do_not_lock_others_out(bus_factory, tmp_path):
    bus = taxii_bus(bus_factory, tmp_path / "store", taxii={"max_connections": 4, "request_timeout": 1})
    address = ("127.0.0.1", bus.taxii_port)
    # Every place taken by clients that never finish their headers...
    stalled = [socket.create_connection(address) for _ in range(4)]
    for sock in stalled:
        sock.sendall(b"GET /taxii2/ HTTP/1.1\r\nHost: x\r\n")
    # ...and a new client is still answered: the oldest idle connection made room.
    assert raw(bus, "GET", "/taxii2/").status_code == 200

    def closed_within(sock, seconds):
        sock.settimeout(seconds)
        started = time.monotonic()
        try:
            data = sock.recv(4096)
        except socket.timeout:
            return False, b""
        return time.monotonic() - started < seconds, data

    # Headers that never end: the connection is closed after request_timeout.
    slow = socket.create_connection(address)
    slow.sendall(b"GET /taxii2/ HTTP/1.1\r\n")
    closed, data = closed_within(slow, 5)
    assert closed and (data == b"" or data.startswith(b"HTTP/1.1 408")), data
    # A body that never arrives: 408 as a TAXII error after request_timeout.
    import base64
    credentials = base64.b64encode(f"{WRITER[0]}:{WRITER[1]}".encode()).decode()
    body_late = socket.create_connection(address)
    body_late.sendall((
        f"POST /threatbus/collections/{INDICATORS_ID}/objects/ HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Basic {credentials}\r\nAccept: {TAXII}\r\nContent-Type: {TAXII}\r\n"
        "Content-Length: 100\r\n\r\n{\"objects\": ["
    ).encode())
    answered, data = closed_within(body_late, 5)
    assert answered and data.startswith(b"HTTP/1.1 408"), data
    assert b'"http_status":"408"' in data, data
    for sock in stalled + [slow, body_late]:
        sock.close()
