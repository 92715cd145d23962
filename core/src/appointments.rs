//! Appointments: a practice's free times, and the `Appointment` a patient asks for.
//!
//! - **Free times** are the practice's own: a `Schedule` of `Slot`s (start, end, service,
//!   free or busy) kept on its node as a sealed local setting (`Home::schedule`), never copied
//!   into patients' records. A patient's node asks for them live over libp2p
//!   ([`SlotsQuery`] → [`SlotsAnswer`], protocol `/phr/slots/1`), answered only to the owner
//!   devices of a record that admits the practice, and only by a practice the patient's ledger
//!   admits.
//! - **The request** is an `Appointment` the patient writes in `requests`: `status` `proposed`,
//!   the slot it is for, its start and end, the reason, and two participants, the patient
//!   (`accepted`) and the practice (`needs-action`).
//! - **The practice decides**: `booked` (its participant `accepted`, the slot busy on its node)
//!   or `cancelled` with a reason (its participant `declined`). Two patients asking for one slot:
//!   the first the practice books gets it; booking the second finds the slot busy and declines
//!   it with "that time has just been booked" (`phr appointments book` does both).
//! - **Either side cancels** (`cancelled`, a reason, its own participant `declined`); the
//!   practice marks a booked appointment `fulfilled` (attended) or `noshow`.
//!
//! An appointment has two writers (the patient asks and may cancel; the practice decides), so a
//! patient's cancellation made while the practice books is a conflict for a person
//! (`phr conflicts`), never lost.
//!
//! The module does no I/O: callers pass ids and times.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    Section,
    ledger::LedgerState,
    record::{Current, Record, RecordError},
};

/// The most slots a practice's schedule keeps; past slots are dropped as new ones are added.
pub const SCHEDULE_SLOTS_MAX: usize = 5_000;
/// The most slots one `phr slots add` makes.
pub const SLOTS_PER_ADD_MAX: u32 = 200;
/// The shortest and longest slot, in minutes.
pub const SLOT_MINUTES_MIN: u32 = 5;
/// See [`SLOT_MINUTES_MIN`].
pub const SLOT_MINUTES_MAX: u32 = 480;
/// The most free slots one answer carries; a patient asks for a shorter span to see more.
pub const SLOTS_ANSWER_MAX: usize = 200;
/// The longest span one query may ask about, in days.
pub const SLOTS_QUERY_DAYS_MAX: i64 = 92;
/// The largest query and answer on the wire, in bytes (the codec refuses larger unread).
pub const SLOTS_QUERY_BYTES_MAX: u64 = 1024;
/// See [`SLOTS_QUERY_BYTES_MAX`].
pub const SLOTS_ANSWER_BYTES_MAX: u64 = 128 * 1024;
/// The longest service name and reason, in bytes.
pub const APPOINTMENT_TEXT_BYTES_MAX: usize = 1024;

/// One slot of a practice's schedule, as its node keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Its id (a `Slot` logical id).
    pub id: String,
    /// When it starts and ends (RFC 3339).
    pub start: Timestamp,
    /// See [`Slot::start`].
    pub end: Timestamp,
    /// What it is for, e.g. "GP appointment".
    pub service: String,
    /// The appointment booked in it (`record id`, `Appointment` id); free when `None`.
    pub booked: Option<(String, String)>,
}

impl Slot {
    /// The FHIR R4 `Slot` (`status` `free` or `busy`), for export and display.
    pub fn to_fhir(&self, schedule: &str) -> Value {
        json!({
            "resourceType": "Slot",
            "id": self.id,
            "schedule": {"reference": format!("Schedule/{schedule}")},
            "serviceType": [{"text": self.service}],
            "status": if self.booked.is_some() { "busy" } else { "free" },
            "start": self.start.to_string(),
            "end": self.end.to_string(),
        })
    }

    /// What a patient is told of it.
    pub fn offered(&self) -> OfferedSlot {
        OfferedSlot {
            id: self.id.clone(),
            start: self.start,
            end: self.end,
            service: self.service.clone(),
        }
    }
}

/// A free slot, as a practice's node offers it to a patient's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedSlot {
    /// The slot's id.
    pub id: String,
    /// When it starts.
    pub start: Timestamp,
    /// When it ends.
    pub end: Timestamp,
    /// What it is for.
    pub service: String,
}

