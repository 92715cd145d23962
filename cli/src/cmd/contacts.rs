//! `phr contacts`: the cards of providers, relays and devices this node knows.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use crate::context::{Context, now, print_out};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Remember a contact from its card (`phr card` on the other node prints it)
    Add {
        /// The contact card: one line starting `phr-card:v1:`
        card: String,
        /// A short name to refer to the contact by
        #[arg(long, value_name = "NAME")]
        alias: Option<String>,
    },
    /// Every contact this node knows
    List,
}

pub fn run(ctx: &Context, command: Command) -> Result<()> {
    let mut home = ctx.open_home()?;
    match command {
        Command::Add { card, alias } => {
            let contact = home.add_contact(&card, alias, now())?;
            let party = &contact.card.party;
            if ctx.json {
                return ctx.print_json(&json!({
                    "peer_id": party.peer.to_string(),
                    "name": party.name,
                    "alias": contact.alias,
                    "role": party.role,
                }));
            }
            print_out(&format!(
                "Added {} ({}, {}).\n",
                contact.display_name(),
                party.role.as_str(),
                party.peer
            ))
        }
        Command::List => {
            let contacts = home.contacts()?;
            if ctx.json {
                let list: Vec<_> = contacts
                    .iter()
                    .map(|c| {
                        json!({
                            "peer_id": c.card.party.peer.to_string(),
                            "name": c.card.party.name,
                            "alias": c.alias,
                            "role": c.card.party.role,
                            "ods": c.card.party.ods,
                            "addrs": c.card.addrs,
                        })
                    })
                    .collect();
                return ctx.print_json(&list);
            }
            if contacts.is_empty() {
                return print_out("No contacts yet. Add one with `phr contacts add CARD`.\n");
            }
            let mut out = String::new();
            for c in &contacts {
                let party = &c.card.party;
                let alias = c
                    .alias
                    .as_ref()
                    .map(|a| format!("{a}: "))
                    .unwrap_or_default();
                let ods = party
                    .ods
                    .as_ref()
                    .map(|o| format!(" ODS {o}"))
                    .unwrap_or_default();
                out += &format!(
                    "{alias}{} ({}{ods})  {}\n",
                    party.name,
                    party.role.as_str(),
                    party.peer
                );
            }
            print_out(&out)
        }
    }
}
