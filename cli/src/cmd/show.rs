//! `phr show`: the record in plain language.

use anyhow::Result;
use phr_core::{Record, Section, audit::Logged, view};
use serde_json::Value;

use crate::{
    cmd::patients,
    context::{Context, now, print_out, tell},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A section to list: summary, clinical, sensitive, journal, requests, audit [default: the summary view]
    section: Option<Section>,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let Some(query) = &ctx.patient else {
        let (home, record) = ctx.open_record()?;
        let held = home.held_count();
        if held > 0 {
            tell(&format!(
                "note: {held} held {} written after the writer's access ended, not shown here; \
                 review with `phr held`",
                if held == 1 {
                    "entry was"
                } else {
                    "entries were"
                }
            ));
        }
        return render(ctx, &args, &record);
    };
    let home = ctx.open_home()?;
    let mut patient = patients::open(&home, query)?;
    // The summary view also lists recent results, from clinical, where this node may read it.
    let sections = match (args.section, ctx.json) {
        (Some(section), _) => vec![section],
        (None, true) => vec![Section::Summary],
        (None, false) => {
            let readable = patient.readable(now());
            let mut wanted = vec![Section::Summary];
            wanted.extend(
                readable
                    .contains(&Section::Clinical)
                    .then_some(Section::Clinical),
            );
            wanted
        }
    };
    let record = patient.read(&Logged::read("show", &sections), now())?;
    render(ctx, &args, record)
}

fn render(ctx: &Context, args: &Args, record: &Record) -> Result<()> {
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
            print_out(&view::summary(record, today)?.to_string())?;
        }
        Some(section) => print_out(&view::section_view(record, section)?.to_string())?,
    }
    Ok(())
}
