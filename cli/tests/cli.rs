//! Snapshot tests of the `phr` command line: outputs, error messages and exit codes, pinned in
//! `cli/tests/snapshots/`. Ids, times and temporary paths are replaced by placeholders.

mod common;

use common::{Phr, fixtures, largest, snapshot};

#[test]
fn init_and_its_errors() {
    let phr = Phr::new();
    let codes = snapshot(
        "init",
        &phr,
        &[
            &[
                "init",
                "--name",
                "Ada Lovelace",
                "--nhs-number",
                "943 476 5918",
            ],
            &[
                "init",
                "--name",
                "Ada Lovelace",
                "--birth-date",
                "10/12/1815",
            ],
            &["show"],
            &[
                "init",
                "--name",
                "Ada Lovelace",
                "--nhs-number",
                "943 476 5919",
                "--birth-date",
                "1815-12-10",
            ],
            &["init", "--name", "Someone Else"],
        ],
    );
    assert_eq!(codes, [1, 1, 1, 0, 1]);
}

#[test]
fn provider_init() {
    let phr = Phr::new();
    let codes = snapshot(
        "provider_init",
        &phr,
        &[
            &[
                "init",
                "--provider",
                "--name",
                "Riverside Surgery",
                "--ods",
                "Y12345",
            ],
            &["show"],
        ],
    );
    assert_eq!(codes, [0, 1]);
}

#[test]
fn import_show_and_export_a_lifetime_record() {
    let phr = Phr::fletcher();
    let largest = largest();
    let ips = fixtures()
        .join("ips/Bundle-IPS-examples-Bundle-01.json")
        .display()
        .to_string();
    let out = phr.dir.path().join("ips.json").display().to_string();
    let codes = snapshot(
        "import_show_export",
        &phr,
        &[
            // Someone else's file is refused, naming both people.
            &["import", &ips],
            &["import", &largest],
            &["import", &largest],
            &["show"],
            &["export", "--ips", "-o", &out],
        ],
    );
    assert_eq!(codes, [1, 0, 0, 0, 0]);
    let ips: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(ips["type"], "document");
    // One Patient: the record's own, with the NHS number it was made with and the file's
    // identifiers merged in, and the document is about it.
    let patients: Vec<&serde_json::Value> = ips["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == "Patient")
        .collect();
    assert_eq!(patients.len(), 1, "{patients:?}");
    let identifiers = patients[0]["identifier"].as_array().unwrap();
    assert!(identifiers.iter().any(|i| i["value"] == "9434765919"));
    assert!(identifiers.len() > 1, "{identifiers:?}");
    let subject = ips["entry"][0]["resource"]["subject"]["reference"]
        .as_str()
        .unwrap();
    assert!(
        subject.ends_with(patients[0]["id"].as_str().unwrap()),
        "{subject}"
    );
}

#[test]
fn show_sections_and_json() {
    let phr = Phr::patient_named("Martha DeLarosa", "1972-05-01");
    phr.ok(&[
        "import",
        &fixtures()
            .join("ips/Bundle-IPS-examples-Bundle-01.json")
            .display()
            .to_string(),
    ]);
    snapshot(
        "show_sections",
        &phr,
        &[&["show", "clinical"], &["show", "nonsense"]],
    );
    let json: serde_json::Value = serde_json::from_str(&phr.ok(&["show", "--json"])).unwrap();
    let types: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["resourceType"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"AllergyIntolerance") && types.contains(&"Patient"),
        "{types:?}"
    );
    let bundle: serde_json::Value =
        serde_json::from_str(&phr.ok(&["export", "--section", "summary"])).unwrap();
    assert_eq!(bundle["type"], "collection");
}

