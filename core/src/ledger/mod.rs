//! The consent ledger: a per-record log of signed, hash-linked operations that says who may read,
//! write and relay each section of a record.
//!
//! Every operation ([`Op`]) names the record, its parents (the ledger heads its author had seen),
//! its author and a body: create the record, add or remove an owner device, grant, revoke, or
//! announce section keys. It travels as a [`SignedOp`]: a small versioned envelope around the
//! postcard encoding of the operation, signed with Ed25519 by the author. Its id is the SHA-256 of
//! those exact bytes, so the parents form a hash-linked graph that nobody can rewrite.
//!
//! The ledger's state ([`LedgerState`]) is a deterministic function of the *set* of operations a
//! node holds: nodes that hold the same operations agree, whatever order or duplication they
//! arrived in. The rules (documented in `docs/FORMAT.md`, "Consent ledger operations") make the
//! security properties hold under concurrency:
//!
//! - Only the record root key adds or removes owner devices; only owner devices grant, revoke
//!   and announce keys.
//! - A revocation beats a concurrent grant; a grant that causally follows the revocation
//!   re-admits the party.
//! - A device removal beats a concurrent re-add, and an operation made by a device concurrently
//!   with (or after) its removal has no effect, so a stolen device cannot back-date grants by
//!   choosing old parents.
//!
//! Operations whose ancestors are not all held yet are kept but *pending*: they count for nothing
//! until their parents arrive.
//!
//! ```
//! use phr_core::keys::{AgeIdentity, SigningKey};
//! use phr_core::ledger::{Access, Ledger, OpBody, SignedOp};
//! use phr_core::party::{Party, Role};
//! use phr_core::section::Section;
//!
//! let party = |key: &SigningKey, name: &str, role| Party {
//!     peer: key.peer_id(),
//!     recipient: AgeIdentity::generate().recipient(),
//!     name: name.into(),
//!     role,
//!     ods: None,
//! };
//! let (root, phone, gp) = (SigningKey::generate(), SigningKey::generate(), SigningKey::generate());
//!
//! // The patient creates the record on their phone and grants their GP the summary.
//! let mut patient = Ledger::create(&root, party(&phone, "Alex", Role::Patient), 1_000).unwrap();
//! let grant = OpBody::Grant {
//!     grantee: party(&gp, "Riverside Surgery", Role::Provider),
//!     sections: vec![Section::Summary],
//!     access: Access::Read,
//!     expires_ms: None,
//!     purpose: Some("repeat prescriptions".into()),
//! };
//! patient.append(&phone, grant, 2_000).unwrap();
//!
//! // The GP's node receives the operations as bytes, in any order, and reaches the same state.
//! let mut surgery = Ledger::new(patient.record());
//! for op in patient.ops().collect::<Vec<_>>().into_iter().rev() {
//!     surgery.insert(SignedOp::decode(op.bytes()).unwrap()).unwrap();
//! }
//! assert_eq!(surgery.state(), patient.state());
//! assert!(surgery.state().can_read(&gp.peer_id(), Section::Summary, 3_000));
//! assert!(!surgery.state().can_read(&gp.peer_id(), Section::Sensitive, 3_000));
//! ```

mod admit;
pub mod sealed;
mod state;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::OnceLock,
};

use serde::{Deserialize, Serialize};

use crate::{
    keys::{
        AgeIdentity, BlobId, KeyId, OpId, PeerId, RecordId, SectionKey, Signature, SigningKey,
        sha256,
    },
    party::{PARTY_NAME_BYTES_MAX, Party, Role},
    section::Section,
};

use sealed::{Details, Sealed};

pub use admit::{Admission, LEDGER_PENDING_PER_AUTHOR_MAX};
pub use state::{CloseState, EpochKey, GrantState, LedgerState};

/// The largest encoded signed operation accepted, in bytes. A `Keys` operation carrying an age
/// envelope for a few hundred readers fits easily; anything larger is refused before parsing.
pub const LEDGER_OP_BYTES_MAX: usize = 256 * 1024;
/// The most operations a [`Ledger`] holds for one record, so that a misbehaving peer cannot
/// grow it without bound. A real record has tens.
pub const LEDGER_OPS_MAX: usize = 10_000;
/// The most parents one operation may name.
pub const LEDGER_PARENTS_MAX: usize = 64;
/// The longest purpose a grant may carry, in bytes of UTF-8.
pub const GRANT_PURPOSE_BYTES_MAX: usize = 500;
/// The most (epoch, key id) pairs one `Keys` operation may announce.
pub const KEYS_OP_KEYS_MAX: usize = 4096;
/// The most recipients one `Keys` operation may name.
pub const KEYS_OP_RECIPIENTS_MAX: usize = 4096;
/// The most blobs one `Close` operation may accept (128 KiB of ids). An owner compacts every
/// few dozen blobs, so the blobs of one party not yet folded into a compaction are far fewer.
pub const CLOSE_ACCEPTED_MAX: usize = 4096;
/// The most change heads one `Pin` operation may name, over all its sections (128 KiB of
/// hashes). A party's changes held by one owner device have one head per actor it wrote as:
/// one per device, or one per audit entry not yet compacted.
pub const PIN_HEADS_MAX: usize = 4096;

