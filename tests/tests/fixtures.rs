//! The real FHIR fixtures through import and export: nothing lost, nothing duplicated.

use std::collections::HashMap;

use phr_core::{Section, export, home::Home, import::ImportError};
use phr_tests::{
    expected_in_record, fixture_files, import_file, import_file_as, largest_fixture, patient_home,
    patient_home_for, test_time,
};
use serde_json::{Value, json};

fn exported_by_key(bundle: &Value) -> HashMap<String, Value> {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let r = &e["resource"];
            (
                format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap(),
                    r["id"].as_str().unwrap()
                ),
                r.clone(),
            )
        })
        .collect()
}

#[test]
fn every_fixture_round_trips_through_import_and_export() {
    for path in fixture_files() {
        let dir = tempfile::tempdir().unwrap();
        let (mut home, mut record) = patient_home_for(dir.path(), &path);
        let (own, before) = phr_core::identity::record_patient(&record)
            .unwrap()
            .unwrap();
        let report = import_file(&mut home, &mut record, &path).unwrap_or_else(|e| panic!("{e}"));
        let input: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let (expected, patient) = expected_in_record(&input, &own.to_string());
        // Every resource but the Patient is new; the Patient is merged into the record's own.
        assert_eq!(report.added, expected.len(), "{}", path.display());
        assert_eq!(report.updated, 1, "{}", path.display());
        assert_eq!(report.merged.len(), 1, "{}", path.display());
        drop((home, record));
        // Reopen from disk: what comes back is what was stored, not what was in memory.
        let record = Home::open(dir.path()).unwrap().load_record().unwrap();
        let exported = export::collection(&record, &Section::ALL, test_time()).unwrap();
        let got = exported_by_key(&exported.bundle);
        for (key, resource) in &expected {
            assert_eq!(
                got.get(key),
                Some(resource),
                "{} {key} differs after import then export",
                path.display()
            );
        }
        // One Patient: the record's own, holding every element of the file's and keeping its
        // own name.
        assert_eq!(got.len(), expected.len() + 1, "{}", path.display());
        let merged = &got[&own.to_string()];
        assert_eq!(merged["name"][0], before["name"][0]);
        for (field, value) in patient.as_object().unwrap() {
            if matches!(field.as_str(), "id" | "meta" | "text") {
                continue;
            }
            match value {
                Value::Array(items) => {
                    for item in items {
                        assert!(
                            merged[field].as_array().unwrap().contains(item),
                            "{} {field} lost {item}",
                            path.display()
                        );
                    }
                }
                other => assert_eq!(&merged[field], other, "{} {field}", path.display()),
            }
        }
    }
}

/// Five people's files into one record (issue 14): the first is the record's patient and is
/// merged; each of the others is refused, naming both people, and leaves the record as it was.
/// Said to be the same person, one is merged.
#[test]
fn other_peoples_files_are_refused_and_the_record_keeps_one_patient() {
    let dir = tempfile::tempdir().unwrap();
    let (mut home, mut record) = patient_home(dir.path());
    import_file(&mut home, &mut record, &largest_fixture()).unwrap();
    let heads = record.heads();
    let others: Vec<_> = fixture_files()
        .into_iter()
        .filter(|p| *p != largest_fixture())
        .collect();
    assert!(others.len() >= 4);
    for path in &others {
        let err = import_file(&mut home, &mut record, path).unwrap_err();
        let (name, born) = phr_tests::fixture_patient(path);
        let text = err.to_string();
        assert!(matches!(err, ImportError::NotThisPatient { .. }), "{text}");
        assert!(
            text.contains(&format!("about {name}, born {born}")),
            "{text}"
        );
        assert!(
            text.contains("this record is about Fletcher Hyatt, born 1915-07-03"),
            "{text}"
        );
        assert!(text.contains("--same-person"), "{text}");
        assert_eq!(record.heads(), heads, "{}", path.display());
    }
    let patients = record
        .resources_of_type(Section::Summary, "Patient")
        .unwrap();
    assert_eq!(patients.len(), 1);
    // The user says it is the same person (a name changed by marriage, say).
    let report = import_file_as(
        &mut home,
        &mut record,
        &others[0],
        phr_core::import::ImportOptions { same_person: true },
    )
    .unwrap();
    assert_eq!(report.merged.len(), 1);
    let patients = record
        .resources_of_type(Section::Summary, "Patient")
        .unwrap();
    assert_eq!(patients.len(), 1);
}

