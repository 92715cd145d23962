//! `phr history`: every version of one resource, oldest first.

use anyhow::Result;
use phr_core::{Record, audit::Logged, fhir::reference::ResourceKey, record::Version, view};
use serde_json::json;

use crate::{
    cmd::patients,
    context::{Context, now, say},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The resource, as Type/id
    #[arg(value_name = "REF")]
    reference: ResourceKey,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let Some(query) = &ctx.patient else {
        let (_home, record) = ctx.open_record()?;
        return render(ctx, &args, &record);
    };
    let home = ctx.open_home()?;
    let mut patient = patients::open(&home, query)?;
    // The resource may be in any section this node reads; the entry names it and them all.
    let sections = patient.readable(now());
    let logged = Logged::read("history", &sections).of(args.reference.clone());
    let record = patient.read(&logged, now())?;
    render(ctx, &args, record)
}

fn render(ctx: &Context, args: &Args, record: &Record) -> Result<()> {
    let versions = record.history(&args.reference)?;
    if ctx.json {
        let items: Vec<_> = versions.iter().map(version_json).collect();
        return ctx.print_json(&json!({"resource": args.reference.to_string(), "versions": items}));
    }
    let count = if versions.len() == 1 {
        "1 version".to_string()
    } else {
        format!("{} versions", versions.len())
    };
    say(&format!("{}: {count}, oldest first", args.reference));
    for (index, version) in versions.iter().enumerate() {
        say(&format!("  {}. {}", index + 1, headline(version)));
        match &version.removed {
            Some(why) => say(&format!("     removed ({why})")),
            None => say(&format!(
                "     {}",
                view::describe_resource(&version.resource)
            )),
        }
        if let Some(kept) = &version.kept {
            say(&format!(
                "     settled a conflict between {} versions, keeping {}",
                version.replaces.len(),
                short(kept)
            ));
        }
    }
    Ok(())
}

/// `2026-11-21 16:45:03 UTC by Ada Lovelace (device 1a2b3c4d) [summary], version 5@1a2b3c4d`
pub fn headline(version: &Version) -> String {
    // PeerIds all start `12D3KooW`; the characters after it tell devices apart.
    let id = version
        .author
        .id
        .strip_prefix("12D3KooW")
        .unwrap_or(&version.author.id);
    let device: String = id.chars().take(8).collect();
    let unverified = if !version.author_is_writer() {
        " (unverified: written by another device than the one named)"
    } else if !version.proven {
        " (unverified: no signature of its author proves it)"
    } else {
        ""
    };
    format!(
        "{} by {} (device {device}){unverified} [{}], version {}",
        version.time.strftime("%Y-%m-%d %H:%M:%S UTC"),
        version.author.name,
        version.section,
        version.short_id()
    )
}

/// A `section:counter@actor` reference, shortened like [`Version::short_id`].
fn short(reference: &str) -> String {
    let id = reference.split_once(':').map_or(reference, |(_, id)| id);
    match id.split_once('@') {
        Some((counter, actor)) => format!("{counter}@{}", &actor[..actor.len().min(8)]),
        None => id.to_string(),
    }
}

pub fn version_json(version: &Version) -> serde_json::Value {
    json!({
        "version": version.id,
        "section": version.section,
        "author": {"id": version.author.id, "name": version.author.name},
        "time": version.time.to_string(),
        "replaces": version.replaces,
        "kept": version.kept,
        "proven": version.proven,
        "import": version.import,
        "removed": version.removed,
        "undoes": version.undoes,
        "resource": version.resource,
    })
}
