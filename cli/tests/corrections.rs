//! Correcting the record: `phr amend`, `phr stop`, `phr recovered`, `phr entered-in-error`, by
//! the patient and by a clinician within a grant. Each writes a new version; the one before
//! stays in `phr history`, and the summary says what it leaves out.

mod common;

use common::{Phr, Transcript, accept_pending, card, grant_gp_write, provider, sync::sync_homes};
use serde_json::Value;

/// The `Type/id` of the one resource of `resource_type` in `section` whose description holds
/// `text`.
fn key_of(phr: &Phr, section: &str, resource_type: &str, text: &str) -> String {
    let listed: Value = serde_json::from_str(&phr.ok(&["--json", "show", section])).unwrap();
    let found: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["resourceType"] == resource_type && r.to_string().contains(text))
        .map(|r| format!("{resource_type}/{}", r["id"].as_str().unwrap()))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// A patient's entries as a practice's system might export them.
const ENTRIES: &str = r#"{"resourceType": "Bundle", "type": "collection", "entry": [
  {"resource": {"resourceType": "MedicationStatement", "id": "naproxen", "status": "active",
    "medicationCodeableConcept": {"text": "Naproxen 250mg tablets"},
    "effectiveDateTime": "2026-06-01", "dosage": [{"text": "1 twice a day"}]}},
  {"resource": {"resourceType": "MedicationStatement", "id": "omeprazole", "status": "active",
    "medicationCodeableConcept": {"text": "Omeprazole 20mg capsules"},
    "effectiveDateTime": "2026-06-02"}},
  {"resource": {"resourceType": "Condition", "id": "sprain",
    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
    "code": {"text": "ankle sprain"}, "onsetDateTime": "2026-10-01"}},
  {"resource": {"resourceType": "AllergyIntolerance", "id": "penicillin",
    "code": {"text": "penicilin"}, "recordedDate": "2020-01-05",
    "reaction": [{"manifestation": [{"text": "rash"}]}]}},
  {"resource": {"resourceType": "AllergyIntolerance", "id": "peanuts",
    "code": {"text": "peanuts"}, "recordedDate": "2021-02-06",
    "reaction": [{"manifestation": [{"text": "hives"}]}]}}
]}"#;

#[test]
fn a_patient_stops_resolves_amends_and_marks_errors_and_history_keeps_every_version() {
    let patient = Phr::patient();
    // Fixed ids, so that entries of one date list in the same order on every run.
    let entries = patient.dir.path().join("entries.json");
    std::fs::write(&entries, ENTRIES).unwrap();
    patient.ok(&["import", entries.to_str().unwrap()]);
    let naproxen = "MedicationStatement/naproxen";
    let penicillin = "AllergyIntolerance/penicillin";

    let mut t = Transcript::default();
    t.run(&patient, &["show"]);
    t.note("a medicine named by part of its name; then again (refused: nothing to change)");
    t.run(
        &patient,
        &[
            "stop",
            "naproxen",
            "--date",
            "2026-12-01",
            "--reason",
            "stomach pain",
        ],
    );
    t.run(&patient, &["stop", "naproxen"]);
    t.note("a name that matches several entries is refused, listing them");
    t.run(&patient, &["entered-in-error", "a"]);
    t.run(&patient, &["recovered", "sprain", "--date", "2026-11-20"]);
    t.run(&patient, &["recovered", "omeprazole"]);
    t.run(
        &patient,
        &["amend", penicillin, "--set", "code.text=penicillin"],
    );
    t.run(&patient, &["amend", penicillin, "--set", "id=other"]);
    t.run(
        &patient,
        &[
            "entered-in-error",
            "peanuts",
            "--reason",
            "my brother's allergy",
        ],
    );
    t.run(&patient, &["show"]);
    t.run(&patient, &["show", "summary"]);
    t.run(&patient, &["history", naproxen]);
    let codes = t.finish("corrections");
    assert_eq!(codes, [0, 0, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0]);

    // The FHIR written: a stopped statement with its period, a resolved condition, an allergy
    // in error with no clinical status (ait-2).
    let stopped: Value =
        serde_json::from_str(&patient.ok(&["--json", "history", naproxen])).unwrap();
    let last = &stopped["versions"][1]["resource"];
    assert_eq!(last["status"], "stopped");
    assert_eq!(last["effectivePeriod"]["end"], "2026-12-01");
    assert_eq!(last["statusReason"][0]["text"], "stomach pain");
    let summary: Value = serde_json::from_str(&patient.ok(&["--json", "show", "summary"])).unwrap();
    let peanuts = summary
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r.to_string().contains("peanuts"))
        .unwrap();
    assert_eq!(
        peanuts["verificationStatus"]["coding"][0]["code"],
        "entered-in-error"
    );
    assert!(peanuts.get("clinicalStatus").is_none());
}

