//! Repeat prescriptions, as GP Connect's patient-facing pattern has them in FHIR R4.
//!
//! - **The repeat** is a `MedicationRequest` with `intent` `plan`, `courseOfTherapyType`
//!   `continuous`, `dispenseRequest.numberOfRepeatsAllowed` issues, and the UK Core extension
//!   `MedicationRepeatInformation` (`authorisationExpiryDate`, the date it must be reviewed by).
//!   The practice writes it (in `summary`, where medicines are) and is its only writer.
//! - **The patient's order** is a `Task` in `requests`: `intent` `order`, `code` SNOMED CT
//!   103742009 "Renewal of prescription", `focus` the repeat, `for` the patient, `status`
//!   `requested`, and a nominated pharmacy (its ODS code) as an `input`.
//! - **The practice's answer** changes the `Task`: `completed` with the issued prescription as
//!   its `output`, or `rejected` with a `statusReason`. The issued prescription is a
//!   `MedicationRequest` `intent` `order`, `basedOn` the repeat; each one issued counts against
//!   the repeat's issues.
//! - **The pharmacy** records what it dispensed as a `MedicationDispense` of the issued
//!   prescription, tagged into `requests` so that a `requests` grant is all it needs.
//!
//! How many issues are left is counted from the issued prescriptions that name the repeat, not
//! read from a counter: two issues made offline on two of the practice's nodes both count, and
//! nothing has to be merged by hand. An order past the review date, with no issues left, or for
//! a repeat that is no longer active is refused with what to do instead.
//!
//! The module does no I/O: callers pass ids and times.

use jiff::{Timestamp, civil::Date};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    Section,
    fhir::reference::ResourceKey,
    ledger::LedgerState,
    nhs::ODS_CODE_SYSTEM,
    record::{Current, Record, RecordError},
    section::SECTION_TAG_SYSTEM,
};

/// SNOMED CT 103742009 "Renewal of prescription": the code of a repeat order `Task`.
pub const RENEWAL_CODE: &str = "103742009";
/// The UK Core extension that carries a repeat's review date and issue count.
pub const REPEAT_INFORMATION_URL: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-MedicationRepeatInformation";
/// The most issues one repeat may allow; a repeat for longer is reviewed before then.
pub const REPEAT_ISSUES_MAX: u32 = 52;
/// The longest reason a practice gives for refusing an order, in bytes.
pub const REASON_BYTES_MAX: usize = 1024;

const SNOMED: &str = "http://snomed.info/sct";
const COURSE_OF_THERAPY: &str =
    "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy";
const NOMINATED_PHARMACY: &str = "nominated pharmacy";
const ISSUED_PRESCRIPTION: &str = "issued prescription";

/// A repeat as the practice sets it up.
#[derive(Clone, Debug)]
pub struct NewRepeat {
    /// The medicine, as the prescriber writes it.
    pub medicine: String,
    /// How to take it.
    pub dosage: Option<String>,
    /// How many times it may be issued before a review.
    pub issues: u32,
    /// The date it must be reviewed by; no order is taken after it.
    pub review: Date,
    /// The patient, as `Patient/id`.
    pub subject: Option<String>,
    /// The practice, as a FHIR `Reference`.
    pub prescriber: Value,
}

