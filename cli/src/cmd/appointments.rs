//! `phr appointments`: the patient sees a practice's free slots (asked live of its node), asks
//! for one, sees upcoming and past appointments and cancels; the practice books or declines
//! requests, cancels, and marks attended or no-show. See `phr_core::appointments`.

use anyhow::{Context as _, Result};
use clap::Subcommand;
use jiff::{SignedDuration, Timestamp};
use phr_core::{
    Section,
    api::{SlotsAsk, SlotsFound},
    appointments::{self, Appointment, SLOTS_QUERY_DAYS_MAX, Side, SlotsQuery},
    audit::Logged,
    home::Booking,
    ledger::LedgerState,
    record::Record,
};
use serde_json::{Value, json};

use crate::{
    cmd::{
        messages::{addressee, correspondent, patients_name},
        patients,
        slots::{local, parse_time},
    },
    context::{Context, now, print_out, say, stamp},
    exit::UserError,
    node::NodeApi,
};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples (the patient):
  phr appointments                               # upcoming and past
  phr appointments slots                         # your practice's free slots, asked live
  phr appointments slots --with gp --from 2026-12-14 --days 7
  phr appointments request 5b7e --reason \"Cough for three weeks\"
  phr appointments cancel 9c1d --reason \"Feeling better\"
Examples (the practice, on its node):
  phr --patient 4f2a appointments                # the patient's requests and appointments
  phr --patient 4f2a appointments book 9c1d      # or declined, if the slot was just taken
  phr --patient 4f2a appointments decline 9c1d --reason \"Please see the nurse instead\"
  phr --patient 4f2a appointments attended 9c1d  # or no-show
Free times are published with `phr slots add` on the practice's node.")]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The practice's free slots, asked live of its node (yours must be running)
    Slots {
        /// The practice: a contact's alias or name (needed when several may read requests)
        #[arg(long, value_name = "CONTACT")]
        with: Option<String>,
        /// From this day or time [default: now]
        #[arg(long, value_name = "DATE")]
        from: Option<String>,
        /// How many days from then
        #[arg(long, default_value_t = 14)]
        days: i64,
    },
    /// Ask for a slot (its id, or the start of it, from `appointments slots`)
    Request {
        /// The slot
        slot: String,
        /// Why, in a few words, for the practice
        #[arg(long)]
        reason: String,
        /// The practice: a contact's alias or name
        #[arg(long, value_name = "CONTACT")]
        with: Option<String>,
        /// Look for the slot from this day or time [default: now]
        #[arg(long, value_name = "DATE")]
        from: Option<String>,
    },
    /// Cancel an appointment or a request, saying why
    Cancel {
        /// The appointment (its id, or the start of it)
        id: String,
        /// Why
        #[arg(long)]
        reason: String,
    },
    /// Book a patient's request (the practice); declined if the slot was taken meanwhile
    Book {
        /// The appointment (its id, or the start of it)
        id: String,
    },
    /// Decline a patient's request, saying why (the practice)
    Decline {
        /// The appointment (its id, or the start of it)
        id: String,
        /// Why, in words the patient reads
        #[arg(long)]
        reason: String,
    },
    /// Mark a booked appointment attended (the practice)
    Attended {
        /// The appointment (its id, or the start of it)
        id: String,
    },
    /// Mark a booked appointment missed (the practice)
    NoShow {
        /// The appointment (its id, or the start of it)
        id: String,
    },
}

/// What the practice says to a patient whose slot another booking took.
const TAKEN: &str = "That time has just been booked by someone else; please choose another";

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    match &ctx.patient {
        None => run_patient(ctx, args.command),
        Some(query) => run_provider(ctx, query, args.command),
    }
}

fn start_of(from: Option<&str>) -> Result<Timestamp> {
    match from {
        None => Ok(now()),
        Some(text) if text.len() == 10 => parse_time(&format!("{text}T00:00")),
        Some(text) => parse_time(text),
    }
}

