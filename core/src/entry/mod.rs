//! Entries a patient or clinician adds by hand (`phr add KIND ...`), built as FHIR R4 resources.
//!
//! [`build`] checks a [`NewEntry`] and turns it into one resource, coded wherever a standard
//! code exists, so that other systems can read what the patient wrote:
//!
//! | kind         | resource             | section   |
//! |--------------|----------------------|-----------|
//! | `symptom`    | `Condition`          | journal   |
//! | `reading`    | `Observation`        | journal   |
//! | `allergy`    | `AllergyIntolerance` | summary   |
//! | `condition`  | `Condition`          | summary   |
//! | `medication` | `MedicationStatement`| summary   |
//! | `note`       | `DocumentReference`  | journal   |
//!
//! Journal entries carry a phr section tag, which [`crate::section::place`] honours before any
//! other rule. A reading a clinician records ([`NewEntry::recorded_by`]) carries none: it is a
//! clinical observation, in `clinical`, performed by them. An entry marked sensitive is tagged `sensitive` instead and also gets the HL7
//! "restricted" confidentiality label, so it stays sensitive even where phr's tag is unknown.
//! Everything the patient reports is `unconfirmed`: a clinician's node confirms it. A condition
//! or an allergy a clinician records ([`NewEntry::recorded_by`]) is `confirmed`, with them as
//! its `recorder`.
//!
//! The module does no I/O: the caller passes the resource id and the time.
//!
//! This module holds the API (the kinds, the entry as typed, its errors) and [`build`], which
//! checks what every kind shares. What each kind becomes is in submodules: `readings` for home
//! measurements, with their table of codes, units and plausible ranges, and `kinds` for every
//! other kind.

mod correct;
mod kinds;
mod readings;
#[cfg(test)]
mod tests;

use std::{fmt, str::FromStr};

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::{fhir::is_valid_id, section::SECTION_TAG_SYSTEM};

pub use correct::{Correction, CorrectionError, correct};
pub use readings::reading_names;

const LOINC: &str = "http://loinc.org";
const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";

/// The longest symptom, substance, condition, medicine, reaction or dosage text, in bytes.
pub const TEXT_BYTES_MAX: usize = 1024;
/// The longest diary note, in bytes; longer notes belong in several entries.
pub const NOTE_BYTES_MAX: usize = 64 * 1024;

/// What kind of entry is being added: the word after `phr add`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Something the patient feels, e.g. a headache.
    Symptom,
    /// A home measurement, e.g. blood pressure or weight.
    Reading,
    /// An allergy or intolerance to a substance.
    Allergy,
    /// A long-standing condition, e.g. asthma.
    Condition,
    /// A medicine the patient takes.
    Medication,
    /// A free-text diary note; the default because it needs nothing but text.
    #[default]
    Note,
}

impl EntryKind {
    /// Every kind, in the order `phr add --help` lists them.
    pub const ALL: [EntryKind; 6] = [
        EntryKind::Symptom,
        EntryKind::Reading,
        EntryKind::Allergy,
        EntryKind::Condition,
        EntryKind::Medication,
        EntryKind::Note,
    ];

    /// The kind's name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Symptom => "symptom",
            EntryKind::Reading => "reading",
            EntryKind::Allergy => "allergy",
            EntryKind::Condition => "condition",
            EntryKind::Medication => "medication",
            EntryKind::Note => "note",
        }
    }

    /// What the entry's text holds, for error messages.
    fn what(self) -> &'static str {
        match self {
            EntryKind::Symptom => "symptom",
            EntryKind::Reading => "reading kind",
            EntryKind::Allergy => "substance",
            EntryKind::Condition => "condition",
            EntryKind::Medication => "medicine",
            EntryKind::Note => "note",
        }
    }

    /// A command line that adds an entry of this kind, for error messages.
    fn example(self) -> &'static str {
        match self {
            EntryKind::Symptom => "phr add symptom \"headache\"",
            EntryKind::Reading => "phr add reading heart-rate 72",
            EntryKind::Allergy => "phr add allergy penicillin",
            EntryKind::Condition => "phr add condition \"asthma\"",
            EntryKind::Medication => "phr add medication \"Salbutamol 100mcg inhaler\"",
            EntryKind::Note => "phr add note \"slept badly\"",
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntryKind {
    type Err = EntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EntryKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| EntryError::UnknownKind(s.to_string()))
    }
}

