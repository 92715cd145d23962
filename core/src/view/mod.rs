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
//!
//! This module holds what views return (the types below) and the helpers they share; the
//! views themselves are in submodules:
//!
//! - `summary`: [`summary()`], the key facts of a record, and how each group reads;
//! - `section`: [`section_view`] and [`describe_resource`], one line for any resource;
//! - `result`: an `Observation` as a [`TestResult`], which both of them show.
//!
//! [`Record::resources_of_type`]: crate::record::Record::resources_of_type

mod result;
mod section;
mod summary;
#[cfg(test)]
mod tests;

use serde::Serialize;

use crate::{
    fhir::{display, model::CodeableConcept},
    section::Section,
};

pub use section::{describe_resource, section_view};
pub(crate) use summary::{
    CurrentMedicine, current_medicines, medicine_name, named_other_than_patient,
    referenced_medication,
};
pub use summary::{header_of, patient_header, summary};

/// How many results the summary lists: the latest of each test, newest first.
pub const RECENT_RESULTS_MAX: usize = 10;

/// The longest description a section view line holds, in characters; longer ones end in "…".
pub const ITEM_TEXT_CHARS_MAX: usize = 160;

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
    /// How many entries of the `sensitive` section this node holds and the summary leaves out
    /// (said under it: a view hides nothing in silence).
    pub sensitive: usize,
    /// How many allergies, problems, medicines, results and immunisations are marked as
    /// entered in error and left out (said under it too).
    pub in_error: usize,
}

/// The patient's name and identity, from the subject `Patient` and the record's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PatientHeader {
    /// The name as a person writes it.
    pub name: Option<String>,
    /// The NHS number, spaced as the NHS prints it (`943 476 5919`).
    pub nhs_number: Option<String>,
    /// Date of birth.
    pub birth_date: Option<String>,
    /// Date of death, if the patient has died and it is recorded.
    pub died: Option<String>,
    /// Whether the patient has died (a date of death, or `deceasedBoolean` true).
    pub deceased: bool,
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
    /// Not a settled fact yet, e.g. "unconfirmed" (what the patient reports is, until a
    /// clinician confirms it).
    pub qualifier: Option<String>,
    /// Who recorded it, when the entry names someone other than the patient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
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
    /// Not a settled diagnosis: "unconfirmed", "provisional" or "differential diagnosis".
    pub qualifier: Option<String>,
    /// Who recorded it, when the entry names someone other than the patient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A medicine taken now.
#[derive(Debug, Clone, Serialize)]
pub struct Medicine {
    /// The medicine's name.
    pub name: String,
    /// How to take it, in words.
    pub dosage: Option<String>,
    /// Not taken right now: "on hold", "intended" or "proposed" (a prescriber's proposal,
    /// not a prescription).
    pub qualifier: Option<String>,
    /// Who prescribed it (or told of it), when the entry names someone other than the patient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
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
    /// A reading the patient took themselves (from their journal), not a clinic's or a lab's.
    pub home: bool,
    /// Not a final result: `preliminary`, `registered` (not yet done), `amended`,
    /// `corrected` or `cancelled`, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
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

/// The words of a concept, without the SNOMED CT semantic tag ("(disorder)") that ends a fully
/// specified name: Synthea uses those names as displays, and the tag means nothing to a patient.
pub(crate) fn text_of(concept: Option<&CodeableConcept>) -> Option<String> {
    let text = concept?.display()?;
    let bare = SNOMED_SEMANTIC_TAGS
        .iter()
        .find_map(|tag| text.strip_suffix(tag));
    Some(bare.unwrap_or(text).to_string())
}

fn date_part(value: Option<&str>) -> Option<String> {
    value.map(|v| display::date(v).to_string())
}
