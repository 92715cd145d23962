//! Sealed blobs: the unit of replication.
//!
//! A blob is one signed, encrypted bundle of Automerge changes of one section of one record: the
//! changes of one local commit, one import, one sync batch, or a compaction that rewrites a run of
//! history as one blob. Sealing bundles rather than single changes keeps the per-blob overhead
//! (header, nonce, tag, signature: a couple of hundred bytes) small next to the payload.
//!
//! Three primitives protect a blob, each against a different party:
//!
//! - **ChaCha20-Poly1305** (RFC 8439, ring) under the section key hides the changes from anyone
//!   who may not read the section, relays included. The header is the AEAD's associated data, so
//!   a reader also knows that the header was written by someone holding the section key.
//! - **Ed25519** (RFC 8032, ring) by the author over a SHA-256 digest of everything else lets
//!   anyone, a relay with no key included, check who wrote the blob and that nothing in it has
//!   changed since. Authorship comes from this signature, never from Automerge's unsigned actor.
//! - **SHA-256** (FIPS 180-4) of all the bytes is the blob's id, so a blob is named by its content
//!   and can be fetched from any peer that has it.
//!
//! One kind of blob is sealed differently: a grantee's audit entry ([`BlobKind::SealedToOwners`],
//! in `sealed.rs`) is encrypted with age to the record's owner devices instead of a section key,
//! because `audit` is readable by the owners alone and a grantee holds no key of it.
//!
//! [`Blob::decode`] is the trust boundary for bytes from disk or from a peer: it checks the size
//! before anything else, so a hostile peer cannot make a node hash or allocate more than
//! [`BLOB_BYTES_MAX`], then the layout and its bounds, then the signature. It needs no key. The
//! byte layout is specified in `docs/FORMAT.md` ("Sealed blobs").

use std::{fmt, ops::Range};

use ring::{aead, digest};

use crate::{
    keys::{self, BlobId, KeyId, OpId, PeerId, RecordId, SectionKey, Signature, SigningKey},
    section::Section,
};

mod proof;
mod sealed;
#[cfg(test)]
mod tests;

pub use proof::{AuthorshipProof, BLOB_PROOFS_MAX, PROOF_HEADS_MAX};
pub use sealed::BLOB_OWNER_RECIPIENTS_MAX;

/// The largest blob, in bytes, that is sealed or accepted. It bounds what one peer can make
/// another allocate, hash and store in one message; big imports are sealed as several blobs.
pub const BLOB_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The most consent-ledger heads one blob may name. A ledger with more concurrent heads than this
/// is merged by the next ledger operation, which follows all of them.
pub const BLOB_LEDGER_HEADS_MAX: usize = 64;

/// The most blobs one compaction may replace (3.2 MB of ids at 32 bytes each).
pub const BLOB_REPLACES_MAX: usize = 100_000;

/// The first four bytes of every blob.
const MAGIC: [u8; 4] = *b"PHRB";
/// The layout this code writes: version 1 with authorship proofs after the replaced ids.
const VERSION: u8 = 2;
/// The layout before authorship proofs, still read (its blobs carry none).
const VERSION_WITHOUT_PROOFS: u8 = 1;
/// Prefixed to the digest that is signed, so that a blob signature can never be mistaken for the
/// signature of a ledger operation or a contact card made with the same key.
const SIGNATURE_CONTEXT: &[u8; 12] = b"phr blob v1\0";

/// Magic, version, kind, section, reserved, record id, epoch, key id, author, time, head count.
const FIXED_HEADER_BYTES: usize = 4 + 1 + 1 + 1 + 1 + 16 + 4 + 16 + 32 + 8 + 2;
const HASH_BYTES: usize = 32;
const REPLACES_COUNT_BYTES: usize = 4;
const PROOFS_COUNT_BYTES: usize = 4;
const NONCE_BYTES: usize = aead::NONCE_LEN;
const CIPHERTEXT_LEN_BYTES: usize = 4;
const TAG_BYTES: usize = aead::MAX_TAG_LEN;
const SIGNATURE_BYTES: usize = 64;

// The ciphertext length field is a u32, so every blob's ciphertext must fit in one.
const _: () = assert!(BLOB_BYTES_MAX <= u32::MAX as usize);

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobKind {
    /// New changes: one local commit, import or sync batch (code 0).
    Changes,
    /// A run of history rewritten as one blob; its header lists the blobs it replaces (code 1).
    Compaction,
    /// New changes of the `audit` section, encrypted with age to the owner devices of the record
    /// rather than under a section key (code 2): a grantee's audit entries, which only the
    /// patient's devices may read. Its epoch, key id and nonce are all zero.
    SealedToOwners,
}

