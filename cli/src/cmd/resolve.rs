//! `phr resolve`: keep one of a resource's conflicting versions.

use anyhow::Result;
use phr_core::fhir::reference::ResourceKey;
use serde_json::json;

use crate::context::{Context, say, stamp};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The resource, as Type/id
    #[arg(value_name = "REF")]
    reference: ResourceKey,
    /// The version to keep: its number in `phr conflicts`, or its version id
    #[arg(long, value_name = "VERSION")]
    keep: String,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let (mut home, mut record) = ctx.open_record()?;
    let author = home.device().author();
    let version = record.resolve(stamp(&author), &args.reference, &args.keep)?;
    home.save(&mut record, crate::context::now())?;
    if ctx.json {
        return ctx.print_json(&json!({"resource": args.reference.to_string(), "version": version.id, "kept": version.kept}));
    }
    say(&format!(
        "Resolved {}: kept {}; the other versions stay in `phr history {}`.",
        args.reference, args.keep, args.reference
    ));
    Ok(())
}
