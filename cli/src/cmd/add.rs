//! `phr add`: an entry written by hand: symptom, reading, allergy, condition, medication, note.

use anyhow::Result;
use phr_core::{
    entry::{self, EntryKind, NewEntry},
    section::place,
    view,
};
use serde_json::{Value, json};

use crate::{
    cmd::{medicines, patients},
    context::{Context, now, say, stamp},
};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  phr add symptom \"headache\" --severity moderate
  phr add reading blood-pressure 128/82
  phr add allergy penicillin --reaction rash --criticality high
  phr add condition asthma --since 2015-06-01
  phr add medication \"Salbutamol 100mcg inhaler\" --dosage \"2 puffs when needed\"
  phr add note \"Felt dizzy after the new tablets\"")]
pub struct Args {
    /// symptom, reading, allergy, condition, medication or note
    kind: EntryKind,
    /// The symptom, reading kind (e.g. blood-pressure), substance, condition, medicine or note text
    text: String,
    /// A reading's value, e.g. 128/82 or 81.5
    value: Option<String>,
    /// mild, moderate or severe (a symptom, or an allergy's reaction)
    #[arg(long)]
    severity: Option<String>,
    /// What an allergy does, e.g. rash
    #[arg(long)]
    reaction: Option<String>,
    /// An allergy's risk of a serious reaction: low, high or unable-to-assess
    #[arg(long)]
    criticality: Option<String>,
    /// When a condition began
    #[arg(long, value_name = "YYYY-MM-DD")]
    since: Option<String>,
    /// When a symptom began
    #[arg(long, value_name = "YYYY-MM-DD", conflicts_with = "since")]
    onset: Option<String>,
    /// How a medicine is taken, e.g. "2 puffs when needed"
    #[arg(long)]
    dosage: Option<String>,
    /// Keep this entry in the sensitive section, shared only with those granted it
    #[arg(long)]
    sensitive: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let new = NewEntry {
        kind: args.kind,
        text: args.text,
        value: args.value,
        severity: args.severity,
        reaction: args.reaction,
        criticality: args.criticality,
        since: args.since.or(args.onset),
        dosage: args.dosage,
        sensitive: args.sensitive,
        recorded_by: None,
    };
    let id = phr_core::new_id();
    let message = format!("add {}", new.kind.as_str());
    let Some(query) = &ctx.patient else {
        let (mut home, mut record) = ctx.open_record()?;
        let resource = entry::build(&new, record.meta().subject.as_deref(), &id, now())?;
        let author = home.device().author();
        let stamp = stamp(&author);
        record.put(stamp, &resource)?;
        record.commit(stamp, &message);
        home.save(&mut record, now())?;
        let checked = checks(new.kind).then(|| medicines::check_own(&home, &record));
        return report(ctx, &resource, None, checked);
    };
    let home = ctx.open_home()?;
    let mut patient = patients::open(&home, query)?;
    // A reading taken at the practice is a clinical observation, not the patient's own.
    let new = NewEntry {
        recorded_by: Some(home.party().name),
        ..new
    };
    let resource = entry::build(&new, patient.subject(), &id, now())?;
    patient.add(&resource, &message, now())?;
    let checked = checks(new.kind).then(|| medicines::check_patient(&home, &mut patient));
    report(ctx, &resource, Some(&patient.id().to_string()), checked)
}

/// Whether adding an entry of `kind` runs the medicines check: a medicine or an allergy.
fn checks(kind: EntryKind) -> bool {
    matches!(kind, EntryKind::Medication | EntryKind::Allergy)
}

/// Says what was added (to a patient's record, when `patient` names it), and what the
/// medicines check found with it, when it ran (`checked`).
fn report(
    ctx: &Context,
    resource: &Value,
    patient: Option<&str>,
    checked: Option<Result<phr_core::medicines::Check>>,
) -> Result<()> {
    let key = format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap_or("Resource"),
        resource["id"].as_str().unwrap_or("?")
    );
    let section = place(resource);
    if ctx.json {
        let mut out = json!({"added": key, "section": section, "resource": resource});
        if let Some(record) = patient {
            out["record"] = json!(record);
        }
        if let Some(checked) = checked {
            out["medicines_check"] = medicines::report_added(ctx, checked, &key);
        }
        return ctx.print_json(&out);
    }
    say(&format!(
        "Added {key} to {section}: {}",
        view::describe_resource(resource)
    ));
    if let Some(record) = patient {
        say(&format!(
            "It is in record {record} on this node, signed by it, and logged to the patient; it \
             reaches the patient's devices when the nodes sync."
        ));
    }
    if let Some(checked) = checked {
        medicines::report_added(ctx, checked, &key);
    }
    Ok(())
}
