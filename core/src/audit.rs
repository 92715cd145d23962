//! Audit entries: who read or changed what in a record.
//!
//! A grantee logs every read and write it makes as a FHIR R4 `AuditEvent` in the record's `audit`
//! section. It cannot read that section (only the owner devices do), so each entry is written as
//! a change of its own ([`crate::record::lone_change`]) by a fresh Automerge actor, and sealed
//! to the owner devices ([`crate::blob::BlobKind::SealedToOwners`]). [`audit_event`] builds the
//! resource, [`entry_actor`] the actor.
//!
//! The patient's view ([`entries`]) puts together three sources, newest first: the `AuditEvent`s
//! of the audit section, the consent-ledger operations (grants, revocations, devices), and the
//! writes made to the record by anyone but the patient's own devices.
//!
//! **Who** an entry is by comes from signatures, never from what the entry says. Every change in
//! a blob is made by an actor whose first 16 bytes are its signer's public key (checked when the
//! blob is opened, [`crate::changes::check_authorship`]; an entry sealed to the owners must also
//! be one new `AuditEvent` and nothing else, [`crate::changes::check_audit_entry`]), and
//! Automerge keeps the actor of every object it holds, compactions included. So the writer of a
//! version is the party whose key starts its actor id. An `AuditEvent` whose `agent` names
//! someone else is shown as its signer's, with the name it claims beside it
//! ([`AuditEntry::claimed_agent`]).

use std::collections::{BTreeMap, BTreeSet};

use automerge::ActorId;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::{
    changes::ACTOR_KEY_BYTES,
    fhir::reference::ResourceKey,
    keys::{PeerId, RecordId, hex, random_array},
    ledger::{Access, Ledger, OpBody, RevokeTarget},
    party::{Party, Role},
    record::{Record, RecordError, Version},
    section::Section,
    view::describe_resource,
};

/// FHIR's audit event types (`AuditEvent.type`).
pub const AUDIT_EVENT_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
/// FHIR's RESTful interactions (`AuditEvent.subtype`).
pub const RESTFUL_INTERACTION_SYSTEM: &str = "http://hl7.org/fhir/restful-interaction";
/// Where a node's PeerId is an identifier (an agent without an ODS code, the observer).
pub const PEER_ID_SYSTEM: &str = "https://phr.invalid/fhir/NamingSystem/peer-id";
/// Where a record's id is an identifier (the entity read).
pub const RECORD_ID_SYSTEM: &str = "https://phr.invalid/fhir/NamingSystem/record-id";
/// The ODS organisation code system.
const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
/// The `entity.detail` type that names a section read or written.
const SECTION_DETAIL: &str = "section";

/// What a logged access did (`AuditEvent.action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    /// Read (`R`).
    Read,
    /// Created a resource (`C`).
    Create,
    /// Updated a resource (`U`).
    Update,
}

impl AuditAction {
    /// The FHIR `AuditEvent.action` code.
    pub fn code(self) -> &'static str {
        match self {
            AuditAction::Read => "R",
            AuditAction::Create => "C",
            AuditAction::Update => "U",
        }
    }

    /// The FHIR RESTful interaction (`AuditEvent.subtype`).
    fn interaction(self) -> &'static str {
        match self {
            AuditAction::Read => "read",
            AuditAction::Create => "create",
            AuditAction::Update => "update",
        }
    }
}

/// One access as its audit entry names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// Read, create or update.
    pub action: AuditAction,
    /// What was done, in a few words (`show`, `export`, `history`, `add condition`).
    pub what: String,
    /// The sections read or written.
    pub sections: Vec<Section>,
    /// The one resource concerned, if there is one.
    pub resource: Option<ResourceKey>,
}

impl Logged {
    /// A read of `sections`.
    pub fn read(what: impl Into<String>, sections: &[Section]) -> Logged {
        Logged {
            action: AuditAction::Read,
            what: what.into(),
            sections: sections.to_vec(),
            resource: None,
        }
    }

    /// The same access, about one resource.
    pub fn of(mut self, resource: ResourceKey) -> Logged {
        self.resource = Some(resource);
        self
    }
}

/// A fresh Automerge actor for one audit entry of `peer`: its public key's first 16 bytes, so
/// readers know who wrote it, then 16 random bytes, so no (actor, sequence number) pair is ever
/// used twice although the writer never sees the audit document.
pub fn entry_actor(peer: &PeerId) -> ActorId {
    let mut actor = peer.public_key()[..ACTOR_KEY_BYTES].to_vec();
    actor.extend_from_slice(&random_array::<16>());
    ActorId::from(actor)
}