impl BlobKind {
    /// The byte that encodes the kind in a blob header.
    pub fn code(self) -> u8 {
        match self {
            BlobKind::Changes => 0,
            BlobKind::Compaction => 1,
            BlobKind::SealedToOwners => 2,
        }
    }

    /// The inverse of [`BlobKind::code`]; `None` for a code this version does not know.
    pub fn from_code(code: u8) -> Option<BlobKind> {
        match code {
            0 => Some(BlobKind::Changes),
            1 => Some(BlobKind::Compaction),
            2 => Some(BlobKind::SealedToOwners),
            _ => None,
        }
    }
}

/// The clear-text part of a blob: everything a relay needs to decide whether to store and forward
/// it, and everything a reader needs to pick the key and check the author's right to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobHeader {
    /// The record the changes belong to.
    pub record: RecordId,
    /// The section the changes belong to; each section is its own Automerge document.
    pub section: Section,
    /// New changes or a compaction.
    pub kind: BlobKind,
    /// The key epoch of the section; a revocation starts a new one.
    pub epoch: u32,
    /// The id of the section key that sealed the blob, so a reader can pick it without trying all.
    pub key_id: KeyId,
    /// Who wrote the blob: the signer. Nodes check this author could write the section.
    pub author: PeerId,
    /// When the author says they wrote it, in milliseconds since the Unix epoch. Not verified.
    pub time_ms: i64,
    /// The consent-ledger heads the author wrote under (at most [`BLOB_LEDGER_HEADS_MAX`]), so
    /// every node judges the author's right to write against the same ledger state.
    pub ledger_heads: Vec<OpId>,
    /// For a compaction, the blobs whose content this one holds (at most [`BLOB_REPLACES_MAX`]);
    /// always empty for the other kinds.
    pub replaces: Vec<BlobId>,
    /// Authorship proofs ([`AuthorshipProof`]): for a changes blob or an audit entry, at most
    /// one, by its author, over the heads of its changes; for a compaction, the proofs of what
    /// it holds (at most [`BLOB_PROOFS_MAX`]). Empty in blobs of layout version 1.
    pub proofs: Vec<AuthorshipProof>,
}

