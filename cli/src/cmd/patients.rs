//! `phr patients`: on a provider node, the records patients share with it. And `--patient`,
//! which points `show`, `add`, `history` and `export` at one of them.

use anyhow::Result;
use clap::Subcommand;
use phr_core::{
    Section,
    home::{
        Home, PENDING_RECORD_BYTES_MAX, PENDING_RECORDS_MAX, PatientQuery, PatientRecord,
        SharedRecord,
    },
    view::PatientHeader,
};
use serde_json::json;

use crate::{
    cmd::share::{grant_json, grant_terms, sections_text},
    context::{Context, now, print_out, tell},
    exit::UserError,
};

/// Takes `--patient RECORD` into the context: only the record commands honour it.
pub fn take_flag(ctx: &mut Context, patient: Option<String>, honoured: bool) -> Result<()> {
    if patient.is_some() && !honoured {
        return Err(UserError(
            "--patient works with show, add, amend, stop, recovered, entered-in-error, history, export, import, imports, conflicts, messages, repeats, appointments and medicines check only; run this command without it"
                .into(),
        )
        .into());
    }
    ctx.patient = patient;
    Ok(())
}

/// The patient's record `--patient` names, opened on this node within its grant.
pub fn open<'h>(home: &'h Home, query: &str) -> Result<PatientRecord<'h>> {
    let open = home.open_patient(query, now())?;
    for warning in open.warnings() {
        tell(&format!("warning: {warning}"));
    }
    Ok(open)
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  phr patients                        # the first 50, by name
  phr patients --search lovelace      # by name, NHS number or record id
  phr patients --search \"943 476 5919\"
  phr patients --page 2
Only the names on the page shown are read and logged to their patients.")]
pub struct Args {
    /// List the records shared with this node that nobody here has accepted yet
    #[arg(long)]
    pending: bool,
    /// Only patients whose name, NHS number or record id (its start) matches
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,
    /// Which page of the list, from 1
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    page: u32,
    /// How many patients a page shows
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    per_page: u32,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Take on a newly shared record: it is listed and readable within its grant from now on
    Accept {
        /// The record's id (as `phr patients --pending` shows it, or its start)
        record: String,
    },
    /// Refuse a newly shared record: what this node stored of it is deleted
    Decline {
        /// The record's id (as `phr patients --pending` shows it, or its start)
        record: String,
    },
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let home = ctx.open_home()?;
    match args.command {
        Some(Command::Accept { record }) => {
            let id = home.accept_patient(&record)?;
            if ctx.json {
                return ctx.print_json(&json!({"accepted": id.to_string()}));
            }
            print_out(&format!(
                "Accepted record {id}: `phr patients` lists it and `phr --patient {} show` reads \
                 it within its grant. The rest of it arrives at the next sync.\n",
                &id.to_string()[..12]
            ))
        }
        Some(Command::Decline { record }) => {
            let id = home.decline_patient(&record)?;
            if ctx.json {
                return ctx.print_json(&json!({"declined": id.to_string()}));
            }
            print_out(&format!(
                "Declined record {id}: what this node held of it is deleted and it will not be \
                 taken in again. If that was a mistake, `phr patients accept {id}` takes it at \
                 the next sync.\n"
            ))
        }
        None if args.pending => list(ctx, &home.pending_patients(now())?, true),
        None => {
            let query = PatientQuery {
                search: args.search.clone(),
                page: args.page as usize,
                per_page: args.per_page as usize,
            };
            let page = home.patients_page(now(), &query)?;
            if page.items.is_empty() && page.total > 0 {
                return Err(UserError(format!(
                    "page {} is past the end: the last page is {} ({} {}, {} a page)",
                    args.page,
                    page.total.div_ceil(query.per_page),
                    page.total,
                    if page.total == 1 {
                        "patient"
                    } else {
                        "patients"
                    },
                    query.per_page
                ))
                .into());
            }
            if page.items.is_empty() && args.search.is_some() {
                if ctx.json {
                    return ctx.print_json(&json!([]));
                }
                return print_out("No patient on this node matches that.\n");
            }
            list(ctx, &page.items, false)?;
            let first = (query.page - 1) * query.per_page + 1;
            let last = first + page.items.len() - 1;
            if page.total > page.items.len() && !ctx.json {
                tell(&format!(
                    "Showing {first}–{last} of {}{}",
                    page.total,
                    if last < page.total {
                        format!(": `phr patients --page {}` shows the next", args.page + 1)
                    } else {
                        String::new()
                    }
                ));
            }
            let waiting = home.pending_records()?.len();
            if waiting > 0 && !ctx.json {
                tell(&format!(
                    "{waiting} more shared with this node wait for acceptance: `phr patients \
                     --pending` lists them"
                ));
            }
            Ok(())
        }
    }
}

