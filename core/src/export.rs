//! Export: the record as FHIR R4 Bundles.
//!
//! - [`collection`]: every resource of the chosen sections, as stored, in a `collection` Bundle.
//! - [`ips`]: an International Patient Summary `document` Bundle: a Composition first, then the
//!   patient and the resources its sections list. Problems, Allergies and Medications are always
//!   present; when one has nothing to list it holds the IPS "no information" entry, so a reader
//!   can tell "none known" from "left out".
//!
//! References inside the record are relative (`Type/id`, see [`crate::import`]). Each entry's
//! `fullUrl` is [`FULL_URL_BASE`] + `Type/id`, a RESTful URL, so relative references resolve
//! against it by the FHIR rules and importing the export gives back the same record.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::{
    fhir::{
        model::{
            AllergyIntolerance, Condition, Immunization, MedicationRequest, MedicationStatement,
            Observation, view,
        },
        reference::{ResourceKey, references},
        status,
    },
    record::{Record, RecordError},
    section::Section,
};

/// The base of every exported `fullUrl`. The `.invalid` top-level domain (RFC 2606) can never
/// resolve: it names the resource within the bundle and points at no server.
pub const FULL_URL_BASE: &str = "https://phr.invalid/fhir/";

/// The code system of the IPS "absent or unknown" codes.
pub const IPS_ABSENT_UNKNOWN_SYSTEM: &str =
    "http://hl7.org/fhir/uv/ips/CodeSystem/absent-unknown-uv-ips";

/// How many laboratory results (the latest of each test) an IPS carries.
const IPS_RESULTS_MAX: usize = 50;

/// A bundle and the resources in it whose versions conflict (exported as Automerge's
/// deterministic pick; the caller should tell the user).
#[derive(Debug)]
pub struct Exported {
    /// The FHIR Bundle.
    pub bundle: Value,
    /// Keys exported while in conflict.
    pub conflicted: Vec<ResourceKey>,
    /// How many resources the bundle holds.
    pub count: usize,
}

fn entry(key: &ResourceKey, resource: Value) -> Value {
    json!({"fullUrl": format!("{FULL_URL_BASE}{key}"), "resource": resource})
}

/// The record's Patient as a reference (`Patient/id`): the same on every device and provider
/// (`identity::record_patient`), not a device's own settings.
fn record_subject(record: &Record) -> Result<Option<String>, RecordError> {
    Ok(crate::identity::record_patient(record)?.map(|(key, _)| key.to_string()))
}

/// Every resource of `sections`, the subject Patient first, then by section and key.
pub fn collection(
    record: &Record,
    sections: &[Section],
    now: Timestamp,
) -> Result<Exported, RecordError> {
    let subject = record_subject(record)?;
    let mut entries = Vec::new();
    let mut conflicted = Vec::new();
    for section in sections {
        for (key, resource, in_conflict) in record.resources(*section)? {
            if in_conflict {
                conflicted.push(key.clone());
            }
            let is_subject = subject.as_deref() == Some(key.to_string().as_str());
            let item = entry(&key, resource);
            if is_subject {
                entries.insert(0, item)
            } else {
                entries.push(item)
            }
        }
    }
    let count = entries.len();
    let bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": now.to_string()},
        "type": "collection",
        "timestamp": now.to_string(),
        "entry": entries,
    });
    Ok(Exported {
        bundle,
        conflicted,
        count,
    })
}

