//! The record in plain language: the summary `phr show` prints first, and one line per resource
//! for `phr show clinical|journal|requests|sensitive|audit`.
//!
//! Views only read. Each parses just the resource types it shows, through
//! [`Record::resources_of_type`], because `phr show` must stay fast on records of a thousand
//! resources. A group with nothing in it still prints and says so: a patient must be able to
//! tell "none recorded" from "not shown".
//!
//! The summary reads the summary section, plus results from the clinical section. Conditions
//! placed in the sensitive section are left out on purpose, so the summary says the same thing
//! whoever is shown it; `phr show sensitive` lists them.

use std::{collections::BTreeMap, fmt};

use jiff::civil::Date;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    fhir::{
        display,
        model::{
            AllergyIntolerance, Appointment, Attachment, CarePlan, CodeableConcept, Coding,
            Communication, Condition, DiagnosticReport, DocumentReference, Encounter, HumanName,
            Immunization, Medication, MedicationRequest, MedicationStatement, Observation,
            ObservationComponent, Patient, Procedure, Quantity, Reference, ReferenceRange, view,
        },
        reference::ResourceKey,
        status,
    },
    nhs::{NHS_NUMBER_SYSTEM, NhsNumber},
    record::{Record, RecordError},
    section::Section,
};

/// How many results the summary lists: the latest of each test, newest first.
pub const RECENT_RESULTS_MAX: usize = 10;

/// The longest description a section view line holds, in characters; longer ones end in "…".
pub const ITEM_TEXT_CHARS_MAX: usize = 160;

/// How much of a text document's base64 data is decoded for its one-line preview, in
/// characters (1024 give 768 bytes): a preview never needs the whole document.
const DOCUMENT_PREVIEW_BASE64_CHARS_MAX: usize = 1024;

/// LOINC codes of the two parts of a blood pressure, which read as "systolic/diastolic".
const SYSTOLIC_LOINC: &str = "8480-6";
const DIASTOLIC_LOINC: &str = "8462-4";

/// The SNOMED CT semantic tags that [`text_of`] drops from the end of a display.
const SNOMED_SEMANTIC_TAGS: &[&str] = &[
    " (disorder)",
    " (finding)",
    " (procedure)",
    " (situation)",
    " (regime/therapy)",
    " (observable entity)",
    " (morphologic abnormality)",
    " (substance)",
    " (product)",
    " (qualifier value)",
    " (body structure)",
    " (event)",
];

/// The key facts of a record, as `phr show` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Who the record is about.
    pub patient: PatientHeader,
    /// Allergies and intolerances still to warn about.
    pub allergies: Vec<Allergy>,
    /// Active problems, newest first.
    pub problems: Vec<Problem>,
    /// Medicines taken now, by name.
    pub medicines: Vec<Medicine>,
    /// The latest result of each test, newest first, at most [`RECENT_RESULTS_MAX`].
    pub results: Vec<TestResult>,
    /// Vaccines given, newest first.
    pub immunisations: Vec<Immunisation>,
    /// How many resources have conflicting versions waiting for a choice.
    pub conflicts: usize,
}

/// The patient's name and identity, from the subject `Patient` and the record's metadata.
#[derive(Debug, Clone, Serialize)]
pub struct PatientHeader {
    /// The name as a person writes it.
    pub name: Option<String>,
    /// The NHS number, spaced as the NHS prints it (`943 476 5919`).
    pub nhs_number: Option<String>,
    /// Date of birth.
    pub birth_date: Option<String>,
    /// Date of death, if the patient has died.
    pub died: Option<String>,
    /// Age in whole years, today or at death.
    pub age_years: Option<i16>,
    /// Administrative gender.
    pub gender: Option<String>,
}

/// An allergy or intolerance.
#[derive(Debug, Clone, Serialize)]
pub struct Allergy {
    /// What the patient reacts to.
    pub substance: String,
    /// `low`, `high` or `unable-to-assess`.
    pub criticality: Option<String>,
    /// Reactions seen.
    pub reactions: Vec<AllergyReaction>,
}

/// One reaction to an allergen.
#[derive(Debug, Clone, Serialize)]
pub struct AllergyReaction {
    /// What happened, e.g. "rash".
    pub manifestations: Vec<String>,
    /// `mild`, `moderate` or `severe`.
    pub severity: Option<String>,
}

/// An active problem.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// What it is.
    pub display: String,
    /// When it started (date only), the earliest if recorded more than once.
    pub since: Option<String>,
    /// How severe, if stated.
    pub severity: Option<String>,
}