/// Asks the practice `with` names for its free slots, through this home's running node.
fn ask_slots(
    ctx: &Context,
    with: Option<&str>,
    from: Timestamp,
    days: i64,
) -> Result<(SlotsFound, Value)> {
    if !(1..=SLOTS_QUERY_DAYS_MAX).contains(&days) {
        return Err(UserError(format!("ask about 1 to {SLOTS_QUERY_DAYS_MAX} days")).into());
    }
    let practice = {
        let home = ctx.open_home()?;
        let ledger = home.ledger_state()?.clone();
        addressee(&home, &ledger, with)?
    };
    // The home is closed: the node takes it back and syncs while the question travels.
    ctx.give_back();
    let node = NodeApi::require(&ctx.home)?;
    let until = from
        .checked_add(SignedDuration::from_hours(24 * days))
        .context("that span is out of range")?;
    let found: SlotsFound = node.post(
        "/slots",
        &SlotsAsk {
            provider: practice.peer.to_string(),
            query: SlotsQuery {
                from_ms: from.as_millisecond(),
                until_ms: until.as_millisecond(),
            },
        },
    )?;
    Ok((found, correspondent(&practice).reference()))
}

fn run_patient(ctx: &Context, command: Option<Command>) -> Result<()> {
    match command {
        None => {
            let (home, record) = ctx.open_record()?;
            list(
                ctx,
                &appointments::appointments(&record, home.ledger_state()?)?,
            )
        }
        Some(Command::Slots { with, from, days }) => {
            let (found, _) = ask_slots(ctx, with.as_deref(), start_of(from.as_deref())?, days)?;
            if ctx.json {
                return ctx.print_json(&found);
            }
            if found.slots.is_empty() {
                return print_out("No free slots in that span. Try later days with --from.\n");
            }
            let mut out = String::new();
            for slot in &found.slots {
                out.push_str(&format!(
                    "{}  {}  {} minutes  {}\n",
                    &slot.id[..slot.id.len().min(8)],
                    local(slot.start),
                    slot.start.duration_until(slot.end).as_mins(),
                    slot.service
                ));
            }
            out.push_str("Ask for one with `phr appointments request ID --reason \"...\"`.\n");
            print_out(&out)
        }
        Some(Command::Request {
            slot,
            reason,
            with,
            from,
        }) => {
            let (found, practice) = ask_slots(
                ctx,
                with.as_deref(),
                start_of(from.as_deref())?,
                SLOTS_QUERY_DAYS_MAX,
            )?;
            let matches: Vec<_> = found
                .slots
                .iter()
                .filter(|s| !slot.is_empty() && s.id.starts_with(slot.trim()))
                .collect();
            let [offered] = matches[..] else {
                return Err(UserError(if matches.is_empty() {
                    format!(
                        "slot '{slot}' is not free at the practice now (taken, removed or past); \
                         `phr appointments slots` shows what is"
                    )
                } else {
                    format!("'{slot}' starts several slots' ids; type more of it")
                })
                .into());
            };
            let (mut home, mut record) = ctx.open_record()?;
            let patient = json!({
                "reference": record.meta().subject.clone().unwrap_or_default(),
                "display": patients_name(&record),
            });
            let id = phr_core::new_id();
            let asked = appointments::request(offered, &practice, &patient, &reason, &id, now())?;
            let author = home.device().author();
            let stamp = stamp(&author);
            record.put(stamp, &asked)?;
            record.commit(stamp, "request an appointment");
            home.save(&mut record, now())?;
            if ctx.json {
                return ctx.print_json(
                    &json!({"requested": format!("Appointment/{id}"), "resource": asked}),
                );
            }
            say(&format!(
                "Asked for {} at {} (request {}); the practice books or declines it, and you see \
                 which in `phr appointments` once the nodes sync.",
                local(offered.start),
                practice["display"].as_str().unwrap_or("the practice"),
                &id[..8]
            ));
            Ok(())
        }
        Some(Command::Cancel { id, reason }) => {
            let (mut home, mut record) = ctx.open_record()?;
            let stored = find(&record, &id)?;
            let cancelled = appointments::cancel(&stored, Side::Patient, &reason)?;
            let author = home.device().author();
            let stamp = stamp(&author);
            record.put(stamp, &cancelled)?;
            record.commit(stamp, "cancel an appointment");
            home.save(&mut record, now())?;
            done(
                ctx,
                &cancelled,
                "Cancelled; the practice is told when the nodes sync.",
            )
        }
        Some(_) => Err(UserError(
            "booking, declining and marking appointments are for the practice, on its node with \
             --patient RECORD; you can ask for a slot or cancel"
                .into(),
        )
        .into()),
    }
}