/// The magic bytes that open every encoded signed operation.
const MAGIC: &[u8; 4] = b"PHRL";
/// The format version of an operation whose details are in clear: every operation before
/// sealing, and those that name no party's details (revocations, keys, closes, pins).
const VERSION: u8 = 1;
/// The format version of an operation whose party details and purpose are sealed
/// ([`sealed`]).
const VERSION_SEALED: u8 = 2;
/// Magic, version and the u32 length of the postcard encoding.
const HEADER_BYTES: usize = 4 + 1 + 4;
/// An Ed25519 signature.
const SIGNATURE_BYTES: usize = 64;
/// The domain-separation prefix of the signed message, so an operation's signature can never be
/// mistaken for a signature over a blob, a contact card or anything else the same key signs.
const SIGNING_CONTEXT: &[u8] = b"phr ledger op v1\0";

/// What a grant lets its grantee do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Access {
    /// Read the granted sections (and append entries to `audit`).
    Read,
    /// Read and write the granted sections. Write implies Read: nobody writes blind.
    Write,
    /// Store and forward the ciphertext of every section, with no keys: a relay reads nothing.
    Relay,
}

/// What a revocation ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevokeTarget {
    /// One grant, by the id of the operation that made it, wherever it is in the graph.
    Grant(OpId),
    /// Every grant to this party that does not causally follow the revocation.
    Party(PeerId),
}

/// What an operation does. The variant order is part of the byte format: do not reorder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpBody {
    /// Creates the record. Signed by the record root key; the only operation with no parents,
    /// and the record id is derived from `root` ([`RecordId::of_root`]).
    Create {
        /// The record root key's public half.
        root: PeerId,
        /// The patient's first device, an owner from the start.
        first_device: Party,
    },
    /// Admits an owner device. Signed by the root key.
    AddDevice {
        /// The device.
        device: Party,
    },
    /// Removes an owner device, e.g. a lost phone. Signed by the root key.
    RemoveDevice {
        /// The device.
        device: PeerId,
    },
    /// Grants a party access to sections. Signed by an owner device.
    Grant {
        /// Who is granted access.
        grantee: Party,
        /// The sections, non-empty and without duplicates; never `audit` unless `access` is
        /// `Relay`, whose grants cover every section's ciphertext and ignore this list.
        sections: Vec<Section>,
        /// Read, write or relay.
        access: Access,
        /// When the grant lapses, in unix milliseconds; `None` lasts until revoked.
        expires_ms: Option<i64>,
        /// Why, in the patient's words, for display.
        purpose: Option<String>,
    },
    /// Ends one grant or every grant to a party. Signed by an owner device.
    Revoke {
        /// What is revoked.
        target: RevokeTarget,
    },
    /// Announces section keys wrapped (by [`crate::envelope`]) with age to `recipients`.
    /// Signed by an owner device.
    Keys {
        /// The section the keys belong to.
        section: Section,
        /// The (epoch, key id) of every key inside `envelope`.
        keys: Vec<(u32, KeyId)>,
        /// Whom the envelope is wrapped to.
        recipients: Vec<PeerId>,
        /// The age envelope; opaque to the ledger.
        envelope: Vec<u8>,
    },
    /// Pins what the owners accept from a party whose write access ended (a revoked or expired
    /// grantee, a removed device): in `sections`, every blob by `party` is void unless some
    /// `Close` of the party lists it in `accepted`, or it was written under a grant that follows
    /// this operation. With no sections it only accepts (a held edit the patient took in).
    /// Signed by an owner device.
    Close {
        /// The party whose writes are pinned.
        party: PeerId,
        /// The sections its later writes are void in; without duplicates.
        sections: Vec<Section>,
        /// The party's blobs the owner accepts, at most [`CLOSE_ACCEPTED_MAX`].
        accepted: Vec<BlobId>,
    },
    /// Pins, change by change, what the owners accept from a party whose write access ended:
    /// in each section, every Automerge change by the party's actors in the past of these
    /// heads (docs/FORMAT.md, "Authorship proofs"). Written beside every `Close` and every
    /// acceptance of a held entry, it lets readers judge the party's changes that reached them
    /// inside an owner's compaction, where the blob they came in is gone; the blob-level
    /// `accepted` of a `Close` is what relays, which cannot read, judge by. Signed by an owner
    /// device.
    Pin {
        /// The party whose changes are pinned.
        party: PeerId,
        /// Per section (each once), the change hashes accepted, at most [`PIN_HEADS_MAX`] in
        /// all; more take more pins ([`OpBody::pins`]).
        heads: Vec<(Section, Vec<[u8; 32]>)>,
    },
}

impl OpBody {
    /// The `Pin` operations that together pin `heads` of `party`, in order, each within
    /// [`PIN_HEADS_MAX`] (pins add up: rule 9); one naming nothing if there are none, which
    /// still says that the party's changes are judged one by one.
    pub fn pins(party: PeerId, heads: Vec<(Section, Vec<[u8; 32]>)>) -> Vec<OpBody> {
        let all: Vec<(Section, [u8; 32])> = heads
            .into_iter()
            .flat_map(|(section, hashes)| hashes.into_iter().map(move |hash| (section, hash)))
            .collect();
        if all.is_empty() {
            return vec![OpBody::Pin {
                party,
                heads: Vec::new(),
            }];
        }
        all.chunks(PIN_HEADS_MAX)
            .map(|chunk| {
                let mut heads: Vec<(Section, Vec<[u8; 32]>)> = Vec::new();
                for (section, hash) in chunk {
                    match heads.last_mut() {
                        Some((last, hashes)) if last == section => hashes.push(*hash),
                        _ => heads.push((*section, vec![*hash])),
                    }
                }
                OpBody::Pin { party, heads }
            })
            .collect()
    }
}

