//! Pairing: a new device joins the record it was made for and no other (`phr init --device
//! --join RECORD`), so a stranger who lists the device as an owner of a record of their own and
//! syncs with it first gets nothing, and what the patient types on it reaches only the patient.

mod common;

use common::{Phr, card, device_of, record_id, sync::sync_homes};

#[test]
fn a_new_device_takes_only_the_record_it_joins_even_if_a_stranger_syncs_first() {
    let laptop = Phr::patient();
    let tablet = device_of(&laptop, "tablet");
    let status = tablet.ok(&["status"]);
    assert!(
        status.contains(&format!("Joining record {}", record_id(&laptop))),
        "{status}"
    );

    // A stranger makes a record of their own, adds the tablet's card as a device of it, and
    // syncs with the tablet before the patient does.
    let attacker = Phr::new();
    attacker.ok(&["init", "--name", "Mallory"]);
    attacker.ok(&["devices", "add", &card(&tablet)]);
    sync_homes(&attacker.home(), &tablet.home());
    let (code, _, stderr, _) = tablet.run(&["show"]);
    assert_ne!(code, 0, "the tablet must hold no record yet: {stderr}");
    assert!(
        !tablet
            .ok(&["--json", "status"])
            .contains(&record_id(&attacker)),
        "the stranger's record must not be adopted"
    );

    // The patient adds the tablet; the tablet takes the patient's record, and a sensitive entry
    // typed on it reaches the laptop, never the stranger.
    laptop.ok(&["devices", "add", &card(&tablet)]);
    sync_homes(&laptop.home(), &tablet.home());
    assert_eq!(record_id(&tablet), record_id(&laptop));
    tablet.ok(&["add", "symptom", "low mood", "--sensitive"]);
    sync_homes(&attacker.home(), &tablet.home());
    sync_homes(&tablet.home(), &attacker.home());
    sync_homes(&tablet.home(), &laptop.home());
    assert!(laptop.ok(&["show", "sensitive"]).contains("low mood"));
    let (_, shown, _, _) = attacker.run(&["show", "sensitive"]);
    assert!(!shown.contains("low mood"), "{shown}");
}

#[test]
fn a_device_is_made_only_with_the_record_it_joins() {
    let phone = Phr::new();
    let (code, _, stderr, _) = phone.run(&["init", "--device", "--name", "Ada Lovelace"]);
    assert_eq!(code, 1, "a usage mistake is the user's: {stderr}");
    assert!(stderr.contains("--join"), "{stderr}");
    let (code, _, stderr, _) = phone.run(&[
        "init",
        "--device",
        "--join",
        "not-a-record",
        "--name",
        "Ada Lovelace",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("phr status"), "{stderr}");
}
