//! `phr repeats`: repeat prescriptions. The patient sees their repeats (issues left, review
//! date, each order's progress) and orders one; the practice sets repeats up, issues or refuses
//! orders; a nominated pharmacy records what it dispensed. See `phr_core::repeats`.

use anyhow::Result;
use clap::Subcommand;
use jiff::civil::Date;
use phr_core::{
    Record, Section,
    audit::Logged,
    messages::Correspondent,
    repeats::{self, NewRepeat, Order, Repeat},
};
use serde_json::{Value, json};

use crate::{
    cmd::patients,
    context::{Context, now, print_out, say, stamp},
    exit::UserError,
};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples (the patient):
  phr repeats                                  # your repeats: issues left, review date, orders
  phr repeats order 7c1e                       # order one (its id, or the start of it)
  phr repeats order 7c1e --pharmacy FA123      # to be collected at this pharmacy (ODS code)
Examples (the practice, on its node):
  phr --patient 4f2a repeats add \"Salbutamol 100micrograms/dose inhaler\" --issues 6 \\
      --review 2027-06-01 --dosage \"2 puffs when needed\"
  phr --patient 4f2a repeats                   # the patient's repeats and orders
  phr --patient 4f2a repeats issue 9d0b        # issue an order
  phr --patient 4f2a repeats reject 9d0b --reason \"Please book a review first\"
Example (the nominated pharmacy):
  phr --patient 4f2a repeats dispensed 9d0b")]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Order a repeat (the patient)
    Order {
        /// The repeat (its id, or the start of it)
        id: String,
        /// The pharmacy to collect it from, by its ODS code
        #[arg(long, value_name = "ODS")]
        pharmacy: Option<String>,
    },
    /// Set up a repeat (the practice, with --patient)
    Add {
        /// The medicine, as prescribed
        medicine: String,
        /// How many times it may be issued before a review
        #[arg(long)]
        issues: u32,
        /// The date it must be reviewed by
        #[arg(long, value_name = "YYYY-MM-DD")]
        review: Date,
        /// How to take it
        #[arg(long)]
        dosage: Option<String>,
    },
    /// Issue an order (the practice, with --patient)
    Issue {
        /// The order (its id, or the start of it)
        order: String,
    },
    /// Refuse an order, saying why (the practice, with --patient)
    Reject {
        /// The order (its id, or the start of it)
        order: String,
        /// Why, in words the patient reads
        #[arg(long)]
        reason: String,
    },
    /// Record that an issued order was dispensed (the pharmacy, with --patient)
    Dispensed {
        /// The order (its id, or the start of it)
        order: String,
    },
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    match &ctx.patient {
        None => run_patient(ctx, args.command),
        Some(query) => run_provider(ctx, query, args.command),
    }
}

fn today() -> Date {
    now().to_zoned(jiff::tz::TimeZone::UTC).date()
}

fn provider_only(what: &str) -> UserError {
    UserError(format!(
        "`phr repeats {what}` is for the practice or pharmacy, on its node with --patient \
         RECORD; on your own record, `phr repeats order ID` orders a repeat"
    ))
}

fn run_patient(ctx: &Context, command: Option<Command>) -> Result<()> {
    let (mut home, mut record) = ctx.open_record()?;
    let all = repeats::repeats(&record, home.ledger_state()?)?;
    let (id, pharmacy) = match command {
        None => return list(ctx, &all, false),
        Some(Command::Order { id, pharmacy }) => (id, pharmacy),
        Some(Command::Add { .. }) => return Err(provider_only("add").into()),
        Some(Command::Issue { .. }) => return Err(provider_only("issue").into()),
        Some(Command::Reject { .. }) => return Err(provider_only("reject").into()),
        Some(Command::Dispensed { .. }) => return Err(provider_only("dispensed").into()),
    };
    let repeat = find_repeat(&all, &id)?;
    let patient = match &record.meta().subject {
        Some(subject) => json!({"reference": subject}),
        None => json!({"display": home.party().name}),
    };
    let order_id = phr_core::new_id();
    let task = repeats::order(
        repeat,
        pharmacy.as_deref(),
        &patient,
        &order_id,
        now(),
        today(),
    )?;
    let author = home.device().author();
    let stamp = stamp(&author);
    record.put(stamp, &task)?;
    record.commit(stamp, "order a repeat");
    home.save(&mut record, now())?;
    let practice_reads = home.ledger_state()?.grants.iter().any(|g| {
        g.access == phr_core::ledger::Access::Write
            && g.sections.contains(&Section::Requests)
            && g.unexpired(now().as_millisecond())
    });
    if ctx.json {
        return ctx.print_json(&json!({"ordered": format!("Task/{order_id}"), "resource": task}));
    }
    say(&format!(
        "Ordered {} (order {}); the practice sees it when the nodes sync.",
        repeat.medicine,
        &order_id[..8]
    ));
    if !practice_reads {
        say(
            "note: no provider may answer in your requests section yet, so nobody can issue \
             it; share it with your practice: `phr share grant gp --sections requests --access \
             write`",
        );
    }
    Ok(())
}