/// One consent-ledger operation, as its author signs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The record it belongs to.
    pub record: RecordId,
    /// The ledger heads the author had seen: what this operation causally follows.
    pub parents: Vec<OpId>,
    /// Who signed it.
    pub author: PeerId,
    /// When, by the author's clock, in unix milliseconds. Informational: the rules never trust it.
    pub time_ms: i64,
    /// What it does.
    pub body: OpBody,
}

/// Why the ledger refused an operation or a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// Grants, revocations and key announcements must be signed by an owner device.
    #[error(
        "only the patient's own devices can grant or revoke access, and {peer} is not one of \
         this record's owner devices; run this on a device the record lists as an owner"
    )]
    NotOwner {
        /// The key that tried.
        peer: PeerId,
    },
    /// Devices are added and removed only by the record root key.
    #[error(
        "only the record's root key can add or remove the patient's devices, and {peer} is not \
         it; run this where the record's root key is kept"
    )]
    NotRoot {
        /// The key that tried.
        peer: PeerId,
    },
    /// The audit section is readable by the patient's own devices alone.
    #[error(
        "the audit section cannot be shared: only the patient's own devices read it; \
         grant the other sections instead"
    )]
    CannotGrantAudit,
    /// The operation is not held here (or its ancestors are not all held yet).
    #[error(
        "ledger operation {0} is not held here yet; sync the ledger with the patient's devices first"
    )]
    UnknownOp(OpId),
    /// The operation belongs to another record.
    #[error("the operation belongs to record {found}, not {expected}; it was refused")]
    WrongRecord {
        /// The ledger's record.
        expected: RecordId,
        /// The operation's record.
        found: RecordId,
    },
    /// The encoded operation is larger than [`LEDGER_OP_BYTES_MAX`].
    #[error(
        "a ledger operation of {bytes} bytes is larger than the limit of {max} bytes; \
         it was refused (wrap keys to fewer readers per operation)"
    )]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes do not start with the ledger operation magic.
    #[error("these bytes are not a phr ledger operation")]
    NotAnOp,
    /// The operation uses a format version this code does not know.
    #[error("ledger operation format version {0} is not supported by this phr; upgrade phr")]
    UnsupportedVersion(u8),
    /// Bytes follow the signature.
    #[error("a ledger operation has {0} unexpected bytes after its signature; it was refused")]
    TrailingBytes(usize),
    /// The operation is truncated, does not parse, is not canonically encoded or breaks a bound.
    #[error("malformed ledger operation: {0}; it was refused")]
    Malformed(String),
    /// The signature is not the author's over these bytes.
    #[error("a ledger operation's signature does not verify against its author; it was refused")]
    BadSignature,
    /// The ledger already holds [`LEDGER_OPS_MAX`] operations.
    #[error(
        "this record's consent ledger already holds {max} operations, the most phr accepts; \
         the operation was refused (a peer may be flooding the record: check its devices)"
    )]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// `sign` was given a key that is not the operation's author.
    #[error("the operation names {author} as its author but was to be signed by {key}")]
    WrongKey {
        /// The operation's author.
        author: PeerId,
        /// The key offered.
        key: PeerId,
    },
    /// A record is created once; this ledger already holds operations.
    #[error("this record already exists: its consent ledger already holds operations")]
    AlreadyCreated,
    /// The operation breaks a rule not covered by a more specific error.
    #[error("the consent ledger would not accept this operation: {0}")]
    Rejected(String),
}

/// An operation with the exact bytes its author signed. Its id is SHA-256 of those bytes.
///
/// A `SignedOp` exists only if its signature verified (or this node just made it) and it is
/// within every bound, so holders need not check again.
#[derive(Clone)]
pub struct SignedOp {
    bytes: Vec<u8>,
    /// The operation; in a sealed one (format version 2), with its details as this node could
    /// open them, or placeholders ([`SignedOp::revealed`]).
    op: Op,
    id: OpId,
    /// The sealed copies of a version 2 operation.
    sealed: Option<Sealed>,
    /// Whether `op` holds the sealed details (always for a version 1 operation).
    revealed: bool,
}

/// A version 2 operation as it travels: the operation with its details blank, then the sealed
/// copies of them.
#[derive(Serialize, Deserialize)]
struct SealedOp {
    op: Op,
    sealed: Sealed,
}

impl std::fmt::Debug for SignedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedOp")
            .field("id", &self.id)
            .field("op", &self.op)
            .finish()
    }
}