/// An entry as the user typed it; [`build`] checks every field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewEntry {
    /// What kind of entry this is.
    pub kind: EntryKind,
    /// The symptom, reading kind (`blood-pressure`), substance, condition, medicine or note.
    pub text: String,
    /// A reading's value as written, e.g. `128/82` or `81.50`; readings only.
    pub value: Option<String>,
    /// `mild`, `moderate` or `severe`: of a symptom, or of an allergy's reaction.
    pub severity: Option<String>,
    /// What an allergy does, e.g. `rash`.
    pub reaction: Option<String>,
    /// An allergy's `low`, `high` or `unable-to-assess` risk of a serious reaction.
    pub criticality: Option<String>,
    /// `YYYY-MM-DD`: a symptom's onset (`--onset`) or when a condition began (`--since`).
    pub since: Option<String>,
    /// How a medicine is taken, e.g. `2 puffs when needed`.
    pub dosage: Option<String>,
    /// The patient marks the entry sensitive.
    pub sensitive: bool,
    /// The clinician or provider recording it, when it is not the patient: a reading is then
    /// a clinical observation (the `clinical` section, performed by them), not a home one.
    pub recorded_by: Option<String>,
}

impl NewEntry {
    /// An entry of `kind` with only its text set.
    pub fn new(kind: EntryKind, text: impl Into<String>) -> Self {
        NewEntry {
            kind,
            text: text.into(),
            ..NewEntry::default()
        }
    }
}

/// Why an entry cannot be built. Each message says what was wrong and what to do.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EntryError {
    /// The word after `phr add` is not a kind of entry.
    #[error(
        "unknown entry kind '{0}': expected one of symptom, reading, allergy, condition, medication, note"
    )]
    UnknownKind(String),
    /// The entry's text is empty or only spaces.
    #[error("the {} is empty: say what to record, e.g. {}", .0.what(), .0.example())]
    EmptyText(EntryKind),
    /// An option was given but left empty, e.g. `--dosage ""`.
    #[error("{0} is empty: give it a value or leave it out")]
    EmptyOption(&'static str),
    /// A text is longer than its bound ([`TEXT_BYTES_MAX`], [`NOTE_BYTES_MAX`]).
    #[error("the {what} is {bytes} bytes, more than the {max} allowed: shorten it")]
    TooLong {
        /// Which text, e.g. "note" or "--reaction".
        what: &'static str,
        /// Its length.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// A value follows the text of an entry that is not a reading.
    #[error(
        "unexpected '{value}' after the {kind} text: only readings take a value; put text with spaces in quotes, e.g. {}",
        .kind.example()
    )]
    UnexpectedValue {
        /// The entry's kind.
        kind: EntryKind,
        /// The extra value.
        value: String,
    },
    /// An option was given to a kind of entry that has no use for it.
    #[error("{option} does not apply to 'phr add {kind}': it is only for {applies_to} entries")]
    NotApplicable {
        /// The option, e.g. `--dosage`.
        option: &'static str,
        /// The entry's kind.
        kind: EntryKind,
        /// The kinds that take the option.
        applies_to: &'static str,
    },
    /// An allergy's `--severity` describes a reaction, but no `--reaction` was given.
    #[error(
        "--severity on an allergy describes its reaction: give --reaction too, e.g. --reaction rash --severity mild"
    )]
    SeverityWithoutReaction,
    /// The reading kind is not one phr knows.
    #[error("unknown reading '{reading}': expected one of {names}", reading = .0, names = reading_names().collect::<Vec<_>>().join(", "))]
    UnknownReading(String),
    /// A reading was given without its value.
    #[error("reading {reading} has no value: give one, e.g. phr add reading {reading} {example}")]
    MissingValue {
        /// The reading kind.
        reading: &'static str,
        /// A plausible value.
        example: &'static str,
    },
    /// A blood pressure is not two numbers separated by `/`.
    #[error("blood pressure '{0}' must be SYSTOLIC/DIASTOLIC in mmHg, e.g. 128/82")]
    BloodPressureFormat(String),
    /// The diastolic pressure is not below the systolic one, most likely the two are swapped.
    #[error(
        "blood pressure '{0}': the systolic (first) number must be higher than the diastolic (second), e.g. 128/82"
    )]
    BloodPressureOrder(String),
    /// A reading's value is not a decimal number.
    #[error("{reading} '{value}' is not a number: write it like {example}")]
    NotANumber {
        /// The reading kind.
        reading: &'static str,
        /// The value as given.
        value: String,
        /// A plausible value.
        example: &'static str,
    },
    /// A reading's value is outside its plausible range; most likely a typo or the wrong unit.
    #[error(
        "{reading} {value} is outside the plausible range {min}–{max} {unit}: check the value and its unit"
    )]
    OutOfRange {
        /// The reading kind.
        reading: &'static str,
        /// The value as given.
        value: String,
        /// The lowest plausible value.
        min: f64,
        /// The highest plausible value.
        max: f64,
        /// The unit the value must be in.
        unit: &'static str,
    },
    /// `--severity` is not one of the three FHIR severities.
    #[error("severity '{0}': expected mild, moderate or severe")]
    Severity(String),
    /// `--criticality` is not one of the three FHIR criticalities.
    #[error("criticality '{0}': expected low, high or unable-to-assess")]
    Criticality(String),
    /// `--since` or `--onset` is not a calendar date.
    #[error("{flag} '{value}' is not a date: expected YYYY-MM-DD")]
    BadDate {
        /// `--since` or `--onset`.
        flag: &'static str,
        /// The value as given.
        value: String,
    },
    /// The caller passed a resource id FHIR does not allow (a bug in the caller, not the user).
    #[error("resource id '{0}' is not a FHIR id: expected 1 to 64 letters, digits, '-' or '.'")]
    InvalidId(String),
}