/// Why a repeat, an order or an answer cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepeatError {
    /// No medicine named.
    #[error("name the medicine, e.g. \"Salbutamol 100micrograms/dose inhaler\"")]
    NoMedicine,
    /// Issues out of range.
    #[error("a repeat allows 1 to {REPEAT_ISSUES_MAX} issues before its review, not {0}")]
    Issues(u32),
    /// A review date in the past.
    #[error("the review date {0} has passed; choose a later one")]
    ReviewPast(Date),
    /// Past the review date: the patient asks for a review instead.
    #[error(
        "your {medicine} repeat was due for review on {review}, so it cannot be ordered; ask \
         the practice to review it (e.g. `phr messages send \"Please review my {medicine} \
         repeat\"`)"
    )]
    ReviewDue {
        /// The medicine.
        medicine: String,
        /// Its review date.
        review: Date,
    },
    /// Every issue has been used.
    #[error(
        "every issue of your {medicine} repeat has been used ({issued} of {allowed}); ask the \
         practice to review it (e.g. `phr messages send \"Please review my {medicine} \
         repeat\"`)"
    )]
    NoIssuesLeft {
        /// The medicine.
        medicine: String,
        /// Issues used.
        issued: u32,
        /// Issues allowed.
        allowed: u32,
    },
    /// The repeat was stopped, or is not active.
    #[error("your {medicine} repeat is {status}, so it cannot be ordered; ask the practice")]
    NotActive {
        /// The medicine.
        medicine: String,
        /// Its status.
        status: String,
    },
    /// An order of it is already waiting.
    #[error(
        "an order of {medicine} is already waiting for the practice (order {order}); it is \
         not ordered twice"
    )]
    AlreadyOrdered {
        /// The medicine.
        medicine: String,
        /// The waiting order's id.
        order: String,
    },
    /// The order was already answered.
    #[error("order {order} is already {status}; nothing was changed")]
    Answered {
        /// The order.
        order: String,
        /// What it is.
        status: String,
    },
    /// A reason too long or empty.
    #[error("give a reason of 1 to {REASON_BYTES_MAX} bytes, which the patient will read")]
    Reason,
    /// The prescription is not proven to be a practice's.
    #[error(
        "the prescription of order {order} is not signed by a practice that may prescribe \
         (it was written by {by}); it is not dispensed. Ask the practice to issue it"
    )]
    Unverified {
        /// The order.
        order: String,
        /// Who wrote the prescription, as its signature says.
        by: String,
    },
    /// Not issued yet, so nothing to dispense.
    #[error("order {0} has not been issued by the practice yet, so it cannot be dispensed")]
    NotIssued(String),
}

/// One repeat, with its orders, as the record holds them.
#[derive(Clone, Debug, Serialize)]
pub struct Repeat {
    /// The repeat's `MedicationRequest` id.
    pub id: String,
    /// The medicine.
    pub medicine: String,
    /// How to take it.
    pub dosage: Option<String>,
    /// Its status (`active`, `stopped`, ...).
    pub status: String,
    /// Issues allowed before review.
    pub allowed: u32,
    /// Issues made: prescriptions issued that name it.
    pub issued: u32,
    /// The date it must be reviewed by.
    #[serde(serialize_with = "date_text")]
    pub review: Option<Date>,
    /// Who prescribes it, as written.
    pub prescriber: Option<String>,
    /// Its orders, oldest first.
    pub orders: Vec<Order>,
}

impl Repeat {
    /// Issues left before a review.
    pub fn left(&self) -> u32 {
        self.allowed.saturating_sub(self.issued)
    }
}

/// One order of a repeat.
#[derive(Clone, Debug, Serialize)]
pub struct Order {
    /// The `Task` id.
    pub id: String,
    /// `requested`, `completed` (issued), `rejected`, `cancelled`.
    pub status: String,
    /// When it was made.
    pub ordered: Option<String>,
    /// The pharmacy nominated to dispense it (its ODS code).
    pub pharmacy: Option<String>,
    /// Why the practice refused it.
    pub reason: Option<String>,
    /// The prescription issued for it (`MedicationRequest` id).
    pub prescription: Option<String>,
    /// Who signed the prescription issued for it (the writing node's name), if issued.
    pub issued_by: Option<String>,
    /// Whether that prescription is proven to be a practice's: signed by a node the ledger
    /// gave write access to `summary` as a provider, in changes its own signature proves. A
    /// prescription the patient's own devices wrote (or anyone else) is not, and is never
    /// dispensed.
    pub prescription_verified: bool,
    /// When a pharmacy dispensed it, and which (its name as written).
    pub dispensed: Option<(String, String)>,
}