impl PartialEq for SignedOp {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for SignedOp {}

impl SignedOp {
    /// Encodes and signs `op` with `key`, which must be the op's author. Checks the same bounds
    /// as [`SignedOp::decode`], so nothing this node writes is refused by its peers.
    pub fn sign(op: Op, key: &SigningKey) -> Result<SignedOp, LedgerError> {
        if key.peer_id() != op.author {
            return Err(LedgerError::WrongKey {
                author: op.author,
                key: key.peer_id(),
            });
        }
        check_bounds(&op)?;
        let payload =
            postcard::to_stdvec(&op).map_err(|e| LedgerError::Malformed(e.to_string()))?;
        let bytes = envelope(VERSION, &payload, key)?;
        Ok(SignedOp {
            id: OpId(sha256(&[&bytes])),
            bytes,
            op,
            sealed: None,
            revealed: true,
        })
    }

    /// Like [`SignedOp::sign`], but an operation that names a party's details (`Create`,
    /// `AddDevice`, `Grant`) is written in format version 2: the details and purpose blank,
    /// sealed for the owners under `audit` (the current `audit` section key) and for the party
    /// ([`sealed`]). Any other operation is signed as [`SignedOp::sign`] signs it.
    pub fn sign_sealed(
        op: Op,
        key: &SigningKey,
        audit: &SectionKey,
    ) -> Result<SignedOp, LedgerError> {
        let Some((details, party)) = details_of(&op.body) else {
            return SignedOp::sign(op, key);
        };
        if key.peer_id() != op.author {
            return Err(LedgerError::WrongKey {
                author: op.author,
                key: key.peer_id(),
            });
        }
        check_bounds(&op)?;
        let sealed = sealed::seal(&details, op.record, &op.author, audit, &party.recipient)
            .map_err(|e| LedgerError::Rejected(e.to_string()))?;
        let wire = SealedOp {
            op: Op {
                body: blank_body(&op.body),
                ..op.clone()
            },
            sealed,
        };
        let payload =
            postcard::to_stdvec(&wire).map_err(|e| LedgerError::Malformed(e.to_string()))?;
        let bytes = envelope(VERSION_SEALED, &payload, key)?;
        Ok(SignedOp {
            id: OpId(sha256(&[&bytes])),
            bytes,
            op,
            sealed: Some(wire.sealed),
            revealed: true,
        })
    }

    /// Parses and verifies untrusted bytes: size first, then magic and version, the postcard
    /// encoding (which must be canonical and fill its declared length exactly), the author's
    /// signature over the bytes as received, and the bounds.
    pub fn decode(bytes: &[u8]) -> Result<SignedOp, LedgerError> {
        Self::decode_stored(bytes, None)
    }

    /// Parses bytes this node stored: as [`SignedOp::decode`], but the signature is not checked
    /// again if the bytes hash to `vouched`, the id this node's store vouches it checked when
    /// it stored them ([`crate::store::Store::ledger_ops_vouched`]). Every other check runs.
    pub fn decode_stored(bytes: &[u8], vouched: Option<OpId>) -> Result<SignedOp, LedgerError> {
        if bytes.len() > LEDGER_OP_BYTES_MAX {
            return Err(LedgerError::TooLarge {
                bytes: bytes.len(),
                max: LEDGER_OP_BYTES_MAX,
            });
        }
        if !bytes.starts_with(MAGIC) {
            return Err(LedgerError::NotAnOp);
        }
        let Some(&version) = bytes.get(MAGIC.len()) else {
            return Err(truncated(bytes.len()));
        };
        if version != VERSION && version != VERSION_SEALED {
            return Err(LedgerError::UnsupportedVersion(version));
        }
        let length: [u8; 4] = bytes
            .get(MAGIC.len() + 1..HEADER_BYTES)
            .ok_or_else(|| truncated(bytes.len()))?
            .try_into()
            .expect("four bytes");
        let payload_end = usize::try_from(u32::from_le_bytes(length))
            .ok()
            .and_then(|length| length.checked_add(HEADER_BYTES))
            .ok_or_else(|| truncated(bytes.len()))?;
        let signed_end = payload_end
            .checked_add(SIGNATURE_BYTES)
            .ok_or_else(|| truncated(bytes.len()))?;
        if bytes.len() < signed_end {
            return Err(truncated(bytes.len()));
        }
        if bytes.len() > signed_end {
            return Err(LedgerError::TrailingBytes(bytes.len() - signed_end));
        }
        let payload = &bytes[HEADER_BYTES..payload_end];
        let (mut op, sealed) = if version == VERSION {
            (canonical::<Op>(payload)?, None)
        } else {
            let wire = canonical::<SealedOp>(payload)?;
            check_sealed(&wire)?;
            (wire.op, Some(wire.sealed))
        };
        let id = OpId(sha256(&[bytes]));
        if vouched != Some(id) {
            let signature = Signature(bytes[payload_end..signed_end].try_into().expect("64 bytes"));
            op.author
                .verify(&signed_message(&bytes[..payload_end]), &signature)
                .map_err(|_| LedgerError::BadSignature)?;
        }
        check_bounds(&op)?;
        if sealed.is_some() {
            show_placeholders(&mut op.body);
        }
        Ok(SignedOp {
            id,
            bytes: bytes.to_vec(),
            op,
            revealed: sealed.is_none(),
            sealed,
        })
    }