/// A medicine taken now.
#[derive(Debug, Clone, Serialize)]
pub struct Medicine {
    /// The medicine's name.
    pub name: String,
    /// How to take it, in words.
    pub dosage: Option<String>,
}

/// A result: a measurement, a coded finding or a text answer.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    /// What was measured.
    pub display: String,
    /// The value in words, e.g. `6.2 %` or `128/82 mmHg`.
    pub value: String,
    /// When (date only).
    pub date: Option<String>,
    /// `HIGH`, `LOW` or `ABNORMAL` when the result is outside its normal range.
    pub flag: Option<String>,
    /// The normal range, e.g. `4.0–5.6`.
    pub range: Option<String>,
}

/// A vaccine, with how many doses were given.
#[derive(Debug, Clone, Serialize)]
pub struct Immunisation {
    /// The vaccine.
    pub vaccine: String,
    /// The date of the latest dose.
    pub date: Option<String>,
    /// How many doses are recorded.
    pub doses: usize,
}

/// The resources of one section, one line each.
#[derive(Debug, Clone, Serialize)]
pub struct SectionView {
    /// The section shown.
    pub section: Section,
    /// Its resources, newest first; undated ones last.
    pub items: Vec<SectionItem>,
}

/// One resource of a section, described in a line.
#[derive(Debug, Clone, Serialize)]
pub struct SectionItem {
    /// `Type/id`, for `phr history` and `phr resolve`.
    pub key: String,
    /// The FHIR resource type.
    pub resource_type: String,
    /// When it happened (date only).
    pub date: Option<String>,
    /// What it is, in words.
    pub text: String,
    /// Whether its versions conflict (the text is of Automerge's pick among them).
    pub conflicted: bool,
}

/// Computes the summary of a record; `today` gives ages (the core never reads a clock).
pub fn summary(record: &Record, today: Date) -> Result<Summary, RecordError> {
    Ok(Summary {
        patient: patient_header(record, today)?,
        allergies: allergies(record)?,
        problems: problems(record)?,
        medicines: medicines(record)?,
        results: recent_results(record)?,
        immunisations: immunisations(record)?,
        conflicts: record.conflicts()?.len(),
    })
}

/// Every resource of a section with a one-line description, newest first.
pub fn section_view(record: &Record, section: Section) -> Result<SectionView, RecordError> {
    let mut dated: Vec<(Option<String>, SectionItem)> = record
        .resources(section)?
        .into_iter()
        .map(|(key, resource, conflicted)| {
            let when = date_of(&resource).map(str::to_string);
            let item = SectionItem {
                key: key.to_string(),
                date: when.as_deref().map(|d| display::date(d).to_string()),
                text: one_line(&describe(&resource, &key.resource_type)),
                resource_type: key.resource_type,
                conflicted,
            };
            (when, item)
        })
        .collect();
    // Full timestamps sort as text, which is right for one time zone; the sort is stable, so
    // resources of one date stay in key order.
    dated.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(SectionView {
        section,
        items: dated.into_iter().map(|(_, item)| item).collect(),
    })
}

/// The typed views of one resource type in the summary section; resources that do not fit the
/// view are skipped (they are still stored, exported and listed by `section_view`).
fn typed<T: DeserializeOwned>(record: &Record, resource_type: &str) -> Result<Vec<T>, RecordError> {
    let resources = record.resources_of_type(Section::Summary, resource_type)?;
    Ok(resources.iter().filter_map(view).collect())
}

/// The words of a concept, without the SNOMED CT semantic tag ("(disorder)") that ends a fully
/// specified name: Synthea uses those names as displays, and the tag means nothing to a patient.
fn text_of(concept: Option<&CodeableConcept>) -> Option<String> {
    let text = concept?.display()?;
    let bare = SNOMED_SEMANTIC_TAGS
        .iter()
        .find_map(|tag| text.strip_suffix(tag));
    Some(bare.unwrap_or(text).to_string())
}

fn date_part(value: Option<&str>) -> Option<String> {
    value.map(|v| display::date(v).to_string())
}

