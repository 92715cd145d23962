//! What the ledger seals: the names, roles, ODS codes and purposes of the parties it names.
//!
//! Checking a ledger needs PeerIds, access, sections, expiry, epochs and hashes; it never needs
//! to know that a grantee is called "Riverside Sexual Health Clinic" or why it was granted. From
//! format version 2 ([`super::SignedOp::sign_sealed`]) an operation that names a party (`Create`,
//! `AddDevice`, `Grant`) carries the party's details and the grant's purpose blank, and beside
//! them a [`Sealed`] copy of the real ones:
//!
//! - **for the owner devices**, under a key derived from the `audit` section's key of the time
//!   (only owner devices ever read `audit`, and every owner device, a new one too, is sent every
//!   epoch's key): ChaCha20-Poly1305, bound to the record and the operation's author;
//! - **for the party itself**, an age file to its recipient, so a grantee reads its own grant.
//!
//! The signature covers both copies. A node that can open neither (another grantee, a relay,
//! a stranger) sees placeholders ([`placeholder`]); what it can still learn is in
//! docs/PROTOCOL.md, "What each party learns".

use std::io::{Read, Write};

use ring::aead;
use serde::{Deserialize, Serialize};

use crate::{
    keys::{AgeIdentity, AgeRecipient, KeyId, RecordId, SectionKey, random_array, sha256},
    party::{Party, Role},
};

/// The largest sealed copy accepted, in bytes: details are a few hundred bytes, an age file to
/// one recipient adds about 200.
pub const SEALED_COPY_BYTES_MAX: usize = 4096;

/// The domain tag of the key the owners' copy is sealed with, derived from an `audit` key.
const DETAILS_KEY_CONTEXT: &[u8] = b"phr ledger details key v2\0";
/// The domain tag of the associated data that binds the owners' copy to its operation.
const DETAILS_AAD_CONTEXT: &[u8] = b"phr ledger details v2\0";

/// What an operation seals: the party's details and, for a grant, its purpose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Details {
    /// The party's display name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its ODS code, if it has one.
    pub ods: Option<String>,
    /// Why it was granted access (grants only).
    pub purpose: Option<String>,
}

/// The sealed copies an operation of format version 2 carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// For the owner devices: the `audit` key it is sealed under, a nonce, and the ciphertext
    /// of the postcard encoding of [`Details`] with its tag.
    pub owners: OwnersCopy,
    /// For the party the operation names: an age file of the same encoding.
    pub party: Vec<u8>,
}

/// The owner devices' copy of an operation's details.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnersCopy {
    /// The `audit` section key the details key is derived from.
    pub key_id: KeyId,
    /// The ChaCha20-Poly1305 nonce (random).
    pub nonce: [u8; 12],
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// Why a sealed copy did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Encrypting failed.
    #[error("could not seal a ledger operation's details: {0}")]
    Encrypt(String),
    /// The copy does not decrypt, or what it holds does not parse.
    #[error("a ledger operation's sealed details are damaged: {0}")]
    Damaged(String),
}

/// Seals `details` for the owners (under `audit`, the current `audit` section key) and for
/// `party`, binding the owners' copy to `record` and the operation's `author`.
pub fn seal(
    details: &Details,
    record: RecordId,
    author: &crate::keys::PeerId,
    audit: &SectionKey,
    party: &AgeRecipient,
) -> Result<Sealed, SealError> {
    let plain = postcard::to_stdvec(details).map_err(|e| SealError::Encrypt(e.to_string()))?;
    let nonce = random_array::<12>();
    let mut ciphertext = plain.clone();
    details_key(audit)
        .seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(aad(record, author)),
            &mut ciphertext,
        )
        .map_err(|_| SealError::Encrypt("ChaCha20-Poly1305 failed".into()))?;
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(party.as_age() as &dyn age::Recipient))
            .map_err(|e| SealError::Encrypt(e.to_string()))?;
    let mut for_party = Vec::with_capacity(plain.len() + 256);
    let mut writer = encryptor
        .wrap_output(&mut for_party)
        .map_err(|e| SealError::Encrypt(e.to_string()))?;
    writer
        .write_all(&plain)
        .and_then(|()| writer.finish().map(drop))
        .map_err(|e| SealError::Encrypt(e.to_string()))?;
    Ok(Sealed {
        owners: OwnersCopy {
            key_id: audit.id(),
            nonce,
            ciphertext,
        },
        party: for_party,
    })
}

