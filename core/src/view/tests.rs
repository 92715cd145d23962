//! Tests of the summary and of section views, on small records built in memory.

use jiff::civil::date;
use serde_json::{Value, json};

use super::{
    result::{DIASTOLIC_LOINC, SYSTOLIC_LOINC},
    section::base64_prefix,
    *,
};
use crate::{nhs::NHS_NUMBER_SYSTEM, section::Section, test_records::record_with};

fn shown(resources: &[Value]) -> (Summary, String) {
    let summary = summary(&record_with(resources), date(2020, 1, 1)).unwrap();
    let text = summary.to_string();
    (summary, text)
}

fn snomed(code: &str, display: &str) -> Value {
    json!({"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]})
}

fn condition(id: &str, status: &str, onset: &str) -> Value {
    json!({"resourceType": "Condition", "id": id, "code": snomed("38341003", "Hypertension"),
        "clinicalStatus": {"coding": [{"code": status}]}, "onsetDateTime": onset})
}

fn hba1c(id: &str, value: f64, when: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "Hemoglobin A1c"}]},
        "effectiveDateTime": when, "valueQuantity": {"value": value, "unit": "%"},
        "referenceRange": [{"low": {"value": 4.0}, "high": {"value": 5.6}}]})
}

#[test]
fn empty_groups_say_so() {
    let (summary, text) = shown(&[]);
    assert_eq!(summary.conflicts, 0);
    assert!(
        text.starts_with(
            "Name not recorded · no NHS number recorded · date of birth not recorded\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("Allergies\n  No allergies recorded.\n"),
        "{text}"
    );
    for heading in [
        "Active problems",
        "Current medicines",
        "Recent results (latest of each, newest first)",
        "Immunisations",
    ] {
        assert!(
            text.contains(&format!("{heading}\n  None recorded.\n")),
            "{heading} missing in\n{text}"
        );
    }
    assert!(!text.contains('⚠'));
}

#[test]
fn header_shows_name_nhs_number_and_age() {
    let patient = json!({"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1919-02-01",
        "name": [{"given": ["Fletcher"], "family": "Hyatt", "prefix": ["Mr."]}],
        "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": "9434765919"}]});
    let (_, text) = shown(std::slice::from_ref(&patient));
    assert!(
        text.starts_with("Fletcher Hyatt · NHS 943 476 5919 · born 1919-02-01 (age 100) · male\n"),
        "{text}"
    );
    let mut dead = patient;
    dead["deceasedDateTime"] = json!("1999-01-31T10:00:00+00:00");
    let (summary, _) = shown(&[dead]);
    assert_eq!(
        summary.patient.age_years,
        Some(79),
        "age at death, the day before the birthday"
    );
    assert!(
        summary
            .patient
            .to_string()
            .contains("died 1999-01-31 (age 79)")
    );
}

/// Someone who has died takes no medicines now: their lists read as they stood at death.
#[test]
fn a_deceased_patients_medicines_are_not_called_current() {
    let patient = json!({"resourceType": "Patient", "id": "p", "birthDate": "1919-02-01",
        "deceasedBoolean": true});
    let medicine = json!({"resourceType": "MedicationStatement", "id": "m", "status": "active",
        "medicationCodeableConcept": {"text": "Digoxin 125mcg tablets"}});
    let (summary, text) = shown(&[patient, medicine]);
    assert!(summary.patient.deceased);
    assert!(text.contains("died (date not recorded)"), "{text}");
    assert!(
        text.contains("Medicines recorded as current when they died\n  • Digoxin"),
        "{text}"
    );
    assert!(!text.contains("Current medicines"), "{text}");
    assert!(
        text.contains("Problems recorded as active when they died"),
        "{text}"
    );
}

#[test]
fn out_of_range_result_is_flagged_and_only_the_latest_of_a_test_is_kept() {
    let (summary, text) = shown(&[
        hba1c("o1", 5.0, "2018-01-01"),
        hba1c("o2", 6.2, "2019-03-04T10:00:00Z"),
    ]);
    assert_eq!(summary.results.len(), 1);
    assert_eq!(summary.results[0].flag.as_deref(), Some("HIGH"));
    assert!(
        text.contains("  • Hemoglobin A1c: 6.2 % on 2019-03-04  HIGH (normal 4.0–5.6)\n"),
        "{text}"
    );
}

#[test]
fn interpretation_flags_results_without_a_range() {
    let mut low = hba1c("o1", 3.0, "2019-03-04");
    low["referenceRange"] = json!([]);
    low["interpretation"] = json!([{"coding": [{"code": "L"}]}]);
    let (summary, _) = shown(&[low]);
    assert_eq!(summary.results[0].flag.as_deref(), Some("LOW"));
}

