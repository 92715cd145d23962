//! Blobs held for the patient: written by a party after its access ended (a revoked or expired
//! grantee, a removed device), or concurrently with the withdrawal. They change nothing the
//! record shows until an owner accepts them, which is a `Close` operation that lists them, so
//! every node takes them in; discarding one forgets it.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    blob::{Blob, BlobKind},
    consent,
    keys::{AgeIdentity, BlobId, PeerId, SigningKey},
    ledger::{OpBody, SignedOp},
    section::Section,
    store::Store,
    vault::Batch,
};

use super::{HeldBlob, Replica, ReplicaError, Result};

impl Replica {
    /// The plaintext changes of a held blob, to show the patient what it would change: `None`
    /// if this device cannot open it.
    pub fn open_held(
        &self,
        store: &dyn Store,
        age: &AgeIdentity,
        id: &BlobId,
    ) -> Result<Option<(HeldBlob, Vec<u8>)>> {
        let Some(held) = self.held_blobs.get(id).copied() else {
            return Ok(None);
        };
        let Some(blob) = self.held_blob(store, id)? else {
            return Ok(None);
        };
        let plain = if blob.header().kind == BlobKind::SealedToOwners {
            self.open_sealed(&blob, age).ok().flatten()
        } else {
            self.keyring()
                .get(&blob.header().key_id)
                .and_then(|key| blob.open(key).ok())
        };
        // A compaction: shown by its author's own changes in it (the edits it is held for).
        // Accepted, the rest of it counts as in any compaction: each change where its own
        // author's proof proves it, flagged where none does.
        let plain = match (blob.header().kind, plain) {
            (BlobKind::Compaction, Some(document)) => own_changes(&document, &held.author),
            (_, plain) => plain,
        };
        Ok(plain.map(|plain| (held, plain)))
    }

    fn held_blob(&self, store: &dyn Store, id: &BlobId) -> Result<Option<Blob>> {
        Ok(store
            .held(&self.id)?
            .into_iter()
            .find(|(_, held, _)| held == id)
            .and_then(|(_, _, bytes)| Blob::decode(bytes).ok()))
    }

    /// Accepts held blobs into the record: a `Close` per author, signed by this owner device,
    /// that lists them, so every node takes them in as written by their real author. Returns
    /// the operations appended. Ids not held are refused with nothing changed.
    pub fn accept_held(
        &mut self,
        store: &dyn Store,
        device: &SigningKey,
        ids: &[BlobId],
        now_ms: i64,
    ) -> Result<Vec<SignedOp>> {
        if !self.ledger.state().is_owner(&self.me) {
            return Err(ReplicaError::NotOwner);
        }
        let mut by_author: BTreeMap<PeerId, Vec<BlobId>> = BTreeMap::new();
        for id in ids {
            let held = self
                .held_blobs
                .get(id)
                .ok_or_else(|| ReplicaError::NotHeld(id.short()))?;
            by_author.entry(held.author).or_default().push(*id);
        }
        // The accepted blobs' changes, pinned by their authorship proofs, so that they stay
        // accepted once an owner compacts them (`consent::change_pins`).
        let mut pinned: BTreeMap<PeerId, BTreeMap<Section, BTreeSet<[u8; 32]>>> = BTreeMap::new();
        for (section, id, bytes) in store.held(&self.id)? {
            let Some(blob) = ids
                .contains(&id)
                .then(|| Blob::decode(bytes).ok())
                .flatten()
            else {
                continue;
            };
            let header = blob.header();
            // A compaction carries its authors' proofs: its own author's are the ones pinned.
            let own_only = header.kind == BlobKind::Compaction;
            for proof in header
                .proofs
                .iter()
                .filter(|p| p.verifies(self.id, section))
                .filter(|p| !own_only || p.signer == header.author)
            {
                pinned
                    .entry(header.author)
                    .or_default()
                    .entry(section)
                    .or_default()
                    .extend(proof.heads.iter().map(|h| h.0));
            }
        }
        let mut ledger = self.ledger.clone();
        let mut appended = Vec::new();
        for (party, accepted) in by_author {
            let body = OpBody::Close {
                party,
                sections: Vec::new(),
                accepted,
            };
            appended.push(ledger.append(device, body, now_ms)?);
            let heads: Vec<(Section, Vec<[u8; 32]>)> = pinned
                .remove(&party)
                .unwrap_or_default()
                .into_iter()
                .map(|(section, hashes)| (section, hashes.into_iter().collect()))
                .collect();
            if !heads.is_empty() {
                for pin in OpBody::pins(party, heads) {
                    appended.push(ledger.append(device, pin, now_ms)?);
                }
            }
        }
        let mut batch = Batch::new();
        for op in &appended {
            batch.ledger_op(self.id, op);
        }
        let mut stored: BTreeMap<BlobId, Blob> = store
            .held(&self.id)?
            .into_iter()
            .filter(|(_, id, _)| ids.contains(id))
            .filter_map(|(_, id, bytes)| Some((id, Blob::decode(bytes).ok()?)))
            .collect();
        let mut entering: Vec<(Section, Blob)> = Vec::new();
        for id in ids {
            let Some(blob) = stored.remove(id) else {
                continue;
            };
            let section = self.held_blobs[id].section;
            batch.release(self.id, *id);
            if !consent::withdrawn(&blob, &ledger)
                && consent::check_blob(&blob, &ledger, self.id, section).is_ok()
            {
                batch.blob(self.id, section, &blob);
                entering.push((section, blob));
            }
        }
        store.commit(batch)?;
        self.ledger = ledger;
        for id in ids {
            self.held_blobs.remove(id);
        }
        for (section, blob) in entering {
            self.note_blob(section, &blob);
        }
        Ok(appended)
    }

    /// Forgets held blobs for good. Ids not held are refused with nothing changed.
    pub fn discard_held(&mut self, store: &dyn Store, ids: &[BlobId]) -> Result<()> {
        let mut batch = Batch::new();
        for id in ids {
            if !self.held_blobs.contains_key(id) {
                return Err(ReplicaError::NotHeld(id.short()));
            }
            batch.release(self.id, *id);
        }
        store.commit(batch)?;
        for id in ids {
            self.held_blobs.remove(id);
        }
        Ok(())
    }
}

/// The changes of `author`'s device in a compaction's document, as change bytes: what
/// accepting a held copy of it would add. `None` if the document does not load (it was checked
/// against the inflation bound when it was stored).
fn own_changes(document: &[u8], author: &PeerId) -> Option<Vec<u8>> {
    if crate::changes::check_document(document).is_err() {
        return None;
    }
    let mut doc = crate::changes::catch_automerge_panic(|| automerge::AutoCommit::load(document))
        .ok()?
        .ok()?;
    let prefix = &author.public_key()[..crate::changes::ACTOR_KEY_BYTES];
    let mut out = Vec::new();
    for change in doc.get_changes(&[]) {
        if change.actor_id().to_bytes().starts_with(prefix) {
            out.extend_from_slice(change.raw_bytes());
        }
    }
    Some(out)
}
