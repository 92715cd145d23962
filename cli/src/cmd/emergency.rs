//! `phr emergency`: the emergency summary the patient chooses and previews, the offline card
//! that carries it (a QR code in the terminal, PNG, SVG, or a printable wallet card), and
//! reading a card as a clinician. See `phr_core::emergency`.

mod render;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use phr_core::emergency::{self, Choice, Summary, break_glass, link};
use serde_json::{Value, json};

use crate::{
    context::{Context, now, print_out, print_raw, say},
    exit::UserError,
    node::NodeApi,
};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  phr emergency                          # preview what the card would carry
  phr emergency include Condition/3f2a   # carry a sensitive entry too (exclude takes it off)
  phr emergency card                     # the QR code and key facts in the terminal
  phr emergency card --html card.html --png card.png --svg card.svg
  phr emergency open \"PHRE1....\"          # as a clinician: read a card's text (from any QR reader)
  phr emergency link --passcode 472913 --days 30   # a link your running node serves
  phr emergency links                    # every link: expiry, openings, state
  phr emergency revoke 3kTq9w            # the link is gone (404) from now on
  phr emergency open \"shlink:/...\" --recipient \"Paramedic J. Smith\" --passcode 472913
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
    /// Read a card's text (what a QR reader shows), or open a link (shlink:/...)
    Open {
        /// The card's text, starting PHRE1., or a link, shlink:/... (- reads standard input)
        text: String,
        /// Who is opening a link, as the patient will see it in their audit (required for links)
        #[arg(long, value_name = "NAME")]
        recipient: Option<String>,
        /// The link's passcode, if it has one
        #[arg(long)]
        passcode: Option<String>,
    },
    /// Make a link to the summary (a SMART Health Link) that this home's running node serves
    Link {
        /// Ask for this passcode (at least 6 characters; 10 wrong ones disable the link)
        #[arg(long)]
        passcode: Option<String>,
        /// How many days it lasts
        #[arg(long, default_value_t = 30)]
        days: i64,
        /// What to call it
        #[arg(long, default_value = "Emergency summary")]
        label: String,
    },
    /// Every link: when it lapses, how often it was opened, whether it still works
    Links,
    /// Revoke a link: its manifest is gone from now on
    Revoke {
        /// The link's id (at least its first 6 characters; an id may start with `-`)
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Break-glass: name providers who may read the summary in an emergency (the patient), or
    /// ask for it (a provider)
    #[command(subcommand)]
    BreakGlass(BreakGlass),
    /// The summary as an International Patient Summary document Bundle (JSON)
    Document {
        /// Write it to FILE instead of standard output
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum BreakGlass {
    /// Let this provider read your emergency summary in an emergency, with a reason, logged
    Allow {
        /// The provider: a contact's alias or name
        contact: String,
    },
    /// Stop letting this provider break the glass
    Disallow {
        /// The provider: a contact's alias or name
        contact: String,
    },
    /// The providers you named, and the address to give them
    Allowed,
    /// As a provider: ask for a patient's emergency summary, in an emergency
    Request {
        /// The address the patient gave (ends in /shl/break-glass)
        url: String,
        /// Why, in a few words: the patient reads it
        #[arg(long)]
        reason: String,
    },
    /// As a provider: the reads granted to this node, and until when
    Kept,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    if let Some(Command::Open {
        text,
        recipient,
        passcode,
    }) = &args.command
    {
        return open(ctx, text, recipient.as_deref(), passcode.as_deref());
    }
    if let Some(Command::BreakGlass(command)) = args.command {
        return break_glass(ctx, command);
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
            let fitted = emergency::fit(&summary, &key, now(), &|text| render::code(text).is_ok())?;
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
        Some(Command::Link {
            passcode,
            days,
            label,
        }) => {
            let node = NodeApi::require(&ctx.home)?;
            let Some(base) = node.emergency_url.clone() else {
                return Err(UserError(
                    "this home's node does not serve emergency links; start it with `phr node \
                     stop` then `phr node start --emergency-listen 127.0.0.1:8443`"
                        .into(),
                )
                .into());
            };
            let summary = emergency::gather(&record, &choice, today)?;
            let document = emergency::document(&summary, now());
            let (made, key) = link::make(&document, &label, days, passcode.as_deref(), now())?;
            home.add_emergency_link(made.clone())?;
            let text = link::shlink(&made, &key, &base);
            if ctx.json {
                return ctx.print_json(&json!({
                    "link": text,
                    "id": made.id,
                    "expires": jiff::Timestamp::from_millisecond(made.expires_ms)?.to_string(),
                    "passcode": made.passcode.is_some(),
                }));
            }
            print_raw(&render::terminal(&render::code(&text)?))?;
            print_out(&format!("{text}\n"))?;
            say(&format!(
                "Link {} lasts until {}{}. Every opening is logged to your audit (`phr audit`); \
                 revoke it with `phr emergency revoke {}`.",
                &made.id[..8],
                jiff::Timestamp::from_millisecond(made.expires_ms)?.strftime("%Y-%m-%d"),
                if made.passcode.is_some() {
                    ", and asks for the passcode you chose"
                } else {
                    ""
                },
                &made.id[..8]
            ));
            Ok(())
        }
        Some(Command::Links) => {
            let links = home.emergency_links()?;
            let now_ms = now().as_millisecond();
            let state = |l: &link::Link| {
                if l.revoked {
                    "revoked"
                } else if l.expires_ms <= now_ms {
                    "lapsed"
                } else if l.attempts_left == 0 {
                    "disabled (too many wrong passcodes)"
                } else {
                    "works"
                }
            };
            if ctx.json {
                let items: Vec<Value> = links
                    .iter()
                    .map(|l| {
                        json!({"id": l.id, "label": l.label, "state": state(l),
                            "expires_ms": l.expires_ms, "opened": l.opened,
                            "passcode": l.passcode.is_some(), "attempts_left": l.attempts_left})
                    })
                    .collect();
                return ctx.print_json(&items);
            }
            if links.is_empty() {
                return print_out("No links. Make one with `phr emergency link`.\n");
            }
            let mut out = String::new();
            for l in &links {
                out.push_str(&format!(
                    "{}  {}  until {}  opened {} {}  {}\n",
                    &l.id[..8],
                    l.label,
                    jiff::Timestamp::from_millisecond(l.expires_ms)?.strftime("%Y-%m-%d"),
                    l.opened,
                    if l.opened == 1 { "time" } else { "times" },
                    state(l)
                ));
            }
            print_out(&out)
        }
        Some(Command::Revoke { id }) => {
            let revoked = home.revoke_emergency_link(&id)?;
            if ctx.json {
                return ctx.print_json(&json!({"revoked": revoked.id}));
            }
            say(&format!(
                "Revoked link {} ({}): whoever holds it gets nothing from now on.",
                &revoked.id[..8],
                revoked.label
            ));
            Ok(())
        }
        Some(Command::Open { .. } | Command::BreakGlass(_)) => unreachable!("handled above"),
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

fn open(ctx: &Context, text: &str, recipient: Option<&str>, passcode: Option<&str>) -> Result<()> {
    let text = if text == "-" {
        let mut read = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut read)?;
        read
    } else {
        text.to_string()
    };
    let document = if text.contains("shlink:/") {
        open_link(&text, recipient, passcode)?
    } else {
        emergency::open(&text)?
    };
    if ctx.json {
        return ctx.print_json(&document);
    }
    print_out(&render::from_document(&document))
}

fn break_glass(ctx: &Context, command: BreakGlass) -> Result<()> {
    let home = ctx.open_home()?;
    let now_ms = now().as_millisecond();
    match command {
        BreakGlass::Allow { contact } | BreakGlass::Disallow { contact }
            if home.record_id().is_none() =>
        {
            let _ = contact;
            Err(UserError("break-glass is named by the patient, on their own node".into()).into())
        }
        BreakGlass::Allow { contact } => {
            let party = home.find_contact(&contact)?.card.party;
            if party.role != phr_core::party::Role::Provider {
                return Err(UserError(format!("{} is not a provider", party.name)).into());
            }
            home.allow_break_glass(&party, true)?;
            say(&format!(
                "{} may now read your emergency summary in an emergency, for {} hours at a \
                 time, giving a reason; you see every request in `phr audit`. Give them the \
                 address `phr emergency break-glass allowed` shows.",
                party.name,
                break_glass::BREAK_GLASS_HOURS
            ));
            Ok(())
        }
        BreakGlass::Disallow { contact } => {
            let party = home.find_contact(&contact)?.card.party;
            home.allow_break_glass(&party, false)?;
            say(&format!("{} may no longer break the glass.", party.name));
            Ok(())
        }
        BreakGlass::Allowed => {
            let allowed = home.break_glass_allowed()?;
            let url = NodeApi::find(&ctx.home)?
                .and_then(|n| n.emergency_url)
                .map(|base| format!("{base}/break-glass"));
            if ctx.json {
                let names: Vec<Value> = allowed
                    .iter()
                    .map(|p| json!({"name": p.name, "peer": p.peer.to_string(), "ods": p.ods}))
                    .collect();
                return ctx.print_json(&json!({"allowed": names, "url": url}));
            }
            let mut out = String::new();
            for p in &allowed {
                out.push_str(&format!("{} ({})\n", p.name, p.peer.short()));
            }
            if allowed.is_empty() {
                out.push_str("Nobody may break the glass. Name a provider with `phr emergency break-glass allow CONTACT`.\n");
            }
            out.push_str(&match url {
                Some(url) => format!("They ask at: {url}\n"),
                None => "Start your node with --emergency-listen to serve their requests.\n".into(),
            });
            print_out(&out)
        }
        BreakGlass::Request { url, reason } => {
            let card = home.card(Vec::new(), now())?;
            let request = break_glass::request(&card, home.device_key(), &url, &reason, now_ms);
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(std::time::Duration::from_secs(30)))
                .http_status_as_error(false)
                .build()
                .into();
            let mut response = agent
                .post(&url)
                .send_json(&request)
                .map_err(|e| UserError(format!("cannot reach {url}: {e}")))?;
            let status = response.status().as_u16();
            let body: Value = response
                .body_mut()
                .with_config()
                .limit(break_glass::BREAK_GLASS_ANSWER_BYTES_MAX)
                .read_json()
                .unwrap_or(Value::Null);
            if status != 200 {
                return Err(UserError(format!(
                    "refused: {}",
                    body["error"]
                        .as_str()
                        .unwrap_or("the patient's node answered no")
                ))
                .into());
            }
            let granted: break_glass::Granted =
                serde_json::from_value(body).context("the answer is not a break-glass grant")?;
            let document = break_glass::open(&granted, home.sync_parts().1)
                .map_err(|why| UserError(format!("the answer does not open: {why}")))?;
            home.keep_break_glass(
                break_glass::Kept {
                    url,
                    reason,
                    document: document.clone(),
                    expires_ms: granted.expires_ms,
                },
                now_ms,
            )?;
            if ctx.json {
                return ctx
                    .print_json(&json!({"document": document, "expires_ms": granted.expires_ms}));
            }
            print_out(&render::from_document(&document))?;
            say(&format!(
                "This read is logged to the patient and ends at {}; `phr emergency break-glass \
                 kept` shows it until then.",
                jiff::Timestamp::from_millisecond(granted.expires_ms)?
                    .strftime("%Y-%m-%d %H:%M UTC")
            ));
            Ok(())
        }
        BreakGlass::Kept => {
            let kept = home.break_glass_kept()?;
            let readable: Vec<&break_glass::Kept> = kept
                .iter()
                .filter(|k| k.readable(now_ms).is_some())
                .collect();
            if ctx.json {
                let items: Vec<Value> = readable
                    .iter()
                    .map(|k| json!({"url": k.url, "reason": k.reason, "expires_ms": k.expires_ms, "document": k.document}))
                    .collect();
                return ctx.print_json(&items);
            }
            if readable.is_empty() {
                return print_out("No break-glass read is open on this node.\n");
            }
            for k in readable {
                print_out(&render::from_document(&k.document))?;
                say(&format!(
                    "(reason: {}; ends {})",
                    k.reason,
                    jiff::Timestamp::from_millisecond(k.expires_ms)?.strftime("%Y-%m-%d %H:%M UTC")
                ));
            }
            Ok(())
        }
    }
}

/// Fetches a link's manifest (as a SMART Health Link client does) and opens its file.
fn open_link(text: &str, recipient: Option<&str>, passcode: Option<&str>) -> Result<Value> {
    let payload = link::parse(text).ok_or_else(|| {
        UserError("this link is damaged: its shlink:/ payload does not read".into())
    })?;
    let Some(recipient) = recipient.filter(|r| !r.trim().is_empty()) else {
        return Err(UserError(
            "say who you are with --recipient \"NAME, ROLE\": the patient sees it in their audit"
                .into(),
        )
        .into());
    };
    if payload.flag.contains('P') && passcode.is_none() {
        return Err(
            UserError("this link asks for a passcode: give it with --passcode".into()).into(),
        );
    }
    if let Some(exp) = payload.exp
        && exp * 1000 <= now().as_millisecond()
    {
        return Err(UserError("this link has lapsed; ask for a new one".into()).into());
    }
    if !(payload.url.starts_with("https://") || payload.url.starts_with("http://")) {
        return Err(UserError("this link's address is not a web address".into()).into());
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let request = link::ManifestRequest {
        recipient: recipient.to_string(),
        passcode: passcode.map(str::to_string),
    };
    let mut response = agent
        .post(&payload.url)
        .send_json(&request)
        .map_err(|e| UserError(format!("cannot reach the link's server: {e}")))?;
    match response.status().as_u16() {
        200 => {}
        401 => {
            let left = response
                .body_mut()
                .read_json::<Value>()
                .ok()
                .and_then(|v| v["remainingAttempts"].as_u64())
                .unwrap_or(0);
            return Err(UserError(format!("wrong passcode: {left} attempts left")).into());
        }
        429 => {
            return Err(UserError(
                "the link's server takes no more requests for this link this hour; try later"
                    .into(),
            )
            .into());
        }
        404 => {
            return Err(UserError(
                "the link is gone: revoked, lapsed, or disabled after too many wrong passcodes"
                    .into(),
            )
            .into());
        }
        status => {
            return Err(UserError(format!("the link's server answered {status}")).into());
        }
    }
    let manifest: Value = response
        .body_mut()
        .with_config()
        .limit(emergency::link::MANIFEST_BYTES_MAX)
        .read_json()
        .context("the link's server did not send a manifest")?;
    let file = manifest["files"][0]["embedded"]
        .as_str()
        .ok_or_else(|| UserError("the manifest holds no file this reader can open".into()))?;
    let key = payload
        .key_bytes()
        .ok_or_else(|| UserError("this link's key is damaged".into()))?;
    Ok(emergency::open_jwe(file, &key)?)
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
