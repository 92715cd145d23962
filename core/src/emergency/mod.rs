//! The emergency summary: what a crew needs when the patient cannot speak, chosen from the
//! record and carried on a card that works with no network and no phr.
//!
//! - **What goes on it** ([`gather`]): name, NHS number, birth date and emergency contacts
//!   (from the `Patient`), allergies and intolerances still current, medicines taken now,
//!   active problems, advance decisions and do-not-resuscitate decisions if recorded (a
//!   `Consent` of scope `adr`, or anything coded SNOMED CT 304253006 "Not for resuscitation"
//!   or 450476008 "Not for attempted cardiopulmonary resuscitation", or a document of LOINC
//!   42348-3 "Advance directives"), and the blood group if known (an `Observation` of LOINC
//!   882-1, 883-9 or 10331-7). Entries of the `sensitive` section only if the patient names
//!   them ([`Choice::include`]); the others are counted, never shown.
//! - **As FHIR** ([`document`]): an International Patient Summary `document` Bundle with only
//!   those sections, each resource minimised (no narrative, no `meta`, references only to
//!   what the document carries).
//! - **On the card** (`card.rs`): the document, compressed and encrypted as a JWE, in one QR
//!   code with its key, and the key facts printed beside it in plain text.
//!
//! The module does no I/O: the caller passes the time.

pub mod break_glass;
mod card;
pub mod link;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use jiff::{Timestamp, civil::Date};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{
    Section,
    fhir::{
        model::{AllergyIntolerance, Condition, MedicationRequest, MedicationStatement, view},
        reference::ResourceKey,
        status,
    },
    record::{Record, RecordError},
    view::describe_resource,
};

pub use card::{
    CARD_DOCUMENT_BYTES_MAX, CARD_PREFIX, CardError, Fitted, QR_BYTES_MAX, fit, open, open_jwe,
    seal,
};

/// SNOMED CT codes of a decision not to attempt resuscitation.
const DNACPR_CODES: &[&str] = &["304253006", "450476008"];
/// LOINC codes of a blood group result: ABO and Rh group, ABO group, Rh type.
const BLOOD_GROUP_CODES: &[&str] = &["882-1", "883-9", "10331-7"];
/// LOINC "Advance directives".
const ADVANCE_DIRECTIVES: &str = "42348-3";

/// What the patient chose beyond the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Choice {
    /// Entries of the `sensitive` section to carry too, as `Type/id`.
    pub include: Vec<String>,
}

/// One line of the summary, with the resource it comes from.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    /// `Type/id`.
    pub key: String,
    /// In plain language.
    pub text: String,
    /// Whether it comes from the `sensitive` section (carried because the patient chose so).
    pub sensitive: bool,
    #[serde(skip)]
    resource: Value,
}

/// Someone to call.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Contact {
    /// Their name.
    pub name: String,
    /// Who they are to the patient, as written.
    pub relationship: Option<String>,
    /// A phone number.
    pub phone: Option<String>,
}

/// The emergency summary, as the patient previews it.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The patient's name.
    pub name: Option<String>,
    /// NHS number, spaced.
    pub nhs_number: Option<String>,
    /// Date of birth.
    pub birth_date: Option<String>,
    /// Emergency contacts.
    pub contacts: Vec<Contact>,
    /// Allergies and intolerances.
    pub allergies: Vec<Item>,
    /// Medicines taken now.
    pub medicines: Vec<Item>,
    /// Active problems.
    pub problems: Vec<Item>,
    /// Advance decisions, do-not-resuscitate decisions.
    pub decisions: Vec<Item>,
    /// The blood group, if known.
    pub blood_group: Option<Item>,
    /// Entries of the `sensitive` section left off (the patient may name them to carry them).
    pub sensitive_left_off: Vec<String>,
    #[serde(skip)]
    patient: Option<(ResourceKey, Value)>,
}

