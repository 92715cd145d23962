//! The offline emergency card: the emergency document in one QR code, readable with no
//! network and no phr.
//!
//! The QR code holds the text `PHRE1.` ‖ key ‖ `.` ‖ JWE, where key is the 32-byte content key
//! (base64url, 43 characters) and JWE is the document in JWE compact serialisation (RFC 7516):
//! protected header `{"alg":"dir","enc":"A256GCM","zip":"DEF","cty":"application/fhir+json"}`,
//! an empty encrypted key (`dir`), a 96-bit random IV, the AES-256-GCM ciphertext of the
//! document's JSON compressed with raw DEFLATE (RFC 1951), and the tag. These are the file
//! encryption rules of SMART Health Links, so any JOSE library opens it (docs/FORMAT.md,
//! "Emergency card"; the viewer is docs/viewer/emergency.html).
//!
//! The key travels with the ciphertext: whoever holds the card reads it, which is what an
//! emergency card is for, and the card is as private as the paper it is on (the patient is
//! told so before making one). What the encryption adds is the format SMART Health Links uses
//! for its files, so a standard JOSE library reads it, and integrity: a code changed by hand
//! does not open.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use flate2::{Compression, read::DeflateDecoder, write::DeflateEncoder};
use jiff::Timestamp;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde_json::Value;
use std::io::{Read, Write};

use super::{Summary, document};

/// What a card's text starts with.
pub const CARD_PREFIX: &str = "PHRE1.";
/// The most bytes one QR code holds (version 40, error correction L, byte mode).
pub const QR_BYTES_MAX: usize = 2953;
/// The largest document a card opens into, in bytes: a bound on what a hand-made code may
/// inflate to.
pub const CARD_DOCUMENT_BYTES_MAX: u64 = 512 * 1024;

const HEADER: &str = r#"{"alg":"dir","enc":"A256GCM","zip":"DEF","cty":"application/fhir+json"}"#;

/// Why a card cannot be made or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CardError {
    /// Not a card's text.
    #[error("this is not a phr emergency card: its text should start with {CARD_PREFIX}")]
    NotACard,
    /// Damaged: it does not decode, decrypt or inflate.
    #[error("the emergency card is damaged or was changed ({0}); it cannot be read")]
    Damaged(String),
    /// Even the smallest summary does not fit one QR code.
    #[error(
        "the emergency summary does not fit one QR code even with every problem and medicine \
         left off ({0} bytes, at most {QR_BYTES_MAX}); use a link instead"
    )]
    TooLarge(usize),
}

/// `document` sealed into a card's text under `key`.
pub fn seal(document: &Value, key: &[u8; 32]) -> String {
    format!("{CARD_PREFIX}{}.{}", B64.encode(key), jwe(document, key))
}

/// `document` as a JWE compact serialisation under `key` (`dir`, `A256GCM`, `zip` `DEF`).
pub fn jwe(document: &Value, key: &[u8; 32]) -> String {
    let json = serde_json::to_vec(document).expect("a document serialises");
    let mut deflater = DeflateEncoder::new(Vec::new(), Compression::best());
    deflater.write_all(&json).expect("writing to memory");
    let mut sealed = deflater.finish().expect("writing to memory");
    let header = B64.encode(HEADER);
    let iv: [u8; 12] = crate::keys::random_array();
    let cipher = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key"));
    let tag = cipher
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(header.as_bytes()),
            &mut sealed,
        )
        .expect("far below AES-GCM's length limit");
    format!(
        "{header}..{}.{}.{}",
        B64.encode(iv),
        B64.encode(&sealed),
        B64.encode(tag.as_ref())
    )
}

/// The document a card's text holds.
pub fn open(text: &str) -> Result<Value, CardError> {
    let rest = text
        .trim()
        .strip_prefix(CARD_PREFIX)
        .ok_or(CardError::NotACard)?;
    let (key, compact) = rest
        .split_once('.')
        .ok_or_else(|| CardError::Damaged("it does not have the six parts of a card".into()))?;
    let key: [u8; 32] = B64
        .decode(key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| CardError::Damaged("its key is not 32 bytes of base64url".into()))?;
    open_jwe(compact, &key)
}