/// A sealed blob: its bytes, exactly as stored and sent, and the header parsed from them.
///
/// A `Blob` value has always been checked: it was either sealed here or decoded with its
/// signature verified. Its `Debug` shows the id and header, never the ciphertext or plaintext.
#[derive(Clone)]
pub struct Blob {
    bytes: Vec<u8>,
    header: BlobHeader,
    id: BlobId,
    /// Where the ciphertext (Poly1305 tag included) sits in `bytes`. The nonce and the ciphertext
    /// length come just before it; everything before it is the AEAD's associated data.
    ciphertext: Range<usize>,
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blob")
            .field("id", &self.id)
            .field("len", &self.bytes.len())
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// Why a blob could not be sealed, decoded or opened.
///
/// Sealing errors are the caller's mistakes; decoding errors mean the bytes came damaged or forged
/// and the blob is refused; opening errors mean this device lacks the key or the author sealed
/// the blob wrongly.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// `seal` was given a section key other than the one the header names.
    #[error(
        "cannot seal the blob: its header names section key {header} but the key given is \
         {given}; seal with the key of the header's epoch"
    )]
    KeyMismatch {
        /// The key id in the header.
        header: KeyId,
        /// The id of the key given.
        given: KeyId,
    },
    /// `seal` was given a signing key other than the header's author.
    #[error(
        "cannot seal the blob: its header names author {header} but the signing key is \
         {signer}'s; a blob is signed by its author's own key"
    )]
    AuthorMismatch {
        /// The author in the header.
        header: PeerId,
        /// Whose signing key was given.
        signer: PeerId,
    },
    /// The sealed blob would be larger than [`BLOB_BYTES_MAX`].
    #[error(
        "cannot seal the blob: it would be {len} bytes, over the limit of {BLOB_BYTES_MAX}; \
         seal the changes as several smaller blobs"
    )]
    TooLarge {
        /// The size it would have had, in bytes.
        len: usize,
    },
    /// The header names more than [`BLOB_LEDGER_HEADS_MAX`] ledger heads.
    #[error(
        "cannot seal the blob: its header names {count} consent-ledger heads, over the limit of \
         {BLOB_LEDGER_HEADS_MAX}; write a ledger operation that follows them (merging them into \
         one head) before writing to the record"
    )]
    TooManyLedgerHeads {
        /// How many heads the header names.
        count: usize,
    },
    /// A compaction header names more than [`BLOB_REPLACES_MAX`] replaced blobs.
    #[error(
        "cannot seal the compaction: it replaces {count} blobs, over the limit of \
         {BLOB_REPLACES_MAX}; compact fewer blobs at a time"
    )]
    TooManyReplaces {
        /// How many blobs the header names.
        count: usize,
    },
    /// A header other than a compaction's lists replaced blobs.
    #[error(
        "cannot seal the blob: it holds new changes yet lists {count} replaced blobs; only a \
         compaction replaces blobs"
    )]
    ReplacesOnChanges {
        /// How many blobs the header names.
        count: usize,
    },
    /// The header carries proofs it may not: more than one on a blob that is not a compaction,
    /// one by another than the author there, more than [`BLOB_PROOFS_MAX`], or a proof with no
    /// heads or more than [`PROOF_HEADS_MAX`].
    #[error("cannot seal the blob: {0}; this is a bug in phr, please report it")]
    BadProofs(&'static str),
    /// `seal` was given a [`BlobKind::SealedToOwners`] header, or `seal_to_owners` another kind
    /// or a header naming a section key: each kind has its own way of sealing.
    #[error(
        "cannot seal the blob: a {kind:?} blob is sealed {how}; this is a bug in phr, please \
         report it"
    )]
    WrongSealing {
        /// The kind in the header.
        kind: BlobKind,
        /// How that kind is sealed.
        how: &'static str,
    },
    /// `seal_to_owners` was given no recipients, or more than [`BLOB_OWNER_RECIPIENTS_MAX`].
    #[error(
        "cannot seal the audit entry to the record's owners: {count} owner devices, where 1 to \
         {BLOB_OWNER_RECIPIENTS_MAX} are needed; sync with the patient's device and try again"
    )]
    OwnerRecipients {
        /// How many recipients were given.
        count: usize,
    },
    /// age could not encrypt (not expected with X25519 recipients and an in-memory output).
    #[error("age could not seal the blob to the record's owners: {0}")]
    Encrypt(String),
    /// The bytes are not a well-formed blob.
    #[error(
        "a blob was refused because it is malformed: {0}; it will be fetched again from a peer"
    )]
    Malformed(Malformation),
    /// The bytes are well formed but their signature does not verify: they were damaged or forged.
    #[error(
        "blob {}… is damaged (its signature does not verify); it was refused and will be fetched \
         again from a peer",
        .id.short()
    )]
    BadSignature {
        /// The id of the bytes received (not of any real blob).
        id: BlobId,
    },
    /// `open` was given a section key other than the one that sealed the blob.
    #[error(
        "blob {}… of the {section} section is sealed with the epoch {epoch} key {blob_key}, not \
         with key {given}; open it with that key (if this device lacks it, ask the record's \
         owner to share the section with it again)",
        .id.short()
    )]
    WrongKey {
        /// The blob's id.
        id: BlobId,
        /// The blob's section.
        section: Section,
        /// The blob's key epoch.
        epoch: u32,
        /// The id of the key that sealed it.
        blob_key: KeyId,
        /// The id of the key given.
        given: KeyId,
    },
    /// `open` was called on a blob sealed to the owners, or `open_sealed` on one sealed with a
    /// section key.
    #[error(
        "blob {}… is a {kind:?} blob and is opened {how}; this is a bug in phr, please report it",
        .id.short()
    )]
    WrongOpening {
        /// The blob's id.
        id: BlobId,
        /// Its kind.
        kind: BlobKind,
        /// How that kind is opened.
        how: &'static str,
    },
    /// A blob sealed to the owners has no age stanza this identity opens: it was sealed to other
    /// devices (say, before this one became an owner), or the stanza meant for it is damaged,
    /// which age cannot tell apart.
    #[error(
        "blob {}… was sealed to the record's owner devices, and not to this one; an owner device \
         that can read it will fold it into the audit section when it compacts",
        .id.short()
    )]
    NotForMe {
        /// The blob's id.
        id: BlobId,
    },
    /// A blob sealed to the owners opened with this identity, but what is inside is not what
    /// its author signed it as: damaged, or sealed wrongly by its author.
    #[error(
        "blob {}… sealed to the owners by {author} cannot be read: {reason}; fetching it again will \
         not help, ask its author to write the entry again",
        .id.short()
    )]
    DamagedSealed {
        /// The blob's id.
        id: BlobId,
        /// Its author, who signed it.
        author: PeerId,
        /// What is wrong.
        reason: String,
    },
    /// A compaction's packed changes do not unpack within their bound
    /// ([`crate::changes::packed`]), although its author signed it.
    #[error(
        "blob {}… by {author} cannot be read: {reason}; fetching it again will not help, ask its \
         author to write the change again",
        .id.short()
    )]
    Unpackable {
        /// The blob's id.
        id: BlobId,
        /// Who signed it.
        author: PeerId,
        /// Why, for the user.
        reason: String,
    },
    /// The ciphertext does not authenticate under the key its header names, although the
    /// author's signature verifies: the author sealed it wrongly (or forged the key id).
    #[error(
        "blob {}… cannot be decrypted: it does not authenticate under section key {key}, which \
         its header names, although its author {author} signed it; fetching it again will not \
         help, ask its author to write the change again",
        .id.short()
    )]
    Damaged {
        /// The blob's id.
        id: BlobId,
        /// Its author, who signed it.
        author: PeerId,
        /// The key its header names.
        key: KeyId,
    },
}

