//! What FHIR R4 JSON allows, checked on import before anything is stored.
//!
//! phr keeps resources as written (the round trip is lossless), so it cannot fix what a file
//! gets wrong; it refuses it instead, naming the entry and the element. Checked:
//!
//! - **No empty or null values** (FHIR JSON §2.6.2): `null` as an element, `""`, `[]` and `{}`.
//!   A `null` inside a list is allowed: FHIR uses it to line a primitive list up with its
//!   `_element` extensions.
//! - **Dates and times**: every element whose name says it holds one (`birthDate`,
//!   `effectiveDateTime`, `date`, `start`, `issued`, ...) must be a FHIR `date`, `dateTime` or
//!   `instant`: `YYYY`, `YYYY-MM`, `YYYY-MM-DD` or a full time with a zone, a real calendar day.
//! - **Numbers where FHIR has numbers**: a Quantity's `value`, `valueDecimal`, `valueInteger`
//!   (a whole number), `valueBoolean` (true or false).
//! - **References inside the resource** (`#id`) name one of its `contained` resources.
//! - **Duplicate keys** in one JSON object ([`check_unique_keys`], on the raw bytes).
//! - **Dates in the future** where a fact is recorded ([`future_date`], given today's date by
//!   the caller: the core reads no clock).
//! - **The shape of every element phr types** ([`check_typed`]): the elements of the typed views
//!   in [`crate::fhir::model`] (what the summary, the lists and the IPS read) must have the
//!   cardinality and type R4 gives them: one value or a list, an object or a string. A list
//!   where R4 allows one `code` would otherwise read as no code at all.
//! - **Codes from required value sets** ([`check_codes`]): the statuses, intents and the like
//!   that decide what a view shows (a current medicine, a confirmed allergy) must be one of the
//!   codes R4 binds them to; a `Coding` from another system is left alone.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// An element FHIR does not allow: where (a JSON path from the resource) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// e.g. `effectiveDateTime` or `component[0].valueQuantity.value`.
    pub path: String,
    /// What is wrong, with what FHIR expects.
    pub reason: String,
}

/// Elements holding a FHIR `date`, `dateTime` or `instant`, beyond those named `...DateTime`,
/// `...Date` and `...Instant`.
const TIME_ELEMENTS: &[&str] = &[
    "date",
    "start",
    "end",
    "issued",
    "authoredOn",
    "lastUpdated",
    "recorded",
    "created",
    "timestamp",
    "occurrenceDateTime",
];

/// Elements whose value is a fact's time that cannot be later than today.
const PAST_ELEMENTS: &[&str] = &[
    "birthDate",
    "deceasedDateTime",
    "onsetDateTime",
    "abatementDateTime",
    "recordedDate",
    "assertedDate",
    "effectiveDateTime",
    "issued",
    "performedDateTime",
];

/// Elements whose parent holds a Quantity (its `value` is a decimal).
fn is_quantity(name: &str) -> bool {
    name.ends_with("Quantity")
        || matches!(
            name,
            "low" | "high" | "numerator" | "denominator" | "quantity" | "valueMoney" | "net"
        )
}

/// Checks one resource as the module documentation says (all but duplicate keys and future
/// dates).
pub fn check(resource: &Value) -> Result<(), Invalid> {
    let contained: Vec<&str> = resource
        .get("contained")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("id").and_then(Value::as_str))
        .collect();
    walk(resource, "", "", &contained)
}

