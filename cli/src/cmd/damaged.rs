//! `phr damaged`: stored entries of the record that could not be read (a damaged copy, or one
//! that fails to load), and removing one so that the rest loads without it for good.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use crate::context::{Context, print_out};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Delete an unreadable entry from this device (a peer's good copy comes back at the next sync)
    Remove {
        /// The entry's id (as `phr damaged` shows it, or more of it)
        id: String,
        /// Never take it in again, from any peer (for an entry that fails everywhere)
        #[arg(long)]
        for_good: bool,
    },
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let (mut home, _record) = ctx.open_record()?;
    match args.command {
        None => {
            let bad = home.unreadable();
            if ctx.json {
                let list: Vec<_> = bad
                    .iter()
                    .map(|(section, id, why)| {
                        json!({"id": id.to_string(), "section": section.to_string(), "problem": why})
                    })
                    .collect();
                return ctx.print_json(&list);
            }
            if bad.is_empty() {
                return print_out("Every stored entry of the record reads correctly.\n");
            }
            let mut out = format!(
                "{} stored {} could not be read; the rest of the record loads without {}. A good \
                 copy is fetched from a peer when this device syncs; remove one with \
                 `phr damaged remove ID` (`--for-good` to refuse it from every peer).\n",
                bad.len(),
                if bad.len() == 1 { "entry" } else { "entries" },
                if bad.len() == 1 { "it" } else { "them" },
            );
            for (section, id, why) in &bad {
                out += &format!("\n{}  [{section}]\n  {why}\n", id.short());
            }
            print_out(&out)
        }
        Some(Command::Remove { id, for_good }) => {
            let removed = home.remove_unreadable(&id, for_good)?;
            if ctx.json {
                return ctx
                    .print_json(&json!({"removed": removed.to_string(), "for_good": for_good}));
            }
            print_out(&format!(
                "Removed {}. The record loads without it{}.\n",
                removed.short(),
                if for_good {
                    ", and no sync takes it in again"
                } else {
                    "; a good copy is taken in from a peer at the next sync"
                }
            ))
        }
    }
}