/// What is wrong with bytes that do not decode as a blob.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformation {
    /// Larger than [`BLOB_BYTES_MAX`]; refused before being read.
    #[error("it is {len} bytes, over the limit of {BLOB_BYTES_MAX}")]
    TooLarge {
        /// Its size in bytes.
        len: usize,
    },
    /// Shorter than its layout says it is.
    #[error("it is cut short: {len} bytes where its layout needs at least {needed}")]
    Truncated {
        /// Its size in bytes.
        len: usize,
        /// The least size its layout, as read so far, needs.
        needed: usize,
    },
    /// Does not start with `PHRB`.
    #[error("it does not start with \"PHRB\", so it is not a phr blob")]
    BadMagic,
    /// A format version this code does not read.
    #[error("it has format version {0}, and this version of phr reads only version 1")]
    UnsupportedVersion(u8),
    /// A kind code this code does not know.
    #[error(
        "its kind code {0} is unknown (0 is changes, 1 is compaction, 2 is sealed to the owners)"
    )]
    UnknownKind(u8),
    /// A section code this code does not know.
    #[error("its section code {0} is unknown (0 to 5 are the six sections)")]
    UnknownSection(u8),
    /// The reserved byte is not zero.
    #[error("its reserved byte is {0}, not 0")]
    Reserved(u8),
    /// More than [`BLOB_LEDGER_HEADS_MAX`] ledger heads.
    #[error("it names {count} consent-ledger heads, over the limit of {BLOB_LEDGER_HEADS_MAX}")]
    TooManyLedgerHeads {
        /// The count in the header.
        count: usize,
    },
    /// More than [`BLOB_REPLACES_MAX`] replaced blobs.
    #[error("it replaces {count} blobs, over the limit of {BLOB_REPLACES_MAX}")]
    TooManyReplaces {
        /// The count in the header.
        count: usize,
    },
    /// A changes blob, or one sealed to the owners, that lists replaced blobs.
    #[error("it holds new changes yet lists {count} replaced blobs")]
    ReplacesOnChanges {
        /// The count in the header.
        count: usize,
    },
    /// Authorship proofs a blob of its kind may not carry (see [`BlobHeader::proofs`]).
    #[error("{0}")]
    Proofs(&'static str),
    /// A blob sealed to the owners whose epoch, key id or nonce is not zero.
    #[error("it is sealed to the record's owners yet names a section key epoch, key id or nonce")]
    SealedWithKeyFields,
    /// A ciphertext too short to hold the Poly1305 tag.
    #[error("its ciphertext is {len} bytes, shorter than the 16-byte Poly1305 tag")]
    CiphertextTooShort {
        /// The ciphertext length in the header.
        len: usize,
    },
    /// Bytes after the signature.
    #[error("{count} bytes follow its signature")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

impl Blob {
    /// Encrypts `plaintext` under `key` and signs the result as `author`.
    ///
    /// Checks first that `key` and `author` are the ones the header names and that every bound
    /// holds, so that a blob this node seals is one every other node accepts. The plaintext is
    /// copied once, into the output buffer, and encrypted there in place.
    pub fn seal(
        header: BlobHeader,
        key: &SectionKey,
        plaintext: &[u8],
        author: &SigningKey,
    ) -> Result<Blob, BlobError> {
        if header.kind == BlobKind::SealedToOwners {
            return Err(BlobError::WrongSealing {
                kind: header.kind,
                how: "to the owners' age recipients, with Blob::seal_to_owners",
            });
        }
        let len = check_sealable(&header, key, plaintext, author)?;
        let mut bytes = Vec::with_capacity(len);
        let nonce = keys::random_array::<NONCE_BYTES>();
        let ciphertext_len = u32::try_from(plaintext.len() + TAG_BYTES)
            .expect("a ciphertext under BLOB_BYTES_MAX fits in a u32");
        encode_header(&header, &nonce, ciphertext_len, &mut bytes);
        let ciphertext_start = bytes.len();
        bytes.extend_from_slice(plaintext);
        let (associated, in_out) = bytes.split_at_mut(ciphertext_start);
        // ChaCha20-Poly1305 (RFC 8439); a random 96-bit nonce per blob is safe for far more blobs
        // than one section key will ever seal (keys change with every epoch).
        let tag = aead_key(key)
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&*associated),
                in_out,
            )
            .expect("ChaCha20-Poly1305 seals any plaintext under BLOB_BYTES_MAX");
        bytes.extend_from_slice(tag.as_ref());
        let ciphertext = ciphertext_start..bytes.len();
        let id = sign_and_name(&mut bytes, author);
        debug_assert_eq!(bytes.len(), len);
        Ok(Blob {
            bytes,
            header,
            id,
            ciphertext,
        })
    }

    /// Parses and checks bytes from anywhere (disk, an untrusted peer). No key is needed.
    ///
    /// The size bound is checked first, before the bytes are read at all; then the layout and its
    /// bounds; then the Ed25519 signature. The body is hashed once: the digest that is signed and
    /// the id come from the same pass.
    pub fn decode(bytes: Vec<u8>) -> Result<Blob, BlobError> {
        Self::decode_stored(bytes, None)
    }

    /// Parses bytes this node stored: as [`Blob::decode`], but the signature is not checked
    /// again if the bytes hash to `vouched`, the id this node's store vouches it checked when
    /// it stored them ([`crate::store::Store::blobs_vouched`]). Every other check runs.
    pub fn decode_stored(bytes: Vec<u8>, vouched: Option<BlobId>) -> Result<Blob, BlobError> {
        if bytes.len() > BLOB_BYTES_MAX {
            return Err(BlobError::Malformed(Malformation::TooLarge {
                len: bytes.len(),
            }));
        }
        let (header, ciphertext) = parse(&bytes).map_err(BlobError::Malformed)?;
        let body_len = ciphertext.end;
        let signature = Signature(
            bytes[body_len..]
                .try_into()
                .expect("parse leaves exactly the signature after the ciphertext"),
        );
        let mut hash = digest::Context::new(&digest::SHA256);
        hash.update(&bytes[..body_len]);
        let message = signing_message(hash.clone());
        hash.update(&signature.0);
        let id = BlobId(digest_bytes(hash));
        if vouched != Some(id) {
            header
                .author
                .verify(&message, &signature)
                .map_err(|_| BlobError::BadSignature { id })?;
        }
        Ok(Blob {
            bytes,
            header,
            id,
            ciphertext,
        })
    }

    /// Decrypts the changes with the section key.
    ///
    /// A key other than the one the header names is refused before any decryption
    /// ([`BlobError::WrongKey`]); a ciphertext that does not authenticate is
    /// [`BlobError::Damaged`], and no plaintext is returned.
    pub fn open(&self, key: &SectionKey) -> Result<Vec<u8>, BlobError> {
        if self.header.kind == BlobKind::SealedToOwners {
            return Err(BlobError::WrongOpening {
                id: self.id,
                kind: self.header.kind,
                how: "with an owner device's age identity, with Blob::open_sealed",
            });
        }
        let given = key.id();
        if given != self.header.key_id {
            return Err(BlobError::WrongKey {
                id: self.id,
                section: self.header.section,
                epoch: self.header.epoch,
                blob_key: self.header.key_id,
                given,
            });
        }
        let start = self.ciphertext.start;
        let tag_start = self.ciphertext.end - TAG_BYTES;
        let nonce_start = start - CIPHERTEXT_LEN_BYTES - NONCE_BYTES;
        let nonce: [u8; NONCE_BYTES] = self.bytes[nonce_start..nonce_start + NONCE_BYTES]
            .try_into()
            .expect("the nonce is 12 bytes");
        let tag: [u8; TAG_BYTES] = self.bytes[tag_start..self.ciphertext.end]
            .try_into()
            .expect("the tag is 16 bytes");
        let mut plaintext = self.bytes[start..tag_start].to_vec();
        aead_key(key)
            .open_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&self.bytes[..start]),
                aead::Tag::from(tag),
                &mut plaintext,
                0..,
            )
            .map_err(|_| BlobError::Damaged {
                id: self.id,
                author: self.header.author,
                key: self.header.key_id,
            })?;
        // A run compaction's changes travel packed in one stream: unpacked here, within its
        // bound, so that every reader sees change chunks.
        if self.header.kind == BlobKind::Compaction && crate::changes::packed::is_packed(&plaintext)
        {
            return crate::changes::packed::unpack(&plaintext).map_err(|reason| {
                BlobError::Unpackable {
                    id: self.id,
                    author: self.header.author,
                    reason,
                }
            });
        }
        Ok(plaintext)
    }

    /// The blob's id: SHA-256 of all its bytes, signature included.
    pub fn id(&self) -> BlobId {
        self.id
    }

    /// The clear-text header, as checked by the signature.
    pub fn header(&self) -> &BlobHeader {
        &self.header
    }

    /// The blob's bytes, as stored and sent.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The blob's bytes, without a copy.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The blob's size in bytes (never zero: a blob has at least a header and a signature).
    #[expect(
        clippy::len_without_is_empty,
        reason = "a blob is never empty: it always has a header and a signature"
    )]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// Checks everything `seal` is given and returns the size of the blob it will make.
