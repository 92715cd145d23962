//! `phr emergency`: the emergency summary the patient chooses and previews, the offline card
//! that carries it (a QR code in the terminal, PNG, SVG, or a printable wallet card), and
//! reading a card as a clinician. See `phr_core::emergency`.

mod render;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use phr_core::emergency::{self, Choice, Summary};
use serde_json::{Value, json};

use crate::{
    context::{Context, now, print_out, print_raw, say},
    exit::UserError,
};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  phr emergency                          # preview what the card would carry
  phr emergency include Condition/3f2a   # carry a sensitive entry too (exclude takes it off)
  phr emergency card                     # the QR code and key facts in the terminal
  phr emergency card --html card.html --png card.png --svg card.svg
  phr emergency open \"PHRE1....\"          # as a clinician: read a card's text (from any QR reader)
  phr emergency document -o summary.json # the summary as an IPS document Bundle")]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Carry an entry of the sensitive section on the card too
    Include {
        /// The entry, as Type/id
        entry: String,
    },
    /// Stop carrying a sensitive entry
    Exclude {
        /// The entry, as Type/id
        entry: String,
    },
    /// Make the offline card: a QR code holding the summary, and the key facts in plain text
    Card {
        /// Write the QR code as a PNG image
        #[arg(long, value_name = "FILE")]
        png: Option<PathBuf>,
        /// Write the QR code as an SVG image
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Write a printable one-page wallet card (HTML: print it, or save it as PDF)
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// Read a card's text (what a QR reader shows), with no network and no record
    Open {
        /// The card's text, starting PHRE1. (or - to read it from standard input)
        text: String,
    },
    /// The summary as an International Patient Summary document Bundle (JSON)
    Document {
        /// Write it to FILE instead of standard output
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    if let Some(Command::Open { text }) = &args.command {
        return open(ctx, text);
    }
    let (home, record) = ctx.open_record()?;
    let today = now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let mut choice = home.emergency_choice()?;
    match args.command {
        None => {
            let summary = emergency::gather(&record, &choice, today)?;
            preview(ctx, &summary)
        }
        Some(Command::Include { entry }) | Some(Command::Exclude { entry })
            if entry
                .parse::<phr_core::fhir::reference::ResourceKey>()
                .is_err() =>
        {
            Err(UserError(format!(
                "'{entry}' is not an entry; name it as Type/id, as `phr emergency` lists it"
            ))
            .into())
        }
        Some(Command::Include { entry }) => {
            let all = emergency::gather(&record, &Choice::default(), today)?;
            if !all.sensitive_left_off.contains(&entry) {
                return Err(UserError(format!(
                    "{entry} is not a sensitive entry the summary leaves off; `phr emergency` \
                     lists those it can carry"
                ))
                .into());
            }
            if !choice.include.contains(&entry) {
                choice.include.push(entry.clone());
                home.set_emergency_choice(&choice)?;
            }
            say(&format!(
                "The emergency summary now carries {entry}. Anyone holding a card you make \
                 from now on can read it; make the card again with `phr emergency card`."
            ));
            Ok(())
        }
        Some(Command::Exclude { entry }) => {
            choice.include.retain(|e| *e != entry);
            home.set_emergency_choice(&choice)?;
            say(&format!(
                "The emergency summary no longer carries {entry}. Cards made before still do: \
                 destroy them and make a new one."
            ));
            Ok(())
        }
        Some(Command::Card { png, svg, html }) => {
            let summary = emergency::gather(&record, &choice, today)?;
            let key: [u8; 32] = phr_core::keys::random_array();
            let fitted = emergency::fit(&summary, &key, now())?;
            let code = render::code(&fitted.text)?;
            for (path, bytes, what) in [
                (png, render::png(&code)?, "PNG"),
                (svg, render::svg(&code).into_bytes(), "SVG"),
                (
                    html,
                    render::html(&summary, &code, &fitted.dropped).into_bytes(),
                    "wallet card",
                ),
            ]
            .into_iter()
            .filter_map(|(path, bytes, what)| path.map(|p| (p, bytes, what)))
            {
                phr_core::owner_only::write_atomically(&path, &bytes)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                if !ctx.json {
                    say(&format!("Wrote the {what} to {}.", path.display()));
                }
            }
            if ctx.json {
                return ctx.print_json(&json!({
                    "text": fitted.text,
                    "bytes": fitted.text.len(),
                    "left_off_to_fit": fitted.dropped,
                }));
            }
            print_raw(&render::terminal(&code))?;
            print_out(&render::plain(&summary))?;
            if !fitted.dropped.is_empty() {
                say(&format!(
                    "To fit one QR code, the code leaves off {} of the problems and medicines \
                     (the printed facts list them all): {}.",
                    fitted.dropped.len(),
                    fitted.dropped.join("; ")
                ));
            }
            say(
                "Anyone who holds this card can read it: keep it with you, as you would a \
                 donor card. A card cannot be withdrawn once printed; make a new one when your \
                 medicines change.",
            );
            Ok(())
        }
        Some(Command::Document { output }) => {
            let summary = emergency::gather(&record, &choice, today)?;
            let document = emergency::document(&summary, now());
            let text = serde_json::to_string_pretty(&document)? + "\n";
            match output {
                Some(path) => {
                    phr_core::owner_only::write_atomically(&path, text.as_bytes())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    say(&format!(
                        "Wrote the emergency summary to {}.",
                        path.display()
                    ));
                    Ok(())
                }
                None => print_raw(&text),
            }
        }
        Some(Command::Open { .. }) => unreachable!("handled above"),
    }
}

fn preview(ctx: &Context, summary: &Summary) -> Result<()> {
    if ctx.json {
        return ctx.print_json(summary);
    }
    let mut out = render::plain(summary);
    if !summary.sensitive_left_off.is_empty() {
        out.push_str(&format!(
            "\nLeft off, being sensitive ({}): {}.\nTo carry one:\n  phr emergency include \
             ENTRY\n",
            summary.sensitive_left_off.len(),
            summary.sensitive_left_off.join(", ")
        ));
    }
    out.push_str("\nMake the card with `phr emergency card`.\n");
    print_out(&out)
}

fn open(ctx: &Context, text: &str) -> Result<()> {
    let text = if text == "-" {
        let mut read = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut read)?;
        read
    } else {
        text.to_string()
    };
    let document = emergency::open(&text)?;
    if ctx.json {
        return ctx.print_json(&document);
    }
    print_out(&render::from_document(&document))
}

/// The entries of `document` of type `resource_type`, in order.
fn of_type<'a>(document: &'a Value, resource_type: &'a str) -> impl Iterator<Item = &'a Value> {
    document["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["resource"])
        .filter(move |r| r["resourceType"] == resource_type)
}