#[test]
fn reimporting_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut home, mut record) = patient_home(dir.path());
    import_file(&mut home, &mut record, &largest_fixture()).unwrap();
    let heads = record.heads();
    let vault = || std::fs::read(dir.path().join(phr_core::vault::VAULT_FILE)).unwrap();
    let before = vault();
    let report = import_file(&mut home, &mut record, &largest_fixture()).unwrap();
    assert_eq!((report.added, report.updated), (0, 0));
    assert_eq!(report.unchanged, 1111);
    assert_eq!(record.heads(), heads, "no new Automerge change");
    assert!(vault() == before, "nothing new on disk");
}

#[test]
fn exported_bundle_reimports_into_an_identical_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut home, mut record) = patient_home(dir.path());
    import_file(&mut home, &mut record, &largest_fixture()).unwrap();
    let exported = export::collection(&record, &Section::ALL, test_time()).unwrap();
    let file = dir.path().join("export.json");
    std::fs::write(&file, serde_json::to_vec(&exported.bundle).unwrap()).unwrap();
    let heads = record.heads();
    let report = import_file(&mut home, &mut record, &file).unwrap();
    assert_eq!(
        report.added + report.updated,
        0,
        "our own export is already in the record"
    );
    assert_eq!(record.heads(), heads);
}

#[test]
fn a_failing_import_leaves_the_record_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (mut home, mut record) = patient_home(dir.path());
    import_file(&mut home, &mut record, &largest_fixture()).unwrap();
    let before = export::collection(&record, &Section::ALL, test_time())
        .unwrap()
        .bundle["entry"]
        .clone();
    let heads = record.heads();

    // A real lifetime record with one broken reference near its end: everything before it
    // checks out, and still nothing of it may land.
    let mut bundle: Value =
        serde_json::from_slice(&std::fs::read(largest_fixture()).unwrap()).unwrap();
    let last = bundle["entry"].as_array().unwrap().len() - 1;
    bundle["entry"][last]["resource"]["subject"] =
        json!({"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"});
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let err = import_file(&mut home, &mut record, &broken).unwrap_err();
    assert!(matches!(err, ImportError::BrokenReference { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("entry {last} (")),
        "{err}"
    );

    // A Patient of another NHS number at the end of the file, after 1,110 resources that would
    // be put: refused, and nothing of the file lands.
    let nhs_dir = tempfile::tempdir().unwrap();
    let patient = phr_core::home::NewPatient {
        name: "Fletcher Hyatt".into(),
        nhs_number: Some(phr_core::nhs::NhsNumber::parse("9434765919").unwrap()),
        birth_date: Some("1915-07-03".parse().unwrap()),
        device_label: None,
    };
    let (mut nhs_home, mut nhs_record) =
        Home::init_patient(nhs_dir.path(), &patient, None, test_time()).unwrap();
    let nhs_heads = nhs_record.heads();
    let mut other: Value =
        serde_json::from_slice(&std::fs::read(largest_fixture()).unwrap()).unwrap();
    other["entry"].as_array_mut().unwrap().push(
        json!({"resource": {"resourceType": "Patient", "id": "someone-else",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "4010232137"}]}}),
    );
    let other_file = nhs_dir.path().join("other.json");
    std::fs::write(&other_file, serde_json::to_vec(&other).unwrap()).unwrap();
    let err = import_file(&mut nhs_home, &mut nhs_record, &other_file).unwrap_err();
    assert!(
        err.to_string()
            .contains("belongs to NHS number 943 476 5919"),
        "{err}"
    );
    assert_eq!(
        nhs_record.heads(),
        nhs_heads,
        "the 1,111 resources put before the failure were rolled back"
    );
    drop((nhs_home, nhs_record));
    let reopened = Home::open(nhs_dir.path()).unwrap().load_record().unwrap();
    assert_eq!(reopened.len(Section::Clinical), 0);

    assert_eq!(record.heads(), heads);
    drop((home, record));
    let reopened = Home::open(dir.path()).unwrap().load_record().unwrap();
    let after = export::collection(&reopened, &Section::ALL, test_time())
        .unwrap()
        .bundle["entry"]
        .clone();
    assert_eq!(before, after);
}