fn check_sealable(
    header: &BlobHeader,
    key: &SectionKey,
    plaintext: &[u8],
    author: &SigningKey,
) -> Result<usize, BlobError> {
    let given = key.id();
    if given != header.key_id {
        return Err(BlobError::KeyMismatch {
            header: header.key_id,
            given,
        });
    }
    check_header_bounds(header, author, plaintext.len())
}

/// The checks every kind of header passes before sealing: author, counts, size. Returns the size
/// of the blob `plaintext` (the ciphertext less its 16-byte tag) makes.
fn check_header_bounds(
    header: &BlobHeader,
    author: &SigningKey,
    plaintext: usize,
) -> Result<usize, BlobError> {
    let signer = author.peer_id();
    if signer != header.author {
        return Err(BlobError::AuthorMismatch {
            header: header.author,
            signer,
        });
    }
    let heads = header.ledger_heads.len();
    if heads > BLOB_LEDGER_HEADS_MAX {
        return Err(BlobError::TooManyLedgerHeads { count: heads });
    }
    let replaces = header.replaces.len();
    if replaces > BLOB_REPLACES_MAX {
        return Err(BlobError::TooManyReplaces { count: replaces });
    }
    if header.kind != BlobKind::Compaction && replaces > 0 {
        return Err(BlobError::ReplacesOnChanges { count: replaces });
    }
    if let Err(problem) = check_proofs(header) {
        return Err(BlobError::BadProofs(problem));
    }
    let proof_bytes: usize = header.proofs.iter().map(AuthorshipProof::encoded_len).sum();
    let len = sealed_len(heads, replaces, plaintext).saturating_add(proof_bytes);
    if len > BLOB_BYTES_MAX {
        return Err(BlobError::TooLarge { len });
    }
    Ok(len)
}