/// Whether an offered slot is one a request can name: its id a FHIR id, its start before its
/// end, its service 1 to [`APPOINTMENT_TEXT_BYTES_MAX`] bytes. A patient's node drops any
/// other a practice's node sends.
pub fn is_offerable(slot: &OfferedSlot) -> bool {
    crate::fhir::is_valid_id(&slot.id)
        && slot.start < slot.end
        && !slot.service.trim().is_empty()
        && slot.service.len() <= APPOINTMENT_TEXT_BYTES_MAX
}

/// A patient's node asking a practice's for its free slots between two times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotsQuery {
    /// From (inclusive), unix milliseconds.
    pub from_ms: i64,
    /// Until (exclusive), unix milliseconds; at most [`SLOTS_QUERY_DAYS_MAX`] after `from_ms`.
    pub until_ms: i64,
}

/// The practice's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotsAnswer {
    /// The free slots starting in the span, earliest first, at most [`SLOTS_ANSWER_MAX`].
    Free(Vec<OfferedSlot>),
    /// Not answered, and why (the asker is not admitted, the query is malformed).
    Refused(String),
}

/// The free slots of `schedule` that `query` asks for, as a practice's node answers, or why it
/// refuses. The asker's admission is the caller's to check first.
pub fn answer(schedule: &[Slot], query: &SlotsQuery, now_ms: i64) -> SlotsAnswer {
    let span_ms = query.until_ms.saturating_sub(query.from_ms);
    if span_ms <= 0 || span_ms > SLOTS_QUERY_DAYS_MAX * 86_400_000 {
        return SlotsAnswer::Refused(format!(
            "ask for a span of up to {SLOTS_QUERY_DAYS_MAX} days"
        ));
    }
    let from = query.from_ms.max(now_ms);
    let mut free: Vec<OfferedSlot> = schedule
        .iter()
        .filter(|s| s.booked.is_none())
        .filter(|s| (from..query.until_ms).contains(&s.start.as_millisecond()))
        .map(Slot::offered)
        .collect();
    free.sort_by(|a, b| (a.start, &a.id).cmp(&(b.start, &b.id)));
    free.truncate(SLOTS_ANSWER_MAX);
    SlotsAnswer::Free(free)
}

/// Why slots or an appointment cannot be made or changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppointmentError {
    /// Slot length out of range.
    #[error("a slot lasts {SLOT_MINUTES_MIN} to {SLOT_MINUTES_MAX} minutes, not {0}")]
    Minutes(u32),
    /// Count out of range.
    #[error("add 1 to {SLOTS_PER_ADD_MAX} slots at a time, not {0}")]
    Count(u32),
    /// Slots in the past.
    #[error("the first slot starts in the past ({0}); choose a later time")]
    Past(Timestamp),
    /// Text over its bound or empty where needed.
    #[error("{0} must be 1 to {APPOINTMENT_TEXT_BYTES_MAX} bytes")]
    Text(&'static str),
    /// The schedule is full.
    #[error(
        "the schedule would hold more than {SCHEDULE_SLOTS_MAX} slots; remove some first \
         (`phr slots remove ID`)"
    )]
    ScheduleFull,
    /// A slot that overlaps another.
    #[error("a new slot at {0} overlaps one already in the schedule; nothing was added")]
    Overlap(Timestamp),
    /// The appointment is not in a state that allows this.
    #[error("appointment {id} is {status}; it cannot be {doing}")]
    State {
        /// The appointment.
        id: String,
        /// Its status.
        status: String,
        /// What was tried.
        doing: &'static str,
    },
}

/// `count` slots of `minutes` each, back to back from `start`, for `service`. `ids` gives each
/// its id. Refused if any bound is passed or `start` is before `now`.
pub fn make_slots(
    start: Timestamp,
    minutes: u32,
    count: u32,
    service: &str,
    now: Timestamp,
    mut ids: impl FnMut() -> String,
) -> Result<Vec<Slot>, AppointmentError> {
    if !(SLOT_MINUTES_MIN..=SLOT_MINUTES_MAX).contains(&minutes) {
        return Err(AppointmentError::Minutes(minutes));
    }
    if !(1..=SLOTS_PER_ADD_MAX).contains(&count) {
        return Err(AppointmentError::Count(count));
    }
    if start < now {
        return Err(AppointmentError::Past(start));
    }
    let service = bounded(service, "the service")?;
    let length = SignedDuration::from_mins(i64::from(minutes));
    let mut slots = Vec::with_capacity(count as usize);
    let mut at = start;
    for _ in 0..count {
        let end = at
            .checked_add(length)
            .map_err(|_| AppointmentError::Past(start))?;
        slots.push(Slot {
            id: ids(),
            start: at,
            end,
            service: service.to_string(),
            booked: None,
        });
        at = end;
    }
    Ok(slots)
}

