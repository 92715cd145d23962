//! `phr messages`: messages between the patient and the practice, in threads, unread first.
//!
//! On the patient's device the messages are in their own record; on a provider's node,
//! `--patient RECORD` names whose. Every read a provider makes is logged to the patient, and
//! every message it sends is written with its audit entry.

use std::{collections::BTreeSet, path::PathBuf};

use anyhow::{Context as _, Result};
use clap::Subcommand;
use phr_core::{
    Record, Section,
    audit::Logged,
    home::Home,
    keys::{PeerId, RecordId},
    ledger::LedgerState,
    messages::{
        self, ATTACHMENT_BYTES_MAX, Attachment, Correspondent, Message, NewMessage, Thread,
    },
    party::Party,
};
use serde_json::{Value, json};

use crate::{
    cmd::patients,
    context::{Context, now, print_out, say},
    exit::UserError,
};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  phr messages                                   # every thread, unread first
  phr messages send \"Can I have my blood test results?\"
  phr messages send --to gp --about Observation/abc123 \"Is this result normal?\"
  phr messages send --attach rash.jpg \"The rash is spreading\"
  phr messages show 3f2a                         # a thread (marks it read)
  phr messages reply 3f2a \"Thank you\"
  phr messages save 3f2a -o letter.pdf           # the file a message carries
On a provider's node, name the patient: phr --patient RECORD messages ...")]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send a new message (the patient to a provider who may read `requests`; a provider to the patient)
    Send {
        /// What to say
        text: Option<String>,
        /// Who to send it to: a contact's alias or name (needed when several providers may read requests)
        #[arg(long, value_name = "CONTACT")]
        to: Option<String>,
        /// An entry of the record it is about, as Type/id (e.g. a result)
        #[arg(long, value_name = "REF")]
        about: Option<String>,
        /// A file to send with it (at most 256 KiB)
        #[arg(long, value_name = "FILE")]
        attach: Option<PathBuf>,
    },
    /// Answer a message (its id, or the start of it)
    Reply {
        /// The message answered
        id: String,
        /// What to say
        text: Option<String>,
        /// A file to send with it (at most 256 KiB)
        #[arg(long, value_name = "FILE")]
        attach: Option<PathBuf>,
    },
    /// Show the thread a message is in, and mark it read
    Show {
        /// A message of the thread (its id, or the start of it)
        id: String,
    },
    /// Save the file a message carries
    Save {
        /// The message (its id, or the start of it)
        id: String,
        /// Where to write it [default: its own file name, in this directory]
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// The record being read, with who "we" are in it.
struct Mailbox<'a> {
    record: &'a Record,
    ledger: &'a LedgerState,
    /// Whether a signer's message is this side's own (an owner device for the patient, this
    /// node for a provider).
    mine: Box<dyn Fn(&str) -> bool + 'a>,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    match &ctx.patient {
        None => run_patient(ctx, args.command),
        Some(query) => run_provider(ctx, query, args.command),
    }
}

