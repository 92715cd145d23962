//! `phr held`: entries held for the patient, written by someone after their access to the record
//! ended (a revoked provider, a removed device, or concurrently with the withdrawal). They change
//! nothing the record shows until the patient accepts them; discarding forgets them.

use anyhow::Result;
use clap::Subcommand;
use phr_core::{home::HeldEntry, view};
use serde_json::json;

use crate::context::{Context, now, print_out};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Take a held entry into the record, as written by its real author
    Accept {
        /// The entry's id (as `phr held` shows it, or more of it)
        id: String,
    },
    /// Forget a held entry for good
    Discard {
        /// The entry's id (as `phr held` shows it, or more of it)
        id: String,
    },
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let (mut home, record) = ctx.open_record()?;
    match args.command {
        None => {
            let entries = home.held_entries(&record)?;
            if ctx.json {
                let list: Vec<_> = entries.iter().map(entry_json).collect();
                return ctx.print_json(&list);
            }
            print_out(&listing(&entries))
        }
        Some(Command::Accept { id }) => {
            let ids = home.find_held(&id)?;
            home.accept_held(&ids, now())?;
            if ctx.json {
                return ctx.print_json(&json!({"accepted": ids[0].to_string()}));
            }
            print_out(&format!(
                "Accepted {}: it is part of the record now, as written by its author, and reaches \
                 your other devices and providers when they next sync.\n",
                ids[0].short()
            ))
        }
        Some(Command::Discard { id }) => {
            let ids = home.find_held(&id)?;
            home.discard_held(&ids)?;
            if ctx.json {
                return ctx.print_json(&json!({"discarded": ids[0].to_string()}));
            }
            print_out(&format!(
                "Discarded {}. It is gone from this device.\n",
                ids[0].short()
            ))
        }
    }
}

fn listing(entries: &[HeldEntry]) -> String {
    if entries.is_empty() {
        return "Nothing is held: nobody wrote to your record after their access ended.\n".into();
    }
    let mut out = format!(
        "{} held: written after the writer's access to your record ended, so not part of it. \
         Accept one with `phr held accept ID`, or `phr held discard ID`.\n",
        if entries.len() == 1 {
            "1 entry is".to_string()
        } else {
            format!("{} entries are", entries.len())
        }
    );
    for entry in entries {
        out += &format!(
            "\n{}  by {} ({}) [{}], {}, {} bytes\n",
            entry.id.short(),
            entry.author_name,
            entry.author,
            entry.section,
            entry.time.strftime("%Y-%m-%d %H:%M:%S UTC"),
            entry.bytes
        );
        for (key, version) in &entry.versions {
            out += &format!("  {key}: {}\n", view::describe_resource(&version.resource));
        }
        if let Some(problem) = &entry.problem {
            out += &format!("  (its content cannot be shown: {problem})\n");
        } else if entry.versions.is_empty() {
            out += "  (it adds nothing this device can show)\n";
        }
    }
    out
}

fn entry_json(entry: &HeldEntry) -> serde_json::Value {
    json!({
        "id": entry.id.to_string(),
        "section": entry.section.to_string(),
        "author": entry.author.to_string(),
        "author_name": entry.author_name,
        "time": entry.time.to_string(),
        "bytes": entry.bytes,
        "adds": entry.versions.iter().map(|(key, v)| json!({"resource": key, "value": v.resource})).collect::<Vec<_>>(),
        "problem": entry.problem,
    })
}
