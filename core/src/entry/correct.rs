//! Corrections of a stored resource: the next version, built from the current one.
//!
//! A correction never edits a version in place: the caller writes what [`correct`] returns as a
//! new version (`Record::put`), which supersedes the current one, and `phr history` keeps both.
//! What each correction writes, in FHIR R4 terms:
//!
//! | correction | resource | what changes |
//! |---|---|---|
//! | [`Correction::Amend`] | any but `AuditEvent` | the elements named, set or removed; `resourceType` and `id` stay |
//! | [`Correction::Stop`] | `MedicationStatement` | `status` `stopped`, `effectivePeriod.end` the date (an `effectiveDateTime` becomes the period's start), `statusReason` the reason |
//! | | `MedicationRequest` | `status` `stopped`, `statusReason` the reason, a `note` with the date |
//! | [`Correction::Resolved`] | `Condition` | `clinicalStatus` `resolved`, `abatementDateTime` the date |
//! | | `AllergyIntolerance` | `clinicalStatus` `resolved`, a `note` with the date |
//! | [`Correction::EnteredInError`] | `Condition`, `AllergyIntolerance` | `verificationStatus` `entered-in-error`, and no `clinicalStatus` (invariants con-5, ait-2) |
//! | | types whose `status` may be `entered-in-error` | `status` `entered-in-error` |
//!
//! A reason is kept as a `note` where the type has one. The module does no I/O.

use jiff::civil::Date;
use serde_json::{Map, Value, json};

use super::{NOTE_BYTES_MAX, TEXT_BYTES_MAX};

const CONDITION_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
const CONDITION_VERIFICATION: &str = "http://terminology.hl7.org/CodeSystem/condition-ver-status";
const ALLERGY_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical";
const ALLERGY_VERIFICATION: &str =
    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification";

/// Resource types whose `status` value set holds `entered-in-error` in FHIR R4.
const STATUS_ENTERED_IN_ERROR: &[&str] = &[
    "Appointment",
    "CarePlan",
    "CareTeam",
    "Claim",
    "Composition",
    "Coverage",
    "Device",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "ExplanationOfBenefit",
    "ImagingStudy",
    "Immunization",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "MedicationStatement",
    "Observation",
    "Procedure",
    "ServiceRequest",
];

/// Resource types with a `note` (a list of Annotations) in FHIR R4, where a reason is kept.
const HAS_NOTE: &[&str] = &[
    "AllergyIntolerance",
    "CarePlan",
    "CareTeam",
    "Condition",
    "Device",
    "Immunization",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "MedicationStatement",
    "Observation",
    "Procedure",
    "ServiceRequest",
];

/// One correction of a resource.
#[derive(Clone, Debug, PartialEq)]
pub enum Correction {
    /// Elements set (a dotted path, e.g. `code.text` or `note.0.text`, and its new value) and
    /// removed (paths).
    Amend {
        /// Paths and the values they take.
        set: Vec<(String, Value)>,
        /// Paths removed.
        remove: Vec<String>,
    },
    /// A medicine no longer taken, from `date`.
    Stop {
        /// The day it was stopped.
        date: Date,
        /// Why, as the patient or clinician says it.
        reason: Option<String>,
    },
    /// A condition (or an allergy) that has gone, from `date`.
    Resolved {
        /// The day it resolved.
        date: Date,
    },
    /// Recorded by mistake: it never applied to this patient.
    EnteredInError {
        /// Why, as the patient or clinician says it.
        reason: Option<String>,
    },
}

impl Correction {
    /// The correction's name in history messages and on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Correction::Amend { .. } => "amend",
            Correction::Stop { .. } => "stop",
            Correction::Resolved { .. } => "recovered",
            Correction::EnteredInError { .. } => "entered-in-error",
        }
    }
}

/// Why a correction cannot be made. Each message says what to do instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CorrectionError {
    /// The resource is not a kind this correction applies to.
    #[error("{key} is {article} {resource_type}: {what}")]
    WrongKind {
        /// The resource, `Type/id`.
        key: String,
        /// Its type.
        resource_type: String,
        /// "a" or "an".
        article: &'static str,
        /// What applies instead.
        what: &'static str,
    },
    /// The resource already says what the correction would write.
    #[error("{key} is already {state}: nothing to change")]
    Already {
        /// The resource, `Type/id`.
        key: String,
        /// What it already is, e.g. "stopped".
        state: &'static str,
    },
    /// An amendment names no element, or one that may not change.
    #[error("cannot amend '{path}': {why}")]
    Path {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An amendment changes nothing.
    #[error("nothing to amend: give --set PATH=VALUE or --remove PATH")]
    Nothing,
    /// A reason or value is too long.
    #[error("the {what} is {bytes} bytes, more than the {max} allowed: shorten it")]
    TooLong {
        /// Which text.
        what: &'static str,
        /// Its length.
        bytes: usize,
        /// The bound.
        max: usize,
    },
}

