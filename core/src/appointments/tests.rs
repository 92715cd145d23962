//! Tests of appointments: slots, the live answer, the request and every change of state.

use automerge::ActorId;
use serde_json::json;

use super::*;
use crate::{Author, RecordMeta, Stamp, fhir::validate, section::place};

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn now() -> Timestamp {
    at("2026-03-01T08:00:00Z")
}

fn counter() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("s{n}")
    }
}

fn six() -> Vec<Slot> {
    make_slots(
        at("2026-03-02T09:00:00Z"),
        10,
        6,
        "GP appointment",
        now(),
        counter(),
    )
    .unwrap()
}

fn practice() -> Value {
    json!({"type": "Organization", "display": "Riverside Surgery",
        "identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A81001"}})
}

#[test]
fn slots_are_made_back_to_back_within_their_bounds_and_never_overlap() {
    let slots = six();
    assert_eq!(slots.len(), 6);
    assert_eq!(slots[0].end, slots[1].start);
    assert_eq!(slots[5].end, at("2026-03-02T10:00:00Z"));
    let fhir = slots[0].to_fhir("sched");
    validate::check(&fhir).unwrap();
    validate::check_typed(&fhir).unwrap();
    assert_eq!(place(&fhir), Section::Requests);
    assert_eq!(fhir["status"], "free");

    let bad = |minutes, count, start| {
        make_slots(at(start), minutes, count, "GP", now(), counter()).unwrap_err()
    };
    assert_eq!(
        bad(4, 1, "2026-03-02T09:00:00Z"),
        AppointmentError::Minutes(4)
    );
    assert_eq!(
        bad(10, 0, "2026-03-02T09:00:00Z"),
        AppointmentError::Count(0)
    );
    assert_eq!(
        bad(10, SLOTS_PER_ADD_MAX + 1, "2026-03-02T09:00:00Z"),
        AppointmentError::Count(SLOTS_PER_ADD_MAX + 1)
    );
    assert!(matches!(
        bad(10, 1, "2026-02-01T09:00:00Z"),
        AppointmentError::Past(_)
    ));

    let schedule = add_to_schedule(&[], six(), now()).unwrap();
    let overlapping =
        make_slots(at("2026-03-02T09:55:00Z"), 10, 1, "GP", now(), counter()).unwrap();
    assert!(matches!(
        add_to_schedule(&schedule, overlapping, now()),
        Err(AppointmentError::Overlap(_))
    ));
    // Past free slots go when new ones come; past booked ones stay.
    let mut old = schedule.clone();
    old[0].booked = Some(("r".into(), "a".into()));
    let later = at("2026-03-03T00:00:00Z");
    let next = make_slots(at("2026-03-04T09:00:00Z"), 10, 1, "GP", later, counter()).unwrap();
    let kept = add_to_schedule(&old, next, later).unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept[0].booked.is_some());
}

#[test]
fn the_answer_offers_only_free_future_slots_in_the_span_bounded() {
    let mut schedule = six();
    schedule[1].booked = Some(("r".into(), "a".into()));
    let day = |from: &str, until: &str| SlotsQuery {
        from_ms: at(from).as_millisecond(),
        until_ms: at(until).as_millisecond(),
    };
    let query = day("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z");
    let SlotsAnswer::Free(free) = answer(&schedule, &query, now().as_millisecond()) else {
        panic!("refused");
    };
    let ids: Vec<&str> = free.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["s1", "s3", "s4", "s5", "s6"]);
    // Slots already started are not offered.
    let late = at("2026-03-02T09:35:00Z").as_millisecond();
    let SlotsAnswer::Free(free) = answer(&schedule, &query, late) else {
        panic!("refused");
    };
    assert_eq!(free.len(), 2);
    // Spans that are empty, reversed or too long are refused.
    for query in [
        day("2026-03-02T00:00:00Z", "2026-03-02T00:00:00Z"),
        day("2026-03-03T00:00:00Z", "2026-03-02T00:00:00Z"),
        day("2026-03-02T00:00:00Z", "2026-09-02T00:00:00Z"),
    ] {
        assert!(matches!(
            answer(&schedule, &query, 0),
            SlotsAnswer::Refused(_)
        ));
    }
    // An answer is bounded.
    let many: Vec<Slot> = (0..3)
        .flat_map(|d| {
            let start = at("2026-03-02T00:00:00Z")
                .checked_add(SignedDuration::from_hours(24 * d))
                .unwrap();
            make_slots(start, 5, 200, "GP", now(), counter()).unwrap()
        })
        .collect();
    let query = day("2026-03-02T00:00:00Z", "2026-03-10T00:00:00Z");
    let SlotsAnswer::Free(free) = answer(&many, &query, 0) else {
        panic!("refused");
    };
    assert_eq!(free.len(), SLOTS_ANSWER_MAX);
    let wire = serde_json::to_vec(&SlotsAnswer::Free(free)).unwrap();
    assert!(
        (wire.len() as u64) < SLOTS_ANSWER_BYTES_MAX,
        "{}",
        wire.len()
    );
}

