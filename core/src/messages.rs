//! Messages between a patient and the providers they share `requests` with, as FHIR R4
//! `Communication` resources in the `requests` section.
//!
//! A message is written once, by its sender, and never edited: the patient's devices write the
//! patient's, a provider's node writes its own (within a `requests` write grant). So two people
//! writing at once make two messages, never a conflict. Replies name the message they answer in
//! `inResponseTo`; a thread is a message and every reply below it.
//!
//! Who a message is from is shown from its version's signature (the writing device), never from
//! its `sender` field alone: anyone who may write `requests` could type any sender. A message
//! whose `sender` names someone other than its signer is shown with the claim beside the signer
//! ([`Message::sender_matches`]).
//!
//! Whether a message was read is kept by each node for itself (a local setting, see
//! `Home::mark_messages_read`), not written into the record: marking a message read on two of
//! the patient's devices at once would otherwise make a conflict out of nothing.
//!
//! The module does no I/O: the caller passes the id and the time.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    Section,
    audit::PEER_ID_SYSTEM,
    fhir::{is_valid_id, reference::ResourceKey},
    keys::PeerId,
    ledger::LedgerState,
    nhs::ODS_CODE_SYSTEM,
    record::{Current, Record, RecordError, Version},
};

/// The longest message text, in bytes: a letter, not a document (attach one instead).
pub const MESSAGE_TEXT_BYTES_MAX: usize = 16 * 1024;
/// The largest file attached to a message, in bytes. Every device of the patient and every
/// provider granted `requests` keeps a copy in the record, so this stays small: a photo of a
/// rash or a letter, scaled down.
pub const ATTACHMENT_BYTES_MAX: usize = 256 * 1024;
/// The longest attachment file name, in bytes.
pub const ATTACHMENT_NAME_BYTES_MAX: usize = 255;
/// The most messages one thread follows upwards to find its first message; a longer chain (or
/// a loop a hostile writer made) is cut there and starts a thread of its own.
pub const THREAD_DEPTH_MAX: usize = 1000;

/// Who sends or receives a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Correspondent {
    /// The patient, as the record's `Patient/id`.
    Patient {
        /// `Patient/id`, if the record has a `Patient`.
        reference: Option<String>,
        /// The patient's name.
        name: String,
    },
    /// A provider's node.
    Provider {
        /// Its key, which signs what it writes.
        peer: PeerId,
        /// The organisation's name.
        name: String,
        /// Its ODS organisation code, if it has one.
        ods: Option<String>,
    },
    /// Whoever another message named, by the same FHIR `Reference` (a reply to the recipient
    /// of one's own message).
    Named(Value),
}

impl Correspondent {
    /// The FHIR `Reference` naming it: the `Patient`, or the organisation by its ODS code (by
    /// its node's key where it has none).
    pub fn reference(&self) -> Value {
        match self {
            Correspondent::Patient { reference, name } => match reference {
                Some(reference) => json!({"reference": reference, "display": name}),
                None => json!({"display": name}),
            },
            Correspondent::Provider { peer, name, ods } => {
                let identifier = match ods {
                    Some(ods) => json!({"system": ODS_CODE_SYSTEM, "value": ods}),
                    None => json!({"system": PEER_ID_SYSTEM, "value": peer.to_string()}),
                };
                json!({"type": "Organization", "identifier": identifier, "display": name})
            }
            Correspondent::Named(reference) => reference.clone(),
        }
    }
}

/// A file sent with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// Its file name, as the sender had it.
    pub title: String,
    /// Its media type, e.g. `image/png`.
    pub content_type: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// A message as typed, before it becomes a `Communication`.
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// What it says.
    pub text: String,
    /// Who sends it.
    pub sender: Correspondent,
    /// Who it is for.
    pub recipient: Correspondent,
    /// The record's `Patient/id`, if it has one: the message is about this patient.
    pub subject: Option<String>,
    /// The id of the message it answers.
    pub in_response_to: Option<String>,
    /// An entry of the record it is about, as `Type/id` (e.g. a result).
    pub about: Option<String>,
    /// A file sent with it.
    pub attachment: Option<Attachment>,
}

