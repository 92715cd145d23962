//! An `Observation` as a result a patient can read: its value in words, a flag when it lies
//! outside its normal range, and the range. The summary lists results this way, and section
//! views describe observations with the same words.

use std::fmt;

use super::{TestResult, date_part, text_of};
use crate::fhir::{
    display,
    model::{CodeableConcept, Observation, ObservationComponent, Quantity, ReferenceRange},
};

/// LOINC codes of the two parts of a blood pressure, which read as "systolic/diastolic".
pub(super) const SYSTOLIC_LOINC: &str = "8480-6";
pub(super) const DIASTOLIC_LOINC: &str = "8462-4";

/// An observation as a result, if it has a value to show. `home`: a reading the patient took
/// (their journal), shown as one and judged against the home blood pressure thresholds.
pub(super) fn test_result(o: &Observation, home: bool) -> Option<TestResult> {
    let range = o.reference_range.first();
    let pressure = blood_pressure_flag(o, home);
    Some(TestResult {
        value: observation_value(o)?,
        display: text_of(o.code.as_ref()).unwrap_or_else(|| "Result".into()),
        date: date_part(o.when()),
        flag: out_of_range(o, range)
            .or_else(|| interpreted(o))
            .or(pressure.map(|(flag, _)| flag))
            .map(str::to_string),
        range: range
            .and_then(range_text)
            .or_else(|| pressure.map(|(_, normal)| normal.to_string())),
        home,
        status: result_status(o.status.as_deref()),
    })
}

/// A result's status in words, when it is not simply final.
pub(super) fn result_status(status: Option<&str>) -> Option<String> {
    match status? {
        "preliminary" => Some("preliminary".into()),
        "registered" => Some("not yet reported".into()),
        "amended" => Some("amended".into()),
        "corrected" => Some("corrected".into()),
        "cancelled" => Some("cancelled".into()),
        "partial" => Some("partial".into()),
        "appended" => Some("appended".into()),
        _ => None,
    }
}

/// A blood pressure with no range of its own, judged as NICE NG136 does: high from 140/90 in
/// a clinic and from 135/85 at home (where readings run lower), low under 90/60. The flag, and
/// the normal range it was judged against.
fn blood_pressure_flag(o: &Observation, home: bool) -> Option<(&'static str, &'static str)> {
    if !o.reference_range.is_empty() {
        return None;
    }
    let part = |code: &str| -> Option<f64> {
        let found = o
            .component
            .iter()
            .find(|p| p.code.as_ref().is_some_and(|c| c.has_code(code)))?;
        found.value_quantity.as_ref()?.as_f64()
    };
    let (systolic, diastolic) = (part(SYSTOLIC_LOINC)?, part(DIASTOLIC_LOINC)?);
    let (high, normal) = if home {
        ((135.0, 85.0), "90/60–134/84 at home")
    } else {
        ((140.0, 90.0), "90/60–139/89")
    };
    let flag = if systolic >= high.0 || diastolic >= high.1 {
        Some("HIGH")
    } else if systolic < 90.0 || diastolic < 60.0 {
        Some("LOW")
    } else {
        None
    };
    Some((flag?, normal))
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

impl fmt::Display for TestResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.display, self.value)?;
        if let Some(date) = &self.date {
            write!(f, " on {date}")?;
        }
        if self.home {
            write!(f, " (home reading)")?;
        }
        if let Some(status) = &self.status {
            write!(f, " [{status}]")?;
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
