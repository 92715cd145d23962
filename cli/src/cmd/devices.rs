//! `phr devices`: the patient's own devices, each an owner of the record.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use crate::context::{Context, now, print_out};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Admit another of your devices (its card from `phr card`, after `phr init --device` there)
    Add {
        /// The device's contact card
        card: String,
    },
    /// The devices that own this record
    List,
    /// Remove a device (lost or sold): it can read nothing written from now on
    Remove {
        /// The device: its peer id (or 8+ characters of it) or its label
        device: String,
    },
}

pub fn run(ctx: &Context, command: Command) -> Result<()> {
    let mut home = ctx.open_home()?;
    match command {
        Command::Add { card } => {
            // A home with no record has no devices to add to: say so before remembering anything.
            home.ledger_state()?;
            let contact = home.add_contact(&card, None, now())?;
            let party = home.add_device(&contact.card, now())?;
            if ctx.json {
                return ctx
                    .print_json(&json!({"added": party.peer.to_string(), "label": party.name}));
            }
            print_out(&format!(
                "Added device '{}' ({}). It receives the record and every key when it next syncs with this one.\n",
                party.name, party.peer
            ))
        }
        Command::List => {
            let me = home.peer_id();
            let state = home.ledger_state()?;
            // By label, so the listing reads the same every time.
            let mut owners: Vec<_> = state.owners.values().collect();
            owners.sort_by(|a, b| (&a.name, a.peer).cmp(&(&b.name, b.peer)));
            if ctx.json {
                let list: Vec<_> = owners
                    .iter()
                    .map(|p| json!({"peer_id": p.peer.to_string(), "label": p.name, "this_device": p.peer == me}))
                    .collect();
                return ctx.print_json(&list);
            }
            let mut out = String::new();
            for party in &owners {
                let this = if party.peer == me {
                    "  (this device)"
                } else {
                    ""
                };
                out += &format!("{}  {}{this}\n", party.name, party.peer);
            }
            if !state.removed_devices.is_empty() {
                out += &format!("Removed: {} device(s).\n", state.removed_devices.len());
            }
            print_out(&out)
        }
        Command::Remove { device } => {
            let party = home.remove_device(&device, now())?;
            if ctx.json {
                return ctx
                    .print_json(&json!({"removed": party.peer.to_string(), "label": party.name}));
            }
            print_out(&format!(
                "Removed device '{}'. Every section has a new key it will never receive; what it already \
                 copied it keeps.\n",
                party.name
            ))
        }
    }
}