/// `schedule` with `new` added, past slots that are free dropped first; refused if a new slot
/// overlaps one kept, or the schedule would pass [`SCHEDULE_SLOTS_MAX`].
pub fn add_to_schedule(
    schedule: &[Slot],
    new: Vec<Slot>,
    now: Timestamp,
) -> Result<Vec<Slot>, AppointmentError> {
    let mut kept: Vec<Slot> = schedule
        .iter()
        .filter(|s| s.end > now || s.booked.is_some())
        .cloned()
        .collect();
    for slot in &new {
        if kept
            .iter()
            .any(|k| k.start < slot.end && slot.start < k.end)
        {
            return Err(AppointmentError::Overlap(slot.start));
        }
    }
    if kept.len() + new.len() > SCHEDULE_SLOTS_MAX {
        return Err(AppointmentError::ScheduleFull);
    }
    kept.extend(new);
    kept.sort_by(|a, b| (a.start, &a.id).cmp(&(b.start, &b.id)));
    Ok(kept)
}

fn bounded<'a>(text: &'a str, what: &'static str) -> Result<&'a str, AppointmentError> {
    let text = text.trim();
    if text.is_empty() || text.len() > APPOINTMENT_TEXT_BYTES_MAX {
        return Err(AppointmentError::Text(what));
    }
    Ok(text)
}

/// The patient's request for `slot` at the practice `practice` (a FHIR `Reference`).
pub fn request(
    slot: &OfferedSlot,
    practice: &Value,
    patient: &Value,
    reason: &str,
    id: &str,
    now: Timestamp,
) -> Result<Value, AppointmentError> {
    let reason = bounded(reason, "the reason")?;
    Ok(json!({
        "resourceType": "Appointment",
        "id": id,
        "status": "proposed",
        "serviceType": [{"text": slot.service}],
        "reasonCode": [{"text": reason}],
        "start": slot.start.to_string(),
        "end": slot.end.to_string(),
        "slot": [{"reference": format!("Slot/{}", slot.id)}],
        "created": now.to_string()[..10],
        "participant": [
            {"actor": patient, "required": "required", "status": "accepted"},
            {"actor": practice, "required": "required", "status": "needs-action"}
        ]
    }))
}

/// What `appointment` becomes when the practice books it.
pub fn book(appointment: &Value) -> Result<Value, AppointmentError> {
    expect(appointment, &["proposed", "pending"], "booked")?;
    let mut booked = appointment.clone();
    booked["status"] = json!("booked");
    set_participant(&mut booked, Side::Practice, "accepted");
    Ok(booked)
}

/// What `appointment` becomes when the practice declines it (`reason` said to the patient).
pub fn decline(appointment: &Value, reason: &str) -> Result<Value, AppointmentError> {
    expect(appointment, &["proposed", "pending"], "declined")?;
    let reason = bounded(reason, "the reason")?;
    let mut declined = appointment.clone();
    declined["status"] = json!("cancelled");
    declined["cancelationReason"] = json!({"text": reason});
    set_participant(&mut declined, Side::Practice, "declined");
    Ok(declined)
}

/// Which side acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The patient (the first participant).
    Patient,
    /// The practice (the second).
    Practice,
}

/// What `appointment` becomes when `side` cancels it.
pub fn cancel(appointment: &Value, side: Side, reason: &str) -> Result<Value, AppointmentError> {
    expect(appointment, &["proposed", "pending", "booked"], "cancelled")?;
    let reason = bounded(reason, "the reason")?;
    let mut cancelled = appointment.clone();
    cancelled["status"] = json!("cancelled");
    cancelled["cancelationReason"] = json!({"text": reason});
    set_participant(&mut cancelled, side, "declined");
    Ok(cancelled)
}

