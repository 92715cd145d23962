//! Corrections: `phr amend`, `phr stop`, `phr recovered`, `phr entered-in-error`.
//!
//! Each writes the next version of one resource (`phr_core::entry::correct`); the one before
//! stays in `phr history`. On a provider node (`--patient`) the write goes through the grant
//! like `phr add`: refused, with nothing stored, where this node may not write.

use anyhow::Result;
use phr_core::{
    Record,
    audit::Logged,
    entry::{Correction, correct},
    fhir::reference::ResourceKey,
    record::Current,
    view,
};
use serde_json::{Value, json};

use crate::{
    cmd::patients,
    context::{Context, now, say, stamp},
    exit::UserError,
};

/// `phr amend REF --set PATH=VALUE ... --remove PATH ...`
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  phr amend AllergyIntolerance/1f2e --set code.text=penicillin
  phr amend Condition/9c1d --set onsetDateTime=2019-05-01 --remove note
  phr amend Observation/77aa --set valueQuantity.value=81.5
A VALUE that reads as JSON (a number, true, an object, a \"quoted string\") is taken as JSON;
anything else as text. The version before stays in `phr history REF`.")]
pub struct AmendArgs {
    /// The entry, as Type/id (`phr show --json` lists them)
    #[arg(value_name = "REF")]
    reference: ResourceKey,
    /// An element and its new value: a dotted path (code.text, note.0.text) = the value
    #[arg(long, value_name = "PATH=VALUE")]
    set: Vec<String>,
    /// An element to take out, as a dotted path
    #[arg(long, value_name = "PATH")]
    remove: Vec<String>,
}

/// `phr stop MEDICINE [--date D] [--reason TEXT]`
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  phr stop naproxen --reason \"stomach pain\"
  phr stop MedicationStatement/4b2a --date 2026-11-30")]
pub struct StopArgs {
    /// The medicine: its name as `phr show` lists it (or part of it), or Type/id
    #[arg(value_name = "MEDICINE")]
    target: String,
    /// The day it was stopped [default: today]
    #[arg(long, value_name = "YYYY-MM-DD")]
    date: Option<jiff::civil::Date>,
    /// Why it was stopped
    #[arg(long)]
    reason: Option<String>,
}

/// `phr recovered CONDITION [--date D]`
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  phr recovered \"ankle sprain\"
  phr recovered Condition/9c1d --date 2026-10-02
An allergy the patient no longer has is marked the same way.")]
pub struct RecoveredArgs {
    /// The condition or allergy: its name as `phr show` lists it (or part of it), or Type/id
    #[arg(value_name = "CONDITION")]
    target: String,
    /// The day it resolved [default: today]
    #[arg(long, value_name = "YYYY-MM-DD")]
    date: Option<jiff::civil::Date>,
}

/// `phr entered-in-error REF [--reason TEXT]`
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  phr entered-in-error Condition/9c1d --reason \"another patient's diagnosis\"
The entry stays in `phr history`, marked; views leave it out.")]
pub struct EnteredInErrorArgs {
    /// The entry: its name as `phr show` lists it (or part of it), or Type/id
    #[arg(value_name = "REF")]
    target: String,
    /// Why it was wrong
    #[arg(long)]
    reason: Option<String>,
}

pub fn amend(ctx: &Context, args: AmendArgs) -> Result<()> {
    let mut set = Vec::new();
    for item in &args.set {
        let Some((path, value)) = item.split_once('=') else {
            return Err(UserError(format!(
                "--set {item}: expected PATH=VALUE, e.g. --set code.text=penicillin"
            ))
            .into());
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        set.push((path.trim().to_string(), value));
    }
    let correction = Correction::Amend {
        set,
        remove: args.remove,
    };
    apply(
        ctx,
        &Target::Key(args.reference),
        &correction,
        "amend".into(),
    )
}

pub fn stop(ctx: &Context, args: StopArgs) -> Result<()> {
    let correction = Correction::Stop {
        date: args.date.unwrap_or_else(today),
        reason: args.reason,
    };
    let target = Target::parse(&args.target, Kind::Medicine);
    apply(ctx, &target, &correction, "stop".into())
}

pub fn recovered(ctx: &Context, args: RecoveredArgs) -> Result<()> {
    let correction = Correction::Resolved {
        date: args.date.unwrap_or_else(today),
    };
    let target = Target::parse(&args.target, Kind::Problem);
    apply(ctx, &target, &correction, "recovered".into())
}

pub fn entered_in_error(ctx: &Context, args: EnteredInErrorArgs) -> Result<()> {
    let message = match &args.reason {
        Some(reason) => format!("entered-in-error: {reason}"),
        None => "entered-in-error".into(),
    };
    let correction = Correction::EnteredInError {
        reason: args.reason,
    };
    let target = Target::parse(&args.target, Kind::Any);
    apply(ctx, &target, &correction, message)
}

fn today() -> jiff::civil::Date {
    now().to_zoned(jiff::tz::TimeZone::UTC).date()
}

/// Which entries a name may match.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Medicine,
    Problem,
    Any,
}

impl Kind {
    fn types(self) -> &'static [&'static str] {
        match self {
            Kind::Medicine => &["MedicationStatement", "MedicationRequest"],
            Kind::Problem => &["Condition", "AllergyIntolerance"],
            Kind::Any => &[
                "AllergyIntolerance",
                "Condition",
                "MedicationStatement",
                "MedicationRequest",
                "Observation",
                "Immunization",
                "Procedure",
                "DocumentReference",
            ],
        }
    }

    fn what(self) -> &'static str {
        match self {
            Kind::Medicine => "medicine",
            Kind::Problem => "condition or allergy",
            Kind::Any => "entry",
        }
    }
}