#[test]
fn a_request_is_an_r4_appointment_and_each_side_moves_it_only_from_where_it_may() {
    let slot = six()[0].offered();
    let patient = json!({"reference": "Patient/p1"});
    let asked = request(
        &slot,
        &practice(),
        &patient,
        "Cough for 3 weeks",
        "a1",
        now(),
    )
    .unwrap();
    validate::check(&asked).unwrap();
    validate::check_typed(&asked).unwrap();
    assert_eq!(place(&asked), Section::Requests);
    assert_eq!(asked["status"], "proposed");
    assert_eq!(asked["slot"][0]["reference"], "Slot/s1");
    assert_eq!(asked["participant"][0]["status"], "accepted");
    assert_eq!(asked["participant"][1]["status"], "needs-action");
    assert_eq!(
        request(&slot, &practice(), &patient, " ", "a", now()),
        Err(AppointmentError::Text("the reason"))
    );

    let booked = book(&asked).unwrap();
    assert_eq!(booked["status"], "booked");
    assert_eq!(booked["participant"][1]["status"], "accepted");
    assert!(matches!(book(&booked), Err(AppointmentError::State { .. })));
    let declined = decline(&asked, "That time has just been booked").unwrap();
    assert_eq!(declined["status"], "cancelled");
    assert_eq!(declined["participant"][1]["status"], "declined");
    assert!(
        decline(&booked, "x").is_err(),
        "a booked one is cancelled, not declined"
    );
    let cancelled = cancel(&booked, Side::Patient, "Feeling better").unwrap();
    assert_eq!(cancelled["participant"][0]["status"], "declined");
    assert_eq!(cancelled["cancelationReason"]["text"], "Feeling better");
    assert!(cancel(&cancelled, Side::Practice, "x").is_err());
    assert_eq!(outcome(&booked, true).unwrap()["status"], "fulfilled");
    assert_eq!(outcome(&booked, false).unwrap()["status"], "noshow");
    assert!(
        outcome(&asked, true).is_err(),
        "only a booked appointment took place"
    );
    for resource in [&booked, &declined, &cancelled] {
        validate::check(resource).unwrap();
    }
}

#[test]
fn a_cancellation_and_a_booking_made_apart_are_both_kept_as_a_conflict() {
    let slot = six()[0].offered();
    let asked = request(
        &slot,
        &practice(),
        &json!({"reference": "Patient/p1"}),
        "Rash",
        "a1",
        now(),
    )
    .unwrap();
    let meta = RecordMeta {
        id: "r".into(),
        subject: None,
        nhs_number: None,
    };
    let author = Author {
        id: "x".into(),
        name: "x".into(),
    };
    let stamp = Stamp {
        author: &author,
        time: now(),
    };
    let mut patient = Record::create(meta.clone(), &ActorId::from(vec![1; 16]));
    patient.put(stamp, &asked).unwrap();
    patient.commit(stamp, "ask");
    let mut practice_copy = Record::create(meta, &ActorId::from(vec![2; 16]));
    practice_copy.merge(&mut patient).unwrap();
    practice_copy.put(stamp, &book(&asked).unwrap()).unwrap();
    practice_copy.commit(stamp, "book");
    patient
        .put(stamp, &cancel(&asked, Side::Patient, "Better now").unwrap())
        .unwrap();
    patient.commit(stamp, "cancel");
    patient.merge(&mut practice_copy).unwrap();
    let listed = appointments(&patient, &LedgerState::default()).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].conflict, "{listed:?}");
    let conflicts = patient.conflicts().unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].versions.len(), 2, "both versions are kept");
}

#[test]
fn only_slots_a_request_can_name_are_offered_on() {
    let good = six()[0].offered();
    assert!(is_offerable(&good));
    for bad in [
        OfferedSlot {
            id: "../../etc".into(),
            ..good.clone()
        },
        OfferedSlot {
            end: good.start,
            ..good.clone()
        },
        OfferedSlot {
            service: " ".into(),
            ..good.clone()
        },
        OfferedSlot {
            service: "x".repeat(APPOINTMENT_TEXT_BYTES_MAX + 1),
            ..good.clone()
        },
    ] {
        assert!(!is_offerable(&bad), "{bad:?}");
    }
}