fn patient_header(record: &Record, today: Date) -> Result<PatientHeader, RecordError> {
    let subject = record
        .meta()
        .subject
        .as_deref()
        .and_then(|s| s.parse::<ResourceKey>().ok());
    let mut resource = match &subject {
        Some(key) => record.get(key)?,
        None => None,
    };
    if resource.is_none() {
        resource = record
            .resources_of_type(Section::Summary, "Patient")?
            .into_iter()
            .next();
    }
    let resource = resource.unwrap_or(Value::Null);
    let patient: Patient = view(&resource).unwrap_or_default();
    let died = date_part(resource.get("deceasedDateTime").and_then(Value::as_str));
    let birth_date = date_part(patient.birth_date.as_deref());
    // The age of someone who has died is their age at death, not what it would be today.
    let end = match &died {
        Some(d) => d.parse::<Date>().ok(),
        None => Some(today),
    };
    let birth = birth_date.as_deref().and_then(|b| b.parse::<Date>().ok());
    let nhs_number = record.meta().nhs_number.clone().or_else(|| {
        let mut ids = patient.identifier.iter();
        ids.find(|i| i.system.as_deref() == Some(NHS_NUMBER_SYSTEM))?
            .value
            .clone()
    });
    Ok(PatientHeader {
        name: patient
            .name
            .first()
            .map(HumanName::display)
            .filter(|n| !n.is_empty()),
        // An invalid number is shown as written rather than hidden: the patient should see it.
        nhs_number: nhs_number.map(|n| NhsNumber::parse(&n).map_or(n, |valid| valid.to_string())),
        birth_date,
        died,
        age_years: birth
            .zip(end)
            .and_then(|(birth, end)| age_years(birth, end)),
        gender: patient.gender,
    })
}

fn age_years(birth: Date, on: Date) -> Option<i16> {
    let before_birthday = (on.month(), on.day()) < (birth.month(), birth.day());
    let years = on.year() - birth.year() - i16::from(before_birthday);
    (years >= 0).then_some(years)
}

fn allergies(record: &Record) -> Result<Vec<Allergy>, RecordError> {
    let all = typed::<AllergyIntolerance>(record, "AllergyIntolerance")?;
    let current = all.into_iter().filter(status::allergy_is_current);
    Ok(current
        .map(|a| Allergy {
            substance: text_of(a.code.as_ref()).unwrap_or_else(|| "Substance not named".into()),
            criticality: a.criticality,
            reactions: a
                .reaction
                .iter()
                .map(|r| AllergyReaction {
                    manifestations: r
                        .manifestation
                        .iter()
                        .filter_map(|m| text_of(Some(m)))
                        .collect(),
                    severity: r.severity.clone(),
                })
                .collect(),
        })
        .collect())
}

fn problems(record: &Record) -> Result<Vec<Problem>, RecordError> {
    let mut by_display = BTreeMap::<String, Problem>::new();
    for c in typed::<Condition>(record, "Condition")?
        .iter()
        .filter(|c| status::condition_is_active(c))
    {
        let display = text_of(c.code.as_ref()).unwrap_or_else(|| "Problem not named".into());
        let onset_start = c.onset_period.as_ref().and_then(|p| p.start.as_deref());
        let since = date_part(
            c.onset_date_time
                .as_deref()
                .or(onset_start)
                .or(c.recorded_date.as_deref()),
        );
        let severity = text_of(c.severity.as_ref());
        let kept = by_display.entry(display.clone()).or_insert(Problem {
            display,
            since: None,
            severity,
        });
        // Synthea records some problems again at every visit: the first onset is the one that counts.
        if since.is_some() && (kept.since.is_none() || since < kept.since) {
            kept.since = since;
        }
    }
    let mut out: Vec<Problem> = by_display.into_values().collect();
    out.sort_by(|a, b| b.since.cmp(&a.since));
    Ok(out)
}

fn medicines(record: &Record) -> Result<Vec<Medicine>, RecordError> {
    // Statements and requests name a medicine the same way; gather both, then name them.
    let mut current = Vec::new();
    for resource in record.resources_of_type(Section::Summary, "MedicationStatement")? {
        if let Some(m) = view::<MedicationStatement>(&resource).filter(status::statement_is_current)
        {
            let dosage = m.dosage.first().and_then(display::dosage);
            current.push((
                m.medication_codeable_concept,
                m.medication_reference,
                dosage,
                resource,
            ));
        }
    }
    for resource in record.resources_of_type(Section::Summary, "MedicationRequest")? {
        if let Some(m) = view::<MedicationRequest>(&resource).filter(status::request_is_current) {
            let dosage = m.dosage_instruction.first().and_then(display::dosage);
            current.push((
                m.medication_codeable_concept,
                m.medication_reference,
                dosage,
                resource,
            ));
        }
    }
    let mut by_name = BTreeMap::<String, Option<String>>::new();
    for (concept, reference, dosage, resource) in current {
        let name = medicine_name(record, &resource, concept.as_ref(), reference.as_ref())?;
        // One line per medicine, with the first dosage that says anything.
        let kept = by_name.entry(name).or_default();
        if kept.is_none() {
            *kept = dosage;
        }
    }
    Ok(by_name
        .into_iter()
        .map(|(name, dosage)| Medicine { name, dosage })
        .collect())
}

