"""Comparison helpers for STIX JSON that went through the bus."""

from datetime import datetime, timezone

import stix2

TIMESTAMP_KEYS = {"created", "modified", "valid_from", "valid_until", "first_seen", "last_seen"}


def parse_ts(s: str) -> datetime:
    assert isinstance(s, str) and s.endswith("Z"), f"timestamp must be RFC 3339 UTC with Z: {s!r}"
    body = s[:-1]
    if "." in body:
        main, frac = body.split(".", 1)
        frac = (frac + "000000")[:6]
        body = f"{main}.{frac}"
        fmt = "%Y-%m-%dT%H:%M:%S.%f"
    else:
        fmt = "%Y-%m-%dT%H:%M:%S"
    return datetime.strptime(body, fmt).replace(tzinfo=timezone.utc)


def norm(value):
    """Recursively replace timestamp strings under well-known keys by datetimes."""
    if isinstance(value, dict):
        return {k: (parse_ts(v) if k in TIMESTAMP_KEYS and isinstance(v, str) else norm(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [norm(v) for v in value]
    return value


def assert_same_json(received: dict, sent: dict):
    a, b = norm(received), norm(sent)
    if a != b:
        missing = sorted(set(b) - set(a))
        extra = sorted(set(a) - set(b))
        diff = {k: (a[k], b[k]) for k in set(a) & set(b) if a[k] != b[k]}
        raise AssertionError(
            f"objects differ: missing keys {missing}, extra keys {extra}, different values (got, sent) {diff}"
        )


def assert_same_stix(received: dict, sent):
    """stix2.parse equality, as in upstream's integration test."""
    got = stix2.parse(received, allow_custom=True)
    exp = stix2.parse(sent, allow_custom=True) if isinstance(sent, dict) else sent
    assert got == exp, f"STIX objects differ:\n got  {got.serialize()}\n sent {exp.serialize()}"