fn walk(value: &Value, path: &str, name: &str, contained: &[&str]) -> Result<(), Invalid> {
    let invalid = |reason: String| Invalid {
        path: path.to_string(),
        reason,
    };
    match value {
        Value::Null if !path.ends_with(']') => {
            return Err(invalid(
                "null is not a FHIR value; leave the element out".into(),
            ));
        }
        Value::String(s) if s.is_empty() => {
            return Err(invalid(
                "an empty string is not a FHIR value; leave the element out".into(),
            ));
        }
        Value::Array(items) if items.is_empty() => {
            return Err(invalid(
                "an empty list is not a FHIR value; leave the element out".into(),
            ));
        }
        Value::Object(map) if map.is_empty() => {
            return Err(invalid(
                "an empty object is not a FHIR value; leave the element out".into(),
            ));
        }
        _ => {}
    }
    // Primitives, by the element's name.
    if is_time_element(name) && !matches!(value, Value::Null) {
        match value.as_str() {
            Some(text) if is_fhir_time(text, name == "birthDate") => {}
            Some(text) => {
                return Err(invalid(format!(
                    "'{text}' is not a FHIR {}: expected YYYY, YYYY-MM, YYYY-MM-DD{}",
                    if name == "birthDate" {
                        "date"
                    } else {
                        "date or dateTime"
                    },
                    if name == "birthDate" {
                        ""
                    } else {
                        " or YYYY-MM-DDThh:mm:ss with a zone (Z or +hh:mm)"
                    }
                )));
            }
            None => return Err(invalid(format!("expected a date as text, found {value}"))),
        }
    }
    match name {
        "valueDecimal" if !value.is_number() => {
            return Err(invalid(format!("expected a number, found {value}")));
        }
        "valueInteger" | "valueUnsignedInt" | "valuePositiveInt"
            if !(value.is_i64() || value.is_u64()) =>
        {
            return Err(invalid(format!("expected a whole number, found {value}")));
        }
        "valueBoolean" if !value.is_boolean() => {
            return Err(invalid(format!("expected true or false, found {value}")));
        }
        "reference" => {
            if let Some(local) = value.as_str().and_then(|r| r.strip_prefix('#'))
                && !local.is_empty()
                && !contained.contains(&local)
            {
                return Err(invalid(format!(
                    "'#{local}' names no resource in this one's 'contained'"
                )));
            }
        }
        _ => {}
    }
    match value {
        Value::Object(map) => {
            let quantity = is_quantity(name);
            for (key, child) in map {
                let child_path = match path {
                    "" => key.clone(),
                    _ => format!("{path}.{key}"),
                };
                if quantity && key == "value" && !child.is_number() {
                    return Err(Invalid {
                        path: child_path,
                        reason: format!("a quantity's value is a number, found {child}"),
                    });
                }
                // A contained resource's own `#` references are its container's business.
                walk(child, &child_path, key, contained)?;
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{index}]"), name, contained)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn is_time_element(name: &str) -> bool {
    (name.ends_with("DateTime") || name.ends_with("Date") || name.ends_with("Instant"))
        && !name.starts_with('_')
        || TIME_ELEMENTS.contains(&name)
}

/// Whether `text` is a FHIR `date` (with `date_only`), or a `date`, `dateTime` or `instant`.
fn is_fhir_time(text: &str, date_only: bool) -> bool {
    let (date, time) = match text.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let number = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let valid_date = match parts.as_slice() {
        [y] => number(y, 4).is_some(),
        [y, m] => number(y, 4).is_some() && number(m, 2).is_some_and(|m| (1..=12).contains(&m)),
        [y, m, d] => match (number(y, 4), number(m, 2), number(d, 2)) {
            (Some(y), Some(m), Some(d)) => {
                jiff::civil::Date::new(y as i16, m as i8, d as i8).is_ok()
            }
            _ => false,
        },
        _ => false,
    };
    if !valid_date {
        return false;
    }
    match time {
        None => true,
        Some(_) if date_only || parts.len() != 3 => false,
        // A full time with a zone: what jiff parses as a timestamp (leap seconds aside).
        Some(_) => text.parse::<jiff::Timestamp>().is_ok(),
    }
}

/// The first element of `resource` that records when something happened (a birth, an onset,
/// a recorded date, an effective time, an issue) whose date is after `today` (UTC; a day of
/// grace for the time zones ahead of it), with its path: such a thing cannot be in the future.
pub fn future_date(resource: &Value, today: jiff::civil::Date) -> Option<Invalid> {
    let map = resource.as_object()?;
    let latest = today.tomorrow().unwrap_or(jiff::civil::Date::MAX);
    for name in PAST_ELEMENTS {
        let Some(text) = map.get(*name).and_then(Value::as_str) else {
            continue;
        };
        let day = text
            .get(..10)
            .and_then(|d| d.parse::<jiff::civil::Date>().ok());
        if day.is_some_and(|d| d > latest) {
            return Some(Invalid {
                path: (*name).to_string(),
                reason: format!("'{text}' is in the future (today is {today})"),
            });
        }
    }
    None
}

/// Refuses JSON with a key twice in one object (serde_json would keep the last one silently,
/// and which one the writer meant is unknowable). Returns serde_json's error, with its line and
/// column.
pub fn check_unique_keys(bytes: &[u8]) -> Result<(), serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    Unique::deserialize(&mut deserializer)?;
    deserializer.end()
}

/// Any JSON value, checked for duplicate keys and otherwise thrown away.
struct Unique;

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!(
                    "the key \"{key}\" is in one object twice, so which value is meant is unknowable"
                )));
            }
            map.next_value::<Unique>()?;
        }
        Ok(Unique)
    }
}

