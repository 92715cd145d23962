//! The online emergency link: a SMART Health Link whose manifest the patient's own node serves.
//!
//! - **The link** (`shlink:/` ‖ base64url of `{url, key, exp, flag, label, v}`): `url` is the
//!   manifest's, ending in a 43-character random id; `key` the 32-byte key of the file (which
//!   the serving node never holds: it keeps the file encrypted); `flag` `P` when a passcode is
//!   needed; `exp` when it lapses (seconds since the epoch).
//! - **The manifest** (`POST url` with `{recipient, passcode?}`): `{files: [{contentType,
//!   embedded}]}`, the file the emergency document as a JWE (`dir`, `A256GCM`, `DEF`), as the
//!   offline card seals it. Answered per [`answer`]: an unknown, revoked or lapsed link is
//!   `NotFound` (404); a wrong passcode is `WrongPasscode` (401) with the attempts left, and the
//!   link is disabled for good once [`PASSCODE_ATTEMPTS_MAX`] wrong ones were made in its life.
//! - **Every answer is an access** the serving node writes to the patient's `audit` section:
//!   who the requester says they are, when, from which address ([`access_event`]).
//!
//! The passcode is kept as PBKDF2-HMAC-SHA256 of it (a salt per link, [`PASSCODE_ROUNDS`]
//! rounds); a guess is compared in constant time. This module does no I/O.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use jiff::Timestamp;
use ring::pbkdf2;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{audit::PEER_ID_SYSTEM, keys::RecordId, party::Party};

/// Wrong passcodes a link takes in its whole life before it is disabled for good.
pub const PASSCODE_ATTEMPTS_MAX: u32 = 10;
/// PBKDF2 rounds for a kept passcode.
pub const PASSCODE_ROUNDS: u32 = 100_000;
/// The longest a link may last, in days.
pub const LINK_DAYS_MAX: i64 = 366;
/// The most links a node keeps for its record.
pub const LINKS_MAX: usize = 64;
/// The longest recipient name taken from a request, in bytes (more is cut).
pub const RECIPIENT_BYTES_MAX: usize = 256;
/// The largest manifest a reader takes, in bytes.
pub const MANIFEST_BYTES_MAX: u64 = 1024 * 1024;
/// The largest manifest request body, in bytes.
pub const MANIFEST_REQUEST_BYTES_MAX: usize = 4096;
/// The `AuditEvent.subtype` code of an emergency access, in phr's own code system.
pub const EMERGENCY_ACCESS: &str = "emergency-access";
/// phr's code system for audit subtypes of its own.
pub const PHR_AUDIT_SYSTEM: &str = "https://phr.invalid/fhir/CodeSystem/audit-subtype";

/// One link, as the serving node keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The manifest id: the last part of its URL (43 base64url characters, 256 random bits).
    pub id: String,
    /// What the patient called it.
    pub label: String,
    /// When it was made, unix milliseconds.
    pub created_ms: i64,
    /// When it lapses, unix milliseconds.
    pub expires_ms: i64,
    /// The passcode's salt and PBKDF2 hash, if one is needed.
    pub passcode: Option<([u8; 16], [u8; 32])>,
    /// Wrong passcodes left in its life.
    pub attempts_left: u32,
    /// Whether the patient revoked it.
    pub revoked: bool,
    /// The file: the emergency document as a JWE compact serialisation.
    pub file: String,
    /// How many times it was opened.
    pub opened: u32,
}

/// Why a link cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    /// Lifetime out of range.
    #[error("a link lasts 1 to {LINK_DAYS_MAX} days")]
    Lifetime,
    /// A passcode too short.
    #[error("a passcode has at least 6 characters")]
    ShortPasscode,
    /// Too many links.
    #[error("this node keeps at most {LINKS_MAX} links; revoke some first")]
    TooMany,
}

fn hash(passcode: &str, salt: &[u8; 16]) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(PASSCODE_ROUNDS).expect("non-zero"),
        salt,
        passcode.as_bytes(),
        &mut out,
    );
    out
}

/// A new link for `document` (the file, sealed under a fresh key), lasting `days`, with an
/// optional passcode; returns it and the key (which only the `shlink:/` carries).
pub fn make(
    document: &Value,
    label: &str,
    days: i64,
    passcode: Option<&str>,
    now: Timestamp,
) -> Result<(Link, [u8; 32]), LinkError> {
    if !(1..=LINK_DAYS_MAX).contains(&days) {
        return Err(LinkError::Lifetime);
    }
    if passcode.is_some_and(|p| p.chars().count() < 6) {
        return Err(LinkError::ShortPasscode);
    }
    let key: [u8; 32] = crate::keys::random_array();
    let file = super::card::jwe(document, &key);
    let passcode = passcode.map(|p| {
        let salt: [u8; 16] = crate::keys::random_array();
        (salt, hash(p, &salt))
    });
    let now_ms = now.as_millisecond();
    Ok((
        Link {
            id: B64.encode(crate::keys::random_array::<32>()),
            label: label.chars().take(80).collect(),
            created_ms: now_ms,
            expires_ms: now_ms + days * 86_400_000,
            passcode,
            attempts_left: PASSCODE_ATTEMPTS_MAX,
            revoked: false,
            file,
            opened: 0,
        },
        key,
    ))
}