/// The repeat's `MedicationRequest` (`intent` `plan`).
pub fn repeat(
    new: &NewRepeat,
    id: &str,
    now: Timestamp,
    today: Date,
) -> Result<Value, RepeatError> {
    let medicine = new.medicine.trim();
    if medicine.is_empty() {
        return Err(RepeatError::NoMedicine);
    }
    if !(1..=REPEAT_ISSUES_MAX).contains(&new.issues) {
        return Err(RepeatError::Issues(new.issues));
    }
    if new.review < today {
        return Err(RepeatError::ReviewPast(new.review));
    }
    let mut plan = json!({
        "resourceType": "MedicationRequest",
        "id": id,
        "extension": [repeat_information(new.review)],
        "status": "active",
        "intent": "plan",
        "medicationCodeableConcept": {"text": medicine},
        "authoredOn": now.to_string(),
        "requester": new.prescriber,
        "courseOfTherapyType": {"coding": [{
            "system": COURSE_OF_THERAPY, "code": "continuous",
            "display": "Continuous long term therapy"
        }]},
        "dispenseRequest": {"numberOfRepeatsAllowed": new.issues},
    });
    if let Some(subject) = &new.subject {
        plan["subject"] = json!({"reference": subject});
    }
    if let Some(dosage) = new
        .dosage
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        plan["dosageInstruction"] = json!([{"text": dosage}]);
    }
    Ok(plan)
}

/// The UK Core repeat information: the review date. `numberOfPrescriptionsIssued` is left
/// out: a counter in the repeat would be rewritten at every issue, and two issues made apart
/// would conflict over it; the count is the prescriptions issued (see the module's doc).
fn repeat_information(review: Date) -> Value {
    json!({
        "url": REPEAT_INFORMATION_URL,
        "extension": [{"url": "authorisationExpiryDate", "valueDateTime": review.to_string()}]
    })
}

/// The patient's order of `repeat`: a `Task`, refused if the repeat may not be ordered now.
pub fn order(
    repeat: &Repeat,
    pharmacy: Option<&str>,
    patient: &Value,
    id: &str,
    now: Timestamp,
    today: Date,
) -> Result<Value, RepeatError> {
    let medicine = repeat.medicine.clone();
    if repeat.status != "active" {
        return Err(RepeatError::NotActive {
            medicine,
            status: repeat.status.clone(),
        });
    }
    if let Some(review) = repeat.review.filter(|review| *review < today) {
        return Err(RepeatError::ReviewDue { medicine, review });
    }
    if repeat.left() == 0 {
        return Err(RepeatError::NoIssuesLeft {
            medicine,
            issued: repeat.issued,
            allowed: repeat.allowed,
        });
    }
    if let Some(waiting) = repeat.orders.iter().find(|o| o.status == "requested") {
        return Err(RepeatError::AlreadyOrdered {
            medicine,
            order: waiting.id.clone(),
        });
    }
    let mut task = json!({
        "resourceType": "Task",
        "id": id,
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{
            "system": SNOMED, "code": RENEWAL_CODE, "display": "Renewal of prescription"
        }], "text": "Repeat prescription order"},
        "description": format!("Repeat prescription: {}", repeat.medicine),
        "focus": {"reference": format!("MedicationRequest/{}", repeat.id)},
        "authoredOn": now.to_string(),
        "lastModified": now.to_string(),
        "requester": patient,
    });
    if let Some(reference) = patient.get("reference") {
        task["for"] = json!({"reference": reference});
    }
    if let Some(ods) = pharmacy {
        task["input"] = json!([{
            "type": {"text": NOMINATED_PHARMACY},
            "valueReference": {"identifier": {"system": ODS_CODE_SYSTEM, "value": ods}}
        }]);
    }
    Ok(task)
}

/// The practice issues what `task` orders: the issued prescription (`intent` `order`, based on
/// the repeat) and the order completed with it as output. The repeat itself is not rewritten:
/// its count is the prescriptions that name it.
pub fn issue(
    plan: &Value,
    task: &Value,
    prescriber: &Value,
    id: &str,
    now: Timestamp,
) -> Result<(Value, Value), RepeatError> {
    let task_id = text(task, "id");
    let status = text(task, "status");
    if status != "requested" {
        return Err(RepeatError::Answered {
            order: task_id,
            status,
        });
    }
    let mut prescription = json!({
        "resourceType": "MedicationRequest",
        "id": id,
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": plan["medicationCodeableConcept"],
        "authoredOn": now.to_string(),
        "requester": prescriber,
        "basedOn": [{"reference": format!("MedicationRequest/{}", text(plan, "id"))}],
        "courseOfTherapyType": plan["courseOfTherapyType"],
    });
    for field in ["subject", "dosageInstruction"] {
        if let Some(value) = plan.get(field) {
            prescription[field] = value.clone();
        }
    }
    if let Some(pharmacy) = nominated(task) {
        prescription["dispenseRequest"] = json!({"performer": {
            "identifier": {"system": ODS_CODE_SYSTEM, "value": pharmacy}
        }});
    }
    let mut done = task.clone();
    done["status"] = json!("completed");
    done["businessStatus"] = json!({"text": "issued"});
    done["lastModified"] = json!(now.to_string());
    done["owner"] = prescriber.clone();
    done["output"] = json!([{
        "type": {"text": ISSUED_PRESCRIPTION},
        "valueReference": {"reference": format!("MedicationRequest/{id}")}
    }]);
    Ok((prescription, done))
}

