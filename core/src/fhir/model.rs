//! A small, hand-written serde model of the FHIR R4 fields phr reads.
//!
//! These types are *views*: they are deserialised from a stored resource when the program needs
//! to read it (to show it, to place it, to check it) and never serialised back. The stored
//! resource is the original JSON value, so every field not typed here passes through untouched.
//! Unknown fields are ignored and every field is optional, because real records are messy.

use serde::Deserialize;
use serde_json::{Number, Value};

/// A code from a terminology (FHIR `Coding`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Coding {
    /// The code system URI.
    pub system: Option<String>,
    /// The code within the system.
    pub code: Option<String>,
    /// Human-readable text for the code.
    pub display: Option<String>,
}

/// A concept given as codes and/or text (FHIR `CodeableConcept`).
///
/// A bare string is read as a code too: status fields were plain codes in FHIR STU3, and
/// records in the wild (the HL7 IPS example among them) still write `"clinicalStatus": "active"`.
/// Dropping such a resource from the view would hide, say, a penicillin allergy.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "ConceptOrCode")]
pub struct CodeableConcept {
    /// Codes from terminologies.
    pub coding: Vec<Coding>,
    /// Plain text as entered or chosen by the user.
    pub text: Option<String>,
}

/// How a `CodeableConcept` may be written.
#[derive(Deserialize)]
#[serde(untagged)]
enum ConceptOrCode {
    Concept {
        #[serde(default)]
        coding: Vec<Coding>,
        text: Option<String>,
    },
    Code(String),
}

impl From<ConceptOrCode> for CodeableConcept {
    fn from(value: ConceptOrCode) -> Self {
        match value {
            ConceptOrCode::Concept { coding, text } => CodeableConcept { coding, text },
            ConceptOrCode::Code(code) => CodeableConcept {
                coding: vec![Coding {
                    code: Some(code),
                    ..Coding::default()
                }],
                text: None,
            },
        }
    }
}

impl CodeableConcept {
    /// What a person should read: the text, else the first coding's display, else its code.
    pub fn display(&self) -> Option<&str> {
        self.text
            .as_deref()
            .or_else(|| self.coding.iter().find_map(|c| c.display.as_deref()))
            .or_else(|| self.coding.iter().find_map(|c| c.code.as_deref()))
    }

    /// Whether any coding has this code (in any system).
    pub fn has_code(&self, code: &str) -> bool {
        self.coding.iter().any(|c| c.code.as_deref() == Some(code))
    }

    /// The first code of the given system.
    pub fn code_in(&self, system: &str) -> Option<&str> {
        self.coding
            .iter()
            .find(|c| c.system.as_deref() == Some(system))
            .and_then(|c| c.code.as_deref())
    }
}

/// A measured amount (FHIR `Quantity`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Quantity {
    /// The numeric value, kept exactly as written.
    pub value: Option<Number>,
    /// `<`, `<=`, `>=` or `>`.
    pub comparator: Option<String>,
    /// The unit as displayed.
    pub unit: Option<String>,
    /// The coded unit (UCUM).
    pub code: Option<String>,
}

impl Quantity {
    /// The value as a float, for comparisons with reference ranges.
    pub fn as_f64(&self) -> Option<f64> {
        self.value.as_ref().and_then(Number::as_f64)
    }
}

/// A reference to another resource (FHIR `Reference`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Reference {
    /// A relative (`Type/id`), absolute or contained (`#id`) reference.
    pub reference: Option<String>,
    /// Text alternative for the resource.
    pub display: Option<String>,
}

/// A time range (FHIR `Period`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Period {
    /// Start, inclusive.
    pub start: Option<String>,
    /// End, inclusive; absent while ongoing.
    pub end: Option<String>,
}

/// A business identifier (FHIR `Identifier`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Identifier {
    /// The namespace of the value.
    pub system: Option<String>,
    /// The identifier itself.
    pub value: Option<String>,
}

/// A person's name (FHIR `HumanName`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct HumanName {
    /// The full name as text.
    pub text: Option<String>,
    /// Family name.
    pub family: Option<String>,
    /// Given names.
    #[serde(default)]
    pub given: Vec<String>,
    /// Titles before the name.
    #[serde(default)]
    pub prefix: Vec<String>,
}

impl HumanName {
    /// The name as a person would write it.
    pub fn display(&self) -> String {
        if let Some(text) = &self.text {
            return text.clone();
        }
        let mut parts: Vec<&str> = self.given.iter().map(String::as_str).collect();
        parts.extend(self.family.as_deref());
        parts.join(" ")
    }
}

