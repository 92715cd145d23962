//! Appointments through `phr`, the record moving between homes by the real sync sessions (in
//! process, no network): a booking by the practice and a cancellation by the patient made at
//! once are both kept, as a conflict each side sees, never one silently lost. (Asking a
//! practice's node for its free slots is live over libp2p: `node/tests/services.rs`.)

mod common;

use common::{Phr, json, provider, sync::sync_homes, taken_on_by};
use serde_json::json;

#[test]
fn a_booking_and_a_cancellation_made_at_once_are_a_conflict_on_both_sides() {
    let patient = Phr::patient();
    let gp = provider("Riverside Surgery", "A81001");
    let record = taken_on_by(&patient, &gp, "summary,requests");
    gp.ok(&[
        "slots",
        "add",
        "--start",
        "2099-03-02T09:00:00Z",
        "--count",
        "1",
    ]);
    let slot = json(&gp, &["--json", "slots"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The request as `phr appointments request` writes it (that path asks the practice's node
    // live, which needs a network; this test has none).
    let request = json!({
        "resourceType": "Appointment", "id": "appt1", "status": "proposed",
        "serviceType": [{"text": "GP appointment"}], "reasonCode": [{"text": "Rash"}],
        "start": "2099-03-02T09:00:00Z", "end": "2099-03-02T09:10:00Z",
        "slot": [{"reference": format!("Slot/{slot}")}],
        "participant": [
            {"actor": {"display": "Ada Lovelace"}, "status": "accepted"},
            {"actor": {"display": "Riverside Surgery"}, "status": "needs-action"}
        ]
    });
    let file = patient.dir.path().join("appt.json");
    std::fs::write(&file, request.to_string()).unwrap();
    patient.ok(&["import", file.to_str().unwrap()]);
    sync_homes(&patient.home(), &gp.home());

    // Both change it before they sync again.
    let booked = gp.ok(&["--patient", &record, "appointments", "book", "appt1"]);
    assert!(booked.contains("Booked"), "{booked}");
    let slots = json(&gp, &["--json", "slots"]);
    assert_eq!(slots[0]["status"], "busy", "{slots}");
    patient.ok(&[
        "appointments",
        "cancel",
        "appt1",
        "--reason",
        "Rash has gone",
    ]);
    sync_homes(&patient.home(), &gp.home());
    sync_homes(&gp.home(), &patient.home());

    for (phr, args) in [
        (&patient, vec!["--json", "conflicts"]),
        (&gp, vec!["--json", "--patient", &record, "conflicts"]),
    ] {
        let conflicts = json(phr, &args);
        let text = conflicts.to_string();
        assert!(text.contains("Appointment/appt1"), "{text}");
        assert!(
            text.contains("booked") && text.contains("Rash has gone"),
            "both kept: {text}"
        );
    }
    let listed = patient.ok(&["appointments"]);
    assert!(
        listed.contains("two versions were written at once"),
        "{listed}"
    );
    // Until a person chooses, neither side changes it further.
    let (code, _, stderr, _) = gp.run(&["--patient", &record, "appointments", "attended", "appt1"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("phr resolve Appointment/appt1"), "{stderr}");
}

#[test]
fn a_booking_the_patient_wrote_is_shown_as_theirs_not_the_practices() {
    let patient = Phr::patient();
    let gp = provider("Riverside Surgery", "A81001");
    let record = taken_on_by(&patient, &gp, "summary,requests");
    // Through the same path any entry takes, the patient writes an appointment already
    // "booked", as only the practice may decide.
    let forged = json!({
        "resourceType": "Appointment", "id": "self-booked", "status": "booked",
        "start": "2099-03-02T09:00:00Z", "end": "2099-03-02T09:10:00Z",
        "participant": [
            {"actor": {"display": "Ada Lovelace"}, "status": "accepted"},
            {"actor": {"display": "Riverside Surgery"}, "status": "accepted"}
        ]
    });
    let file = patient.dir.path().join("appt.json");
    std::fs::write(&file, forged.to_string()).unwrap();
    patient.ok(&["import", file.to_str().unwrap()]);
    let listed = patient.ok(&["appointments"]);
    assert!(
        listed.contains("marked booked by Ada Lovelace, not by the practice"),
        "{listed}"
    );
    sync_homes(&patient.home(), &gp.home());
    let at_gp = json(&gp, &["--json", "--patient", &record, "appointments"]);
    assert_eq!(at_gp[0]["status"], "booked");
    assert_eq!(at_gp[0]["decided_by_practice"], false, "{at_gp}");
    // The practice's schedule holds no such booking.
    assert_eq!(json(&gp, &["--json", "slots"]), json!([]));
}