    /// Whether the operation's details are known here: a version 1 operation's always; a
    /// sealed one's once [`SignedOp::reveal`] opened them (else the operation shows
    /// placeholders).
    pub fn revealed(&self) -> bool {
        self.revealed
    }

    /// Whether the operation was written with its details sealed (format version 2).
    pub fn is_sealed(&self) -> bool {
        self.sealed.is_some()
    }

    /// Opens a sealed operation's details, with the `audit` key it names if `audit_key` gives
    /// it (an owner device), or else with `identity` if the operation names this node's party
    /// (a grantee reading its own grant), and puts them in place of the placeholders. `Ok(true)`
    /// if they are revealed now, `Ok(false)` if this node cannot open them (or they were
    /// revealed already), an error if a copy meant for this node is damaged.
    pub fn reveal<'k>(
        &mut self,
        audit_key: impl Fn(&KeyId) -> Option<&'k SectionKey>,
        identity: &AgeIdentity,
        me: &PeerId,
    ) -> Result<bool, sealed::SealError> {
        let Some(sealed) = &self.sealed else {
            return Ok(false);
        };
        if self.revealed {
            return Ok(false);
        }
        let details = if let Some(key) = audit_key(&sealed.owners.key_id) {
            sealed::open_for_owner(sealed, self.op.record, &self.op.author, key)?
        } else if details_of(&self.op.body).is_some_and(|(_, party)| party.peer == *me) {
            match sealed::open_for_party(sealed, identity)? {
                Some(details) => details,
                None => return Ok(false),
            }
        } else {
            return Ok(false);
        };
        let clean = Party {
            name: details.name.clone(),
            ods: details.ods.clone(),
            ..sealed::blank(
                details_of(&self.op.body)
                    .expect("a sealed op names a party")
                    .1,
            )
        };
        check_party(&clean).map_err(|e| sealed::SealError::Damaged(e.to_string()))?;
        if details
            .purpose
            .as_ref()
            .is_some_and(|p| p.len() > GRANT_PURPOSE_BYTES_MAX || !crate::screen::is_clean_name(p))
        {
            return Err(sealed::SealError::Damaged(
                "a purpose too long or with control or text-direction characters".into(),
            ));
        }
        put_details(&mut self.op.body, details);
        self.revealed = true;
        Ok(true)
    }

    /// The exact signed bytes, to store and send.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The signed bytes, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The operation's id: SHA-256 of its bytes.
    pub fn id(&self) -> OpId {
        self.id
    }

    /// The operation.
    pub fn op(&self) -> &Op {
        &self.op
    }
}

/// The signed envelope of a payload: magic, `version`, length, payload, then the signature of
/// `key` over all of it; refused if larger than [`LEDGER_OP_BYTES_MAX`].
fn envelope(version: u8, payload: &[u8], key: &SigningKey) -> Result<Vec<u8>, LedgerError> {
    let total = HEADER_BYTES + payload.len() + SIGNATURE_BYTES;
    if total > LEDGER_OP_BYTES_MAX {
        return Err(LedgerError::TooLarge {
            bytes: total,
            max: LEDGER_OP_BYTES_MAX,
        });
    }
    let length = u32::try_from(payload.len()).expect("bounded by LEDGER_OP_BYTES_MAX");
    let mut bytes = Vec::with_capacity(total);
    bytes.extend_from_slice(MAGIC);
    bytes.push(version);
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(payload);
    let signature = key.sign(&signed_message(&bytes));
    bytes.extend_from_slice(&signature.0);
    Ok(bytes)
}

/// The message an operation's signature covers: the domain tag, then every byte before the
/// signature.
fn signed_message(unsigned: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, unsigned].concat()
}

fn truncated(len: usize) -> LedgerError {
    LedgerError::Malformed(format!("truncated after {len} bytes"))
}

/// Parses a postcard payload that must fill its length exactly and be in canonical encoding:
/// one operation has one encoding, so one id. (The signature is still checked over the bytes
/// as received, never re-encoded.)
fn canonical<T: Serialize + serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, LedgerError> {
    let (value, rest) = postcard::take_from_bytes::<T>(payload)
        .map_err(|e| LedgerError::Malformed(format!("the operation does not parse ({e})")))?;
    if !rest.is_empty() {
        return Err(LedgerError::Malformed(format!(
            "{} unused bytes inside the operation's declared length",
            rest.len()
        )));
    }
    if postcard::to_stdvec(&value).ok().as_deref() != Some(payload) {
        return Err(LedgerError::Malformed(
            "the operation is not in canonical encoding".into(),
        ));
    }
    Ok(value)
}

/// A version 2 operation names a party, with its details and purpose blank, and its sealed
/// copies within bounds.
fn check_sealed(wire: &SealedOp) -> Result<(), LedgerError> {
    let malformed = |what: &str| Err(LedgerError::Malformed(what.into()));
    let blank = match &wire.op.body {
        OpBody::Create { first_device, .. } => sealed::is_blank(first_device),
        OpBody::AddDevice { device } => sealed::is_blank(device),
        OpBody::Grant {
            grantee, purpose, ..
        } => sealed::is_blank(grantee) && purpose.is_none(),
        _ => return malformed("a sealed operation that names no party"),
    };
    if !blank {
        return malformed("a sealed operation with details in clear");
    }
    let max = sealed::SEALED_COPY_BYTES_MAX;
    if wire.sealed.owners.ciphertext.len() > max || wire.sealed.party.len() > max {
        return malformed("a sealed copy larger than the limit");
    }
    Ok(())
}

