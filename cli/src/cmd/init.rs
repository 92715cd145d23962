//! `phr init`: this device's identity, and a new patient record or a provider node.

use anyhow::Result;
use phr_core::{
    home::{Home, NewPatient},
    nhs::NhsNumber,
};
use serde_json::json;

use crate::{
    context::{Context, now},
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
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    if args.name.trim().is_empty() {
        return Err(UserError("--name must not be empty".into()).into());
    }
    if args.provider {
        if args.nhs_number.is_some() || args.birth_date.is_some() {
            return Err(UserError("--nhs-number and --birth-date describe a patient; a provider takes --name and --ods".into()).into());
        }
        let home = Home::init_provider(&ctx.home, &args.name, args.ods.clone())?;
        let device = home.device();
        if ctx.json {
            return ctx.print_json(&json!({"home": ctx.home, "device": device}));
        }
        println!(
            "Created provider node '{}' in {}.",
            device.name,
            ctx.home.display()
        );
        println!("It holds patients' records once they share them with it.");
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
    };
    let (_home, record) = Home::init_patient(&ctx.home, &patient, now())?;
    if ctx.json {
        return ctx.print_json(&json!({"home": ctx.home, "record": record.meta()}));
    }
    let nhs = nhs_number
        .map(|n| format!(" (NHS {n})"))
        .unwrap_or_default();
    println!(
        "Created a record for {}{nhs} in {}.",
        patient.name,
        ctx.home.display()
    );
    println!(
        "Next: `phr import FILE` to bring in records, `phr add` to write entries, `phr show` to read."
    );
    Ok(())
}
