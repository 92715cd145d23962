//! `phr export`: the record as a FHIR R4 Bundle or an International Patient Summary.

use std::{fs, io::Write, path::PathBuf};

use anyhow::{Context as _, Result};
use phr_core::{Record, Section, audit::Logged, export};

use crate::{
    cmd::{patients, share::sections_text},
    context::{Context, now, print_raw, say, tell},
    exit::UserError,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// An International Patient Summary (a FHIR `document` Bundle) instead of a `collection`
    #[arg(long)]
    ips: bool,
    /// Only these sections (repeatable) [default: all; for --ips: summary and clinical]
    #[arg(long = "section", value_name = "S")]
    sections: Vec<Section>,
    /// Write to FILE instead of standard output
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(ctx: &Context, mut args: Args) -> Result<()> {
    let named = !args.sections.is_empty();
    if !named {
        args.sections = if args.ips {
            vec![Section::Summary, Section::Clinical]
        } else {
            Section::ALL.to_vec()
        };
    }
    let Some(query) = &ctx.patient else {
        let (_home, record) = ctx.open_record()?;
        return write(ctx, &args, &record);
    };
    let home = ctx.open_home()?;
    let mut patient = patients::open(&home, query)?;
    // Only what this node may read is exported; a section asked for by name that it may not
    // read is said so, and nothing of it is in the export.
    let readable = patient.readable(now());
    let (shared, withheld): (Vec<Section>, Vec<Section>) = args
        .sections
        .iter()
        .copied()
        .partition(|section| readable.contains(section));
    if named && !withheld.is_empty() && !shared.is_empty() {
        tell(&format!(
            "warning: not shared with this node, so nothing of it is exported: {}",
            sections_text(&withheld)
        ));
    }
    if shared.is_empty() {
        return Err(UserError(format!(
            "none of the sections asked for is shared with this node (it may read: {}); nothing \
             was exported",
            patients::sections_or_nothing(&readable)
        ))
        .into());
    }
    args.sections = shared;
    let record = patient.read(&Logged::read("export", &args.sections), now())?;
    write(ctx, &args, record)
}

fn write(ctx: &Context, args: &Args, record: &Record) -> Result<()> {
    let exported = if args.ips {
        export::ips(record, &args.sections, now())?
    } else {
        export::collection(record, &args.sections, now())?
    };
    if !exported.conflicted.is_empty() {
        let keys: Vec<String> = exported
            .conflicted
            .iter()
            .map(ToString::to_string)
            .collect();
        tell(&format!(
            "warning: {} resources have conflicting versions and were exported as one of them ({}); run `phr conflicts` to settle them",
            keys.len(),
            keys.join(", ")
        ));
    }
    let text = serde_json::to_string_pretty(&exported.bundle)?;
    match &args.output {
        Some(path) => {
            // The record in clear: a new file is the patient's alone (0600) until they share it;
            // a file that exists is replaced in place and keeps its mode.
            phr_core::owner_only::open_or_create(
                path,
                fs::File::options().write(true).truncate(true),
            )
            .and_then(|mut file| file.write_all((text + "\n").as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?;
            if ctx.json {
                ctx.print_json(&serde_json::json!({"output": path, "resources": exported.count}))?;
            } else {
                let kind = if args.ips {
                    "an International Patient Summary"
                } else {
                    "a Bundle"
                };
                say(&format!(
                    "Wrote {kind} of {} resources to {}.",
                    exported.count,
                    path.display()
                ));
            }
        }
        None => print_raw(&(text + "\n"))?,
    }
    Ok(())
}