fn medicine_name(
    record: &Record,
    resource: &Value,
    concept: Option<&CodeableConcept>,
    reference: Option<&Reference>,
) -> Result<String, RecordError> {
    if let Some(name) = text_of(concept) {
        return Ok(name);
    }
    let target = match reference.and_then(|r| r.reference.as_deref()) {
        Some(local) if local.starts_with('#') => contained(resource, &local[1..]),
        Some(key) => match key.parse::<ResourceKey>() {
            Ok(key) => record.get(&key)?,
            Err(_) => None,
        },
        None => None,
    };
    let named = target
        .as_ref()
        .and_then(view::<Medication>)
        .and_then(|m| text_of(m.code.as_ref()));
    let shown = named.or_else(|| reference.and_then(|r| r.display.clone()));
    Ok(shown.unwrap_or_else(|| "Medicine not named".into()))
}

fn contained(resource: &Value, id: &str) -> Option<Value> {
    let items = resource.get("contained")?.as_array()?;
    items
        .iter()
        .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
        .cloned()
}

fn recent_results(record: &Record) -> Result<Vec<TestResult>, RecordError> {
    let mut all = Vec::new();
    for section in [Section::Clinical, Section::Summary] {
        for resource in record.resources_of_type(section, "Observation")? {
            let Some(o) = view::<Observation>(&resource).filter(status::observation_is_valid)
            else {
                continue;
            };
            if let Some(result) = test_result(&o) {
                all.push((o.when().map(str::to_string), result));
            }
        }
    }
    all.sort_by(|a, b| b.0.cmp(&a.0));
    let mut seen = std::collections::BTreeSet::new();
    let latest = all
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| seen.insert(r.display.clone()));
    Ok(latest.take(RECENT_RESULTS_MAX).collect())
}

/// An observation as a result, if it has a value to show.
fn test_result(o: &Observation) -> Option<TestResult> {
    let range = o.reference_range.first();
    Some(TestResult {
        value: observation_value(o)?,
        display: text_of(o.code.as_ref()).unwrap_or_else(|| "Result".into()),
        date: date_part(o.when()),
        flag: out_of_range(o, range)
            .or_else(|| interpreted(o))
            .map(str::to_string),
        range: range.and_then(range_text),
    })
}

fn observation_value(o: &Observation) -> Option<String> {
    o.value_quantity
        .as_ref()
        .and_then(display::quantity)
        .or_else(|| text_of(o.value_codeable_concept.as_ref()))
        .or_else(|| o.value_string.clone())
        .or_else(|| blood_pressure(&o.component))
        .or_else(|| components(&o.component))
}

/// Systolic over diastolic in whole mmHg, as a patient reads it on a monitor, whatever order
/// the parts come in (Synthea writes diastolic first).
fn blood_pressure(parts: &[ObservationComponent]) -> Option<String> {
    let part = |code: &str| -> Option<f64> {
        let found = parts
            .iter()
            .find(|p| p.code.as_ref().is_some_and(|c| c.has_code(code)))?;
        found.value_quantity.as_ref()?.as_f64()
    };
    Some(format!(
        "{:.0}/{:.0} mmHg",
        part(SYSTOLIC_LOINC)?,
        part(DIASTOLIC_LOINC)?
    ))
}

fn components(parts: &[ObservationComponent]) -> Option<String> {
    let texts: Vec<String> = parts
        .iter()
        .filter_map(|p| {
            let value = display::quantity(p.value_quantity.as_ref()?)?;
            Some(format!("{} {value}", text_of(p.code.as_ref())?))
        })
        .collect();
    (!texts.is_empty()).then(|| texts.join(", "))
}

/// The numbers decide when there are numbers; the lab's interpretation is the fallback.
fn out_of_range(o: &Observation, range: Option<&ReferenceRange>) -> Option<&'static str> {
    let (value, range) = (o.value_quantity.as_ref()?.as_f64()?, range?);
    let limit = |q: &Option<Quantity>| q.as_ref().and_then(Quantity::as_f64);
    if limit(&range.high).is_some_and(|high| value > high) {
        Some("HIGH")
    } else if limit(&range.low).is_some_and(|low| value < low) {
        Some("LOW")
    } else {
        None
    }
}

