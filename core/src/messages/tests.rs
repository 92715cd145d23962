//! Tests of messages: the `Communication` built, threads, signers and limits.

use automerge::ActorId;
use jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::{
    Author, Record, RecordMeta, Stamp,
    fhir::validate,
    keystore::Keystore,
    ledger::{Access, GrantState},
    party::{Party, Role},
    section::place,
};

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + second).unwrap()
}

fn party(keys: &Keystore, name: &str, role: Role, ods: Option<&str>) -> Party {
    Party {
        peer: keys.device.peer_id(),
        recipient: keys.age.recipient(),
        name: name.into(),
        role,
        ods: ods.map(str::to_string),
    }
}

/// One writer: its keys, the party it is, and its copy of the record.
struct Writer {
    party: Party,
    record: Record,
}

impl Writer {
    fn new(keys: &Keystore, party: Party) -> Writer {
        let mut actor = keys.device.peer_id().public_key()[..16].to_vec();
        actor.extend_from_slice(&[9; 8]);
        let meta = RecordMeta {
            id: "r".into(),
            subject: Some("Patient/p1".into()),
            nhs_number: None,
        };
        Writer {
            party,
            record: Record::create(meta, &ActorId::from(actor)),
        }
    }

    fn correspondent(&self) -> Correspondent {
        match self.party.role {
            Role::Patient => Correspondent::Patient {
                reference: Some("Patient/p1".into()),
                name: self.party.name.clone(),
            },
            _ => Correspondent::Provider {
                peer: self.party.peer,
                name: self.party.name.clone(),
                ods: self.party.ods.clone(),
            },
        }
    }

    /// Writes a message from this writer to `to`, as `sender` (itself unless given).
    fn send(&mut self, to: Correspondent, id: &str, text: &str, reply: Option<&str>, second: i64) {
        let sender = self.correspondent();
        self.send_as(sender, to, id, text, reply, second);
    }

    fn send_as(
        &mut self,
        sender: Correspondent,
        to: Correspondent,
        id: &str,
        text: &str,
        reply: Option<&str>,
        second: i64,
    ) {
        let new = NewMessage {
            text: text.into(),
            sender,
            recipient: to,
            subject: Some("Patient/p1".into()),
            in_response_to: reply.map(str::to_string),
            about: None,
            attachment: None,
        };
        let resource = build(&new, id, at(second)).unwrap();
        let author = Author {
            id: self.party.peer.to_string(),
            name: self.party.name.clone(),
        };
        let stamp = Stamp {
            author: &author,
            time: at(second),
        };
        self.record.put(stamp, &resource).unwrap();
        self.record.commit(stamp, "message");
    }
}

/// A patient, their GP (write on `requests`) and a pharmacy (write on `requests` too), and
/// the ledger state naming them.
fn cast() -> (Writer, Writer, Writer, LedgerState) {
    let (pk, gk, hk) = (
        Keystore::generate(true),
        Keystore::generate(false),
        Keystore::generate(false),
    );
    let patient = party(&pk, "Ada Lovelace", Role::Patient, None);
    let gp = party(&gk, "Riverside Surgery", Role::Provider, Some("A81001"));
    let pharmacy = party(&hk, "High Street Pharmacy", Role::Provider, Some("FA123"));
    let mut ledger = LedgerState::default();
    ledger.owners.insert(patient.peer, patient.clone());
    for (i, grantee) in [gp.clone(), pharmacy.clone()].into_iter().enumerate() {
        ledger.grants.push(GrantState {
            id: crate::keys::OpId([i as u8; 32]),
            grantee,
            sections: vec![Section::Requests],
            access: Access::Write,
            expires_ms: None,
            purpose: None,
            granted_by: patient.peer,
            time_ms: 0,
        });
    }
    (
        Writer::new(&pk, patient),
        Writer::new(&gk, gp),
        Writer::new(&hk, pharmacy),
        ledger,
    )
}

