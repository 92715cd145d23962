//! Break-glass: a provider with no grant reads the emergency summary, in an emergency, with a
//! reason, from a node the patient trusts (the one serving their emergency links), without the
//! patient doing anything at that moment.
//!
//! - **Who may**: only providers the patient named beforehand on that node
//!   (`phr emergency break-glass allow CONTACT`, a contact whose signed card the patient added).
//! - **The request** ([`Request`]): the provider's signed contact card, the reason, the time, and
//!   an Ed25519 signature by the card's key over
//!   `"phr break-glass v1\0" ‖ SHA-256(url ‖ 0 ‖ reason ‖ 0 ‖ time_ms)`. The serving node checks
//!   ([`check`]) that the card verifies, the signature is its key's, the time is within
//!   [`REQUEST_SKEW_MS`] of its own, the reason is given, and the provider is named.
//! - **The answer** ([`Granted`]): the emergency document encrypted with age to the provider's
//!   recipient (from its card), so only that provider reads it, and when its read ends
//!   ([`BREAK_GLASS_HOURS`] later). The provider's phr keeps it until then and shows it no more
//!   after ([`Kept::readable`]).
//! - **Every request is logged** to the patient's record before it is answered, granted or
//!   refused, with the provider, the reason and the address ([`event`]): `phr audit` shows it as
//!   BREAK-GLASS.
//!
//! What this cannot do: make a provider forget what it read (a hostile provider may copy the
//! summary during its 24 hours, as a clinician may copy from any screen); verify an ODS code (a
//! card's ODS code is what its maker typed: the patient names provider nodes by their keys).

use std::io::{Read, Write};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    audit::{PEER_ID_SYSTEM, RECORD_ID_SYSTEM},
    card::Card,
    keys::{AgeIdentity, PeerId, RecordId, Signature, SigningKey},
    party::{Party, Role},
};

/// How long a break-glass read lasts, in hours.
pub const BREAK_GLASS_HOURS: i64 = 24;
/// How far a request's time may be from the serving node's, in milliseconds.
pub const REQUEST_SKEW_MS: i64 = 5 * 60_000;
/// The longest reason, in bytes.
pub const REASON_BYTES_MAX: usize = 1024;
/// The largest request body, in bytes.
pub const BREAK_GLASS_REQUEST_BYTES_MAX: usize = 16 * 1024;
/// The largest answer a provider takes, in bytes.
pub const BREAK_GLASS_ANSWER_BYTES_MAX: u64 = 1024 * 1024;
/// The `AuditEvent.subtype` code of a break-glass request.
pub const BREAK_GLASS: &str = "break-glass";

const DOMAIN: &[u8] = b"phr break-glass v1\0";

/// A provider's request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The provider's signed contact card, as `phr card` prints it.
    pub card: String,
    /// Why, in the clinician's words.
    pub reason: String,
    /// When, unix milliseconds, by the provider's clock.
    pub time_ms: i64,
    /// The card key's signature (base64) of the request (see the module's doc).
    pub signature: String,
}

fn message(url: &str, reason: &str, time_ms: i64) -> Vec<u8> {
    let mut body = url.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(reason.as_bytes());
    body.push(0);
    body.extend_from_slice(&time_ms.to_le_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &body);
    [DOMAIN, digest.as_ref()].concat()
}

/// The request of the provider whose card is `card` and key `key`, to `url`.
pub fn request(card: &str, key: &SigningKey, url: &str, reason: &str, now_ms: i64) -> Request {
    let reason = reason.trim().to_string();
    let signature = key.sign(&message(url, &reason, now_ms));
    Request {
        card: card.trim().to_string(),
        signature: B64.encode(signature.0),
        reason,
        time_ms: now_ms,
    }
}

/// Why a request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// The card or signature does not verify.
    #[error("the request is not signed by the node its card names")]
    Unsigned,
    /// Too far from now.
    #[error("the request's time is more than 5 minutes from the serving node's; check the clock")]
    Stale,
    /// No reason, or too long.
    #[error("give the reason, in up to {REASON_BYTES_MAX} bytes")]
    Reason,
    /// Not a provider, or not one the patient named.
    #[error("this patient has not named this provider for break-glass access")]
    NotNamed,
}

/// The provider a request comes from, if the patient named it in `allowed`; else why not. A
/// refusal after the card verified names the provider, for the patient's audit.
pub fn check(
    request: &Request,
    url: &str,
    allowed: &[PeerId],
    now_ms: i64,
) -> Result<Party, (Refusal, Option<Box<Party>>)> {
    let card = Card::parse(&request.card).map_err(|_| (Refusal::Unsigned, None))?;
    let signature: [u8; 64] = B64
        .decode(&request.signature)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or((Refusal::Unsigned, None))?;
    let party = card.party;
    party
        .peer
        .verify(
            &message(url, &request.reason, request.time_ms),
            &Signature(signature),
        )
        .map_err(|_| (Refusal::Unsigned, None))?;
    if (request.time_ms - now_ms).abs() > REQUEST_SKEW_MS {
        return Err((Refusal::Stale, Some(Box::new(party))));
    }
    if request.reason.trim().is_empty() || request.reason.len() > REASON_BYTES_MAX {
        return Err((Refusal::Reason, Some(Box::new(party))));
    }
    if party.role != Role::Provider || !allowed.contains(&party.peer) {
        return Err((Refusal::NotNamed, Some(Box::new(party))));
    }
    Ok(party)
}