fn run_patient(ctx: &Context, command: Option<Command>) -> Result<()> {
    let (mut home, mut record) = ctx.open_record()?;
    let id = home.record_id().context("this home holds no record")?;
    let ledger = home.ledger_state()?.clone();
    let owners: BTreeSet<String> = ledger.owners.keys().map(ToString::to_string).collect();
    let mailbox = Mailbox {
        record: &record,
        ledger: &ledger,
        mine: Box::new(move |signer| owners.contains(signer)),
    };
    let patient = Correspondent::Patient {
        reference: record.meta().subject.clone(),
        name: patient_name(&record, &home),
    };
    let (new, seen) = match command {
        None => return list(ctx, &home, id, &mailbox),
        Some(Command::Show { id: query }) => return show(ctx, &mut home, id, &mailbox, &query),
        Some(Command::Save { id: query, output }) => return save(ctx, &mailbox, &query, output),
        Some(Command::Send {
            text,
            to,
            about,
            attach,
        }) => {
            let provider = addressee(&home, &ledger, to.as_deref())?;
            let new = NewMessage {
                text: text.unwrap_or_default(),
                sender: patient,
                recipient: correspondent(&provider),
                subject: record.meta().subject.clone(),
                in_response_to: None,
                about,
                attachment: attach.map(|path| read_attachment(&path)).transpose()?,
            };
            (new, Vec::new())
        }
        Some(Command::Reply {
            id: query,
            text,
            attach,
        }) => {
            let parent = find(&mailbox, &query)?;
            let parent_id = parent.id.clone();
            let recipient = if (mailbox.mine)(&parent.signer_id) {
                // A follow-up to one's own message goes where that one went.
                let named = messages::recipients_of(&record, &parent.id)?.unwrap_or_default();
                match named.into_iter().next() {
                    Some(reference) => Correspondent::Named(reference),
                    None => correspondent(&addressee(&home, &ledger, None)?),
                }
            } else {
                let peer: PeerId = parent.signer_id.parse().map_err(|_| {
                    UserError(format!("message {} has no signer to answer", parent.id))
                })?;
                correspondent(&reader_of_requests(&ledger, &peer, &parent.signer)?)
            };
            let new = NewMessage {
                text: text.unwrap_or_default(),
                sender: patient,
                recipient,
                subject: record.meta().subject.clone(),
                in_response_to: Some(parent.id.clone()),
                about: None,
                attachment: attach.map(|path| read_attachment(&path)).transpose()?,
            };
            (new, ids(&thread_of(&mailbox, &parent_id)?))
        }
    };
    drop(mailbox);
    let message_id = phr_core::new_id();
    let resource = messages::build(&new, &message_id, now())?;
    let author = home.device().author();
    let stamp = crate::context::stamp(&author);
    record.put(stamp, &resource)?;
    record.commit(stamp, "message");
    home.save(&mut record, now())?;
    // Answering a thread is reading it.
    home.mark_messages_read(id, seen.into_iter().chain([message_id.clone()]))?;
    sent(ctx, &resource, &message_id)
}

fn run_provider(ctx: &Context, query: &str, command: Option<Command>) -> Result<()> {
    let mut home = ctx.open_home()?;
    let me = home.peer_id().to_string();
    let party = home.party();
    let mut patient = patients::open(&home, query)?;
    let record_id = patient.id();
    let (new, seen) = match command {
        Some(Command::Send {
            text,
            to,
            about,
            attach,
        }) => {
            if to.is_some() {
                return Err(UserError(
                    "on a provider's node a message goes to the patient; leave out --to".into(),
                )
                .into());
            }
            let new = NewMessage {
                text: text.unwrap_or_default(),
                sender: correspondent(&party),
                // The patient's name is in `summary`, which this node may not read: the
                // record's `Patient` is named by reference alone.
                recipient: Correspondent::Named(match patient.subject() {
                    Some(subject) => json!({"reference": subject}),
                    None => json!({"display": "the patient"}),
                }),
                subject: patient.subject().map(str::to_string),
                in_response_to: None,
                about,
                attachment: attach.map(|path| read_attachment(&path)).transpose()?,
            };
            (new, Vec::new())
        }
        Some(Command::Reply {
            id: query,
            text,
            attach,
        }) => {
            let logged = Logged::read("messages reply", &[Section::Requests]);
            let (record, ledger) = patient.read_with_consent(&logged, now())?;
            let mailbox = Mailbox {
                record,
                ledger,
                mine: Box::new(|signer| signer == me),
            };
            let parent = find(&mailbox, &query)?;
            let parent_id = parent.id.clone();
            let name = patients_name(record);
            let new = NewMessage {
                text: text.unwrap_or_default(),
                sender: correspondent(&party),
                recipient: Correspondent::Patient {
                    reference: record.meta().subject.clone(),
                    name,
                },
                subject: record.meta().subject.clone(),
                in_response_to: Some(parent.id),
                about: None,
                attachment: attach.map(|path| read_attachment(&path)).transpose()?,
            };
            (new, ids(&thread_of(&mailbox, &parent_id)?))
        }
        reading => {
            let before = home.messages_read(record_id)?;
            let thread = {
                let logged = Logged::read("messages", &[Section::Requests]);
                let (record, ledger) = patient.read_with_consent(&logged, now())?;
                let mailbox = Mailbox {
                    record,
                    ledger,
                    mine: Box::new(|signer| signer == me),
                };
                match reading {
                    None => return list(ctx, &home, record_id, &mailbox),
                    Some(Command::Save { id, output }) => return save(ctx, &mailbox, &id, output),
                    Some(Command::Show { id }) => thread_of(&mailbox, &id)?,
                    Some(Command::Send { .. } | Command::Reply { .. }) => {
                        unreachable!("handled above")
                    }
                }
            };
            let unread = thread
                .messages
                .iter()
                .filter(|m| m.signer_id != me && !before.contains(&m.id))
                .map(|m| m.id.clone())
                .collect();
            drop(patient);
            home.mark_messages_read(record_id, ids(&thread))?;
            return print_thread(ctx, &thread, &unread, record_id);
        }
    };
    let message_id = phr_core::new_id();
    let resource = messages::build(&new, &message_id, now())?;
    patient.add(&resource, "message", now())?;
    drop(patient);
    // Answering a thread is reading it.
    home.mark_messages_read(record_id, seen.into_iter().chain([message_id.clone()]))?;
    sent(ctx, &resource, &message_id)
}

