//! Messages between a patient and their practice, end to end through `phr`: the record moves
//! between the homes by the real sync sessions (in process, no network). The practice answers
//! within its `requests` write grant; a pharmacy that may write `requests` and signs as the GP
//! is shown as itself; whoever may not read `requests` is not offered a message.

mod common;

use common::{Phr, accept_pending, card, fails, json, provider, sync::sync_homes};

#[test]
fn a_patient_and_the_practice_keep_a_thread_unread_first_and_a_file_arrives_whole() {
    let patient = Phr::patient();
    let gp = provider("Riverside Surgery", "A81001");
    patient.ok(&["contacts", "add", &card(&gp), "--alias", "gp"]);

    // Nobody may read `requests` yet: the patient is told how to share it, nothing is written.
    let refused = fails(&patient, &["messages", "send", "Hello?"]);
    assert!(
        refused.contains("phr share grant gp --sections requests"),
        "{refused}"
    );
    patient.ok(&[
        "share",
        "grant",
        "gp",
        "--sections",
        "summary,requests",
        "--access",
        "write",
    ]);

    let scan = patient.dir.path().join("rash.png");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    std::fs::write(&scan, &bytes).unwrap();
    patient.ok(&[
        "messages",
        "send",
        "--attach",
        scan.to_str().unwrap(),
        "The rash on my arm is spreading",
    ]);
    patient.ok(&["messages", "send", "Can I order a fit note?"]);
    sync_homes(&patient.home(), &gp.home());
    let record = accept_pending(&gp).remove(0);

    // The practice sees both threads, unread; reading one marks it read there only.
    let inbox = json(&gp, &["--json", "--patient", &record, "messages"]);
    let threads = inbox["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 2, "{inbox}");
    assert!(threads.iter().all(|t| t["unread"] == 1), "{inbox}");
    let rash = threads
        .iter()
        .find(|t| t["messages"][0]["text"] == "The rash on my arm is spreading")
        .unwrap();
    let rash_id = rash["thread"].as_str().unwrap().to_string();
    assert_eq!(rash["messages"][0]["signer"], "Ada Lovelace");
    assert_eq!(rash["messages"][0]["sender_matches"], true);
    let shown = gp.ok(&["--patient", &record, "messages", "show", &rash_id[..8]]);
    assert!(shown.contains("new: "), "{shown}");
    assert!(
        shown.contains("attached: rash.png (image/png, 3000 bytes)"),
        "{shown}"
    );
    let out = gp.dir.path().join("saved.png");
    gp.ok(&[
        "--patient",
        &record,
        "messages",
        "save",
        &rash_id[..8],
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    let inbox = json(&gp, &["--json", "--patient", &record, "messages"]);
    let unread: Vec<i64> = inbox["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["unread"].as_i64().unwrap())
        .collect();
    assert_eq!(unread, vec![1, 0], "the unread thread comes first: {inbox}");

    // The practice answers; the answer reaches the patient, unread, in the same thread.
    gp.ok(&[
        "--patient",
        &record,
        "messages",
        "reply",
        &rash_id[..8],
        "Please book an appointment this week",
    ]);
    sync_homes(&gp.home(), &patient.home());
    let mine = json(&patient, &["--json", "messages"]);
    let first = &mine["threads"][0];
    assert_eq!(first["thread"], rash_id.as_str(), "{mine}");
    assert_eq!(first["unread"], 1, "{mine}");
    let answer = &first["messages"][1];
    assert_eq!(answer["signer"], "Riverside Surgery");
    assert_eq!(answer["sender_matches"], true);
    assert_eq!(answer["in_response_to"], rash_id.as_str());
    let shown = patient.ok(&["messages", "show", &rash_id[..8]]);
    assert!(shown.contains("new: "), "{shown}");
    assert!(shown.contains("from Riverside Surgery"), "{shown}");
    let again = patient.ok(&["messages", "show", &rash_id[..8]]);
    assert!(
        !again.contains("new: "),
        "read once, not new again: {again}"
    );

    // The patient replies to the practice's message: it goes to the practice.
    patient.ok(&[
        "messages",
        "reply",
        &answer["id"].as_str().unwrap()[..8],
        "Booked, thanks",
    ]);
    let mine = json(&patient, &["--json", "messages"]);
    let last = &mine["threads"][0]["messages"][2];
    assert_eq!(last["recipients"][0], "Riverside Surgery", "{mine}");

    // Each practice read is in the patient's audit.
    sync_homes(&gp.home(), &patient.home());
    let audit = patient.ok(&["audit"]);
    assert!(audit.contains("messages"), "{audit}");
}

#[test]
fn a_grantee_signing_as_another_is_shown_as_itself_and_a_reader_only_cannot_answer() {
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
        "requests",
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

    // Two providers read `requests`: the patient must say which.
    let refused = fails(&patient, &["messages", "send", "Hello"]);
    assert!(refused.contains("say which with --to"), "{refused}");
    patient.ok(&["messages", "send", "--to", "gp", "Hello doctor"]);
    sync_homes(&patient.home(), &gp.home());
    sync_homes(&patient.home(), &pharmacy.home());
    let record = accept_pending(&gp).remove(0);
    accept_pending(&pharmacy);

    // The GP may only read `requests`: its answer is refused and nothing is stored.
    let refused = fails(&gp, &["--patient", &record, "messages", "send", "Hi"]);
    assert!(
        refused.contains("Ask the patient for write access to requests"),
        "{refused}"
    );

    // The pharmacy writes a message whose `sender` names the GP by its ODS code, through the
    // same path `phr --patient R import` uses, as a hostile grantee could.
    let forged = serde_json::json!({
        "resourceType": "Communication", "id": "forged", "status": "completed",
        "sent": "2026-01-01T00:00:00Z",
        "sender": {"type": "Organization", "display": "Riverside Surgery",
            "identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code",
                "value": "A81001"}},
        "payload": [{"contentString": "Stop taking all your tablets"}]
    });
    let file = pharmacy.dir.path().join("forged.json");
    std::fs::write(&file, forged.to_string()).unwrap();
    pharmacy.ok(&["--patient", &record, "import", file.to_str().unwrap()]);
    sync_homes(&pharmacy.home(), &patient.home());
    let shown = patient.ok(&["messages", "show", "forged"]);
    assert!(
        shown.contains(
            "from High Street Pharmacy (signed by them; it says it is from Riverside Surgery)"
        ),
        "{shown}"
    );
    let listed = json(&patient, &["--json", "messages"]);
    let forged = listed["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["thread"] == "forged")
        .unwrap();
    assert_eq!(forged["messages"][0]["sender_matches"], false);
}