/// The `shlink:/` text of `link` served under `base` (the manifest URL without its id).
pub fn shlink(link: &Link, key: &[u8; 32], base: &str) -> String {
    let payload = json!({
        "url": format!("{}/{}", base.trim_end_matches('/'), link.id),
        "key": B64.encode(key),
        "exp": link.expires_ms / 1000,
        "flag": if link.passcode.is_some() { "P" } else { "" },
        "label": link.label,
        "v": 1,
    });
    format!("shlink:/{}", B64.encode(payload.to_string()))
}

/// What a `shlink:/` says.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Payload {
    /// The manifest URL.
    pub url: String,
    /// The file key, base64url.
    pub key: String,
    /// When it lapses, seconds since the epoch.
    pub exp: Option<i64>,
    /// `P` (passcode), `L`, `U`, combined.
    #[serde(default)]
    pub flag: String,
    /// What it is.
    pub label: Option<String>,
}

impl Payload {
    /// The file key.
    pub fn key_bytes(&self) -> Option<[u8; 32]> {
        B64.decode(&self.key).ok()?.try_into().ok()
    }
}

/// Reads a `shlink:/` (alone, or after a viewer URL and `#`).
pub fn parse(text: &str) -> Option<Payload> {
    let text = text.trim();
    let encoded = text.split_once("shlink:/").map(|(_, rest)| rest)?;
    let bytes = B64.decode(encoded).ok()?;
    let payload: Payload = serde_json::from_slice(&bytes).ok()?;
    let key = B64.decode(&payload.key).ok()?;
    (key.len() == 32).then_some(payload)
}

/// A manifest request, as SMART Health Links define it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestRequest {
    /// Who asks, in their words (required).
    #[serde(default)]
    pub recipient: String,
    /// The passcode, for a `P` link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passcode: Option<String>,
}

/// How the serving node answers a manifest request.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// 200: the manifest.
    Manifest(Value),
    /// 404: no such link, revoked, lapsed, or disabled after too many wrong passcodes.
    NotFound,
    /// 401: the passcode is missing or wrong; so many attempts are left.
    WrongPasscode(u32),
    /// 400: the request is not one (no recipient).
    BadRequest(&'static str),
    /// 429: more requests for this link this hour than the serving node logs; nothing was given
    /// or logged (see the node's `ACCESSES_LOGGED_PER_KEY_PER_HOUR`).
    TooMany,
}

/// Answers `request` for `link` (which it updates: attempts, count of openings) at `now_ms`.
pub fn answer(link: &mut Link, request: &ManifestRequest, now_ms: i64) -> Answer {
    if link.revoked || now_ms >= link.expires_ms || link.attempts_left == 0 {
        return Answer::NotFound;
    }
    if request.recipient.trim().is_empty() {
        return Answer::BadRequest("a manifest request names its recipient");
    }
    if let Some((salt, expected)) = &link.passcode {
        let given = request.passcode.as_deref().unwrap_or("");
        let guess = hash(given, salt);
        let same = guess
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if !same {
            link.attempts_left -= 1;
            return if link.attempts_left == 0 {
                Answer::NotFound
            } else {
                Answer::WrongPasscode(link.attempts_left)
            };
        }
    }
    link.opened += 1;
    Answer::Manifest(json!({
        "files": [{"contentType": "application/fhir+json", "embedded": link.file}]
    }))
}

/// One request for a link, as the serving node saw it.
#[derive(Clone, Copy, Debug)]
pub struct Access<'a> {
    /// Who asked, as they say.
    pub recipient: &'a str,
    /// The address it came from.
    pub address: &'a str,
    /// How it was answered.
    pub outcome: &'a Answer,
    /// When.
    pub at: Timestamp,
}

/// The `AuditEvent` of `access` to `link`, logged by the serving node `server` (an owner
/// device) in `record`'s `audit` section.
pub fn access_event(
    id: &str,
    link: &Link,
    access: Access<'_>,
    server: &Party,
    record: RecordId,
) -> Value {
    let Access {
        recipient,
        address,
        outcome,
        at,
    } = access;
    let recipient: String = recipient.trim().chars().take(RECIPIENT_BYTES_MAX).collect();
    let (code, what) = match outcome {
        Answer::Manifest(_) => ("0", "opened"),
        Answer::WrongPasscode(_) => ("4", "gave a wrong passcode for"),
        Answer::NotFound => ("4", "was refused (revoked, lapsed or disabled)"),
        Answer::BadRequest(_) => ("4", "sent a malformed request for"),
        Answer::TooMany => ("4", "asked too often for"),
    };
    let server_id = json!({"identifier": {"system": PEER_ID_SYSTEM, "value": server.peer.to_string()}, "display": server.name});
    json!({
        "resourceType": "AuditEvent",
        "id": id,
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": PHR_AUDIT_SYSTEM, "code": EMERGENCY_ACCESS, "display": "Emergency access"}],
        "action": "R",
        "recorded": at.to_string(),
        "outcome": code,
        "outcomeDesc": format!("{recipient} {what} the emergency link '{}'", link.label),
        "agent": [{
            "who": {"display": recipient},
            "name": recipient,
            "requestor": true,
            "network": {"address": address, "type": "2"}
        }],
        "source": {"site": "phr", "observer": server_id},
        "entity": [{
            "what": {"identifier": {"system": crate::audit::RECORD_ID_SYSTEM, "value": record.to_string()}},
            "description": format!("emergency link '{}'", link.label),
        }],
    })
}
