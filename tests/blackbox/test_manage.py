"""Management protocol (spec §3.2): every row of the request/reply table."""

import string

import pytest

from tbclient import make_indicator

ERROR = {"status": "error"}
UNKNOWN = {"status": "unknown request"}


def assert_reply(reply, expected, req):
    assert reply == expected, f"request {req!r}: expected {expected}, got {reply}"


@pytest.mark.parametrize(
    "raw",
    [b"FOO", b"", b"{", b'{"action": "subscribe"', b"\xff\xfe\x00garbage", b"subscribe stix2"],
    ids=["FOO", "empty", "open-brace", "truncated", "non-utf8", "words"],
)
def test_invalid_json_is_error(shared_bus, raw):
    assert_reply(shared_bus.manage(raw), ERROR, raw)


@pytest.mark.parametrize(
    "raw",
    ['["subscribe"]', "[]", "42", "4.2", '"subscribe"', "true", "null"],
)
def test_json_not_an_object_is_error(shared_bus, raw):
    assert_reply(shared_bus.manage(raw), ERROR, raw)


@pytest.mark.parametrize(
    "req",
    [{"action": "FOO"}, {}, {"topic": "stix2/indicator"}, {"action": "SUBSCRIBE", "topic": "stix2"},
     {"action": None, "topic": "x"}, {"action": 5, "topic": "x"}],
    ids=["FOO", "empty-object", "no-action", "uppercase-action", "null-action", "numeric-action"],
)
def test_unknown_action(shared_bus, req):
    assert_reply(shared_bus.manage(req), UNKNOWN, req)


@pytest.mark.parametrize("action", ["subscribe", "unsubscribe", "heartbeat", "FOO", None])
@pytest.mark.parametrize("snapshot", ["FOO", None, {}, [], "1.5"], ids=["FOO", "null", "obj", "list", "float-string"])
def test_bad_snapshot_is_error_for_any_action(shared_bus, action, snapshot):
    req = {"topic": "stix2/indicator", "snapshot": snapshot}
    if action is not None:
        req["action"] = action
    assert_reply(shared_bus.manage(req), ERROR, req)


@pytest.mark.parametrize(
    "req",
    [{"action": "subscribe"}, {"action": "subscribe", "topic": ""}, {"action": "subscribe", "topic": []},
     {"action": "subscribe", "topic": None}, {"action": "subscribe", "snapshot": 3}],
    ids=["missing", "empty-string", "empty-list", "null", "missing-with-snapshot"],
)
def test_subscribe_without_topic_is_unknown_request(shared_bus, req):
    assert_reply(shared_bus.manage(req), UNKNOWN, req)


def check_success_reply(bus, reply):
    assert reply.get("status") == "success", reply
    assert set(reply) == {"topic", "pub_port", "sub_port", "status"}, reply
    p2p = reply["topic"]
    assert isinstance(p2p, str) and len(p2p) == 32, reply
    assert all(c in string.ascii_lowercase for c in p2p), reply
    assert reply["pub_port"] == bus.pub_port and type(reply["pub_port"]) is int, reply
    assert reply["sub_port"] == bus.sub_port and type(reply["sub_port"]) is int, reply
    return p2p


@pytest.mark.parametrize(
    "topic,snapshot",
    [("stix2/indicator", None), ("stix2/indicator", 0), ("stix2/sighting", 0), ("stix2", 0), ("TOPIC", 0),
     (["stix2/indicator", "stix2/sighting"], 0), ("stix2/indicator", "30"), ("stix2/indicator", 1.9),
     ("stix2/indicator", True), ("stix2/indicator", 1), ("stix2/indicator", "0")],
    ids=["no-snapshot", "snapshot-0", "sighting", "stix2", "arbitrary", "list", "numeric-string", "float",
         "bool", "one-day", "string-zero"],
)
def test_subscribe_success(shared_bus, topic, snapshot):
    req = {"action": "subscribe", "topic": topic}
    if snapshot is not None:
        req["snapshot"] = snapshot
    p2p = check_success_reply(shared_bus, shared_bus.manage(req))
    assert_reply(shared_bus.manage({"action": "unsubscribe", "topic": p2p}), {"status": "success"}, "unsubscribe")


def test_each_subscribe_gets_a_fresh_p2p_topic(shared_bus):
    topics = [check_success_reply(shared_bus, shared_bus.manage({"action": "subscribe", "topic": "stix2/indicator"}))
              for _ in range(5)]
    assert len(set(topics)) == 5, topics
    for t in topics:
        assert shared_bus.manage({"action": "unsubscribe", "topic": t}) == {"status": "success"}


@pytest.mark.parametrize("topic", [["stix2/indicator", 5], ["stix2/indicator", None], ["stix2/indicator", ["x"]],
                                   5, {"a": 1}], ids=["list-int", "list-null", "list-list", "int", "object"])
def test_subscribe_non_string_topic_is_error(shared_bus, topic):
    req = {"action": "subscribe", "topic": topic}
    assert_reply(shared_bus.manage(req), ERROR, req)