/// The details an operation names, and the party they belong to.
fn details_of(body: &OpBody) -> Option<(Details, &Party)> {
    let (party, purpose) = match body {
        OpBody::Create { first_device, .. } => (first_device, None),
        OpBody::AddDevice { device } => (device, None),
        OpBody::Grant {
            grantee, purpose, ..
        } => (grantee, purpose.clone()),
        _ => return None,
    };
    let details = Details {
        name: party.name.clone(),
        role: party.role,
        ods: party.ods.clone(),
        purpose,
    };
    Some((details, party))
}

/// `body` with its party's details and purpose blank, as a version 2 operation carries it.
fn blank_body(body: &OpBody) -> OpBody {
    let mut body = body.clone();
    match &mut body {
        OpBody::Create { first_device, .. } => *first_device = sealed::blank(first_device),
        OpBody::AddDevice { device } => *device = sealed::blank(device),
        OpBody::Grant {
            grantee, purpose, ..
        } => {
            *grantee = sealed::blank(grantee);
            *purpose = None;
        }
        _ => {}
    }
    body
}

/// Puts placeholders where a sealed operation's details are not known.
fn show_placeholders(body: &mut OpBody) {
    match body {
        OpBody::Create { first_device, .. } => sealed::placeholder(first_device, Role::Patient),
        OpBody::AddDevice { device } => sealed::placeholder(device, Role::Patient),
        OpBody::Grant {
            grantee, access, ..
        } => {
            let role = if *access == Access::Relay {
                Role::Relay
            } else {
                Role::Provider
            };
            sealed::placeholder(grantee, role);
        }
        _ => {}
    }
}

/// Puts revealed details in place.
fn put_details(body: &mut OpBody, details: Details) {
    let party = match body {
        OpBody::Create { first_device, .. } => first_device,
        OpBody::AddDevice { device } => device,
        OpBody::Grant {
            grantee, purpose, ..
        } => {
            *purpose = details.purpose;
            grantee
        }
        _ => return,
    };
    party.name = details.name;
    party.role = details.role;
    party.ods = details.ods;
}

/// The bounds every operation must keep, checked when signing and when decoding.
fn check_bounds(op: &Op) -> Result<(), LedgerError> {
    let malformed = |what: String| Err(LedgerError::Malformed(what));
    if op.parents.len() > LEDGER_PARENTS_MAX {
        return malformed(format!(
            "{} parents, more than the limit of {LEDGER_PARENTS_MAX}",
            op.parents.len()
        ));
    }
    if op.parents.iter().collect::<BTreeSet<_>>().len() != op.parents.len() {
        return malformed("a parent is named twice".into());
    }
    match &op.body {
        OpBody::Create { first_device, .. } => check_party(first_device),
        OpBody::AddDevice { device } => check_party(device),
        OpBody::RemoveDevice { .. } | OpBody::Revoke { .. } => Ok(()),
        OpBody::Close {
            sections, accepted, ..
        } => {
            if sections.iter().collect::<BTreeSet<_>>().len() != sections.len() {
                return malformed("a close names a section twice".into());
            }
            if accepted.len() > CLOSE_ACCEPTED_MAX {
                return malformed(format!(
                    "{} accepted blobs in one close, more than the limit of {CLOSE_ACCEPTED_MAX}",
                    accepted.len()
                ));
            }
            if accepted.iter().collect::<BTreeSet<_>>().len() != accepted.len() {
                return malformed("a close accepts a blob twice".into());
            }
            Ok(())
        }
        OpBody::Pin { heads, .. } => {
            let sections: BTreeSet<Section> = heads.iter().map(|(s, _)| *s).collect();
            if sections.len() != heads.len() {
                return malformed("a pin names a section twice".into());
            }
            let count: usize = heads.iter().map(|(_, h)| h.len()).sum();
            if count > PIN_HEADS_MAX {
                return malformed(format!(
                    "{count} change heads in one pin, more than the limit of {PIN_HEADS_MAX}"
                ));
            }
            Ok(())
        }
        OpBody::Grant {
            grantee,
            sections,
            purpose,
            ..
        } => {
            check_party(grantee)?;
            if sections.is_empty() {
                return malformed("a grant must name at least one section".into());
            }
            if sections.iter().collect::<BTreeSet<_>>().len() != sections.len() {
                return malformed("a grant names a section twice".into());
            }
            match purpose {
                Some(purpose) if purpose.len() > GRANT_PURPOSE_BYTES_MAX => malformed(format!(
                    "a grant purpose of {} bytes, longer than the limit of \
                     {GRANT_PURPOSE_BYTES_MAX}",
                    purpose.len()
                )),
                _ => Ok(()),
            }
        }
        OpBody::Keys {
            keys, recipients, ..
        } => {
            if keys.len() > KEYS_OP_KEYS_MAX {
                return malformed(format!(
                    "{} keys in one operation, more than the limit of {KEYS_OP_KEYS_MAX}",
                    keys.len()
                ));
            }
            if recipients.len() > KEYS_OP_RECIPIENTS_MAX {
                return malformed(format!(
                    "{} recipients in one operation, more than the limit of \
                     {KEYS_OP_RECIPIENTS_MAX}",
                    recipients.len()
                ));
            }
            Ok(())
        }
    }
}

