//! `phr conflicts`: resources with concurrent versions, for a person to choose between.

use anyhow::Result;
use phr_core::{audit::Logged, record::Conflict, view};
use serde_json::{Value, json};

use super::history::{headline, version_json};
use crate::{
    cmd::patients,
    context::{Context, now, say},
};

pub fn run(ctx: &Context) -> Result<()> {
    let conflicts = match &ctx.patient {
        Some(query) => {
            // A provider sees the conflicts in what it may read; looking is a logged read.
            let home = ctx.open_home()?;
            let mut patient = patients::open(&home, query)?;
            let readable = patient.readable(now());
            let record = patient.read(&Logged::read("conflicts", &readable), now())?;
            record.conflicts()?
        }
        None => ctx.open_record()?.1.conflicts()?,
    };
    if ctx.json {
        let items: Vec<_> = conflicts
            .iter()
            .map(|c| json!({"resource": c.key.to_string(), "versions": c.versions.iter().map(version_json).collect::<Vec<_>>()}))
            .collect();
        return ctx.print_json(&items);
    }
    if conflicts.is_empty() {
        say("No conflicts: every resource has a single version.");
        return Ok(());
    }
    let count = if conflicts.len() == 1 {
        "1 resource has".to_string()
    } else {
        format!("{} resources have", conflicts.len())
    };
    say(&format!(
        "{count} conflicting versions, written on different devices without seeing each other:"
    ));
    for conflict in &conflicts {
        print_conflict(conflict);
    }
    Ok(())
}

fn print_conflict(conflict: &Conflict) {
    say("");
    say(&format!("{}", conflict.key));
    for (index, version) in conflict.versions.iter().enumerate() {
        say(&format!("  {}. {}", index + 1, headline(version)));
        say(&format!(
            "     {}",
            view::describe_resource(&version.resource)
        ));
    }
    let differing = differing_fields(conflict.versions.iter().map(|v| &v.resource));
    if !differing.is_empty() {
        say(&format!("  They differ in: {}", differing.join(", ")));
    }
    say(&format!(
        "  Keep one with: phr resolve {} --keep 1",
        conflict.key
    ));
}

/// The top-level fields whose values are not the same in every version.
fn differing_fields<'a>(resources: impl Iterator<Item = &'a Value> + Clone) -> Vec<String> {
    let mut fields: Vec<&String> = resources
        .clone()
        .filter_map(Value::as_object)
        .flat_map(|o| o.keys())
        .collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .filter(|field| {
            let mut values = resources.clone().map(|r| r.get(field.as_str()));
            let first = values.next().flatten();
            values.any(|v| v != first)
        })
        .cloned()
        .collect()
}