/// The rules on a header's proofs that sealing and decoding share: how many, whose, how many
/// heads each (see [`BlobHeader::proofs`]). Signatures are checked by readers, who need them.
fn check_proofs(header: &BlobHeader) -> Result<(), &'static str> {
    if header.proofs.len() > BLOB_PROOFS_MAX {
        return Err("it carries more authorship proofs than a blob may");
    }
    if header.kind != BlobKind::Compaction {
        if header.proofs.len() > 1 {
            return Err("it carries more than one authorship proof, where only a compaction may");
        }
        if header.proofs.iter().any(|p| p.signer != header.author) {
            return Err("it carries an authorship proof by another than its author");
        }
    }
    if header
        .proofs
        .iter()
        .any(|p| p.heads.is_empty() || p.heads.len() > PROOF_HEADS_MAX)
    {
        return Err("it carries an authorship proof with no heads or too many");
    }
    if header
        .proofs
        .iter()
        .any(|p| p.heads.windows(2).any(|pair| pair[0] >= pair[1]))
    {
        return Err("it carries an authorship proof whose heads are not in order");
    }
    Ok(())
}

/// The size of a blob with these counts, without its proofs, saturating (any saturated size is
/// over the limit).
fn sealed_len(heads: usize, replaces: usize, plaintext: usize) -> usize {
    (FIXED_HEADER_BYTES
        + HASH_BYTES * heads
        + REPLACES_COUNT_BYTES
        + HASH_BYTES * replaces
        + PROOFS_COUNT_BYTES
        + NONCE_BYTES
        + CIPHERTEXT_LEN_BYTES
        + TAG_BYTES
        + SIGNATURE_BYTES)
        .saturating_add(plaintext)
}