fn interpreted(o: &Observation) -> Option<&'static str> {
    let any = |c: &CodeableConcept, codes: &[&str]| codes.iter().any(|code| c.has_code(code));
    o.interpretation.iter().find_map(|c| match () {
        () if any(c, &["H", "HH", "HU"]) => Some("HIGH"),
        () if any(c, &["L", "LL", "LU"]) => Some("LOW"),
        () if any(c, &["A", "AA"]) => Some("ABNORMAL"),
        () => None,
    })
}

fn range_text(range: &ReferenceRange) -> Option<String> {
    if let Some(text) = &range.text {
        return Some(text.clone());
    }
    let number = |q: &Option<Quantity>| q.as_ref()?.value.as_ref().map(display::number);
    match (number(&range.low), number(&range.high)) {
        (Some(low), Some(high)) => Some(format!("{low}–{high}")),
        (Some(low), None) => Some(format!("from {low}")),
        (None, Some(high)) => Some(format!("up to {high}")),
        (None, None) => None,
    }
}

fn immunisations(record: &Record) -> Result<Vec<Immunisation>, RecordError> {
    let mut by_vaccine = BTreeMap::<String, Immunisation>::new();
    for i in typed::<Immunization>(record, "Immunization")?
        .iter()
        .filter(|i| status::immunization_was_given(i))
    {
        let vaccine =
            text_of(i.vaccine_code.as_ref()).unwrap_or_else(|| "Vaccine not named".into());
        let date =
            date_part(i.occurrence_date_time.as_deref()).or_else(|| i.occurrence_string.clone());
        let kept = by_vaccine.entry(vaccine.clone()).or_insert(Immunisation {
            vaccine,
            date: None,
            doses: 0,
        });
        kept.doses += 1;
        kept.date = kept.date.take().max(date);
    }
    let mut out: Vec<Immunisation> = by_vaccine.into_values().collect();
    out.sort_by(|a, b| b.date.cmp(&a.date));
    Ok(out)
}

/// The fields that date a resource, most telling first; each type has at most a few of them.
const DATE_POINTERS: &[&str] = &[
    "/effectiveDateTime",
    "/effectivePeriod/start",
    "/effectiveInstant",
    "/performedDateTime",
    "/performedPeriod/start",
    "/onsetDateTime",
    "/onsetPeriod/start",
    "/occurrenceDateTime",
    "/period/start",
    "/start",
    "/sent",
    "/started",
    "/authoredOn",
    "/recordedDate",
    "/recorded",
    "/created",
    "/billablePeriod/start",
    "/date",
    "/issued",
    "/dateAsserted",
];

fn date_of(resource: &Value) -> Option<&str> {
    DATE_POINTERS
        .iter()
        .find_map(|p| resource.pointer(p)?.as_str())
}

/// One line of plain language for any resource, as `phr show SECTION` lists it, e.g.
/// `Encounter: General examination of patient (ambulatory)`; used by `phr add`, `history` and
/// `conflicts` too.
pub fn describe_resource(resource: &Value) -> String {
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource");
    describe(resource, resource_type)
}

fn describe(resource: &Value, resource_type: &str) -> String {
    let text = match resource_type {
        "Encounter" => view::<Encounter>(resource).map(|e| encounter_text(&e)),
        "Procedure" => view::<Procedure>(resource).and_then(|p| procedure_text(&p)),
        "DiagnosticReport" => view::<DiagnosticReport>(resource).and_then(|r| report_text(&r)),
        "CarePlan" => view::<CarePlan>(resource).and_then(|p| care_plan_text(&p)),
        "Observation" => {
            // The date has its own column.
            let result = view::<Observation>(resource).and_then(|o| test_result(&o));
            result.map(|r| TestResult { date: None, ..r }.to_string())
        }
        "Condition" => view::<Condition>(resource).and_then(|c| condition_text(&c)),
        "DocumentReference" => view::<DocumentReference>(resource).and_then(|d| document_text(&d)),
        "Appointment" => view::<Appointment>(resource).map(|a| appointment_text(&a)),
        "Communication" => view::<Communication>(resource).and_then(|c| communication_text(&c)),
        "Claim" | "ExplanationOfBenefit" => Some(claim_text(resource)),
        "Patient" => view::<Patient>(resource).and_then(|p| p.name.first().map(HumanName::display)),
        _ => None,
    };
    let text = text
        .filter(|t| !t.is_empty())
        .or_else(|| concept_field(resource));
    let text = text.unwrap_or_else(|| "no description".into());
    // A resource marked as a mistake stays in the record; it must not read as a fact.
    match resource.get("status").and_then(Value::as_str) {
        Some("entered-in-error") => format!("{text} [entered in error]"),
        _ => text,
    }
}