/// Checks the elements phr reads into its typed views (see the module documentation): each
/// must have the shape R4 gives it. Resource types phr does not type pass.
pub fn check_typed(resource: &Value) -> Result<(), Invalid> {
    use crate::fhir::model::*;
    match resource.get("resourceType").and_then(Value::as_str) {
        Some("Patient") => shape::<Patient>(resource),
        Some("AllergyIntolerance") => shape::<AllergyIntolerance>(resource),
        Some("Condition") => shape::<Condition>(resource),
        Some("MedicationStatement") => shape::<MedicationStatement>(resource),
        Some("MedicationRequest") => shape::<MedicationRequest>(resource),
        Some("Medication") => shape::<Medication>(resource),
        Some("Observation") => shape::<Observation>(resource),
        Some("Procedure") => shape::<Procedure>(resource),
        Some("Immunization") => shape::<Immunization>(resource),
        Some("CarePlan") => shape::<CarePlan>(resource),
        Some("Appointment") => shape::<Appointment>(resource),
        Some("Communication") => shape::<Communication>(resource),
        Some("DiagnosticReport") => shape::<DiagnosticReport>(resource),
        Some("Encounter") => shape::<Encounter>(resource),
        Some("DocumentReference") => shape::<DocumentReference>(resource),
        _ => Ok(()),
    }
}

fn shape<T: serde::de::DeserializeOwned>(resource: &Value) -> Result<(), Invalid> {
    serde_path_to_error::deserialize::<_, T>(resource)
        .map(drop)
        .map_err(|error| {
            let found = value_at(resource, error.path()).map(kind_of);
            Invalid {
                path: error.path().to_string(),
                reason: shape_reason(found, &error.inner().to_string()),
            }
        })
}

/// The value `path` names inside `resource`, if it is there.
fn value_at<'a>(resource: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a Value> {
    use serde_path_to_error::Segment;
    path.iter()
        .try_fold(resource, |value, segment| match segment {
            Segment::Seq { index } => value.get(*index),
            Segment::Map { key } => value.get(key.as_str()),
            Segment::Enum { .. } | Segment::Unknown => Some(value),
        })
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "true or false",
        Value::Null => "null",
    }
}

/// serde's words for a shape that does not fit, in FHIR's: what was found (`found`, if the
/// element is there) where R4 has what serde expected.
fn shape_reason(found: Option<&str>, serde: &str) -> String {
    let expected = serde.split_once(", expected ").map_or(serde, |(_, e)| e);
    let concept = serde.contains("untagged enum ConceptOrCode");
    if concept && found == Some("an object") {
        return "not a CodeableConcept as FHIR R4 has it: its coding is a list of Codings, its \
                text a string"
            .into();
    }
    let expected = if concept {
        "one object (a CodeableConcept)"
    } else if expected.contains("sequence") {
        "a list"
    } else if expected.starts_with("struct") || expected.contains("map") {
        "one object"
    } else if expected.contains("string") {
        "a string"
    } else if expected.contains("bool") {
        "true or false"
    } else {
        return format!("FHIR R4 does not allow this here ({serde})");
    };
    match found {
        Some(found) => format!("{found} where FHIR R4 has {expected}"),
        None => format!("FHIR R4 has {expected} here"),
    }
}