/// The FHIR R4 `AuditEvent` that logs `logged`, done by `agent` on `record` at `at`.
pub fn audit_event(
    id: &str,
    logged: &Logged,
    agent: &Party,
    record: RecordId,
    at: Timestamp,
) -> Value {
    let peer = agent.peer.to_string();
    let who = match &agent.ods {
        Some(ods) => {
            json!({"identifier": {"system": ODS_SYSTEM, "value": ods}, "display": agent.name})
        }
        None => {
            json!({"identifier": {"system": PEER_ID_SYSTEM, "value": peer}, "display": agent.name})
        }
    };
    let sections: Vec<&str> = logged.sections.iter().map(|s| s.as_str()).collect();
    let details: Vec<Value> = sections
        .iter()
        .map(|s| json!({"type": SECTION_DETAIL, "valueString": s}))
        .collect();
    let mut record_entity = json!({
        "what": {"identifier": {"system": RECORD_ID_SYSTEM, "value": record.to_string()}},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
        "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
        "description": format!("{}: {}", logged.what, sections.join(", ")),
    });
    if !details.is_empty() {
        record_entity["detail"] = Value::Array(details);
    }
    let mut entities = vec![record_entity];
    if let Some(resource) = &logged.resource {
        entities.push(json!({
            "what": {"reference": resource.to_string()},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
        }));
    }
    json!({
        "resourceType": "AuditEvent",
        "id": id,
        "type": {"system": AUDIT_EVENT_TYPE_SYSTEM, "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": RESTFUL_INTERACTION_SYSTEM, "code": logged.action.interaction()}],
        "action": logged.action.code(),
        "recorded": at.to_string(),
        "outcome": "0",
        "agent": [{"who": who, "altId": peer, "name": agent.name, "requestor": true}],
        "source": {
            "site": "phr",
            "observer": {"identifier": {"system": PEER_ID_SYSTEM, "value": peer}, "display": agent.name},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}],
        },
        "entity": entities,
    })
}

/// What an entry of the patient's audit view is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AuditKind {
    /// Somebody read the record (an `AuditEvent` with action `R`, or any other `AuditEvent`).
    Read,
    /// Somebody other than the patient's devices wrote to the record.
    Write,
    /// The consent ledger changed: the record made, a device added or removed, a grant, a
    /// revocation.
    Consent,
}

impl AuditKind {
    /// The kind as one word.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Read => "read",
            AuditKind::Write => "write",
            AuditKind::Consent => "consent",
        }
    }
}

/// Who did something, as the record's consent ledger names the key that signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    /// The signer's PeerId; `None` for a writer the ledger does not name (shown by its actor).
    pub peer: Option<PeerId>,
    /// Its name in the ledger.
    pub name: String,
    /// Patient device, provider or relay, if the ledger names it.
    pub role: Option<Role>,
    /// Its ODS code, for a provider that has one.
    pub ods: Option<String>,
}

impl Who {
    fn of(party: &Party) -> Who {
        Who {
            peer: Some(party.peer),
            name: party.name.clone(),
            role: Some(party.role),
            ods: party.ods.clone(),
        }
    }
}

/// One line of the patient's audit view.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// When, as the writer's clock says (a ledger operation's or version's time, an
    /// `AuditEvent`'s `recorded`).
    pub time: Timestamp,
    /// A read, a write or a change of consent.
    pub kind: AuditKind,
    /// Who, from the signature (never from what the entry says).
    pub who: Who,
    /// What happened, in words.
    pub what: String,
    /// The resource it is about (`AuditEvent/id`, `Condition/id`) or the ledger operation.
    pub reference: String,
    /// When an `AuditEvent` names another agent than the one that signed it: the name it gives.
    pub claimed_agent: Option<String>,
}