/// The answer to a granted request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    /// The emergency document's JSON, age-encrypted to the provider (base64).
    pub sealed: String,
    /// When the read ends, unix milliseconds.
    pub expires_ms: i64,
}

/// The grant of `document` to `provider` at `now_ms`.
pub fn grant(document: &Value, provider: &Party, now_ms: i64) -> Granted {
    let encryptor = age::Encryptor::with_recipients(std::iter::once(
        provider.recipient.as_age() as &dyn age::Recipient
    ))
    .expect("one recipient");
    let mut sealed = Vec::new();
    let mut writer = encryptor
        .wrap_output(&mut sealed)
        .expect("writing to memory");
    writer
        .write_all(&serde_json::to_vec(document).expect("a document serialises"))
        .and_then(|()| writer.finish().map(drop))
        .expect("writing to memory");
    Granted {
        sealed: B64.encode(sealed),
        expires_ms: now_ms + BREAK_GLASS_HOURS * 3_600_000,
    }
}

/// What a provider keeps of a granted read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kept {
    /// Where it asked.
    pub url: String,
    /// Why.
    pub reason: String,
    /// The document.
    pub document: Value,
    /// When the read ends.
    pub expires_ms: i64,
}

impl Kept {
    /// The document, until the read ends; `None` from then on.
    pub fn readable(&self, now_ms: i64) -> Option<&Value> {
        (now_ms < self.expires_ms).then_some(&self.document)
    }
}

/// Opens a grant with the provider's `identity`.
pub fn open(granted: &Granted, identity: &AgeIdentity) -> Result<Value, String> {
    let sealed = B64
        .decode(&granted.sealed)
        .map_err(|_| "the answer is not base64".to_string())?;
    let decryptor =
        age::Decryptor::new_buffered(&sealed[..]).map_err(|e| format!("not an age file: {e}"))?;
    let mut reader = decryptor
        .decrypt(std::iter::once(identity.as_age() as &dyn age::Identity))
        .map_err(|_| "the answer is not for this node".to_string())?;
    let mut json = Vec::new();
    reader
        .by_ref()
        .take(super::CARD_DOCUMENT_BYTES_MAX + 1)
        .read_to_end(&mut json)
        .map_err(|e| format!("the answer does not decrypt: {e}"))?;
    if json.len() as u64 > super::CARD_DOCUMENT_BYTES_MAX {
        return Err("the answer is larger than a summary".into());
    }
    let document: Value =
        serde_json::from_slice(&json).map_err(|_| "the answer is not JSON".to_string())?;
    if document["resourceType"] != "Bundle" || document["type"] != "document" {
        return Err("the answer is not a FHIR document".into());
    }
    Ok(document)
}

/// The `AuditEvent` of a break-glass request: by whom (as its card says, when it verified), why,
/// from where, granted or not, logged by the serving node `server` in `record`.
pub fn event(
    id: &str,
    provider: Option<&Party>,
    request: &Request,
    outcome: Result<(), &Refusal>,
    (address, at): (&str, jiff::Timestamp),
    server: &Party,
    record: RecordId,
) -> Value {
    let name = provider.map_or("an unverified requester", |p| p.name.as_str());
    let reason: String = request.reason.chars().take(REASON_BYTES_MAX).collect();
    let desc = match outcome {
        Ok(()) => {
            format!("{name} read your emergency summary for {BREAK_GLASS_HOURS} h: \"{reason}\"")
        }
        Err(why) => format!("{name} was refused your emergency summary ({why}): \"{reason}\""),
    };
    let mut agent = json!({"name": name, "requestor": true,
        "network": {"address": address, "type": "2"}});
    if let Some(p) = provider {
        agent["who"] = json!({"identifier": {"system": PEER_ID_SYSTEM, "value": p.peer.to_string()}, "display": p.name});
        agent["altId"] = json!(p.peer.to_string());
    }
    json!({
        "resourceType": "AuditEvent",
        "id": id,
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": super::link::PHR_AUDIT_SYSTEM, "code": BREAK_GLASS, "display": "Break-glass access"}],
        "action": "R",
        "recorded": at.to_string(),
        "outcome": if outcome.is_ok() { "0" } else { "4" },
        "outcomeDesc": desc,
        "purposeOfEvent": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "ETREAT", "display": "Emergency Treatment"}], "text": reason}],
        "agent": [agent],
        "source": {"site": "phr", "observer": {"identifier": {"system": PEER_ID_SYSTEM, "value": server.peer.to_string()}, "display": server.name}},
        "entity": [{"what": {"identifier": {"system": RECORD_ID_SYSTEM, "value": record.to_string()}}, "description": "emergency summary"}],
    })
}