/// The practice refuses `task`, saying why.
pub fn reject(
    task: &Value,
    reason: &str,
    prescriber: &Value,
    now: Timestamp,
) -> Result<Value, RepeatError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > REASON_BYTES_MAX {
        return Err(RepeatError::Reason);
    }
    let status = text(task, "status");
    if status != "requested" {
        return Err(RepeatError::Answered {
            order: text(task, "id"),
            status,
        });
    }
    let mut refused = task.clone();
    refused["status"] = json!("rejected");
    refused["statusReason"] = json!({"text": reason});
    refused["lastModified"] = json!(now.to_string());
    refused["owner"] = prescriber.clone();
    Ok(refused)
}

/// The pharmacy's record that it dispensed the prescription issued for `order`: a
/// `MedicationDispense`, tagged into `requests`. Refused unless a practice's signature proves
/// the prescription ([`Order::prescription_verified`]).
pub fn dispense(
    order: &Order,
    repeat: &Repeat,
    pharmacy: &Value,
    subject: Option<&str>,
    id: &str,
    now: Timestamp,
) -> Result<Value, RepeatError> {
    let Some(prescription) = &order.prescription else {
        return Err(RepeatError::NotIssued(order.id.clone()));
    };
    if !order.prescription_verified {
        return Err(RepeatError::Unverified {
            order: order.id.clone(),
            by: order
                .issued_by
                .clone()
                .unwrap_or_else(|| "nobody known".into()),
        });
    }
    let mut dispense = json!({
        "resourceType": "MedicationDispense",
        "id": id,
        "meta": {"tag": [{"system": SECTION_TAG_SYSTEM, "code": Section::Requests.as_str()}]},
        "status": "completed",
        "medicationCodeableConcept": {"text": repeat.medicine},
        "performer": [{"actor": pharmacy}],
        "authorizingPrescription": [{"reference": format!("MedicationRequest/{prescription}")}],
        "whenHandedOver": now.to_string(),
    });
    if let Some(subject) = subject {
        dispense["subject"] = json!({"reference": subject});
    }
    Ok(dispense)
}