#[test]
fn import_errors_name_the_place_and_change_nothing() {
    let phr = Phr::patient();
    let dir = phr.dir.path();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let malformed = write(
        "malformed.json",
        "{\n  \"resourceType\": \"Patient\",\n  \"id\": \"x\"\n  \"gender\": \"male\"\n}",
    );
    let not_fhir = write("not-fhir.json", "{\"name\": \"x\"}");
    let unknown = write(
        "unknown.json",
        "{\"resourceType\": \"Pateint\", \"id\": \"x\"}",
    );
    let broken = write(
        "broken.json",
        r#"{"resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Observation", "id": "o1", "subject": {"reference": "urn:uuid:2"}}}]}"#,
    );
    let bad_nhs = write(
        "bad-nhs.json",
        r#"{"resourceType": "Patient", "id": "p", "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "1234567890"}]}"#,
    );
    let empty = write("empty.json", "");
    // Invalid FHIR R4, each as the issue saw it stored and passed on before.
    let bad_date = write(
        "bad-date.json",
        r#"{"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "HbA1c"}, "effectiveDateTime": "2026-13-45"}}]}"#,
    );
    let bad_number = write(
        "bad-number.json",
        r#"{"resourceType": "Observation", "id": "o2", "status": "final", "code": {"text": "weight"}, "valueQuantity": {"value": "81.5", "unit": "kg"}}"#,
    );
    let null_value = write(
        "null.json",
        r#"{"resourceType": "Condition", "id": "c2", "code": {"text": "asthma"}, "onsetDateTime": null}"#,
    );
    let twice = write(
        "twice.json",
        "{\"resourceType\": \"Condition\", \"id\": \"c3\",\n \"code\": {\"text\": \"asthma\"}, \"code\": {\"text\": \"eczema\"}}",
    );
    let unborn = write(
        "unborn.json",
        r#"{"resourceType": "Condition", "id": "c4", "code": {"text": "asthma"}, "onsetDateTime": "2999-01-01"}"#,
    );
    let listed_code = write(
        "listed-code.json",
        r#"{"resourceType": "Condition", "id": "c5", "code": [{"text": "asthma"}]}"#,
    );
    let unknown_status = write(
        "unknown-status.json",
        r#"{"resourceType": "MedicationStatement", "id": "m1", "status": "taking", "medicationCodeableConcept": {"text": "Ramipril"}}"#,
    );
    let huge = dir.join("huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(65 * 1024 * 1024)
        .unwrap();
    let huge = huge.display().to_string();
    let good = write(
        "good.json",
        r#"{"resourceType": "Condition", "id": "c1", "code": {"text": "asthma"}}"#,
    );
    let before = phr.ok(&["export", "--section", "summary"]);
    let codes = snapshot(
        "import_errors",
        &phr,
        &[
            &["import", &malformed],
            &["import", &not_fhir],
            &["import", &unknown],
            &["import", &broken],
            &["import", &bad_nhs],
            &["import", &empty],
            &["import", &bad_date],
            &["import", &bad_number],
            &["import", &null_value],
            &["import", &twice],
            &["import", &unborn],
            &["import", &listed_code],
            &["import", &unknown_status],
            &["import", &huge],
            &["import", &good, &broken],
            &["import", "missing.json"],
        ],
    );
    assert_eq!(codes, [1; 16]);
    let strip_ids = |s: &str| {
        s.lines()
            .filter(|l| {
                !l.contains("\"id\"") && !l.contains("lastUpdated") && !l.contains("timestamp")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip_ids(&phr.ok(&["export", "--section", "summary"])),
        strip_ids(&before),
        "a failed import changed the record"
    );
}

#[test]
fn add_every_kind_and_read_history() {
    let phr = Phr::patient();
    let codes = snapshot(
        "add",
        &phr,
        &[
            &["add", "symptom", "headache", "--severity", "moderate"],
            &["add", "reading", "blood-pressure", "128/82"],
            &[
                "add",
                "allergy",
                "penicillin",
                "--reaction",
                "rash",
                "--criticality",
                "high",
            ],
            &["add", "condition", "asthma", "--since", "2015-06-01"],
            &[
                "add",
                "medication",
                "Salbutamol 100mcg inhaler",
                "--dosage",
                "2 puffs when needed",
            ],
            &["add", "note", "Felt dizzy after the new tablets"],
            &["add", "symptom", "low mood", "--sensitive"],
            &["add", "reading", "blood-pressure", "128"],
            &["add", "reading", "heart-rate", "900"],
            &["add", "sneeze", "x"],
            &["show"],
        ],
    );
    assert_eq!(codes, [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0]);
    // Newest first: entries added within one run may straddle a second, so check the lines,
    // not their order.
    let journal = phr.ok(&["show", "journal"]);
    assert!(journal.starts_with("Journal (3 entries)\n"), "{journal}");
    for line in [
        "Condition: headache (active, unconfirmed)",
        "DocumentReference: Felt dizzy after the new tablets",
        "Observation: Blood pressure: 128/82 mmHg",
    ] {
        assert!(journal.contains(line), "{line} missing from:\n{journal}");
    }
    let sensitive = phr.ok(&["show", "sensitive"]);
    assert!(sensitive.contains("low mood"), "{sensitive}");
    assert!(
        !journal.contains("low mood"),
        "a sensitive entry stays out of the journal"
    );
}

#[test]
fn history_conflicts_and_resolve() {
    let phr = Phr::patient();
    let added = phr.ok(&["--json", "add", "condition", "asthma"]);
    let added: serde_json::Value = serde_json::from_str(&added).unwrap();
    let key = added["added"].as_str().unwrap().to_string();
    let mut edited = added["resource"].clone();
    edited["note"] = serde_json::json!([{"text": "mild, exercise-induced"}]);
    let file = phr.dir.path().join("edit.json");
    std::fs::write(&file, edited.to_string()).unwrap();
    phr.ok(&["import", &file.display().to_string()]);
    let codes = snapshot(
        "history",
        &phr,
        &[
            &["history", &key],
            &["history", "Condition/nope"],
            &["history", "nonsense"],
            &["conflicts"],
            &["resolve", &key, "--keep", "1"],
        ],
    );
    assert_eq!(codes, [0, 1, 1, 0, 1]);
}

/// Makes a conflict the way two devices would: a second replica (another Automerge actor) of
/// the home's record and the home itself edit one resource, then the home merges the replica.
fn conflict_on(phr: &Phr, key: &str) {
    use phr_core::{Author, Record, Stamp, home::Home};
    let mut home = Home::open(&phr.home()).unwrap();
    let mut record = home.load_record().unwrap();
    let saved = record.save_compacted().into_iter().collect();
    let mut phone = Record::load(record.meta().clone(), &saved, &replica_actor(&home)).unwrap();
    let key: phr_core::fhir::reference::ResourceKey = key.parse().unwrap();
    // The edits come after the `add` and before the `resolve`, a millisecond apart, so the
    // versions list in a fixed order.
    let start = jiff::Timestamp::now();
    for (replica, author, note, time) in [
        (
            &mut record,
            Author {
                id: home.device().id.clone(),
                name: "Ada Lovelace".into(),
            },
            "worse at night",
            start,
        ),
        (
            &mut phone,
            Author {
                id: home.device().id.clone(),
                name: "Riverside Surgery".into(),
            },
            "salbutamol started",
            start + jiff::SignedDuration::from_millis(1),
        ),
    ] {
        let mut resource = replica.get(&key).unwrap().unwrap();
        resource["note"] = serde_json::json!([{"text": note}]);
        let stamp = Stamp {
            author: &author,
            time,
        };
        replica.put(stamp, &resource).unwrap();
        replica.commit(stamp, "edit");
    }
    record.merge(&mut phone).unwrap();
    home.save(&mut record, jiff::Timestamp::now()).unwrap();
}

/// Another Automerge actor of this home's device (the blobs it saves are signed by the device,
/// and a reader accepts only changes by the signer's actors); without sync (the next issue) this
/// is how a second replica can write into this home.
fn replica_actor(home: &phr_core::home::Home) -> automerge::ActorId {
    let mut bytes = phr_core::keys::unhex(&home.device().actor).unwrap()[..16].to_vec();
    bytes.extend_from_slice(&phr_core::keys::random_array::<8>());
    automerge::ActorId::from(bytes)
}

#[test]
fn conflicts_listed_and_resolved() {
    let phr = Phr::patient();
    let added: serde_json::Value =
        serde_json::from_str(&phr.ok(&["--json", "add", "condition", "asthma"])).unwrap();
    let key = added["added"].as_str().unwrap().to_string();
    conflict_on(&phr, &key);
    let codes = snapshot(
        "conflicts",
        &phr,
        &[
            &["conflicts"],
            &["add", "condition", "asthma"],
            &["resolve", &key, "--keep", "7"],
            &["resolve", &key, "--keep", "2"],
            &["conflicts"],
            &["history", &key],
        ],
    );
    assert_eq!(codes, [0, 0, 1, 0, 0, 0]);
    let conflicts: serde_json::Value =
        serde_json::from_str(&phr.ok(&["--json", "conflicts"])).unwrap();
    assert_eq!(conflicts, serde_json::json!([]));
}