/// What the user named: a resource, or words of its description.
#[derive(Debug)]
enum Target {
    Key(ResourceKey),
    Name(String, Kind),
}

impl Target {
    fn parse(text: &str, kind: Kind) -> Target {
        match text.parse::<ResourceKey>() {
            Ok(key) if text.contains('/') => Target::Key(key),
            _ => Target::Name(text.trim().to_string(), kind),
        }
    }

    /// The one resource the target names in `record`. A name matches only entries the
    /// correction applies to (a medicine already stopped is not stopped again); when it
    /// matches none of those but some others, the first one's refusal says why.
    fn find(&self, record: &Record, correction: &Correction) -> Result<ResourceKey> {
        let (name, kind) = match self {
            Target::Key(key) => return Ok(key.clone()),
            Target::Name(name, kind) => (name.to_lowercase(), *kind),
        };
        let mut found = Vec::new();
        let mut refused = None;
        for section in phr_core::Section::ALL {
            for (key, resource, _) in record.resources(section)? {
                let text = view::describe_resource(&resource);
                if !kind.types().contains(&key.resource_type.as_str())
                    || !text.to_lowercase().contains(&name)
                {
                    continue;
                }
                match correct(&resource, correction) {
                    Ok(_) => found.push((key, text)),
                    Err(error) => {
                        refused.get_or_insert(error);
                    }
                }
            }
        }
        match found.len() {
            1 => Ok(found.remove(0).0),
            0 if refused.is_some() => Err(refused.expect("checked").into()),
            0 => Err(UserError(format!(
                "no {} in this record matches '{name}': `phr show` lists them, and `phr show \
                 --json` gives each one's Type/id",
                kind.what()
            ))
            .into()),
            _ => Err(UserError(format!(
                "'{name}' matches {} entries; name one by its Type/id:\n{}",
                found.len(),
                found
                    .iter()
                    .map(|(key, text)| format!("  {key}  {text}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
            .into()),
        }
    }
}

/// Finds the target, builds its next version and writes it: on this device's record, or on
/// the patient's (`--patient`) within the grant.
fn apply(ctx: &Context, target: &Target, correction: &Correction, message: String) -> Result<()> {
    let Some(query) = &ctx.patient else {
        let (mut home, mut record) = ctx.open_record()?;
        let (key, next) = next_version(&record, target, correction)?;
        let author = home.device().author();
        let stamp = stamp(&author);
        record.put(stamp, &next)?;
        record.commit(stamp, &format!("{message} {key}"));
        home.save(&mut record, now())?;
        return report(ctx, &key, correction, &next, None);
    };
    let home = ctx.open_home()?;
    let mut patient = patients::open(&home, query)?;
    // Finding the entry reads the sections this node may read: logged, as every read is.
    let sections = patient.readable(now());
    let logged = Logged::read(correction.name(), &sections);
    let logged = match target {
        Target::Key(key) => logged.of(key.clone()),
        Target::Name(..) => logged,
    };
    let record = patient.read(&logged, now())?;
    let (key, next) = next_version(record, target, correction)?;
    patient.add(&next, &format!("{message} {key}"), now())?;
    report(
        ctx,
        &key,
        correction,
        &next,
        Some(&patient.id().to_string()),
    )
}

fn next_version(
    record: &Record,
    target: &Target,
    correction: &Correction,
) -> Result<(ResourceKey, Value)> {
    let key = target.find(record, correction)?;
    let current = match record.current(&key)? {
        None => return Err(phr_core::record::RecordError::NotFound(key).into()),
        Some(Current::Conflict(_)) => {
            return Err(phr_core::record::RecordError::Conflicted(key).into());
        }
        Some(Current::One(version)) => version,
    };
    let next = correct(&current.resource, correction)?;
    Ok((key, next))
}

fn report(
    ctx: &Context,
    key: &ResourceKey,
    correction: &Correction,
    next: &Value,
    patient: Option<&str>,
) -> Result<()> {
    if ctx.json {
        let mut out = json!({"corrected": key.to_string(), "correction": correction.name(), "resource": next});
        if let Some(record) = patient {
            out["record"] = json!(record);
        }
        return ctx.print_json(&out);
    }
    let done = match correction {
        Correction::Amend { .. } => "Amended",
        Correction::Stop { .. } => "Stopped",
        Correction::Resolved { .. } => "Marked as resolved",
        Correction::EnteredInError { .. } => "Marked as entered in error",
    };
    say(&format!("{done} {key}: {}", view::describe_resource(next)));
    say(&format!("The version before stays in `phr history {key}`."));
    if let Some(record) = patient {
        say(&format!(
            "It is in record {record} on this node, signed by it, and logged to the patient; it \
             reaches the patient's devices when the nodes sync."
        ));
    }
    Ok(())
}