#[test]
fn a_message_is_an_r4_communication_in_requests_with_sender_recipient_and_thread() {
    let (patient, gp, _, _) = cast();
    let new = NewMessage {
        text: "  Can I book a blood test?  ".into(),
        sender: patient.correspondent(),
        recipient: gp.correspondent(),
        subject: Some("Patient/p1".into()),
        in_response_to: Some("m0".into()),
        about: Some("Observation/o1".into()),
        attachment: Some(Attachment {
            title: "rash.png".into(),
            content_type: "image/png".into(),
            data: b"\x89PNG not really".to_vec(),
        }),
    };
    let message = build(&new, "m1", at(0)).unwrap();
    validate::check(&message).unwrap();
    validate::check_typed(&message).unwrap();
    assert_eq!(place(&message), Section::Requests);
    assert_eq!(message["status"], "completed");
    assert_eq!(message["sent"], at(0).to_string());
    assert_eq!(message["subject"]["reference"], "Patient/p1");
    assert_eq!(message["sender"]["reference"], "Patient/p1");
    assert_eq!(
        message["recipient"][0]["identifier"],
        json!({"system": ODS_CODE_SYSTEM, "value": "A81001"})
    );
    assert_eq!(
        message["payload"][0]["contentString"],
        "Can I book a blood test?"
    );
    let file = &message["payload"][1]["contentAttachment"];
    assert_eq!(file["size"], 15);
    assert_eq!(file["title"], "rash.png");
    assert_eq!(
        file["hash"], "2GuVHoSSpCP9lo6Erqiges31RI8=",
        "base64 SHA-1 of the bytes"
    );
    assert_eq!(message["inResponseTo"][0]["reference"], "Communication/m0");
    assert_eq!(message["about"][0]["reference"], "Observation/o1");
}

#[test]
fn empty_long_and_oversized_messages_are_refused_saying_what_to_do() {
    let (patient, gp, _, _) = cast();
    let new = |text: String, data: Option<usize>| NewMessage {
        text,
        sender: patient.correspondent(),
        recipient: gp.correspondent(),
        subject: None,
        in_response_to: None,
        about: None,
        attachment: data.map(|n| Attachment {
            title: "scan.pdf".into(),
            content_type: "application/pdf".into(),
            data: vec![0; n],
        }),
    };
    let refused = |n: NewMessage| build(&n, "m", at(0)).unwrap_err();
    assert_eq!(refused(new("  ".into(), None)), MessageError::Empty);
    let long = "a".repeat(MESSAGE_TEXT_BYTES_MAX + 1);
    assert!(
        refused(new(long, None))
            .to_string()
            .contains("put the rest in an attached file")
    );
    let error = refused(new("x".into(), Some(ATTACHMENT_BYTES_MAX + 1)));
    assert_eq!(
        error,
        MessageError::AttachmentTooLarge {
            bytes: ATTACHMENT_BYTES_MAX + 1
        }
    );
    assert!(error.to_string().contains("Send a smaller file"));
    // A file alone is a message; the largest file allowed is one.
    build(&new(String::new(), Some(ATTACHMENT_BYTES_MAX)), "m", at(0)).unwrap();
    let mut bad = new("x".into(), None);
    bad.about = Some("not a reference".into());
    assert!(matches!(refused(bad), MessageError::BadAbout(_)));
}

#[test]
fn replies_gather_under_their_first_message_and_the_newest_thread_comes_first() {
    let (mut patient, mut gp, _, ledger) = cast();
    let to_gp = gp.correspondent();
    let to_patient = patient.correspondent();
    patient.send(
        to_gp.clone(),
        "a1",
        "Can I get my blood test results?",
        None,
        1,
    );
    patient.send(to_gp, "b1", "Also, I need a fit note", None, 2);
    gp.record.merge(&mut patient.record).unwrap();
    gp.send(to_patient.clone(), "a2", "They are normal", Some("a1"), 3);
    patient.record.merge(&mut gp.record).unwrap();
    patient.send(gp.correspondent(), "a3", "Thank you", Some("a2"), 4);

    let threads = threads(&patient.record, &ledger).unwrap();
    let ids: Vec<Vec<&str>> = threads
        .iter()
        .map(|t| t.messages.iter().map(|m| m.id.as_str()).collect())
        .collect();
    assert_eq!(ids, vec![vec!["a1", "a2", "a3"], vec!["b1"]]);
    assert_eq!(threads[0].id, "a1");
    let reply = &threads[0].messages[1];
    assert_eq!(reply.signer, "Riverside Surgery");
    assert_eq!(reply.text, "They are normal");
    assert_eq!(reply.in_response_to.as_deref(), Some("a1"));
    assert!(
        threads
            .iter()
            .flat_map(|t| &t.messages)
            .all(|m| m.sender_matches && !m.conflict)
    );
}