fn run_provider(ctx: &Context, query: &str, command: Option<Command>) -> Result<()> {
    let home = ctx.open_home()?;
    let mut patient = patients::open(&home, query)?;
    let record_id = patient.id().to_string();
    let what = match &command {
        None => "appointments",
        Some(Command::Book { .. }) => "appointments book",
        Some(Command::Decline { .. }) => "appointments decline",
        Some(Command::Cancel { .. }) => "appointments cancel",
        Some(Command::Attended { .. }) => "appointments attended",
        Some(Command::NoShow { .. }) => "appointments no-show",
        Some(Command::Slots { .. } | Command::Request { .. }) => {
            return Err(UserError(
                "the patient asks for a slot from their own record; on this node, `phr slots` \
                 publishes free times and `book` answers a request"
                    .into(),
            )
            .into());
        }
    };
    let (record, ledger) =
        patient.read_with_consent(&Logged::read(what, &[Section::Requests]), now())?;
    // Appointments cancelled by the patient give their slots back.
    let all = appointments::appointments(record, ledger)?;
    for appointment in all.iter().filter(|a| a.status == "cancelled") {
        if let Some(slot) = &appointment.slot {
            home.free_slot(slot, &record_id, &appointment.id)?;
        }
    }
    let (changed, told) = match command {
        None => return list(ctx, &all),
        Some(Command::Book { id }) => {
            let stored = find(record, &id)?;
            let slot = stored["slot"][0]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Slot/"))
                .unwrap_or("")
                .to_string();
            let appointment = stored["id"].as_str().unwrap_or("").to_string();
            // Checked before the slot is taken, so a refused change takes nothing.
            appointments::book(&stored)?;
            match home.book_slot(&slot, &record_id, &appointment)? {
                Booking::Booked | Booking::AlreadyThis => (
                    appointments::book(&stored)?,
                    "Booked; the patient sees it when the nodes sync.".to_string(),
                ),
                Booking::Taken(..) => (
                    appointments::decline(&stored, TAKEN)?,
                    "That slot was already booked for another patient: this request was \
                     declined, and the patient is told to choose another time."
                        .to_string(),
                ),
            }
        }
        Some(Command::Decline { id, reason }) => (
            appointments::decline(&find(record, &id)?, &reason)?,
            "Declined; the patient sees why.".into(),
        ),
        Some(Command::Cancel { id, reason }) => {
            let cancelled = appointments::cancel(&find(record, &id)?, Side::Practice, &reason)?;
            if let Some(slot) = cancelled["slot"][0]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Slot/"))
            {
                home.free_slot(slot, &record_id, cancelled["id"].as_str().unwrap_or(""))?;
            }
            (cancelled, "Cancelled; the slot is free again.".into())
        }
        Some(Command::Attended { id }) => (
            appointments::outcome(&find(record, &id)?, true)?,
            "Marked attended.".into(),
        ),
        Some(Command::NoShow { id }) => (
            appointments::outcome(&find(record, &id)?, false)?,
            "Marked as a no-show.".into(),
        ),
        Some(Command::Slots { .. } | Command::Request { .. }) => unreachable!("refused above"),
    };
    if let Err(error) = patient.add(&changed, what, now()) {
        // A booking that was not written gives its slot back.
        if changed["status"] == "booked"
            && let Some(slot) = changed["slot"][0]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Slot/"))
        {
            let _ = home.free_slot(slot, &record_id, changed["id"].as_str().unwrap_or(""));
        }
        return Err(error.into());
    }
    done(ctx, &changed, &told)
}

