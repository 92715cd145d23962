//! Tests of repeat prescriptions: the shapes, the refusals, and the count kept by issues.

use automerge::ActorId;
use jiff::{Timestamp, civil::date};
use serde_json::json;

use super::*;
use crate::{
    Author, RecordMeta, Stamp,
    fhir::validate,
    keystore::Keystore,
    ledger::{Access, GrantState},
    party::{Party, Role},
    section::place,
};

fn now() -> Timestamp {
    "2026-03-01T09:00:00Z".parse().unwrap()
}

fn today() -> Date {
    date(2026, 3, 1)
}

fn practice() -> Value {
    json!({"type": "Organization", "display": "Riverside Surgery",
        "identifier": {"system": ODS_CODE_SYSTEM, "value": "A81001"}})
}

fn patient_ref() -> Value {
    json!({"reference": "Patient/p1"})
}

fn new_repeat(issues: u32) -> NewRepeat {
    NewRepeat {
        medicine: "Salbutamol 100micrograms/dose inhaler".into(),
        dosage: Some("2 puffs when needed".into()),
        issues,
        review: date(2026, 9, 1),
        subject: Some("Patient/p1".into()),
        prescriber: practice(),
    }
}

fn record(actor: u8) -> Record {
    let meta = RecordMeta {
        id: "r".into(),
        subject: Some("Patient/p1".into()),
        nhs_number: None,
    };
    Record::create(meta, &ActorId::from(vec![actor; 16]))
}

/// A node that writes: its party, and its own copy of the record (its actor its key's).
struct Node {
    party: Party,
    record: Record,
}

impl Node {
    fn new(name: &str, role: Role) -> Node {
        let keys = Keystore::generate(role == Role::Patient);
        let party = Party {
            peer: keys.device.peer_id(),
            recipient: keys.age.recipient(),
            name: name.into(),
            role,
            ods: None,
        };
        let mut actor = party.peer.public_key()[..16].to_vec();
        actor.extend_from_slice(&[7; 8]);
        let meta = RecordMeta {
            id: "r".into(),
            subject: Some("Patient/p1".into()),
            nhs_number: None,
        };
        Node {
            party,
            record: Record::create(meta, &ActorId::from(actor)),
        }
    }

    fn write(&mut self, resources: &[&Value]) {
        let author = Author {
            id: self.party.peer.to_string(),
            name: self.party.name.clone(),
        };
        let stamp = Stamp {
            author: &author,
            time: now(),
        };
        for resource in resources {
            self.record.put(stamp, resource).unwrap();
        }
        self.record.commit(stamp, "test");
    }

    fn merge(&mut self, other: &mut Node) {
        self.record.merge(&mut other.record).unwrap();
    }
}

/// The patient (an owner device) and a practice with `access` to `sections`.
fn ledger(patient: &Node, practice: &Node, access: Access, sections: &[Section]) -> LedgerState {
    let mut ledger = LedgerState::default();
    ledger
        .owners
        .insert(patient.party.peer, patient.party.clone());
    ledger.grants.push(GrantState {
        id: crate::keys::OpId([1; 32]),
        grantee: practice.party.clone(),
        sections: sections.to_vec(),
        access,
        expires_ms: None,
        purpose: None,
        granted_by: patient.party.peer,
        time_ms: 0,
    });
    ledger
}

fn put(record: &mut Record, resources: &[&Value]) {
    let author = Author {
        id: "someone".into(),
        name: "someone".into(),
    };
    let stamp = Stamp {
        author: &author,
        time: now(),
    };
    for resource in resources {
        record.put(stamp, resource).unwrap();
    }
    record.commit(stamp, "test");
}

fn only(record: &Record) -> Repeat {
    only_in(record, &LedgerState::default())
}