/// What a booked `appointment` becomes once it took place (`attended`) or the patient did not
/// come.
pub fn outcome(appointment: &Value, attended: bool) -> Result<Value, AppointmentError> {
    let doing = if attended {
        "marked attended"
    } else {
        "marked as a no-show"
    };
    expect(appointment, &["booked", "arrived"], doing)?;
    let mut done = appointment.clone();
    done["status"] = json!(if attended { "fulfilled" } else { "noshow" });
    Ok(done)
}

fn expect(
    appointment: &Value,
    allowed: &[&str],
    doing: &'static str,
) -> Result<(), AppointmentError> {
    let status = appointment["status"].as_str().unwrap_or("");
    if allowed.contains(&status) {
        Ok(())
    } else {
        Err(AppointmentError::State {
            id: appointment["id"].as_str().unwrap_or("").to_string(),
            status: status.to_string(),
            doing,
        })
    }
}

fn set_participant(appointment: &mut Value, side: Side, status: &str) {
    let index = match side {
        Side::Patient => 0,
        Side::Practice => 1,
    };
    if let Some(participant) = appointment["participant"].get_mut(index) {
        participant["status"] = json!(status);
    }
}

/// One appointment as the record holds it.
#[derive(Clone, Debug, Serialize)]
pub struct Appointment {
    /// Its id.
    pub id: String,
    /// `proposed`, `booked`, `cancelled`, `fulfilled`, `noshow`, ...
    pub status: String,
    /// When it starts and ends, as written.
    pub start: Option<String>,
    /// See [`Appointment::start`].
    pub end: Option<String>,
    /// What it is for.
    pub service: Option<String>,
    /// Why the patient asked.
    pub reason: Option<String>,
    /// Who it is with (the practice's name as written).
    pub with: Option<String>,
    /// The slot it is for.
    pub slot: Option<String>,
    /// Why it was cancelled or declined.
    pub cancelled_because: Option<String>,
    /// Whether concurrent versions wait for a person (`phr conflicts`).
    pub conflict: bool,
    /// Who wrote its current version, as its signature says.
    pub written_by: Option<String>,
    /// Whether its status is one its writer may decide: `booked`, `fulfilled` and `noshow`
    /// are the practice's (a provider with write access to `requests`, in changes its own
    /// signature proves); the others either side's. A booking the patient's device wrote is
    /// not the practice's, and is shown as such.
    pub decided_by_practice: bool,
}

/// Every appointment in `record`, earliest first. `ledger` (the record's consent) tells who
/// wrote each.
pub fn appointments(
    record: &Record,
    ledger: &LedgerState,
) -> Result<Vec<Appointment>, RecordError> {
    let mut out: Vec<Appointment> = record
        .resources(Section::Requests)?
        .into_iter()
        .filter(|(key, _, _)| key.resource_type == "Appointment")
        .map(|(key, a, conflict)| {
            let text = |v: &Value| v.as_str().map(str::to_string);
            let version = match record.current(&key) {
                Ok(Some(Current::One(version))) => Some(version),
                _ => None,
            };
            let status = text(&a["status"]).unwrap_or_default();
            let by_provider = version
                .as_ref()
                .is_some_and(|v| v.by_provider_writing(ledger, Section::Requests));
            let decided_by_practice = match status.as_str() {
                "booked" | "fulfilled" | "noshow" | "arrived" | "checked-in" => by_provider,
                _ => true,
            };
            Appointment {
                written_by: version.map(|v| v.author.name),
                decided_by_practice,
                id: text(&a["id"]).unwrap_or_default(),
                status,
                start: text(&a["start"]),
                end: text(&a["end"]),
                service: text(&a["serviceType"][0]["text"]),
                reason: text(&a["reasonCode"][0]["text"]),
                with: text(&a["participant"][1]["actor"]["display"]),
                slot: a["slot"][0]["reference"]
                    .as_str()
                    .and_then(|r| r.strip_prefix("Slot/"))
                    .map(str::to_string),
                cancelled_because: text(&a["cancelationReason"]["text"]),
                conflict,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.start, &a.id).cmp(&(&b.start, &b.id)));
    Ok(out)
}

#[cfg(test)]
mod tests;