/// The patient's audit view of a record: every `AuditEvent` of the audit section, every
/// consent-ledger operation but key announcements, and every write by a writer that is not one
/// of the patient's devices, newest first. `record` must be materialised by an owner device.
pub fn entries(record: &Record, ledger: &Ledger) -> Result<Vec<AuditEntry>, RecordError> {
    let parties = Parties::of(ledger);
    let writes = write_entries(record, &parties)?;
    let written: BTreeSet<(String, String)> = writes
        .iter()
        .map(|(prefix, entry)| (prefix.clone(), entry.reference.clone()))
        .collect();
    let mut out = consent_entries(ledger, &parties);
    for (key, _, _) in record.resources(Section::Audit)? {
        if key.resource_type != "AuditEvent" {
            continue;
        }
        for version in record.history(&key)? {
            let entry = event_entry(&version, &parties);
            // A write its writer also logged (honestly) is shown once, from the record itself,
            // which proves it and says what was written.
            let shown_as_write = entry.kind == AuditKind::Write
                && entry.claimed_agent.is_none()
                && writer_prefix(&version).is_some_and(|prefix| {
                    entity_references(&version.resource)
                        .into_iter()
                        .any(|reference| written.contains(&(prefix.clone(), reference)))
                });
            if !shown_as_write {
                out.push(entry);
            }
        }
    }
    out.extend(writes.into_iter().map(|(_, entry)| entry));
    out.sort_by(|a, b| (b.time, a.kind, &a.reference).cmp(&(a.time, b.kind, &b.reference)));
    Ok(out)
}

/// Every party the ledger ever named, by PeerId and by the hex of the first 16 bytes of its
/// key (an actor id's prefix), and which of them are the patient's own devices.
struct Parties {
    by_peer: BTreeMap<PeerId, Party>,
    by_prefix: BTreeMap<String, PeerId>,
    devices: BTreeSet<PeerId>,
    root: Option<PeerId>,
}

impl Parties {
    fn of(ledger: &Ledger) -> Parties {
        let mut parties = Parties {
            by_peer: BTreeMap::new(),
            by_prefix: BTreeMap::new(),
            devices: BTreeSet::new(),
            root: ledger.state().root,
        };
        for op in ledger.ops() {
            let party = match &op.op().body {
                OpBody::Create { first_device, .. } => {
                    parties.devices.insert(first_device.peer);
                    first_device
                }
                OpBody::AddDevice { device } => {
                    parties.devices.insert(device.peer);
                    device
                }
                OpBody::Grant { grantee, .. } => grantee,
                _ => continue,
            };
            parties.by_prefix.insert(prefix_of(&party.peer), party.peer);
            parties.by_peer.insert(party.peer, party.clone());
        }
        parties
    }

    fn who(&self, peer: &PeerId) -> Who {
        match self.by_peer.get(peer) {
            Some(party) => Who::of(party),
            None if Some(*peer) == self.root => Who {
                peer: Some(*peer),
                name: "the record's root key".into(),
                role: None,
                ods: None,
            },
            None => Who {
                peer: Some(*peer),
                name: format!("an unknown node ({})", peer.short()),
                role: None,
                ods: None,
            },
        }
    }

    /// The writer of a version, from its actor.
    fn writer(&self, actor_prefix: &str) -> Who {
        match self.by_prefix.get(actor_prefix) {
            Some(peer) => self.who(peer),
            None => Who {
                peer: None,
                name: format!("an unknown writer (actor {})", &actor_prefix[..8]),
                role: None,
                ods: None,
            },
        }
    }
}

/// A party's name as the ledger last gave it (a grant or a device admission), or what
/// [`Parties::who`] says of a key it does not know.
pub(crate) fn party_name(ledger: &Ledger, peer: &PeerId) -> String {
    Parties::of(ledger).who(peer).name
}

fn prefix_of(peer: &PeerId) -> String {
    hex(&peer.public_key()[..ACTOR_KEY_BYTES])
}

/// The hex of the first 16 bytes of the actor that wrote a version (`counter@actor`).
fn writer_prefix(version: &Version) -> Option<String> {
    let (_, actor) = version.id.split_once('@')?;
    actor.get(..2 * ACTOR_KEY_BYTES).map(str::to_string)
}