/// The patient's name as the record's `Patient` gives it, or the home's party name.
fn patient_name(record: &Record, home: &Home) -> String {
    let name = patients_name(record);
    if name == "the patient" {
        home.party().name
    } else {
        name
    }
}

pub(crate) fn patients_name(record: &Record) -> String {
    let today = now().to_zoned(jiff::tz::TimeZone::UTC).date();
    phr_core::view::patient_header(record, today)
        .ok()
        .and_then(|header| header.name)
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "the patient".into())
}

pub(crate) fn correspondent(party: &Party) -> Correspondent {
    Correspondent::Provider {
        peer: party.peer,
        name: party.name.clone(),
        ods: party.ods.clone(),
    }
}

/// The provider a patient's new message goes to: the contact `to` names, or the only one who
/// may read `requests`. Refused, saying how to share, if they may not read it.
pub(crate) fn addressee(home: &Home, ledger: &LedgerState, to: Option<&str>) -> Result<Party> {
    let now_ms = now().as_millisecond();
    let readers: Vec<Party> = ledger
        .grants
        .iter()
        .filter(|g| g.reads(Section::Requests) && g.unexpired(now_ms))
        .map(|g| g.grantee.clone())
        .collect();
    match to {
        Some(query) => {
            let contact = home.find_contact(query)?;
            let peer = contact.card.party.peer;
            reader_of_requests(ledger, &peer, &contact.card.party.name)
        }
        None => match readers.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(UserError(
                "no provider can read your requests section, where messages, orders and \
                 appointment requests go. Share it with your practice first, e.g. `phr share \
                 grant gp --sections requests --access write`"
                    .into(),
            )
            .into()),
            many => Err(UserError(format!(
                "several providers can read your messages ({}); say which with --to",
                many.iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into()),
        },
    }
}

/// The party `peer`, if a grant in force lets it read `requests` now; else why not.
fn reader_of_requests(ledger: &LedgerState, peer: &PeerId, name: &str) -> Result<Party> {
    let now_ms = now().as_millisecond();
    ledger
        .grants
        .iter()
        .find(|g| g.grantee.peer == *peer && g.reads(Section::Requests) && g.unexpired(now_ms))
        .map(|g| g.grantee.clone())
        .ok_or_else(|| {
            UserError(format!(
                "{name} cannot read your requests section, so it would never see this. Share \
                 it first: `phr share grant CONTACT --sections requests --access write` (write \
                 lets them answer)"
            ))
            .into()
        })
}

fn read_attachment(path: &std::path::Path) -> Result<Attachment> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > ATTACHMENT_BYTES_MAX as u64 {
        return Err(messages::MessageError::AttachmentTooLarge {
            bytes: usize::try_from(size).unwrap_or(usize::MAX),
        }
        .into());
    }
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let title = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file")
        .to_string();
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let content_type = match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
    .to_string();
    Ok(Attachment {
        title,
        content_type,
        data,
    })
}