fn check_party(party: &Party) -> Result<(), LedgerError> {
    if party.name.len() > PARTY_NAME_BYTES_MAX {
        return Err(LedgerError::Malformed(format!(
            "a party name of {} bytes, longer than the limit of {PARTY_NAME_BYTES_MAX}",
            party.name.len()
        )));
    }
    // Checked as a card's name is: a name with control or text-direction characters could
    // rewrite or reorder what a terminal shows around it.
    let ods = party.ods.as_deref().unwrap_or_default();
    if !crate::screen::is_clean_name(&party.name) || !crate::screen::is_clean_name(ods) {
        return Err(LedgerError::Malformed(
            "a party name or ODS code with control or text-direction characters".into(),
        ));
    }
    Ok(())
}

/// One record's consent ledger: the operations this node holds and the state they imply.
///
/// The state is computed from the whole set on first use after a change and cached, so a batch
/// of inserts costs one computation.
#[derive(Debug, Clone)]
pub struct Ledger {
    record: RecordId,
    ops: BTreeMap<OpId, SignedOp>,
    /// The bytes of `ops`, as signed, kept as they change.
    bytes: usize,
    cache: OnceLock<state::Analysis>,
}

impl Ledger {
    /// A new record's ledger, holding its `Create` operation signed by the record root key.
    /// `first_device` is the patient's device that becomes the first owner; the root key itself
    /// is not an owner device (keep it offline, for adding and removing devices).
    pub fn create(
        root: &SigningKey,
        first_device: Party,
        time_ms: i64,
    ) -> Result<Ledger, LedgerError> {
        Ledger::create_with(root, first_device, time_ms, None)
    }

    /// [`Ledger::create`] with the first device's details sealed under `audit`: the `audit`
    /// section's first key, which the first device announces next (`consent::repair` announces
    /// a key the keyring holds for the next epoch rather than make another).
    pub fn create_sealed(
        root: &SigningKey,
        first_device: Party,
        time_ms: i64,
        audit: &SectionKey,
    ) -> Result<Ledger, LedgerError> {
        Ledger::create_with(root, first_device, time_ms, Some(audit))
    }

    fn create_with(
        root: &SigningKey,
        first_device: Party,
        time_ms: i64,
        audit: Option<&SectionKey>,
    ) -> Result<Ledger, LedgerError> {
        let mut ledger = Ledger::new(RecordId::of_root(&root.peer_id()));
        let body = OpBody::Create {
            root: root.peer_id(),
            first_device,
        };
        ledger.append_with(root, body, time_ms, audit)?;
        Ok(ledger)
    }

    /// An empty ledger of `record`, for a node that receives the record's operations from peers.
    pub fn new(record: RecordId) -> Ledger {
        Ledger {
            record,
            ops: BTreeMap::new(),
            bytes: 0,
            cache: OnceLock::new(),
        }
    }

    /// The record this ledger belongs to.
    pub fn record(&self) -> RecordId {
        self.record
    }

    /// Stores an operation that [`SignedOp::decode`] (or [`SignedOp::sign`]) produced. Any
    /// well-signed operation of this record is kept, valid or not; the state decides what it
    /// counts for. What comes from a peer goes through [`Ledger::admit`] instead, which keeps
    /// only operations that could count. Returns `Ok(false)` if it was
    /// already held. An operation whose parents are missing is kept as pending until they arrive.
    pub fn insert(&mut self, op: SignedOp) -> Result<bool, LedgerError> {
        if op.op.record != self.record {
            return Err(LedgerError::WrongRecord {
                expected: self.record,
                found: op.op.record,
            });
        }
        if self.ops.contains_key(&op.id) {
            return Ok(false);
        }
        if self.ops.len() >= LEDGER_OPS_MAX {
            return Err(LedgerError::TooMany {
                max: LEDGER_OPS_MAX,
            });
        }
        self.bytes += op.bytes.len();
        self.ops.insert(op.id, op);
        self.cache = OnceLock::new();
        Ok(true)
    }

    /// The ledger's heads, sorted: the valid operations that no other valid operation follows.
    ///
    /// Only complete, valid operations count, so a new operation naming these as parents follows
    /// everything that has effect, and junk signed by strangers can neither inflate the parent
    /// list nor hide among a blob's heads. [`Ledger::state_at`] of these heads equals
    /// [`Ledger::state`] except for `rejected` and `pending`.
    pub fn heads(&self) -> Vec<OpId> {
        self.analysis().heads.clone()
    }

    /// Every held operation (valid, rejected or pending), by id.
    pub fn ops(&self) -> impl Iterator<Item = &SignedOp> {
        self.ops.values()
    }

    /// The bytes of the operations held, as signed (kept as they change: no walk).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The operation with this id, if held.
    pub fn get(&self, id: &OpId) -> Option<&SignedOp> {
        self.ops.get(id)
    }

