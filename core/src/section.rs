//! Sections: the units of consent and replication, and where each FHIR resource goes.
//!
//! A record is split into six sections so that a patient can share, say, their medicines with a
//! pharmacy without sharing their mental-health history. Every resource lives in exactly one
//! section, chosen by [`place`] from its type, its security labels and its codes. The rules are
//! documented in `docs/ARCHITECTURE.md` ("Where resources go").

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The FHIR tag system phr uses to pin a resource to a section, e.g. entries the patient adds
/// to their journal, or anything the patient marks sensitive. A tag beats every other rule.
pub const SECTION_TAG_SYSTEM: &str = "https://phr.invalid/fhir/CodeSystem/section";

/// One section of a record; each is its own Automerge document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    /// Demographics, allergies, problems, current medicines, immunisations: the key facts.
    Summary,
    /// Encounters, procedures, results, letters, care plans.
    Clinical,
    /// Mental and sexual health, financial records, anything the patient marks sensitive.
    Sensitive,
    /// What the patient records: symptoms, home readings, diary notes.
    Journal,
    /// Appointments, repeat prescription orders, messages.
    Requests,
    /// Who read or changed what.
    Audit,
}

impl Section {
    /// Every section, in display order.
    pub const ALL: [Section; 6] = [
        Section::Summary,
        Section::Clinical,
        Section::Sensitive,
        Section::Journal,
        Section::Requests,
        Section::Audit,
    ];

    /// The section's name as used on the command line and in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Summary => "summary",
            Section::Clinical => "clinical",
            Section::Sensitive => "sensitive",
            Section::Journal => "journal",
            Section::Requests => "requests",
            Section::Audit => "audit",
        }
    }

    /// A one-byte code for compact storage formats.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The inverse of [`Section::code`].
    pub fn from_code(code: u8) -> Option<Section> {
        Section::ALL.get(usize::from(code)).copied()
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A section name that is not one of the six.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown section '{0}': expected one of summary, clinical, sensitive, journal, requests, audit"
)]
pub struct UnknownSection(pub String);

impl FromStr for Section {
    type Err = UnknownSection;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Section::ALL
            .into_iter()
            .find(|section| section.as_str() == s)
            .ok_or_else(|| UnknownSection(s.to_string()))
    }
}

/// Financial and insurance resources. They restate diagnoses and procedures (sensitive ones
/// included) and are not needed for care, so they go to `sensitive`: least disclosure.
const FINANCIAL_TYPES: &[&str] = &[
    "Account",
    "ChargeItem",
    "Claim",
    "ClaimResponse",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "ExplanationOfBenefit",
    "Invoice",
    "PaymentNotice",
    "PaymentReconciliation",
];

/// The key facts a clinician looks for first.
const SUMMARY_TYPES: &[&str] = &[
    "AllergyIntolerance",
    "Condition",
    "Flag",
    "Immunization",
    "Medication",
    "MedicationRequest",
    "MedicationStatement",
    "Patient",
    "RelatedPerson",
];

/// Two-way traffic between the patient and providers.
const REQUEST_TYPES: &[&str] = &[
    "Appointment",
    "AppointmentResponse",
    "Communication",
    "CommunicationRequest",
    "Schedule",
    "Slot",
    "Task",
];

/// Security labels (HL7 v3 Confidentiality and ActCode sensitivity codes) that make a resource
/// sensitive wherever its type would otherwise put it.
const SENSITIVE_SECURITY_CODES: &[&str] = &[
    "R", "V", "ETH", "GDIS", "HIV", "MH", "PSY", "PSYTHPN", "SDV", "SEX", "SOC", "STD", "SUD",
    "REPRO",
];

/// SNOMED CT concepts for mental health, substance use and sexual health. A starting list, chosen
/// to cover what the fixtures and common primary care records hold; anything else can be marked
/// sensitive by the patient (`phr add ... --sensitive`, or a section tag on import).
const SENSITIVE_SNOMED_CODES: &[&str] = &[
    "35489007",  // Depressive disorder
    "370143000", // Major depressive disorder
    "36923009",  // Major depression, single episode
    "197480006", // Anxiety disorder
    "48694002",  // Anxiety
    "47505003",  // Posttraumatic stress disorder
    "13746004",  // Bipolar disorder
    "58214004",  // Schizophrenia
    "5602001",   // Opioid abuse
    "6525002",   // Dependent drug abuse
    "55680006",  // Drug overdose
    "7200002",   // Alcoholism
    "66590003",  // Alcohol dependence
    "86406008",  // HIV infection
    "105629000", // Chlamydial infection
    "240589008", // Chlamydia trachomatis infection
    "15628003",  // Gonorrhoea
    "76272004",  // Syphilis
    "33839006",  // Genital herpes
    "57797005",  // Induced termination of pregnancy
];

/// ICD-10 code prefixes: mental and behavioural disorders (F), sexually transmitted infections
/// (A50-A64) and HIV (B20-B24, Z21).
const SENSITIVE_ICD10_PREFIXES: &[&str] = &[
    "F", "A50", "A51", "A52", "A53", "A54", "A55", "A56", "A57", "A58", "A59", "A60", "A63", "A64",
    "B20", "B21", "B22", "B23", "B24", "Z21",
];