#[test]
fn ips_export_of_a_lifetime_record_is_a_document_with_the_required_sections() {
    let dir = tempfile::tempdir().unwrap();
    let (mut home, mut record) = patient_home(dir.path());
    import_file(&mut home, &mut record, &largest_fixture()).unwrap();
    let ips = export::ips(&record, &[Section::Summary, Section::Clinical], test_time())
        .unwrap()
        .bundle;
    assert_eq!(ips["type"], "document");
    let composition = &ips["entry"][0]["resource"];
    assert_eq!(composition["resourceType"], "Composition");
    let codes: Vec<&str> = composition["section"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["code"]["coding"][0]["code"].as_str().unwrap())
        .collect();
    for required in ["11450-4", "48765-2", "10160-0"] {
        assert!(codes.contains(&required), "{codes:?}");
    }
    // Every reference a section makes resolves to an entry of the document.
    let urls: Vec<&str> = ips["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["fullUrl"].as_str().unwrap())
        .collect();
    for section in composition["section"].as_array().unwrap() {
        for entry in section["entry"].as_array().unwrap() {
            let target = format!(
                "{}{}",
                export::FULL_URL_BASE,
                entry["reference"].as_str().unwrap()
            );
            assert!(urls.contains(&target.as_str()), "{target} missing");
        }
    }
}

/// Every `reference` anywhere in `value`.
fn all_references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match child {
                    Value::String(r) if key == "reference" => out.push(r.clone()),
                    _ => all_references(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| all_references(i, out)),
        _ => {}
    }
}

#[test]
fn every_reference_in_every_fixtures_ips_resolves_within_the_document() {
    for path in fixture_files() {
        let dir = tempfile::tempdir().unwrap();
        let (mut home, mut record) = patient_home_for(dir.path(), &path);
        import_file(&mut home, &mut record, &path).unwrap();
        let ips = export::ips(&record, &[Section::Summary, Section::Clinical], test_time())
            .unwrap()
            .bundle;
        let entries = ips["entry"].as_array().unwrap();
        let carried: std::collections::BTreeSet<String> = entries
            .iter()
            .map(|e| {
                let url = e["fullUrl"].as_str().unwrap();
                url.strip_prefix(export::FULL_URL_BASE).unwrap().to_string()
            })
            .collect();
        let mut references = Vec::new();
        for entry in entries {
            all_references(&entry["resource"], &mut references);
        }
        assert!(!references.is_empty(), "{}", path.display());
        for reference in &references {
            assert!(
                reference.starts_with('#') || carried.contains(reference),
                "{}: {reference} does not resolve within the IPS",
                path.display()
            );
        }
        // One Patient, and it is the Composition's subject.
        let patients: Vec<&Value> = entries
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "Patient")
            .collect();
        assert_eq!(patients.len(), 1, "{}", path.display());
        let subject = format!(
            "Patient/{}",
            patients[0]["resource"]["id"].as_str().unwrap()
        );
        assert_eq!(
            entries[0]["resource"]["subject"]["reference"],
            subject.as_str()
        );
    }
}