/// The next version of `resource` under `correction`.
pub fn correct(resource: &Value, correction: &Correction) -> Result<Value, CorrectionError> {
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource")
        .to_string();
    let key = format!(
        "{resource_type}/{}",
        resource.get("id").and_then(Value::as_str).unwrap_or("?")
    );
    let wrong = |what: &'static str| CorrectionError::WrongKind {
        key: key.clone(),
        article: if resource_type.starts_with(['A', 'E', 'I', 'O', 'U']) {
            "an"
        } else {
            "a"
        },
        resource_type: resource_type.clone(),
        what,
    };
    if resource_type == "AuditEvent" {
        return Err(wrong("the record's audit trail is never corrected"));
    }
    let mut next = resource.clone();
    if !next.is_object() {
        return Err(wrong("not a JSON object"));
    }
    if let Correction::Amend { set, remove } = correction {
        amend(&mut next, set, remove)?;
        return Ok(next);
    }
    let Some(object) = next.as_object_mut() else {
        return Err(wrong("not a JSON object"));
    };
    if entered_in_error(object, &resource_type) {
        return Err(CorrectionError::Already {
            key,
            state: "marked entered in error",
        });
    }
    match correction {
        Correction::Amend { .. } => unreachable!("amended above"),
        Correction::Stop { date, reason } => {
            let reason = bounded("reason", reason.as_deref())?;
            let status = object.get("status").and_then(Value::as_str);
            match resource_type.as_str() {
                "MedicationStatement" | "MedicationRequest"
                    if matches!(status, Some("stopped" | "completed" | "cancelled")) =>
                {
                    return Err(CorrectionError::Already {
                        key,
                        state: "stopped or completed",
                    });
                }
                "MedicationStatement" => {
                    object.insert("status".into(), json!("stopped"));
                    let mut period = match object.remove("effectivePeriod") {
                        Some(Value::Object(period)) => period,
                        _ => Map::new(),
                    };
                    if let Some(start) = object.remove("effectiveDateTime") {
                        period.entry("start").or_insert(start);
                    }
                    period.insert("end".into(), json!(date.to_string()));
                    object.insert("effectivePeriod".into(), Value::Object(period));
                    if let Some(reason) = reason {
                        object.insert("statusReason".into(), json!([{ "text": reason }]));
                    }
                }
                "MedicationRequest" => {
                    object.insert("status".into(), json!("stopped"));
                    if let Some(reason) = reason {
                        object.insert("statusReason".into(), json!({ "text": reason }));
                    }
                    add_note(object, format!("Stopped on {date}."));
                }
                _ => {
                    return Err(wrong(
                        "only a medicine is stopped; a condition is marked with `phr recovered`",
                    ));
                }
            }
        }
        Correction::Resolved { date } => {
            let system = match resource_type.as_str() {
                "Condition" => CONDITION_CLINICAL,
                "AllergyIntolerance" => ALLERGY_CLINICAL,
                _ => {
                    return Err(wrong(
                        "only a condition or an allergy resolves; a medicine is ended with `phr stop`",
                    ));
                }
            };
            if status_code(object, "clinicalStatus") == Some("resolved") {
                return Err(CorrectionError::Already {
                    key,
                    state: "resolved",
                });
            }
            object.insert(
                "clinicalStatus".into(),
                coded(system, "resolved", "Resolved"),
            );
            if resource_type == "Condition" {
                // con-4: an abatement goes with a resolved status; one date says when.
                for abatement in [
                    "abatementDateTime",
                    "abatementAge",
                    "abatementPeriod",
                    "abatementRange",
                    "abatementString",
                ] {
                    object.remove(abatement);
                }
                object.insert("abatementDateTime".into(), json!(date.to_string()));
            } else {
                add_note(object, format!("Resolved on {date}."));
            }
        }
        Correction::EnteredInError { reason } => {
            let reason = bounded("reason", reason.as_deref())?;
            match resource_type.as_str() {
                "Condition" | "AllergyIntolerance" => {
                    let (system, display) = if resource_type == "Condition" {
                        (CONDITION_VERIFICATION, "Entered in Error")
                    } else {
                        (ALLERGY_VERIFICATION, "Entered in Error")
                    };
                    object.insert(
                        "verificationStatus".into(),
                        coded(system, "entered-in-error", display),
                    );
                    // con-5, ait-2: no clinical status on an entry made in error.
                    object.remove("clinicalStatus");
                }
                "Goal" => {
                    object.insert("lifecycleStatus".into(), json!("entered-in-error"));
                }
                t if STATUS_ENTERED_IN_ERROR.contains(&t) => {
                    object.insert("status".into(), json!("entered-in-error"));
                }
                _ => {
                    return Err(wrong(
                        "FHIR has no entered-in-error status for it; correct it with `phr amend`",
                    ));
                }
            }
            if let Some(reason) = reason
                && HAS_NOTE.contains(&resource_type.as_str())
            {
                add_note(object, format!("Entered in error: {reason}"));
            }
        }
    }
    Ok(next)
}

