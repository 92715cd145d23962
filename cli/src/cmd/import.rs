//! `phr import`: FHIR R4 files into the record, all files or none.

use std::{fs, path::PathBuf};

use anyhow::Result;
use phr_core::import::{self, IMPORT_FILE_BYTES_MAX, ImportError, ImportReport, Location};
use serde_json::json;

use crate::{
    cmd::patients,
    context::{Context, say, stamp},
    exit::UserError,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// FHIR R4 JSON files: Bundles (any type) or single resources
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The files' Patient is this record's patient although the name or birth date differ or
    /// are missing: merge it into the record's own (two different NHS numbers are still refused)
    #[arg(long)]
    same_person: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    if let Some(query) = &ctx.patient {
        // A provider imports into a patient's record, within its grant, logged to the patient.
        let (parsed, skipped) = parse_files(&args)?;
        let home = ctx.open_home()?;
        let mut patient = patients::open(&home, query)?;
        let report = patient.import(&parsed, skipped, options(&args), crate::context::now())?;
        return print_report(ctx, &args, &report);
    }
    let (mut home, mut record) = ctx.open_record()?;
    let (parsed, skipped) = parse_files(&args)?;
    let author = home.device().author();
    let report = import::apply_as(
        &mut record,
        stamp(&author),
        &parsed,
        skipped,
        options(&args),
    )?;
    home.save(&mut record, crate::context::now())?;
    print_report(ctx, &args, &report)
}

fn options(args: &Args) -> import::ImportOptions {
    import::ImportOptions {
        same_person: args.same_person,
    }
}

/// Reads and checks every file before anything is written: one bad file leaves the record as
/// it was.
fn parse_files(args: &Args) -> Result<(Vec<import::Parsed>, usize)> {
    let mut parsed = Vec::new();
    let mut skipped = 0;
    for path in &args.files {
        let name = path.display().to_string();
        let unreadable =
            |e: std::io::Error| UserError(format!("cannot read {name}: {e}; check the path"));
        let size = fs::metadata(path).map_err(unreadable)?.len();
        if size > IMPORT_FILE_BYTES_MAX {
            let location = Location {
                file: name,
                at: None,
            };
            return Err(ImportError::TooLarge {
                location,
                bytes: size,
                max: IMPORT_FILE_BYTES_MAX,
            }
            .into());
        }
        let bytes = fs::read(path).map_err(unreadable)?;
        let (resources, file_skipped) = import::parse(&name, &bytes)?;
        parsed.extend(resources);
        skipped += file_skipped;
    }
    Ok((parsed, skipped))
}

fn print_report(ctx: &Context, args: &Args, report: &ImportReport) -> Result<()> {
    if ctx.json {
        return ctx.print_json(&json!({"files": args.files, "report": report}));
    }
    let files = if args.files.len() == 1 {
        "1 file".to_string()
    } else {
        format!("{} files", args.files.len())
    };
    let total = report.added + report.updated + report.unchanged;
    say(&format!(
        "Imported {files}: {total} resources ({} new, {} updated, {} already here).",
        report.added, report.updated, report.unchanged
    ));
    if !report.written.is_empty() {
        let sections: Vec<String> = report
            .written
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        say(&format!("Written to: {}.", sections.join(", ")));
    }
    if !report.written.is_empty() {
        say(&format!(
            "This was import {}: `phr imports undo {}` takes it back.",
            report.import, report.import
        ));
    }
    for found in &report.merged {
        say(&format!(
            "The file's Patient ({found}) is this record's patient: merged into the record's own \
             (its history keeps the version before)."
        ));
    }
    if report.skipped > 0 {
        say(&format!(
            "Skipped {} entries with no resource to keep (search outcomes, bare responses).",
            report.skipped
        ));
    }
    Ok(())
}