#[test]
fn the_ips_says_when_sensitive_entries_are_withheld_without_saying_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let (mut home, mut record) = patient_home(dir.path());
    let sensitive = serde_json::json!({"resourceType": "Condition", "id": "hiv",
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]},
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"text": "HIV infection"}});
    let file = dir.path().join("sensitive.json");
    std::fs::write(&file, sensitive.to_string()).unwrap();
    import_file(&mut home, &mut record, &file).unwrap();
    assert_eq!(
        record.len(Section::Sensitive),
        1,
        "the entry is in sensitive"
    );
    let ips = export::ips(&record, &[Section::Summary, Section::Clinical], test_time())
        .unwrap()
        .bundle;
    let text = ips.to_string();
    assert!(
        !text.contains("HIV"),
        "the withheld entry is not in the IPS"
    );
    let problems = &ips["entry"][0]["resource"]["section"][0];
    assert_eq!(problems["code"]["coding"][0]["code"], "11450-4");
    assert!(
        problems["text"]["div"]
            .as_str()
            .unwrap()
            .contains("withheld at the patient's request"),
        "{problems}"
    );
    // Exported with the sensitive section, it is listed and nothing is said withheld.
    let with_it = export::ips(
        &record,
        &[Section::Summary, Section::Clinical, Section::Sensitive],
        test_time(),
    )
    .unwrap()
    .bundle;
    assert!(with_it.to_string().contains("HIV infection"));
    assert!(
        !with_it["entry"][0]["resource"]["section"][0]["text"]["div"]
            .as_str()
            .unwrap()
            .contains("withheld")
    );
}

#[test]
fn undoing_an_import_gives_back_the_records_export_exactly_and_history_keeps_it_all() {
    for path in fixture_files() {
        let dir = tempfile::tempdir().unwrap();
        let (mut home, mut record) = patient_home_for(dir.path(), &path);
        let export_of = |record: &phr_core::Record| {
            export::collection(record, &Section::ALL, test_time())
                .unwrap()
                .bundle["entry"]
                .clone()
        };
        let before = export_of(&record);
        let report = import_file(&mut home, &mut record, &path).unwrap();
        assert_ne!(export_of(&record), before, "{}", path.display());
        let imports = record.imports().unwrap();
        assert_eq!(imports.len(), 1, "{imports:?}");
        assert_eq!(imports[0].id, report.import);
        assert_eq!(imports[0].current, report.added + report.updated);

        let author = home.device().author();
        let stamp = phr_core::record::Stamp {
            author: &author,
            time: test_time(),
        };
        let undone = record.undo_import(stamp, &report.import).unwrap();
        record.commit(stamp, "undo");
        home.save(&mut record, test_time()).unwrap();
        assert_eq!(undone.removed, report.added, "{}", path.display());
        assert_eq!(undone.restored, report.updated, "{}", path.display());
        assert!(undone.left.is_empty());
        drop((home, record));

        // From disk, the export is what it was before the import.
        let mut home = Home::open(dir.path()).unwrap();
        let mut record = home.load_record().unwrap();
        assert_eq!(export_of(&record), before, "{}", path.display());
        assert!(record.imports().unwrap().is_empty());
        assert!(record.conflicts().unwrap().is_empty());
        // History keeps what the import wrote, and its removal.
        let input: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let added = input["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| phr_core::fhir::reference::ResourceKey::of(&e["resource"]))
            .find(|k| k.resource_type != "Patient")
            .unwrap();
        let history = record.history(&added).unwrap();
        assert_eq!(history.len(), 2, "{added}: {history:#?}");
        assert!(
            history
                .iter()
                .any(|v| v.import.as_deref() == Some(report.import.as_str()))
        );
        assert!(history.iter().any(|v| v.removed.is_some()));
        assert!(record.get(&added).unwrap().is_none());
        // Undone twice is nothing more; imported again, it is all back.
        let stamp = phr_core::record::Stamp {
            author: &author,
            time: test_time(),
        };
        assert_eq!(
            record.undo_import(stamp, &report.import).unwrap(),
            Default::default()
        );
        let again = import_file(&mut home, &mut record, &path).unwrap();
        assert_eq!(again.added, report.added, "{}", path.display());
        assert!(record.get(&added).unwrap().is_some());
    }
}
