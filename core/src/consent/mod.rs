//! Consent in force: who holds which section keys, keeping them in step with the ledger, and the
//! check every blob passes before a node stores it.
//!
//! The ledger ([`crate::ledger`]) decides who may read and write; this module makes the keys
//! follow. After any change to the ledger an owner device calls [`repair`], which
//!
//! 1. starts a new epoch (a fresh random [`SectionKey`], wrapped to the section's current
//!    readers) for every section whose newest key is held by someone who may no longer read it:
//!    a revoked grantee, a removed device, an expired grant. This is what makes revocation
//!    effective for everything written afterwards;
//! 2. wraps to every current reader the keys of the section it does not hold yet, so a newly
//!    consented GP reads the whole history and a new device reads everything.
//!
//! Both steps append `Keys` operations to the ledger. They are idempotent: a second call with
//! nothing changed appends nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    blob::{Blob, BlobKind},
    envelope,
    keys::{AgeIdentity, AgeRecipient, KeyId, PeerId, RecordId, SectionKey, SigningKey},
    ledger::{Ledger, LedgerError, OpBody, SignedOp},
    section::Section,
};

/// What can go wrong keeping keys in step with consent.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The ledger refused an operation.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Wrapping keys to readers failed.
    #[error("could not wrap section keys to their readers: {0}")]
    Envelope(#[from] envelope::EnvelopeError),
    /// No key this node holds may be used to write the section.
    #[error(
        "this node holds no current key for the {0} section, so it cannot write there yet; \
         the patient's device issues one when it next syncs"
    )]
    NoWritableKey(Section),
    /// A blob this node sealed would be refused by every node (its consent does not allow it),
    /// so it was not stored.
    #[error("{0}")]
    Refused(#[from] IngestError),
}

/// Section keys a node unwrapped before and kept, by id, with their section and epoch.
pub type Kept = BTreeMap<KeyId, (Section, u32, SectionKey)>;

/// The section keys this node holds, unwrapped from the ledger's envelopes.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: BTreeMap<KeyId, (Section, u32, SectionKey)>,
    /// Envelopes addressed to this node that did not open or held keys that did not match
    /// the ids announced beside them, for diagnostics.
    pub problems: Vec<String>,
}

impl Keyring {
    /// Unwraps every key the ledger's valid `Keys` operations wrap to `me`.
    pub fn unlock(ledger: &Ledger, me: &PeerId, identity: &AgeIdentity) -> Keyring {
        Self::unlock_kept(ledger, me, identity, &Kept::new())
    }

    /// As [`Keyring::unlock`], but an operation whose every announced key is in `kept` (keys
    /// this node unwrapped before and kept, [`crate::store::Store::section_keys`]) takes them
    /// from there instead of opening its envelope again: an age decryption each. A kept key
    /// counts only where a valid operation addressed to `me` announces it, with that
    /// operation's section and epoch, so `kept` can never give more than the envelopes would.
    pub fn unlock_kept(
        ledger: &Ledger,
        me: &PeerId,
        identity: &AgeIdentity,
        kept: &Kept,
    ) -> Keyring {
        let mut ring = Keyring::default();
        for op in valid_key_ops(ledger) {
            ring.take(op, me, identity, kept);
        }
        ring
    }

    /// Takes the keys of one `Keys` operation, if it is addressed to `me`.
    fn take(&mut self, op: &SignedOp, me: &PeerId, identity: &AgeIdentity, kept: &Kept) {
        let OpBody::Keys {
            section,
            keys,
            recipients,
            envelope,
        } = &op.op().body
        else {
            return;
        };
        if !recipients.contains(me) || keys.iter().all(|(_, id)| self.keys.contains_key(id)) {
            return;
        }
        if keys.iter().all(|(_, id)| kept.contains_key(id)) {
            for (epoch, id) in keys {
                let (_, _, key) = &kept[id];
                self.keys.insert(*id, (*section, *epoch, key.clone()));
            }
            return;
        }
        match envelope::unwrap(envelope, identity) {
            Ok(unwrapped) => {
                for (epoch, key) in unwrapped {
                    if keys.contains(&(epoch, key.id())) {
                        self.keys.insert(key.id(), (*section, epoch, key));
                    } else {
                        self.problems.push(format!(
                            "ledger operation {} wraps a key it does not announce",
                            op.id().short()
                        ));
                    }
                }
            }
            Err(e) => self.problems.push(format!(
                "ledger operation {} could not be opened: {e}",
                op.id().short()
            )),
        }
    }

    /// The key with this id, if held.
    pub fn get(&self, id: &KeyId) -> Option<&SectionKey> {
        self.keys.get(id).map(|(_, _, key)| key)
    }

