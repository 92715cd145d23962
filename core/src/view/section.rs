//! Section views: every resource of a section in one line of plain language, newest first, and
//! [`describe_resource`], the line itself, which `phr add`, `history` and `conflicts` print too.

use std::fmt;

use base64::{
    Engine, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, general_purpose},
};
use serde_json::Value;

use super::{
    ITEM_TEXT_CHARS_MAX, SectionItem, SectionView, TestResult, result::test_result, text_of,
};
use crate::{
    fhir::{
        display,
        model::{
            AllergyIntolerance, Appointment, Attachment, CarePlan, CodeableConcept, Coding,
            Communication, Condition, DiagnosticReport, DocumentReference, Encounter, HumanName,
            Immunization, Observation, Patient, Procedure, view,
        },
    },
    record::{Record, RecordError},
    section::Section,
};

/// How much of a text document's base64 data is decoded for its one-line preview, in
/// characters (1024 give 768 bytes): a preview never needs the whole document.
const DOCUMENT_PREVIEW_BASE64_CHARS_MAX: usize = 1024;

/// Every resource of a section with a one-line description, newest first.
pub fn section_view(record: &Record, section: Section) -> Result<SectionView, RecordError> {
    let mut dated: Vec<(Option<String>, SectionItem)> = record
        .resources(section)?
        .into_iter()
        .map(|(key, resource, conflicted)| {
            let when = date_of(&resource).map(str::to_string);
            let item = SectionItem {
                key: key.to_string(),
                date: when.as_deref().map(|d| display::date(d).to_string()),
                text: one_line(&describe(&resource, &key.resource_type)),
                resource_type: key.resource_type,
                conflicted,
            };
            (when, item)
        })
        .collect();
    // Full timestamps sort as text, which is right for one time zone; the sort is stable, so
    // resources of one date stay in key order.
    dated.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(SectionView {
        section,
        items: dated.into_iter().map(|(_, item)| item).collect(),
    })
}

/// The fields that date a resource, most telling first; each type has at most a few of them.
const DATE_POINTERS: &[&str] = &[
    "/effectiveDateTime",
    "/effectivePeriod/start",
    "/effectiveInstant",
    "/performedDateTime",
    "/performedPeriod/start",
    "/onsetDateTime",
    "/onsetPeriod/start",
    "/occurrenceDateTime",
    "/period/start",
    "/start",
    "/sent",
    "/started",
    "/authoredOn",
    "/recordedDate",
    "/recorded",
    "/created",
    "/billablePeriod/start",
    "/date",
    "/issued",
    "/dateAsserted",
];

fn date_of(resource: &Value) -> Option<&str> {
    DATE_POINTERS
        .iter()
        .find_map(|p| resource.pointer(p)?.as_str())
}

/// One line of plain language for any resource, as `phr show SECTION` lists it, e.g.
/// `Encounter: General examination of patient (ambulatory)`; used by `phr add`, `history` and
/// `conflicts` too.
pub fn describe_resource(resource: &Value) -> String {
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource");
    describe(resource, resource_type)
}