/// The emergency summary of `record`, with what `choice` adds.
pub fn gather(record: &Record, choice: &Choice, today: Date) -> Result<Summary, RecordError> {
    let patient = crate::identity::record_patient(record)?;
    let header = crate::view::patient_header(record, today)?;
    let contacts = patient
        .as_ref()
        .map(|(_, p)| contacts_of(p))
        .unwrap_or_default();
    let chosen: BTreeSet<&str> = choice.include.iter().map(String::as_str).collect();
    let mut summary = Summary {
        name: header.name,
        nhs_number: header.nhs_number,
        birth_date: header.birth_date,
        contacts,
        allergies: Vec::new(),
        medicines: Vec::new(),
        problems: Vec::new(),
        decisions: Vec::new(),
        blood_group: None,
        sensitive_left_off: Vec::new(),
        patient,
    };
    let mut names = BTreeSet::new();
    for section in [Section::Summary, Section::Clinical, Section::Sensitive] {
        for (key, resource, _) in record.resources(section)? {
            let key_text = key.to_string();
            let sensitive = section == Section::Sensitive;
            let Some(kind) = kind_of(&resource) else {
                continue;
            };
            if sensitive && !chosen.contains(key_text.as_str()) {
                summary.sensitive_left_off.push(key_text);
                continue;
            }
            let item = Item {
                text: describe_resource(&resource),
                key: key_text,
                sensitive,
                resource,
            };
            match kind {
                Kind::Allergy => summary.allergies.push(item),
                // One line per medicine: a repeat and the prescriptions issued from it are one.
                Kind::Medicine => {
                    if names.insert(item.text.to_lowercase()) {
                        summary.medicines.push(item);
                    }
                }
                Kind::Problem => summary.problems.push(item),
                Kind::Decision => summary.decisions.push(item),
                Kind::BloodGroup => {
                    let newer = summary
                        .blood_group
                        .as_ref()
                        .is_none_or(|old| when(&item.resource) > when(&old.resource));
                    if newer {
                        summary.blood_group = Some(item);
                    }
                }
            }
        }
    }
    Ok(summary)
}

fn when(resource: &Value) -> Option<&str> {
    resource
        .get("effectiveDateTime")
        .or_else(|| resource.get("issued"))
        .and_then(Value::as_str)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Allergy,
    Medicine,
    Problem,
    Decision,
    BloodGroup,
}

fn has_code(value: Option<&Value>, codes: &[&str]) -> bool {
    value
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .is_some_and(|codings| {
            codings
                .iter()
                .filter_map(|c| c.get("code").and_then(Value::as_str))
                .any(|code| codes.contains(&code))
        })
}

/// What a resource is on the card, if it belongs there.
fn kind_of(resource: &Value) -> Option<Kind> {
    let resource_type = resource.get("resourceType").and_then(Value::as_str)?;
    if has_code(resource.get("code"), DNACPR_CODES) {
        return Some(Kind::Decision);
    }
    match resource_type {
        "AllergyIntolerance" => view::<AllergyIntolerance>(resource)
            .filter(status::allergy_is_current)
            .map(|_| Kind::Allergy),
        "MedicationStatement" => view::<MedicationStatement>(resource)
            .filter(status::statement_is_current)
            .map(|_| Kind::Medicine),
        "MedicationRequest" => view::<MedicationRequest>(resource)
            .filter(status::request_is_current)
            .map(|_| Kind::Medicine),
        "Condition" => view::<Condition>(resource)
            .filter(status::condition_is_active)
            .map(|_| Kind::Problem),
        "Consent" => {
            let scope = resource.get("scope");
            let advance = scope
                .and_then(|s| s.get("coding"))
                .and_then(Value::as_array)
                .is_some_and(|c| c.iter().any(|c| c["code"] == "adr"));
            (advance && resource["status"] == "active").then_some(Kind::Decision)
        }
        "DocumentReference" => (has_code(resource.get("type"), &[ADVANCE_DIRECTIVES])
            && resource["status"] == "current")
            .then_some(Kind::Decision),
        "Observation" => (has_code(resource.get("code"), BLOOD_GROUP_CODES)
            && !matches!(
                resource["status"].as_str(),
                Some("cancelled" | "entered-in-error")
            ))
        .then_some(Kind::BloodGroup),
        _ => None,
    }
}

