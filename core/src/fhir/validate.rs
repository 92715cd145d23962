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
