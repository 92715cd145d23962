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
//! other rule. An entry marked sensitive is tagged `sensitive` instead and also gets the HL7
//! "restricted" confidentiality label, so it stays sensitive even where phr's tag is unknown.
//! Everything the patient reports is `unconfirmed`: a clinician's node confirms it.
//!
//! The module does no I/O: the caller passes the resource id and the time.

use std::{fmt, str::FromStr};

use jiff::{Timestamp, civil::Date};
use serde_json::{Map, Number, Value, json};

use crate::{fhir::is_valid_id, section::SECTION_TAG_SYSTEM};

const SNOMED: &str = "http://snomed.info/sct";
const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const CONDITION_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
const CONDITION_VER_STATUS: &str = "http://terminology.hl7.org/CodeSystem/condition-ver-status";
const CONDITION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/condition-category";
const ALLERGY_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical";
const ALLERGY_VERIFICATION: &str =
    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification";
const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";

/// The longest symptom, substance, condition, medicine, reaction or dosage text, in bytes.
pub const TEXT_BYTES_MAX: usize = 1024;
/// The longest diary note, in bytes; longer notes belong in several entries.
pub const NOTE_BYTES_MAX: usize = 64 * 1024;
/// A note's description (its first line) is cut to this many characters.
const NOTE_DESCRIPTION_CHARS_MAX: usize = 80;

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

/// One quantity a reading records: its LOINC code, its unit and the values phr accepts.
#[derive(Debug)]
struct Measure {
    /// The reading kind on the command line.
    name: &'static str,
    loinc: &'static str,
    /// The LOINC display name.
    display: &'static str,
    /// What people call it: the code's text, which views show.
    text: &'static str,
    /// The unit as people write it.
    unit: &'static str,
    /// The UCUM code of the unit.
    ucum: &'static str,
    /// The plausible range, inclusive: wide enough for any real person, from newborn to
    /// critically ill, narrow enough to catch a slipped digit or a value in the wrong unit.
    min: f64,
    max: f64,
    /// A typical value, for error messages.
    example: &'static str,
}

/// The blood pressure panel; its values are the two components below.
#[rustfmt::skip]
const BLOOD_PRESSURE: (&str, &str, &str) = ("85354-9", "Blood pressure panel with all children optional", "Blood pressure");
const BLOOD_PRESSURE_NAME: &str = "blood-pressure";

#[rustfmt::skip]
const SYSTOLIC: Measure = measure("systolic", "8480-6", "Systolic blood pressure", "Systolic", "mmHg", "mm[Hg]", 50.0, 280.0, "128");
#[rustfmt::skip]
const DIASTOLIC: Measure = measure("diastolic", "8462-4", "Diastolic blood pressure", "Diastolic", "mmHg", "mm[Hg]", 20.0, 180.0, "82");