fn list(ctx: &Context, shared: &[SharedRecord], pending: bool) -> Result<()> {
    for record in shared {
        for warning in &record.warnings {
            tell(&format!("warning: {warning}"));
        }
    }
    if ctx.json {
        let items: Vec<_> = shared.iter().map(record_json).collect();
        return ctx.print_json(&items);
    }
    if shared.is_empty() {
        return print_out(if pending {
            "No record waits for acceptance.\n"
        } else {
            "No patient has shared a record with this node yet (or none is accepted: see `phr \
             patients --pending`). A patient grants access with `phr share grant` and this \
             node's card (`phr card`); the record arrives when the two nodes sync.\n"
        });
    }
    let now_ms = now().as_millisecond();
    let mut out = String::new();
    if pending {
        out += &format!(
            "Shared with this node and not accepted yet (at most {PENDING_RECORDS_MAX} wait at \
             once, each stored up to {} KiB until accepted):\n\n",
            PENDING_RECORD_BYTES_MAX / 1024
        );
    }
    for record in shared {
        out += &format!("{}  {}\n", record.id, who(record.patient.as_ref()));
        if let Some((by, when)) = &record.shared_by {
            out += &format!(
                "    shared by {by} on {}\n",
                when.strftime("%Y-%m-%d %H:%M UTC")
            );
        }
        match (&record.ended, record.grants.is_empty()) {
            (Some(ended), _) => {
                out += &format!(
                    "    access ended on {}: the patient withdrew it; this copy is as of {} and is \
                     not shown\n",
                    ended.ended.strftime("%Y-%m-%d"),
                    ended
                        .copy_as_of
                        .map(|t| t.strftime("%Y-%m-%d").to_string())
                        .unwrap_or_else(|| "(no entries)".into())
                );
            }
            (None, true) => {
                out += "    no grant in force: the patient revoked this node's access\n";
            }
            (None, false) => {}
        }
        for grant in &record.grants {
            out += &format!("    {}\n", grant_terms(grant, now_ms));
        }
    }
    out += if pending {
        "\nCheck who the patient is, then `phr patients accept RECORD` or `phr patients decline \
         RECORD` (the start of its id is enough). Showing the name above was logged to the \
         patient.\n"
    } else {
        "\nRead one with `phr --patient RECORD show` (RECORD: the start of its id, or the \
         patient's NHS number); each read is logged to the patient.\n"
    };
    print_out(&out)
}

/// `Ada Lovelace, NHS number 943 476 5919, born 1815-12-10`, or why it is not shown.
fn who(patient: Option<&PatientHeader>) -> String {
    let Some(patient) = patient else {
        return "(this node may not read who the patient is)".into();
    };
    let mut parts = vec![patient.name.clone().unwrap_or_else(|| "(no name)".into())];
    if let Some(nhs) = &patient.nhs_number {
        parts.push(format!("NHS number {nhs}"));
    }
    if let Some(born) = &patient.birth_date {
        parts.push(format!("born {born}"));
    }
    parts.join(", ")
}

fn record_json(record: &SharedRecord) -> serde_json::Value {
    let sections = |s: &[Section]| -> Vec<&str> { s.iter().map(|s| s.as_str()).collect() };
    json!({
        "record": record.id.to_string(),
        "patient": record.patient.as_ref().map(|p| json!({
            "name": p.name,
            "nhs_number": p.nhs_number,
            "birth_date": p.birth_date,
        })),
        "readable": sections(&record.readable),
        "writable": sections(&record.writable),
        "grants": record.grants.iter().map(grant_json).collect::<Vec<_>>(),
        "shared_by": record.shared_by.as_ref().map(|(by, when)| json!({
            "device": by,
            "time": when.to_string(),
        })),
        "stored_bytes": record.stored_bytes,
        "access_ended": record.ended.map(|e| json!({
            "ended": e.ended.to_string(),
            "copy_as_of": e.copy_as_of.map(|t| t.to_string()),
        })),
    })
}

/// Sections in words, or `nothing`.
pub fn sections_or_nothing(sections: &[Section]) -> String {
    if sections.is_empty() {
        "nothing".into()
    } else {
        sections_text(sections)
    }
}
