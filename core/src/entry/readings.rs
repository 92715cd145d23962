//! Readings: home measurements such as blood pressure or weight, each an `Observation` coded
//! in LOINC with a UCUM unit, and checked against a plausible range before it is recorded.

use serde_json::{Number, Value, json};

use super::{EntryError, LOINC, NewEntry, concept};

const UCUM: &str = "http://unitsofmeasure.org";
const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

/// One quantity a reading records: its LOINC code, its unit and the values phr accepts.
#[derive(Debug)]
pub(super) struct Measure {
    /// The reading kind on the command line.
    pub(super) name: &'static str,
    loinc: &'static str,
    /// The LOINC display name.
    display: &'static str,
    /// What people call it: the code's text, which views show.
    text: &'static str,
    /// The unit as people write it.
    unit: &'static str,
    /// The UCUM code of the unit.
    ucum: &'static str,
    /// The plausible range, inclusive: wide enough for any real person, from newborn to
    /// critically ill, narrow enough to catch a slipped digit or a value in the wrong unit.
    pub(super) min: f64,
    pub(super) max: f64,
    /// A typical value, for error messages.
    example: &'static str,
}

/// The blood pressure panel; its values are the two components below.
#[rustfmt::skip]
const BLOOD_PRESSURE: (&str, &str, &str) = ("85354-9", "Blood pressure panel with all children optional", "Blood pressure");
const BLOOD_PRESSURE_NAME: &str = "blood-pressure";

#[rustfmt::skip]
const SYSTOLIC: Measure = measure("systolic", "8480-6", "Systolic blood pressure", "Systolic", "mmHg", "mm[Hg]", 50.0, 280.0, "128");
#[rustfmt::skip]
const DIASTOLIC: Measure = measure("diastolic", "8462-4", "Diastolic blood pressure", "Diastolic", "mmHg", "mm[Hg]", 20.0, 180.0, "82");

/// The single-value readings, one a line. Glucose is in mmol/L as in the UK, not mg/dL.
#[rustfmt::skip]
pub(super) const READINGS: &[Measure] = &[
    measure("heart-rate", "8867-4", "Heart rate", "Heart rate", "/min", "/min", 20.0, 300.0, "72"),
    measure("weight", "29463-7", "Body weight", "Weight", "kg", "kg", 0.2, 500.0, "81.5"),
    measure("height", "8302-2", "Body height", "Height", "cm", "cm", 20.0, 280.0, "178"),
    measure("temperature", "8310-5", "Body temperature", "Temperature", "°C", "Cel", 25.0, 45.0, "37.2"),
    measure("glucose", "15074-8", "Glucose [Moles/volume] in Blood", "Blood glucose", "mmol/L", "mmol/L", 0.5, 60.0, "5.4"),
    measure("oxygen-saturation", "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "Oxygen saturation", "%", "%", 50.0, 100.0, "97"),
    measure("peak-flow", "19935-6", "Maximum expiratory gas flow Respiratory system airway by Peak flow meter", "Peak flow", "L/min", "L/min", 30.0, 1000.0, "450"),
    measure("bmi", "39156-5", "Body mass index (BMI) [Ratio]", "Body mass index", "kg/m2", "kg/m2", 8.0, 150.0, "24.1"),
];

/// A table row; a function so that each row fits on one line.
#[allow(clippy::too_many_arguments)]
const fn measure(
    name: &'static str,
    loinc: &'static str,
    display: &'static str,
    text: &'static str,
    unit: &'static str,
    ucum: &'static str,
    min: f64,
    max: f64,
    example: &'static str,
) -> Measure {
    Measure {
        name,
        loinc,
        display,
        text,
        unit,
        ucum,
        min,
        max,
        example,
    }
}

/// The reading kinds `phr add reading` accepts, in help order.
pub fn reading_names() -> impl Iterator<Item = &'static str> {
    std::iter::once(BLOOD_PRESSURE_NAME).chain(READINGS.iter().map(|m| m.name))
}

pub(super) fn reading(entry: &NewEntry, now: &str) -> Result<Value, EntryError> {
    let name = entry.text.trim().to_ascii_lowercase();
    let measure = READINGS.iter().find(|m| m.name == name);
    if measure.is_none() && name != BLOOD_PRESSURE_NAME {
        return Err(EntryError::UnknownReading(entry.text.trim().to_string()));
    }
    let (reading, example) =
        measure.map_or((BLOOD_PRESSURE_NAME, "128/82"), |m| (m.name, m.example));
    let value = entry
        .value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let value = value.ok_or(EntryError::MissingValue { reading, example })?;
    let mut body = json!({
        "status": "final",
        "category": [concept(OBSERVATION_CATEGORY, "vital-signs", "Vital Signs")],
    });
    match measure {
        Some(measure) => {
            body["code"] = loinc(measure.loinc, measure.display, measure.text);
            body["effectiveDateTime"] = now.into();
            body["valueQuantity"] = quantity(measure, value)?;
        }
        None => {
            let (systolic, diastolic) = blood_pressure(value)?;
            body["code"] = loinc(BLOOD_PRESSURE.0, BLOOD_PRESSURE.1, BLOOD_PRESSURE.2);
            body["effectiveDateTime"] = now.into();
            body["component"] = json!([
                { "code": loinc(SYSTOLIC.loinc, SYSTOLIC.display, SYSTOLIC.text), "valueQuantity": systolic },
                { "code": loinc(DIASTOLIC.loinc, DIASTOLIC.display, DIASTOLIC.text), "valueQuantity": diastolic },
            ]);
        }
    }
    Ok(body)
}

fn loinc(code: &str, display: &str, text: &str) -> Value {
    let mut concept = concept(LOINC, code, display);
    concept["text"] = text.into();
    concept
}

/// `SYSTOLIC/DIASTOLIC` as two quantities, each checked against its range.
fn blood_pressure(value: &str) -> Result<(Value, Value), EntryError> {
    let format_error = || EntryError::BloodPressureFormat(value.to_string());
    let (systolic, diastolic) = value.split_once('/').ok_or_else(format_error)?;
    let (systolic, diastolic) = (systolic.trim(), diastolic.trim());
    for part in [systolic, diastolic] {
        if serde_json::from_str::<Number>(part).is_err() {
            return Err(format_error());
        }
    }
    let systolic = quantity(&SYSTOLIC, systolic)?;
    let diastolic = quantity(&DIASTOLIC, diastolic)?;
    if diastolic["value"].as_f64() >= systolic["value"].as_f64() {
        return Err(EntryError::BloodPressureOrder(value.to_string()));
    }
    Ok((systolic, diastolic))
}

/// A UCUM quantity whose value is the number exactly as the user wrote it ("81.50" stays
/// "81.50": FHIR decimals keep their precision), after checking it against the plausible range.
fn quantity(measure: &Measure, value: &str) -> Result<Value, EntryError> {
    let not_a_number = || EntryError::NotANumber {
        reading: measure.name,
        value: value.to_string(),
        example: measure.example,
    };
    let number = serde_json::from_str::<Number>(value).map_err(|_| not_a_number())?;
    let float = number.as_f64().ok_or_else(not_a_number)?;
    if !(measure.min..=measure.max).contains(&float) {
        return Err(EntryError::OutOfRange {
            reading: measure.name,
            value: value.to_string(),
            min: measure.min,
            max: measure.max,
            unit: measure.unit,
        });
    }
    Ok(json!({ "value": number, "unit": measure.unit, "system": UCUM, "code": measure.ucum }))
}