/// The stored appointment whose id is `query` or starts with it.
fn find(record: &Record, query: &str) -> Result<Value> {
    let query = query.trim();
    // Who wrote each does not matter to finding one.
    let all = appointments::appointments(record, &LedgerState::default())?;
    let matches: Vec<&Appointment> = all
        .iter()
        .filter(|a| !query.is_empty() && a.id.starts_with(query))
        .collect();
    let [one] = matches[..] else {
        return Err(UserError(if matches.is_empty() {
            format!("no appointment's id starts with '{query}'; `phr appointments` lists them")
        } else {
            format!("'{query}' starts several appointments' ids; type more of it")
        })
        .into());
    };
    if one.conflict {
        return Err(UserError(format!(
            "appointment {} has two versions written at once; choose one first (`phr \
             conflicts`, then `phr resolve Appointment/{} --keep VERSION`)",
            one.id, one.id
        ))
        .into());
    }
    record
        .get(&phr_core::fhir::reference::ResourceKey::new(
            "Appointment",
            &one.id,
        ))?
        .context("the appointment went missing")
}

fn done(ctx: &Context, resource: &Value, told: &str) -> Result<()> {
    if ctx.json {
        return ctx.print_json(&json!({"written": resource}));
    }
    say(told);
    Ok(())
}

/// Where an appointment stands, in words.
fn state(a: &Appointment) -> String {
    let said = match a.status.as_str() {
        "proposed" | "pending" => "asked for, waiting for the practice".to_string(),
        "booked" if a.decided_by_practice => "booked".into(),
        "booked" | "fulfilled" | "noshow" if !a.decided_by_practice => format!(
            "marked {} by {}, not by the practice: ask the practice",
            a.status,
            a.written_by.as_deref().unwrap_or("someone unknown")
        ),
        "cancelled" => format!(
            "cancelled: {}",
            a.cancelled_because.as_deref().unwrap_or("no reason given")
        ),
        "fulfilled" => "attended".into(),
        "noshow" => "missed".into(),
        other => other.to_string(),
    };
    if a.conflict {
        format!("{said} (two versions were written at once: see `phr conflicts`)")
    } else {
        said
    }
}

fn list(ctx: &Context, all: &[Appointment]) -> Result<()> {
    if ctx.json {
        return ctx.print_json(&all);
    }
    if all.is_empty() {
        return print_out("No appointments. See free times with `phr appointments slots`.\n");
    }
    let now = now();
    let line = |a: &Appointment| {
        let when = a
            .start
            .as_deref()
            .and_then(|s| s.parse::<Timestamp>().ok())
            .map(local)
            .unwrap_or_else(|| "(no time)".into());
        format!(
            "  {}  {when}  {}{}  {}{}\n",
            &a.id[..a.id.len().min(8)],
            a.service.as_deref().unwrap_or("appointment"),
            a.with
                .as_deref()
                .map(|w| format!(" at {w}"))
                .unwrap_or_default(),
            state(a),
            a.reason
                .as_deref()
                .map(|r| format!(" (reason: {r})"))
                .unwrap_or_default(),
        )
    };
    let (upcoming, past): (Vec<&Appointment>, Vec<&Appointment>) = all.iter().partition(|a| {
        a.start
            .as_deref()
            .and_then(|s| s.parse::<Timestamp>().ok())
            .is_some_and(|start| start >= now)
    });
    let mut out = String::new();
    if !upcoming.is_empty() {
        out.push_str("Upcoming:\n");
        upcoming.iter().for_each(|a| out.push_str(&line(a)));
    }
    if !past.is_empty() {
        out.push_str("Past:\n");
        past.iter().rev().for_each(|a| out.push_str(&line(a)));
    }
    print_out(&out)
}