/// The first code-like field's display: what most resource types are "about".
fn concept_field(resource: &Value) -> Option<String> {
    let fields = [
        "code",
        "medicationCodeableConcept",
        "vaccineCode",
        "type",
        "category",
        "description",
        "title",
    ];
    fields
        .iter()
        .find_map(|field| concept_at(resource.get(field)?))
}

fn concept_at(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Array(items) => items.iter().find_map(concept_at),
        _ => text_of(view::<CodeableConcept>(value).as_ref())
            .or_else(|| view::<Coding>(value).and_then(|c| c.display.or(c.code))),
    }
}

/// `text (status)` unless the status is the expected, unremarkable one.
fn with_status(text: String, status: Option<&str>, usual: &str) -> String {
    match status {
        Some(s) if s != usual => format!("{text} ({s})"),
        _ => text,
    }
}

fn encounter_text(e: &Encounter) -> String {
    let kind = e
        .kind
        .iter()
        .chain(&e.reason_code)
        .find_map(|k| text_of(Some(k)));
    let kind = kind.unwrap_or_else(|| "Visit".into());
    let class = e.class.as_ref().and_then(|c| {
        c.display
            .clone()
            .or_else(|| c.code.as_deref().map(class_word))
    });
    match class {
        Some(class) => format!("{kind} ({class})"),
        None => kind,
    }
}

/// Words for the HL7 v3 ActCode encounter classes, which usually come without a display.
fn class_word(code: &str) -> String {
    let word = match code {
        "AMB" => "ambulatory",
        "EMER" => "emergency",
        "IMP" => "inpatient",
        "ACUTE" => "inpatient acute",
        "NONAC" => "inpatient non-acute",
        "HH" => "home visit",
        "VR" => "virtual",
        "OBSENC" => "observation",
        "PRENC" => "pre-admission",
        "SS" => "short stay",
        "FLD" => "field",
        other => other,
    };
    word.to_string()
}

fn procedure_text(p: &Procedure) -> Option<String> {
    Some(with_status(
        text_of(p.code.as_ref())?,
        p.status.as_deref(),
        "completed",
    ))
}

fn report_text(r: &DiagnosticReport) -> Option<String> {
    let name = text_of(r.code.as_ref())?;
    Some(match (&r.conclusion, r.result.len()) {
        (Some(conclusion), _) => format!("{name}: {conclusion}"),
        (None, 0) => name,
        (None, 1) => format!("{name} (1 result)"),
        (None, n) => format!("{name} ({n} results)"),
    })
}

fn care_plan_text(p: &CarePlan) -> Option<String> {
    let name = p
        .title
        .clone()
        .or_else(|| p.category.iter().find_map(|c| text_of(Some(c))));
    let name = name.or_else(|| p.description.clone())?;
    let mut activities: Vec<String> = Vec::new();
    for a in p
        .activity
        .iter()
        .filter_map(|a| text_of(a.detail.as_ref()?.code.as_ref()))
    {
        if !activities.contains(&a) {
            activities.push(a);
        }
    }
    let text = if activities.is_empty() {
        name
    } else {
        format!("{name}: {}", activities.join(", "))
    };
    Some(with_status(text, p.status.as_deref(), "active"))
}

fn condition_text(c: &Condition) -> Option<String> {
    let name = text_of(c.code.as_ref())?;
    let status = c
        .clinical_status
        .as_ref()
        .and_then(|s| s.coding.first()?.code.clone());
    let ended = c
        .abatement_date_time
        .as_deref()
        .map(|d| format!("ended {}", display::date(d)));
    let notes: Vec<String> = status.into_iter().chain(ended).collect();
    Some(if notes.is_empty() {
        name
    } else {
        format!("{name} ({})", notes.join(", "))
    })
}

fn document_text(d: &DocumentReference) -> Option<String> {
    let attachment = d.content.iter().find_map(|c| c.attachment.as_ref());
    d.description
        .clone()
        .or_else(|| attachment.and_then(plain_text_preview))
        .or_else(|| attachment.and_then(|a| a.title.clone()))
        .or_else(|| text_of(d.kind.as_ref()))
}