/// Builds the FHIR R4 resource for `entry`, with the given id, about `subject` (`Patient/...`).
///
/// `now` becomes the recorded, asserted or effective time. The resource has a `subject` (or
/// `patient`) reference only when `subject` is given.
pub fn build(
    entry: &NewEntry,
    subject: Option<&str>,
    id: &str,
    now: Timestamp,
) -> Result<Value, EntryError> {
    if !is_valid_id(id) {
        return Err(EntryError::InvalidId(id.to_string()));
    }
    check_options(entry)?;
    let text = check_text(entry)?;
    let now = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let (resource_type, body) = match entry.kind {
        EntryKind::Symptom => ("Condition", kinds::symptom(entry, text, &now)?),
        EntryKind::Reading => ("Observation", readings::reading(entry, &now)?),
        EntryKind::Allergy => ("AllergyIntolerance", kinds::allergy(entry, text, &now)?),
        EntryKind::Condition => ("Condition", kinds::condition(entry, text, &now)?),
        EntryKind::Medication => ("MedicationStatement", kinds::medication(entry, text, &now)),
        EntryKind::Note => ("DocumentReference", kinds::note(text, &now)),
    };
    let mut resource = Map::new();
    resource.insert("resourceType".into(), resource_type.into());
    resource.insert("id".into(), id.into());
    if let Some(meta) = meta(entry) {
        resource.insert("meta".into(), meta);
    }
    if let Value::Object(fields) = body {
        resource.extend(fields);
    }
    if let Some(subject) = subject {
        let field = if entry.kind == EntryKind::Allergy {
            "patient"
        } else {
            "subject"
        };
        resource.insert(field.into(), json!({ "reference": subject }));
        if entry.kind == EntryKind::Reading && entry.recorded_by.is_none() {
            resource.insert("performer".into(), json!([{ "reference": subject }]));
        }
    }
    match (entry.kind, &entry.recorded_by) {
        (EntryKind::Reading, Some(by)) => {
            resource.insert("performer".into(), json!([{ "display": by }]));
        }
        // A clinician's diagnosis or allergy is confirmed by them, and says who recorded it.
        (EntryKind::Condition | EntryKind::Allergy, Some(by)) => {
            let system = match entry.kind {
                EntryKind::Condition => kinds::CONDITION_VER_STATUS,
                _ => kinds::ALLERGY_VERIFICATION,
            };
            resource.insert(
                "verificationStatus".into(),
                concept(system, "confirmed", "Confirmed"),
            );
            resource.insert("recorder".into(), json!({ "display": by }));
        }
        // A medicine a clinician records says who told of it.
        (EntryKind::Medication, Some(by)) => {
            resource.insert("informationSource".into(), json!({ "display": by }));
        }
        _ => {}
    }
    Ok(Value::Object(resource))
}