#[test]
fn a_clinician_corrects_within_the_grant_and_a_reader_is_refused_with_nothing_stored() {
    let patient = Phr::patient();
    patient.ok(&["add", "medication", "Ramipril 5mg capsules"]);
    let gp = grant_gp_write(&patient);
    let pharmacy = provider("High Street Pharmacy", "FA123");
    patient.ok(&["contacts", "add", &card(&pharmacy), "--alias", "pharmacy"]);
    patient.ok(&[
        "share",
        "grant",
        "pharmacy",
        "--sections",
        "summary",
        "--access",
        "read",
    ]);
    sync_homes(&patient.home(), &gp.home());
    sync_homes(&patient.home(), &pharmacy.home());
    let id = accept_pending(&gp).remove(0);
    accept_pending(&pharmacy);

    let (code, _, stderr, _) =
        pharmacy.run(&["--patient", &id, "stop", "ramipril", "--reason", "cough"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("may not write"), "{stderr}");

    let stopped = gp.ok(&[
        "--patient",
        &id,
        "stop",
        "ramipril",
        "--reason",
        "dry cough",
    ]);
    assert!(
        stopped.contains("Stopped MedicationStatement/"),
        "{stopped}"
    );
    sync_homes(&patient.home(), &gp.home());
    let shown = patient.ok(&["show"]);
    assert!(!shown.contains("Ramipril"), "{shown}");
    let ramipril = key_of(&patient, "summary", "MedicationStatement", "Ramipril");
    let history = patient.ok(&["history", &ramipril]);
    assert!(history.contains("by Riverside Surgery"), "{history}");
    assert!(
        history.contains("Ramipril 5mg capsules [stopped]"),
        "{history}"
    );
    // The patient sees who changed it.
    let audit = patient.ok(&["audit"]);
    assert!(audit.contains("stop"), "{audit}");
}

#[test]
fn a_gps_reading_is_a_clinical_observation_flagged_against_the_clinic_threshold() {
    let patient = Phr::patient();
    let gp = grant_gp_write(&patient);
    sync_homes(&patient.home(), &gp.home());
    let id = accept_pending(&gp).remove(0);
    let added = gp.ok(&[
        "--patient",
        &id,
        "add",
        "reading",
        "blood-pressure",
        "150/95",
    ]);
    assert!(added.contains("to clinical"), "{added}");
    sync_homes(&patient.home(), &gp.home());
    let shown = patient.ok(&["show"]);
    let line = shown
        .lines()
        .find(|l| l.contains("150/95"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(!line.contains("home reading"), "{line}");
    assert!(line.contains("HIGH") || line.contains("high"), "{line}");
    let clinical: Value =
        serde_json::from_str(&patient.ok(&["--json", "show", "clinical"])).unwrap();
    let observation = clinical
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resourceType"] == "Observation")
        .unwrap();
    assert_eq!(observation["performer"][0]["display"], "Riverside Surgery");
}

#[test]
fn an_import_is_undone_and_the_record_shows_what_it_did_before() {
    let patient = Phr::patient();
    patient.ok(&["add", "allergy", "latex", "--reaction", "rash"]);
    let before: Value = serde_json::from_str(&patient.ok(&["--json", "export"])).unwrap();
    let entries = patient.dir.path().join("entries.json");
    std::fs::write(&entries, ENTRIES).unwrap();
    let mut t = Transcript::default();
    t.run(&patient, &["import", entries.to_str().unwrap()]);
    let listed: Value = serde_json::from_str(&patient.ok(&["--json", "imports"])).unwrap();
    let id = listed[0]["import"].as_str().unwrap().to_string();
    t.run(&patient, &["imports"]);
    t.note("a later correction is left as it is");
    t.run(&patient, &["stop", "naproxen"]);
    t.run(&patient, &["imports", "undo", &id]);
    t.run(&patient, &["show"]);
    t.run(&patient, &["history", "AllergyIntolerance/peanuts"]);
    t.run(&patient, &["imports", "undo", &id]);
    t.run(&patient, &["imports", "undo", "nosuchid"]);
    let codes = t.finish("imports_undo");
    assert_eq!(codes, [0, 0, 0, 0, 0, 0, 0, 1]);
    // Everything but the stopped medicine is as it was before the import.
    let after: Value = serde_json::from_str(&patient.ok(&["--json", "export"])).unwrap();
    let keys = |bundle: &Value| -> Vec<String> {
        let mut keys: Vec<String> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["fullUrl"].as_str().unwrap().to_string())
            .collect();
        keys.sort();
        keys
    };
    let mut expected = keys(&before);
    expected.push("https://phr.invalid/fhir/MedicationStatement/naproxen".into());
    expected.sort();
    assert_eq!(keys(&after), expected);
}

#[test]
fn a_clinician_undoes_its_own_import_within_the_grant_and_not_the_patients() {
    let patient = Phr::patient();
    let entries = patient.dir.path().join("entries.json");
    std::fs::write(&entries, ENTRIES).unwrap();
    patient.ok(&["import", entries.to_str().unwrap()]);
    let gp = grant_gp_write(&patient);
    sync_homes(&patient.home(), &gp.home());
    let id = accept_pending(&gp).remove(0);
    // The GP imports an HbA1c result into the patient's record, then takes it back.
    let hba1c = gp.dir.path().join("hba1c.json");
    std::fs::write(
        &hba1c,
        r#"{"resourceType": "Observation", "id": "hba1c", "status": "final",
            "code": {"text": "HbA1c"}, "effectiveDateTime": "2025-03-01",
            "valueQuantity": {"value": 48, "unit": "mmol/mol"}}"#,
    )
    .unwrap();
    gp.ok(&["--patient", &id, "import", hba1c.to_str().unwrap()]);
    let listed: Value =
        serde_json::from_str(&gp.ok(&["--json", "--patient", &id, "imports"])).unwrap();
    let imports: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["import"].as_str().unwrap(), i["author"].as_str().unwrap()))
        .collect();
    let (gps, _) = *imports
        .iter()
        .find(|(_, author)| *author == "Riverside Surgery")
        .unwrap_or_else(|| panic!("{imports:?}"));
    let (patients, _) = *imports
        .iter()
        .find(|(_, author)| *author != "Riverside Surgery")
        .unwrap_or_else(|| panic!("{imports:?}"));
    // The patient's import is not the GP's to take back: refused, nothing changed.
    let (code, _, stderr, _) = gp.run(&["--patient", &id, "imports", "undo", patients]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not by this node"), "{stderr}");
    let undone = gp.ok(&["--patient", &id, "imports", "undo", gps]);
    assert!(undone.contains("1 entries removed"), "{undone}");
    assert!(undone.contains("logged to the patient"), "{undone}");
    // The patient's devices see the result gone, the history kept, and who did it.
    sync_homes(&patient.home(), &gp.home());
    let shown = patient.ok(&["show", "clinical"]);
    assert!(!shown.contains("HbA1c"), "{shown}");
    let history = patient.ok(&["history", "Observation/hba1c"]);
    assert!(history.contains("removed"), "{history}");
    assert!(history.contains("by Riverside Surgery"), "{history}");
    let audit = patient.ok(&["audit"]);
    assert!(audit.contains(&format!("undo import {gps}")), "{audit}");
    // The patient's own import is still there.
    let still: Value = serde_json::from_str(&patient.ok(&["--json", "imports"])).unwrap();
    assert!(still.to_string().contains(patients), "{still}");
}
