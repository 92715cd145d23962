//! `phr export`: the record as a FHIR R4 Bundle or an International Patient Summary.

use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result};
use phr_core::{Section, export};

use crate::context::{Context, now, print_out};

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

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let (_home, record) = ctx.open_record()?;
    let exported = if args.ips {
        let sources = if args.sections.is_empty() {
            vec![Section::Summary, Section::Clinical]
        } else {
            args.sections
        };
        export::ips(&record, &sources, now())?
    } else {
        let sections = if args.sections.is_empty() {
            Section::ALL.to_vec()
        } else {
            args.sections
        };
        export::collection(&record, &sections, now())?
    };
    if !exported.conflicted.is_empty() {
        let keys: Vec<String> = exported
            .conflicted
            .iter()
            .map(ToString::to_string)
            .collect();
        eprintln!(
            "warning: {} resources have conflicting versions and were exported as one of them ({}); run `phr conflicts` to settle them",
            keys.len(),
            keys.join(", ")
        );
    }
    let text = serde_json::to_string_pretty(&exported.bundle)?;
    match &args.output {
        Some(path) => {
            fs::write(path, text + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
            if ctx.json {
                ctx.print_json(&serde_json::json!({"output": path, "resources": exported.count}))?;
            } else {
                let kind = if args.ips {
                    "International Patient Summary"
                } else {
                    "Bundle"
                };
                println!(
                    "Wrote a {kind} of {} resources to {}.",
                    exported.count,
                    path.display()
                );
            }
        }
        None => print_out(&(text + "\n"))?,
    }
    Ok(())
}
