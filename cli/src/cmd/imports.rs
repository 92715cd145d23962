//! `phr imports`: the imports in the record, and taking one back (`phr imports undo ID`).

use anyhow::Result;
use phr_core::{
    audit::Logged,
    record::{ImportSummary, Undone},
};
use serde_json::json;

use crate::{
    cmd::patients,
    context::{Context, now, say, stamp},
};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  phr imports
  phr imports undo 1add2e04
  phr --patient 9434765919 imports undo 5c0ffee1
Undoing gives each resource the import added or changed the version it had before, as a new
version; what the import added is removed. History keeps it all. A resource changed since the
import is left as it is, and named. On a provider's node (`--patient`) it takes back an import
this node made, within the grant, logged to the patient.")]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Take an import back
    Undo {
        /// The import's id, as `phr import` printed it and `phr imports` lists it
        id: String,
    },
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    match (&ctx.patient, args.command) {
        (None, None) => {
            let (_, record) = ctx.open_record()?;
            list(ctx, &record.imports()?)
        }
        (None, Some(Command::Undo { id })) => {
            let id = id.trim().to_string();
            let (mut home, mut record) = ctx.open_record()?;
            let author = home.device().author();
            let stamp = stamp(&author);
            let undone = record.undo_import(stamp, &id)?;
            record.commit(stamp, &format!("undo import {id}"));
            home.save(&mut record, now())?;
            report(ctx, &id, &undone, None)
        }
        // On a provider's node: the patient's record, read and written within the grant.
        (Some(query), None) => {
            let home = ctx.open_home()?;
            let mut patient = patients::open(&home, query)?;
            let sections = patient.readable(now());
            let record = patient.read(&Logged::read("imports", &sections), now())?;
            list(ctx, &record.imports()?)
        }
        (Some(query), Some(Command::Undo { id })) => {
            let id = id.trim().to_string();
            let home = ctx.open_home()?;
            let mut patient = patients::open(&home, query)?;
            let undone = patient.undo_import(&id, now())?;
            report(ctx, &id, &undone, Some(&patient.id().to_string()))
        }
    }
}

fn list(ctx: &Context, imports: &[ImportSummary]) -> Result<()> {
    if ctx.json {
        let items: Vec<_> = imports
            .iter()
            .map(|i| json!({"import": i.id, "time": i.time.to_string(), "author": i.author, "current": i.current}))
            .collect();
        return ctx.print_json(&items);
    }
    if imports.is_empty() {
        say("No imports in this record whose entries are still current.");
        return Ok(());
    }
    for import in imports {
        say(&format!(
            "import {}  {} by {}: {} {} still as it wrote {}",
            import.id,
            import.time.strftime("%Y-%m-%d %H:%M UTC"),
            import.author,
            import.current,
            if import.current == 1 {
                "entry"
            } else {
                "entries"
            },
            if import.current == 1 { "it" } else { "them" },
        ));
    }
    Ok(())
}

fn report(ctx: &Context, id: &str, undone: &Undone, patient: Option<&str>) -> Result<()> {
    if ctx.json {
        let mut out = json!({
            "import": id,
            "restored": undone.restored,
            "removed": undone.removed,
            "left": undone.left.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        if let Some(record) = patient {
            out["record"] = json!(record);
        }
        return ctx.print_json(&out);
    }
    if undone.restored + undone.removed == 0 {
        say(&format!("Nothing of import {id} is left to take back."));
    } else {
        say(&format!(
            "Undid import {id}: {} entries removed, {} given back the version they had before. \
             `phr history` keeps every version.",
            undone.removed, undone.restored
        ));
    }
    if !undone.left.is_empty() {
        say(&format!(
            "Left as they are, because they changed after the import (or are in conflict): {}.",
            undone
                .left
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(record) = patient
        && undone.restored + undone.removed > 0
    {
        say(&format!(
            "It is in record {record} on this node, signed by it, and logged to the patient; it \
             reaches the patient's devices when the nodes sync."
        ));
    }
    Ok(())
}
