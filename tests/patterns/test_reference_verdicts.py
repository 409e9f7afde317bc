"""Checks the recorded verdicts of the STIX pattern corpus against the reference validator.

``crates/stix/tests/corpus/patterns.jsonl`` records, for every pattern, what the OASIS reference
validator (PyPI ``stix2-patterns``, STIX 2.1) said. The Rust test ``pattern_corpus.rs`` trusts
these records; this test re-runs the reference so that a wrong record cannot hide a bug, and
checks that the committed corpus is exactly what ``generate_corpus.py`` produces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import generate_corpus  # noqa: E402

CORPUS_DIR = generate_corpus.CORPUS.parent


def read_jsonl(name: str) -> list[dict]:
    with (CORPUS_DIR / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_recorded_verdicts_are_the_reference_verdicts():
    records = read_jsonl("patterns.jsonl")
    assert len(records) >= 500
    wrong = [
        (r["pattern"], r["reference"], actual)
        for r in records
        if (actual := generate_corpus.reference_verdict(r["pattern"])) != r["reference"]
    ]
    assert not wrong, f"{len(wrong)} recorded verdicts differ from the reference: {wrong[:20]}"


def test_corpus_is_what_the_generator_makes():
    recorded = [r["pattern"] for r in read_jsonl("patterns.jsonl")]
    assert recorded == generate_corpus.build_patterns()


def test_listed_disagreements_are_real():
    reference = {r["pattern"]: r["reference"] for r in read_jsonl("patterns.jsonl")}
    for entry in read_jsonl("disagreements.jsonl"):
        assert entry["pattern"] in reference, entry
        assert entry["ours"] in ("valid", "invalid"), entry
        assert reference[entry["pattern"]] != entry["ours"], entry
        assert entry["reason"].strip(), entry
