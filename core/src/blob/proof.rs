//! Authorship proofs: an author's own signature over the Automerge changes it wrote, small enough
//! to outlive the blob that first carried them.
//!
//! A blob's signature proves who wrote its changes only while the blob exists. A compaction
//! replaces many blobs with one document written by an owner device, and without more, who
//! wrote a provider's version would from then on rest on that device's word. So every blob
//! carries, in its header, an [`AuthorshipProof`] by its author: an Ed25519 signature over the
//! hashes of the heads of the changes it holds. An Automerge change hash covers the change's
//! bytes and its dependencies' hashes, so a signed head vouches for every change by the signer's
//! actors in its causal past. A compaction carries the proofs of what it replaces, and one of its
//! own author for the author's own changes; a reader checks that every change in a section is
//! either in a blob signed by its author or in the past of a head its author signed
//! (`changes::provenance`). The byte layout is in docs/FORMAT.md ("Authorship proofs").

use automerge::ChangeHash;

use crate::{
    keys::{PeerId, RecordId, Signature, SigningKey},
    section::Section,
};

/// The most change heads one proof may sign. A blob's own changes come from one device writing
/// as one actor at a time, so an honest proof has one head, a few after a merge.
pub const PROOF_HEADS_MAX: usize = 256;

/// The most proofs one blob may carry: one for a changes blob, any number for a compaction
/// (one per author, or per audit entry: each entry is written by an actor of its own).
pub const BLOB_PROOFS_MAX: usize = 100_000;

/// Prefixed to every message a proof signs, so that it can never be taken for the signature of
/// a blob, a ledger operation or a card made with the same key.
const PROOF_CONTEXT: &[u8; 18] = b"phr authorship v1\0";

/// Signer (32 bytes), head count (2), signature (64): a proof's size without its heads.
pub(crate) const PROOF_FIXED_BYTES: usize = 32 + 2 + 64;

/// An author's signature over the heads of Automerge changes it wrote in one section of one
/// record: "every change by my actors in the past of these heads is mine".
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuthorshipProof {
    /// Who signed: the author of the changes.
    pub signer: PeerId,
    /// The change hashes signed, sorted, none twice (at most [`PROOF_HEADS_MAX`]).
    pub heads: Vec<ChangeHash>,
    /// Ed25519 by `signer` over the message docs/FORMAT.md gives ("Authorship proofs").
    pub signature: Signature,
}

impl AuthorshipProof {
    /// Signs `heads` (sorted here) as `signer`'s, in `section` of `record`. `None` when there is
    /// nothing to sign or more heads than a proof may carry.
    pub fn sign(
        record: RecordId,
        section: Section,
        mut heads: Vec<ChangeHash>,
        signer: &SigningKey,
    ) -> Option<AuthorshipProof> {
        heads.sort();
        heads.dedup();
        if heads.is_empty() || heads.len() > PROOF_HEADS_MAX {
            return None;
        }
        let signature = signer.sign(&message(record, section, &heads));
        Some(AuthorshipProof {
            signer: signer.peer_id(),
            heads,
            signature,
        })
    }

    /// Whether the signature is the signer's over these heads in `section` of `record`.
    pub fn verifies(&self, record: RecordId, section: Section) -> bool {
        self.signer
            .verify(&message(record, section, &self.heads), &self.signature)
            .is_ok()
    }

    /// Its size in a blob header.
    pub(crate) fn encoded_len(&self) -> usize {
        PROOF_FIXED_BYTES + 32 * self.heads.len()
    }

    /// Appends its bytes: signer, head count (u16), heads, signature.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.signer.public_key());
        let count = u16::try_from(self.heads.len()).expect("checked against PROOF_HEADS_MAX");
        out.extend_from_slice(&count.to_le_bytes());
        for head in &self.heads {
            out.extend_from_slice(&head.0);
        }
        out.extend_from_slice(&self.signature.0);
    }
}

/// `"phr authorship v1\0" ‖ record id ‖ section code ‖ head count (u16) ‖ heads`.
fn message(record: RecordId, section: Section, heads: &[ChangeHash]) -> Vec<u8> {
    let mut message = Vec::with_capacity(PROOF_CONTEXT.len() + 16 + 1 + 2 + 32 * heads.len());
    message.extend_from_slice(PROOF_CONTEXT);
    message.extend_from_slice(&record.0);
    message.push(section.code());
    let count = u16::try_from(heads.len()).unwrap_or(u16::MAX);
    message.extend_from_slice(&count.to_le_bytes());
    for head in heads {
        message.extend_from_slice(&head.0);
    }
    message
}

const _: () = assert!(PROOF_HEADS_MAX <= u16::MAX as usize);
