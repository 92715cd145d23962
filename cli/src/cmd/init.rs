//! `phr init`: this device's identity, and a new patient record or a provider node.

use anyhow::Result;
use phr_core::{
    home::{Home, NewPatient},
    keys::RecordId,
    nhs::NhsNumber,
};
use serde_json::json;

use crate::{
    context::{Context, new_passphrase, now, say},
    exit::UserError,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The patient's full name, or the organisation's name with --provider
    #[arg(long)]
    name: String,
    /// The patient's NHS number (10 digits, spaces allowed; the check digit is validated)
    #[arg(long, value_name = "N")]
    nhs_number: Option<String>,
    /// The patient's date of birth
    #[arg(long, value_name = "YYYY-MM-DD")]
    birth_date: Option<String>,
    /// Create a provider node (GP practice, pharmacy, hospital) with no record of its own
    #[arg(long)]
    provider: bool,
    /// The provider's ODS organisation code
    #[arg(long, value_name = "CODE", requires = "provider")]
    ods: Option<String>,
    /// Create a relay node: it stores and forwards the sealed blobs of records that add it with
    /// `phr relays add`, and can read none of them
    #[arg(long, conflicts_with_all = ["provider", "device"])]
    relay: bool,
    /// Another device of a patient whose record already exists (give it with --join): admit it
    /// with `phr devices add CARD` on the first device, and the record arrives when they sync
    #[arg(long, conflicts_with = "provider", requires = "join")]
    device: bool,
    /// With --device: the record this device joins, and the only one it will ever take in (its
    /// id, as `phr status` shows it on the first device)
    #[arg(long, value_name = "RECORD", requires = "device")]
    join: Option<String>,
    /// A label for this device, shown in `phr devices list` (not the patient's name: relays can
    /// read device labels)
    #[arg(long, value_name = "LABEL", conflicts_with = "provider")]
    label: Option<String>,
    /// Protect this node's keystore with a passphrase (asked on the terminal, or PHR_PASSPHRASE);
    /// every later command then needs it
    #[arg(long)]
    passphrase: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    if args.name.trim().is_empty() {
        return Err(UserError("--name must not be empty".into()).into());
    }
    let passphrase = if args.passphrase {
        Some(new_passphrase("this node's keystore")?)
    } else {
        None
    };
    if args.relay {
        let home = Home::init_relay(&ctx.home, args.name.trim(), passphrase.as_ref())?;
        if ctx.json {
            return ctx.print_json(&json!({"home": ctx.home, "device": home.device()}));
        }
        say(&format!(
            "Created relay node '{}' in {}.",
            args.name.trim(),
            ctx.home.display()
        ));
        say("Give its card (`phr card`) to patients, who add it with `phr relays add CARD`.");
        return Ok(());
    }
    if args.device {
        if args.nhs_number.is_some() || args.birth_date.is_some() {
            return Err(UserError("--nhs-number and --birth-date belong to the record, which this device receives when it syncs".into()).into());
        }
        let join = args.join.as_deref().unwrap_or_default().trim();
        let join: RecordId = join.parse().map_err(|_| {
            UserError(format!(
                "--join '{join}' is not a record id: copy it from `phr status` on your first device"
            ))
        })?;
        let label = args.label.unwrap_or_else(|| "another device".into());
        let home = Home::init_device(
            &ctx.home,
            args.name.trim(),
            &label,
            join,
            passphrase.as_ref(),
        )?;
        if ctx.json {
            return ctx.print_json(
                &json!({"home": ctx.home, "device": home.device(), "joins": join.to_string()}),
            );
        }
        say(&format!(
            "Created device '{label}' in {}, joining record {join}.",
            ctx.home.display()
        ));
        say(
            "Next: on your first device, run `phr devices add CARD` with the card from `phr card` here.",
        );
        return Ok(());
    }
    if args.provider {
        if args.nhs_number.is_some() || args.birth_date.is_some() {
            return Err(UserError("--nhs-number and --birth-date describe a patient; a provider takes --name and --ods".into()).into());
        }
        let home =
            Home::init_provider(&ctx.home, &args.name, args.ods.clone(), passphrase.as_ref())?;
        let device = home.device();
        if ctx.json {
            return ctx.print_json(&json!({"home": ctx.home, "device": device}));
        }
        say(&format!(
            "Created provider node '{}' in {}.",
            device.name,
            ctx.home.display()
        ));
        say("It holds patients' records once they share them with it.");
        return Ok(());
    }
    let nhs_number = args
        .nhs_number
        .as_deref()
        .map(NhsNumber::parse)
        .transpose()?;
    let birth_date = args
        .birth_date
        .as_deref()
        .map(|d| {
            d.parse::<jiff::civil::Date>().map_err(|_| {
                UserError(format!(
                    "--birth-date '{d}' is not a date: expected YYYY-MM-DD, e.g. 1970-01-31"
                ))
            })
        })
        .transpose()?;
    let patient = NewPatient {
        name: args.name.trim().to_string(),
        nhs_number: nhs_number.clone(),
        birth_date,
        device_label: args.label.clone(),
    };
    let (_home, record) = Home::init_patient(&ctx.home, &patient, passphrase.as_ref(), now())?;
    if ctx.json {
        return ctx.print_json(&json!({"home": ctx.home, "record": record.meta()}));
    }
    let nhs = nhs_number
        .map(|n| format!(" (NHS {n})"))
        .unwrap_or_default();
    say(&format!(
        "Created a record for {}{nhs} in {}.",
        patient.name,
        ctx.home.display()
    ));
    say(
        "Next: `phr import FILE` to bring in records, `phr add` to write entries, `phr show` to read.",
    );
    Ok(())
}