    /// Adds a key this node just made.
    pub fn insert(&mut self, section: Section, epoch: u32, key: SectionKey) {
        self.keys.insert(key.id(), (section, epoch, key));
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every key held: its id, section and epoch.
    pub fn ids(&self) -> impl Iterator<Item = (KeyId, Section, u32)> + '_ {
        self.keys
            .iter()
            .map(|(id, (section, epoch, _))| (*id, *section, *epoch))
    }

    /// Every key held, by id, with its section and epoch.
    pub fn kept(&self) -> &Kept {
        &self.keys
    }

    /// The keys held that `kept` does not hold: those to keep.
    pub fn not_in<'a>(
        &'a self,
        kept: &'a Kept,
    ) -> impl Iterator<Item = (Section, u32, &'a SectionKey)> + 'a {
        self.keys
            .iter()
            .filter(|(id, _)| !kept.contains_key(id))
            .map(|(_, (section, epoch, key))| (*section, *epoch, key))
    }

    /// The sections this node holds at least one key of.
    pub fn sections(&self) -> BTreeSet<Section> {
        self.keys.values().map(|(section, _, _)| *section).collect()
    }
}

/// The `Keys` operations the ledger's state counts (valid and complete).
fn valid_key_ops(ledger: &Ledger) -> impl Iterator<Item = &SignedOp> {
    let state = ledger.state();
    ledger.ops().filter(move |op| {
        let OpBody::Keys { section, keys, .. } = &op.op().body else {
            return false;
        };
        let announced = state.keys.get(section);
        !state.rejected.iter().any(|(id, _)| *id == op.id())
            && keys.iter().all(|(_, id)| {
                announced.is_some_and(|epochs| epochs.iter().any(|e| e.key_id == *id))
            })
    })
}

/// The key to seal a new blob of `section` with: the ledger's current key, if this node holds it.
pub fn writing_key<'a>(
    ledger: &Ledger,
    keyring: &'a Keyring,
    section: Section,
    now_ms: i64,
) -> Result<(u32, &'a SectionKey), ConsentError> {
    let state = ledger.state();
    let current = state
        .current_key(section, now_ms)
        .ok_or(ConsentError::NoWritableKey(section))?;
    let key = keyring
        .get(&current.key_id)
        .ok_or(ConsentError::NoWritableKey(section))?;
    Ok((current.epoch, key))
}

/// Brings the keys in step with consent (see the module documentation). Does nothing unless
/// `device` is an owner device. Returns the operations it appended, to be stored.
pub fn repair(
    ledger: &mut Ledger,
    keyring: &mut Keyring,
    device: &SigningKey,
    now_ms: i64,
) -> Result<Vec<SignedOp>, ConsentError> {
    let me = device.peer_id();
    if !ledger.state().is_owner(&me) {
        return Ok(Vec::new());
    }
    let mut appended = Vec::new();
    for section in Section::ALL {
        if ledger.state().current_key(section, now_ms).is_none() {
            appended.push(rotate(ledger, keyring, device, section, now_ms)?);
        }
        let missing = ledger.state().missing_keys(section, now_ms);
        let readers = ledger.state().readers(section, now_ms);
        // Readers missing the same keys share one envelope.
        let mut groups: BTreeMap<Vec<KeyId>, Vec<(PeerId, AgeRecipient)>> = BTreeMap::new();
        for (peer, ids) in missing {
            let held: Vec<KeyId> = ids
                .into_iter()
                .filter(|id| keyring.get(id).is_some())
                .collect();
            if let (false, Some(party)) = (held.is_empty(), readers.get(&peer)) {
                groups
                    .entry(held)
                    .or_default()
                    .push((peer, party.recipient.clone()));
            }
        }
        for (ids, readers) in groups {
            let keys: Vec<(u32, &SectionKey)> = ids
                .iter()
                .filter_map(|id| keyring.keys.get(id).map(|(_, epoch, key)| (*epoch, key)))
                .collect();
            let recipients: Vec<AgeRecipient> = readers.iter().map(|(_, r)| r.clone()).collect();
            let body = OpBody::Keys {
                section,
                keys: keys.iter().map(|(epoch, key)| (*epoch, key.id())).collect(),
                recipients: readers.iter().map(|(peer, _)| *peer).collect(),
                envelope: envelope::wrap(&keys, &recipients)?,
            };
            appended.push(ledger.append(device, body, now_ms)?);
        }
    }
    Ok(appended)
}