fn only_in(record: &Record, ledger: &LedgerState) -> Repeat {
    let mut all = repeats(record, ledger).unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

#[test]
fn the_repeat_the_order_the_issue_and_the_dispense_are_r4_in_their_sections() {
    let mut patient = Node::new("Ada Lovelace", Role::Patient);
    let mut gp = Node::new("Riverside Surgery", Role::Provider);
    let consent = ledger(
        &patient,
        &gp,
        Access::Write,
        &[Section::Summary, Section::Requests],
    );
    let plan = repeat(&new_repeat(6), "plan1", now(), today()).unwrap();
    gp.write(&[&plan]);
    patient.merge(&mut gp);
    let task = order(
        &only(&patient.record),
        Some("FA123"),
        &patient_ref(),
        "t1",
        now(),
        today(),
    )
    .unwrap();
    patient.write(&[&task]);
    gp.merge(&mut patient);
    let (prescription, done) = issue(&plan, &task, &practice(), "rx1", now()).unwrap();
    gp.write(&[&prescription, &done]);
    patient.merge(&mut gp);
    let pharmacy = json!({"display": "High Street Pharmacy"});
    let repeat = only_in(&patient.record, &consent);
    assert!(repeat.orders[0].prescription_verified, "{repeat:?}");
    assert_eq!(
        repeat.orders[0].issued_by.as_deref(),
        Some("Riverside Surgery")
    );
    let dispensed = dispense(
        &repeat.orders[0],
        &repeat,
        &pharmacy,
        Some("Patient/p1"),
        "d1",
        now(),
    )
    .unwrap();
    for (resource, section) in [
        (&plan, Section::Summary),
        (&task, Section::Requests),
        (&prescription, Section::Summary),
        (&done, Section::Requests),
        (&dispensed, Section::Requests),
    ] {
        validate::check(resource).unwrap_or_else(|e| panic!("{e:?}: {resource}"));
        validate::check_typed(resource).unwrap_or_else(|e| panic!("{e:?}: {resource}"));
        assert_eq!(place(resource), section, "{resource}");
    }
    assert_eq!(plan["intent"], "plan");
    assert_eq!(
        plan["courseOfTherapyType"]["coding"][0]["code"],
        "continuous"
    );
    assert_eq!(plan["dispenseRequest"]["numberOfRepeatsAllowed"], 6);
    assert_eq!(plan["extension"][0]["url"], REPEAT_INFORMATION_URL);
    assert_eq!(task["code"]["coding"][0]["code"], RENEWAL_CODE);
    assert_eq!(task["intent"], "order");
    assert_eq!(task["status"], "requested");
    assert_eq!(task["focus"]["reference"], "MedicationRequest/plan1");
    assert_eq!(task["for"]["reference"], "Patient/p1");
    assert_eq!(
        task["input"][0]["valueReference"]["identifier"]["value"],
        "FA123"
    );
    assert_eq!(prescription["intent"], "order");
    assert_eq!(
        prescription["basedOn"][0]["reference"],
        "MedicationRequest/plan1"
    );
    assert_eq!(
        prescription["dispenseRequest"]["performer"]["identifier"]["value"],
        "FA123"
    );
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["output"][0]["valueReference"]["reference"],
        "MedicationRequest/rx1"
    );

    patient.write(&[&dispensed]);
    let repeat = only_in(&patient.record, &consent);
    assert_eq!((repeat.issued, repeat.left()), (1, 5));
    let order = &repeat.orders[0];
    assert_eq!(order.status, "completed");
    assert_eq!(order.prescription.as_deref(), Some("rx1"));
    assert_eq!(order.pharmacy.as_deref(), Some("FA123"));
    assert_eq!(
        order.dispensed.as_ref().map(|(_, by)| by.as_str()),
        Some("High Street Pharmacy")
    );
}

