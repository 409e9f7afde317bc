//! Differential test against the OASIS reference validator (PyPI `stix2-patterns`).
//!
//! `corpus/patterns.jsonl` holds patterns with the verdict the reference gave
//! (`tests/patterns/generate_corpus.py` made it; `tests/patterns/test_reference_verdicts.py`
//! re-checks the recorded verdicts against the reference). Our verdict must equal the recorded
//! one, unless the pattern is listed in `corpus/disagreements.jsonl` with our verdict and the
//! reason (a bug in the reference). A listed pattern must really be a disagreement, so the list
//! cannot go stale. Every accepted pattern must also survive print → parse unchanged.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use threatbus_stix::pattern;

struct Record {
    pattern: String,
    reference: String,
}

fn read_jsonl(name: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}:{}: {e}", i + 1))
        })
        .collect()
}

fn field(value: &Value, key: &str) -> String {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{value}: no string `{key}`"))
        .to_owned()
}

fn corpus() -> Vec<Record> {
    read_jsonl("patterns.jsonl")
        .iter()
        .map(|v| Record {
            pattern: field(v, "pattern"),
            reference: field(v, "reference"),
        })
        .collect()
}

/// pattern → (our verdict, reason).
fn disagreements() -> HashMap<String, (String, String)> {
    read_jsonl("disagreements.jsonl")
        .iter()
        .map(|v| {
            let reason = field(v, "reason");
            assert!(!reason.trim().is_empty(), "{v}: empty reason");
            (field(v, "pattern"), (field(v, "ours"), reason))
        })
        .collect()
}

fn verdict(ok: bool) -> &'static str {
    if ok { "valid" } else { "invalid" }
}

#[test]
fn corpus_is_large_and_mixed() {
    let corpus = corpus();
    assert!(corpus.len() >= 500, "only {} patterns", corpus.len());
    for wanted in ["valid", "invalid"] {
        assert!(
            corpus.iter().filter(|r| r.reference == wanted).count() >= 200,
            "too few {wanted} patterns"
        );
    }
}

#[test]
fn verdicts_agree_with_the_reference_validator() {
    let corpus = corpus();
    let mut listed = disagreements();
    let mut failures = Vec::new();
    for record in &corpus {
        let result = pattern::parse(&record.pattern);
        let ours = verdict(result.is_ok());
        match listed.remove(&record.pattern) {
            Some((expected, reason)) => {
                if ours != expected {
                    failures.push(format!(
                        "{:?}: listed as {expected} ({reason}), but we say {ours}: {result:?}",
                        record.pattern
                    ));
                } else if record.reference == ours {
                    failures.push(format!(
                        "{:?}: listed as a disagreement, but the reference agrees ({ours})",
                        record.pattern
                    ));
                }
            }
            None if record.reference != ours => failures.push(format!(
                "{:?}: reference {}, we say {ours}: {result:?}",
                record.pattern, record.reference
            )),
            None => {}
        }
    }
    for pattern in listed.keys() {
        failures.push(format!(
            "{pattern:?}: listed as a disagreement but not in the corpus"
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {} patterns:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}

#[test]
fn accepted_patterns_print_and_parse_back_unchanged() {
    for record in corpus() {
        let Ok(parsed) = pattern::parse(&record.pattern) else {
            continue;
        };
        let printed = parsed.to_string();
        let reparsed = pattern::parse(&printed)
            .unwrap_or_else(|e| panic!("{:?} printed as {printed:?}: {e}", record.pattern));
        assert_eq!(
            reparsed, parsed,
            "{:?} printed as {printed:?}",
            record.pattern
        );
        assert_eq!(reparsed.to_string(), printed);
    }
}