/// The first non-empty line of a `text/plain` attachment.
fn plain_text_preview(a: &Attachment) -> Option<String> {
    if !a.content_type.as_deref()?.starts_with("text/plain") {
        return None;
    }
    let bytes = base64_prefix(a.data.as_deref()?, DOCUMENT_PREVIEW_BASE64_CHARS_MAX)?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// Decodes the first `chars_max` characters of base64 (standard or URL-safe alphabet,
/// whitespace ignored, stopping at padding); `None` if a character is not base64. Hand-written
/// because a preview is the only place phr reads base64, and not worth a dependency.
fn base64_prefix(data: &str, chars_max: usize) -> Option<Vec<u8>> {
    let (mut out, mut bits, mut pending) = (Vec::new(), 0u32, 0u32);
    for c in data
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .take(chars_max)
    {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(sextet);
        pending += 6;
        if pending >= 8 {
            pending -= 8;
            out.push(((bits >> pending) & 0xff) as u8);
            bits &= (1 << pending) - 1;
        }
    }
    Some(out)
}

fn appointment_text(a: &Appointment) -> String {
    let what = a
        .description
        .clone()
        .or_else(|| a.service_type.iter().find_map(|s| text_of(Some(s))));
    let what = what.unwrap_or_else(|| "Appointment".into());
    // The date column shows the day; an appointment also needs its time.
    let time = a
        .start
        .as_deref()
        .and_then(|s| s.get(11..16))
        .map(|t| format!(" at {t}"));
    with_status(
        format!("{what}{}", time.unwrap_or_default()),
        a.status.as_deref(),
        "",
    )
}

fn communication_text(c: &Communication) -> Option<String> {
    let message = c.payload.iter().find_map(|p| p.content_string.clone())?;
    match c.sender.as_ref().and_then(|s| s.display.as_deref()) {
        Some(sender) => Some(format!("from {sender}: {message}")),
        None => Some(message),
    }
}

/// Claims and explanations of benefit: their kind and total (a Claim's `total` is money, an
/// ExplanationOfBenefit's a list of totals by category).
fn claim_text(resource: &Value) -> String {
    let kind = resource
        .get("type")
        .and_then(concept_at)
        .unwrap_or_default();
    let total = resource.get("total").and_then(|t| match t {
        Value::Array(totals) => totals.first()?.get("amount"),
        money => Some(money),
    });
    let amount = total.and_then(|t| match t.get("value")? {
        Value::Number(n) => Some(display::number(n)),
        _ => None,
    });
    let currency = total
        .and_then(|t| t.get("currency")?.as_str())
        .unwrap_or("");
    let claim = format!("{kind} claim").trim_start().to_string();
    match amount {
        Some(amount) => format!("{claim}, total {amount} {currency}")
            .trim_end()
            .to_string(),
        None => claim,
    }
}

/// Collapses whitespace (documents and messages span lines) and bounds the length.
fn one_line(text: &str) -> String {
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.chars().count() <= ITEM_TEXT_CHARS_MAX {
        return words;
    }
    let cut: String = words.chars().take(ITEM_TEXT_CHARS_MAX - 1).collect();
    format!("{}…", cut.trim_end())
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn group<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    heading: &str,
    empty: &str,
    bullet: &str,
    items: &[T],
) -> fmt::Result {
    writeln!(f, "{heading}")?;
    if items.is_empty() {
        return writeln!(f, "  {empty}");
    }
    items
        .iter()
        .try_for_each(|item| writeln!(f, "  {bullet} {item}"))
}

impl fmt::Display for Summary {
    /// The summary as a patient reads it; every line ends with a newline (print with `print!`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}\n", self.patient)?;
        group(
            f,
            "Allergies",
            "No allergies recorded.",
            "!",
            &self.allergies,
        )?;
        group(f, "Active problems", "None recorded.", "•", &self.problems)?;
        group(
            f,
            "Current medicines",
            "None recorded.",
            "•",
            &self.medicines,
        )?;
        group(
            f,
            "Recent results (latest of each, newest first)",
            "None recorded.",
            "•",
            &self.results,
        )?;
        group(
            f,
            "Immunisations",
            "None recorded.",
            "•",
            &self.immunisations,
        )?;
        match self.conflicts {
            0 => Ok(()),
            1 => writeln!(
                f,
                "\n⚠ 1 resource has conflicting versions: run `phr conflicts`."
            ),
            n => writeln!(
                f,
                "\n⚠ {n} resources have conflicting versions: run `phr conflicts`."
            ),
        }
    }
}