/// Metadata about a resource (FHIR `Meta`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Meta {
    /// Tags.
    #[serde(default)]
    pub tag: Vec<Coding>,
    /// Security labels.
    #[serde(default)]
    pub security: Vec<Coding>,
}

/// FHIR `Patient`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Patient {
    /// Logical id.
    pub id: Option<String>,
    /// Identifiers, e.g. the NHS number.
    #[serde(default)]
    pub identifier: Vec<Identifier>,
    /// Names.
    #[serde(default)]
    pub name: Vec<HumanName>,
    /// `male`, `female`, `other`, `unknown`.
    pub gender: Option<String>,
    /// Date of birth.
    pub birth_date: Option<String>,
}

/// A reaction to a substance (FHIR `AllergyIntolerance.reaction`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Reaction {
    /// What happened.
    #[serde(default)]
    pub manifestation: Vec<CodeableConcept>,
    /// `mild`, `moderate`, `severe`.
    pub severity: Option<String>,
}

/// FHIR `AllergyIntolerance`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllergyIntolerance {
    /// `active`, `inactive`, `resolved`.
    pub clinical_status: Option<CodeableConcept>,
    /// `unconfirmed`, `confirmed`, `refuted`, `entered-in-error`.
    pub verification_status: Option<CodeableConcept>,
    /// The substance.
    pub code: Option<CodeableConcept>,
    /// `low`, `high`, `unable-to-assess`.
    pub criticality: Option<String>,
    /// Reactions seen.
    #[serde(default)]
    pub reaction: Vec<Reaction>,
    /// When recorded.
    pub recorded_date: Option<String>,
    /// Who recorded it.
    pub recorder: Option<Reference>,
    /// Who says so (the patient, a relative, a clinician).
    pub asserter: Option<Reference>,
}

/// FHIR `Condition`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `active`, `recurrence`, `relapse`, `inactive`, `remission`, `resolved`.
    pub clinical_status: Option<CodeableConcept>,
    /// `unconfirmed`, `provisional`, `differential`, `confirmed`, `refuted`, `entered-in-error`.
    pub verification_status: Option<CodeableConcept>,
    /// `problem-list-item`, `encounter-diagnosis`, ...
    #[serde(default)]
    pub category: Vec<CodeableConcept>,
    /// What the condition is.
    pub code: Option<CodeableConcept>,
    /// Mild, moderate, severe.
    pub severity: Option<CodeableConcept>,
    /// When it started.
    pub onset_date_time: Option<String>,
    /// When it started, as a period.
    pub onset_period: Option<Period>,
    /// When it ended.
    pub abatement_date_time: Option<String>,
    /// When it was recorded.
    pub recorded_date: Option<String>,
    /// Who recorded it.
    pub recorder: Option<Reference>,
    /// Who says so (the patient, a relative, a clinician).
    pub asserter: Option<Reference>,
}

/// How a medicine is to be taken (FHIR `Dosage`), reduced to what a person reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dosage {
    /// Free-text instructions, e.g. "one tablet twice a day".
    pub text: Option<String>,
    /// When to take it.
    pub timing: Option<Timing>,
    /// Taken as needed.
    pub as_needed_boolean: Option<bool>,
    /// The amount per dose.
    #[serde(default)]
    pub dose_and_rate: Vec<DoseAndRate>,
}

/// FHIR `Timing`, reduced to its repeat.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Timing {
    /// The repeat pattern.
    pub repeat: Option<TimingRepeat>,
}

/// FHIR `Timing.repeat`, reduced to frequency per period.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimingRepeat {
    /// Times per period.
    pub frequency: Option<Number>,
    /// The period length.
    pub period: Option<Number>,
    /// `s`, `min`, `h`, `d`, `wk`, `mo`, `a`.
    pub period_unit: Option<String>,
}

/// FHIR `Dosage.doseAndRate`, reduced to the dose quantity.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoseAndRate {
    /// The amount per dose.
    pub dose_quantity: Option<Quantity>,
}

/// FHIR `MedicationStatement`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MedicationStatement {
    /// `active`, `completed`, `stopped`, ...
    pub status: Option<String>,
    /// The medicine, as a concept.
    pub medication_codeable_concept: Option<CodeableConcept>,
    /// The medicine, as a reference to a `Medication`.
    pub medication_reference: Option<Reference>,
    /// How it is taken.
    #[serde(default)]
    pub dosage: Vec<Dosage>,
    /// When it was or is taken.
    pub effective_date_time: Option<String>,
    /// When it was or is taken, as a period.
    pub effective_period: Option<Period>,
    /// Who told of it.
    pub information_source: Option<Reference>,
}

