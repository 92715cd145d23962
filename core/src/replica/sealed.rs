//! Audit entries sealed to the owner devices ([`BlobKind::SealedToOwners`]): how a grantee,
//! which holds no key of `audit`, logs what it read or wrote, and how an owner reads them.

use crate::{
    blob::{BLOB_LEDGER_HEADS_MAX, Blob, BlobError, BlobHeader, BlobKind},
    consent::{self, ConsentError},
    keys::{AgeIdentity, AgeRecipient, BlobId, KeyId, PeerId, SigningKey},
    section::Section,
    store::Store,
    vault::Batch,
};

use super::{Replica, Result};

impl Replica {
    /// An audit entry sealed to the owners: opened only on an owner device, with its age
    /// identity. A grantee's own entries, and entries sealed before this device was an owner
    /// (an owner that can read them folds them in when it compacts), are not this node's to read.
    pub(super) fn open_sealed(
        &self,
        blob: &Blob,
        age: &AgeIdentity,
    ) -> Result<Option<Vec<u8>>, String> {
        let header = blob.header();
        if !self.ledger.state().is_owner(&self.me) {
            return Ok(None);
        }
        let plain = match blob.open_sealed(age) {
            Ok(plain) => plain,
            Err(BlobError::NotForMe { .. }) => {
                let sealed_to_me = self
                    .ledger
                    .state_at(&header.ledger_heads)
                    .is_ok_and(|state| state.is_owner(&self.me));
                if sealed_to_me {
                    return Err("it was sealed to this device, but does not open with its \
                                age identity"
                        .into());
                }
                return Ok(None);
            }
            Err(e) => return Err(e.to_string()),
        };
        // The change's actor proves who wrote the entry, as in a changes blob; and it must be
        // one new AuditEvent and nothing else, since it merges into the owners' audit section.
        crate::changes::check_audit_entry(&header.author, &plain)?;
        Ok(Some(plain))
    }

    /// Seals Automerge changes of the `audit` section (made with [`crate::record::lone_change`])
    /// to the owner devices the ledger names now: how a grantee, which holds no audit key,
    /// logs what it read or wrote. The blob is checked as every node will check it (this node
    /// must be able to append to `audit` now) but not stored: pass it to
    /// [`Replica::store_sealed`], or to [`Replica::save_with`] to store it with a write.
    pub fn seal_to_owners(&self, device: &SigningKey, changes: &[u8], now_ms: i64) -> Result<Blob> {
        let owners: Vec<AgeRecipient> = self
            .ledger
            .state()
            .owners
            .values()
            .map(|party| party.recipient.clone())
            .collect();
        let mut ledger_heads = self.ledger.heads();
        ledger_heads.truncate(BLOB_LEDGER_HEADS_MAX);
        let header = BlobHeader {
            record: self.id,
            section: Section::Audit,
            kind: BlobKind::SealedToOwners,
            epoch: 0,
            key_id: KeyId([0; 16]),
            author: device.peer_id(),
            time_ms: now_ms,
            ledger_heads,
            replaces: Vec::new(),
            // The entry's one change, signed, so that its author stays proven once an owner
            // device compacts `audit`.
            proofs: crate::changes::change_heads(changes)
                .ok()
                .and_then(|heads| {
                    crate::blob::AuthorshipProof::sign(self.id, Section::Audit, heads, device)
                })
                .into_iter()
                .collect(),
        };
        let blob = Blob::seal_to_owners(header, &owners, changes, device)?;
        consent::check_blob(&blob, &self.ledger, self.id, Section::Audit)
            .map_err(ConsentError::from)?;
        Ok(blob)
    }

    /// Stores blobs sealed here by [`Replica::seal_to_owners`], in one durable transaction.
    pub fn store_sealed(&mut self, store: &dyn Store, blobs: Vec<Blob>) -> Result<()> {
        let mut batch = Batch::new();
        for blob in &blobs {
            let header = blob.header();
            batch.blob(self.id, header.section, blob);
        }
        store.commit(batch)?;
        self.held = true;
        for blob in &blobs {
            // Not materialised: its changes are not in this node's record, so a compaction must
            // not claim to stand for it.
            self.note_blob(blob.header().section, blob);
        }
        Ok(())
    }
}

impl Replica {
    /// Drops this node's own audit entries that `peer`, an owner device, confirmed it now
    /// holds, in the session that sent them (`ids`, as the session checked). A node that is
    /// not an owner device keeps its audit entries only until one does: they are the owners'
    /// to read, so what it stores of them stays bounded, and an entry delivered is never sent
    /// again. An owner device drops nothing; a confirmation from anyone else (a relay, a
    /// grantee, a removed device) counts for nothing. Returns how many entries it dropped.
    pub fn delivered(
        &mut self,
        store: &dyn Store,
        peer: &PeerId,
        ids: &[[u8; 32]],
    ) -> Result<usize> {
        let state = self.ledger.state();
        if ids.is_empty() || state.is_owner(&self.me) || !state.is_owner(peer) {
            return Ok(0);
        }
        let Some(stored) = self.blobs.get(&Section::Audit) else {
            return Ok(0);
        };
        let mine: Vec<BlobId> = ids
            .iter()
            .map(|id| BlobId(*id))
            .filter(|id| stored.get(id).is_some_and(|s| s.author == self.me))
            .collect();
        if mine.is_empty() {
            return Ok(0);
        }
        let mut batch = Batch::new();
        for id in &mine {
            batch.remove_blob(self.id, Section::Audit, *id);
        }
        store.commit(batch)?;
        self.unnote_blobs(Section::Audit, |id| mine.contains(id));
        Ok(mine.len())
    }
}

#[cfg(test)]
mod tests;
