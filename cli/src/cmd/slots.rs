//! `phr slots`: a practice's free times, kept on its node and offered live to its patients'
//! nodes (`phr appointments slots` on theirs). See `phr_core::appointments`.

use anyhow::Result;
use clap::Subcommand;
use jiff::Timestamp;
use phr_core::appointments::{self, Slot};
use serde_json::json;

use crate::{
    context::{Context, now, print_out, say},
    exit::UserError,
};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples (on a practice's node):
  phr slots add --start 2026-12-10T09:00 --minutes 10 --count 6   # six 10-minute slots
  phr slots add --start 2026-12-10T14:00 --minutes 20 --count 3 --service \"Nurse appointment\"
  phr slots                                                       # every slot: free or booked
  phr slots remove 5b7e                                           # a free slot, by id
Times without an offset are this computer's local time.")]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Add slots, back to back
    Add {
        /// When the first starts: 2026-12-10T09:00 (local time) or with an offset
        #[arg(long, value_name = "TIME")]
        start: String,
        /// How long each lasts, in minutes
        #[arg(long, default_value_t = 10)]
        minutes: u32,
        /// How many
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// What they are for
        #[arg(long, default_value = "GP appointment")]
        service: String,
    },
    /// Remove a free slot
    Remove {
        /// The slot (its id, or the start of it)
        id: String,
    },
}

/// A time as typed: RFC 3339 with an offset, or a local date and time.
pub fn parse_time(text: &str) -> Result<Timestamp> {
    if let Ok(time) = text.parse::<Timestamp>() {
        return Ok(time);
    }
    let civil: jiff::civil::DateTime = text.parse().map_err(|_| {
        UserError(format!(
            "'{text}' is not a time; write it as 2026-12-10T09:00 (local time) or \
             2026-12-10T09:00:00Z"
        ))
    })?;
    Ok(civil
        .to_zoned(jiff::tz::TimeZone::system())
        .map_err(|e| UserError(format!("'{text}' is not a local time here: {e}")))?
        .timestamp())
}

/// A time as a person reads it: local, to the minute.
pub fn local(time: Timestamp) -> String {
    time.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%a %Y-%m-%d %H:%M")
        .to_string()
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let home = ctx.open_home()?;
    if home.record_id().is_some() {
        return Err(UserError(
            "slots are a practice's free times, published from its node (`phr init --provider`); \
             to book one, `phr appointments slots` asks your practice's node"
                .into(),
        )
        .into());
    }
    match args.command {
        None => {
            let schedule = home.schedule()?;
            list(ctx, &schedule)
        }
        Some(Command::Add {
            start,
            minutes,
            count,
            service,
        }) => {
            let start = parse_time(&start)?;
            let slots = appointments::make_slots(start, minutes, count, &service, now(), || {
                phr_core::new_id()
            })?;
            let added = slots.len();
            let first = slots[0].start;
            let last = slots[added - 1].end;
            home.add_slots(slots, now())?;
            if ctx.json {
                return ctx.print_json(&json!({"added": added}));
            }
            say(&format!(
                "Added {added} {} from {} to {}; patients' nodes that ask see them at once.",
                if added == 1 { "slot" } else { "slots" },
                local(first),
                local(last)
            ));
            Ok(())
        }
        Some(Command::Remove { id }) => {
            let removed = home.remove_slot(&id)?;
            if ctx.json {
                return ctx.print_json(&json!({"removed": removed.id}));
            }
            say(&format!("Removed the slot at {}.", local(removed.start)));
            Ok(())
        }
    }
}

fn list(ctx: &Context, schedule: &[Slot]) -> Result<()> {
    if ctx.json {
        let slots: Vec<_> = schedule.iter().map(|s| s.to_fhir("practice")).collect();
        return ctx.print_json(&slots);
    }
    if schedule.is_empty() {
        return print_out("No slots yet. Add some with `phr slots add --start TIME --count N`.\n");
    }
    let mut out = String::new();
    for slot in schedule {
        out.push_str(&format!(
            "{}  {}-{}  {}  {}\n",
            &slot.id[..slot.id.len().min(8)],
            local(slot.start),
            slot.end
                .to_zoned(jiff::tz::TimeZone::system())
                .strftime("%H:%M"),
            slot.service,
            match &slot.booked {
                None => "free".to_string(),
                Some((record, appointment)) => format!(
                    "booked: record {} appointment {}",
                    &record[..record.len().min(12)],
                    &appointment[..appointment.len().min(8)]
                ),
            }
        ));
    }
    print_out(&out)
}
