//! Tests of building entries: every kind, its codes and options, and every error message.

use jiff::Timestamp;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::{
    readings::{Measure, READINGS},
    *,
};
use crate::section::{Section, place};

const PATIENT: &str = "Patient/abc";

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

fn entry(kind: EntryKind, text: &str) -> NewEntry {
    NewEntry::new(kind, text)
}

fn reading_entry(name: &str, value: &str) -> NewEntry {
    NewEntry {
        value: Some(value.into()),
        ..entry(EntryKind::Reading, name)
    }
}

fn built(entry: &NewEntry) -> Value {
    build(entry, Some(PATIENT), "e1", now()).unwrap()
}

fn error(entry: &NewEntry) -> String {
    build(entry, Some(PATIENT), "e1", now())
        .unwrap_err()
        .to_string()
}

#[rustfmt::skip]
fn every_kind() -> [(NewEntry, &'static str, Section); 6] {
    [
        (entry(EntryKind::Symptom, "headache"), "Condition", Section::Journal),
        (reading_entry("heart-rate", "72"), "Observation", Section::Journal),
        (entry(EntryKind::Allergy, "penicillin"), "AllergyIntolerance", Section::Summary),
        (entry(EntryKind::Condition, "asthma"), "Condition", Section::Summary),
        (entry(EntryKind::Medication, "Salbutamol"), "MedicationStatement", Section::Summary),
        (entry(EntryKind::Note, "slept badly"), "DocumentReference", Section::Journal),
    ]
}

#[test]
fn every_kind_builds_and_lands_in_its_section() {
    for (entry, resource_type, section) in every_kind() {
        let resource = built(&entry);
        assert_eq!(resource["resourceType"], resource_type, "{entry:?}");
        assert_eq!(resource["id"], "e1");
        assert_eq!(place(&resource), section, "{resource}");
        let field = if entry.kind == EntryKind::Allergy {
            "patient"
        } else {
            "subject"
        };
        assert_eq!(resource[field]["reference"], PATIENT);
        let anonymous = build(&entry, None, "e1", now()).unwrap();
        assert!(anonymous.get(field).is_none() && anonymous.get("performer").is_none());
    }
}

#[test]
fn sensitive_entries_go_to_the_sensitive_section() {
    for (entry, _, _) in every_kind() {
        let resource = built(&NewEntry {
            sensitive: true,
            ..entry
        });
        assert_eq!(place(&resource), Section::Sensitive, "{resource}");
        assert_eq!(resource["meta"]["security"][0]["code"], "R");
    }
}

#[test]
fn kinds_round_trip_through_their_names() {
    for kind in EntryKind::ALL {
        assert_eq!(kind.as_str().parse::<EntryKind>(), Ok(kind));
    }
    let unknown = "diary".parse::<EntryKind>().unwrap_err().to_string();
    assert!(unknown.starts_with("unknown entry kind 'diary': expected one of symptom,"));
}

#[test]
#[rustfmt::skip]
fn resources_carry_codes_and_options() {
    use EntryKind::{Allergy, Condition, Medication, Note, Symptom};
    let symptom = NewEntry { severity: Some("moderate".into()), since: Some("2024-05-01".into()), ..entry(Symptom, " headache ") };
    let allergy = NewEntry { reaction: Some("rash".into()), severity: Some("severe".into()), criticality: Some("high".into()), ..entry(Allergy, "penicillin") };
    let asthma = NewEntry { since: Some("2001-09-01".into()), ..entry(Condition, "asthma") };
    let inhaler = NewEntry { dosage: Some("2 puffs when needed".into()), ..entry(Medication, "Salbutamol 100mcg inhaler") };
    let cases = [
        (&symptom, "/code/text", "headache"),
        (&symptom, "/category/0/coding/0/code", "418799008"),
        (&symptom, "/severity/coding/0/code", "6736007"),
        (&symptom, "/verificationStatus/coding/0/code", "unconfirmed"),
        (&symptom, "/onsetDateTime", "2024-05-01"),
        (&symptom, "/recordedDate", "2023-11-14T22:13:20Z"),
        (&entry(Symptom, "cough"), "/onsetDateTime", "2023-11-14T22:13:20Z"),
        (&allergy, "/criticality", "high"),
        (&allergy, "/reaction/0/manifestation/0/text", "rash"),
        (&allergy, "/reaction/0/severity", "severe"),
        (&allergy, "/clinicalStatus/coding/0/code", "active"),
        (&asthma, "/category/0/coding/0/code", "problem-list-item"),
        (&asthma, "/onsetDateTime", "2001-09-01"),
        (&inhaler, "/dosage/0/text", "2 puffs when needed"),
        (&inhaler, "/dateAsserted", "2023-11-14T22:13:20Z"),
        (&entry(Note, "slept badly"), "/type/coding/0/code", "51855-5"),
        (&entry(Note, "slept badly"), "/content/0/attachment/data", "c2xlcHQgYmFkbHk="),
        (&reading_entry("blood-pressure", "128/82"), "/category/0/coding/0/code", "vital-signs"),
        (&reading_entry("blood-pressure", "128/82"), "/performer/0/reference", PATIENT),
        (&reading_entry("temperature", "37.2"), "/valueQuantity/code", "Cel"),
        (&reading_entry("blood-pressure", "128/82"), "/code/text", "Blood pressure"),
    ];
    for (entry, pointer, expected) in cases {
        assert_eq!(built(entry).pointer(pointer), Some(&json!(expected)), "{pointer} of {entry:?}");
    }
    assert!(built(&allergy).get("meta").is_none());
}

#[test]
fn blood_pressure_has_systolic_and_diastolic_components() {
    let resource = built(&reading_entry("blood-pressure", "128/82"));
    assert_eq!(resource["code"]["coding"][0]["code"], "85354-9");
    let component = |i: usize, field: &str| resource["component"][i].pointer(field).cloned();
    assert_eq!(component(0, "/code/coding/0/code"), Some(json!("8480-6")));
    assert_eq!(component(0, "/valueQuantity/value"), Some(json!(128)));
    assert_eq!(component(0, "/valueQuantity/code"), Some(json!("mm[Hg]")));
    assert_eq!(component(1, "/code/coding/0/code"), Some(json!("8462-4")));
    assert_eq!(component(1, "/valueQuantity/value"), Some(json!(82)));
}

#[test]
fn decimals_stay_as_written() {
    let resource = built(&reading_entry("weight", "81.50"));
    assert_eq!(resource["code"]["coding"][0]["code"], "29463-7");
    let written = serde_json::to_string(&resource).unwrap();
    assert!(
        written.contains(r#""valueQuantity":{"value":81.50,"unit":"kg""#),
        "{written}"
    );
}

#[test]
fn a_note_is_described_by_its_first_line_cut_to_80_characters() {
    let text = format!("\n{}\nsecond line", "x".repeat(100));
    let resource = built(&entry(EntryKind::Note, &text));
    let description = resource["description"].as_str().unwrap();
    assert_eq!(description, format!("{}…", "x".repeat(79)));
    assert_eq!(resource["content"][0]["attachment"]["title"], description);
}

#[test]
fn a_note_is_stored_as_base64_matching_the_rfc_4648_vectors() {
    // A note cannot be empty, so the empty vector is left out.
    let vectors = [
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (text, expected) in vectors {
        let resource = built(&entry(EntryKind::Note, text));
        assert_eq!(
            resource["content"][0]["attachment"]["data"], expected,
            "{text:?}"
        );
    }
}

#[test]
#[rustfmt::skip]
fn every_error_says_what_was_wrong() {
    use EntryKind::{Allergy, Condition, Medication, Reading, Symptom};
    let cases = [
        (reading_entry("bloodpressure", "128/82"), "unknown reading 'bloodpressure': expected one of blood-pressure, heart-rate, weight, height, temperature, glucose, oxygen-saturation, peak-flow, bmi"),
        (reading_entry("blood-pressure", "128"), "blood pressure '128' must be SYSTOLIC/DIASTOLIC in mmHg, e.g. 128/82"),
        (reading_entry("blood-pressure", "82/128"), "blood pressure '82/128': the systolic (first) number must be higher than the diastolic (second), e.g. 128/82"),
        (reading_entry("heart-rate", "900"), "heart-rate 900 is outside the plausible range 20–300 /min: check the value and its unit"),
        (reading_entry("weight", "81,5"), "weight '81,5' is not a number: write it like 81.5"),
        (entry(Reading, "glucose"), "reading glucose has no value: give one, e.g. phr add reading glucose 5.4"),
        (entry(Symptom, "  "), "the symptom is empty: say what to record, e.g. phr add symptom \"headache\""),
        (NewEntry { severity: Some("bad".into()), ..entry(Symptom, "headache") }, "severity 'bad': expected mild, moderate or severe"),
        (NewEntry { since: Some("2024-13-01".into()), ..entry(Condition, "asthma") }, "--since '2024-13-01' is not a date: expected YYYY-MM-DD"),
        (NewEntry { since: Some("yesterday".into()), ..entry(Symptom, "cough") }, "--onset 'yesterday' is not a date: expected YYYY-MM-DD"),
        (NewEntry { criticality: Some("very".into()), ..entry(Allergy, "nuts") }, "criticality 'very': expected low, high or unable-to-assess"),
        (NewEntry { severity: Some("mild".into()), ..entry(Allergy, "nuts") }, "--severity on an allergy describes its reaction: give --reaction too, e.g. --reaction rash --severity mild"),
        (NewEntry { dosage: Some("daily".into()), ..entry(Symptom, "cough") }, "--dosage does not apply to 'phr add symptom': it is only for medication entries"),
        (NewEntry { dosage: Some(" ".into()), ..entry(Medication, "aspirin") }, "--dosage is empty: give it a value or leave it out"),
        (NewEntry { value: Some("throat".into()), ..entry(Symptom, "sore") }, "unexpected 'throat' after the symptom text: only readings take a value; put text with spaces in quotes, e.g. phr add symptom \"headache\""),
        (entry(Condition, &"a".repeat(2000)), "the condition is 2000 bytes, more than the 1024 allowed: shorten it"),
    ];
    for (entry, message) in cases {
        assert_eq!(error(&entry), message, "{entry:?}");
    }
    let bad_id = build(&entry(EntryKind::Note, "hi"), None, "not/an id", now()).unwrap_err();
    assert_eq!(bad_id, EntryError::InvalidId("not/an id".into()));
}

/// A measure and a positive value up to twice its maximum, written with two decimals.
fn any_reading() -> impl Strategy<Value = (&'static Measure, String)> {
    (0..READINGS.len(), 0.01f64..1.0).prop_map(|(index, fraction)| {
        let measure = &READINGS[index];
        (measure, format!("{:.2}", fraction * 2.0 * measure.max))
    })
}

proptest! {
    #[test]
    fn a_reading_builds_exactly_when_inside_its_range((measure, value) in any_reading()) {
        let float: f64 = value.parse().unwrap();
        let result = build(&reading_entry(measure.name, &value), None, "e1", now());
        if (measure.min..=measure.max).contains(&float) {
            let resource = result.unwrap();
            prop_assert_eq!(resource["valueQuantity"]["value"].to_string(), value);
        } else {
            let is_out_of_range = matches!(result, Err(EntryError::OutOfRange { .. }));
            prop_assert!(is_out_of_range);
        }
    }

    #[test]
    fn a_blood_pressure_builds_exactly_when_inside_its_ranges(systolic in 1u32..400, diastolic in 1u32..300) {
        let value = format!("{systolic}/{diastolic}");
        let result = build(&reading_entry("blood-pressure", &value), None, "e1", now());
        let in_range = (50..=280).contains(&systolic) && (20..=180).contains(&diastolic);
        prop_assert_eq!(result.is_ok(), in_range && diastolic < systolic);
    }
}

#[test]
fn a_clinicians_reading_is_a_clinical_observation_performed_by_them() {
    let at_home = built(&reading_entry("blood-pressure", "148/95"));
    assert_eq!(place(&at_home), Section::Journal);
    assert_eq!(at_home["performer"][0]["reference"], PATIENT);
    let at_practice = built(&NewEntry {
        recorded_by: Some("Riverside Surgery".into()),
        ..reading_entry("blood-pressure", "148/95")
    });
    assert_eq!(place(&at_practice), Section::Clinical);
    assert_eq!(
        at_practice["performer"],
        json!([{"display": "Riverside Surgery"}])
    );
    assert_eq!(at_practice["component"], at_home["component"]);
    assert_eq!(at_practice["subject"]["reference"], PATIENT);
}

#[test]
fn a_clinicians_condition_or_allergy_is_confirmed_and_names_its_recorder() {
    let by = |kind, text: &str| NewEntry {
        recorded_by: Some("Riverside Surgery".into()),
        ..entry(kind, text)
    };
    for resource in [
        built(&by(EntryKind::Condition, "asthma")),
        built(&by(EntryKind::Allergy, "penicillin")),
    ] {
        assert_eq!(
            resource["verificationStatus"]["coding"][0]["code"],
            "confirmed"
        );
        assert_eq!(resource["recorder"]["display"], "Riverside Surgery");
    }
    let own = built(&entry(EntryKind::Condition, "asthma"));
    assert_eq!(
        own["verificationStatus"]["coding"][0]["code"],
        "unconfirmed"
    );
    assert!(own.get("recorder").is_none());
    let medicine = built(&by(EntryKind::Medication, "Ramipril 5mg capsules"));
    assert_eq!(
        medicine["informationSource"]["display"],
        "Riverside Surgery"
    );
    assert!(
        built(&entry(EntryKind::Medication, "Ramipril 5mg capsules"))
            .get("informationSource")
            .is_none()
    );
}
