//! `phr show`: the record in plain language.

use anyhow::Result;
use phr_core::{Section, view};
use serde_json::Value;

use crate::context::{Context, now, print_out};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A section to list: summary, clinical, sensitive, journal, requests, audit [default: the summary view]
    section: Option<Section>,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let (_home, record) = ctx.open_record()?;
    if ctx.json {
        let section = args.section.unwrap_or(Section::Summary);
        let resources: Vec<Value> = record
            .resources(section)?
            .into_iter()
            .map(|(_, r, _)| r)
            .collect();
        return ctx.print_json(&resources);
    }
    match args.section {
        None => {
            let today = now().to_zoned(jiff::tz::TimeZone::UTC).date();
            print_out(&view::summary(&record, today)?.to_string())?;
        }
        Some(section) => print_out(&view::section_view(&record, section)?.to_string())?,
    }
    Ok(())
}