/// The patient's emergency contacts: `Patient.contact`, those marked emergency contact
/// (HL7 v2 table 0131 `C`) first, then the rest.
fn contacts_of(patient: &Value) -> Vec<Contact> {
    let mut out: Vec<(bool, Contact)> = patient
        .get("contact")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let name = c.get("name").map(|n| {
                n.get("text").and_then(Value::as_str).map_or_else(
                    || {
                        let given: Vec<&str> = n["given"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        let family = n["family"].as_str().unwrap_or("");
                        format!("{} {family}", given.join(" ")).trim().to_string()
                    },
                    str::to_string,
                )
            })?;
            let relationships = c.get("relationship").and_then(Value::as_array);
            let emergency = relationships
                .into_iter()
                .flatten()
                .any(|r| has_code(Some(r), &["C"]));
            let relationship = relationships.into_iter().flatten().find_map(|r| {
                r.get("text")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| r["coding"][0]["display"].as_str().map(str::to_string))
            });
            let phone = c
                .get("telecom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|t| t["system"] == "phone")
                .and_then(|t| t["value"].as_str())
                .map(str::to_string);
            Some((
                emergency,
                Contact {
                    name,
                    relationship,
                    phone,
                },
            ))
        })
        .collect();
    out.sort_by_key(|(emergency, _)| !*emergency);
    out.into_iter().map(|(_, c)| c).collect()
}

/// The summary as an International Patient Summary `document` Bundle: a `Composition` (LOINC
/// 60591-5) with the sections that have entries, the `Patient`, and each entry minimised.
pub fn document(summary: &Summary, now: Timestamp) -> Value {
    let subject = summary
        .patient
        .as_ref()
        .map(|(key, _)| json!({"reference": key.to_string()}));
    let mut carried: Vec<(String, Value)> = Vec::new();
    if let Some((key, patient)) = &summary.patient {
        carried.push((key.to_string(), minimal_patient(patient)));
    }
    let mut sections = Vec::new();
    let blood: Vec<Item> = summary.blood_group.iter().cloned().collect();
    for (title, loinc, items) in [
        ("Allergies and Intolerances", "48765-2", &summary.allergies),
        ("Medication Summary", "10160-0", &summary.medicines),
        ("Problems", "11450-4", &summary.problems),
        ("Advance Directives", ADVANCE_DIRECTIVES, &summary.decisions),
        ("Results", "30954-2", &blood),
    ] {
        if items.is_empty() {
            continue;
        }
        sections.push(json!({
            "title": title,
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "entry": items.iter().map(|i| json!({"reference": i.key})).collect::<Vec<_>>(),
        }));
        carried.extend(items.iter().map(|i| (i.key.clone(), i.resource.clone())));
    }
    let keys: BTreeSet<String> = carried.iter().map(|(k, _)| k.clone()).collect();
    let composition_id = crate::new_id();
    let composition = json!({
        "resourceType": "Composition",
        "id": composition_id,
        "status": "final",
        "type": {"coding": [{"system": "http://loinc.org", "code": "60591-5"}]},
        "subject": subject,
        "date": now.to_string(),
        "author": [subject.clone().unwrap_or_else(|| json!({"display": "phr"}))],
        "title": "Emergency summary",
        "section": sections,
    });
    let mut entries = vec![json!({
        "fullUrl": format!("Composition/{composition_id}"),
        "resource": composition,
    })];
    for (key, resource) in carried {
        let mut resource = minimise(&essentials(&resource));
        keep_references_to(&mut resource, &keys);
        entries.push(json!({"fullUrl": key, "resource": resource}));
    }
    json!({
        "resourceType": "Bundle",
        "type": "document",
        "timestamp": now.to_string(),
        "entry": entries,
    })
}