/// Writes every byte before the ciphertext: the AEAD's associated data.
fn encode_header(header: &BlobHeader, nonce: &[u8; 12], ciphertext_len: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[
        VERSION,
        header.kind.code(),
        header.section.code(),
        0, // reserved
    ]);
    out.extend_from_slice(&header.record.0);
    out.extend_from_slice(&header.epoch.to_le_bytes());
    out.extend_from_slice(&header.key_id.0);
    out.extend_from_slice(header.author.public_key());
    out.extend_from_slice(&header.time_ms.to_le_bytes());
    let heads = u16::try_from(header.ledger_heads.len()).expect("checked against the bound");
    out.extend_from_slice(&heads.to_le_bytes());
    for head in &header.ledger_heads {
        out.extend_from_slice(&head.0);
    }
    let replaces = u32::try_from(header.replaces.len()).expect("checked against the bound");
    out.extend_from_slice(&replaces.to_le_bytes());
    for replaced in &header.replaces {
        out.extend_from_slice(&replaced.0);
    }
    let proofs = u32::try_from(header.proofs.len()).expect("checked against the bound");
    out.extend_from_slice(&proofs.to_le_bytes());
    for proof in &header.proofs {
        proof.encode(out);
    }
    out.extend_from_slice(nonce);
    out.extend_from_slice(&ciphertext_len.to_le_bytes());
}

/// Hashes `body` once, signs the digest and appends the signature, then finishes the same hash
/// over the signature for the id.
fn sign_and_name(body: &mut Vec<u8>, author: &SigningKey) -> BlobId {
    let mut hash = digest::Context::new(&digest::SHA256);
    hash.update(body);
    let signature = author.sign(&signing_message(hash.clone()));
    body.extend_from_slice(&signature.0);
    hash.update(&signature.0);
    BlobId(digest_bytes(hash))
}

/// What the author signs: a domain tag and the SHA-256 digest of every byte before the signature.
fn signing_message(body_hash: digest::Context) -> [u8; SIGNATURE_CONTEXT.len() + HASH_BYTES] {
    let mut message = [0u8; SIGNATURE_CONTEXT.len() + HASH_BYTES];
    message[..SIGNATURE_CONTEXT.len()].copy_from_slice(SIGNATURE_CONTEXT);
    message[SIGNATURE_CONTEXT.len()..].copy_from_slice(&digest_bytes(body_hash));
    message
}

fn digest_bytes(hash: digest::Context) -> [u8; HASH_BYTES] {
    hash.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

fn aead_key(key: &SectionKey) -> aead::LessSafeKey {
    let key = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, key.bytes())
        .expect("a section key is 32 bytes, the ChaCha20-Poly1305 key size");
    aead::LessSafeKey::new(key)
}