/// Whether `object` is already marked as made in error.
fn entered_in_error(object: &Map<String, Value>, resource_type: &str) -> bool {
    match resource_type {
        "Condition" | "AllergyIntolerance" => {
            status_code(object, "verificationStatus") == Some("entered-in-error")
        }
        "Goal" => object.get("lifecycleStatus").and_then(Value::as_str) == Some("entered-in-error"),
        _ => object.get("status").and_then(Value::as_str) == Some("entered-in-error"),
    }
}

/// The first code of a CodeableConcept element (or the element itself, when a file has it as
/// a bare code).
fn status_code<'a>(object: &'a Map<String, Value>, element: &str) -> Option<&'a str> {
    let value = object.get(element)?;
    value.as_str().or_else(|| {
        value
            .get("coding")?
            .as_array()?
            .iter()
            .find_map(|c| c.get("code")?.as_str())
    })
}

fn coded(system: &str, code: &str, display: &str) -> Value {
    json!({"coding": [{"system": system, "code": code, "display": display}]})
}

fn add_note(object: &mut Map<String, Value>, text: String) {
    let notes = object.entry("note").or_insert_with(|| json!([]));
    if !notes.is_array() {
        *notes = json!([]);
    }
    if let Some(notes) = notes.as_array_mut() {
        notes.push(json!({ "text": text }));
    }
}

fn bounded<'a>(
    what: &'static str,
    text: Option<&'a str>,
) -> Result<Option<&'a str>, CorrectionError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.len() > TEXT_BYTES_MAX {
        return Err(CorrectionError::TooLong {
            what,
            bytes: text.len(),
            max: TEXT_BYTES_MAX,
        });
    }
    Ok(Some(text))
}

/// Sets and removes elements by dotted paths (`code.text`, `note.0.text`): a missing object on
/// the way is made; an index may be the next one of a list (appending).
fn amend(
    resource: &mut Value,
    set: &[(String, Value)],
    remove: &[String],
) -> Result<(), CorrectionError> {
    if set.is_empty() && remove.is_empty() {
        return Err(CorrectionError::Nothing);
    }
    for (path, value) in set {
        let bytes = serde_json::to_string(value).map_or(0, |s| s.len());
        if bytes > NOTE_BYTES_MAX {
            return Err(CorrectionError::TooLong {
                what: "value",
                bytes,
                max: NOTE_BYTES_MAX,
            });
        }
        let (parent, last) = walk(resource, path, true)?;
        match parent {
            Value::Object(map) => {
                map.insert(last.to_string(), value.clone());
            }
            Value::Array(list) => {
                let index = index_of(path, last)?;
                match index.cmp(&list.len()) {
                    std::cmp::Ordering::Less => list[index] = value.clone(),
                    std::cmp::Ordering::Equal => list.push(value.clone()),
                    std::cmp::Ordering::Greater => {
                        return Err(CorrectionError::Path {
                            path: path.clone(),
                            why: "the index is past the end of the list",
                        });
                    }
                }
            }
            _ => {
                return Err(CorrectionError::Path {
                    path: path.clone(),
                    why: "it goes through a value that is not an object or a list",
                });
            }
        }
    }
    for path in remove {
        let (parent, last) = walk(resource, path, false)?;
        let removed = match parent {
            Value::Object(map) => map.remove(last).is_some(),
            Value::Array(list) => {
                let index = index_of(path, last)?;
                (index < list.len()).then(|| list.remove(index)).is_some()
            }
            _ => false,
        };
        if !removed {
            return Err(CorrectionError::Path {
                path: path.clone(),
                why: "there is no such element",
            });
        }
    }
    Ok(())
}