/// FHIR `MedicationRequest`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MedicationRequest {
    /// `active`, `on-hold`, `cancelled`, `completed`, `stopped`, ...
    pub status: Option<String>,
    /// `order`, `plan`, `proposal`, ...
    pub intent: Option<String>,
    /// The medicine, as a concept.
    pub medication_codeable_concept: Option<CodeableConcept>,
    /// The medicine, as a reference to a `Medication`.
    pub medication_reference: Option<Reference>,
    /// How it is to be taken.
    #[serde(default)]
    pub dosage_instruction: Vec<Dosage>,
    /// When it was prescribed.
    pub authored_on: Option<String>,
    /// Who prescribed it.
    pub requester: Option<Reference>,
}

/// FHIR `Medication`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Medication {
    /// What the medicine is.
    pub code: Option<CodeableConcept>,
}

/// A reference range for a result (FHIR `Observation.referenceRange`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ReferenceRange {
    /// Lowest normal value.
    pub low: Option<Quantity>,
    /// Highest normal value.
    pub high: Option<Quantity>,
    /// The range as text.
    pub text: Option<String>,
}

/// One part of a multi-part observation, e.g. systolic blood pressure.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservationComponent {
    /// What was measured.
    pub code: Option<CodeableConcept>,
    /// The measurement.
    pub value_quantity: Option<Quantity>,
}

/// FHIR `Observation`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// `final`, `amended`, `preliminary`, `entered-in-error`, ...
    pub status: Option<String>,
    /// `laboratory`, `vital-signs`, `survey`, ...
    #[serde(default)]
    pub category: Vec<CodeableConcept>,
    /// What was observed.
    pub code: Option<CodeableConcept>,
    /// A measured result.
    pub value_quantity: Option<Quantity>,
    /// A coded result.
    pub value_codeable_concept: Option<CodeableConcept>,
    /// A text result.
    pub value_string: Option<String>,
    /// Parts of the result.
    #[serde(default)]
    pub component: Vec<ObservationComponent>,
    /// When it was observed.
    pub effective_date_time: Option<String>,
    /// When it was observed, as a period.
    pub effective_period: Option<Period>,
    /// When it was made available.
    pub issued: Option<String>,
    /// Normal ranges.
    #[serde(default)]
    pub reference_range: Vec<ReferenceRange>,
    /// High, low, abnormal, ...
    #[serde(default)]
    pub interpretation: Vec<CodeableConcept>,
}

impl Observation {
    /// When the observation applies: effective time, else the period's start, else issued.
    pub fn when(&self) -> Option<&str> {
        self.effective_date_time
            .as_deref()
            .or_else(|| {
                self.effective_period
                    .as_ref()
                    .and_then(|p| p.start.as_deref())
            })
            .or(self.issued.as_deref())
    }
}

/// FHIR `Procedure`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Procedure {
    /// `completed`, `in-progress`, ...
    pub status: Option<String>,
    /// What was done.
    pub code: Option<CodeableConcept>,
    /// When it was done.
    pub performed_date_time: Option<String>,
    /// When it was done, as a period.
    pub performed_period: Option<Period>,
}

/// FHIR `Immunization`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Immunization {
    /// `completed`, `entered-in-error`, `not-done`.
    pub status: Option<String>,
    /// The vaccine.
    pub vaccine_code: Option<CodeableConcept>,
    /// When it was given.
    pub occurrence_date_time: Option<String>,
    /// When it was given, as text.
    pub occurrence_string: Option<String>,
}

/// FHIR `CarePlan.activity.detail`, reduced.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CarePlanActivityDetail {
    /// What the activity is.
    pub code: Option<CodeableConcept>,
    /// Its status.
    pub status: Option<String>,
}

/// FHIR `CarePlan.activity`, reduced.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CarePlanActivity {
    /// The planned activity.
    pub detail: Option<CarePlanActivityDetail>,
}

/// FHIR `CarePlan`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CarePlan {
    /// `active`, `completed`, ...
    pub status: Option<String>,
    /// Kind of plan.
    #[serde(default)]
    pub category: Vec<CodeableConcept>,
    /// Human-friendly name.
    pub title: Option<String>,
    /// Summary of the plan.
    pub description: Option<String>,
    /// Time covered.
    pub period: Option<Period>,
    /// Planned activities.
    #[serde(default)]
    pub activity: Vec<CarePlanActivity>,
}

