//! Nothing of a record's content is readable at rest: every fixture imported, a canary entry
//! added, and no file under the home holds any of their text in plaintext, before and after
//! compaction.

use std::{collections::BTreeSet, path::Path};

use phr_core::{Section, Stamp};
use phr_tests::{fixture_files, patient_home, test_time};
use serde_json::{Value, json};

const CANARY: &str = "CANARY-4e1d-woke-with-chest-pain";

/// Distinctive strings of a fixture: names, ids, and the human-readable texts of its codes.
fn fixture_strings(path: &Path) -> BTreeSet<String> {
    let bundle: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut out = BTreeSet::new();
    let mut texts = BTreeSet::new();
    for entry in bundle["entry"].as_array().unwrap() {
        let resource = &entry["resource"];
        if let Some(id) = resource["id"].as_str() {
            out.insert(id.to_string());
        }
        if resource["resourceType"] == "Patient" {
            for name in resource["name"].as_array().into_iter().flatten() {
                if let Some(family) = name["family"].as_str() {
                    out.insert(family.to_string());
                }
            }
        }
        collect_texts(resource, &mut texts);
    }
    // Every display text of 12 characters or more: long enough never to appear by chance.
    out.extend(texts.into_iter().filter(|t| t.len() >= 12));
    out.retain(|s| s.len() >= 6);
    out
}

fn collect_texts(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                if let ("display" | "text", Value::String(text)) = (key.as_str(), value) {
                    out.insert(text.clone());
                }
                collect_texts(value, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_texts(v, out)),
        _ => {}
    }
}

/// The needles found in any file under `dir` (read as text, so std's fast search does the work).
fn found_under(dir: &Path, needles: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        found.extend(
            needles
                .iter()
                .filter(|n| text.contains(n.as_str()))
                .map(|n| format!("{}: {n}", path.display())),
        );
    }
    found
}

#[test]
fn no_fixture_or_canary_text_is_stored_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let (mut home, mut record) = patient_home(dir.path());
    let mut needles = BTreeSet::from([CANARY.to_string(), "Fletcher Hyatt".to_string()]);
    // Every fixture into one record: as the same person (a test of storage, not of identity).
    for file in fixture_files() {
        let same = phr_core::import::ImportOptions { same_person: true };
        phr_tests::import_file_as(&mut home, &mut record, &file, same).unwrap();
        needles.extend(fixture_strings(&file));
    }
    assert!(needles.len() > 1_000, "only {} needles", needles.len());
    let author = home.device().author();
    let stamp = Stamp {
        author: &author,
        time: test_time(),
    };
    record
        .put(
            stamp,
            &json!({"resourceType": "Observation", "id": "canary", "status": "final",
                    "code": {"text": CANARY}}),
        )
        .unwrap();
    record.commit(stamp, "canary");
    home.save(&mut record, test_time()).unwrap();

    let found = found_under(dir.path(), &needles);
    assert!(found.is_empty(), "plaintext at rest: {found:#?}");

    home.compact(&mut record, test_time()).unwrap();
    drop((home, record));
    let found = found_under(dir.path(), &needles);
    assert!(
        found.is_empty(),
        "plaintext at rest after compaction: {found:#?}"
    );

    // And the record is all there.
    let mut home = phr_core::home::Home::open(dir.path()).unwrap();
    let record = home.load_record().unwrap();
    assert!(home.warnings().is_empty(), "{:?}", home.warnings());
    let canary = record.get(&"Observation/canary".parse().unwrap()).unwrap();
    assert_eq!(canary.unwrap()["code"]["text"], CANARY);
    assert!(record.len(Section::Clinical) > 1_000);
}
