//! A practice's inbox through `phr`: across its patients, what waits for it (appointment
//! requests, repeat orders, unread messages), and nothing of patients with nothing waiting.
//! Records move by the real sync sessions, in process.

mod common;

use common::{Phr, json, provider, sync::sync_homes, taken_on_by};
use serde_json::{Value, json};

/// A patient sharing `summary,requests` (write) with `gp`, taken on there; returns the record.
fn patient_of(gp: &Phr, name: &str) -> (Phr, String) {
    let patient = Phr::patient_named(name, "1980-01-01");
    let record = taken_on_by(&patient, gp, "summary,requests");
    (patient, record)
}

fn kinds(entry: &Value) -> Vec<String> {
    entry["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_inbox_lists_what_waits_across_patients_and_logs_each_one_shown() {
    let gp = provider("Riverside Surgery", "A81001");
    let (ada, ada_record) = patient_of(&gp, "Ada Lovelace");
    let (bob, bob_record) = patient_of(&gp, "Bob Marley");
    let (carl, _) = patient_of(&gp, "Carl Sagan");
    assert_eq!(json(&gp, &["--json", "inbox"]), json!([]));

    // Ada writes and orders a repeat; Bob asks for an appointment; Carl asks for nothing.
    gp.ok(&[
        "--patient",
        &ada_record,
        "repeats",
        "add",
        "Ramipril 5mg capsules",
        "--issues",
        "3",
        "--review",
        "2099-01-01",
    ]);
    sync_homes(&gp.home(), &ada.home());
    let plan = json(&ada, &["--json", "repeats"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    ada.ok(&["repeats", "order", &plan]);
    ada.ok(&["messages", "send", "Can I have my blood results?"]);
    let request = json!({
        "resourceType": "Appointment", "id": "bob-appt", "status": "proposed",
        "reasonCode": [{"text": "Sore knee"}], "start": "2099-03-02T09:00:00Z",
        "end": "2099-03-02T09:10:00Z",
        "participant": [{"actor": {"display": "Bob"}, "status": "accepted"},
            {"actor": {"display": "Riverside Surgery"}, "status": "needs-action"}]
    });
    let file = bob.dir.path().join("appt.json");
    std::fs::write(&file, request.to_string()).unwrap();
    bob.ok(&["import", file.to_str().unwrap()]);
    for patient in [&ada, &bob, &carl] {
        sync_homes(&patient.home(), &gp.home());
    }

    let inbox = json(&gp, &["--json", "inbox"]);
    let entries = inbox.as_array().unwrap();
    assert_eq!(entries.len(), 2, "Carl has nothing waiting: {inbox}");
    let of = |record: &str| {
        entries
            .iter()
            .find(|e| e["record"] == record)
            .unwrap_or_else(|| panic!("{record} in {inbox}"))
            .clone()
    };
    let ada_entry = of(&ada_record);
    assert_eq!(ada_entry["patient"], "Ada Lovelace");
    let mut ada_kinds = kinds(&ada_entry);
    ada_kinds.sort();
    assert_eq!(ada_kinds, ["message", "order"], "{ada_entry}");
    assert_eq!(kinds(&of(&bob_record)), ["appointment"]);
    let text = gp.ok(&["inbox"]);
    assert!(
        text.contains("repeat order: Ramipril 5mg capsules"),
        "{text}"
    );
    assert!(text.contains("appointment request: Sore knee"), "{text}");
    assert!(text.contains("appointments book bob-appt"), "{text}");

    // Reading the message and issuing the order empty Ada's part; Bob's stays.
    let message = ada_entry["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "message")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    gp.ok(&["--patient", &ada_record, "messages", "show", &message]);
    let order = ada_entry["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "order")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    gp.ok(&["--patient", &ada_record, "repeats", "issue", &order]);
    let inbox = json(&gp, &["--json", "inbox"]);
    let records: Vec<&str> = inbox
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["record"].as_str().unwrap())
        .collect();
    assert_eq!(records, [bob_record.as_str()], "{inbox}");

    // Each record shown was logged to its patient; Carl's was never shown.
    for patient in [&ada, &bob, &carl] {
        sync_homes(&gp.home(), &patient.home());
    }
    assert!(ada.ok(&["audit"]).contains("inbox"));
    assert!(bob.ok(&["audit"]).contains("inbox"));
    assert!(!carl.ok(&["audit"]).contains("inbox"));

    // A patient's own home has no inbox.
    let (code, _, stderr, _) = ada.run(&["inbox"]);
    assert_eq!(code, 1, "{stderr}");
}