fn run_provider(ctx: &Context, query: &str, command: Option<Command>) -> Result<()> {
    let home = ctx.open_home()?;
    let party = home.party();
    let me = Correspondent::Provider {
        peer: party.peer,
        name: party.name.clone(),
        ods: party.ods.clone(),
    }
    .reference();
    let mut patient = patients::open(&home, query)?;
    if let Some(Command::Add {
        medicine,
        issues,
        review,
        dosage,
    }) = &command
    {
        let new = NewRepeat {
            medicine: medicine.clone(),
            dosage: dosage.clone(),
            issues: *issues,
            review: *review,
            subject: patient.subject().map(str::to_string),
            prescriber: me,
        };
        let id = phr_core::new_id();
        let plan = repeats::repeat(&new, &id, now(), today())?;
        patient.add(&plan, "repeats add", now())?;
        if ctx.json {
            return ctx.print_json(
                &json!({"added": format!("MedicationRequest/{id}"), "resource": plan}),
            );
        }
        say(&format!(
            "Set up a repeat of {} ({} issues, review by {}) as {}; the patient can order it \
             once the nodes sync.",
            medicine.trim(),
            issues,
            review,
            &id[..8]
        ));
        return Ok(());
    }
    let readable = patient.readable(now());
    let sections: Vec<Section> = [Section::Summary, Section::Requests]
        .into_iter()
        .filter(|s| readable.contains(s))
        .collect();
    if !sections.contains(&Section::Summary) {
        return Err(UserError(
            "repeats are in the patient's summary section, which is not shared with this node; \
             ask the patient to grant it"
                .into(),
        )
        .into());
    }
    let what = match &command {
        None => "repeats",
        Some(Command::Issue { .. }) => "repeats issue",
        Some(Command::Reject { .. }) => "repeats reject",
        Some(Command::Dispensed { .. }) => "repeats dispensed",
        Some(Command::Order { .. }) => {
            return Err(UserError(
                "the patient orders a repeat, from their own record; on this node, `issue` or \
                 `reject` answers their order"
                    .into(),
            )
            .into());
        }
        Some(Command::Add { .. }) => unreachable!("handled above"),
    };
    let (record, ledger) = patient.read_with_consent(&Logged::read(what, &sections), now())?;
    let all = repeats::repeats(record, ledger)?;
    let written = match command {
        None => return list(ctx, &all, true),
        Some(Command::Issue { order }) => {
            let (repeat, order) = find_order(&all, &order)?;
            if repeat.left() == 0 {
                return Err(UserError(format!(
                    "every issue of this {} repeat has been used ({} of {}); review it and set \
                     up a new one with `phr --patient {query} repeats add`",
                    repeat.medicine, repeat.issued, repeat.allowed
                ))
                .into());
            }
            let (plan, task) = stored(record, &repeat.id, &order.id)?;
            let id = phr_core::new_id();
            let (prescription, done) = repeats::issue(&plan, &task, &me, &id, now())?;
            (
                vec![prescription, done],
                format!(
                    "Issued {} (prescription {}); {} of {} issues left.",
                    repeat.medicine,
                    &id[..8],
                    repeat.left() - 1,
                    repeat.allowed
                ),
            )
        }
        Some(Command::Reject { order, reason }) => {
            let (repeat, order) = find_order(&all, &order)?;
            let (_, task) = stored(record, &repeat.id, &order.id)?;
            let refused = repeats::reject(&task, &reason, &me, now())?;
            (
                vec![refused],
                format!(
                    "Refused the order of {}; the patient sees why.",
                    repeat.medicine
                ),
            )
        }
        Some(Command::Dispensed { order }) => {
            let (repeat, order) = find_order(&all, &order)?;
            if let (Some(nominated), Some(ods)) = (&order.pharmacy, &party.ods)
                && nominated != ods
            {
                return Err(UserError(format!(
                    "this order is to be collected from pharmacy {nominated}, not this one \
                     ({ods}); nothing was recorded"
                ))
                .into());
            }
            if order.pharmacy.is_some() && party.ods.is_none() {
                return Err(UserError(
                    "this order is nominated to a pharmacy by its ODS code, and this node has \
                     none; nothing was recorded"
                        .into(),
                )
                .into());
            }
            if order.dispensed.is_some() {
                return Err(UserError(format!(
                    "order {} was already dispensed; nothing was recorded",
                    order.id
                ))
                .into());
            }
            let id = phr_core::new_id();
            let subject = record.meta().subject.clone();
            let dispense = repeats::dispense(&order, &repeat, &me, subject.as_deref(), &id, now())?;
            (
                vec![dispense],
                format!("Recorded {} as dispensed.", repeat.medicine),
            )
        }
        Some(Command::Order { .. } | Command::Add { .. }) => unreachable!("handled above"),
    };
    let (resources, told) = written;
    patient.add_all(&resources, what, now())?;
    // A prescription issued is checked against the patient's other medicines and allergies,
    // as `phr add medication` is; the check never undoes the issue.
    let issued = resources
        .iter()
        .find(|r| r["resourceType"] == "MedicationRequest")
        .map(|r| format!("MedicationRequest/{}", r["id"].as_str().unwrap_or("")));
    if !ctx.json {
        say(&told);
    }
    let checked = issued.map(|key| {
        let found = crate::cmd::medicines::check_patient(&home, &mut patient);
        crate::cmd::medicines::report_added(ctx, found, &key)
    });
    if ctx.json {
        let mut out = json!({"written": resources});
        if let Some(checked) = checked {
            out["medicines_check"] = checked;
        }
        return ctx.print_json(&out);
    }
    Ok(())
}