fn consent_entries(ledger: &Ledger, parties: &Parties) -> Vec<AuditEntry> {
    let state = ledger.state();
    let grant_by_id = |id| {
        state
            .grants
            .iter()
            .chain(&state.revoked)
            .find(|g| g.id == id)
    };
    let mut out = Vec::new();
    for op in ledger.ops().filter(|op| state.valid.contains(&op.id())) {
        let what = match &op.op().body {
            OpBody::Create { first_device, .. } => {
                format!(
                    "created the record, owned by device '{}'",
                    first_device.name
                )
            }
            OpBody::AddDevice { device } => format!("added device '{}'", device.name),
            OpBody::RemoveDevice { device } => {
                format!("removed device '{}'", parties.who(device).name)
            }
            OpBody::Grant {
                grantee,
                sections,
                access,
                expires_ms,
                purpose,
            } => grant_words(grantee, sections, *access, *expires_ms, purpose.as_deref()),
            OpBody::Revoke {
                target: RevokeTarget::Party(peer),
            } => format!("revoked every grant to {}", parties.who(peer).name),
            OpBody::Revoke {
                target: RevokeTarget::Grant(id),
            } => match grant_by_id(*id) {
                Some(grant) => format!(
                    "revoked {}'s grant {}",
                    grant.grantee.name,
                    grant.id.short()
                ),
                None => format!("revoked grant {}", id.short()),
            },
            OpBody::Keys { .. } | OpBody::Pin { .. } => continue,
            OpBody::Close {
                party,
                sections,
                accepted,
            } if sections.is_empty() => format!(
                "accepted {} held {} from {}",
                accepted.len(),
                if accepted.len() == 1 {
                    "entry"
                } else {
                    "entries"
                },
                parties.who(party).name
            ),
            OpBody::Close {
                party,
                sections,
                accepted,
            } => {
                let sections: Vec<Section> = sections.clone();
                format!(
                    "closed {}'s writing to {}, keeping the {} {} it wrote before",
                    parties.who(party).name,
                    section_list(&sections),
                    accepted.len(),
                    if accepted.len() == 1 {
                        "entry"
                    } else {
                        "entries"
                    },
                )
            }
        };
        out.push(AuditEntry {
            time: Timestamp::from_millisecond(op.op().time_ms).unwrap_or(Timestamp::UNIX_EPOCH),
            kind: AuditKind::Consent,
            who: parties.who(&op.op().author),
            what,
            reference: format!("ledger operation {}", op.id().short()),
            claimed_agent: None,
        });
    }
    out
}

fn grant_words(
    grantee: &Party,
    sections: &[Section],
    access: Access,
    expires_ms: Option<i64>,
    purpose: Option<&str>,
) -> String {
    let what = match access {
        Access::Read => format!("read access to {}", section_list(sections)),
        Access::Write => format!("read and write access to {}", section_list(sections)),
        Access::Relay => "relaying (ciphertext only)".to_string(),
    };
    let until = expires_ms
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .map(|t| format!(" until {}", t.strftime("%Y-%m-%d")))
        .unwrap_or_default();
    let purpose = purpose.map(|p| format!(" for \"{p}\"")).unwrap_or_default();
    format!("granted {} {what}{until}{purpose}", grantee.name)
}

