//! Withdrawn access is final, as a patient and a practice see it through the CLI: a revoked GP
//! and a removed phone keep writing with their stale copies, and nothing they write after their
//! access ended shows anywhere until the patient accepts it (`phr held`).

mod common;

use common::{Phr, accept_pending, card, device_of, grant_gp_write, sync::sync_homes};
use serde_json::Value;

/// The record waiting at the GP, accepted.
fn record_id(gp: &Phr) -> String {
    accept_pending(gp);
    let listed: Value = serde_json::from_str(&gp.ok(&["patients", "--json"])).unwrap();
    listed[0]["record"].as_str().unwrap().to_string()
}

#[test]
fn a_revoked_gps_write_is_held_for_the_patient_and_accepting_it_brings_it_in() {
    let patient = Phr::patient();
    patient.ok(&["add", "allergy", "penicillin", "--reaction", "anaphylaxis"]);
    let gp = grant_gp_write(&patient);
    sync_homes(&patient.home(), &gp.home());
    let id = record_id(&gp);
    patient.ok(&["share", "revoke", "gp"]);
    // The GP has not synced since; its stale copy still lets it write.
    gp.ok(&["--patient", &id, "add", "condition", "gout"]);
    sync_homes(&gp.home(), &patient.home());

    let shown = patient.ok(&["show"]);
    assert!(!shown.to_lowercase().contains("gout"), "{shown}");
    assert!(shown.to_lowercase().contains("penicillin"), "{shown}");
    let (code, _, stderr, _) = patient.run(&["show"]);
    assert_eq!(code, 0);
    assert!(stderr.contains("phr held"), "{stderr}");
    let held = patient.ok(&["held"]);
    assert!(held.contains("Riverside Surgery"), "{held}");
    assert!(held.to_lowercase().contains("gout"), "{held}");
    let listed: Value = serde_json::from_str(&patient.ok(&["held", "--json"])).unwrap();
    let write = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["section"] == "summary")
        .expect("the GP's write is held");
    let entry_id = write["id"].as_str().unwrap();
    let key = write["adds"][0]["resource"].as_str().unwrap().to_string();
    assert!(key.starts_with("Condition/"), "{write}");

    patient.ok(&["held", "accept", &entry_id[..12]]);
    let shown = patient.ok(&["show"]);
    assert!(shown.to_lowercase().contains("gout"), "{shown}");
    let history = patient.ok(&["history", &key]);
    assert!(history.contains("Riverside Surgery"), "{history}");
    assert!(!history.contains("unverified"), "{history}");
    // An id that names nothing held is a user error that says what to do.
    let (code, _, stderr, _) = patient.run(&["held", "discard", "ffffffffffff"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("phr held"), "{stderr}");
}

#[test]
fn a_removed_phones_allergy_reaches_neither_the_laptop_nor_the_gp() {
    let laptop = Phr::patient();
    let phone = device_of(&laptop, "phone");
    laptop.ok(&["devices", "add", &card(&phone)]);
    let gp = grant_gp_write(&laptop);
    laptop.ok(&["add", "allergy", "penicillin", "--reaction", "anaphylaxis"]);
    sync_homes(&laptop.home(), &phone.home());
    sync_homes(&laptop.home(), &gp.home());
    let id = record_id(&gp);
    laptop.ok(&["devices", "remove", "phone"]);
    sync_homes(&laptop.home(), &gp.home());

    phone.ok(&["add", "allergy", "peanuts", "--criticality", "high"]);
    sync_homes(&phone.home(), &gp.home());
    sync_homes(&phone.home(), &laptop.home());
    let at_gp = gp.ok(&["--patient", &id, "show"]);
    assert!(!at_gp.to_lowercase().contains("peanut"), "{at_gp}");
    assert!(at_gp.to_lowercase().contains("penicillin"), "{at_gp}");
    let at_laptop = laptop.ok(&["show"]);
    assert!(!at_laptop.to_lowercase().contains("peanut"), "{at_laptop}");
    let held = laptop.ok(&["held"]);
    assert!(held.to_lowercase().contains("peanut"), "{held}");
}