/// The FHIR document a JWE compact serialisation holds under `key` (a card's, or a link's
/// file), inflated within [`CARD_DOCUMENT_BYTES_MAX`].
pub fn open_jwe(compact: &str, key: &[u8; 32]) -> Result<Value, CardError> {
    let damaged = |why: &str| CardError::Damaged(why.to_string());
    let parts: Vec<&str> = compact.trim().split('.').collect();
    let [header, encrypted_key, iv, ciphertext, tag] = parts[..] else {
        return Err(damaged("it does not have the six parts of a card"));
    };
    let decode = |part: &str, what: &str| {
        B64.decode(part)
            .map_err(|_| CardError::Damaged(format!("its {what} is not base64url")))
    };
    let fields: Value = serde_json::from_slice(&decode(header, "header")?)
        .map_err(|_| damaged("its header is not JSON"))?;
    if fields["alg"] != "dir" || fields["enc"] != "A256GCM" || !encrypted_key.is_empty() {
        return Err(damaged("it is not encrypted as a card is (dir, A256GCM)"));
    }
    let iv: [u8; 12] = decode(iv, "IV")?
        .try_into()
        .map_err(|_| damaged("its IV is not 96 bits"))?;
    let mut sealed = decode(ciphertext, "ciphertext")?;
    sealed.extend(decode(tag, "tag")?);
    let cipher = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key"));
    let plain = cipher
        .open_in_place(
            Nonce::assume_unique_for_key(iv),
            Aad::from(header.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| damaged("it does not decrypt: changed, or cut short"))?;
    let json = if fields["zip"] == "DEF" {
        let mut out = Vec::new();
        DeflateDecoder::new(&plain[..])
            .take(CARD_DOCUMENT_BYTES_MAX + 1)
            .read_to_end(&mut out)
            .map_err(|_| damaged("it does not inflate"))?;
        if out.len() as u64 > CARD_DOCUMENT_BYTES_MAX {
            return Err(damaged(
                "it inflates past the largest document a card holds",
            ));
        }
        out
    } else {
        plain.to_vec()
    };
    let document: Value =
        serde_json::from_slice(&json).map_err(|_| damaged("what it holds is not JSON"))?;
    if document["resourceType"] != "Bundle" || document["type"] != "document" {
        return Err(damaged("what it holds is not a FHIR document Bundle"));
    }
    Ok(document)
}

/// A card's text and what had to be left off for it to fit one QR code.
#[derive(Clone, Debug)]
pub struct Fitted {
    /// The card's text.
    pub text: String,
    /// The problems and medicines left off, in the order they were dropped.
    pub dropped: Vec<String>,
}

/// The card of `summary` under `key`: the whole document if its text fits one code, else with
/// problems and medicines dropped from the end of the longer list until it does
/// ([`Summary::trim_one`]). A text fits when it is at most [`QR_BYTES_MAX`] bytes and
/// `encodes` says the caller's QR encoder takes it: an encoder that mixes segment modes may
/// need a few more bits than byte mode alone for a text near the limit.
pub fn fit(
    summary: &Summary,
    key: &[u8; 32],
    now: Timestamp,
    encodes: &dyn Fn(&str) -> bool,
) -> Result<Fitted, CardError> {
    let mut summary = summary.clone();
    let mut dropped = Vec::new();
    loop {
        let text = seal(&document(&summary, now), key);
        if text.len() <= QR_BYTES_MAX && encodes(&text) {
            return Ok(Fitted { text, dropped });
        }
        match summary.trim_one() {
            Some(item) => dropped.push(item),
            None => return Err(CardError::TooLarge(text.len())),
        }
    }
}