/// The section a resource belongs in.
///
/// In order: `AuditEvent` to `audit`; a phr section tag (naming any section but `audit`); a
/// sensitivity security label or a sensitive code; the type (financial to `sensitive`,
/// requests, summary types); `clinical` for the rest.
///
/// `audit` holds `AuditEvent`s and nothing else, whatever a tag says: the record reads no other
/// key there, and no `AuditEvent` key elsewhere (see [`crate::record`]).
pub fn place(resource: &Value) -> Section {
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    if resource_type == "AuditEvent" {
        return Section::Audit;
    }
    if let Some(section) = tagged_section(resource).filter(|s| *s != Section::Audit) {
        return section;
    }
    if FINANCIAL_TYPES.contains(&resource_type)
        || has_sensitive_label(resource)
        || has_sensitive_code(resource)
    {
        return Section::Sensitive;
    }
    if REQUEST_TYPES.contains(&resource_type) {
        return Section::Requests;
    }
    if SUMMARY_TYPES.contains(&resource_type) {
        return Section::Summary;
    }
    Section::Clinical
}

fn codings<'a>(value: Option<&'a Value>) -> impl Iterator<Item = &'a Value> + 'a {
    value.and_then(Value::as_array).into_iter().flatten()
}

fn tagged_section(resource: &Value) -> Option<Section> {
    let meta = resource.get("meta")?;
    codings(meta.get("tag"))
        .filter(|tag| tag.get("system").and_then(Value::as_str) == Some(SECTION_TAG_SYSTEM))
        .find_map(|tag| tag.get("code")?.as_str()?.parse().ok())
}

fn has_sensitive_label(resource: &Value) -> bool {
    let Some(meta) = resource.get("meta") else {
        return false;
    };
    codings(meta.get("security"))
        .filter_map(|label| label.get("code").and_then(Value::as_str))
        .any(|code| SENSITIVE_SECURITY_CODES.contains(&code))
}

fn has_sensitive_code(resource: &Value) -> bool {
    let Some(code) = resource.get("code") else {
        return false;
    };
    codings(code.get("coding")).any(|coding| {
        let system = coding.get("system").and_then(Value::as_str).unwrap_or("");
        let code = coding.get("code").and_then(Value::as_str).unwrap_or("");
        match system {
            "http://snomed.info/sct" => SENSITIVE_SNOMED_CODES.contains(&code),
            "http://hl7.org/fhir/sid/icd-10" | "http://hl7.org/fhir/sid/icd-10-cm" => {
                SENSITIVE_ICD10_PREFIXES
                    .iter()
                    .any(|prefix| code.starts_with(prefix))
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn places_by_type() {
        assert_eq!(place(&json!({"resourceType": "Patient"})), Section::Summary);
        assert_eq!(
            place(&json!({"resourceType": "Encounter"})),
            Section::Clinical
        );
        assert_eq!(place(&json!({"resourceType": "Claim"})), Section::Sensitive);
        assert_eq!(
            place(&json!({"resourceType": "ExplanationOfBenefit"})),
            Section::Sensitive
        );
        assert_eq!(
            place(&json!({"resourceType": "Appointment"})),
            Section::Requests
        );
        assert_eq!(
            place(&json!({"resourceType": "AuditEvent"})),
            Section::Audit
        );
        assert_eq!(place(&json!({"resourceType": "Basic"})), Section::Clinical);
    }

    #[test]
    fn sensitive_codes_and_labels_win_over_type() {
        let depression = json!({"resourceType": "Condition", "code": {"coding": [
            {"system": "http://snomed.info/sct", "code": "370143000"}]}});
        assert_eq!(place(&depression), Section::Sensitive);
        let icd = json!({"resourceType": "Condition", "code": {"coding": [
            {"system": "http://hl7.org/fhir/sid/icd-10", "code": "F32.1"}]}});
        assert_eq!(place(&icd), Section::Sensitive);
        let labelled =
            json!({"resourceType": "Observation", "meta": {"security": [{"code": "PSY"}]}});
        assert_eq!(place(&labelled), Section::Sensitive);
    }

    #[test]
    fn a_section_tag_beats_every_rule() {
        let tagged = json!({"resourceType": "Claim", "meta": {"tag": [
            {"system": SECTION_TAG_SYSTEM, "code": "journal"}]}});
        assert_eq!(place(&tagged), Section::Journal);
    }

    #[test]
    fn audit_holds_audit_events_and_nothing_else_whatever_the_tag() {
        let tag = |code: &str| json!({"tag": [{"system": SECTION_TAG_SYSTEM, "code": code}]});
        let event = json!({"resourceType": "AuditEvent", "meta": tag("summary")});
        assert_eq!(place(&event), Section::Audit);
        let observation = json!({"resourceType": "Observation", "meta": tag("audit")});
        assert_eq!(place(&observation), Section::Clinical);
    }

    #[test]
    fn names_round_trip() {
        for section in Section::ALL {
            assert_eq!(section.as_str().parse::<Section>().unwrap(), section);
            assert_eq!(Section::from_code(section.code()), Some(section));
        }
        assert!("everything".parse::<Section>().is_err());
    }
}
