//! `phr audit`: who read or changed what in the record, and when, newest first.

use anyhow::Result;
use phr_core::{
    audit::{AuditEntry, Who},
    party::Role,
};
use serde_json::json;

use crate::{
    context::{Context, print_out},
    exit::UserError,
};

pub fn run(ctx: &Context) -> Result<()> {
    let mut home = ctx.open_home()?;
    match home.device().role {
        Role::Patient => {}
        Role::Provider => {
            return Err(UserError(
                "this is a provider node: a record's audit is kept on the patient's own devices. \
                 Every read and write this node makes is logged there, sealed to the patient's \
                 devices, so this node cannot read its own entries back; ask the patient to run \
                 `phr audit`"
                    .into(),
            )
            .into());
        }
        Role::Relay => {
            return Err(UserError(
                "this is a relay: it carries records' ciphertext and reads none of it, so it \
                 keeps no audit; a record's audit is kept on the patient's own devices"
                    .into(),
            )
            .into());
        }
    }
    let entries = home.audit()?;
    if ctx.json {
        let items: Vec<_> = entries.iter().map(entry_json).collect();
        return ctx.print_json(&items);
    }
    let mut out = format!(
        "Who read or changed your record, newest first ({} entries):\n",
        entries.len()
    );
    for entry in &entries {
        out += &format!(
            "{}  {:<7}  {}: {}\n",
            entry.time.strftime("%Y-%m-%d %H:%M UTC"),
            entry.kind.as_str(),
            who(&entry.who),
            entry.what
        );
        if let Some(claimed) = &entry.claimed_agent {
            out += &format!(
                "    ! this entry names \"{claimed}\" as who did it, but {} signed it\n",
                entry.who.name
            );
        }
    }
    print_out(&out)
}

/// `Leeds Road Surgery (provider, ODS B86001)`.
fn who(who: &Who) -> String {
    let mut about = Vec::new();
    if let Some(role) = who.role {
        about.push(role.as_str().to_string());
    }
    if let Some(ods) = &who.ods {
        about.push(format!("ODS {ods}"));
    }
    if about.is_empty() {
        who.name.clone()
    } else {
        format!("{} ({})", who.name, about.join(", "))
    }
}

fn entry_json(entry: &AuditEntry) -> serde_json::Value {
    json!({
        "time": entry.time.to_string(),
        "kind": entry.kind.as_str(),
        "who": {
            "peer": entry.who.peer.map(|p| p.to_string()),
            "name": entry.who.name,
            "role": entry.who.role,
            "ods": entry.who.ods,
        },
        "what": entry.what,
        "reference": entry.reference,
        "claimed_agent": entry.claimed_agent,
    })
}