#[test]
fn results_are_bounded_newest_first() {
    let many: Vec<Value> = (0..15)
        .map(|i| json!({"resourceType": "Observation", "id": format!("o{i}"), "code": {"text": format!("Test {i:02}")},
            "effectiveDateTime": format!("2019-01-{:02}", i + 1), "valueString": "fine"}))
        .collect();
    let (summary, _) = shown(&many);
    assert_eq!(summary.results.len(), RECENT_RESULTS_MAX);
    assert_eq!(summary.results[0].display, "Test 14");
}

#[test]
fn blood_pressure_reads_systolic_over_diastolic() {
    let part = |code: &str, value: f64| {
        json!({"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "valueQuantity": {"value": value, "unit": "mm[Hg]"}})
    };
    let bp = json!({"resourceType": "Observation", "id": "bp", "status": "final", "code": {"text": "Blood Pressure"},
        "effectiveDateTime": "2019-03-04", "component": [part(DIASTOLIC_LOINC, 82.3), part(SYSTOLIC_LOINC, 127.8)]});
    let (_, text) = shown(&[bp]);
    assert!(
        text.contains("  • Blood Pressure: 128/82 mmHg on 2019-03-04\n"),
        "{text}"
    );
}

#[test]
fn resolved_condition_is_not_an_active_problem_and_repeats_keep_the_first_onset() {
    let asthma = json!({"resourceType": "Condition", "id": "c9", "code": {"text": "Asthma"},
        "clinicalStatus": {"coding": [{"code": "resolved"}]}, "onsetDateTime": "2001-01-01"});
    let (summary, text) = shown(&[
        condition("c1", "active", "2010-05-05T10:00:00Z"),
        condition("c2", "active", "1934-01-13T19:20:06+00:00"),
        asthma,
    ]);
    assert_eq!(summary.problems.len(), 1, "{:?}", summary.problems);
    assert!(
        text.contains("Active problems\n  • Hypertension, since 1934-01-13\n"),
        "{text}"
    );
    assert!(!text.contains("Asthma"));
}

#[test]
fn rendered_text_shows_displays_not_codes() {
    let allergy = json!({"resourceType": "AllergyIntolerance", "id": "a1", "criticality": "high",
        "code": snomed("764146007", "Penicillin"),
        "reaction": [{"manifestation": [snomed("271807003", "Rash (finding)")], "severity": "moderate"}]});
    let flu = |id: &str, when: &str| {
        json!({"resourceType": "Immunization", "id": id, "status": "completed",
        "vaccineCode": {"coding": [{"code": "140", "display": "Influenza, seasonal"}]}, "occurrenceDateTime": when})
    };
    let (_, text) = shown(&[
        allergy,
        condition("c1", "active", "1934-01-13"),
        flu("i1", "2018-03-04"),
        flu("i2", "2019-03-04"),
    ]);
    assert!(
        text.contains("  ! Penicillin: high criticality; reaction: rash (moderate)\n"),
        "{text}"
    );
    assert!(
        text.contains("  • Influenza, seasonal: 2019-03-04 (2 doses)\n"),
        "{text}"
    );
    for code in ["764146007", "271807003", "38341003", "140"] {
        assert!(!text.contains(code), "code {code} shown in\n{text}");
    }
}

#[test]
fn only_current_medicines_are_listed_and_references_are_followed() {
    let request = |id: &str, status: &str, name: &str| {
        json!({"resourceType": "MedicationRequest", "id": id,
        "status": status, "intent": "order", "medicationCodeableConcept": {"text": name},
        "dosageInstruction": [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [{"doseQuantity": {"value": 1}}]}]})
    };
    let by_reference = json!({"resourceType": "MedicationStatement", "id": "s1", "status": "active",
        "medicationReference": {"reference": "Medication/m1"}});
    let medication =
        json!({"resourceType": "Medication", "id": "m1", "code": {"text": "Salbutamol inhaler"}});
    let (summary, text) = shown(&[
        request("r1", "active", "Hydrochlorothiazide 25 MG"),
        request("r2", "active", "Hydrochlorothiazide 25 MG"),
        request("r3", "stopped", "Amoxicillin 500 MG"),
        by_reference,
        medication,
    ]);
    assert_eq!(summary.medicines.len(), 2, "{:?}", summary.medicines);
    assert!(
        text.contains("  • Hydrochlorothiazide 25 MG: 1 dose, once a day\n"),
        "{text}"
    );
    assert!(text.contains("  • Salbutamol inhaler\n"), "{text}");
    assert!(!text.contains("Amoxicillin"), "{text}");
}

#[test]
fn section_view_describes_each_resource_newest_first() {
    let record = record_with(&[
        json!({"resourceType": "Encounter", "id": "e1", "class": {"code": "AMB"},
            "type": [{"text": "General examination of patient"}], "period": {"start": "2019-03-04T09:00:00Z"}}),
        json!({"resourceType": "DocumentReference", "id": "d1", "date": "2020-02-02T00:00:00Z",
            "content": [{"attachment": {"contentType": "text/plain", "data": "CkRpc2NoYXJnZSBsZXR0ZXIKc2Vjb25k"}}]}),
        hba1c("o1", 6.2, "2018-01-01"),
        json!({"resourceType": "Procedure", "id": "p1", "code": {"text": "Appendectomy"}}),
    ]);
    let view = section_view(&record, Section::Clinical).unwrap();
    let keys: Vec<&str> = view.items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "DocumentReference/d1",
            "Encounter/e1",
            "Observation/o1",
            "Procedure/p1"
        ]
    );
    let text = view.to_string();
    assert!(text.starts_with("Clinical (4 entries)\n"), "{text}");
    assert!(
        text.contains("  2019-03-04  Encounter: General examination of patient (ambulatory)\n"),
        "{text}"
    );
    assert!(
        text.contains("  2020-02-02  DocumentReference: Discharge letter\n"),
        "{text}"
    );
    assert!(
        text.contains("  no date     Procedure: Appendectomy\n"),
        "{text}"
    );
    let result = "  2018-01-01  Observation: Hemoglobin A1c: 6.2 % HIGH (normal 4.0–5.6)\n";
    assert!(text.contains(result), "{text}");
}