/// The stored repeat and order, to be changed.
fn stored(record: &Record, plan: &str, task: &str) -> Result<(Value, Value)> {
    let plan = repeats::repeat_plan(record, plan)?
        .ok_or_else(|| UserError(format!("repeat {plan} is not in the record")))?;
    let task = repeats::order_task(record, task)?
        .ok_or_else(|| UserError(format!("order {task} is not in the record")))?;
    Ok((plan, task))
}

fn find_repeat<'a>(all: &'a [Repeat], query: &str) -> Result<&'a Repeat> {
    let matches: Vec<&Repeat> = all
        .iter()
        .filter(|r| !query.is_empty() && r.id.starts_with(query.trim()))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(UserError(format!(
            "no repeat's id starts with '{query}'; `phr repeats` lists them"
        ))
        .into()),
        _ => Err(UserError(format!(
            "'{query}' starts several repeats' ids; type more of it"
        ))
        .into()),
    }
}

fn find_order(all: &[Repeat], query: &str) -> Result<(Repeat, Order)> {
    let matches: Vec<(Repeat, Order)> = all
        .iter()
        .flat_map(|r| r.orders.iter().map(move |o| (r.clone(), o.clone())))
        .filter(|(_, o)| !query.is_empty() && o.id.starts_with(query.trim()))
        .collect();
    match <[(Repeat, Order); 1]>::try_from(matches) {
        Ok([one]) => Ok(one),
        Err(matches) if matches.is_empty() => Err(UserError(format!(
            "no order's id starts with '{query}'; `phr --patient RECORD repeats` lists them"
        ))
        .into()),
        Err(_) => Err(UserError(format!(
            "'{query}' starts several orders' ids; type more of it"
        ))
        .into()),
    }
}

fn list(ctx: &Context, all: &[Repeat], provider: bool) -> Result<()> {
    if ctx.json {
        return ctx.print_json(&all);
    }
    if all.is_empty() {
        return print_out(if provider {
            "No repeats in this record. Set one up with `repeats add`.\n"
        } else {
            "You have no repeat prescriptions. Your practice sets them up.\n"
        });
    }
    let today = today();
    let mut out = String::new();
    for repeat in all {
        let review = match repeat.review {
            Some(review) if review < today => format!("review was due {review}"),
            Some(review) => format!("review by {review}"),
            None => "no review date".into(),
        };
        out.push_str(&format!(
            "{}  {}{}\n  {} of {} issues left, {review}{}\n",
            &repeat.id[..repeat.id.len().min(8)],
            repeat.medicine,
            if repeat.status == "active" {
                String::new()
            } else {
                format!(" ({})", repeat.status)
            },
            repeat.left(),
            repeat.allowed,
            repeat
                .dosage
                .as_deref()
                .map(|d| format!("; {d}"))
                .unwrap_or_default(),
        ));
        for order in &repeat.orders {
            out.push_str(&format!(
                "  order {}: {}\n",
                &order.id[..order.id.len().min(8)],
                progress(order)
            ));
        }
    }
    print_out(&out)
}

/// Where an order stands, in words.
fn progress(order: &Order) -> String {
    let when = order
        .ordered
        .as_deref()
        .and_then(|t| t.get(..10))
        .unwrap_or("?");
    let at = order
        .pharmacy
        .as_deref()
        .map(|p| format!(", to collect from pharmacy {p}"))
        .unwrap_or_default();
    match (order.status.as_str(), &order.dispensed) {
        (_, Some((time, by))) => format!(
            "ordered {when}, issued, dispensed by {by} on {}",
            time.get(..10).unwrap_or(time)
        ),
        ("requested", _) => format!("ordered {when}, waiting for the practice{at}"),
        ("completed", _) if order.prescription_verified => format!(
            "ordered {when}, issued by {}{at}",
            order.issued_by.as_deref().unwrap_or("the practice")
        ),
        ("completed", _) => format!(
            "ordered {when}, marked issued, but its prescription was written by {}, not a \
             practice that may prescribe: no pharmacy will dispense it",
            order.issued_by.as_deref().unwrap_or("nobody known")
        ),
        ("rejected", _) => format!(
            "ordered {when}, refused: {}",
            order.reason.as_deref().unwrap_or("no reason given")
        ),
        (other, _) => format!("ordered {when}, {other}"),
    }
}