/// FHIR `Appointment`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Appointment {
    /// `proposed`, `booked`, `cancelled`, ...
    pub status: Option<String>,
    /// Shown on a subject line.
    pub description: Option<String>,
    /// When it starts.
    pub start: Option<String>,
    /// When it ends.
    pub end: Option<String>,
    /// The kind of service.
    #[serde(default)]
    pub service_type: Vec<CodeableConcept>,
}

/// FHIR `Communication.payload`, reduced to text.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommunicationPayload {
    /// The message text.
    pub content_string: Option<String>,
}

/// FHIR `Communication`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Communication {
    /// `completed`, `in-progress`, ...
    pub status: Option<String>,
    /// When sent.
    pub sent: Option<String>,
    /// Who sent it.
    pub sender: Option<Reference>,
    /// The message.
    #[serde(default)]
    pub payload: Vec<CommunicationPayload>,
}

/// FHIR `DiagnosticReport`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiagnosticReport {
    /// `final`, `preliminary`, ...
    pub status: Option<String>,
    /// What the report is.
    pub code: Option<CodeableConcept>,
    /// When it applies.
    pub effective_date_time: Option<String>,
    /// When it was issued.
    pub issued: Option<String>,
    /// The results it reports.
    #[serde(default)]
    pub result: Vec<Reference>,
    /// The clinical conclusion.
    pub conclusion: Option<String>,
}

/// FHIR `Encounter`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Encounter {
    /// `finished`, `in-progress`, ...
    pub status: Option<String>,
    /// Ambulatory, emergency, inpatient...
    pub class: Option<Coding>,
    /// Specific type.
    #[serde(rename = "type", default)]
    pub kind: Vec<CodeableConcept>,
    /// When it happened.
    pub period: Option<Period>,
    /// Why.
    #[serde(default)]
    pub reason_code: Vec<CodeableConcept>,
}

/// FHIR `Attachment`, reduced.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// MIME type.
    pub content_type: Option<String>,
    /// Base64 data.
    pub data: Option<String>,
    /// Label.
    pub title: Option<String>,
}

/// FHIR `DocumentReference.content`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct DocumentContent {
    /// The document.
    pub attachment: Option<Attachment>,
}

/// FHIR `DocumentReference`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct DocumentReference {
    /// `current`, `superseded`, `entered-in-error`.
    pub status: Option<String>,
    /// Kind of document.
    #[serde(rename = "type")]
    pub kind: Option<CodeableConcept>,
    /// Human-readable description.
    pub description: Option<String>,
    /// When it was created.
    pub date: Option<String>,
    /// The document content.
    #[serde(default)]
    pub content: Vec<DocumentContent>,
}

/// FHIR `Composition.section`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CompositionSection {
    /// Section title.
    pub title: Option<String>,
    /// Section code.
    pub code: Option<CodeableConcept>,
    /// Resources in the section.
    #[serde(default)]
    pub entry: Vec<Reference>,
}

/// FHIR `Composition`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Composition {
    /// `preliminary`, `final`, ...
    pub status: Option<String>,
    /// Kind of composition.
    #[serde(rename = "type")]
    pub kind: Option<CodeableConcept>,
    /// Title.
    pub title: Option<String>,
    /// When edited.
    pub date: Option<String>,
    /// Sections.
    #[serde(default)]
    pub section: Vec<CompositionSection>,
}

/// FHIR `Bundle.entry.request`, reduced.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct BundleRequest {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`.
    pub method: Option<String>,
    /// The URL of the request.
    pub url: Option<String>,
}

/// FHIR `Bundle.entry.search`, reduced.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct BundleSearch {
    /// `match`, `include`, `outcome`.
    pub mode: Option<String>,
}

/// FHIR `Bundle.entry`. The resource stays a JSON value: it is stored, not interpreted.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleEntry {
    /// The entry's URL, which references inside the bundle may use.
    pub full_url: Option<String>,
    /// The resource.
    pub resource: Option<Value>,
    /// Transaction and batch details.
    pub request: Option<BundleRequest>,
    /// Search details.
    pub search: Option<BundleSearch>,
}

/// FHIR `Bundle`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Bundle {
    /// `document`, `message`, `transaction`, `batch`, `collection`, `searchset`, ...
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The entries.
    #[serde(default)]
    pub entry: Vec<BundleEntry>,
}

/// Reads a typed view of a stored resource; `None` if its fields do not fit the view's types
/// (the resource is still stored and exported untouched).
pub fn view<T: serde::de::DeserializeOwned>(resource: &Value) -> Option<T> {
    T::deserialize(resource).ok()
}