/// A coded element with a required binding: the resource type, the element, and the codes R4
/// allows (from the R4 value sets of the same names).
const REQUIRED_CODES: &[(&str, &str, &[&str])] = &[
    ("Patient", "gender", &["male", "female", "other", "unknown"]),
    (
        "AllergyIntolerance",
        "clinicalStatus",
        &["active", "inactive", "resolved"],
    ),
    (
        "AllergyIntolerance",
        "verificationStatus",
        &["unconfirmed", "confirmed", "refuted", "entered-in-error"],
    ),
    ("AllergyIntolerance", "type", &["allergy", "intolerance"]),
    (
        "AllergyIntolerance",
        "category",
        &["food", "medication", "environment", "biologic"],
    ),
    (
        "AllergyIntolerance",
        "criticality",
        &["low", "high", "unable-to-assess"],
    ),
    (
        "Condition",
        "clinicalStatus",
        &[
            "active",
            "recurrence",
            "relapse",
            "inactive",
            "remission",
            "resolved",
        ],
    ),
    (
        "Condition",
        "verificationStatus",
        &[
            "unconfirmed",
            "provisional",
            "differential",
            "confirmed",
            "refuted",
            "entered-in-error",
        ],
    ),
    (
        "MedicationStatement",
        "status",
        &[
            "active",
            "completed",
            "entered-in-error",
            "intended",
            "stopped",
            "on-hold",
            "unknown",
            "not-taken",
        ],
    ),
    (
        "MedicationRequest",
        "status",
        &[
            "active",
            "on-hold",
            "cancelled",
            "completed",
            "entered-in-error",
            "stopped",
            "draft",
            "unknown",
        ],
    ),
    (
        "MedicationRequest",
        "intent",
        &[
            "proposal",
            "plan",
            "order",
            "original-order",
            "reflex-order",
            "filler-order",
            "instance-order",
            "option",
        ],
    ),
    (
        "Observation",
        "status",
        &[
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        ],
    ),
    (
        "Immunization",
        "status",
        &["completed", "entered-in-error", "not-done"],
    ),
    (
        "Procedure",
        "status",
        &[
            "preparation",
            "in-progress",
            "not-done",
            "on-hold",
            "stopped",
            "completed",
            "entered-in-error",
            "unknown",
        ],
    ),
    (
        "Encounter",
        "status",
        &[
            "planned",
            "arrived",
            "triaged",
            "in-progress",
            "onleave",
            "finished",
            "cancelled",
            "entered-in-error",
            "unknown",
        ],
    ),
    (
        "DiagnosticReport",
        "status",
        &[
            "registered",
            "partial",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "appended",
            "cancelled",
            "entered-in-error",
            "unknown",
        ],
    ),
    (
        "CarePlan",
        "status",
        &[
            "draft",
            "active",
            "on-hold",
            "revoked",
            "completed",
            "entered-in-error",
            "unknown",
        ],
    ),
    (
        "CarePlan",
        "intent",
        &["proposal", "plan", "order", "option"],
    ),
    (
        "DocumentReference",
        "status",
        &["current", "superseded", "entered-in-error"],
    ),
    (
        "Appointment",
        "status",
        &[
            "proposed",
            "pending",
            "booked",
            "arrived",
            "fulfilled",
            "cancelled",
            "noshow",
            "entered-in-error",
            "checked-in",
            "waitlist",
        ],
    ),
    (
        "Communication",
        "status",
        &[
            "preparation",
            "in-progress",
            "not-done",
            "on-hold",
            "stopped",
            "completed",
            "entered-in-error",
            "unknown",
        ],
    ),
];

/// The code systems of the CodeableConcepts among [`REQUIRED_CODES`]: a `Coding` that names
/// another system is not judged (a translation is allowed beside the required code).
const REQUIRED_SYSTEMS: &[&str] = &[
    "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
    "http://terminology.hl7.org/CodeSystem/condition-clinical",
    "http://terminology.hl7.org/CodeSystem/condition-ver-status",
];