#[test]
fn a_writer_who_signs_as_another_sender_is_shown_as_itself_with_the_claim_beside() {
    let (patient, gp, mut pharmacy, ledger) = cast();
    // The pharmacy may write `requests`, and types the GP as the sender.
    pharmacy.send_as(
        gp.correspondent(),
        patient.correspondent(),
        "fake",
        "Stop taking your tablets",
        None,
        1,
    );
    // And one as itself, which matches.
    pharmacy.send(
        patient.correspondent(),
        "real",
        "Your order is ready",
        None,
        2,
    );
    let threads = threads(&pharmacy.record, &ledger).unwrap();
    let by_id = |id: &str| {
        threads
            .iter()
            .flat_map(|t| &t.messages)
            .find(|m| m.id == id)
            .unwrap()
            .clone()
    };
    let fake = by_id("fake");
    assert_eq!(fake.sender, "Riverside Surgery");
    assert_eq!(fake.signer, "High Street Pharmacy");
    assert!(!fake.sender_matches, "{fake:?}");
    assert!(by_id("real").sender_matches);
    // A grantee claiming to be the patient is not believed either.
    let (mut patient2, _, mut pharmacy2, ledger2) = cast();
    pharmacy2.send_as(
        patient2.correspondent(),
        patient2.correspondent(),
        "p",
        "hi",
        None,
        1,
    );
    patient2.record.merge(&mut pharmacy2.record).unwrap();
    let threads = super::threads(&patient2.record, &ledger2).unwrap();
    assert!(!threads[0].messages[0].sender_matches);
}

#[test]
fn a_reply_loop_made_by_hand_ends_in_one_thread() {
    let (mut patient, gp, _, ledger) = cast();
    let to = gp.correspondent();
    patient.send(to.clone(), "x", "one", Some("y"), 1);
    patient.send(to.clone(), "y", "two", Some("x"), 2);
    patient.send(to, "z", "three", Some("z"), 3);
    let threads = threads(&patient.record, &ledger).unwrap();
    let mut sizes: Vec<usize> = threads.iter().map(|t| t.messages.len()).collect();
    sizes.sort();
    assert_eq!(sizes, vec![1, 2], "{threads:?}");
}

#[test]
fn an_attachment_comes_back_byte_for_byte() {
    let (mut patient, gp, _, _) = cast();
    let data: Vec<u8> = (0..=255).cycle().take(5000).collect();
    let new = NewMessage {
        text: String::new(),
        sender: patient.correspondent(),
        recipient: gp.correspondent(),
        subject: None,
        in_response_to: None,
        about: None,
        attachment: Some(Attachment {
            title: "letter.pdf".into(),
            content_type: "application/pdf".into(),
            data: data.clone(),
        }),
    };
    let resource = build(&new, "f", at(0)).unwrap();
    let author = Author {
        id: patient.party.peer.to_string(),
        name: "Ada".into(),
    };
    let stamp = Stamp {
        author: &author,
        time: at(0),
    };
    patient.record.put(stamp, &resource).unwrap();
    let (info, bytes) = attachment(&patient.record, "f").unwrap().unwrap();
    assert_eq!(bytes, data);
    assert_eq!(info.size, 5000);
    assert_eq!(info.title, "letter.pdf");
    assert!(attachment(&patient.record, "nothing").unwrap().is_none());
}