fn section_list(sections: &[Section]) -> String {
    sections
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One `AuditEvent` version as an entry: by its writer, whatever its `agent` says.
fn event_entry(version: &Version, parties: &Parties) -> AuditEntry {
    let resource = &version.resource;
    let who = match writer_prefix(version) {
        Some(prefix) => parties.writer(&prefix),
        None => Who {
            peer: None,
            name: "an unknown writer".into(),
            role: None,
            ods: None,
        },
    };
    let time = resource["recorded"]
        .as_str()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .unwrap_or(version.time);
    let kind = match resource["action"].as_str() {
        Some("C" | "U" | "D") => AuditKind::Write,
        _ => AuditKind::Read,
    };
    let claimed = claimed_agent(resource);
    let claimed_agent = claimed
        .filter(|(name, peer)| !agent_is(&who, name, peer.as_deref()))
        .map(|(name, _)| name);
    AuditEntry {
        time,
        kind,
        who,
        what: event_words(resource),
        reference: format!("AuditEvent/{}", resource["id"].as_str().unwrap_or("?")),
        claimed_agent,
    }
}

/// The agent an `AuditEvent` names (its requestor, or its first agent): a name and, if given,
/// the PeerId it claims.
fn claimed_agent(resource: &Value) -> Option<(String, Option<String>)> {
    let agents = resource["agent"].as_array()?;
    let agent = agents
        .iter()
        .find(|a| a["requestor"].as_bool() == Some(true))
        .or_else(|| agents.first())?;
    let name = agent["name"]
        .as_str()
        .or_else(|| agent["who"]["display"].as_str())
        .or_else(|| agent["who"]["reference"].as_str())
        .unwrap_or("an unnamed agent")
        .to_string();
    let peer = agent["altId"].as_str().map(str::to_string).or_else(|| {
        let identifier = &agent["who"]["identifier"];
        (identifier["system"].as_str() == Some(PEER_ID_SYSTEM))
            .then(|| identifier["value"].as_str().map(str::to_string))
            .flatten()
    });
    Some((name, peer))
}

/// Whether the agent an entry names is its signer: same name, and same PeerId if it gives one.
fn agent_is(signer: &Who, name: &str, peer: Option<&str>) -> bool {
    let same_peer = match (peer, &signer.peer) {
        (Some(claimed), Some(signer)) => claimed == signer.to_string(),
        (Some(_), None) => false,
        (None, _) => true,
    };
    same_peer && name == signer.name
}

/// An `AuditEvent` in words: `read summary, clinical (show)`, `created Condition/1 in clinical`.
fn event_words(resource: &Value) -> String {
    let emergency = resource["subtype"].as_array().is_some_and(|subtypes| {
        subtypes
            .iter()
            .any(|s| s["code"] == crate::emergency::link::EMERGENCY_ACCESS)
    });
    let break_glass = resource["subtype"].as_array().is_some_and(|subtypes| {
        subtypes
            .iter()
            .any(|s| s["code"] == crate::emergency::break_glass::BREAK_GLASS)
    });
    if break_glass {
        return format!(
            "BREAK-GLASS: {}",
            resource["outcomeDesc"]
                .as_str()
                .unwrap_or("a provider asked for your emergency summary")
        );
    }
    if emergency {
        return format!(
            "EMERGENCY ACCESS: {}",
            resource["outcomeDesc"]
                .as_str()
                .unwrap_or("someone used an emergency link")
        );
    }
    let verb = match resource["action"].as_str() {
        Some("R") => "read",
        Some("C") => "created",
        Some("U") => "updated",
        Some("D") => "deleted",
        Some("E") => "ran",
        _ => "did",
    };
    let entities = resource["entity"].as_array().cloned().unwrap_or_default();
    let sections: Vec<&str> = entities
        .iter()
        .flat_map(|e| e["detail"].as_array().into_iter().flatten())
        .filter(|d| d["type"].as_str() == Some(SECTION_DETAIL))
        .filter_map(|d| d["valueString"].as_str())
        .collect();
    let references = entity_references(resource);
    let mut what = verb.to_string();
    if !references.is_empty() {
        what += &format!(" {}", references.join(", "));
    }
    if !sections.is_empty() {
        let joiner = if references.is_empty() { "" } else { " in" };
        what += &format!("{joiner} {}", sections.join(", "));
    }
    if references.is_empty() && sections.is_empty() {
        let kind = resource["type"]["display"]
            .as_str()
            .or_else(|| resource["type"]["code"].as_str())
            .unwrap_or("an audit event");
        what += &format!(" ({kind})");
    }
    let described = entities
        .first()
        .and_then(|e| e["description"].as_str())
        .and_then(|d| d.split(':').next())
        .filter(|d| !d.is_empty());
    if let Some(command) = described {
        what += &format!(" ({command})");
    }
    what
}

/// The `Type/id` references an `AuditEvent`'s entities name.
fn entity_references(resource: &Value) -> Vec<String> {
    resource["entity"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["what"]["reference"].as_str())
        .filter(|r| r.parse::<ResourceKey>().is_ok())
        .map(str::to_string)
        .collect()
}

/// Every version of every resource outside `audit` written by an actor that is not one of the
/// patient's devices, with that actor's prefix.
fn write_entries(
    record: &Record,
    parties: &Parties,
) -> Result<Vec<(String, AuditEntry)>, RecordError> {
    let devices: BTreeSet<String> = parties.devices.iter().map(prefix_of).collect();
    let mut out = Vec::new();
    for section in Section::ALL.into_iter().filter(|s| *s != Section::Audit) {
        for (key, _, _) in record.resources(section)? {
            for version in record.history(&key)? {
                let Some(prefix) = writer_prefix(&version) else {
                    continue;
                };
                if devices.contains(&prefix) {
                    continue;
                }
                let verb = if version.replaces.is_empty() {
                    "wrote"
                } else {
                    "updated"
                };
                let entry = AuditEntry {
                    time: version.time,
                    kind: AuditKind::Write,
                    who: parties.writer(&prefix),
                    what: format!(
                        "{verb} {key} in {}: {}",
                        version.section,
                        describe_resource(&version.resource)
                    ),
                    reference: key.to_string(),
                    claimed_agent: None,
                };
                out.push((prefix, entry));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