#[test]
fn a_prescription_the_patient_or_a_reader_wrote_is_never_dispensed() {
    let mut patient = Node::new("Ada Lovelace", Role::Patient);
    let mut gp = Node::new("Riverside Surgery", Role::Provider);
    let plan = repeat(&new_repeat(6), "plan1", now(), today()).unwrap();
    gp.write(&[&plan]);
    patient.merge(&mut gp);
    let task = order(
        &only(&patient.record),
        None,
        &patient_ref(),
        "t1",
        now(),
        today(),
    )
    .unwrap();
    // The patient's own device answers its order with a prescription it made up, naming the
    // practice as requester.
    let (forged, done) = issue(&plan, &task, &practice(), "rx1", now()).unwrap();
    patient.write(&[&task, &forged, &done]);
    let pharmacy = json!({"display": "High Street Pharmacy"});
    let writers = ledger(
        &patient,
        &gp,
        Access::Write,
        &[Section::Summary, Section::Requests],
    );
    let repeat = only_in(&patient.record, &writers);
    let order = &repeat.orders[0];
    assert_eq!(order.issued_by.as_deref(), Some("Ada Lovelace"));
    assert!(!order.prescription_verified);
    let refused = dispense(order, &repeat, &pharmacy, None, "d", now()).unwrap_err();
    assert!(
        matches!(refused, RepeatError::Unverified { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("Ada Lovelace"), "{refused}");

    // A practice that may only read `summary` cannot issue one either.
    let mut reader = Node::new("Riverside Surgery", Role::Provider);
    reader.merge(&mut patient);
    let task2 = json!({"resourceType": "Task", "id": "t2", "status": "requested",
        "intent": "order", "code": {"coding": [{"system": SNOMED, "code": RENEWAL_CODE}]},
        "focus": {"reference": "MedicationRequest/plan1"}});
    let (rx2, done2) = issue(&plan, &task2, &practice(), "rx2", now()).unwrap();
    reader.write(&[&task2, &rx2, &done2]);
    let readers = ledger(
        &patient,
        &reader,
        Access::Read,
        &[Section::Summary, Section::Requests],
    );
    let repeat = only_in(&reader.record, &readers);
    let second = repeat.orders.iter().find(|o| o.id == "t2").unwrap();
    assert!(!second.prescription_verified, "{second:?}");
}

#[test]
fn orders_past_review_with_no_issues_left_stopped_or_waiting_are_refused_saying_what_to_do() {
    let plan = repeat(&new_repeat(1), "plan1", now(), today()).unwrap();
    let mut record = record(1);
    put(&mut record, &[&plan]);
    let repeat_now = only(&record);

    let late = date(2026, 9, 2);
    let error = order(&repeat_now, None, &patient_ref(), "t", now(), late).unwrap_err();
    assert!(matches!(error, RepeatError::ReviewDue { .. }), "{error}");
    assert!(error.to_string().contains("phr messages send"), "{error}");

    let task = order(&repeat_now, None, &patient_ref(), "t1", now(), today()).unwrap();
    put(&mut record, &[&task]);
    let error = order(&only(&record), None, &patient_ref(), "t2", now(), today()).unwrap_err();
    assert!(
        matches!(error, RepeatError::AlreadyOrdered { .. }),
        "{error}"
    );

    let (rx, done) = issue(&plan, &task, &practice(), "rx1", now()).unwrap();
    put(&mut record, &[&rx, &done]);
    let error = order(&only(&record), None, &patient_ref(), "t3", now(), today()).unwrap_err();
    assert_eq!(
        error,
        RepeatError::NoIssuesLeft {
            medicine: "Salbutamol 100micrograms/dose inhaler".into(),
            issued: 1,
            allowed: 1
        }
    );
    // An order already answered is not answered again.
    let error = issue(&plan, &done, &practice(), "rx2", now()).unwrap_err();
    assert!(matches!(error, RepeatError::Answered { .. }), "{error}");

    let mut stopped = plan.clone();
    stopped["status"] = json!("stopped");
    put(&mut record, &[&stopped]);
    let error = order(&only(&record), None, &patient_ref(), "t4", now(), today()).unwrap_err();
    assert!(matches!(error, RepeatError::NotActive { .. }), "{error}");
}

#[test]
fn a_refusal_carries_its_reason_and_bad_repeats_are_refused() {
    let plan = repeat(&new_repeat(3), "plan1", now(), today()).unwrap();
    let mut record = record(1);
    put(&mut record, &[&plan]);
    let task = order(&only(&record), None, &patient_ref(), "t1", now(), today()).unwrap();
    assert_eq!(
        reject(&task, " ", &practice(), now()),
        Err(RepeatError::Reason)
    );
    let refused = reject(&task, "Due a blood test first", &practice(), now()).unwrap();
    put(&mut record, &[&task, &refused]);
    let repeat = only(&record);
    assert_eq!(repeat.orders[0].status, "rejected");
    assert_eq!(
        repeat.orders[0].reason.as_deref(),
        Some("Due a blood test first")
    );
    assert_eq!(repeat.issued, 0, "a refusal uses no issue");
    assert_eq!(
        dispense(&repeat.orders[0], &repeat, &practice(), None, "d", now()),
        Err(RepeatError::NotIssued("t1".into()))
    );

    assert_eq!(
        repeat_fn(NewRepeat {
            issues: 0,
            ..new_repeat(1)
        }),
        Err(RepeatError::Issues(0))
    );
    assert_eq!(
        repeat_fn(NewRepeat {
            review: date(2026, 2, 1),
            ..new_repeat(1)
        }),
        Err(RepeatError::ReviewPast(date(2026, 2, 1)))
    );
}

fn repeat_fn(new: NewRepeat) -> Result<Value, RepeatError> {
    repeat(&new, "p", now(), today())
}

#[test]
fn two_issues_made_apart_both_count_against_the_repeat() {
    let plan = repeat(&new_repeat(2), "plan1", now(), today()).unwrap();
    let mut a = record(1);
    put(&mut a, &[&plan]);
    let mut b = record(2);
    b.merge(&mut a).unwrap();
    // Two orders, issued on two of the practice's nodes that had not synced.
    let t1 = json!({"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order",
        "code": {"coding": [{"system": SNOMED, "code": RENEWAL_CODE}]},
        "focus": {"reference": "MedicationRequest/plan1"}});
    let mut t2 = t1.clone();
    t2["id"] = json!("t2");
    let (rx1, done1) = issue(&plan, &t1, &practice(), "rx1", now()).unwrap();
    let (rx2, done2) = issue(&plan, &t2, &practice(), "rx2", now()).unwrap();
    put(&mut a, &[&t1, &rx1, &done1]);
    put(&mut b, &[&t2, &rx2, &done2]);
    a.merge(&mut b).unwrap();
    let repeat = only(&a);
    assert_eq!((repeat.issued, repeat.left()), (2, 0), "{repeat:?}");
    // Nothing was written twice, so nothing waits for a person.
    assert_eq!(a.conflicts().unwrap(), vec![]);
}