struct IpsSection {
    title: &'static str,
    loinc: &'static str,
    display: &'static str,
    /// The IPS "no information" code used when the section is empty and required.
    absent: Option<(&'static str, &'static str, &'static str)>,
    resources: Vec<(ResourceKey, Value)>,
    /// Whether entries of the kind were left out because their section is not exported (the
    /// patient's `sensitive` section): said in the narrative, and as the section's
    /// `emptyReason` `withheld` when nothing else is listed.
    withheld: bool,
}

/// The code system of `Composition.section.emptyReason`.
const LIST_EMPTY_REASON_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/list-empty-reason";

/// Types of resource that travel with an IPS when its entries point at them (the medicine, the
/// clinician, the organisation); references to anything else (an encounter, a claim) are
/// reduced to their display text.
const IPS_LINKED_TYPES: &[&str] = &[
    "Medication",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Substance",
    "Device",
];

/// An International Patient Summary of the resources in `sources` (normally summary and clinical).
pub fn ips(record: &Record, sources: &[Section], now: Timestamp) -> Result<Exported, RecordError> {
    let subject = record_subject(record)?;
    let subject_ref = subject.clone().map(|s| json!({"reference": s}));
    let from = |t: &str| -> Result<Vec<(ResourceKey, Value)>, RecordError> {
        let mut out = Vec::new();
        for section in sources {
            for resource in record.resources_of_type(*section, t)? {
                if let Some(key) = ResourceKey::of(&resource) {
                    out.push((key, resource));
                }
            }
        }
        Ok(out)
    };
    let keep = |items: Vec<(ResourceKey, Value)>, f: &dyn Fn(&Value) -> bool| {
        items.into_iter().filter(|(_, r)| f(r)).collect::<Vec<_>>()
    };
    // What the same rules would list from the sections not exported (the patient's sensitive
    // entries): their existence is said, never their content.
    let withheld_sections: Vec<Section> = Section::ALL
        .into_iter()
        .filter(|s| *s == Section::Sensitive && !sources.contains(s))
        .collect();
    let withheld = |t: &str, f: &dyn Fn(&Value) -> bool| -> Result<bool, RecordError> {
        for section in &withheld_sections {
            if record.resources_of_type(*section, t)?.iter().any(f) {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let problem = |r: &Value| view::<Condition>(r).is_some_and(|c| status::condition_is_active(&c));
    let allergy =
        |r: &Value| view::<AllergyIntolerance>(r).is_some_and(|a| status::allergy_is_current(&a));
    let statement = |r: &Value| {
        view::<MedicationStatement>(r).is_some_and(|m| status::statement_is_current(&m))
    };
    let request =
        |r: &Value| view::<MedicationRequest>(r).is_some_and(|m| status::request_is_current(&m));
    let given =
        |r: &Value| view::<Immunization>(r).is_some_and(|i| status::immunization_was_given(&i));
    let result = |r: &Value| {
        view::<Observation>(r).is_some_and(|o| {
            o.category.iter().any(|c| c.has_code("laboratory")) && status::observation_is_valid(&o)
        })
    };

    let problems = keep(from("Condition")?, &problem);
    let allergies = keep(from("AllergyIntolerance")?, &allergy);
    let mut medicines = keep(from("MedicationStatement")?, &statement);
    medicines.extend(keep(from("MedicationRequest")?, &request));
    let immunizations = keep(from("Immunization")?, &given);
    let results = latest_lab_results(from("Observation")?);

    let mut sections = vec![
        IpsSection {
            title: "Problems",
            loinc: "11450-4",
            display: "Problem list - Reported",
            absent: Some((
                "Condition",
                "no-problem-info",
                "No information about problems",
            )),
            resources: problems,
            withheld: withheld("Condition", &problem)?,
        },
        IpsSection {
            title: "Allergies and Intolerances",
            loinc: "48765-2",
            display: "Allergies and adverse reactions Document",
            absent: Some((
                "AllergyIntolerance",
                "no-allergy-info",
                "No information about allergies",
            )),
            resources: allergies,
            withheld: withheld("AllergyIntolerance", &allergy)?,
        },
        IpsSection {
            title: "Medication Summary",
            loinc: "10160-0",
            display: "History of Medication use Narrative",
            absent: Some((
                "MedicationStatement",
                "no-medication-info",
                "No information about medications",
            )),
            resources: medicines,
            withheld: withheld("MedicationStatement", &statement)?
                || withheld("MedicationRequest", &request)?,
        },
        IpsSection {
            title: "Immunizations",
            loinc: "11369-6",
            display: "History of Immunization Narrative",
            absent: None,
            resources: immunizations,
            withheld: withheld("Immunization", &given)?,
        },
        IpsSection {
            title: "Results",
            loinc: "30954-2",
            display: "Relevant diagnostic tests/laboratory data Narrative",
            absent: None,
            resources: results,
            withheld: withheld("Observation", &result)?,
        },
    ];
    for section in &mut sections {
        if let (true, Some((resource_type, code, display))) =
            (section.resources.is_empty(), section.absent)
        {
            let resource = no_information(resource_type, code, display, subject_ref.as_ref(), now);
            let key = ResourceKey::of(&resource).expect("built with a type and id");
            section.resources.push((key, resource));
        }
    }
    sections.retain(|s| !s.resources.is_empty() || s.withheld);

    let composition_id = uuid::Uuid::new_v4().to_string();
    let composition = json!({
        "resourceType": "Composition",
        "id": composition_id,
        "status": "final",
        "type": {"coding": [{"system": "http://loinc.org", "code": "60591-5", "display": "Patient summary Document"}]},
        "subject": subject_ref,
        "date": now.to_string(),
        "author": [subject_ref.clone().unwrap_or_else(|| json!({"display": "phr"}))],
        "title": "International Patient Summary",
        "section": sections.iter().map(composition_section).collect::<Vec<_>>(),
    });
    let mut seen = BTreeSet::new();
    let mut entries = vec![entry(
        &ResourceKey::new("Composition", composition_id),
        composition,
    )];
    let mut included: Vec<(ResourceKey, Value)> = Vec::new();
    if let Some(patient) = subject
        .as_deref()
        .and_then(|s| s.parse::<ResourceKey>().ok())
        && let Some(resource) = record.get(&patient)?
    {
        included.push((patient, resource));
    }
    included.extend(sections.into_iter().flat_map(|s| s.resources));
    // Resources the entries point at (a Medication, the prescriber) travel with the document,
    // and what those point at in turn, from the exported sections only.
    let mut keys: BTreeSet<ResourceKey> = included.iter().map(|(k, _)| k.clone()).collect();
    let mut next = 0;
    while next < included.len() {
        let pointed: Vec<ResourceKey> = references(&included[next].1)
            .into_iter()
            .filter_map(|r| r.parse::<ResourceKey>().ok())
            .filter(|k| IPS_LINKED_TYPES.contains(&k.resource_type.as_str()))
            .collect();
        next += 1;
        for key in pointed {
            if keys.contains(&key) {
                continue;
            }
            if let Some(target) = exported_resource(record, &key, sources)? {
                keys.insert(key.clone());
                included.push((key, target));
            }
        }
    }
    let mut conflicted = Vec::new();
    for (key, mut resource) in included {
        if seen.insert(key.clone()) {
            if record.conflicts_on(&key)? {
                conflicted.push(key.clone());
            }
            // A reference to what the document does not carry keeps only its display.
            drop_unresolved(&mut resource, &keys);
            entries.push(entry(&key, resource));
        }
    }
    let count = entries.len();
    let bundle_id = uuid::Uuid::new_v4().to_string();
    let bundle = json!({
        "resourceType": "Bundle",
        "id": bundle_id,
        "identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{bundle_id}")},
        "type": "document",
        "timestamp": now.to_string(),
        "entry": entries,
    });
    Ok(Exported {
        bundle,
        conflicted,
        count,
    })
}

/// The resource `key` names, if it is in one of the exported `sections`.
fn exported_resource(
    record: &Record,
    key: &ResourceKey,
    sections: &[Section],
) -> Result<Option<Value>, RecordError> {
    Ok(match record.current(key)? {
        Some(crate::record::Current::One(v)) if sections.contains(&v.section) => Some(v.resource),
        Some(crate::record::Current::Conflict(mut vs)) if sections.contains(&vs[0].section) => {
            Some(vs.remove(0).resource)
        }
        _ => None,
    })
}

/// Every `reference` in `value` to a resource not in `carried` is taken out of its Reference,
/// which keeps (or gets) a display, so that every reference left resolves within the document.
/// References inside the resource (`#id`) stay.
fn drop_unresolved(value: &mut Value, carried: &BTreeSet<ResourceKey>) {
    match value {
        Value::Object(map) => {
            let dangling = match map.get("reference") {
                Some(Value::String(r)) if !r.starts_with('#') => r
                    .parse::<ResourceKey>()
                    .map_or(true, |key| !carried.contains(&key))
                    .then(|| r.split('/').next().unwrap_or("resource").to_string()),
                _ => None,
            };
            if let Some(resource_type) = dangling {
                map.remove("reference");
                map.entry("display").or_insert_with(|| {
                    json!(format!("{resource_type} (not included in this summary)"))
                });
            }
            for (key, child) in map.iter_mut() {
                if key != "reference" {
                    drop_unresolved(child, carried);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| drop_unresolved(item, carried)),
        _ => {}
    }
}

fn latest_lab_results(observations: Vec<(ResourceKey, Value)>) -> Vec<(ResourceKey, Value)> {
    let mut labs: Vec<(String, String, ResourceKey, Value)> = observations
        .into_iter()
        .filter_map(|(key, resource)| {
            let o: Observation = view(&resource)?;
            let is_lab = o.category.iter().any(|c| c.has_code("laboratory"));
            let code = o.code.as_ref()?.display()?.to_string();
            let when = o.when().unwrap_or("").to_string();
            (is_lab && status::observation_is_valid(&o)).then_some((code, when, key, resource))
        })
        .collect();
    // Newest first, then keep the first of each test.
    labs.sort_by(|a, b| b.1.cmp(&a.1));
    let mut seen = BTreeSet::new();
    labs.into_iter()
        .filter(|(code, ..)| seen.insert(code.clone()))
        .take(IPS_RESULTS_MAX)
        .map(|(_, _, key, resource)| (key, resource))
        .collect()
}

fn no_information(
    resource_type: &str,
    code: &str,
    display: &str,
    subject: Option<&Value>,
    now: Timestamp,
) -> Value {
    let concept = json!({"coding": [{"system": IPS_ABSENT_UNKNOWN_SYSTEM, "code": code, "display": display}]});
    let mut resource = json!({"resourceType": resource_type, "id": code});
    match resource_type {
        "AllergyIntolerance" => {
            resource["code"] = concept;
            resource["patient"] = subject.cloned().unwrap_or(Value::Null);
        }
        "MedicationStatement" => {
            resource["status"] = json!("unknown");
            resource["medicationCodeableConcept"] = concept;
            resource["subject"] = subject.cloned().unwrap_or(Value::Null);
            resource["effectiveDateTime"] = json!(now.to_string());
        }
        _ => {
            resource["code"] = concept;
            resource["subject"] = subject.cloned().unwrap_or(Value::Null);
        }
    }
    if let Some(object) = resource.as_object_mut() {
        object.retain(|_, v| !v.is_null());
    }
    resource
}

fn composition_section(section: &IpsSection) -> Value {
    let items: Vec<String> = section
        .resources
        .iter()
        .map(|(_, r)| html_escape(&describe(r)))
        .collect();
    let list = match items.is_empty() {
        true => String::new(),
        false => format!(
            "<ul>{}</ul>",
            items
                .iter()
                .map(|i| format!("<li>{i}</li>"))
                .collect::<String>()
        ),
    };
    let withheld = match section.withheld {
        true => "<p>Some entries are withheld at the patient's request.</p>",
        false => "",
    };
    let div = format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{list}{withheld}</div>");
    let mut out = json!({
        "title": section.title,
        "code": {"coding": [{"system": "http://loinc.org", "code": section.loinc, "display": section.display}]},
        "text": {"status": "generated", "div": div},
    });
    if section.resources.is_empty() {
        // cmp-2: a section with no entries says why.
        out["emptyReason"] = json!({"coding": [{"system": LIST_EMPTY_REASON_SYSTEM, "code": "withheld", "display": "Information Withheld"}]});
    } else {
        out["entry"] = section
            .resources
            .iter()
            .map(|(key, _)| json!({"reference": key.to_string()}))
            .collect();
    }
    out
}

/// A one-line description of a resource for the Composition's narrative.
fn describe(resource: &Value) -> String {
    let concept = ["code", "medicationCodeableConcept", "vaccineCode"]
        .iter()
        .find_map(|field| view::<crate::fhir::model::CodeableConcept>(resource.get(field)?))
        .and_then(|c| c.display().map(str::to_string));
    concept.unwrap_or_else(|| {
        resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("entry")
            .to_string()
    })
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Author, RecordMeta, Stamp};
    use automerge::ActorId;

    fn record_with(resources: &[Value]) -> Record {
        let me = Author {
            id: "d".into(),
            name: "me".into(),
        };
        let stamp = Stamp {
            author: &me,
            time: Timestamp::from_second(1_700_000_000).unwrap(),
        };
        let meta = RecordMeta {
            id: "r".into(),
            subject: Some("Patient/p".into()),
            nhs_number: None,
        };
        let mut r = Record::create(meta, &ActorId::random());
        r.put(stamp, &json!({"resourceType": "Patient", "id": "p"}))
            .unwrap();
        for resource in resources {
            r.put(stamp, resource).unwrap();
        }
        r.commit(stamp, "test");
        r
    }

    /// An optional section whose only entries are withheld is there to say so (`emptyReason`
    /// `withheld`, cmp-2: no entries); a required one keeps its "no information" entry and
    /// says it in the narrative. Nothing of the withheld entry travels.
    #[test]
    fn withheld_sections_say_so_with_the_ips_empty_reason() {
        let restricted = json!([{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]);
        let record = record_with(&[
            json!({"resourceType": "Immunization", "id": "hpv", "status": "completed",
                "meta": {"security": restricted}, "vaccineCode": {"text": "HPV vaccine"}}),
            json!({"resourceType": "AllergyIntolerance", "id": "latex",
                "meta": {"security": restricted}, "code": {"text": "latex"}}),
        ]);
        assert_eq!(record.len(Section::Sensitive), 2);
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let ips = ips(&record, &[Section::Summary, Section::Clinical], now)
            .unwrap()
            .bundle;
        assert!(!ips.to_string().contains("HPV") && !ips.to_string().contains("latex"));
        let sections = ips["entry"][0]["resource"]["section"].as_array().unwrap();
        let by_code = |code: &str| {
            sections
                .iter()
                .find(|s| s["code"]["coding"][0]["code"] == code)
                .unwrap_or_else(|| panic!("no section {code}"))
        };
        let immunizations = by_code("11369-6");
        assert_eq!(
            immunizations["emptyReason"]["coding"][0]["code"],
            "withheld"
        );
        assert!(immunizations.get("entry").is_none());
        let allergies = by_code("48765-2");
        assert!(allergies.get("emptyReason").is_none());
        assert_eq!(
            allergies["entry"][0]["reference"],
            "AllergyIntolerance/no-allergy-info"
        );
        assert!(
            allergies["text"]["div"]
                .as_str()
                .unwrap()
                .contains("withheld at the patient's request")
        );
        // Results had nothing, withheld or not: no section.
        assert!(
            sections
                .iter()
                .all(|s| s["code"]["coding"][0]["code"] != "30954-2")
        );
    }

    /// On a device whose own settings name no subject (a second device, a provider), the IPS
    /// is still about the record's Patient (issue 14: it was `null`).
    #[test]
    fn the_ips_is_about_the_records_patient_on_every_device() {
        let mut record = record_with(&[]);
        record.set_meta(RecordMeta {
            id: "r".into(),
            subject: None,
            nhs_number: None,
        });
        let ips = ips(
            &record,
            &[Section::Summary],
            Timestamp::from_second(1_700_000_000).unwrap(),
        )
        .unwrap()
        .bundle;
        assert_eq!(
            ips["entry"][0]["resource"]["subject"]["reference"],
            "Patient/p"
        );
        let patients = ips["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "Patient")
            .count();
        assert_eq!(patients, 1);
    }

    fn section_codes(bundle: &Value) -> Vec<String> {
        bundle["entry"][0]["resource"]["section"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["code"]["coding"][0]["code"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn empty_ips_has_the_three_required_sections_with_no_information_entries() {
        let r = record_with(&[]);
        let out = ips(
            &r,
            &[Section::Summary, Section::Clinical],
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(out.bundle["type"], "document");
        assert_eq!(
            out.bundle["entry"][0]["resource"]["resourceType"],
            "Composition"
        );
        assert_eq!(
            section_codes(&out.bundle),
            ["11450-4", "48765-2", "10160-0"]
        );
        let codes: Vec<_> = out.bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                let r = &e["resource"];
                r.get("code")
                    .or(r.get("medicationCodeableConcept"))
                    .map(|c| c["coding"][0]["code"].clone())
            })
            .collect();
        assert_eq!(
            codes,
            [
                json!("no-problem-info"),
                json!("no-allergy-info"),
                json!("no-medication-info")
            ]
        );
    }

    #[test]
    fn ips_lists_active_problems_only_and_follows_references() {
        let r = record_with(&[
            json!({"resourceType": "Condition", "id": "a", "code": {"text": "asthma"}, "subject": {"reference": "Patient/p"}}),
            json!({"resourceType": "Condition", "id": "b", "code": {"text": "old"},
                "clinicalStatus": {"coding": [{"code": "resolved"}]}}),
            json!({"resourceType": "Medication", "id": "m", "code": {"text": "salbutamol"}}),
            json!({"resourceType": "MedicationStatement", "id": "s", "status": "active",
                "medicationReference": {"reference": "Medication/m"}}),
        ]);
        let out = ips(&r, &[Section::Summary], Timestamp::UNIX_EPOCH).unwrap();
        let problems = &out.bundle["entry"][0]["resource"]["section"][0];
        assert_eq!(problems["entry"], json!([{"reference": "Condition/a"}]));
        let urls: Vec<_> = out.bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["fullUrl"].as_str().unwrap().to_string())
            .collect();
        assert!(
            urls.contains(&format!("{FULL_URL_BASE}Medication/m")),
            "{urls:?}"
        );
        assert!(!urls.contains(&format!("{FULL_URL_BASE}Condition/b")));
        assert!(
            urls[1].ends_with("Patient/p"),
            "the patient comes right after the composition"
        );
    }

    #[test]
    fn collection_puts_the_subject_first_and_keeps_resources_as_stored() {
        let condition = json!({"resourceType": "Condition", "id": "a", "code": {"text": "asthma"}, "note": [{"text": "kept"}]});
        let r = record_with(std::slice::from_ref(&condition));
        let out = collection(&r, &Section::ALL, Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(
            out.bundle["entry"][0]["resource"]["resourceType"],
            "Patient"
        );
        assert_eq!(out.bundle["entry"][1]["resource"], condition);
        assert_eq!(out.count, 2);
    }
}