impl fmt::Display for PatientHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![
            self.name
                .clone()
                .unwrap_or_else(|| "Name not recorded".into()),
        ];
        parts.push(match &self.nhs_number {
            Some(n) => format!("NHS {n}"),
            None => "no NHS number recorded".into(),
        });
        let age = self
            .age_years
            .map(|a| format!(" (age {a})"))
            .unwrap_or_default();
        match (&self.birth_date, &self.died) {
            (Some(born), Some(died)) => {
                parts.extend([format!("born {born}"), format!("died {died}{age}")])
            }
            (Some(born), None) => parts.push(format!("born {born}{age}")),
            (None, died) => {
                parts.push("date of birth not recorded".into());
                parts.extend(died.as_ref().map(|d| format!("died {d}")));
            }
        }
        parts.extend(self.gender.clone());
        f.write_str(&parts.join(" · "))
    }
}

impl fmt::Display for Allergy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut notes = Vec::new();
        notes.extend(self.criticality.as_deref().map(|c| match c {
            "unable-to-assess" => "criticality not assessed".to_string(),
            other => format!("{other} criticality"),
        }));
        let reactions: Vec<String> = self
            .reactions
            .iter()
            .map(|r| {
                let severity = r
                    .severity
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default();
                format!(
                    "{}{severity}",
                    r.manifestations.join(" and ").to_lowercase()
                )
            })
            .collect();
        match reactions.len() {
            0 => {}
            1 => notes.push(format!("reaction: {}", reactions[0])),
            _ => notes.push(format!("reactions: {}", reactions.join(", "))),
        }
        match notes.is_empty() {
            true => write!(f, "{}", self.substance),
            false => write!(f, "{}: {}", self.substance, notes.join("; ")),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.display)?;
        if let Some(severity) = &self.severity {
            write!(f, " ({})", severity.to_lowercase())?;
        }
        match &self.since {
            Some(since) => write!(f, ", since {since}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Medicine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dosage {
            Some(dosage) => write!(f, "{}: {dosage}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

impl fmt::Display for TestResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.display, self.value)?;
        if let Some(date) = &self.date {
            write!(f, " on {date}")?;
        }
        if let Some(flag) = &self.flag {
            write!(f, "  {flag}")?;
        }
        match &self.range {
            Some(range) => write!(f, " (normal {range})"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Immunisation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.vaccine,
            self.date.as_deref().unwrap_or("date not recorded")
        )?;
        match self.doses {
            0 | 1 => Ok(()),
            n => write!(f, " ({n} doses)"),
        }
    }
}

impl fmt::Display for SectionView {
    /// A heading, then one line per resource: date, type, description.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.items.len();
        let entries = if n == 1 { "entry" } else { "entries" };
        writeln!(f, "{} ({n} {entries})", capitalised(self.section.as_str()))?;
        if self.items.is_empty() {
            return writeln!(f, "  Nothing recorded.");
        }
        for item in &self.items {
            let date = item.date.as_deref().unwrap_or("no date");
            let warning = if item.conflicted {
                "  ⚠ conflicting versions"
            } else {
                ""
            };
            writeln!(
                f,
                "  {date:<10}  {}: {}{warning}",
                item.resource_type, item.text
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Author, RecordMeta, Stamp};
    use jiff::{Timestamp, civil::date};
    use serde_json::json;

    fn record_with(resources: &[Value]) -> Record {
        let author = Author {
            id: "device-test".into(),
            name: "Test".into(),
        };
        let stamp = Stamp {
            author: &author,
            time: Timestamp::from_second(1_700_000_000).unwrap(),
        };
        let meta = RecordMeta {
            id: "r1".into(),
            subject: Some("Patient/p1".into()),
            nhs_number: None,
        };
        let mut record = Record::create(meta, &automerge::ActorId::random());
        for resource in resources {
            record.put(stamp, resource).unwrap();
        }
        record.commit(stamp, "test");
        record
    }

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
            text.starts_with(
                "Fletcher Hyatt · NHS 943 476 5919 · born 1919-02-01 (age 100) · male\n"
            ),
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
        let medication = json!({"resourceType": "Medication", "id": "m1", "code": {"text": "Salbutamol inhaler"}});
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
}