fn describe(resource: &Value, resource_type: &str) -> String {
    let text = match resource_type {
        "Encounter" => view::<Encounter>(resource).map(|e| encounter_text(&e)),
        "Procedure" => view::<Procedure>(resource).and_then(|p| procedure_text(&p)),
        "DiagnosticReport" => view::<DiagnosticReport>(resource).and_then(|r| report_text(&r)),
        "CarePlan" => view::<CarePlan>(resource).and_then(|p| care_plan_text(&p)),
        "Observation" => {
            // The date has its own column.
            let home = crate::section::place(resource) == crate::section::Section::Journal;
            let result = view::<Observation>(resource).and_then(|o| test_result(&o, home));
            result.map(|r| TestResult { date: None, ..r }.to_string())
        }
        "Condition" => view::<Condition>(resource).and_then(|c| condition_text(&c)),
        "AllergyIntolerance" => view::<AllergyIntolerance>(resource).and_then(|a| allergy_text(&a)),
        "Immunization" => view::<Immunization>(resource).and_then(|i| immunization_text(&i)),
        "DocumentReference" => view::<DocumentReference>(resource).and_then(|d| document_text(&d)),
        "Appointment" => view::<Appointment>(resource).map(|a| appointment_text(&a)),
        "Communication" => view::<Communication>(resource).and_then(|c| communication_text(&c)),
        "Claim" | "ExplanationOfBenefit" => Some(claim_text(resource)),
        "Patient" => view::<Patient>(resource).and_then(|p| p.name.first().map(HumanName::display)),
        _ => None,
    };
    let text = text
        .filter(|t| !t.is_empty())
        .or_else(|| concept_field(resource));
    let text = text.unwrap_or_else(|| "no description".into());
    // A resource marked as a mistake stays in the record; it must not read as a fact. Nor
    // may a medicine no longer taken read as a current one.
    if crate::fhir::status::is_entered_in_error(resource) {
        return format!("{text} [entered in error]");
    }
    let medicine = matches!(resource_type, "MedicationStatement" | "MedicationRequest");
    let proposal = resource.get("intent").and_then(Value::as_str) == Some("proposal");
    match resource.get("status").and_then(Value::as_str) {
        Some(status @ ("stopped" | "on-hold" | "completed" | "cancelled" | "not-taken"))
            if medicine =>
        {
            format!("{text} [{}]", status.replace('-', " "))
        }
        _ if medicine && proposal => format!("{text} [proposed]"),
        _ => text,
    }
}

/// The first code-like field's display: what most resource types are "about".
fn concept_field(resource: &Value) -> Option<String> {
    let fields = [
        "code",
        "medicationCodeableConcept",
        "vaccineCode",
        "type",
        "category",
        "description",
        "title",
    ];
    fields
        .iter()
        .find_map(|field| concept_at(resource.get(field)?))
}

fn concept_at(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Array(items) => items.iter().find_map(concept_at),
        _ => text_of(view::<CodeableConcept>(value).as_ref())
            .or_else(|| view::<Coding>(value).and_then(|c| c.display.or(c.code))),
    }
}

/// `text (status)` unless the status is the expected, unremarkable one.
fn with_status(text: String, status: Option<&str>, usual: &str) -> String {
    match status {
        Some(s) if s != usual => format!("{text} ({s})"),
        _ => text,
    }
}

fn encounter_text(e: &Encounter) -> String {
    let kind = e
        .kind
        .iter()
        .chain(&e.reason_code)
        .find_map(|k| text_of(Some(k)));
    let kind = kind.unwrap_or_else(|| "Visit".into());
    let class = e.class.as_ref().and_then(|c| {
        c.display
            .clone()
            .or_else(|| c.code.as_deref().map(class_word))
    });
    let text = match class {
        Some(class) => format!("{kind} ({class})"),
        None => kind,
    };
    // A visit that has not happened (planned, cancelled) must not read as one that did.
    match e.status.as_deref() {
        Some(status @ ("planned" | "cancelled" | "in-progress" | "arrived" | "triaged")) => {
            format!("{text} [{}]", status.replace('-', " "))
        }
        _ => text,
    }
}

/// Words for the HL7 v3 ActCode encounter classes, which usually come without a display.
fn class_word(code: &str) -> String {
    let word = match code {
        "AMB" => "ambulatory",
        "EMER" => "emergency",
        "IMP" => "inpatient",
        "ACUTE" => "inpatient acute",
        "NONAC" => "inpatient non-acute",
        "HH" => "home visit",
        "VR" => "virtual",
        "OBSENC" => "observation",
        "PRENC" => "pre-admission",
        "SS" => "short stay",
        "FLD" => "field",
        other => other,
    };
    word.to_string()
}

fn procedure_text(p: &Procedure) -> Option<String> {
    Some(with_status(
        text_of(p.code.as_ref())?,
        p.status.as_deref(),
        "completed",
    ))
}

