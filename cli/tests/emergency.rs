//! The emergency card through `phr`: the patient previews the summary and chooses what
//! sensitive entry it carries, makes the card (terminal, PNG, SVG, HTML), and a clinician with
//! no record reads it from the PNG's QR code, decoded by an independent reader (`zbarimg`, from
//! zbar-tools, which `.ci/run` installs). A changed code is refused.

mod common;

use std::process::Command;

use common::{Phr, fails, json};

/// A record with what a card carries: allergy, medicine, problem, a sensitive problem, a
/// resuscitation decision, a blood group, and an emergency contact.
fn patient_with_history() -> Phr {
    let phr = Phr::patient();
    let subject = phr.ok(&["--json", "export"]);
    let subject: serde_json::Value = serde_json::from_str(&subject).unwrap();
    let patient_id = subject["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut patient = subject["entry"][0]["resource"].clone();
    patient["contact"] = serde_json::json!([{
        "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "C"}],
            "text": "sister"}],
        "name": {"text": "Mary Lovelace"},
        "telecom": [{"system": "phone", "value": "07700 900002"}]}]);
    let active = serde_json::json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]});
    let subject_ref = serde_json::json!({"reference": format!("Patient/{patient_id}")});
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": patient},
        {"resource": {"resourceType": "AllergyIntolerance", "id": "pen", "code": {"text": "Penicillin"},
            "criticality": "high", "patient": subject_ref}},
        {"resource": {"resourceType": "MedicationStatement", "id": "warf", "status": "active",
            "medicationCodeableConcept": {"text": "Warfarin 3mg tablets"}, "subject": subject_ref}},
        {"resource": {"resourceType": "Condition", "id": "af", "code": {"text": "Atrial fibrillation"},
            "clinicalStatus": active, "subject": subject_ref}},
        {"resource": {"resourceType": "Condition", "id": "dep", "code": {"coding": [{"system": "http://snomed.info/sct",
            "code": "370143000", "display": "Major depressive disorder"}]}, "clinicalStatus": active, "subject": subject_ref}},
        {"resource": {"resourceType": "Flag", "id": "dnacpr", "status": "active", "code": {"coding": [
            {"system": "http://snomed.info/sct", "code": "304253006", "display": "Not for resuscitation"}]},
            "subject": subject_ref}},
        {"resource": {"resourceType": "Observation", "id": "abo", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "882-1", "display": "ABO and Rh group"}]},
            "valueCodeableConcept": {"text": "O negative"}, "subject": subject_ref}}
    ]});
    let file = phr.dir.path().join("history.json");
    std::fs::write(&file, bundle.to_string()).unwrap();
    phr.ok(&["import", file.to_str().unwrap()]);
    phr
}

fn zbarimg(png: &std::path::Path) -> String {
    let out = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(png)
        .output()
        .expect("zbarimg runs: install zbar-tools (`apt-get install zbar-tools`), as .ci/run does");
    assert!(
        out.status.success(),
        "zbarimg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

#[test]
fn a_card_made_by_the_patient_is_read_by_a_clinician_from_its_png_with_no_record() {
    let patient = patient_with_history();
    let preview = json(&patient, &["--json", "emergency"]);
    assert!(
        preview["allergies"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Penicillin")
    );
    assert_eq!(preview["decisions"][0]["key"], "Flag/dnacpr");
    assert_eq!(
        preview["sensitive_left_off"],
        serde_json::json!(["Condition/dep"])
    );
    let (code, shown, _, _) = patient.run_env(&["emergency"], &[("COLUMNS", "80")]);
    assert_eq!(code, 0);
    assert!(
        shown.contains("Blood group: ABO and Rh group: O negative"),
        "{shown}"
    );
    assert!(
        shown.contains("Mary Lovelace (sister): 07700 900002"),
        "{shown}"
    );
    assert!(!shown.contains("depressive"), "{shown}");
    assert!(shown.contains("phr emergency include ENTRY"), "{shown}");
    for line in shown.lines() {
        assert!(line.chars().count() <= 80, "wider than 80 columns: {line}");
    }

    let dir = patient.dir.path();
    let (png, svg, html) = (
        dir.join("card.png"),
        dir.join("card.svg"),
        dir.join("card.html"),
    );
    let made = json(
        &patient,
        &[
            "--json",
            "emergency",
            "card",
            "--png",
            png.to_str().unwrap(),
            "--svg",
            svg.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
    );
    let text = made["text"].as_str().unwrap().to_string();
    assert!(text.starts_with("PHRE1."), "{made}");
    assert_eq!(made["left_off_to_fit"], serde_json::json!([]));
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("EMERGENCY") && page.contains("Penicillin") && page.contains("<svg"));

    // A clinician with no phr record: the QR code decoded by an independent reader, then read.
    let decoded = zbarimg(&png);
    assert_eq!(decoded, text, "the PNG's code holds the card");
    let clinician = Phr::new();
    let read = clinician.ok(&["emergency", "open", &decoded]);
    for fact in [
        "Penicillin",
        "Warfarin 3mg tablets",
        "Atrial fibrillation",
        "Not for resuscitation",
        "O negative",
        "Mary Lovelace (07700 900002)",
    ] {
        assert!(read.contains(fact), "{fact} missing from: {read}");
    }
    assert!(!read.contains("depressive"), "{read}");

    // One character changed: refused as damaged, nothing shown.
    let mut changed: Vec<char> = decoded.chars().collect();
    let at = changed.len() - 40;
    changed[at] = if changed[at] == 'x' { 'y' } else { 'x' };
    let changed: String = changed.into_iter().collect();
    let refused = fails(&clinician, &["emergency", "open", &changed]);
    assert!(refused.contains("damaged or was changed"), "{refused}");

    // The patient chooses to carry the sensitive entry; the next card carries it.
    patient.ok(&["emergency", "include", "Condition/dep"]);
    let made = json(&patient, &["--json", "emergency", "card"]);
    let read = clinician.ok(&["emergency", "open", made["text"].as_str().unwrap()]);
    assert!(read.contains("Major depressive disorder"), "{read}");
    patient.ok(&["emergency", "exclude", "Condition/dep"]);
    let refused = fails(&patient, &["emergency", "include", "Condition/af"]);
    assert!(refused.contains("not a sensitive entry"), "{refused}");
}