fn index_of(path: &str, part: &str) -> Result<usize, CorrectionError> {
    part.parse().map_err(|_| CorrectionError::Path {
        path: path.to_string(),
        why: "a list's element is named by its number, from 0",
    })
}

/// The value holding the path's last part, and that part. With `make`, missing objects on the
/// way are made.
fn walk<'a, 'p>(
    resource: &'a mut Value,
    path: &'p str,
    make: bool,
) -> Result<(&'a mut Value, &'p str), CorrectionError> {
    let bad = |why| CorrectionError::Path {
        path: path.to_string(),
        why,
    };
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad(
            "a path is element names and list numbers joined by dots, e.g. code.text or note.0.text",
        ));
    }
    if matches!(parts[0], "resourceType" | "id") {
        return Err(bad(
            "a resource keeps its type and id; add a new entry instead",
        ));
    }
    let (last, walked) = parts.split_last().expect("a path has a part");
    let mut current = resource;
    for (i, part) in walked.iter().enumerate() {
        // A missing element is made as a list when the next part numbers an element.
        let next_is_index = parts[i + 1].parse::<usize>().is_ok();
        current = match current {
            Value::Object(map) => {
                if make {
                    map.entry(part.to_string())
                        .or_insert_with(|| match next_is_index {
                            true => json!([]),
                            false => json!({}),
                        })
                } else {
                    map.get_mut(*part)
                        .ok_or_else(|| bad("there is no such element"))?
                }
            }
            Value::Array(list) => {
                let index = index_of(path, part)?;
                list.get_mut(index)
                    .ok_or_else(|| bad("the index is past the end of the list"))?
            }
            _ => {
                return Err(bad(
                    "it goes through a value that is not an object or a list",
                ));
            }
        };
    }
    Ok((current, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> Date {
        text.parse().unwrap()
    }

    #[test]
    fn a_stopped_statement_keeps_when_it_began_and_says_when_and_why_it_ended() {
        let taken = json!({"resourceType": "MedicationStatement", "id": "m1", "status": "active",
            "medicationCodeableConcept": {"text": "Naproxen 250mg tablets"},
            "effectiveDateTime": "2024-03-01"});
        let stop = Correction::Stop {
            date: day("2026-12-01"),
            reason: Some("stomach pain".into()),
        };
        let stopped = correct(&taken, &stop).unwrap();
        assert_eq!(stopped["status"], "stopped");
        assert_eq!(
            stopped["effectivePeriod"],
            json!({"start": "2024-03-01", "end": "2026-12-01"})
        );
        assert!(stopped.get("effectiveDateTime").is_none());
        assert_eq!(stopped["statusReason"][0]["text"], "stomach pain");
        assert_eq!(
            stopped["medicationCodeableConcept"],
            taken["medicationCodeableConcept"]
        );
        assert!(matches!(
            correct(&stopped, &stop),
            Err(CorrectionError::Already { .. })
        ));

        let prescribed = json!({"resourceType": "MedicationRequest", "id": "r1",
            "status": "active", "intent": "order"});
        let stopped = correct(&prescribed, &stop).unwrap();
        assert_eq!(stopped["status"], "stopped");
        assert_eq!(stopped["statusReason"]["text"], "stomach pain");
        assert_eq!(stopped["note"][0]["text"], "Stopped on 2026-12-01.");
    }

    #[test]
    fn only_medicines_stop_and_only_conditions_and_allergies_resolve() {
        let condition = json!({"resourceType": "Condition", "id": "c1",
            "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]},
            "abatementString": "later"});
        let stop = Correction::Stop {
            date: day("2026-12-01"),
            reason: None,
        };
        let error = correct(&condition, &stop).unwrap_err();
        assert!(error.to_string().contains("phr recovered"), "{error}");

        let resolved = correct(
            &condition,
            &Correction::Resolved {
                date: day("2026-11-30"),
            },
        )
        .unwrap();
        assert_eq!(resolved["clinicalStatus"]["coding"][0]["code"], "resolved");
        assert_eq!(resolved["abatementDateTime"], "2026-11-30");
        assert!(resolved.get("abatementString").is_none());

        let allergy = json!({"resourceType": "AllergyIntolerance", "id": "a1",
            "clinicalStatus": {"coding": [{"system": ALLERGY_CLINICAL, "code": "active"}]}});
        let resolved = correct(
            &allergy,
            &Correction::Resolved {
                date: day("2026-11-30"),
            },
        )
        .unwrap();
        assert_eq!(resolved["clinicalStatus"]["coding"][0]["code"], "resolved");
        assert_eq!(resolved["note"][0]["text"], "Resolved on 2026-11-30.");

        let medicine =
            json!({"resourceType": "MedicationStatement", "id": "m1", "status": "active"});
        let error = correct(
            &medicine,
            &Correction::Resolved {
                date: day("2026-11-30"),
            },
        )
        .unwrap_err();
        assert!(error.to_string().contains("phr stop"), "{error}");
    }

    #[test]
    fn entered_in_error_follows_each_types_rules_and_is_final() {
        let wrong = Correction::EnteredInError {
            reason: Some("another patient's".into()),
        };
        let condition = json!({"resourceType": "Condition", "id": "c1",
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "verificationStatus": {"coding": [{"code": "confirmed"}]}});
        let marked = correct(&condition, &wrong).unwrap();
        assert_eq!(
            marked["verificationStatus"]["coding"][0],
            json!({"system": CONDITION_VERIFICATION, "code": "entered-in-error", "display": "Entered in Error"})
        );
        // con-5: no clinical status on an entry made in error.
        assert!(marked.get("clinicalStatus").is_none());
        assert_eq!(
            marked["note"][0]["text"],
            "Entered in error: another patient's"
        );
        assert!(matches!(
            correct(&marked, &wrong),
            Err(CorrectionError::Already { .. })
        ));
        assert!(matches!(
            correct(
                &marked,
                &Correction::Resolved {
                    date: day("2026-01-01")
                }
            ),
            Err(CorrectionError::Already { .. })
        ));

        let reading = json!({"resourceType": "Observation", "id": "o1", "status": "final"});
        assert_eq!(
            correct(&reading, &wrong).unwrap()["status"],
            "entered-in-error"
        );

        let patient = json!({"resourceType": "Patient", "id": "p1"});
        let error = correct(&patient, &wrong).unwrap_err();
        assert!(error.to_string().contains("phr amend"), "{error}");
        let audit = json!({"resourceType": "AuditEvent", "id": "e1"});
        assert!(correct(&audit, &wrong).is_err());
    }

    #[test]
    fn an_amendment_sets_appends_and_removes_by_path_but_keeps_type_and_id() {
        let allergy = json!({"resourceType": "AllergyIntolerance", "id": "a1",
            "code": {"text": "penicilin"}, "criticality": "low"});
        let amend = |set: Vec<(&str, Value)>, remove: Vec<&str>| Correction::Amend {
            set: set.into_iter().map(|(p, v)| (p.to_string(), v)).collect(),
            remove: remove.into_iter().map(String::from).collect(),
        };
        let fixed = correct(
            &allergy,
            &amend(
                vec![
                    ("code.text", json!("penicillin")),
                    ("note.0", json!({"text": "spelling"})),
                    ("reaction", json!([{"manifestation": [{"text": "rash"}]}])),
                ],
                vec!["criticality"],
            ),
        )
        .unwrap();
        assert_eq!(fixed["code"]["text"], "penicillin");
        assert_eq!(fixed["note"], json!([{"text": "spelling"}]));
        assert_eq!(fixed["reaction"][0]["manifestation"][0]["text"], "rash");
        assert!(fixed.get("criticality").is_none());

        let appended = correct(
            &fixed,
            &amend(
                vec![("reaction.1", json!({"description": "hives"}))],
                vec![],
            ),
        )
        .unwrap();
        assert_eq!(appended["reaction"][1]["description"], "hives");

        for (set, remove) in [
            (vec![("id", json!("other"))], vec![]),
            (vec![("resourceType", json!("Patient"))], vec![]),
            (vec![("code..text", json!("x"))], vec![]),
            (vec![("reaction.5", json!({}))], vec![]),
            (vec![("code.text.x", json!("x"))], vec![]),
            (vec![], vec!["severity"]),
        ] {
            let result = correct(&fixed, &amend(set.clone(), remove.clone()));
            assert!(
                matches!(result, Err(CorrectionError::Path { .. })),
                "{set:?} {remove:?}: {result:?}"
            );
        }
        assert_eq!(
            correct(&fixed, &amend(vec![], vec![])),
            Err(CorrectionError::Nothing)
        );
    }
}
