//! What each kind of entry but a reading becomes: the body of its resource, which [`build`]
//! completes with the id, tags and subject. Readings have their own module, for their table
//! of measures.
//!
//! [`build`]: super::build

use base64::{Engine, engine::general_purpose::STANDARD};
use jiff::civil::Date;
use serde_json::{Value, json};

use super::{EntryError, LOINC, NewEntry, concept};

const SNOMED: &str = "http://snomed.info/sct";
const CONDITION_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
pub(super) const CONDITION_VER_STATUS: &str =
    "http://terminology.hl7.org/CodeSystem/condition-ver-status";
const CONDITION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/condition-category";
const ALLERGY_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical";
pub(super) const ALLERGY_VERIFICATION: &str =
    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification";

/// A note's description (its first line) is cut to this many characters.
const NOTE_DESCRIPTION_CHARS_MAX: usize = 80;

fn severity(value: &str) -> Result<(&'static str, &'static str, &'static str), EntryError> {
    // The FHIR reaction severity codes, with the SNOMED CT concepts Condition.severity uses.
    match value.trim().to_ascii_lowercase().as_str() {
        "mild" => Ok(("mild", "255604002", "Mild")),
        "moderate" => Ok(("moderate", "6736007", "Moderate")),
        "severe" => Ok(("severe", "24484000", "Severe")),
        _ => Err(EntryError::Severity(value.to_string())),
    }
}

/// A `YYYY-MM-DD` date, checked to exist in the calendar.
fn date(flag: &'static str, value: &str) -> Result<String, EntryError> {
    let value = value.trim();
    match value.parse::<Date>() {
        // Round-tripping rejects the other forms jiff accepts, such as a date with a time.
        Ok(date) if date.to_string() == value => Ok(value.to_string()),
        _ => Err(EntryError::BadDate {
            flag,
            value: value.to_string(),
        }),
    }
}

pub(super) fn symptom(entry: &NewEntry, text: &str, now: &str) -> Result<Value, EntryError> {
    let onset = match &entry.since {
        Some(since) => date("--onset", since)?,
        None => now.to_string(),
    };
    let mut body = json!({
        "clinicalStatus": concept(CONDITION_CLINICAL, "active", "Active"),
        "verificationStatus": concept(CONDITION_VER_STATUS, "unconfirmed", "Unconfirmed"),
        "category": [concept(SNOMED, "418799008", "Finding reported by subject or history provider")],
    });
    if let Some(value) = &entry.severity {
        let (_, snomed, display) = severity(value)?;
        body["severity"] = concept(SNOMED, snomed, display);
    }
    body["code"] = json!({ "text": text });
    body["onsetDateTime"] = onset.into();
    body["recordedDate"] = now.into();
    Ok(body)
}

pub(super) fn allergy(entry: &NewEntry, text: &str, now: &str) -> Result<Value, EntryError> {
    let mut body = json!({
        "clinicalStatus": concept(ALLERGY_CLINICAL, "active", "Active"),
        "verificationStatus": concept(ALLERGY_VERIFICATION, "unconfirmed", "Unconfirmed"),
    });
    if let Some(criticality) = &entry.criticality {
        let code = criticality.trim().to_ascii_lowercase();
        if !["low", "high", "unable-to-assess"].contains(&code.as_str()) {
            return Err(EntryError::Criticality(criticality.clone()));
        }
        body["criticality"] = code.into();
    }
    body["code"] = json!({ "text": text });
    body["recordedDate"] = now.into();
    if let Some(reaction) = &entry.reaction {
        let mut reaction = json!({ "manifestation": [{ "text": reaction.trim() }] });
        if let Some(value) = &entry.severity {
            reaction["severity"] = severity(value)?.0.into();
        }
        body["reaction"] = json!([reaction]);
    }
    Ok(body)
}

pub(super) fn condition(entry: &NewEntry, text: &str, now: &str) -> Result<Value, EntryError> {
    let mut body = json!({
        "clinicalStatus": concept(CONDITION_CLINICAL, "active", "Active"),
        "verificationStatus": concept(CONDITION_VER_STATUS, "unconfirmed", "Unconfirmed"),
        "category": [concept(CONDITION_CATEGORY, "problem-list-item", "Problem List Item")],
        "code": { "text": text },
    });
    if let Some(since) = &entry.since {
        body["onsetDateTime"] = date("--since", since)?.into();
    }
    body["recordedDate"] = now.into();
    Ok(body)
}

pub(super) fn medication(entry: &NewEntry, text: &str, now: &str) -> Value {
    let mut body = json!({
        "status": "active",
        "medicationCodeableConcept": { "text": text },
        "effectiveDateTime": now,
        "dateAsserted": now,
    });
    if let Some(dosage) = &entry.dosage {
        body["dosage"] = json!([{ "text": dosage.trim() }]);
    }
    body
}

pub(super) fn note(text: &str, now: &str) -> Value {
    let description = description(text);
    json!({
        "status": "current",
        "type": { "coding": [{ "system": LOINC, "code": "51855-5", "display": "Patient Note" }],
                  "text": "Patient note" },
        "date": now,
        "description": description,
        "content": [{ "attachment": {
            "contentType": "text/plain; charset=utf-8",
            // Standard base64 with padding (RFC 4648 section 4), as FHIR `base64Binary` requires.
            "data": STANDARD.encode(text),
            "title": description,
        }}],
    })
}

/// A note's first non-blank line, cut to [`NOTE_DESCRIPTION_CHARS_MAX`] characters with an
/// ellipsis when longer.
fn description(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("");
    if line.chars().count() <= NOTE_DESCRIPTION_CHARS_MAX {
        return line.to_string();
    }
    let mut cut: String = line.chars().take(NOTE_DESCRIPTION_CHARS_MAX - 1).collect();
    cut.push('…');
    cut
}