/// Why a message cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    /// No text and no file.
    #[error("the message is empty; write what you want to say, or attach a file")]
    Empty,
    /// Text over [`MESSAGE_TEXT_BYTES_MAX`].
    #[error(
        "the message is {bytes} bytes; the most is {MESSAGE_TEXT_BYTES_MAX}. Send a shorter \
         message, or put the rest in an attached file"
    )]
    TooLong {
        /// Its size.
        bytes: usize,
    },
    /// A file over [`ATTACHMENT_BYTES_MAX`].
    #[error(
        "the file is {bytes} bytes; the most a message carries is {ATTACHMENT_BYTES_MAX} (every \
         device that holds the record keeps a copy). Send a smaller file, e.g. the photo scaled \
         down"
    )]
    AttachmentTooLarge {
        /// Its size.
        bytes: usize,
    },
    /// A file name that is empty, too long or holds control characters.
    #[error(
        "the file name must be 1 to {ATTACHMENT_NAME_BYTES_MAX} bytes with no control characters"
    )]
    BadAttachmentName,
    /// `about` is not `Type/id`.
    #[error("'{0}' is not an entry reference; name it as Type/id, e.g. Observation/abc123")]
    BadAbout(String),
    /// `in_response_to` is not a message id.
    #[error("'{0}' is not a message id (see `phr messages`)")]
    BadReplyTo(String),
}

/// Builds the `Communication` for `new`, with logical id `id`, sent at `now`.
pub fn build(new: &NewMessage, id: &str, now: Timestamp) -> Result<Value, MessageError> {
    let text = new.text.trim();
    if text.is_empty() && new.attachment.is_none() {
        return Err(MessageError::Empty);
    }
    if text.len() > MESSAGE_TEXT_BYTES_MAX {
        return Err(MessageError::TooLong { bytes: text.len() });
    }
    let mut payload = Vec::new();
    if !text.is_empty() {
        payload.push(json!({"contentString": text}));
    }
    if let Some(file) = &new.attachment {
        if file.data.len() > ATTACHMENT_BYTES_MAX {
            return Err(MessageError::AttachmentTooLarge {
                bytes: file.data.len(),
            });
        }
        if file.title.is_empty()
            || file.title.len() > ATTACHMENT_NAME_BYTES_MAX
            || file.title.chars().any(char::is_control)
        {
            return Err(MessageError::BadAttachmentName);
        }
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &file.data);
        let b64 = base64::engine::general_purpose::STANDARD;
        payload.push(json!({"contentAttachment": {
            "contentType": file.content_type,
            "data": b64.encode(&file.data),
            "title": file.title,
            "size": file.data.len(),
            "hash": b64.encode(sha1.as_ref()),
            "creation": now.to_string(),
        }}));
    }
    let mut communication = json!({
        "resourceType": "Communication",
        "id": id,
        "status": "completed",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/communication-category",
            "code": "notification",
            "display": "Notification"
        }], "text": "Message"}],
        "sent": now.to_string(),
        "sender": new.sender.reference(),
        "recipient": [new.recipient.reference()],
        "payload": payload,
    });
    if let Some(subject) = &new.subject {
        communication["subject"] = json!({"reference": subject});
    }
    if let Some(parent) = &new.in_response_to {
        if !is_valid_id(parent) {
            return Err(MessageError::BadReplyTo(parent.clone()));
        }
        communication["inResponseTo"] = json!([{"reference": format!("Communication/{parent}")}]);
    }
    if let Some(about) = &new.about {
        match about.parse::<ResourceKey>() {
            Ok(key) => communication["about"] = json!([{"reference": key.to_string()}]),
            Err(_) => return Err(MessageError::BadAbout(about.clone())),
        }
    }
    Ok(communication)
}

/// One message as read from the record.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    /// Its logical id (`Communication/<id>`).
    pub id: String,
    /// When it was sent, as its sender says.
    pub sent: Option<String>,
    /// Who signed it: the device or node that wrote it (its name and key).
    pub signer: String,
    /// The signer's key.
    pub signer_id: String,
    /// Who its `sender` field names, as written.
    pub sender: String,
    /// Whether the `sender` it names is its signer (see the module's doc).
    pub sender_matches: bool,
    /// Who it is for, as written.
    pub recipients: Vec<String>,
    /// What it says.
    pub text: String,
    /// The id of the message it answers.
    pub in_response_to: Option<String>,
    /// The entry it is about, as `Type/id`.
    pub about: Option<String>,
    /// The file it carries: name, type, size (read it with [`attachment`]).
    pub attachment: Option<AttachmentInfo>,
    /// Whether it has concurrent versions (it should not: only its sender writes it).
    pub conflict: bool,
}