fn report_text(r: &DiagnosticReport) -> Option<String> {
    let name = text_of(r.code.as_ref())?;
    let text = match (&r.conclusion, r.result.len()) {
        (Some(conclusion), _) => format!("{name}: {conclusion}"),
        (None, 0) => name,
        (None, 1) => format!("{name} (1 result)"),
        (None, n) => format!("{name} ({n} results)"),
    };
    Some(match super::result::result_status(r.status.as_deref()) {
        Some(status) => format!("{text} [{status}]"),
        None => text,
    })
}

/// An allergy with its state when it is not simply active and confirmed.
fn allergy_text(a: &AllergyIntolerance) -> Option<String> {
    let name = text_of(a.code.as_ref())?;
    let code =
        |c: &Option<CodeableConcept>| c.as_ref().and_then(|c| c.coding.first()?.code.clone());
    let mut notes: Vec<String> = Vec::new();
    if let Some(status @ ("inactive" | "resolved")) = code(&a.clinical_status).as_deref() {
        notes.push(status.to_string());
    }
    if let Some(status @ ("unconfirmed" | "refuted")) = code(&a.verification_status).as_deref() {
        notes.push(status.to_string());
    }
    if a.criticality.as_deref() == Some("high") {
        notes.push("high risk".into());
    }
    Some(if notes.is_empty() {
        name
    } else {
        format!("{name} ({})", notes.join(", "))
    })
}

fn immunization_text(i: &Immunization) -> Option<String> {
    let name = text_of(i.vaccine_code.as_ref())?;
    Some(match i.status.as_deref() {
        Some("not-done") => format!("{name} [not given]"),
        _ => name,
    })
}

fn care_plan_text(p: &CarePlan) -> Option<String> {
    let name = p
        .title
        .clone()
        .or_else(|| p.category.iter().find_map(|c| text_of(Some(c))));
    let name = name.or_else(|| p.description.clone())?;
    let mut activities: Vec<String> = Vec::new();
    for a in p
        .activity
        .iter()
        .filter_map(|a| text_of(a.detail.as_ref()?.code.as_ref()))
    {
        if !activities.contains(&a) {
            activities.push(a);
        }
    }
    let text = if activities.is_empty() {
        name
    } else {
        format!("{name}: {}", activities.join(", "))
    };
    Some(with_status(text, p.status.as_deref(), "active"))
}

fn condition_text(c: &Condition) -> Option<String> {
    let name = text_of(c.code.as_ref())?;
    let status = c
        .clinical_status
        .as_ref()
        .and_then(|s| s.coding.first()?.code.clone());
    let ended = c
        .abatement_date_time
        .as_deref()
        .map(|d| format!("ended {}", display::date(d)));
    let verification = c
        .verification_status
        .as_ref()
        .and_then(|s| s.coding.first()?.code.clone())
        .filter(|code| {
            matches!(
                code.as_str(),
                "unconfirmed" | "provisional" | "differential" | "refuted"
            )
        });
    let notes: Vec<String> = status
        .into_iter()
        .chain(verification)
        .chain(ended)
        .collect();
    Some(if notes.is_empty() {
        name
    } else {
        format!("{name} ({})", notes.join(", "))
    })
}

fn document_text(d: &DocumentReference) -> Option<String> {
    let attachment = d.content.iter().find_map(|c| c.attachment.as_ref());
    d.description
        .clone()
        .or_else(|| attachment.and_then(plain_text_preview))
        .or_else(|| attachment.and_then(|a| a.title.clone()))
        .or_else(|| text_of(d.kind.as_ref()))
}

