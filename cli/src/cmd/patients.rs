//! `phr patients`: on a provider node, the records patients share with it. And `--patient`,
//! which points `show`, `add`, `history` and `export` at one of them.

use anyhow::Result;
use phr_core::{
    Section,
    home::{Home, PatientRecord, SharedRecord},
    view::PatientHeader,
};
use serde_json::json;

use crate::{
    cmd::share::{grant_json, grant_terms, sections_text},
    context::{Context, now, print_out},
    exit::UserError,
};

/// Takes `--patient RECORD` into the context: only the record commands honour it.
pub fn take_flag(ctx: &mut Context, patient: Option<String>, honoured: bool) -> Result<()> {
    if patient.is_some() && !honoured {
        return Err(UserError(
            "--patient works with show, add, history, export, import and conflicts only; run this command without it"
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
        eprintln!("warning: {warning}");
    }
    Ok(open)
}

pub fn run(ctx: &Context) -> Result<()> {
    let home = ctx.open_home()?;
    let shared = home.patients(now())?;
    for record in &shared {
        for warning in &record.warnings {
            eprintln!("warning: {warning}");
        }
    }
    if ctx.json {
        let items: Vec<_> = shared.iter().map(record_json).collect();
        return ctx.print_json(&items);
    }
    if shared.is_empty() {
        return print_out(
            "No patient has shared a record with this node yet. A patient grants access with \
             `phr share grant` and this node's card (`phr card`); the record arrives when the two \
             nodes sync.\n",
        );
    }
    let now_ms = now().as_millisecond();
    let mut out = String::new();
    for record in &shared {
        out += &format!("{}  {}\n", record.id, who(record.patient.as_ref()));
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
    out += "\nRead one with `phr --patient RECORD show` (the start of its id is enough); each read \
            is logged to the patient.\n";
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