/// Parses the layout of `bytes` (already known to be within [`BLOB_BYTES_MAX`]) and checks its
/// bounds; returns the header and where the ciphertext is. Does not check the signature.
fn parse(bytes: &[u8]) -> Result<(BlobHeader, Range<usize>), Malformation> {
    let mut reader = Reader { bytes, at: 0 };
    if reader.array::<4>()? != MAGIC {
        return Err(Malformation::BadMagic);
    }
    let [version, kind, section, reserved] = reader.array::<4>()?;
    if version != VERSION && version != VERSION_WITHOUT_PROOFS {
        return Err(Malformation::UnsupportedVersion(version));
    }
    let kind = BlobKind::from_code(kind).ok_or(Malformation::UnknownKind(kind))?;
    let section = Section::from_code(section).ok_or(Malformation::UnknownSection(section))?;
    if reserved != 0 {
        return Err(Malformation::Reserved(reserved));
    }
    let record = RecordId(reader.array()?);
    let epoch = u32::from_le_bytes(reader.array()?);
    let key_id = KeyId(reader.array()?);
    let author = PeerId(reader.array()?);
    let time_ms = i64::from_le_bytes(reader.array()?);

    let heads = usize::from(u16::from_le_bytes(reader.array()?));
    if heads > BLOB_LEDGER_HEADS_MAX {
        return Err(Malformation::TooManyLedgerHeads { count: heads });
    }
    let ledger_heads = reader.hashes(heads, OpId)?;

    let replaces = u32::from_le_bytes(reader.array()?) as usize;
    if replaces > BLOB_REPLACES_MAX {
        return Err(Malformation::TooManyReplaces { count: replaces });
    }
    if kind != BlobKind::Compaction && replaces > 0 {
        return Err(Malformation::ReplacesOnChanges { count: replaces });
    }
    let replaces = reader.hashes(replaces, BlobId)?;

    let proofs = match version {
        VERSION_WITHOUT_PROOFS => Vec::new(),
        _ => reader.proofs()?,
    };

    let nonce = reader.array::<NONCE_BYTES>()?;
    if kind == BlobKind::SealedToOwners
        && (epoch != 0 || key_id != KeyId([0; 16]) || nonce != [0; NONCE_BYTES])
    {
        return Err(Malformation::SealedWithKeyFields);
    }
    let ciphertext_len = u32::from_le_bytes(reader.array()?) as usize;
    if ciphertext_len < TAG_BYTES {
        return Err(Malformation::CiphertextTooShort {
            len: ciphertext_len,
        });
    }
    let start = reader.at;
    let needed = start + ciphertext_len + SIGNATURE_BYTES;
    if bytes.len() < needed {
        return Err(Malformation::Truncated {
            len: bytes.len(),
            needed,
        });
    }
    if bytes.len() > needed {
        return Err(Malformation::TrailingBytes {
            count: bytes.len() - needed,
        });
    }
    let header = BlobHeader {
        record,
        section,
        kind,
        epoch,
        key_id,
        author,
        time_ms,
        ledger_heads,
        replaces,
        proofs,
    };
    check_proofs(&header).map_err(Malformation::Proofs)?;
    Ok((header, start..start + ciphertext_len))
}

/// A cursor over untrusted bytes whose every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    /// The next `n` bytes, or `Truncated` if there are fewer. `needed` counts the smallest
    /// possible rest of a blob (ciphertext tag and signature), so it is a true lower bound.
    fn take(&mut self, n: usize) -> Result<&[u8], Malformation> {
        let end = self.at.saturating_add(n);
        let Some(taken) = self.bytes.get(self.at..end) else {
            return Err(Malformation::Truncated {
                len: self.bytes.len(),
                needed: end.saturating_add(TAG_BYTES + SIGNATURE_BYTES),
            });
        };
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformation> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    /// `count` 32-byte hashes. The length is checked before the vector is allocated, so a count
    /// in a forged header cannot make us allocate more than the blob's own size.
    fn hashes<T>(&mut self, count: usize, wrap: fn([u8; 32]) -> T) -> Result<Vec<T>, Malformation> {
        let bytes = self.take(count * HASH_BYTES)?;
        Ok(bytes
            .chunks_exact(HASH_BYTES)
            .map(|chunk| wrap(chunk.try_into().expect("chunks are 32 bytes")))
            .collect())
    }

    /// A count (u32) of authorship proofs, then each. Every count is checked against the bytes
    /// left before anything is allocated for it.
    fn proofs(&mut self) -> Result<Vec<AuthorshipProof>, Malformation> {
        let count = u32::from_le_bytes(self.array()?) as usize;
        if count > BLOB_PROOFS_MAX {
            return Err(Malformation::Proofs(
                "it carries more authorship proofs than a blob may",
            ));
        }
        let left = self.bytes.len().saturating_sub(self.at);
        if count.saturating_mul(proof::PROOF_FIXED_BYTES) > left {
            self.take(count.saturating_mul(proof::PROOF_FIXED_BYTES))?;
        }
        let mut proofs = Vec::with_capacity(count);
        for _ in 0..count {
            let signer = PeerId(self.array()?);
            let heads = usize::from(u16::from_le_bytes(self.array()?));
            if heads > PROOF_HEADS_MAX {
                return Err(Malformation::Proofs(
                    "it carries an authorship proof with no heads or too many",
                ));
            }
            let heads = self.hashes(heads, automerge::ChangeHash)?;
            let signature = Signature(self.array()?);
            proofs.push(AuthorshipProof {
                signer,
                heads,
                signature,
            });
        }
        Ok(proofs)
    }
}