@pytest.mark.parametrize("req", [{"action": "unsubscribe"}, {"action": "unsubscribe", "topic": ""},
                                 {"action": "unsubscribe", "topic": None}],
                         ids=["missing", "empty", "null"])
def test_unsubscribe_without_topic_is_unknown_request(shared_bus, req):
    assert_reply(shared_bus.manage(req), UNKNOWN, req)


@pytest.mark.parametrize("topic", ["TOPIC", "a" * 32, ["stix2/indicator"], {"a": 1}],
                         ids=["unknown", "unknown-32", "list", "object"])
def test_unsubscribe_unknown_or_non_string_is_error(shared_bus, topic):
    req = {"action": "unsubscribe", "topic": topic}
    assert_reply(shared_bus.manage(req), ERROR, req)


@pytest.mark.parametrize("req", [{"action": "heartbeat"}, {"action": "heartbeat", "topic": ""},
                                 {"action": "heartbeat", "topic": None}],
                         ids=["missing", "empty", "null"])
def test_heartbeat_without_topic_is_unknown_request(shared_bus, req):
    assert_reply(shared_bus.manage(req), UNKNOWN, req)


@pytest.mark.parametrize("topic", ["TOPIC", "z" * 32, ["stix2/indicator"]], ids=["unknown", "unknown-32", "list"])
def test_heartbeat_unknown_or_non_string_is_error(shared_bus, topic):
    req = {"action": "heartbeat", "topic": topic}
    assert_reply(shared_bus.manage(req), ERROR, req)


def test_full_roundtrip(shared_bus):
    reply = shared_bus.manage({"action": "subscribe", "topic": "TOPIC"})
    p2p = check_success_reply(shared_bus, reply)
    assert shared_bus.manage({"action": "heartbeat", "topic": p2p}) == {"status": "success"}
    assert shared_bus.manage({"action": "unsubscribe", "topic": p2p}) == {"status": "success"}
    assert shared_bus.manage({"action": "heartbeat", "topic": p2p}) == ERROR
    assert shared_bus.manage({"action": "unsubscribe", "topic": p2p}) == ERROR


def test_list_subscription_roundtrip(shared_bus):
    p2p = check_success_reply(shared_bus, shared_bus.manage(
        {"action": "subscribe", "topic": ["stix2/indicator", "stix2/sighting"], "snapshot": 0}))
    assert shared_bus.manage({"action": "heartbeat", "topic": p2p}) == {"status": "success"}
    assert shared_bus.manage({"action": "unsubscribe", "topic": p2p}) == {"status": "success"}
    assert shared_bus.manage({"action": "heartbeat", "topic": p2p}) == ERROR


def test_manage_survives_request_storm(shared_bus):
    for i in range(50):
        assert shared_bus.manage(b"FOO") == ERROR
        assert shared_bus.manage({"action": "FOO"}) == UNKNOWN
    p2p = check_success_reply(shared_bus, shared_bus.manage({"action": "subscribe", "topic": "stix2"}))
    assert shared_bus.manage({"action": "unsubscribe", "topic": p2p}) == {"status": "success"}


# --------------------------------------------------------------------------- stateful (own bus)


@pytest.mark.fixed_upstream_bug
@pytest.mark.parametrize("bad_topic", [["stix2/indicator", 5], [5, "stix2/indicator"]],
                         ids=["bad-last", "bad-first"])
def test_failed_list_subscription_is_rolled_back(bus, bad_topic):
    """Upstream leaves the p2p entry and the topics before the bad element subscribed (§3.2).
    Our port rolls the whole subscription back: nothing is ever published for the failed p2p."""
    assert bus.manage({"action": "subscribe", "topic": bad_topic}) == ERROR
    good = bus.subscriber("stix2/indicator")
    spy = bus.spy("")  # sees every frame published on the pub socket
    pub = bus.publisher()
    bus.sync(pub, good, spy)
    ind = make_indicator("9.9.9.9")
    pub.send("stix2/indicator", ind)
    suffix, obj = good.recv()
    assert (suffix, obj["id"]) == ("indicator", ind["id"])
    # the spy must see the indicator exactly once: for the valid subscriber only
    seen = tbclient_fence_all(pub, spy)
    topics = [t for t, _ in seen]
    assert topics == [good.p2p + "indicator"], f"frames for unexpected p2p topics: {topics}"
    # a snapshot request from a later subscriber must not be pushed to a leaked p2p either
    other = bus.subscriber("stix2/indicator", snapshot=1)
    got = []
    try:
        while True:
            got.append(spy.recv(timeout=3))
    except AssertionError:
        pass
    leaked = [t for t, _ in got if not (t.startswith(good.p2p) or t.startswith(other.p2p))]
    assert not leaked, f"frames published for a failed subscription: {leaked}"


def tbclient_fence_all(pub, spy):
    """Fence for the spy (which receives the fence for every indicator subscriber); returns
    (full_topic, obj) items seen before the fence, probes excluded."""
    import tbclient

    return tbclient.fence(pub, spy)