/// The elements of an entry a crew reads; the rest (encounters, prescribers, billing, dosage
/// timing structures) stays in the record.
fn essentials(resource: &Value) -> Value {
    const COMMON: &[&str] = &[
        "resourceType",
        "id",
        "status",
        "clinicalStatus",
        "verificationStatus",
        "code",
        "subject",
        "patient",
    ];
    let extra: &[&str] = match resource["resourceType"].as_str().unwrap_or("") {
        // Already cut down to who the patient is and whom to call.
        "Patient" => return resource.clone(),
        "AllergyIntolerance" => &["type", "category", "criticality", "reaction"],
        "MedicationStatement" => &["medicationCodeableConcept", "dosage"],
        "MedicationRequest" => &["intent", "medicationCodeableConcept", "dosageInstruction"],
        "Condition" => &["onsetDateTime"],
        "Observation" => &["valueCodeableConcept", "valueString", "effectiveDateTime"],
        "Consent" => &["scope", "category", "dateTime", "provision"],
        "DocumentReference" => &["type", "description", "date"],
        "Flag" => &["category", "period"],
        _ => &[],
    };
    let mut out = Map::new();
    for field in COMMON.iter().chain(extra) {
        if let Some(value) = resource.get(*field) {
            out.insert((*field).to_string(), value.clone());
        }
    }
    // Of a dosage, its words.
    for field in ["dosage", "dosageInstruction"] {
        if let Some(Value::Array(dosages)) = out.get_mut(field) {
            *dosages = dosages
                .iter()
                .filter_map(view::<crate::fhir::model::Dosage>)
                .filter_map(|d| crate::fhir::display::dosage(&d))
                .map(|text| json!({"text": text}))
                .collect();
        }
    }
    Value::Object(out)
}

/// The `Patient` as the card carries it: who, how to reach their people, nothing else.
fn minimal_patient(patient: &Value) -> Value {
    let mut out = Map::new();
    for field in [
        "resourceType",
        "id",
        "identifier",
        "name",
        "birthDate",
        "gender",
        "contact",
    ] {
        if let Some(value) = patient.get(field) {
            out.insert(field.to_string(), value.clone());
        }
    }
    minimise(&Value::Object(out))
}

/// A resource without what a reader in an emergency does not need: its narrative and `meta`,
/// and extensions and codings' `userSelected` flags throughout. Modifier extensions stay: they
/// change what the element means.
pub fn minimise(resource: &Value) -> Value {
    let mut out = strip(resource);
    if let Value::Object(map) = &mut out {
        map.remove("text");
        map.remove("meta");
    }
    out
}

fn strip(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "extension" | "userSelected"))
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip).collect()),
        other => other.clone(),
    }
}

/// Keeps `reference`s to the resources the document carries; any other keeps its display.
fn keep_references_to(value: &mut Value, carried: &BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("reference")
                && !r.starts_with('#')
                && !carried.contains(r)
            {
                map.remove("reference");
            }
            for child in map.values_mut() {
                keep_references_to(child, carried);
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|i| keep_references_to(i, carried)),
        _ => {}
    }
}

impl Summary {
    /// Drops the last entry of the longest list among problems and medicines (problems first
    /// when they are as long): how the card makes room when the document does not fit one QR
    /// code. Allergies, decisions, the blood group and who the patient is are never dropped.
    /// Returns what was dropped, or `None` if nothing is left to drop.
    pub fn trim_one(&mut self) -> Option<String> {
        let list = if self.problems.len() >= self.medicines.len() {
            &mut self.problems
        } else {
            &mut self.medicines
        };
        list.pop().map(|item| item.text)
    }
}
