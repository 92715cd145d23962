//! The provider side end to end: a patient shares their record with a GP (write) and a pharmacy
//! (read), the record moves between the homes by the real sync sessions (run in process, no
//! network), and the clinicians read and write it with `--patient` within their grants. Every
//! access shows up in the patient's `phr audit`, under the name of the node that signed it.

mod common;

use common::{Phr, Transcript, accept_pending, card, provider, sync::sync_homes};
use serde_json::Value;

/// An HbA1c result, which belongs in the clinical section.
const HBA1C: &str = r#"{"resourceType": "Observation", "id": "hba1c", "status": "final",
  "code": {"text": "HbA1c"}, "effectiveDateTime": "2025-03-01",
  "valueQuantity": {"value": 48, "unit": "mmol/mol"}}"#;

#[test]
fn providers_read_and_write_within_their_grants_and_the_patient_sees_every_access() {
    let patient = Phr::patient();
    let gp = provider("Leeds Road Surgery", "B86001");
    let pharmacy = provider("High Street Pharmacy", "FA123");
    let hba1c = patient.dir.path().join("hba1c.json");
    std::fs::write(&hba1c, HBA1C).unwrap();
    patient.ok(&["import", hba1c.to_str().unwrap()]);
    patient.ok(&["add", "allergy", "penicillin", "--reaction", "rash"]);
    patient.ok(&["contacts", "add", &card(&gp), "--alias", "gp"]);
    patient.ok(&["contacts", "add", &card(&pharmacy), "--alias", "pharmacy"]);
    patient.ok(&[
        "share",
        "grant",
        "gp",
        "--sections",
        "summary,clinical",
        "--access",
        "write",
        "--purpose",
        "ongoing care",
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
    sync_homes(&patient.home(), &gp.home());
    sync_homes(&patient.home(), &pharmacy.home());

    // A newly shared record waits at each provider until a person there accepts it.
    let waiting: Value =
        serde_json::from_str(&gp.ok(&["patients", "--pending", "--json"])).unwrap();
    let id = waiting[0]["record"].as_str().unwrap().to_string();
    assert_eq!(waiting[0]["patient"]["name"], "Ada Lovelace");
    // The device's label is sealed to the patient's own devices (docs/FORMAT.md, version 2).
    assert_eq!(
        waiting[0]["shared_by"]["device"],
        "a device of the patient's (name sealed)"
    );
    let before: Value = serde_json::from_str(&gp.ok(&["patients", "--json"])).unwrap();
    assert_eq!(before, serde_json::json!([]));
    // Twelve hex digits are enough to name it (and are redacted in the snapshot).
    let short = &id[..12];
    let (code, _, stderr, _) = gp.run(&["--patient", short, "show"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("phr patients accept"), "{stderr}");

    let mut t = Transcript::default();
    t.note("the GP's node");
    t.run(&gp, &["patients"]);
    t.run(&gp, &["patients", "--pending"]);
    t.run(&gp, &["patients", "accept", short]);
    pharmacy.ok(&["patients", "accept", short]);
    let listed: Value = serde_json::from_str(&gp.ok(&["patients", "--json"])).unwrap();
    assert_eq!(listed[0]["record"], id.as_str());
    assert_eq!(listed[0]["patient"]["name"], "Ada Lovelace");
    assert_eq!(
        listed[0]["writable"],
        serde_json::json!(["summary", "clinical"])
    );
    t.run(&gp, &["patients"]);
    t.run(&gp, &["patients", "--search", "LOVELACE"]);
    t.run(&gp, &["patients", "--search", "nobody"]);
    t.run(&gp, &["patients", "--page", "2"]);
    let shown = t.run(&gp, &["--patient", short, "show"]);
    assert!(shown.contains("penicillin"), "{shown}");
    assert!(shown.contains("HbA1c"), "the GP reads clinical: {shown}");
    t.run(
        &gp,
        &[
            "--patient",
            short,
            "add",
            "condition",
            "asthma",
            "--since",
            "2019-04-01",
        ],
    );
    t.run(&gp, &["--patient", short, "history", "Observation/hba1c"]);
    t.run(&gp, &["--patient", "ffffffffffff", "show"]);
    t.run(&gp, &["--patient", short, "card"]);
    t.run(&gp, &["audit"]);
    t.run(&gp, &["show"]);

    t.note("the pharmacy's node: summary only, read only");
    t.run(&pharmacy, &["patients"]);
    let exported = t.run(
        &pharmacy,
        &[
            "--patient",
            short,
            "export",
            "--section",
            "summary",
            "--section",
            "clinical",
        ],
    );
    assert!(exported.contains("penicillin"), "{exported}");
    assert!(
        !exported.contains("HbA1c"),
        "clinical is not the pharmacy's"
    );
    t.run(
        &pharmacy,
        &["--patient", short, "export", "--section", "clinical"],
    );
    t.run(&pharmacy, &["--patient", short, "show", "clinical"]);
    t.run(
        &pharmacy,
        &["--patient", short, "add", "condition", "hay fever"],
    );

    sync_homes(&gp.home(), &patient.home());
    sync_homes(&pharmacy.home(), &patient.home());
    t.note("the patient's device, after syncing with both");
    let summary = t.run(&patient, &["show"]);
    assert!(
        summary.contains("asthma"),
        "the GP's entry arrived: {summary}"
    );
    assert!(!summary.contains("hay fever"));
    t.run(&patient, &["audit"]);
    let codes = t.finish("provider");
    assert_eq!(
        codes,
        [
            0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0
        ],
        "exit codes, in order"
    );

    let audit: Value = serde_json::from_str(&patient.ok(&["audit", "--json"])).unwrap();
    let entries = audit.as_array().unwrap();
    let by = |name: &str, kind: &str| {
        entries
            .iter()
            .filter(|e| e["who"]["name"] == name && e["kind"] == kind)
            .count()
    };
    // The GP: the patient's name it showed in `patients --pending` (twice) and `patients`
    // (three times: twice whole, once found by `--search`; a search that found nothing and a
    // page past the end show no name), `show`, `history`; the pharmacy: its patient list and
    // the export (its acceptance showed no name). Refused reads are never logged.
    assert_eq!(by("Leeds Road Surgery", "read"), 7, "{audit:#}");
    assert_eq!(by("Leeds Road Surgery", "write"), 1, "{audit:#}");
    assert_eq!(by("High Street Pharmacy", "read"), 2, "{audit:#}");
    assert_eq!(by("High Street Pharmacy", "write"), 0);
    let gp_entry = entries
        .iter()
        .find(|e| e["who"]["name"] == "Leeds Road Surgery")
        .unwrap();
    assert_eq!(gp_entry["who"]["ods"], "B86001");
    assert!(entries.iter().all(|e| e["claimed_agent"].is_null()));
}

#[test]
fn a_provider_granted_summary_read_cannot_add_a_clinical_entry() {
    // `phr add` makes the entries a clinician records (a condition, a medication: summary) and
    // the patient's own (a reading: journal); the pharmacy may write to no section at all.
    let patient = Phr::patient();
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
    sync_homes(&patient.home(), &pharmacy.home());
    accept_pending(&pharmacy);
    let listed: Value = serde_json::from_str(&pharmacy.ok(&["patients", "--json"])).unwrap();
    let id = listed[0]["record"].as_str().unwrap().to_string();
    let blobs_before = vault_size(&pharmacy);
    for entry in [
        &["condition", "hypertension"][..],
        &["medication", "Metformin 500mg"],
        &["reading", "blood-pressure", "140/90"],
    ] {
        let mut args = vec!["--patient", &id, "add"];
        args.extend_from_slice(entry);
        let (code, _, stderr, _) = pharmacy.run(&args);
        assert_eq!(code, 1, "{entry:?}: {stderr}");
        assert!(stderr.contains("may not write"), "{stderr}");
        assert!(stderr.contains("nothing was saved"), "{stderr}");
    }
    let (code, _, stderr, _) = pharmacy.run(&["--patient", &id, "show", "clinical"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not shared with this node"), "{stderr}");
    assert_eq!(vault_size(&pharmacy), blobs_before, "nothing was stored");
}

/// How many bytes the home's vault holds: a refused write must not grow it.
fn vault_size(phr: &Phr) -> u64 {
    let home = phr_core::home::Home::open(&phr.home()).unwrap();
    let (vault, _) = home.sync_parts();
    let mut total = 0;
    for record in vault.records().unwrap() {
        for section in phr_core::Section::ALL {
            total += vault
                .blobs(&record, section)
                .unwrap()
                .iter()
                .map(|(_, bytes)| bytes.len() as u64)
                .sum::<u64>();
        }
    }
    total
}

#[test]
fn a_clinician_names_a_patient_by_nhs_number_once_the_list_has_shown_it() {
    let patient = Phr::patient();
    let gp = common::grant_gp_write(&patient);
    sync_homes(&patient.home(), &gp.home());
    accept_pending(&gp);
    gp.ok(&["patients"]);
    for number in ["9434765919", "943 476 5919"] {
        let shown = gp.ok(&["--patient", number, "show"]);
        assert!(shown.contains("Ada Lovelace"), "{shown}");
    }
    // A valid number nobody here carries, and an invalid one (read as the start of an id).
    let (code, _, stderr, _) = gp.run(&["--patient", "4010232137", "show"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("no patient with NHS number 401 023 2137"),
        "{stderr}"
    );
    let (code, _, stderr, _) = gp.run(&["--patient", "9434765918", "show"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("no record shared with this node"),
        "{stderr}"
    );
}
