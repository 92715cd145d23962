//! Two copies of one record edited apart, then merged: conflicts shown, never dropped.

use std::collections::BTreeMap;

use automerge::ActorId;
use phr_core::{Author, Record, Section, Stamp, fhir::reference::ResourceKey};
use phr_tests::{import_file, largest_fixture, patient_home, test_time};

/// The record of a home after importing the largest fixture, and a second replica of it as
/// another device (another Automerge actor) would hold it.
fn two_devices() -> (Record, Record, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (mut home, mut laptop) = patient_home(dir.path());
    import_file(&mut home, &mut laptop, &largest_fixture()).unwrap();
    let saved: BTreeMap<Section, Vec<u8>> = laptop.save_compacted().into_iter().collect();
    let phone = Record::load(laptop.meta().clone(), &saved, &ActorId::random()).unwrap();
    (laptop, phone, dir)
}

const HYPERTENSION: &str = "Condition/1905b4a4-66e1-4d63-afad-968ce206c983";

fn edit_note(record: &mut Record, author: &Author, key: &ResourceKey, note: &str) {
    let mut resource = record.get(key).unwrap().unwrap();
    resource["note"] = serde_json::json!([{"text": note}]);
    let stamp = Stamp {
        author,
        time: test_time(),
    };
    record.put(stamp, &resource).unwrap();
    record.commit(stamp, "edit");
}

#[test]
fn concurrent_edits_of_one_resource_are_listed_and_resolved() {
    let (mut laptop, mut phone, _dir) = two_devices();
    let key: ResourceKey = HYPERTENSION.parse().unwrap();
    let (me, gp) = (
        Author {
            id: "laptop".into(),
            name: "Patient".into(),
        },
        Author {
            id: "gp".into(),
            name: "GP".into(),
        },
    );
    edit_note(&mut laptop, &me, &key, "home readings fine");
    edit_note(&mut phone, &gp, &key, "increase dose");
    laptop.merge(&mut phone).unwrap();
    phone.merge(&mut laptop).unwrap();
    for record in [&laptop, &phone] {
        let conflicts = record.conflicts().unwrap();
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].key, key);
        let mut notes: Vec<_> = conflicts[0]
            .versions
            .iter()
            .map(|v| v.resource["note"][0]["text"].as_str().unwrap().to_string())
            .collect();
        notes.sort();
        assert_eq!(notes, ["home readings fine", "increase dose"]);
    }
    let keep = laptop.conflicts().unwrap()[0]
        .versions
        .iter()
        .position(|v| v.author.id == "gp")
        .unwrap()
        + 1;
    laptop
        .resolve(
            Stamp {
                author: &me,
                time: test_time(),
            },
            &key,
            &keep.to_string(),
        )
        .unwrap();
    phone.merge(&mut laptop).unwrap();
    for record in [&laptop, &phone] {
        assert!(record.conflicts().unwrap().is_empty());
        assert_eq!(
            record.get(&key).unwrap().unwrap()["note"][0]["text"],
            "increase dose"
        );
        assert_eq!(
            record.history(&key).unwrap().len(),
            4,
            "original, two concurrent edits, the resolution"
        );
    }
}

#[test]
fn edits_to_different_resources_merge_with_no_conflict() {
    let (mut laptop, mut phone, _dir) = two_devices();
    let me = Author {
        id: "laptop".into(),
        name: "Patient".into(),
    };
    edit_note(&mut laptop, &me, &HYPERTENSION.parse().unwrap(), "a");
    let other: ResourceKey = laptop
        .resources_of_type(Section::Summary, "Condition")
        .unwrap()
        .iter()
        .map(|c| format!("Condition/{}", c["id"].as_str().unwrap()))
        .find(|key| key != HYPERTENSION)
        .unwrap()
        .parse()
        .unwrap();
    edit_note(&mut phone, &me, &other, "b");
    laptop.merge(&mut phone).unwrap();
    assert!(laptop.conflicts().unwrap().is_empty());
    assert_eq!(laptop.get(&other).unwrap().unwrap()["note"][0]["text"], "b");
    assert_eq!(
        laptop.get(&HYPERTENSION.parse().unwrap()).unwrap().unwrap()["note"][0]["text"],
        "a"
    );
}
