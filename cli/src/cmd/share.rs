//! `phr share`: consent. Grant a contact access to sections, list it, withdraw it.

use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use jiff::{Timestamp, ToSpan};
use phr_core::{
    Section,
    ledger::{Access, GrantState},
};
use serde_json::json;

use crate::{
    context::{Context, now, print_out},
    exit::UserError,
};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Give a contact access to sections of your record
    Grant {
        /// The contact: alias, name or peer id from `phr contacts list`, or a contact card
        contact: String,
        /// The sections, comma-separated: summary, clinical, sensitive, journal, requests
        #[arg(long, value_delimiter = ',', required = true, value_name = "S[,S...]")]
        sections: Vec<Section>,
        /// read, or write (which includes read)
        #[arg(long, value_enum)]
        access: AccessArg,
        /// When the access ends: a duration such as 90d, 12w, 48h, or a date YYYY-MM-DD
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        /// Why, in your words (shown to you and to the contact)
        #[arg(long, value_name = "TEXT")]
        purpose: Option<String>,
    },
    /// Who may read or write which sections
    List,
    /// Withdraw consent from a contact (all its grants) or one grant; the keys of the sections
    /// involved are replaced
    Revoke {
        /// A contact (alias, name, peer id) or a grant id from `phr share list`
        target: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AccessArg {
    Read,
    Write,
}

pub fn run(ctx: &Context, command: Command) -> Result<()> {
    let mut home = ctx.open_home()?;
    match command {
        Command::Grant {
            contact,
            sections,
            access,
            expires,
            purpose,
        } => {
            let now = now();
            let expires = expires.map(|e| parse_expiry(&e, now)).transpose()?;
            home.ledger_state()?;
            let party = if contact.trim().starts_with("phr-card:") {
                home.add_contact(&contact, None, now)?.card.party
            } else {
                home.find_contact(&contact)?.card.party
            };
            let access = match access {
                AccessArg::Read => Access::Read,
                AccessArg::Write => Access::Write,
            };
            let grant = home.grant(&party, &sections, access, expires, purpose, now)?;
            if ctx.json {
                return ctx.print_json(&grant_json(&grant));
            }
            let until = grant_expiry(&grant);
            print_out(&format!(
                "Granted {} {} access to {}{until}.\nGrant {}. It takes effect on the network when this node syncs.\n",
                party.name,
                access_word(grant.access),
                sections_text(&grant.sections),
                grant.id.short(),
            ))
        }
        Command::List => {
            let state = home.ledger_state()?;
            let now_ms = now().as_millisecond();
            if ctx.json {
                let grants: Vec<_> = state.grants.iter().map(grant_json).collect();
                let revoked: Vec<_> = state.revoked.iter().map(grant_json).collect();
                return ctx.print_json(&json!({"grants": grants, "revoked": revoked}));
            }
            if state.grants.is_empty() {
                return print_out(
                    "Nobody else has access. Share with `phr share grant CONTACT --sections S --access read`.\n",
                );
            }
            // Oldest first, as the patient gave them.
            let mut grants: Vec<&GrantState> = state.grants.iter().collect();
            grants.sort_by(|a, b| (a.time_ms, &a.grantee.name).cmp(&(b.time_ms, &b.grantee.name)));
            let mut out = String::new();
            for grant in grants {
                out += &format!(
                    "{}  {} ({}): {}\n",
                    grant.id.short(),
                    grant.grantee.name,
                    grant.grantee.role.as_str(),
                    grant_terms(grant, now_ms),
                );
            }
            print_out(&out)
        }
        Command::Revoke { target } => {
            let revoked = home.revoke(&target, now())?;
            if ctx.json {
                let grants: Vec<_> = revoked.grants.iter().map(grant_json).collect();
                let rotated: Vec<_> = revoked.rotated.iter().map(|s| s.as_str()).collect();
                return ctx.print_json(&json!({"revoked": grants, "new_key_epochs": rotated}));
            }
            let mut out = String::new();
            for grant in &revoked.grants {
                out += &format!(
                    "Revoked {}'s access to {} (grant {}).\n",
                    grant.grantee.name,
                    sections_text(&grant.sections),
                    grant.id.short()
                );
            }
            if !revoked.rotated.is_empty() {
                out += &format!(
                    "New keys for {}: nothing written from now on can be read by them. What they already \
                     copied, they keep.\n",
                    sections_text(&revoked.rotated)
                );
            }
            print_out(&out)
        }
    }
}

/// Parses `90d`, `12w`, `48h` (from now) or a date `YYYY-MM-DD` (midnight UTC that day).
fn parse_expiry(text: &str, now: Timestamp) -> Result<Timestamp> {
    let bad = || {
        UserError(format!(
            "--expires '{text}' is not a duration or date: use e.g. 90d, 12w, 48h or 2027-01-31"
        ))
    };
    let text = text.trim();
    let when = if let Ok(date) = text.parse::<jiff::civil::Date>() {
        date.to_zoned(jiff::tz::TimeZone::UTC)
            .map_err(|_| bad())?
            .timestamp()
    } else {
        let (number, unit) = text.split_at(text.len().saturating_sub(1));
        let number: i64 = number.parse().map_err(|_| bad())?;
        let hours = match unit {
            "h" => number,
            "d" => number * 24,
            "w" => number * 24 * 7,
            _ => return Err(bad().into()),
        };
        now.checked_add(hours.hours()).map_err(|_| bad())?
    };
    if when <= now {
        return Err(UserError(format!("--expires '{text}' is in the past")).into());
    }
    Ok(when)
}

/// What a grant allows, for whom it is written: `read and write summary, clinical for "care"
/// until 2027-01-31 00:00 UTC`, with `  [expired]` once it has lapsed.
pub fn grant_terms(grant: &GrantState, now_ms: i64) -> String {
    let expired = grant.expires_ms.is_some_and(|e| e <= now_ms);
    let status = if expired { "  [expired]" } else { "" };
    let purpose = grant
        .purpose
        .as_ref()
        .map(|p| format!(" for \"{p}\""))
        .unwrap_or_default();
    let what = if grant.access == Access::Relay {
        "relays sealed blobs".to_string()
    } else {
        format!(
            "{} {}",
            access_word(grant.access),
            sections_text(&grant.sections)
        )
    };
    format!("{what}{purpose}{}{status}", grant_expiry(grant))
}

fn access_word(access: Access) -> &'static str {
    match access {
        Access::Read => "read",
        Access::Write => "read and write",
        Access::Relay => "relay",
    }
}

pub fn sections_text(sections: &[Section]) -> String {
    sections
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn grant_expiry(grant: &GrantState) -> String {
    grant
        .expires_ms
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .map(|t| format!(" until {}", t.strftime("%Y-%m-%d %H:%M UTC")))
        .unwrap_or_default()
}

pub fn grant_json(grant: &GrantState) -> serde_json::Value {
    json!({
        "grant": grant.id.to_string(),
        "grantee": grant.grantee.peer.to_string(),
        "name": grant.grantee.name,
        "role": grant.grantee.role,
        "sections": grant.sections,
        "access": format!("{:?}", grant.access).to_lowercase(),
        "expires_ms": grant.expires_ms,
        "purpose": grant.purpose,
        "granted_by": grant.granted_by.to_string(),
        "time_ms": grant.time_ms,
    })
}