/// The single-value readings, one a line. Glucose is in mmol/L as in the UK, not mg/dL.
#[rustfmt::skip]
const READINGS: &[Measure] = &[
    measure("heart-rate", "8867-4", "Heart rate", "Heart rate", "/min", "/min", 20.0, 300.0, "72"),
    measure("weight", "29463-7", "Body weight", "Weight", "kg", "kg", 0.2, 500.0, "81.5"),
    measure("height", "8302-2", "Body height", "Height", "cm", "cm", 20.0, 280.0, "178"),
    measure("temperature", "8310-5", "Body temperature", "Temperature", "°C", "Cel", 25.0, 45.0, "37.2"),
    measure("glucose", "15074-8", "Glucose [Moles/volume] in Blood", "Blood glucose", "mmol/L", "mmol/L", 0.5, 60.0, "5.4"),
    measure("oxygen-saturation", "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "Oxygen saturation", "%", "%", 50.0, 100.0, "97"),
    measure("peak-flow", "19935-6", "Maximum expiratory gas flow Respiratory system airway by Peak flow meter", "Peak flow", "L/min", "L/min", 30.0, 1000.0, "450"),
    measure("bmi", "39156-5", "Body mass index (BMI) [Ratio]", "Body mass index", "kg/m2", "kg/m2", 8.0, 150.0, "24.1"),
];

/// A table row; a function so that each row fits on one line.
#[allow(clippy::too_many_arguments)]
const fn measure(
    name: &'static str,
    loinc: &'static str,
    display: &'static str,
    text: &'static str,
    unit: &'static str,
    ucum: &'static str,
    min: f64,
    max: f64,
    example: &'static str,
) -> Measure {
    Measure {
        name,
        loinc,
        display,
        text,
        unit,
        ucum,
        min,
        max,
        example,
    }
}

/// The reading kinds `phr add reading` accepts, in help order.
pub fn reading_names() -> impl Iterator<Item = &'static str> {
    std::iter::once(BLOOD_PRESSURE_NAME).chain(READINGS.iter().map(|m| m.name))
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
        EntryKind::Symptom => ("Condition", symptom(entry, text, &now)?),
        EntryKind::Reading => ("Observation", reading(entry, &now)?),
        EntryKind::Allergy => ("AllergyIntolerance", allergy(entry, text, &now)?),
        EntryKind::Condition => ("Condition", condition(entry, text, &now)?),
        EntryKind::Medication => ("MedicationStatement", medication(entry, text, &now)),
        EntryKind::Note => ("DocumentReference", note(text, &now)),
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
        if entry.kind == EntryKind::Reading {
            resource.insert("performer".into(), json!([{ "reference": subject }]));
        }
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

fn symptom(entry: &NewEntry, text: &str, now: &str) -> Result<Value, EntryError> {
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

fn reading(entry: &NewEntry, now: &str) -> Result<Value, EntryError> {
    let name = entry.text.trim().to_ascii_lowercase();
    let measure = READINGS.iter().find(|m| m.name == name);
    if measure.is_none() && name != BLOOD_PRESSURE_NAME {
        return Err(EntryError::UnknownReading(entry.text.trim().to_string()));
    }
    let (reading, example) =
        measure.map_or((BLOOD_PRESSURE_NAME, "128/82"), |m| (m.name, m.example));
    let value = entry
        .value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let value = value.ok_or(EntryError::MissingValue { reading, example })?;
    let mut body = json!({
        "status": "final",
        "category": [concept(OBSERVATION_CATEGORY, "vital-signs", "Vital Signs")],
    });
    match measure {
        Some(measure) => {
            body["code"] = loinc(measure.loinc, measure.display, measure.text);
            body["effectiveDateTime"] = now.into();
            body["valueQuantity"] = quantity(measure, value)?;
        }
        None => {
            let (systolic, diastolic) = blood_pressure(value)?;
            body["code"] = loinc(BLOOD_PRESSURE.0, BLOOD_PRESSURE.1, BLOOD_PRESSURE.2);
            body["effectiveDateTime"] = now.into();
            body["component"] = json!([
                { "code": loinc(SYSTOLIC.loinc, SYSTOLIC.display, SYSTOLIC.text), "valueQuantity": systolic },
                { "code": loinc(DIASTOLIC.loinc, DIASTOLIC.display, DIASTOLIC.text), "valueQuantity": diastolic },
            ]);
        }
    }
    Ok(body)
}

fn loinc(code: &str, display: &str, text: &str) -> Value {
    let mut concept = concept(LOINC, code, display);
    concept["text"] = text.into();
    concept
}

/// `SYSTOLIC/DIASTOLIC` as two quantities, each checked against its range.
fn blood_pressure(value: &str) -> Result<(Value, Value), EntryError> {
    let format_error = || EntryError::BloodPressureFormat(value.to_string());
    let (systolic, diastolic) = value.split_once('/').ok_or_else(format_error)?;
    let (systolic, diastolic) = (systolic.trim(), diastolic.trim());
    for part in [systolic, diastolic] {
        if serde_json::from_str::<Number>(part).is_err() {
            return Err(format_error());
        }
    }
    let systolic = quantity(&SYSTOLIC, systolic)?;
    let diastolic = quantity(&DIASTOLIC, diastolic)?;
    if diastolic["value"].as_f64() >= systolic["value"].as_f64() {
        return Err(EntryError::BloodPressureOrder(value.to_string()));
    }
    Ok((systolic, diastolic))
}

/// A UCUM quantity whose value is the number exactly as the user wrote it ("81.50" stays
/// "81.50": FHIR decimals keep their precision), after checking it against the plausible range.
fn quantity(measure: &Measure, value: &str) -> Result<Value, EntryError> {
    let not_a_number = || EntryError::NotANumber {
        reading: measure.name,
        value: value.to_string(),
        example: measure.example,
    };
    let number = serde_json::from_str::<Number>(value).map_err(|_| not_a_number())?;
    let float = number.as_f64().ok_or_else(not_a_number)?;
    if !(measure.min..=measure.max).contains(&float) {
        return Err(EntryError::OutOfRange {
            reading: measure.name,
            value: value.to_string(),
            min: measure.min,
            max: measure.max,
            unit: measure.unit,
        });
    }
    Ok(json!({ "value": number, "unit": measure.unit, "system": UCUM, "code": measure.ucum }))
}

fn allergy(entry: &NewEntry, text: &str, now: &str) -> Result<Value, EntryError> {
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

fn condition(entry: &NewEntry, text: &str, now: &str) -> Result<Value, EntryError> {
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

fn medication(entry: &NewEntry, text: &str, now: &str) -> Value {
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

fn note(text: &str, now: &str) -> Value {
    let description = description(text);
    json!({
        "status": "current",
        "type": { "coding": [{ "system": LOINC, "code": "51855-5", "display": "Patient Note" }],
                  "text": "Patient note" },
        "date": now,
        "description": description,
        "content": [{ "attachment": {
            "contentType": "text/plain; charset=utf-8",
            "data": base64(text.as_bytes()),
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

/// Standard base64 with padding (RFC 4648 section 4), as FHIR `base64Binary` requires.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        // A chunk of n bytes fills n + 1 sextets; the rest of the four are padding.
        for sextet in 0..4 {
            if sextet <= chunk.len() {
                let index = (group >> (18 - 6 * sextet)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::section::{Section, place};
    use proptest::prelude::*;

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
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in vectors {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
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
}