/// What a message's file is, without its bytes.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AttachmentInfo {
    /// Its file name.
    pub title: String,
    /// Its media type.
    pub content_type: String,
    /// Its size in bytes.
    pub size: usize,
}

/// A first message and every reply below it, oldest first.
#[derive(Clone, Debug, Serialize)]
pub struct Thread {
    /// The first message's id.
    pub id: String,
    /// Every message of the thread, oldest first.
    pub messages: Vec<Message>,
}

impl Thread {
    /// When its newest message was sent (as its sender says).
    pub fn latest(&self) -> Option<&str> {
        self.messages.iter().filter_map(|m| m.sent.as_deref()).max()
    }
}

/// Every message in `record` (its `requests` section), in threads, the thread with the newest
/// message first. `ledger` (the record's consent state) tells who each signer is.
pub fn threads(record: &Record, ledger: &LedgerState) -> Result<Vec<Thread>, RecordError> {
    let mut messages = BTreeMap::new();
    for resource in record.resources_of_type(Section::Requests, "Communication")? {
        let Some(key) = ResourceKey::of(&resource) else {
            continue;
        };
        let (version, conflict) = match record.current(&key)? {
            None => continue,
            Some(Current::One(version)) => (version, false),
            Some(Current::Conflict(mut versions)) => (versions.remove(0), true),
        };
        messages.insert(key.id.clone(), read(&version, conflict, ledger));
    }
    // A message's thread starts at the first message up its chain of replies. A loop (each
    // answering the other, as only a hand-made message can) starts at its smallest id, so every
    // message of the loop and below it lands in one thread.
    let root_of = |id: &str| -> String {
        let mut path = vec![id.to_string()];
        let mut seen = BTreeSet::from([id.to_string()]);
        while path.len() < THREAD_DEPTH_MAX {
            let at = path.last().expect("the path starts with one message");
            let Some(parent) = messages
                .get(at)
                .and_then(|m| m.in_response_to.clone())
                .filter(|parent| messages.contains_key(parent))
            else {
                break;
            };
            if seen.contains(&parent) {
                let start = path.iter().position(|p| *p == parent).unwrap_or(0);
                return path[start..].iter().min().cloned().unwrap_or(parent);
            }
            seen.insert(parent.clone());
            path.push(parent);
        }
        path.pop().expect("the path starts with one message")
    };
    let mut grouped: BTreeMap<String, Vec<Message>> = BTreeMap::new();
    for id in messages.keys() {
        grouped
            .entry(root_of(id))
            .or_default()
            .push(messages[id].clone());
    }
    let mut threads: Vec<Thread> = grouped
        .into_iter()
        .map(|(id, mut messages)| {
            messages.sort_by(|a, b| (&a.sent, &a.id).cmp(&(&b.sent, &b.id)));
            Thread { id, messages }
        })
        .collect();
    threads.sort_by(|a, b| b.latest().cmp(&a.latest()).then(a.id.cmp(&b.id)));
    Ok(threads)
}

/// The FHIR `Reference`s message `id` names as its recipients, as written; `None` if there is
/// no such message.
pub fn recipients_of(record: &Record, id: &str) -> Result<Option<Vec<Value>>, RecordError> {
    let key = ResourceKey::new("Communication", id);
    Ok(record.get(&key)?.map(|resource| {
        resource
            .get("recipient")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }))
}

/// The bytes of the file message `id` carries, with what it is; `None` if it has none.
pub fn attachment(
    record: &Record,
    id: &str,
) -> Result<Option<(AttachmentInfo, Vec<u8>)>, RecordError> {
    let key = ResourceKey::new("Communication", id);
    let Some(resource) = record.get(&key)? else {
        return Ok(None);
    };
    let Some(file) = payloads(&resource).find_map(|p| p.get("contentAttachment")) else {
        return Ok(None);
    };
    let data = file
        .get("data")
        .and_then(Value::as_str)
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
        .unwrap_or_default();
    let info = attachment_info(file, data.len());
    Ok(Some((info, data)))
}