/// Starts a new epoch of `section`: a fresh key wrapped to every current reader.
fn rotate(
    ledger: &mut Ledger,
    keyring: &mut Keyring,
    device: &SigningKey,
    section: Section,
    now_ms: i64,
) -> Result<SignedOp, ConsentError> {
    let state = ledger.state();
    let epoch = state.next_epoch(section);
    let readers = state.readers(section, now_ms);
    // A key made for this epoch before it could be announced (the `audit` key a new record's
    // `Create` seals its first device's details under), else a fresh one.
    let made = keyring
        .keys
        .values()
        .find(|(s, e, _)| *s == section && *e == epoch)
        .map(|(_, _, key)| key.clone());
    let key = made.unwrap_or_else(SectionKey::generate);
    let recipients: Vec<AgeRecipient> = readers.values().map(|p| p.recipient.clone()).collect();
    let body = OpBody::Keys {
        section,
        keys: vec![(epoch, key.id())],
        recipients: readers.keys().copied().collect(),
        envelope: envelope::wrap(&[(epoch, &key)], &recipients)?,
    };
    let op = ledger.append(device, body, now_ms)?;
    keyring.insert(section, epoch, key);
    Ok(op)
}

/// Why a node refuses to store a blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The blob belongs to another record or section than the one it was offered for.
    #[error("blob {blob} is not part of {record} {section}; it was refused")]
    Misplaced {
        /// The blob's id, shortened.
        blob: String,
        /// The record it was offered for.
        record: RecordId,
        /// The section it was offered for.
        section: Section,
    },
    /// The blob names ledger operations this node does not hold yet: fetch the ledger first.
    #[error("blob {0} was written under consent this node has not seen yet; sync the ledger first")]
    UnknownLedgerHeads(String),
    /// The author could not write the section under the consent the blob names.
    #[error(
        "blob {blob} was written by {author}, who may not write the {section} section; it was refused"
    )]
    NotAllowed {
        /// The blob's id, shortened.
        blob: String,
        /// The author's PeerId.
        author: PeerId,
        /// The section.
        section: Section,
    },
    /// The blob is sealed with a key the ledger never announced for its section.
    #[error("blob {0} is sealed with a key the consent ledger does not know; it was refused")]
    UnknownKey(String),
    /// A blob sealed to the owners outside `audit`: only audit entries are sealed that way.
    #[error(
        "blob {blob} is sealed to the record's owners but belongs to the {section} section, and \
         only audit entries are sealed that way; it was refused"
    )]
    SealedOutsideAudit {
        /// The blob's id, shortened.
        blob: String,
        /// The section it claims.
        section: Section,
    },
}

/// The checks a node makes before storing a blob, from its own disk or from a peer: it is part
/// of the record and section it claims, and its author could write that section (compactions:
/// only owner devices) under the ledger state the blob names. The blob's signature and layout
/// were checked by [`Blob::decode`]. Judged only by the ledger state the blob names, so every
/// node decides the same way whenever the blob reaches it.
///
/// A blob sealed to the owners ([`BlobKind::SealedToOwners`]) belongs in `audit` only, needs
/// its author to be able to append there (an owner, or any live read or write grantee), and
/// names no section key, so no announced key is needed.
pub fn check_blob(
    blob: &Blob,
    ledger: &Ledger,
    record: RecordId,
    section: Section,
) -> Result<(), IngestError> {
    let header = blob.header();
    let short = blob.id().short();
    if header.record != record || header.section != section {
        return Err(IngestError::Misplaced {
            blob: short,
            record,
            section,
        });
    }
    if header.kind == BlobKind::SealedToOwners && section != Section::Audit {
        return Err(IngestError::SealedOutsideAudit {
            blob: short,
            section,
        });
    }
    let state = ledger
        .state_at(&header.ledger_heads)
        .map_err(|_| IngestError::UnknownLedgerHeads(short.clone()))?;
    let allowed = match header.kind {
        BlobKind::Changes | BlobKind::SealedToOwners => {
            state.can_write(&header.author, section, header.time_ms)
        }
        BlobKind::Compaction => state.is_owner(&header.author),
    };
    if !allowed {
        return Err(IngestError::NotAllowed {
            blob: short,
            author: header.author,
            section,
        });
    }
    if header.kind == BlobKind::SealedToOwners {
        return Ok(());
    }
    let announced = state
        .keys
        .get(&section)
        .is_some_and(|keys| keys.iter().any(|k| k.key_id == header.key_id));
    if !announced {
        return Err(IngestError::UnknownKey(short));
    }
    Ok(())
}

mod withdrawal;

pub use withdrawal::{change_pins, closes_needed, withdrawn};

#[cfg(test)]
mod tests;