#[test]
fn claims_show_kind_and_total() {
    let claim = json!({"resourceType": "Claim", "id": "c1", "created": "1934-01-13T19:50:06+00:00",
        "type": {"coding": [{"code": "pharmacy"}]}, "total": {"value": 255, "currency": "USD"}});
    let view = section_view(&record_with(&[claim]), Section::Sensitive).unwrap();
    assert_eq!(view.items[0].text, "pharmacy claim, total 255 USD");
    assert_eq!(view.items[0].date.as_deref(), Some("1934-01-13"));
    let empty = section_view(&record_with(&[]), Section::Journal).unwrap();
    assert_eq!(
        empty.to_string(),
        "Journal (0 entries)\n  Nothing recorded.\n"
    );
}

#[test]
fn base64_decodes_with_and_without_padding() {
    assert_eq!(
        base64_prefix("SGVsbG8gd29ybGQ=", 100).unwrap(),
        b"Hello world"
    );
    assert_eq!(base64_prefix("SGVs\nbG8", 100).unwrap(), b"Hello");
    assert_eq!(base64_prefix("SGVsbG8gd29ybGQ=", 4).unwrap(), b"Hel");
    assert!(base64_prefix("not*base64", 100).is_none());
}

/// The HL7 IPS example writes status fields as bare codes (as FHIR STU3 did); its high
/// criticality penicillin allergy must still be shown, and a resolved one still hidden.
#[test]
fn status_written_as_a_bare_code_is_understood() {
    let (_, text) = shown(&[
        json!({"resourceType": "AllergyIntolerance", "id": "a1", "clinicalStatus": "active",
               "verificationStatus": "confirmed", "criticality": "high",
               "code": snomed("373270004", "Penicillin -class of antibiotic- (substance)")}),
        json!({"resourceType": "AllergyIntolerance", "id": "a2", "clinicalStatus": "resolved",
               "code": snomed("91935009", "Peanut allergy")}),
        json!({"resourceType": "Condition", "id": "c1", "clinicalStatus": "remission",
               "code": snomed("254837009", "Malignant neoplasm of breast")}),
    ]);
    assert!(text.contains("Penicillin"), "{text}");
    assert!(!text.contains("Peanut"), "{text}");
    assert!(!text.contains("Malignant"), "{text}");
}

