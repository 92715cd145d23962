//! Repeat prescriptions end to end through `phr`, the record moving between homes by the real
//! sync sessions (in process, no network): the practice sets a repeat up, the patient orders
//! it for a nominated pharmacy, the practice issues it, the pharmacy records it dispensed, and
//! the patient sees each step. Orders with no issues left are refused with what to do; a
//! pharmacy not nominated cannot mark an order dispensed.

mod common;

use common::{Phr, accept_pending, card, fails, json, provider, sync::sync_homes, taken_on_by};
use serde_json::Value;

/// The only repeat `phr repeats --json` lists.
fn repeat(phr: &Phr, patient: Option<&str>) -> Value {
    let mut args = vec!["--json"];
    if let Some(record) = patient {
        args.extend(["--patient", record]);
    }
    args.push("repeats");
    let all = json(phr, &args);
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    all[0].clone()
}

#[test]
fn the_patient_orders_a_repeat_the_practice_issues_it_and_the_nominated_pharmacy_dispenses_it() {
    let patient = Phr::patient();
    let gp = provider("Riverside Surgery", "A81001");
    let pharmacy = provider("High Street Pharmacy", "FA123");
    patient.ok(&["contacts", "add", &card(&gp), "--alias", "gp"]);
    patient.ok(&["contacts", "add", &card(&pharmacy), "--alias", "pharmacy"]);
    patient.ok(&[
        "share",
        "grant",
        "gp",
        "--sections",
        "summary,requests",
        "--access",
        "write",
    ]);
    patient.ok(&[
        "share",
        "grant",
        "pharmacy",
        "--sections",
        "summary",
        "--access",
        "read",
    ]);
    patient.ok(&[
        "share",
        "grant",
        "pharmacy",
        "--sections",
        "requests",
        "--access",
        "write",
    ]);
    sync_homes(&patient.home(), &gp.home());
    sync_homes(&patient.home(), &pharmacy.home());
    let record = accept_pending(&gp).remove(0);
    accept_pending(&pharmacy);

    gp.ok(&[
        "--patient",
        &record,
        "repeats",
        "add",
        "Salbutamol 100micrograms/dose inhaler",
        "--issues",
        "2",
        "--review",
        "2099-01-01",
        "--dosage",
        "2 puffs when needed",
    ]);
    sync_homes(&gp.home(), &patient.home());
    let shown = patient.ok(&["repeats"]);
    assert!(
        shown.contains("Salbutamol 100micrograms/dose inhaler"),
        "{shown}"
    );
    assert!(
        shown.contains("2 of 2 issues left, review by 2099-01-01"),
        "{shown}"
    );
    let plan = repeat(&patient, None)["id"].as_str().unwrap().to_string();

    // The patient orders it, to collect from the pharmacy; a second order waits for the first.
    patient.ok(&["repeats", "order", &plan[..8], "--pharmacy", "FA123"]);
    let refused = fails(&patient, &["repeats", "order", &plan[..8]]);
    assert!(refused.contains("already waiting"), "{refused}");
    sync_homes(&patient.home(), &gp.home());

    // The practice sees the order waiting and issues it.
    let at_gp = repeat(&gp, Some(&record));
    assert_eq!(at_gp["orders"][0]["status"], "requested", "{at_gp}");
    assert_eq!(at_gp["orders"][0]["pharmacy"], "FA123");
    let order = at_gp["orders"][0]["id"].as_str().unwrap().to_string();
    let issued = gp.ok(&["--patient", &record, "repeats", "issue", &order[..8]]);
    assert!(issued.contains("1 of 2 issues left"), "{issued}");
    let refused = fails(
        &gp,
        &["--patient", &record, "repeats", "issue", &order[..8]],
    );
    assert!(refused.contains("already completed"), "{refused}");

    // The pharmacy sees the issued order and records it dispensed; the patient sees it all.
    sync_homes(&gp.home(), &patient.home());
    sync_homes(&patient.home(), &pharmacy.home());
    let at_pharmacy = repeat(&pharmacy, Some(&record));
    assert_eq!(
        at_pharmacy["orders"][0]["status"], "completed",
        "{at_pharmacy}"
    );
    pharmacy.ok(&["--patient", &record, "repeats", "dispensed", &order[..8]]);
    let again = fails(
        &pharmacy,
        &["--patient", &record, "repeats", "dispensed", &order[..8]],
    );
    assert!(again.contains("already dispensed"), "{again}");
    sync_homes(&pharmacy.home(), &patient.home());
    let shown = patient.ok(&["repeats"]);
    assert!(shown.contains("1 of 2 issues left"), "{shown}");
    assert!(
        shown.contains("issued, dispensed by High Street Pharmacy"),
        "{shown}"
    );
    // The issued prescription is one line of the summary's medicines, not two, and the
    // medicines check does not take the repeat and its issue for one medicine taken twice.
    let summary = patient.ok(&["show"]);
    assert_eq!(summary.matches("Salbutamol").count(), 1, "{summary}");
    let checked = json(&patient, &["--json", "medicines", "check"]);
    assert_eq!(checked["findings"], serde_json::json!([]), "{checked}");

    // A second order, nominated elsewhere: this pharmacy may not dispense it.
    patient.ok(&["repeats", "order", &plan[..8], "--pharmacy", "FZ999"]);
    sync_homes(&patient.home(), &gp.home());
    let second = repeat(&gp, Some(&record))["orders"][1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    gp.ok(&["--patient", &record, "repeats", "issue", &second[..8]]);
    sync_homes(&gp.home(), &patient.home());
    sync_homes(&patient.home(), &pharmacy.home());
    let refused = fails(
        &pharmacy,
        &["--patient", &record, "repeats", "dispensed", &second[..8]],
    );
    assert!(
        refused.contains("pharmacy FZ999, not this one (FA123)"),
        "{refused}"
    );

    // Every issue used: the patient is told to ask for a review.
    let refused = fails(&patient, &["repeats", "order", &plan[..8]]);
    assert!(
        refused.contains("every issue of your Salbutamol"),
        "{refused}"
    );
    assert!(refused.contains("phr messages send"), "{refused}");

    // Each practice and pharmacy step reached the patient's audit.
    sync_homes(&gp.home(), &patient.home());
    let audit = patient.ok(&["audit"]);
    assert!(audit.contains("repeats issue"), "{audit}");
    assert!(audit.contains("repeats dispensed"), "{audit}");
}

#[test]
fn a_refused_order_tells_the_patient_why_and_a_reader_only_practice_cannot_issue() {
    let patient = Phr::patient();
    let gp = provider("Riverside Surgery", "A81001");
    let record = taken_on_by(&patient, &gp, "summary,requests");
    gp.ok(&[
        "--patient",
        &record,
        "repeats",
        "add",
        "Ramipril 5mg capsules",
        "--issues",
        "3",
        "--review",
        "2099-01-01",
    ]);
    sync_homes(&gp.home(), &patient.home());
    let plan = repeat(&patient, None)["id"].as_str().unwrap().to_string();
    patient.ok(&["repeats", "order", &plan]);
    sync_homes(&patient.home(), &gp.home());
    let order = repeat(&gp, Some(&record))["orders"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    gp.ok(&[
        "--patient",
        &record,
        "repeats",
        "reject",
        &order,
        "--reason",
        "Please book a blood pressure check first",
    ]);
    sync_homes(&gp.home(), &patient.home());
    let shown = patient.ok(&["repeats"]);
    assert!(
        shown.contains("refused: Please book a blood pressure check first"),
        "{shown}"
    );
    assert!(
        shown.contains("3 of 3 issues left"),
        "a refusal uses no issue: {shown}"
    );

    // With `requests` only readable, the practice cannot answer the next order.
    patient.ok(&["repeats", "order", &plan]);
    patient.ok(&["share", "revoke", "gp"]);
    patient.ok(&[
        "share",
        "grant",
        "gp",
        "--sections",
        "summary,requests",
        "--access",
        "read",
    ]);
    sync_homes(&patient.home(), &gp.home());
    let order = repeat(&gp, Some(&record))["orders"][1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = fails(&gp, &["--patient", &record, "repeats", "issue", &order]);
    assert!(refused.contains("may not write"), "{refused}");
    // And the patient may not issue their own.
    let refused = fails(&patient, &["repeats", "issue", &order]);
    assert!(
        refused.contains("for the practice or pharmacy"),
        "{refused}"
    );
}

#[test]
fn a_prescription_issued_is_checked_against_the_patients_medicines_and_never_held_back() {
    let patient = Phr::patient();
    let gp = provider("Riverside Surgery", "A81001");
    patient.ok(&["add", "medication", "Ibuprofen 400mg tablets"]);
    let record = taken_on_by(&patient, &gp, "summary,requests");
    gp.ok(&[
        "--patient",
        &record,
        "repeats",
        "add",
        "Warfarin 1mg tablets",
        "--issues",
        "3",
        "--review",
        "2099-01-01",
    ]);
    sync_homes(&gp.home(), &patient.home());
    let plan = repeat(&patient, None)["id"].as_str().unwrap().to_string();
    patient.ok(&["repeats", "order", &plan]);
    sync_homes(&patient.home(), &gp.home());
    let order = repeat(&gp, Some(&record))["orders"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let issued = json(
        &gp,
        &["--json", "--patient", &record, "repeats", "issue", &order],
    );
    let findings = issued["medicines_check"]["findings"].as_array().unwrap();
    assert!(!findings.is_empty(), "{issued}");
    assert!(issued.to_string().contains("Ibuprofen"), "{issued}");
    assert_eq!(
        issued["written"][0]["intent"], "order",
        "issued all the same: {issued}"
    );
}

#[test]
fn a_prescription_the_patient_made_up_is_not_dispensed_by_the_pharmacy() {
    let patient = Phr::patient();
    let gp = provider("Riverside Surgery", "A81001");
    let pharmacy = provider("High Street Pharmacy", "FA123");
    let record = taken_on_by(&patient, &gp, "summary,requests");
    gp.ok(&[
        "--patient",
        &record,
        "repeats",
        "add",
        "Oxycodone 5mg capsules",
        "--issues",
        "1",
        "--review",
        "2099-01-01",
    ]);
    sync_homes(&gp.home(), &patient.home());
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
    patient.ok(&[
        "share",
        "grant",
        "pharmacy",
        "--sections",
        "requests",
        "--access",
        "write",
    ]);
    let plan = repeat(&patient, None)["id"].as_str().unwrap().to_string();

    // Through the same path any entry takes, the patient writes an order marked issued and the
    // prescription it names, with the practice as requester.
    let forged = serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Task", "id": "forged-order", "status": "completed",
            "intent": "order",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "103742009"}]},
            "focus": {"reference": format!("MedicationRequest/{plan}")},
            "output": [{"type": {"text": "issued prescription"},
                "valueReference": {"reference": "MedicationRequest/forged-rx"}}]}},
        {"resource": {"resourceType": "MedicationRequest", "id": "forged-rx",
            "status": "active", "intent": "order",
            "medicationCodeableConcept": {"text": "Oxycodone 5mg capsules"},
            "requester": {"display": "Riverside Surgery"},
            "basedOn": [{"reference": format!("MedicationRequest/{plan}")}]}}
    ]});
    let file = patient.dir.path().join("forged.json");
    std::fs::write(&file, forged.to_string()).unwrap();
    patient.ok(&["import", file.to_str().unwrap()]);
    let shown = patient.ok(&["repeats"]);
    assert!(shown.contains("no pharmacy will dispense it"), "{shown}");
    sync_homes(&patient.home(), &pharmacy.home());
    accept_pending(&pharmacy);
    let refused = fails(
        &pharmacy,
        &["--patient", &record, "repeats", "dispensed", "forged-order"],
    );
    assert!(
        refused.contains("not signed by a practice that may prescribe"),
        "{refused}"
    );
    assert!(
        refused.contains("Ask the practice to issue it"),
        "{refused}"
    );
}
