//! Text written by others never drives the terminal: a FHIR file and a provider's entries
//! carrying escape sequences, carriage returns, bells, C1 controls and bidirectional overrides
//! go through every command that shows them, and what each prints holds none of them, only
//! their visible forms (`phr_core::screen::visible`).

mod common;

use common::{Phr, accept_pending, card, provider, sync::sync_homes};
use serde_json::json;

/// Erases the line, moves to its start, sets the window title, hides what follows, a C1 CSI,
/// and a right-to-left override: what an allergy's text held to hide "PENICILLIN".
const HOSTILE: &str =
    "\u{1b}[2K\r\u{1b}]0;owned\u{7}\u{1b}[8mPENICILLIN - ANAPHYLAXIS\u{9b}0m \u{202e}txet\u{2066}";

/// Whether `text` holds anything a terminal would obey or reorder.
fn obeyed(text: &str) -> Option<char> {
    text.chars().find(|c| {
        (c.is_control() && *c != '\n')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

/// Runs `args` and checks both streams.
fn clean(phr: &Phr, args: &[&str]) -> String {
    let (code, stdout, stderr, _) = phr.run(args);
    for (stream, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        if let Some(c) = obeyed(text) {
            panic!(
                "phr {args:?} (exit {code}) printed U+{:04X} on {stream}:\n{text:?}",
                c as u32
            );
        }
    }
    stdout + &stderr
}

#[test]
fn hostile_text_from_a_file_and_a_provider_is_shown_not_obeyed_by_every_command() {
    let patient = Phr::patient();
    let file = patient.dir.path().join("hostile.json");
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "AllergyIntolerance", "id": "penicillin",
            "clinicalStatus": {"coding": [{"code": "active"}]}, "criticality": "high",
            "code": {"text": HOSTILE}}},
        {"resource": {"resourceType": "Condition", "id": "c1",
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "code": {"text": HOSTILE}, "note": [{"text": HOSTILE}]}},
        {"resource": {"resourceType": "MedicationStatement", "id": "m1", "status": "active",
            "medicationCodeableConcept": {"text": HOSTILE}}},
        {"resource": {"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"text": HOSTILE}, "valueString": HOSTILE,
            "effectiveDateTime": "2026-01-02"}}
    ]});
    std::fs::write(&file, serde_json::to_vec(&bundle).unwrap()).unwrap();
    clean(&patient, &["import", file.to_str().unwrap()]);

    // A GP the patient shares with writes an entry of its own with the same text.
    let gp = provider("Riverside Surgery", "Y12345");
    patient.ok(&["contacts", "add", &card(&gp), "--alias", "gp"]);
    patient.ok(&[
        "share",
        "grant",
        "gp",
        "--sections",
        "summary,clinical",
        "--access",
        "write",
    ]);
    sync_homes(&patient.home(), &gp.home());
    accept_pending(&gp);
    let id = common::record_id(&patient);
    clean(&gp, &["--patient", &id, "add", "condition", HOSTILE]);
    sync_homes(&gp.home(), &patient.home());

    let shown = clean(&patient, &["show"]);
    assert!(shown.contains("␛[8mPENICILLIN - ANAPHYLAXIS"), "{shown}");
    assert!(shown.contains("<U+202E>"), "{shown}");
    for args in [
        &["show", "summary"][..],
        &["show", "clinical"],
        &["show", "journal"],
        &["history", "AllergyIntolerance/penicillin"],
        &["history", "Condition/c1"],
        &["conflicts"],
        &["audit"],
        &["share", "list"],
        &["status"],
        &["devices", "list"],
        &["contacts", "list"],
        &["held"],
        &["damaged"],
        // An error that quotes what the user typed.
        &["history", HOSTILE],
    ] {
        clean(&patient, args);
    }
    for args in [
        &["patients"][..],
        &["--patient", &id, "show"],
        &["--patient", &id, "show", "clinical"],
        &["--patient", &id, "history", "AllergyIntolerance/penicillin"],
    ] {
        let out = clean(&gp, args);
        assert!(!out.is_empty());
    }
}