    /// Whether the operation with this id is held (possibly pending or rejected).
    pub fn contains(&self, id: &OpId) -> bool {
        self.ops.contains_key(id)
    }

    /// How many operations are held, pending and rejected ones included.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether no operation is held.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The state implied by every complete operation held.
    pub fn state(&self) -> &LedgerState {
        &self.analysis().state
    }

    /// The state of the causal past of `heads` (each head and its ancestors), judged by exactly
    /// the same rules as if those were the only operations held. A blob names the heads it was
    /// written under, so every node judges it the same way whenever it arrives. The current
    /// heads, what most blobs name, are answered from the cache.
    pub fn state_at(&self, heads: &[OpId]) -> Result<LedgerState, LedgerError> {
        let mut sorted = heads.to_vec();
        sorted.sort();
        sorted.dedup();
        if !sorted.is_empty() && sorted == self.analysis().heads {
            return Ok(self.analysis().state_at_heads());
        }
        self.state_of_past(heads)
    }

    /// [`Ledger::state_at`], always computed from the operations.
    fn state_of_past(&self, heads: &[OpId]) -> Result<LedgerState, LedgerError> {
        let complete = &self.analysis().complete;
        let mut past: BTreeMap<OpId, &SignedOp> = BTreeMap::new();
        let mut stack = Vec::new();
        for head in heads {
            if !complete.contains(head) {
                return Err(LedgerError::UnknownOp(*head));
            }
            stack.push(*head);
        }
        while let Some(id) = stack.pop() {
            if past.contains_key(&id) {
                continue;
            }
            let op = &self.ops[&id];
            stack.extend(op.op.parents.iter().filter(|p| !past.contains_key(p)));
            past.insert(id, op);
        }
        Ok(state::analyse(past.into_values()).state)
    }

    /// The operations in the causal past of `heads`, the heads included. Heads not held are
    /// skipped, as are the ancestors of pending operations that are missing.
    pub fn past_of(&self, heads: &[OpId]) -> BTreeSet<OpId> {
        let mut past = BTreeSet::new();
        let mut stack: Vec<OpId> = heads.to_vec();
        while let Some(id) = stack.pop() {
            let Some(op) = self.ops.get(&id) else {
                continue;
            };
            if past.insert(id) {
                stack.extend(op.op.parents.iter().filter(|p| !past.contains(p)));
            }
        }
        past
    }

    /// Signs `body` with `key`, naming the current heads as parents, and stores it, after
    /// checking that the ledger will count it: a typed error says why not.
    pub fn append(
        &mut self,
        key: &SigningKey,
        body: OpBody,
        time_ms: i64,
    ) -> Result<SignedOp, LedgerError> {
        self.append_with(key, body, time_ms, None)
    }

    /// [`Ledger::append`], with the details of a party the operation names sealed
    /// ([`SignedOp::sign_sealed`]) under `audit`, the current `audit` section key: how owner
    /// devices write grants and devices.
    pub fn append_sealed(
        &mut self,
        key: &SigningKey,
        body: OpBody,
        time_ms: i64,
        audit: &SectionKey,
    ) -> Result<SignedOp, LedgerError> {
        self.append_with(key, body, time_ms, Some(audit))
    }

    /// Opens the sealed details this node may read ([`SignedOp::reveal`]): every one sealed
    /// under an `audit` key `audit_key` gives (an owner device), and the party's own copy of
    /// each operation that names `me`. Returns what could not be opened because it is damaged.
    pub fn reveal<'k>(
        &mut self,
        audit_key: impl Fn(&KeyId) -> Option<&'k SectionKey>,
        identity: &AgeIdentity,
        me: &PeerId,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let mut changed = false;
        for op in self.ops.values_mut().filter(|op| !op.revealed) {
            match op.reveal(&audit_key, identity, me) {
                Ok(revealed) => changed |= revealed,
                Err(e) => problems.push(format!("ledger operation {}: {e}", op.id.short())),
            }
        }
        if changed {
            self.cache = OnceLock::new();
        }
        problems
    }

    fn append_with(
        &mut self,
        key: &SigningKey,
        body: OpBody,
        time_ms: i64,
        audit: Option<&SectionKey>,
    ) -> Result<SignedOp, LedgerError> {
        let author = key.peer_id();
        state::check_allowed(self.state(), self.record, self.is_empty(), &author, &body)?;
        let op = Op {
            record: self.record,
            parents: self.heads(),
            author,
            time_ms,
            body,
        };
        let signed = match audit {
            Some(audit) => SignedOp::sign_sealed(op, key, audit)?,
            None => SignedOp::sign(op, key)?,
        };
        let id = signed.id();
        let fresh = self.insert(signed.clone())?;
        // The checks above mirror the rules; this makes sure nothing they miss slips through.
        let rejected = self.state().rejected.iter().find(|(op, _)| *op == id);
        if let Some((_, why)) = rejected {
            let why = why.clone();
            if fresh && let Some(removed) = self.ops.remove(&id) {
                self.bytes -= removed.bytes.len();
                self.cache = OnceLock::new();
            }
            return Err(LedgerError::Rejected(why));
        }
        Ok(signed)
    }

    fn analysis(&self) -> &state::Analysis {
        self.cache.get_or_init(|| state::analyse(self.ops.values()))
    }
}
