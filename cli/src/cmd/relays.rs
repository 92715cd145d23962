//! `phr relays`: store-and-forward relays for this record (they hold ciphertext only).

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use crate::context::{Context, now, print_out};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Let a relay hold and pass on this record's sealed blobs (it never gets a key)
    Add {
        /// The relay's contact card (from `phr card` on the relay's home)
        card: String,
    },
}

pub fn run(ctx: &Context, command: Command) -> Result<()> {
    let mut home = ctx.open_home()?;
    let Command::Add { card } = command;
    home.ledger_state()?;
    // Remembering the card checks its signature, and lets the node find the relay later.
    let contact = home.add_contact(&card, None, now())?;
    let grant = home.add_relay(&contact.card, now())?;
    let party = &contact.card.party;
    if ctx.json {
        return ctx.print_json(&json!({
            "relay": party.peer.to_string(),
            "name": party.name,
            "grant": grant.id.to_string(),
        }));
    }
    print_out(&format!(
        "Added relay {} ({}). It stores and forwards this record's sealed blobs and can read none of them.\n",
        party.name, party.peer
    ))
}