/// Opens the owners' copy with `audit`, the key it names.
pub fn open_for_owner(
    sealed: &Sealed,
    record: RecordId,
    author: &crate::keys::PeerId,
    audit: &SectionKey,
) -> Result<Details, SealError> {
    let mut buffer = sealed.owners.ciphertext.clone();
    let plain = details_key(audit)
        .open_in_place(
            aead::Nonce::assume_unique_for_key(sealed.owners.nonce),
            aead::Aad::from(aad(record, author)),
            &mut buffer,
        )
        .map_err(|_| SealError::Damaged("the owners' copy does not decrypt".into()))?;
    parse(plain)
}

/// Opens the party's copy with its age identity; `Ok(None)` if it is not sealed to `identity`.
pub fn open_for_party(
    sealed: &Sealed,
    identity: &AgeIdentity,
) -> Result<Option<Details>, SealError> {
    let damaged = |e: String| SealError::Damaged(format!("the party's copy: {e}"));
    if crate::envelope::count_x25519_stanzas(&sealed.party) > 1 {
        return Err(damaged("it has more than one recipient".into()));
    }
    let decryptor = age::Decryptor::new_buffered(sealed.party.as_slice())
        .map_err(|e| damaged(e.to_string()))?;
    let mut reader =
        match decryptor.decrypt(std::iter::once(identity.as_age() as &dyn age::Identity)) {
            Ok(reader) => reader,
            Err(age::DecryptError::NoMatchingKeys) => return Ok(None),
            Err(e) => return Err(damaged(e.to_string())),
        };
    let mut plain = Vec::with_capacity(sealed.party.len());
    reader
        .read_to_end(&mut plain)
        .map_err(|e| damaged(e.to_string()))?;
    parse(&plain).map(Some)
}

fn parse(plain: &[u8]) -> Result<Details, SealError> {
    let (details, rest) = postcard::take_from_bytes::<Details>(plain)
        .map_err(|e| SealError::Damaged(format!("the details do not parse ({e})")))?;
    if !rest.is_empty() {
        return Err(SealError::Damaged("bytes after the details".into()));
    }
    Ok(details)
}

fn details_key(audit: &SectionKey) -> aead::LessSafeKey {
    let derived = sha256(&[DETAILS_KEY_CONTEXT, audit.bytes()]);
    let key = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &derived)
        .expect("a 32-byte ChaCha20-Poly1305 key");
    aead::LessSafeKey::new(key)
}

fn aad(record: RecordId, author: &crate::keys::PeerId) -> Vec<u8> {
    [
        DETAILS_AAD_CONTEXT,
        record.0.as_slice(),
        author.public_key().as_slice(),
    ]
    .concat()
}

/// The details a party is shown with where its sealed ones cannot be opened: no name, and the
/// role its place in the ledger implies.
pub fn placeholder(party: &mut Party, role: Role) {
    party.name = match role {
        Role::Patient => "a device of the patient's (name sealed)".into(),
        Role::Relay => "a relay (name sealed)".into(),
        Role::Provider => "a party the patient shares with (name sealed)".into(),
    };
    party.role = role;
    party.ods = None;
}

/// The party as it travels in a version 2 operation: everything but the key and recipient
/// blank.
pub fn blank(party: &Party) -> Party {
    Party {
        peer: party.peer,
        recipient: party.recipient.clone(),
        name: String::new(),
        role: Role::Patient,
        ods: None,
    }
}

/// Whether `party` is blank as [`blank`] makes it.
pub fn is_blank(party: &Party) -> bool {
    party.name.is_empty() && party.role == Role::Patient && party.ods.is_none()
}