/// Checks the coded elements with a required binding (see the module documentation).
pub fn check_codes(resource: &Value) -> Result<(), Invalid> {
    let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
        return Ok(());
    };
    for (of, element, codes) in REQUIRED_CODES.iter().filter(|(t, ..)| *t == resource_type) {
        let Some(value) = resource.get(*element) else {
            continue;
        };
        let bad = |path: String, code: &str| Invalid {
            path,
            reason: format!(
                "\"{code}\" is not a code FHIR R4 allows for {of}.{element} (one of: {})",
                codes.join(", ")
            ),
        };
        let items: Vec<(String, &Value)> = match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| (format!("{element}[{i}]"), item))
                .collect(),
            one => vec![(element.to_string(), one)],
        };
        for (path, item) in items {
            match item {
                Value::String(code) if !codes.contains(&code.as_str()) => {
                    return Err(bad(path, code));
                }
                Value::Object(concept) => {
                    let codings = concept.get("coding").and_then(Value::as_array);
                    for (i, coding) in codings.into_iter().flatten().enumerate() {
                        let system = coding.get("system").and_then(Value::as_str);
                        if system.is_some_and(|s| !REQUIRED_SYSTEMS.contains(&s)) {
                            continue;
                        }
                        if let Some(code) = coding.get("code").and_then(Value::as_str)
                            && !codes.contains(&code)
                        {
                            return Err(bad(format!("{path}.coding[{i}].code"), code));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reason(resource: Value) -> String {
        let invalid = check(&resource).expect_err("refused");
        format!("{}: {}", invalid.path, invalid.reason)
    }

    #[test]
    fn what_the_issue_saw_is_refused_with_the_element() {
        let cases = [
            (
                json!({"resourceType": "Observation", "effectiveDateTime": "2026-13-45"}),
                "effectiveDateTime: '2026-13-45' is not a FHIR date",
            ),
            (
                json!({"resourceType": "Condition", "onsetDateTime": "yesterday"}),
                "onsetDateTime: 'yesterday'",
            ),
            (
                json!({"resourceType": "Observation", "valueQuantity": {"value": "81.5", "unit": "kg"}}),
                "valueQuantity.value: a quantity's value is a number",
            ),
            (
                json!({"resourceType": "Observation", "status": null}),
                "status: null is not a FHIR value",
            ),
            (
                json!({"resourceType": "Patient", "name": []}),
                "name: an empty list",
            ),
            (
                json!({"resourceType": "Patient", "name": [{"family": ""}]}),
                "name[0].family: an empty string",
            ),
            (
                json!({"resourceType": "Patient", "birthDate": "1980-02-30"}),
                "birthDate: '1980-02-30' is not a FHIR date",
            ),
            (
                json!({"resourceType": "Patient", "birthDate": "1980-02-03T10:00:00Z"}),
                "birthDate",
            ),
            (
                json!({"resourceType": "Observation", "component": [{"valueInteger": 1.5}]}),
                "component[0].valueInteger: expected a whole number",
            ),
            (
                json!({"resourceType": "MedicationRequest", "medicationReference": {"reference": "#med1"}}),
                "medicationReference.reference: '#med1' names no resource",
            ),
            (
                json!({"resourceType": "Observation", "effectivePeriod": {"start": "2020-01-01T10:00:00"}}),
                "effectivePeriod.start: '2020-01-01T10:00:00'",
            ),
        ];
        for (resource, expected) in cases {
            let got = reason(resource.clone());
            assert!(got.starts_with(expected), "{resource}: {got}");
        }
    }

    #[test]
    fn valid_fhir_passes() {
        let ok = json!({"resourceType": "MedicationRequest", "id": "r1",
            "contained": [{"resourceType": "Medication", "id": "med1", "code": {"text": "x"}}],
            "medicationReference": {"reference": "#med1"},
            "authoredOn": "2020-02-29T10:00:00+01:00",
            "dispenseRequest": {"quantity": {"value": 28, "unit": "tablet"},
                "validityPeriod": {"start": "2020", "end": "2020-03"}},
            "name": [{"given": ["A", null], "_given": [null, {"extension": [{"url": "x", "valueBoolean": true}]}]}]});
        assert_eq!(check(&ok), Ok(()));
    }

    #[test]
    fn a_typed_element_of_the_wrong_shape_is_refused_with_its_path() {
        let typed = |resource: Value| {
            let invalid = check_typed(&resource).expect_err("refused");
            format!("{}: {}", invalid.path, invalid.reason)
        };
        let cases = [
            (
                json!({"resourceType": "Condition", "code": [{"text": "Asthma"}]}),
                "code: a list where FHIR R4 has one object (a CodeableConcept)",
            ),
            (
                json!({"resourceType": "Condition", "category": {"text": "problem"}}),
                "category: an object where FHIR R4 has a list",
            ),
            (
                json!({"resourceType": "Observation", "status": 5}),
                "status: a number where FHIR R4 has a string",
            ),
            (
                json!({"resourceType": "AllergyIntolerance",
                    "reaction": [{"manifestation": [{"coding": {"code": "x"}}]}]}),
                "reaction[0].manifestation[0]: not a CodeableConcept as FHIR R4 has it: its coding \
                 is a list of Codings, its text a string",
            ),
            (
                json!({"resourceType": "MedicationStatement", "dosage": [{"asNeededBoolean": "yes"}]}),
                "dosage[0].asNeededBoolean: a string where FHIR R4 has true or false",
            ),
        ];
        for (resource, expected) in cases {
            assert_eq!(typed(resource.clone()), expected, "{resource}");
        }
        // A type phr does not type, and fields it does not read, pass as they are.
        assert!(check_typed(&json!({"resourceType": "Flag", "code": [1]})).is_ok());
        assert!(check_typed(&json!({"resourceType": "Condition", "note": {"text": "x"}})).is_ok());
    }

    #[test]
    fn a_code_outside_its_required_value_set_is_refused_and_a_translation_is_not() {
        let coded = |resource: Value| {
            let invalid = check_codes(&resource).expect_err("refused");
            format!("{}: {}", invalid.path, invalid.reason)
        };
        let got = coded(json!({"resourceType": "MedicationStatement", "status": "taking"}));
        assert!(
            got.starts_with("status: \"taking\" is not a code FHIR R4 allows for MedicationStatement.status (one of: active, completed"),
            "{got}"
        );
        let got = coded(
            json!({"resourceType": "AllergyIntolerance", "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                "code": "current"}]}}),
        );
        assert!(
            got.starts_with("clinicalStatus.coding[0].code: \"current\""),
            "{got}"
        );
        let got =
            coded(json!({"resourceType": "AllergyIntolerance", "category": ["food", "pollen"]}));
        assert!(got.starts_with("category[1]: \"pollen\""), "{got}");
        // A coding of another system beside the required one is a translation: allowed.
        let translated = json!({"resourceType": "Condition", "clinicalStatus": {"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"},
            {"system": "http://snomed.info/sct", "code": "55561003"}]}});
        assert_eq!(check_codes(&translated), Ok(()));
        // A coding with no system is judged (phr writes them so, and so do hand-made files).
        assert!(
            check_codes(&json!({"resourceType": "Condition",
            "verificationStatus": {"coding": [{"code": "maybe"}]}}))
            .is_err()
        );
    }

    #[test]
    fn duplicate_keys_are_found_at_their_line() {
        let error = check_unique_keys(b"{\"a\": 1,\n \"b\": {\"c\": 2, \"c\": 3}}").unwrap_err();
        assert!(
            error.to_string().contains("\"c\" is in one object twice"),
            "{error}"
        );
        assert_eq!(error.line(), 2);
        assert!(check_unique_keys(br#"{"a": [{"b": 1}, {"b": 2}], "n": 1.50}"#).is_ok());
    }

    #[test]
    fn a_birth_or_a_result_in_the_future_is_refused() {
        let today: jiff::civil::Date = "2026-12-06".parse().unwrap();
        let born = json!({"resourceType": "Patient", "birthDate": "2027-01-01"});
        assert_eq!(future_date(&born, today).unwrap().path, "birthDate");
        let booked = json!({"resourceType": "Appointment", "start": "2027-01-01T10:00:00Z"});
        assert_eq!(future_date(&booked, today), None);
        let today_reading =
            json!({"resourceType": "Observation", "effectiveDateTime": "2026-12-06T23:00:00Z"});
        assert_eq!(future_date(&today_reading, today), None);
    }
}