fn payloads(resource: &Value) -> impl Iterator<Item = &Value> {
    resource
        .get("payload")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn attachment_info(file: &Value, size: usize) -> AttachmentInfo {
    let text = |field: &str| file.get(field).and_then(Value::as_str).unwrap_or("");
    AttachmentInfo {
        title: text("title").to_string(),
        content_type: text("contentType").to_string(),
        size,
    }
}

fn read(version: &Version, conflict: bool, ledger: &LedgerState) -> Message {
    let resource = &version.resource;
    let text = payloads(resource)
        .filter_map(|p| p.get("contentString").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n");
    let attachment = payloads(resource)
        .find_map(|p| p.get("contentAttachment"))
        .map(|file| {
            let size = file
                .get("size")
                .and_then(Value::as_u64)
                .and_then(|s| usize::try_from(s).ok())
                .unwrap_or(0);
            attachment_info(file, size)
        });
    let first_id = |field: &str, prefix: &str| -> Option<String> {
        resource
            .get(field)?
            .as_array()?
            .iter()
            .filter_map(|r| r.get("reference")?.as_str())
            .find_map(|r| r.strip_prefix(prefix).map(str::to_string))
    };
    let about = resource
        .get("about")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|r| r.get("reference")?.as_str())
        .map(str::to_string);
    let sender_ref = resource.get("sender").cloned().unwrap_or(Value::Null);
    let signer_ok = version.author_is_writer();
    Message {
        id: resource
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        sent: resource
            .get("sent")
            .and_then(Value::as_str)
            .map(str::to_string),
        signer: version.author.name.clone(),
        signer_id: version.author.id.clone(),
        sender: display(&sender_ref),
        sender_matches: signer_ok && signer_is(ledger, &version.author.id, &sender_ref),
        recipients: resource
            .get("recipient")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(display)
            .collect(),
        text,
        in_response_to: first_id("inResponseTo", "Communication/"),
        about,
        attachment,
        conflict,
    }
}

/// A reference as a person reads it: its display, else its identifier or reference.
fn display(reference: &Value) -> String {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    text(reference.get("display"))
        .or_else(|| text(reference.get("identifier").and_then(|i| i.get("value"))))
        .or_else(|| text(reference.get("reference")))
        .unwrap_or_else(|| "someone unnamed".to_string())
}

/// Whether the party whose key is `signer` is who the `sender` reference names: the patient
/// for an owner device, the organisation (by ODS code or node key) for a grantee.
fn signer_is(ledger: &LedgerState, signer: &str, sender: &Value) -> bool {
    let Ok(peer) = signer.parse::<PeerId>() else {
        return false;
    };
    if ledger.is_owner(&peer) {
        return names_party(sender, &peer, None, true);
    }
    // A grant since revoked still says who wrote the messages sent under it.
    let ods = ledger
        .grants
        .iter()
        .chain(&ledger.revoked)
        .filter(|grant| grant.grantee.peer == peer)
        .find_map(|grant| grant.grantee.ods.clone());
    names_party(sender, &peer, ods.as_deref(), false)
}

/// Whether a `sender` reference names the party `peer` (with ODS code `ods`), or the patient
/// when `patient_device` (the party is one of the patient's devices).
fn names_party(sender: &Value, peer: &PeerId, ods: Option<&str>, patient_device: bool) -> bool {
    if patient_device {
        return sender
            .get("reference")
            .and_then(Value::as_str)
            .is_some_and(|r| r.starts_with("Patient/"))
            || (sender.get("identifier").is_none() && sender.get("reference").is_none());
    }
    let Some(identifier) = sender.get("identifier") else {
        return false;
    };
    let system = identifier.get("system").and_then(Value::as_str);
    let value = identifier.get("value").and_then(Value::as_str);
    match (system, value) {
        (Some(PEER_ID_SYSTEM), Some(value)) => value == peer.to_string(),
        (Some(ODS_CODE_SYSTEM), Some(value)) => ods.is_some_and(|ods| ods == value),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