/// Rejects options the entry's kind has no use for, rather than dropping them silently.
fn check_options(entry: &NewEntry) -> Result<(), EntryError> {
    use EntryKind::{Allergy, Condition, Medication, Reading, Symptom};
    let kind = entry.kind;
    if let Some(value) = &entry.value
        && kind != Reading
    {
        return Err(EntryError::UnexpectedValue {
            kind,
            value: value.clone(),
        });
    }
    let date_flag = if kind == Symptom {
        "--onset"
    } else {
        "--since"
    };
    #[rustfmt::skip]
    let options: [(&'static str, &Option<String>, &[EntryKind], &'static str); 5] = [
        ("--severity", &entry.severity, &[Symptom, Allergy], "symptom and allergy"),
        ("--reaction", &entry.reaction, &[Allergy], "allergy"),
        ("--criticality", &entry.criticality, &[Allergy], "allergy"),
        (date_flag, &entry.since, &[Symptom, Condition], "symptom (--onset) and condition"),
        ("--dosage", &entry.dosage, &[Medication], "medication"),
    ];
    for (option, value, kinds, applies_to) in options {
        let Some(value) = value else { continue };
        if !kinds.contains(&kind) {
            return Err(EntryError::NotApplicable {
                option,
                kind,
                applies_to,
            });
        }
        if value.trim().is_empty() {
            return Err(EntryError::EmptyOption(option));
        }
        check_length(option, value, TEXT_BYTES_MAX)?;
    }
    if kind == Allergy && entry.severity.is_some() && entry.reaction.is_none() {
        return Err(EntryError::SeverityWithoutReaction);
    }
    Ok(())
}

/// The entry's text, trimmed; a note keeps its text exactly as written.
fn check_text(entry: &NewEntry) -> Result<&str, EntryError> {
    let trimmed = entry.text.trim();
    if trimmed.is_empty() {
        return Err(EntryError::EmptyText(entry.kind));
    }
    if entry.kind == EntryKind::Note {
        check_length("note", &entry.text, NOTE_BYTES_MAX)?;
        return Ok(&entry.text);
    }
    check_length(entry.kind.what(), trimmed, TEXT_BYTES_MAX)?;
    Ok(trimmed)
}

fn check_length(what: &'static str, text: &str, max: usize) -> Result<(), EntryError> {
    if text.len() > max {
        return Err(EntryError::TooLong {
            what,
            bytes: text.len(),
            max,
        });
    }
    Ok(())
}

/// The section tag (and, for sensitive entries, the security label) `place` honours.
fn meta(entry: &NewEntry) -> Option<Value> {
    let tag = |code: &str| json!([{ "system": SECTION_TAG_SYSTEM, "code": code }]);
    if entry.sensitive {
        return Some(json!({
            "tag": tag("sensitive"),
            "security": [{ "system": CONFIDENTIALITY, "code": "R", "display": "restricted" }],
        }));
    }
    match entry.kind {
        // A clinician's reading is a clinical observation, placed by its type.
        EntryKind::Reading if entry.recorded_by.is_some() => None,
        EntryKind::Symptom | EntryKind::Reading | EntryKind::Note => {
            Some(json!({ "tag": tag("journal") }))
        }
        EntryKind::Allergy | EntryKind::Condition | EntryKind::Medication => None,
    }
}

/// A CodeableConcept with one coding.
fn concept(system: &str, code: &str, display: &str) -> Value {
    json!({ "coding": [{ "system": system, "code": code, "display": display }] })
}