/// The first non-empty line of a `text/plain` attachment.
fn plain_text_preview(a: &Attachment) -> Option<String> {
    if !a.content_type.as_deref()?.starts_with("text/plain") {
        return None;
    }
    let bytes = base64_prefix(a.data.as_deref()?, DOCUMENT_PREVIEW_BASE64_CHARS_MAX)?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// The decoder of document previews: the standard alphabet of
/// [`general_purpose::STANDARD`], but indifferent to padding and to the unused bits of the last
/// character. A preview decodes a prefix that may stop short of the padding, and it should
/// still show when another system wrote base64 that is not quite canonical.
const PREVIEW_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    general_purpose::PAD
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes the first `chars_max` characters of base64 (standard or URL-safe alphabet,
/// whitespace ignored, stopping at padding); `None` if a character is not base64.
///
/// The prefix is cut to `chars_max` before anything is decoded, so a long document costs no
/// more than a short one. A group the cut leaves incomplete gives the whole bytes it holds.
pub(super) fn base64_prefix(data: &str, chars_max: usize) -> Option<Vec<u8>> {
    let prefix: Vec<u8> = data
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .take(chars_max)
        .take_while(|&b| b != b'=')
        .map(|b| match b {
            b'-' => b'+',
            b'_' => b'/',
            standard => standard,
        })
        .collect();
    match PREVIEW_BASE64.decode(&prefix) {
        // One character alone holds six bits, too few for a byte; the crate reports the length
        // only once every character has proved valid, so dropping it loses nothing.
        Err(base64::DecodeError::InvalidLength(_)) => {
            PREVIEW_BASE64.decode(&prefix[..prefix.len() - 1]).ok()
        }
        decoded => decoded.ok(),
    }
}

fn appointment_text(a: &Appointment) -> String {
    let what = a
        .description
        .clone()
        .or_else(|| a.service_type.iter().find_map(|s| text_of(Some(s))));
    let what = what.unwrap_or_else(|| "Appointment".into());
    // The date column shows the day; an appointment also needs its time.
    let time = a
        .start
        .as_deref()
        .and_then(|s| s.get(11..16))
        .map(|t| format!(" at {t}"));
    with_status(
        format!("{what}{}", time.unwrap_or_default()),
        a.status.as_deref(),
        "",
    )
}

fn communication_text(c: &Communication) -> Option<String> {
    let message = c.payload.iter().find_map(|p| p.content_string.clone())?;
    match c.sender.as_ref().and_then(|s| s.display.as_deref()) {
        Some(sender) => Some(format!("from {sender}: {message}")),
        None => Some(message),
    }
}

/// Claims and explanations of benefit: their kind and total (a Claim's `total` is money, an
/// ExplanationOfBenefit's a list of totals by category).
fn claim_text(resource: &Value) -> String {
    let kind = resource
        .get("type")
        .and_then(concept_at)
        .unwrap_or_default();
    let total = resource.get("total").and_then(|t| match t {
        Value::Array(totals) => totals.first()?.get("amount"),
        money => Some(money),
    });
    let amount = total.and_then(|t| match t.get("value")? {
        Value::Number(n) => Some(display::number(n)),
        _ => None,
    });
    let currency = total
        .and_then(|t| t.get("currency")?.as_str())
        .unwrap_or("");
    let claim = format!("{kind} claim").trim_start().to_string();
    match amount {
        Some(amount) => format!("{claim}, total {amount} {currency}")
            .trim_end()
            .to_string(),
        None => claim,
    }
}

/// Collapses whitespace (documents and messages span lines) and bounds the length.
fn one_line(text: &str) -> String {
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.chars().count() <= ITEM_TEXT_CHARS_MAX {
        return words;
    }
    let cut: String = words.chars().take(ITEM_TEXT_CHARS_MAX - 1).collect();
    format!("{}…", cut.trim_end())
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

impl fmt::Display for SectionView {
    /// A heading, then one line per resource: date, type, description.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.items.len();
        let entries = if n == 1 { "entry" } else { "entries" };
        writeln!(f, "{} ({n} {entries})", capitalised(self.section.as_str()))?;
        if self.items.is_empty() {
            return writeln!(f, "  Nothing recorded.");
        }
        for item in &self.items {
            let date = item.date.as_deref().unwrap_or("no date");
            let warning = if item.conflicted {
                "  ⚠ conflicting versions"
            } else {
                ""
            };
            writeln!(
                f,
                "  {date:<10}  {}: {}{warning}",
                item.resource_type, item.text
            )?;
        }
        Ok(())
    }
}