fn ids(thread: &Thread) -> Vec<String> {
    thread.messages.iter().map(|m| m.id.clone()).collect()
}

fn all_threads(mailbox: &Mailbox<'_>) -> Result<Vec<Thread>> {
    Ok(messages::threads(mailbox.record, mailbox.ledger)?)
}

/// The one message whose id `query` is, or starts with.
fn find(mailbox: &Mailbox<'_>, query: &str) -> Result<Message> {
    let query = query.trim();
    let matches: Vec<Message> = all_threads(mailbox)?
        .into_iter()
        .flat_map(|t| t.messages)
        .filter(|m| !query.is_empty() && m.id.starts_with(query))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(UserError(format!(
            "no message's id starts with '{query}'; `phr messages` lists them"
        ))
        .into()),
        _ if matches.iter().any(|m| m.id == query) => Ok(matches
            .into_iter()
            .find(|m| m.id == query)
            .expect("checked")),
        many => Err(UserError(format!(
            "'{query}' starts {} message ids; type more of it",
            many.len()
        ))
        .into()),
    }
}

fn thread_of(mailbox: &Mailbox<'_>, query: &str) -> Result<Thread> {
    let wanted = find(mailbox, query)?.id;
    all_threads(mailbox)?
        .into_iter()
        .find(|t| t.messages.iter().any(|m| m.id == wanted))
        .ok_or_else(|| UserError(format!("message {wanted} is in no thread")).into())
}

fn show(
    ctx: &Context,
    home: &mut Home,
    record: RecordId,
    mailbox: &Mailbox<'_>,
    query: &str,
) -> Result<()> {
    let thread = thread_of(mailbox, query)?;
    let before = home.messages_read(record)?;
    home.mark_messages_read(record, ids(&thread))?;
    let unread: BTreeSet<String> = thread
        .messages
        .iter()
        .filter(|m| !(mailbox.mine)(&m.signer_id) && !before.contains(&m.id))
        .map(|m| m.id.clone())
        .collect();
    print_thread(ctx, &thread, &unread, record)
}

fn print_thread(
    ctx: &Context,
    thread: &Thread,
    unread: &BTreeSet<String>,
    record: RecordId,
) -> Result<()> {
    if ctx.json {
        return ctx.print_json(&json!({"record": record.to_string(), "thread": thread}));
    }
    let mut out = String::new();
    for message in &thread.messages {
        out.push_str(&format!(
            "{}{} from {}{}\n",
            if unread.contains(&message.id) {
                "new: "
            } else {
                ""
            },
            when(message.sent.as_deref()),
            from(message),
            short(&message.id),
        ));
        for line in message.text.lines() {
            out.push_str(&format!("  {line}\n"));
        }
        if let Some(about) = &message.about {
            out.push_str(&format!("  (about {about})\n"));
        }
        if let Some(file) = &message.attachment {
            out.push_str(&format!(
                "  attached: {} ({}, {} bytes); save it with `phr messages save {}`\n",
                file.title,
                file.content_type,
                file.size,
                &message.id[..message.id.len().min(8)]
            ));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "Answer with `phr messages reply {} \"...\"`.\n",
        &thread
            .messages
            .last()
            .map_or("", |m| &m.id[..m.id.len().min(8)])
    ));
    print_out(&out)
}

/// Who a message is from, as its signature shows it, with any other claim beside.
fn from(message: &Message) -> String {
    if message.sender_matches {
        message.signer.clone()
    } else {
        format!(
            "{} (signed by them; it says it is from {})",
            message.signer, message.sender
        )
    }
}

