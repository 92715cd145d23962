//! Turning FHIR values into text a patient can read: dates, amounts, dosages.

use serde_json::Number;

use super::model::{Dosage, Quantity};

/// The date part of a FHIR `date`/`dateTime`/`instant` (`2019`, `2019-03`, `2019-03-04`, or the
/// date of a full timestamp), which is what a person needs to see.
pub fn date(value: &str) -> &str {
    value
        .get(..10)
        .filter(|_| value.len() > 10)
        .unwrap_or(value)
}

/// A number as written, without a long tail of float digits: `171.8502438021171` reads `171.85`.
pub fn number(n: &Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    match n.as_f64() {
        Some(f) => {
            let rounded = format!("{f:.2}");
            let trimmed = rounded.trim_end_matches('0').trim_end_matches('.');
            // Prefer the written form when it is already short (keeps "1.50" as the source wrote it).
            let written = n.to_string();
            if written.len() <= rounded.len() {
                written
            } else {
                trimmed.to_string()
            }
        }
        None => n.to_string(),
    }
}

/// A quantity such as `6.2 %` or `< 5 mmol/L`.
pub fn quantity(q: &Quantity) -> Option<String> {
    let value = number(q.value.as_ref()?);
    let comparator = q
        .comparator
        .as_deref()
        .map(|c| format!("{c} "))
        .unwrap_or_default();
    let unit = q.unit.as_deref().or(q.code.as_deref()).unwrap_or("");
    Some(format!("{comparator}{value} {unit}").trim_end().to_string())
}

/// A dosage in words: its text if given, else built from dose and timing, e.g.
/// `1 dose, 2 times a day`.
pub fn dosage(d: &Dosage) -> Option<String> {
    if let Some(text) = &d.text {
        return Some(text.clone());
    }
    let mut parts = Vec::new();
    if let Some(dose) = d
        .dose_and_rate
        .iter()
        .find_map(|r| r.dose_quantity.as_ref())
    {
        let amount = dose.value.as_ref().map(number).unwrap_or_default();
        let unit = dose.unit.as_deref().unwrap_or("dose");
        parts.push(format!("{amount} {unit}").trim().to_string());
    }
    if let Some(repeat) = d.timing.as_ref().and_then(|t| t.repeat.as_ref()) {
        let frequency = repeat
            .frequency
            .as_ref()
            .map(number)
            .unwrap_or_else(|| "1".into());
        let times = if frequency == "1" {
            "once".to_string()
        } else {
            format!("{frequency} times")
        };
        let period = repeat
            .period
            .as_ref()
            .map(number)
            .unwrap_or_else(|| "1".into());
        let unit = match repeat.period_unit.as_deref() {
            Some("s") => "second",
            Some("min") => "minute",
            Some("h") => "hour",
            Some("d") => "day",
            Some("wk") => "week",
            Some("mo") => "month",
            Some("a") => "year",
            _ => "period",
        };
        if period == "1" {
            parts.push(format!("{times} a {unit}"));
        } else {
            parts.push(format!("{times} every {period} {unit}s"));
        }
    }
    if d.as_needed_boolean == Some(true) {
        parts.push("when needed".into());
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::model::view;
    use serde_json::json;

    #[test]
    fn dates_keep_the_day() {
        assert_eq!(date("1934-01-13T19:20:06+00:00"), "1934-01-13");
        assert_eq!(date("2019-03"), "2019-03");
        assert_eq!(date("2019"), "2019");
    }

    #[test]
    fn numbers_are_short_and_keep_written_precision() {
        let q: Quantity = view(&json!({"value": 171.8502438021171, "unit": "cm"})).unwrap();
        assert_eq!(quantity(&q).unwrap(), "171.85 cm");
        let q: Quantity = serde_json::from_str(r#"{"value": 1.50, "unit": "mmol/L"}"#).unwrap();
        assert_eq!(quantity(&q).unwrap(), "1.50 mmol/L");
        let q: Quantity = view(&json!({"value": 120, "comparator": "<", "code": "mg"})).unwrap();
        assert_eq!(quantity(&q).unwrap(), "< 120 mg");
    }

    #[test]
    fn dosage_in_words() {
        let d: Dosage = view(
            &json!({"timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [{"doseQuantity": {"value": 1}}], "asNeededBoolean": false}),
        )
        .unwrap();
        assert_eq!(dosage(&d).unwrap(), "1 dose, 2 times a day");
        let d: Dosage = view(&json!({"text": "two puffs when needed"})).unwrap();
        assert_eq!(dosage(&d).unwrap(), "two puffs when needed");
    }
}