/// A problem in the sensitive section is left out of the summary, and the summary says so
/// (issue 14: views that hide nothing silently).
#[test]
fn the_summary_says_how_many_sensitive_entries_it_leaves_out() {
    let mut hidden = condition("c-hidden", "active", "2019-01-01");
    hidden["meta"] =
        json!({"tag": [{"system": crate::section::SECTION_TAG_SYSTEM, "code": "sensitive"}]});
    let (summary, text) = shown(&[condition("c1", "active", "2019-01-01"), hidden]);
    assert_eq!(summary.problems.len(), 1);
    assert_eq!(summary.sensitive, 1);
    assert!(
        text.contains("1 entry in your sensitive section is not shown here: `phr show sensitive`."),
        "{text}"
    );
    let (_, text) = shown(&[condition("c1", "active", "2019-01-01")]);
    assert!(!text.contains("sensitive"), "{text}");
}

/// The patient's own blood pressure, newer than the clinic's, is the one the summary shows,
/// marked as a home reading and flagged against the home threshold (issue 14: it vanished
/// behind a 2020 clinic reading). A clinic reading of the same values is judged against the
/// clinic threshold.
#[test]
fn a_home_reading_shows_in_the_results_marked_and_flagged() {
    let part = |code: &str, value: f64| {
        json!({"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "valueQuantity": {"value": value, "unit": "mm[Hg]"}})
    };
    let bp = |id: &str, date: &str, systolic: f64, diastolic: f64, journal: bool| {
        let mut o = json!({"resourceType": "Observation", "id": id, "status": "final",
            "code": {"text": "Blood pressure"}, "effectiveDateTime": date,
            "component": [part(SYSTOLIC_LOINC, systolic), part(DIASTOLIC_LOINC, diastolic)]});
        if journal {
            o["meta"] =
                json!({"tag": [{"system": crate::section::SECTION_TAG_SYSTEM, "code": "journal"}]});
        }
        o
    };
    let (summary, text) = shown(&[
        bp("clinic", "2020-01-01", 108.0, 84.0, false),
        bp("home", "2026-11-30", 138.0, 80.0, true),
    ]);
    assert_eq!(summary.results.len(), 1);
    assert!(summary.results[0].home);
    assert!(
        text.contains(
            "Blood pressure: 138/80 mmHg on 2026-11-30 (home reading)  HIGH (normal 90/60–134/84 at home)"
        ),
        "{text}"
    );
    // 138/80 in a clinic is under the clinic threshold: no flag.
    let (_, text) = shown(&[bp("clinic", "2026-11-30", 138.0, 80.0, false)]);
    assert!(
        text.contains("Blood pressure: 138/80 mmHg on 2026-11-30\n"),
        "{text}"
    );
}

/// What is not settled says so: a problem or an allergy not confirmed (what a patient reports,
/// until a clinician confirms it), a medicine on hold.
#[test]
fn unconfirmed_provisional_and_on_hold_entries_are_marked() {
    let verification = |code: &str| json!({"coding": [{"code": code}]});
    let (summary, text) = shown(&[
        json!({"resourceType": "Condition", "id": "c1", "code": {"text": "asthma"},
            "verificationStatus": verification("unconfirmed")}),
        json!({"resourceType": "Condition", "id": "c2", "code": {"text": "angina"},
            "verificationStatus": verification("provisional")}),
        json!({"resourceType": "Condition", "id": "c3", "code": {"text": "diabetes"},
            "verificationStatus": verification("confirmed")}),
        json!({"resourceType": "AllergyIntolerance", "id": "a1", "code": {"text": "latex"},
            "verificationStatus": verification("unconfirmed")}),
        json!({"resourceType": "MedicationStatement", "id": "m1", "status": "on-hold",
            "medicationCodeableConcept": {"text": "Warfarin 1mg tablets"}}),
        json!({"resourceType": "MedicationStatement", "id": "m2", "status": "active",
            "medicationCodeableConcept": {"text": "Metformin 500mg tablets"}}),
    ]);
    assert!(text.contains("asthma [unconfirmed]"), "{text}");
    assert!(text.contains("angina [provisional]"), "{text}");
    assert!(text.contains("• diabetes\n"), "{text}");
    assert!(text.contains("latex [unconfirmed]"), "{text}");
    assert!(text.contains("Warfarin 1mg tablets [on hold]"), "{text}");
    assert!(text.contains("• Metformin 500mg tablets\n"), "{text}");
    assert_eq!(summary.medicines.len(), 2);
}

/// Every type phr describes says when it is not what it would otherwise read as: a result not
/// final, a report in part, a vaccine not given, a visit that has not happened, an allergy
/// resolved or refuted, a diagnosis still differential, a medicine only proposed.
#[test]
fn the_status_of_every_type_shows_where_it_changes_the_meaning() {
    let mut preliminary = hba1c("o1", 6.2, "2019-12-01");
    preliminary["status"] = json!("preliminary");
    let verification = |code: &str| json!({"coding": [{"code": code}]});
    let record = record_with(&[
        preliminary,
        json!({"resourceType": "DiagnosticReport", "id": "r1", "status": "partial",
            "code": {"text": "Full blood count"}, "effectiveDateTime": "2019-12-02"}),
        json!({"resourceType": "Immunization", "id": "i1", "status": "not-done",
            "vaccineCode": {"text": "Influenza vaccine"}, "occurrenceDateTime": "2019-10-01"}),
        json!({"resourceType": "Encounter", "id": "e1", "status": "planned",
            "class": {"code": "AMB"}, "type": [{"text": "Asthma review"}],
            "period": {"start": "2020-02-01T09:00:00Z"}}),
        json!({"resourceType": "AllergyIntolerance", "id": "a1", "code": {"text": "latex"},
            "clinicalStatus": verification("resolved")}),
        json!({"resourceType": "AllergyIntolerance", "id": "a2", "code": {"text": "penicillin"},
            "verificationStatus": verification("refuted")}),
        json!({"resourceType": "AllergyIntolerance", "id": "a3", "code": {"text": "peanuts"},
            "criticality": "high"}),
        json!({"resourceType": "Condition", "id": "c1", "code": {"text": "angina"},
            "verificationStatus": verification("differential")}),
        json!({"resourceType": "MedicationRequest", "id": "m1", "status": "active",
            "intent": "proposal", "medicationCodeableConcept": {"text": "Atorvastatin 20mg"}}),
    ]);
    let mut listed = String::new();
    for section in [Section::Summary, Section::Clinical] {
        listed.push_str(&section_view(&record, section).unwrap().to_string());
    }
    for expected in [
        "Hemoglobin A1c: 6.2 % [preliminary] HIGH",
        "Full blood count [partial]",
        "Influenza vaccine [not given]",
        "Asthma review (ambulatory) [planned]",
        "latex (resolved)",
        "penicillin (refuted)",
        "peanuts (high risk)",
        "angina (differential)",
        "Atorvastatin 20mg [proposed]",
    ] {
        assert!(listed.contains(expected), "{expected}: {listed}");
    }
    // In the summary: a proposal is not a medicine taken, and the result says it is preliminary.
    let summary = summary(&record, date(2020, 1, 1)).unwrap().to_string();
    assert!(
        summary.contains("Atorvastatin 20mg [proposed]"),
        "{summary}"
    );
    assert!(
        summary.contains("6.2 % on 2019-12-01 [preliminary]"),
        "{summary}"
    );
}

/// Who wrote an entry shows beside it: a clinician who recorded a problem or an allergy, the
/// prescriber of a medicine; what the patient says of themselves names no one (and a problem
/// or allergy they add reads as unconfirmed).
#[test]
fn the_summary_names_who_recorded_or_prescribed_an_entry_other_than_the_patient() {
    let (summary, text) = shown(&[
        json!({"resourceType": "Condition", "id": "c1", "code": {"text": "gout"},
            "recorder": {"display": "Riverside Surgery"}}),
        json!({"resourceType": "Condition", "id": "c2", "code": {"text": "hay fever"},
            "asserter": {"reference": "Patient/p1", "display": "Ada Lovelace"},
            "verificationStatus": {"coding": [{"code": "unconfirmed"}]}}),
        json!({"resourceType": "AllergyIntolerance", "id": "a1", "code": {"text": "penicillin"},
            "recorder": {"reference": "Practitioner/1", "display": "Dr A Patel"}}),
        json!({"resourceType": "MedicationRequest", "id": "m1", "status": "active",
            "intent": "order", "medicationCodeableConcept": {"text": "Allopurinol 100mg"},
            "requester": {"display": "Dr A Patel"}}),
        json!({"resourceType": "MedicationStatement", "id": "m2", "status": "active",
            "medicationCodeableConcept": {"text": "Ibuprofen 200mg"}}),
    ]);
    assert!(
        text.contains("gout · recorded by Riverside Surgery"),
        "{text}"
    );
    assert!(text.contains("• hay fever [unconfirmed]\n"), "{text}");
    assert!(
        text.contains("penicillin · recorded by Dr A Patel"),
        "{text}"
    );
    assert!(text.contains("Allopurinol 100mg · by Dr A Patel"), "{text}");
    assert!(text.contains("• Ibuprofen 200mg\n"), "{text}");
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(
        json["problems"][0]["by"]
            .as_str()
            .or(json["problems"][1]["by"].as_str()),
        Some("Riverside Surgery")
    );
}