/// Every repeat in `record` with its orders, the active ones first, then by medicine. Reads
/// `summary` (repeats, issued prescriptions) and `requests` (orders, dispenses): a reader
/// without one of them sees what the other holds. `ledger` (the record's consent) tells who
/// signed each prescription issued.
pub fn repeats(record: &Record, ledger: &LedgerState) -> Result<Vec<Repeat>, RecordError> {
    let requests = record.resources_of_type(Section::Summary, "MedicationRequest")?;
    let tasks = record.resources_of_type(Section::Requests, "Task")?;
    let dispenses = record.resources_of_type(Section::Requests, "MedicationDispense")?;
    let mut out = Vec::new();
    for plan in requests.iter().filter(|r| is_repeat(r)) {
        let id = text(plan, "id");
        let reference = format!("MedicationRequest/{id}");
        let issued = requests
            .iter()
            .filter(|r| r["intent"] == "order" && r["status"] != "entered-in-error")
            .filter(|r| based_on(r).any(|b| b == reference))
            .count();
        let mut orders: Vec<Order> = tasks
            .iter()
            .filter(|t| is_order(t) && t["focus"]["reference"].as_str() == Some(reference.as_str()))
            .map(|t| order_of(t, &dispenses))
            .collect();
        for order in &mut orders {
            if let Some(prescription) = &order.prescription {
                let key = ResourceKey::new("MedicationRequest", prescription);
                if let Some(Current::One(version)) = record.current(&key)? {
                    order.issued_by = Some(version.author.name.clone());
                    order.prescription_verified =
                        version.by_provider_writing(ledger, Section::Summary);
                }
            }
        }
        orders.sort_by(|a, b| (&a.ordered, &a.id).cmp(&(&b.ordered, &b.id)));
        out.push(Repeat {
            id,
            medicine: plan["medicationCodeableConcept"]["text"]
                .as_str()
                .or_else(|| plan["medicationCodeableConcept"]["coding"][0]["display"].as_str())
                .unwrap_or("a medicine")
                .to_string(),
            dosage: plan["dosageInstruction"][0]["text"]
                .as_str()
                .map(str::to_string),
            status: text(plan, "status"),
            allowed: plan["dispenseRequest"]["numberOfRepeatsAllowed"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            issued: u32::try_from(issued).unwrap_or(u32::MAX),
            review: review_of(plan),
            prescriber: plan["requester"]["display"].as_str().map(str::to_string),
            orders,
        });
    }
    out.sort_by(|a, b| {
        (a.status != "active", &a.medicine, &a.id).cmp(&(b.status != "active", &b.medicine, &b.id))
    });
    Ok(out)
}

/// The order `Task` with id `id`, as stored.
pub fn order_task(record: &Record, id: &str) -> Result<Option<Value>, RecordError> {
    record.get(&ResourceKey::new("Task", id))
}

/// The repeat `MedicationRequest` with id `id`, as stored.
pub fn repeat_plan(record: &Record, id: &str) -> Result<Option<Value>, RecordError> {
    record
        .get(&ResourceKey::new("MedicationRequest", id))
        .map(|plan| plan.filter(is_repeat))
}

fn is_repeat(resource: &Value) -> bool {
    resource["intent"] == "plan"
        && resource["courseOfTherapyType"]["coding"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["code"] == "continuous"))
}

fn is_order(task: &Value) -> bool {
    task["intent"] == "order"
        && task["code"]["coding"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["system"] == SNOMED && c["code"] == RENEWAL_CODE)
        })
}

fn based_on(resource: &Value) -> impl Iterator<Item = &str> {
    resource["basedOn"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["reference"].as_str())
}

fn nominated(task: &Value) -> Option<String> {
    task["input"]
        .as_array()?
        .iter()
        .find(|i| i["type"]["text"] == NOMINATED_PHARMACY)?
        .get("valueReference")?
        .get("identifier")?
        .get("value")?
        .as_str()
        .map(str::to_string)
}

fn order_of(task: &Value, dispenses: &[Value]) -> Order {
    let prescription = task["output"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["type"]["text"] == ISSUED_PRESCRIPTION)
        .and_then(|o| o["valueReference"]["reference"].as_str())
        .and_then(|r| r.strip_prefix("MedicationRequest/"))
        .map(str::to_string);
    let dispensed = prescription.as_ref().and_then(|p| {
        let reference = format!("MedicationRequest/{p}");
        dispenses
            .iter()
            .filter(|d| d["status"] == "completed")
            .find(|d| {
                d["authorizingPrescription"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|r| r["reference"] == reference.as_str()))
            })
            .map(|d| {
                let by = d["performer"][0]["actor"]["display"]
                    .as_str()
                    .unwrap_or("a pharmacy");
                (
                    d["whenHandedOver"].as_str().unwrap_or("").to_string(),
                    by.to_string(),
                )
            })
    });
    Order {
        issued_by: None,
        prescription_verified: false,
        id: text(task, "id"),
        status: text(task, "status"),
        ordered: task["authoredOn"].as_str().map(str::to_string),
        pharmacy: nominated(task),
        reason: task["statusReason"]["text"].as_str().map(str::to_string),
        prescription,
        dispensed,
    }
}

fn review_of(plan: &Value) -> Option<Date> {
    plan["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"] == REPEAT_INFORMATION_URL)?["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"] == "authorisationExpiryDate")?["valueDateTime"]
        .as_str()?
        .get(..10)?
        .parse()
        .ok()
}

fn date_text<S: serde::Serializer>(date: &Option<Date>, to: S) -> Result<S::Ok, S::Error> {
    match date {
        Some(date) => to.serialize_str(&date.to_string()),
        None => to.serialize_none(),
    }
}

fn text(resource: &Value, field: &str) -> String {
    resource[field].as_str().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests;