/// When a message was sent, to the minute (UTC), as its sender says.
fn when(sent: Option<&str>) -> String {
    match sent.map(str::parse::<jiff::Timestamp>) {
        Some(Ok(time)) => time.strftime("%Y-%m-%d %H:%M UTC").to_string(),
        Some(Err(_)) => sent.unwrap_or_default().to_string(),
        None => "(no time)".into(),
    }
}

fn short(id: &str) -> String {
    format!(" [{}]", &id[..id.len().min(8)])
}

fn list(ctx: &Context, home: &Home, record: RecordId, mailbox: &Mailbox<'_>) -> Result<()> {
    let read = home.messages_read(record)?;
    let threads = all_threads(mailbox)?;
    let unread_in = |thread: &Thread| {
        thread
            .messages
            .iter()
            .filter(|m| !(mailbox.mine)(&m.signer_id) && !read.contains(&m.id))
            .count()
    };
    let mut threads: Vec<(usize, Thread)> =
        threads.into_iter().map(|t| (unread_in(&t), t)).collect();
    // Unread first; the thread order (newest first) is kept within each group.
    threads.sort_by_key(|(unread, _)| *unread == 0);
    if ctx.json {
        let items: Vec<Value> = threads
            .iter()
            .map(|(unread, t)| json!({"thread": t.id, "unread": unread, "messages": t.messages}))
            .collect();
        return ctx.print_json(&json!({"record": record.to_string(), "threads": items}));
    }
    if threads.is_empty() {
        return print_out(
            "No messages yet. Send one with `phr messages send \"...\"` (on a provider's node: \
             `phr --patient RECORD messages send \"...\"`).\n",
        );
    }
    let mut out = String::new();
    for (unread, thread) in &threads {
        let first = &thread.messages[0];
        let last = thread.messages.last().expect("a thread has a message");
        let subject: String = first
            .text
            .lines()
            .next()
            .unwrap_or("(a file)")
            .chars()
            .take(60)
            .collect();
        out.push_str(&format!(
            "{}{}  {}  \"{}\" ({} {}; last from {}, {})\n",
            if *unread > 0 {
                format!("{unread} new  ")
            } else {
                String::new()
            },
            &first.id[..first.id.len().min(8)],
            from(first),
            subject,
            thread.messages.len(),
            if thread.messages.len() == 1 {
                "message"
            } else {
                "messages"
            },
            from(last),
            when(last.sent.as_deref()),
        ));
    }
    out.push_str("Read a thread with `phr messages show ID`.\n");
    print_out(&out)
}

fn save(ctx: &Context, mailbox: &Mailbox<'_>, query: &str, output: Option<PathBuf>) -> Result<()> {
    let message = find(mailbox, query)?;
    let Some((info, data)) = messages::attachment(mailbox.record, &message.id)? else {
        return Err(UserError(format!("message {} carries no file", message.id)).into());
    };
    // The name came from the sender: only its last part, never a path they chose.
    let output = output.unwrap_or_else(|| {
        PathBuf::from(
            std::path::Path::new(&info.title)
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| !n.starts_with('.'))
                .unwrap_or("attachment"),
        )
    });
    if output.exists() {
        return Err(UserError(format!(
            "{} already exists; choose another name with -o FILE",
            output.display()
        ))
        .into());
    }
    std::fs::write(&output, &data).with_context(|| format!("cannot write {}", output.display()))?;
    if ctx.json {
        return ctx.print_json(
            &json!({"saved": output, "bytes": data.len(), "content_type": info.content_type}),
        );
    }
    say(&format!(
        "Saved {} ({}, {} bytes) to {}",
        info.title,
        info.content_type,
        data.len(),
        output.display()
    ));
    Ok(())
}

fn sent(ctx: &Context, resource: &Value, id: &str) -> Result<()> {
    if ctx.json {
        return ctx
            .print_json(&json!({"sent": format!("Communication/{id}"), "resource": resource}));
    }
    let to = resource["recipient"][0]["display"]
        .as_str()
        .unwrap_or("the recipient");
    say(&format!(
        "Sent message {} to {to}; it reaches them when the nodes sync.",
        &id[..id.len().min(8)]
    ));
    Ok(())
}
